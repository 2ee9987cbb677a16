"""Prepare LibriSpeech-format corpora as SpeechBrain CSV manifests.

The same code reads real LibriSpeech and the synthetic corpus of
:mod:`sb_prune.data.synthesize`: ``<split>/<speaker>/<chapter>/`` folders
with ``.flac`` files and ``<speaker>-<chapter>.trans.txt`` transcripts.
Each split becomes ``<save_folder>/<split>.csv`` with the columns of
SpeechBrain's LibriSpeech recipes: ``ID, duration, wav, spk_id, wrd``.

Authors
 * sb_prune developers
"""

import csv
import json
import logging
import os
from pathlib import Path

import soundfile

logger = logging.getLogger(__name__)

CSV_COLUMNS = ["ID", "duration", "wav", "spk_id", "wrd"]


def _read_transcripts(split_dir):
    transcripts = {}
    for path in sorted(split_dir.rglob("*.trans.txt")):
        with open(path, encoding="utf-8") as handle:
            for line in handle:
                if line.strip():
                    utt_id, _, words = line.strip().partition(" ")
                    transcripts[utt_id] = words
    return transcripts


def audio_duration(path):
    """Return the duration of an audio file in seconds.

    Arguments
    ---------
    path : str or pathlib.Path
        The audio file.

    Returns
    -------
    float
        Its duration.

    Raises
    ------
    RuntimeError
        Naming the file, when it cannot be read.
    """
    try:
        info = soundfile.info(str(path))
    except Exception as error:
        raise RuntimeError(f"Cannot read audio file {path}: {error}") from error
    return info.frames / info.samplerate


def split_rows(data_folder, split):
    """Return the CSV rows of one split of a LibriSpeech-format corpus.

    Arguments
    ---------
    data_folder : str or pathlib.Path
        The folder holding the splits (e.g. ``.../LibriSpeech``).
    split : str
        The split folder name (e.g. ``dev-clean``).

    Returns
    -------
    list of dict
        One row per utterance, sorted by ID, with the keys of
        ``CSV_COLUMNS``; ``wav`` is relative to ``$data_root``.
    """
    data_folder = Path(data_folder)
    split_dir = data_folder / split
    if not split_dir.is_dir():
        raise FileNotFoundError(
            f"The split folder {split_dir} does not exist (data_folder="
            f"{data_folder}, split={split})"
        )
    audio = sorted(split_dir.rglob("*.flac"))
    if not audio:
        raise ValueError(f"The split folder {split_dir} holds no .flac file")
    transcripts = _read_transcripts(split_dir)
    rows = []
    for path in audio:
        utt_id = path.stem
        if utt_id not in transcripts:
            raise ValueError(
                f"No transcript for {path} in the .trans.txt files of "
                f"{split_dir}"
            )
        speaker, chapter, _ = utt_id.split("-")
        relative = path.relative_to(data_folder).as_posix()
        rows.append(
            {
                "ID": utt_id,
                "duration": f"{audio_duration(path):.3f}",
                "wav": f"$data_root/{relative}",
                "spk_id": f"{speaker}-{chapter}",
                "wrd": transcripts[utt_id].upper(),
            }
        )
    return rows


def _write_csv(path, rows):
    tmp = f"{path}.tmp"
    with open(tmp, "w", newline="", encoding="utf-8") as handle:
        writer = csv.DictWriter(handle, fieldnames=CSV_COLUMNS)
        writer.writeheader()
        writer.writerows(rows)
    os.replace(tmp, path)


def prepare_librispeech(
    data_folder,
    save_folder,
    tr_splits=(),
    dev_splits=(),
    te_splits=(),
    merge_lst=(),
    merge_name=None,
    skip_prep=False,
):
    """Write one CSV per split, plus an optional merge of training splits.

    Arguments
    ---------
    data_folder : str
        The LibriSpeech folder (holding ``train-clean-100`` etc.).
    save_folder : str
        Where the CSV files are written.
    tr_splits, dev_splits, te_splits : list of str
        Split folder names.
    merge_lst : list of str
        Splits to concatenate into ``merge_name``.
    merge_name : str, optional
        File name of the merged CSV (e.g. ``train.csv``).
    skip_prep : bool
        If True, do nothing.

    Example
    -------
    >>> prepare_librispeech("/no/such/folder", "/tmp")
    Traceback (most recent call last):
    ...
    FileNotFoundError: data_folder /no/such/folder does not exist ...
    """
    if skip_prep:
        return
    data_folder, save_folder = Path(data_folder), Path(save_folder)
    if not data_folder.is_dir():
        raise FileNotFoundError(
            f"data_folder {data_folder} does not exist (point --data_folder "
            "at a LibriSpeech folder, or generate the synthetic corpus with "
            "`sb-prune synth`)"
        )
    unknown = sorted(set(merge_lst) - set(tr_splits))
    if unknown:
        raise ValueError(f"merge_lst {unknown} must be among tr_splits")
    save_folder.mkdir(parents=True, exist_ok=True)
    options = {
        "data_folder": str(data_folder.resolve()),
        "splits": [*tr_splits, *dev_splits, *te_splits],
        "merge": [list(merge_lst), merge_name],
    }
    options_file = save_folder / "librispeech_prepare.json"
    if (
        options_file.exists()
        and json.loads(options_file.read_text()) == options
    ):
        logger.info(f"CSV files in {save_folder} are up to date")
        return
    rows_per_split = {}
    for split in options["splits"]:
        rows_per_split[split] = split_rows(data_folder, split)
        _write_csv(save_folder / f"{split}.csv", rows_per_split[split])
        logger.info(f"{split}: {len(rows_per_split[split])} utterances")
    if merge_name:
        merged = [row for split in merge_lst for row in rows_per_split[split]]
        _write_csv(save_folder / merge_name, merged)
    options_file.write_text(json.dumps(options))
