"""Write an offline LibriSpeech-format corpus synthesised with espeak-ng.

The layout is that of LibriSpeech, so the same data preparation serves
the real corpus and this one::

    LibriSpeech/<split>/<speaker>/<chapter>/<speaker>-<chapter>-<utt>.flac
    LibriSpeech/<split>/<speaker>/<chapter>/<speaker>-<chapter>.trans.txt

with the splits ``train-clean-100``, ``dev-clean`` and ``test-clean``
(disjoint speakers), plus ``LibriSpeech/utterances.csv`` with one row of
labels per utterance (keyword, template, voice...) for classification.
A speaker is an espeak-ng voice variant on an English base voice with
its own speaking rate, pitch and pitch range; every utterance gets
white noise at its own SNR. Everything derives from one seed, and each
speaker is synthesised in a fresh process, so the same arguments give
byte-identical files.

Authors
 * sb_prune developers
"""

import csv
import functools
import json
import logging
import math
import multiprocessing
import os
import random
import shutil
import time
from typing import NamedTuple, Tuple

import numpy as np
import soundfile as sf
from scipy.signal import firwin, resample_poly
from tqdm import tqdm

from sb_prune.data.espeak import Espeak, find_espeak, list_variants
from sb_prune.data.grammar import Sentence, sample_sentences

logger = logging.getLogger(__name__)

SPLITS = ("train-clean-100", "dev-clean", "test-clean")
SAMPLE_RATE = 16000
#: Bumped whenever a change alters the output, to invalidate caches.
GENERATOR_VERSION = 1
BASE_VOICES = ("en-us", "en", "en-gb-x-rp")
#: Voice variants that sound like plain speakers. Robotic, whispering or
#: echoing ones are left out, and so are ``Andrea`` and ``Alicia``, much
#: harder to recognise than the rest.
VARIANTS = (
    "m1 m2 m3 m4 m5 m6 m7 f1 f2 f3 f4 Alex Andy Annie Denis Gene Jacky "
    "Lee Michael Mike adam belinda benjamin boris david ed edward gustave "
    "john linda max norbert quincy rob robert steph travis victor"
).split()
RATES = (135, 195)
PITCHES = (30, 70)
PITCH_RANGES = (35, 75)
SNRS_DB = (15.0, 35.0)
CHAPTERS_PER_SPEAKER = 2
CONFIG_FILE = "sb_prune_synth.json"
DONE_FILE = "sb_prune_synth.done"
LABELS_FILE = "utterances.csv"
LABEL_COLUMNS = (
    "ID",
    "split",
    "speaker",
    "chapter",
    "keyword",
    "template",
    "kind",
    "voice",
    "rate",
    "pitch",
    "pitch_range",
    "snr_db",
    "n_words",
    "duration_s",
    "transcript",
)
_INT_COLUMNS = ("rate", "pitch", "pitch_range", "n_words")
_FLOAT_COLUMNS = ("snr_db", "duration_s")


class Utterance(NamedTuple):
    """One planned utterance.

    Arguments
    ---------
    uid : str
        ``<speaker>-<chapter>-<utt:04d>``, as in LibriSpeech.
    chapter : int
        Chapter ID.
    sentence : sb_prune.data.grammar.Sentence
        What is said, with its labels.
    snr_db : float
        Signal-to-noise ratio of the added noise.
    seed : int
        Seed of espeak-ng and of the noise for this utterance.

    Example
    -------
    >>> plan = plan_corpus(corpus_config(1, 1, 1, utterances_per_speaker=2))
    >>> 15 <= plan[0].utterances[0].snr_db <= 35
    True
    """

    uid: str
    chapter: int
    sentence: Sentence
    snr_db: float
    seed: int


class Speaker(NamedTuple):
    """One planned speaker.

    Arguments
    ---------
    split : str
        One of ``SPLITS``.
    speaker : int
        Speaker ID, unique over all splits.
    voice : str
        espeak-ng voice, ``base+variant``.
    rate : int
        Speaking rate in words per minute.
    pitch : int
        espeak-ng pitch, 0-100.
    pitch_range : int
        espeak-ng pitch range, 0-100.
    utterances : tuple of Utterance
        What the speaker says.

    Example
    -------
    >>> plan = plan_corpus(corpus_config(1, 1, 1, utterances_per_speaker=2))
    >>> len({speaker.speaker for speaker in plan})
    3
    """

    split: str
    speaker: int
    voice: str
    rate: int
    pitch: int
    pitch_range: int
    utterances: Tuple[Utterance, ...]


