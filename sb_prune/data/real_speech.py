"""Prepare real speech corpora as SpeechBrain CSV manifests.

Two corpora, as they are distributed (see the project's shared data
README):

* **LibriSpeech-layout trees found anywhere under a folder**
  (:func:`prepare_librispeech_trees`): every folder holding
  ``<speaker>/<chapter>/<speaker>-<chapter>.trans.txt`` is a tree, e.g.
  Libri-Light's ``1h/0/clean`` ... ``1h/5/other`` and ``9h/other``. All
  utterances go to ``all.csv``; ``train.csv``, ``dev.csv`` and
  ``test.csv`` split them **by speaker** (no speaker in two splits): the
  speakers are sorted and shuffled with ``seed``, the first
  ``test_speakers`` are test, the next ``dev_speakers`` dev, the rest
  train. The columns are those of SpeechBrain's LibriSpeech recipes
  (``ID, duration, wav, spk_id, wrd``), ``wav`` relative to ``$data_root``
  (the folder given).
* **The Free Spoken Digit Dataset** (:func:`prepare_fsdd`):
  ``<digit>_<speaker>_<index>.wav`` at 8 kHz, resampled to 16 kHz into a
  folder of yours, with ``keyword`` (the digit's name) and ``spk_id``
  columns. Its own convention splits by index: 0-4 test, 5-9 dev, 10-49
  train (every speaker and digit in each split).

Audio at another sample rate than the one expected is an error naming the
file; a transcript line without audio and audio without a transcript line
are skipped, counted in the returned summary and logged.

Authors
 * sb_prune developers
"""

import csv
import logging
import os
import random
import re
from collections import Counter
from pathlib import Path

import numpy as np
import soundfile
from scipy.signal import resample_poly

from sb_prune.core.validation import check_int
from sb_prune.data.librispeech import CSV_COLUMNS

logger = logging.getLogger(__name__)

#: The digits of FSDD, by file-name prefix.
DIGITS = (
    "zero",
    "one",
    "two",
    "three",
    "four",
    "five",
    "six",
    "seven",
    "eight",
    "nine",
)
#: FSDD's split by recording index (its README's convention, dev added).
FSDD_SPLITS = {"test": range(0, 5), "dev": range(5, 10)}
FSDD_COLUMNS = ["ID", "duration", "wav", "spk_id", "keyword"]


def plain_words(text):
    """Words of a transcript or hypothesis, for scoring against LibriSpeech.

    Upper case; digits and punctuation other than apostrophes removed; no
    spelling normalisation.

    Arguments
    ---------
    text : str
        A transcript or a model's output.

    Returns
    -------
    list of str
        The words.

    Example
    -------
    >>> plain_words("Well, it's 4 o'clock.")
    ['WELL', "IT'S", "O'CLOCK"]
    """
    return re.sub(r"[^A-Z' ]", " ", text.upper()).split()


def _write(path, rows, columns):
    tmp = f"{path}.tmp"
    with open(tmp, "w", newline="", encoding="utf-8") as handle:
        writer = csv.DictWriter(handle, fieldnames=columns)
        writer.writeheader()
        writer.writerows(rows)
    os.replace(tmp, path)


def find_librispeech_trees(root):
    r"""Return every LibriSpeech-layout tree under ``root``.

    Arguments
    ---------
    root : str or pathlib.Path
        Any folder.

    Returns
    -------
    list of pathlib.Path
        The tree folders (parents of ``<speaker>/<chapter>/``), sorted.

    Example
    -------
    >>> root = Path(getfixture("tmp_path"))
    >>> chapter = root / "1h" / "0" / "clean" / "19" / "198"
    >>> chapter.mkdir(parents=True)
    >>> _ = (chapter / "19-198.trans.txt").write_text("19-198-0000 HI\n")
    >>> [p.relative_to(root).as_posix() for p in find_librispeech_trees(root)]
    ['1h/0/clean']
    """
    trees = set()
    for transcript in Path(root).rglob("*.trans.txt"):
        parent = transcript.parent
        expected = f"{parent.parent.name}-{parent.name}.trans.txt"
        if transcript.name == expected:
            trees.add(parent.parent.parent)
        else:
            logger.warning(f"{transcript}: not <speaker>/<chapter>/{expected}")
    return sorted(trees)


