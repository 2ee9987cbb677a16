"""Federated clients from a corpus: one partition per speaker (or group).

In federated ASR a client is a device, and a device has one speaker, so
the speakers of a LibriSpeech-format corpus (``spk_id`` column
``<speaker>-<chapter>``) give natural, non-IID clients.

Authors
 * sb_prune developers
"""


def speaker_of(spk_id):
    """Return the speaker of a LibriSpeech ``spk_id`` (``speaker-chapter``).

    Arguments
    ---------
    spk_id : str
        E.g. ``"1089-134686"``.

    Returns
    -------
    str
        The speaker, e.g. ``"1089"``.

    Example
    -------
    >>> speaker_of("1089-134686")
    '1089'
    """
    return str(spk_id).split("-")[0]


def partition_by_speaker(speakers, speakers_per_client=1, exclude=()):
    """Group utterances into clients, ``speakers_per_client`` speakers each.

    Arguments
    ---------
    speakers : dict
        ``{utterance id: speaker}``.
    speakers_per_client : int
        Speakers per client (>= 1); the last client may get fewer.
    exclude : iterable of str
        Speakers kept out of every client (e.g. the server's own data).

    Returns
    -------
    list of dict
        One per client, sorted by speaker: ``{"speakers": [...], "ids":
        [utterance ids]}``.

    Example
    -------
    >>> utts = {"a1": "7", "a2": "7", "b1": "9", "c1": "3"}
    >>> [c["ids"] for c in partition_by_speaker(utts, exclude=["3"])]
    [['a1', 'a2'], ['b1']]
    """
    if speakers_per_client < 1:
        raise ValueError(
            f"speakers_per_client must be >= 1, got {speakers_per_client}"
        )
    excluded = set(exclude)
    by_speaker = {}
    for utt, speaker in sorted(speakers.items()):
        if speaker not in excluded:
            by_speaker.setdefault(speaker, []).append(utt)
    names = sorted(by_speaker)
    clients = []
    for start in range(0, len(names), speakers_per_client):
        group = names[start : start + speakers_per_client]
        ids = [utt for name in group for utt in by_speaker[name]]
        clients.append({"speakers": group, "ids": ids})
    check_partitions(clients)
    return clients


def check_partitions(clients):
    """Raise a ValueError naming the first client that has no data.

    Arguments
    ---------
    clients : list of dict
        ``{"speakers": [...], "ids": [...]}`` per client.

    Example
    -------
    >>> check_partitions([{"speakers": ["7"], "ids": ["a"]},
    ...                   {"speakers": ["9"], "ids": []}])
    Traceback (most recent call last):
    ...
    ValueError: client 1 (speakers ['9']) has no training data
    """
    if not clients:
        raise ValueError("There are no clients: no speaker is left")
    for index, client in enumerate(clients):
        if not client["ids"]:
            raise ValueError(
                f"client {index} (speakers {client['speakers']}) has no "
                "training data"
            )