def corpus_config(
    train_speakers=60,
    dev_speakers=8,
    test_speakers=8,
    utterances_per_speaker=50,
    seed=1234,
):
    """Check the corpus sizes and return the configuration to cache on.

    Arguments
    ---------
    train_speakers : int
        Speakers in ``train-clean-100``.
    dev_speakers : int
        Speakers in ``dev-clean``.
    test_speakers : int
        Speakers in ``test-clean``.
    utterances_per_speaker : int
        Utterances of every speaker.
    seed : int
        Seed of everything random.

    Returns
    -------
    dict
        The configuration, with the generator version.

    Example
    -------
    >>> corpus_config(train_speakers=2)["train_speakers"]
    2
    >>> corpus_config(dev_speakers=0)
    Traceback (most recent call last):
    ...
    ValueError: dev_speakers must be a positive integer, got 0
    """
    config = {
        "train_speakers": train_speakers,
        "dev_speakers": dev_speakers,
        "test_speakers": test_speakers,
        "utterances_per_speaker": utterances_per_speaker,
    }
    for name, value in config.items():
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ValueError(
                f"{name} must be a positive integer, got {value!r}"
            )
    if isinstance(seed, bool) or not isinstance(seed, int):
        raise ValueError(f"seed must be an integer, got {seed!r}")
    return dict(
        config,
        seed=seed,
        sample_rate=SAMPLE_RATE,
        generator_version=GENERATOR_VERSION,
    )