def _tree_rows(root, tree, sample_rate, skipped):
    transcripts = {}
    for path in sorted(tree.rglob("*.trans.txt")):
        for line in path.read_text(encoding="utf-8").splitlines():
            if line.strip():
                utt_id, _, words = line.strip().partition(" ")
                transcripts[utt_id] = (path.parent, words)
    audio = {path.stem: path for path in sorted(tree.rglob("*.flac"))}
    for utt_id in sorted(set(transcripts) - set(audio)):
        skipped["transcript without audio"] += 1
        logger.warning(f"{tree}: no audio for transcript line {utt_id}")
    rows = []
    for utt_id, path in audio.items():
        if utt_id not in transcripts:
            skipped["audio without transcript"] += 1
            logger.warning(f"{path}: no transcript line, skipped")
            continue
        info = soundfile.info(str(path))
        if info.samplerate != sample_rate:
            raise ValueError(
                f"{path} is sampled at {info.samplerate} Hz, expected "
                f"{sample_rate} Hz"
            )
        speaker = utt_id.split("-")[0]
        rows.append(
            {
                "ID": utt_id,
                "duration": f"{info.frames / info.samplerate:.3f}",
                "wav": f"$data_root/{path.relative_to(root).as_posix()}",
                "spk_id": speaker,
                "wrd": transcripts[utt_id][1].upper(),
            }
        )
    return rows


def split_speakers(speakers, dev_speakers, test_speakers, seed):
    """Assign speakers to test, dev and train, deterministically.

    Arguments
    ---------
    speakers : iterable of str
        The speakers.
    dev_speakers, test_speakers : int
        How many go to dev and to test.
    seed : int
        Seed of the shuffle of the sorted speakers.

    Returns
    -------
    dict
        ``{speaker: "train" | "dev" | "test"}``.

    Example
    -------
    >>> split = split_speakers(["a", "b", "c", "d"], 1, 1, seed=0)
    >>> sorted(Counter(split.values()).items())
    [('dev', 1), ('test', 1), ('train', 2)]
    """
    ordered = sorted(set(speakers))
    check_int("dev_speakers", dev_speakers, minimum=0)
    check_int("test_speakers", test_speakers, minimum=0)
    if dev_speakers + test_speakers >= len(ordered):
        raise ValueError(
            f"dev_speakers + test_speakers ({dev_speakers} + "
            f"{test_speakers}) must leave training speakers; there are "
            f"{len(ordered)}"
        )
    random.Random(seed).shuffle(ordered)
    split = {speaker: "train" for speaker in ordered}
    for speaker in ordered[:test_speakers]:
        split[speaker] = "test"
    for speaker in ordered[test_speakers : test_speakers + dev_speakers]:
        split[speaker] = "dev"
    return split


