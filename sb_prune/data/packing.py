"""Several utterances in one input window, for models with fixed windows.

Whisper's encoder reads 30 s windows whatever the utterance's length, so
fine-tuning on one LibriSpeech utterance (about 12 s) per window pays for
30 s and learns on 12. :func:`pack_utterances` writes a manifest whose rows
are windows: consecutive utterances of one chapter (the story goes on, as
in Whisper's own training windows) joined while they fit, their audio
concatenated with a short gap and their transcripts kept apart
(:data:`SEPARATOR`), so a recipe can write them as sentences.

Authors
 * sb_prune developers
"""

import csv
import os

from sb_prune.core.validation import check_number

#: Joins the audio paths and the transcripts of the utterances of a window.
SEPARATOR = " | "
PACKED_COLUMNS = ["ID", "duration", "wavs", "spk_id", "wrd", "utterances"]


def pack_utterances(csv_path, out_path, window=30.0, gap=0.3):
    r"""Write a manifest of windows packing consecutive utterances.

    Utterances are taken in the order of their IDs
    (``<speaker>-<chapter>-<index>``); a window holds consecutive
    utterances of one chapter whose durations, plus ``gap`` seconds
    between two of them, fit in ``window`` seconds.

    Arguments
    ---------
    csv_path : str or pathlib.Path
        A SpeechBrain manifest (``ID, duration, wav, spk_id, wrd``).
    out_path : str or pathlib.Path
        The manifest of windows (``ID, duration, wavs, spk_id, wrd,
        utterances``; ``wavs`` and ``wrd`` join the utterances' with
        :data:`SEPARATOR`).
    window : float
        The window's length in seconds (``pack_window`` in hparams).
    gap : float
        Silence between two utterances, in seconds, >= 0.

    Returns
    -------
    dict
        ``{"utterances": ..., "windows": ...}``.

    Example
    -------
    >>> import tempfile
    >>> scratch = tempfile.TemporaryDirectory()
    >>> folder = scratch.name
    >>> durations = [9, 9, 20]
    >>> rows = "ID,duration,wav,spk_id,wrd\n" + "".join(
    ...     f"1-2-{i},{d},a{i}.flac,1,W{i}\n" for i, d in enumerate(durations))
    >>> with open(f"{folder}/train.csv", "w") as handle:
    ...     _ = handle.write(rows)
    >>> pack_utterances(f"{folder}/train.csv", f"{folder}/packed.csv")
    {'utterances': 3, 'windows': 2}
    >>> pack_utterances(f"{folder}/train.csv", f"{folder}/p.csv", window=15)
    Traceback (most recent call last):
    ...
    ValueError: pack_window (15 s) is shorter than utterance 1-2-2 (20.0 s)
    >>> scratch.cleanup()
    """
    check_number("pack_window", window, low=0, open_low=True)
    check_number("pack_gap", gap, low=0)
    with open(csv_path, newline="", encoding="utf-8") as handle:
        rows = sorted(csv.DictReader(handle), key=lambda row: row["ID"])
    windows, current = [], []

    def chapter(row):
        return row["ID"].rsplit("-", 1)[0]

    def length(rows):
        return sum(float(r["duration"]) for r in rows) + gap * (len(rows) - 1)

    for row in rows:
        if float(row["duration"]) > window:
            raise ValueError(
                f"pack_window ({window} s) is shorter than utterance "
                f"{row['ID']} ({float(row['duration'])} s)"
            )
        fits = current and chapter(current[0]) == chapter(row)
        if fits and length(current + [row]) <= window:
            current.append(row)
        else:
            if current:
                windows.append(current)
            current = [row]
    if current:
        windows.append(current)
    tmp = f"{out_path}.tmp"
    with open(tmp, "w", newline="", encoding="utf-8") as handle:
        writer = csv.DictWriter(handle, fieldnames=PACKED_COLUMNS)
        writer.writeheader()
        for packed in windows:
            writer.writerow(
                {
                    "ID": f"{packed[0]['ID']}+{len(packed) - 1}",
                    "duration": round(length(packed), 3),
                    "wavs": SEPARATOR.join(r["wav"] for r in packed),
                    "spk_id": packed[0]["spk_id"],
                    "wrd": SEPARATOR.join(r["wrd"] for r in packed),
                    "utterances": len(packed),
                }
            )
    os.replace(tmp, out_path)
    return {"utterances": len(rows), "windows": len(windows)}