def plan_corpus(config, available_variants=VARIANTS):
    """Draw speakers, voices, sentences, SNRs and seeds from the config.

    Pure Python: nothing is synthesised and the library is not loaded.

    Arguments
    ---------
    config : dict
        From ``corpus_config``.
    available_variants : collection of str
        Variant names the installed espeak-ng has (``list_variants``).

    Returns
    -------
    list of Speaker
        Train speakers first, then dev, then test.

    Example
    -------
    >>> plan = plan_corpus(corpus_config(1, 1, 1, utterances_per_speaker=3))
    >>> [speaker.split for speaker in plan]
    ['train-clean-100', 'dev-clean', 'test-clean']
    >>> len(plan[0].utterances), plan[0].utterances[0].uid.count("-")
    (3, 2)
    """
    variants = [name for name in VARIANTS if name in set(available_variants)]
    if not variants:
        raise OSError("espeak-ng has none of the voice variants in VARIANTS")
    rng = random.Random(config["seed"])
    rng.shuffle(variants)
    per_speaker = config["utterances_per_speaker"]
    counts = [config[f"{name}_speakers"] for name in ("train", "dev", "test")]
    total = sum(counts)
    n_chapters = min(CHAPTERS_PER_SPEAKER, per_speaker)
    speaker_ids = rng.sample(range(100, 100 + max(9900, 10 * total)), total)
    chapter_ids = rng.sample(
        range(1000, 1000 + max(199000, 100 * total)), n_chapters * total
    )
    splits = [
        split for split, count in zip(SPLITS, counts) for _ in range(count)
    ]
    plan = []
    for index, split in enumerate(splits):
        cycle = index // len(variants)
        base = BASE_VOICES[(index + cycle) % len(BASE_VOICES)]
        speaker = speaker_ids[index]
        chapters = chapter_ids[index * n_chapters : (index + 1) * n_chapters]
        sentences = sample_sentences(
            rng, per_speaker, offset=index * per_speaker
        )
        voice = f"{base}+{variants[index % len(variants)]}"
        rate, pitch, pitch_range = (
            rng.randint(*span) for span in (RATES, PITCHES, PITCH_RANGES)
        )
        utterances = []
        for position, sentence in enumerate(sentences):
            chapter_index = position * n_chapters // per_speaker
            chapter = chapters[chapter_index]
            first = -(-chapter_index * per_speaker // n_chapters)
            uid = f"{speaker}-{chapter}-{position - first:04d}"
            snr_db = round(rng.uniform(*SNRS_DB), 1)
            seed = rng.randrange(2**31)
            utterances.append(Utterance(uid, chapter, sentence, snr_db, seed))
        plan.append(
            Speaker(
                split,
                speaker,
                voice,
                rate,
                pitch,
                pitch_range,
                tuple(utterances),
            )
        )
    return plan


def add_noise(audio, snr_db, seed):
    """Add white Gaussian noise at a signal-to-noise ratio.

    The signal power is that of the samples above 1 % of the peak, so
    leading and trailing silence does not lower it.

    Arguments
    ---------
    audio : numpy.ndarray
        Float samples.
    snr_db : float
        Signal-to-noise ratio in dB.
    seed : int
        Seed of the noise.

    Returns
    -------
    numpy.ndarray
        ``audio`` plus noise.

    Example
    -------
    >>> tone = np.sin(np.linspace(0, 1000, 16000))
    >>> noisy = add_noise(tone, 20.0, seed=0)
    >>> round(10 * np.log10(np.mean(tone**2) / np.mean((noisy - tone)**2)))
    20
    """
    peak = np.max(np.abs(audio), initial=0.0)
    active = audio[np.abs(audio) > 0.01 * peak]
    power = np.mean(active**2) if active.size else 0.0
    noise = np.random.default_rng(seed).standard_normal(len(audio))
    return audio + noise * np.sqrt(power / 10 ** (snr_db / 10))


def resample(audio, orig_rate, new_rate=SAMPLE_RATE):
    """Resample with ``scipy.signal.resample_poly``, designing its filter once.

    Arguments
    ---------
    audio : numpy.ndarray
        Float samples.
    orig_rate : int
        Sample rate of ``audio``.
    new_rate : int
        Sample rate wanted.

    Returns
    -------
    numpy.ndarray
        Same values as ``resample_poly(audio, new_rate, orig_rate)``.

    Example
    -------
    >>> audio = np.random.default_rng(0).standard_normal(22050)
    >>> out = resample(audio, 22050)
    >>> len(out), np.allclose(out, resample_poly(audio, 16000, 22050))
    (16000, True)
    """
    factor = math.gcd(orig_rate, new_rate)
    up, down = new_rate // factor, orig_rate // factor
    return resample_poly(audio, up, down, window=_resampling_filter(up, down))


@functools.lru_cache(maxsize=4)
def _resampling_filter(up, down):
    """Design the low-pass filter ``resample_poly`` uses for ``up/down``."""
    rate = max(up, down)
    return firwin(20 * rate + 1, 1.0 / rate, window=("kaiser", 5.0))


def _to_pcm16(audio, peak=0.95):
    """Scale down to ``peak`` if louder, so nothing clips, then to int16."""
    audio = audio * min(1.0, peak / max(np.max(np.abs(audio)), 1e-9))
    return np.round(audio * 32767).astype(np.int16)


def _synthesize_speaker(speaker, root, library_path, data_path):
    """Synthesise and write one speaker; runs in a fresh worker process."""
    engine = Espeak(library_path, data_path)
    durations = {}
    lines = {}
    for utterance in speaker.utterances:
        pcm = engine.synthesize(
            utterance.sentence.text,
            voice=speaker.voice,
            rate=speaker.rate,
            pitch=speaker.pitch,
            pitch_range=speaker.pitch_range,
            seed=utterance.seed,
        )
        audio = resample(pcm / 32768.0, engine.sample_rate)
        audio = _to_pcm16(add_noise(audio, utterance.snr_db, utterance.seed))
        folder = _chapter_folder(root, speaker, utterance.chapter)
        os.makedirs(folder, exist_ok=True)
        path = os.path.join(folder, f"{utterance.uid}.flac")
        sf.write(path, audio, SAMPLE_RATE, format="FLAC", subtype="PCM_16")
        durations[utterance.uid] = len(audio) / SAMPLE_RATE
        line = f"{utterance.uid} {utterance.sentence.transcript}\n"
        lines.setdefault(utterance.chapter, []).append(line)
    for chapter, chapter_lines in lines.items():
        name = f"{speaker.speaker}-{chapter}.trans.txt"
        path = os.path.join(_chapter_folder(root, speaker, chapter), name)
        with open(path, "w", encoding="utf-8") as file:
            file.writelines(chapter_lines)
    return durations


def _chapter_folder(root, speaker, chapter):
    return os.path.join(root, speaker.split, str(speaker.speaker), str(chapter))


def _config_text(config):
    return json.dumps(config, indent=2, sort_keys=True) + "\n"


def is_complete(librispeech_dir, config):
    """Tell whether a folder holds a finished corpus of this configuration.

    Arguments
    ---------
    librispeech_dir : str
        The ``LibriSpeech`` folder.
    config : dict
        From ``corpus_config``.

    Returns
    -------
    bool
        True when the completion marker holds exactly ``config``.

    Example
    -------
    >>> is_complete("/nonexistent/LibriSpeech", corpus_config())
    False
    """
    try:
        with open(
            os.path.join(librispeech_dir, DONE_FILE), encoding="utf-8"
        ) as f:
            return f.read() == _config_text(config)
    except OSError:
        return False


def _prepare_folder(root, config):
    """Create ``root``, clear an earlier partial corpus, write the config."""
    try:
        os.makedirs(root, exist_ok=True)
    except OSError as error:
        raise OSError(f"out_dir: cannot create {root}: {error}") from error
    if os.listdir(root) and not os.path.exists(os.path.join(root, CONFIG_FILE)):
        raise FileExistsError(
            f"out_dir: {root} holds files that sb_prune.data did not write; "
            "choose another output folder"
        )
    for name in (DONE_FILE, LABELS_FILE):
        if os.path.exists(os.path.join(root, name)):
            os.remove(os.path.join(root, name))
    for split in SPLITS:
        shutil.rmtree(os.path.join(root, split), ignore_errors=True)
    try:
        with open(os.path.join(root, CONFIG_FILE), "w", encoding="utf-8") as f:
            f.write(_config_text(config))
    except OSError as error:
        raise OSError(f"out_dir: {root} is not writable: {error}") from error


def _default_processes():
    if hasattr(os, "sched_getaffinity"):
        return len(os.sched_getaffinity(0))
    return os.cpu_count() or 1


def _run_workers(plan, worker, processes, progress):
    """Run ``worker`` on every speaker, each in a fresh process."""
    methods = multiprocessing.get_all_start_methods()
    # A fork of a process that already loaded espeak-ng would inherit its
    # state; a fork server never loads it.
    method = "forkserver" if "forkserver" in methods else "spawn"
    context = multiprocessing.get_context(method)
    if method == "forkserver":
        context.set_forkserver_preload([__name__])
    durations = {}
    total = sum(len(speaker.utterances) for speaker in plan)
    bar = tqdm(total=total, unit="utt", desc="synth", disable=not progress)
    with (
        bar,
        context.Pool(min(processes, len(plan)), maxtasksperchild=1) as pool,
    ):
        for result in pool.imap_unordered(worker, plan):
            durations.update(result)
            bar.update(len(result))
    return durations


def _write_labels(path, plan, durations):
    with open(path, "w", newline="", encoding="utf-8") as file:
        writer = csv.writer(file)
        writer.writerow(LABEL_COLUMNS)
        for speaker in plan:
            for utterance in speaker.utterances:
                sentence = utterance.sentence
                writer.writerow(
                    [
                        utterance.uid,
                        speaker.split,
                        speaker.speaker,
                        utterance.chapter,
                        sentence.keyword,
                        sentence.template,
                        sentence.kind,
                        speaker.voice,
                        speaker.rate,
                        speaker.pitch,
                        speaker.pitch_range,
                        utterance.snr_db,
                        len(sentence.words),
                        round(durations[utterance.uid], 4),
                        sentence.transcript,
                    ]
                )


def synthesize_corpus(
    out_dir,
    train_speakers=60,
    dev_speakers=8,
    test_speakers=8,
    utterances_per_speaker=50,
    seed=1234,
    processes=None,
    progress=True,
):
    """Write a synthetic LibriSpeech-format corpus, or reuse a cached one.

    Arguments
    ---------
    out_dir : str
        Folder that receives ``LibriSpeech/``.
    train_speakers : int
        Speakers in ``train-clean-100``.
    dev_speakers : int
        Speakers in ``dev-clean``.
    test_speakers : int
        Speakers in ``test-clean``.
    utterances_per_speaker : int
        Utterances of every speaker (split into up to two chapters).
    seed : int
        Seed of everything random: same seed and sizes, same bytes.
    processes : int, optional
        Worker processes (default: the number of usable CPUs).
    progress : bool
        Show a tqdm progress bar.

    Returns
    -------
    str
        The ``LibriSpeech`` folder. When it already holds a complete corpus
        of the same configuration it is returned at once; a partial or
        different one of ours is replaced.

    Example
    -------
    >>> import tempfile
    >>> out = tempfile.mkdtemp()
    >>> root = synthesize_corpus(out, 1, 1, 1, 2, processes=1, progress=False)
    >>> sorted(os.listdir(root))  # doctest: +NORMALIZE_WHITESPACE
    ['dev-clean', 'sb_prune_synth.done', 'sb_prune_synth.json',
     'test-clean', 'train-clean-100', 'utterances.csv']
    >>> len(read_labels(root))
    6
    >>> shutil.rmtree(out)
    """
    config = corpus_config(
        train_speakers,
        dev_speakers,
        test_speakers,
        utterances_per_speaker,
        seed,
    )
    if processes is None:
        processes = _default_processes()
    if (
        isinstance(processes, bool)
        or not isinstance(processes, int)
        or processes < 1
    ):
        raise ValueError(
            f"processes must be a positive integer, got {processes!r}"
        )
    root = os.path.join(os.fspath(out_dir), "LibriSpeech")
    if is_complete(root, config):
        logger.info("reusing the complete synthetic corpus in %s", root)
        return root
    library_path, data_path = find_espeak()
    plan = plan_corpus(config, list_variants(data_path))
    _prepare_folder(root, config)
    worker = functools.partial(
        _synthesize_speaker,
        root=root,
        library_path=library_path,
        data_path=data_path,
    )
    start = time.perf_counter()
    durations = _run_workers(plan, worker, processes, progress)
    logger.info(
        "synthesised %d utterances in %.1f s",
        len(durations),
        time.perf_counter() - start,
    )
    _write_labels(os.path.join(root, LABELS_FILE), plan, durations)
    with open(os.path.join(root, DONE_FILE), "w", encoding="utf-8") as file:
        file.write(_config_text(config))
    return root


def read_labels(librispeech_dir):
    """Read the per-utterance labels of a synthetic corpus.

    Arguments
    ---------
    librispeech_dir : str
        The ``LibriSpeech`` folder returned by ``synthesize_corpus``.

    Returns
    -------
    dict
        Utterance ID (as in the flac name) -> row dict with the columns of
        ``LABEL_COLUMNS``; numbers are ``int`` or ``float``, IDs ``str``.

    Example
    -------
    >>> read_labels("/nonexistent")
    Traceback (most recent call last):
    ...
    FileNotFoundError: no labels at /nonexistent/utterances.csv...
    """
    path = os.path.join(librispeech_dir, LABELS_FILE)
    if not os.path.isfile(path):
        raise FileNotFoundError(
            f"no labels at {path}; make the corpus with synthesize_corpus"
        )
    labels = {}
    with open(path, newline="", encoding="utf-8") as file:
        for row in csv.DictReader(file):
            for column in _INT_COLUMNS:
                row[column] = int(row[column])
            for column in _FLOAT_COLUMNS:
                row[column] = float(row[column])
            labels[row["ID"]] = row
    return labels


def summarize_labels(labels):
    """Count utterances, audio and sentence reuse in a corpus's labels.

    Arguments
    ---------
    labels : dict
        From ``read_labels``.

    Returns
    -------
    dict
        ``utterances`` and ``minutes`` per split and in all, the number of
        ``distinct_sentences``, the ``vocabulary_used``, and
        ``test_sentences_in_train``: how many test utterances say a
        sentence that also occurs in train.

    Example
    -------
    >>> rows = [
    ...     {"split": "train-clean-100", "transcript": "OPEN THE DOOR",
    ...      "duration_s": 60.0},
    ...     {"split": "test-clean", "transcript": "OPEN THE DOOR",
    ...      "duration_s": 30.0},
    ... ]
    >>> summary = summarize_labels(dict(enumerate(rows)))
    >>> summary["minutes"], summary["test_sentences_in_train"]
    (1.5, 1)
    """
    rows = list(labels.values())
    train = {row["transcript"] for row in rows if row["split"] == SPLITS[0]}
    test = [row["transcript"] for row in rows if row["split"] == SPLITS[2]]
    summary = {
        "utterances": len(rows),
        "minutes": sum(row["duration_s"] for row in rows) / 60,
        "distinct_sentences": len({row["transcript"] for row in rows}),
        "vocabulary_used": len(
            {word for row in rows for word in row["transcript"].split()}
        ),
        "test_sentences_in_train": sum(text in train for text in test),
    }
    for split in SPLITS:
        in_split = [row for row in rows if row["split"] == split]
        summary[f"{split}_utterances"] = len(in_split)
        summary[f"{split}_minutes"] = (
            sum(row["duration_s"] for row in in_split) / 60
        )
    return summary