def prepare_librispeech_trees(
    root,
    save_folder,
    dev_speakers=2,
    test_speakers=4,
    seed=1234,
    sample_rate=16000,
):
    """Write CSVs of every LibriSpeech-layout tree under ``root``.

    Arguments
    ---------
    root : str or pathlib.Path
        The folder searched (``$data_root`` in the CSVs).
    save_folder : str or pathlib.Path
        Where ``all.csv``, ``train.csv``, ``dev.csv``, ``test.csv`` go.
    dev_speakers, test_speakers : int
        Speakers held out for dev and test.
    seed : int
        Seed of the speaker split.
    sample_rate : int
        The sample rate every file must have.

    Returns
    -------
    dict
        Utterances per CSV, the trees found and the skipped lines/files.
    """
    root, save_folder = Path(root), Path(save_folder)
    trees = find_librispeech_trees(root)
    if not trees:
        raise FileNotFoundError(
            f"No LibriSpeech-layout tree (<speaker>/<chapter>/"
            f"<speaker>-<chapter>.trans.txt) under {root}"
        )
    skipped = Counter()
    rows = []
    for tree in trees:
        rows.extend(_tree_rows(root, tree, sample_rate, skipped))
    rows.sort(key=lambda row: row["ID"])
    repeated = sorted(
        utt for utt, n in Counter(r["ID"] for r in rows).items() if n > 1
    )
    if repeated:
        raise ValueError(
            f"Utterance IDs found in several trees under {root}: "
            f"{repeated[:5]}; prepare the trees separately"
        )
    split = split_speakers(
        (row["spk_id"] for row in rows), dev_speakers, test_speakers, seed
    )
    save_folder.mkdir(parents=True, exist_ok=True)
    counts = {"all": len(rows)}
    _write(save_folder / "all.csv", rows, CSV_COLUMNS)
    for name in ("train", "dev", "test"):
        chosen = [row for row in rows if split[row["spk_id"]] == name]
        _write(save_folder / f"{name}.csv", chosen, CSV_COLUMNS)
        counts[name] = len(chosen)
    if skipped:
        logger.warning(f"prepare_librispeech_trees skipped {dict(skipped)}")
    return {
        "utterances": counts,
        "trees": [tree.relative_to(root).as_posix() for tree in trees],
        "skipped": dict(skipped),
    }


def _fsdd_split(index):
    for name, indices in FSDD_SPLITS.items():
        if index in indices:
            return name
    return "train"


def prepare_fsdd(recordings, save_folder, audio_folder, sample_rate=16000):
    """Resample FSDD to ``sample_rate`` and write keyword/speaker CSVs.

    Arguments
    ---------
    recordings : str or pathlib.Path
        FSDD's ``recordings`` folder (``<digit>_<speaker>_<index>.wav``,
        8 kHz).
    save_folder : str or pathlib.Path
        Where ``all.csv``, ``train.csv``, ``dev.csv``, ``test.csv`` go.
    audio_folder : str or pathlib.Path
        Where the resampled WAV files go (``$data_root`` in the CSVs).
    sample_rate : int
        The target rate (a multiple of nothing in particular: resampled
        with a polyphase filter).

    Returns
    -------
    dict
        Utterances per CSV and the files skipped (names not in FSDD form).
    """
    recordings, save_folder = Path(recordings), Path(save_folder)
    audio_folder = Path(audio_folder)
    files = sorted(recordings.glob("*.wav"))
    if not files:
        raise FileNotFoundError(f"No .wav file in {recordings}")
    audio_folder.mkdir(parents=True, exist_ok=True)
    rows, skipped = [], Counter()
    for path in files:
        parts = path.stem.split("_")
        if (
            len(parts) != 3
            or parts[0] not in [str(d) for d in range(len(DIGITS))]
            or not parts[2].isdigit()
        ):
            skipped["not <digit>_<speaker>_<index>.wav"] += 1
            logger.warning(f"{path}: not an FSDD file name, skipped")
            continue
        digit, speaker, index = int(parts[0]), parts[1], int(parts[2])
        signal, rate = soundfile.read(str(path), dtype="float32")
        if signal.ndim > 1:
            signal = signal.mean(axis=1)
        divisor = np.gcd(rate, sample_rate)
        resampled = resample_poly(
            signal, sample_rate // divisor, rate // divisor
        )
        target = audio_folder / path.name
        soundfile.write(str(target), resampled.astype(np.float32), sample_rate)
        rows.append(
            {
                "ID": path.stem,
                "duration": f"{len(resampled) / sample_rate:.3f}",
                "wav": f"$data_root/{path.name}",
                "spk_id": speaker,
                "keyword": DIGITS[digit],
                "split": _fsdd_split(index),
            }
        )
    save_folder.mkdir(parents=True, exist_ok=True)
    counts = {"all": len(rows)}
    _write(save_folder / "all.csv", rows, FSDD_COLUMNS + ["split"])
    for name in ("train", "dev", "test"):
        chosen = [row for row in rows if row["split"] == name]
        _write(save_folder / f"{name}.csv", chosen, FSDD_COLUMNS + ["split"])
        counts[name] = len(chosen)
    return {"utterances": counts, "skipped": dict(skipped)}
