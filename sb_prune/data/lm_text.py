"""Language-model text: the synthetic grammar, or LibriSpeech LM text.

:func:`prepare_lm_text` writes ``lm_train.csv``, ``lm_valid.csv`` and
``lm_test.csv`` (columns ``ID, chars, wrd``; ``wrd`` upper-case words as
in LibriSpeech transcripts). By default the sentences are sampled from the
grammar of the synthetic speech corpus (:mod:`sb_prune.data.grammar`) with
their own seed; held-out sentences that also occur in the training text
are dropped, so validation and test perplexities are measured on unseen
sentences. Given ``text_file`` (for example LibriSpeech's
``librispeech-lm-norm.txt``, one normalised sentence per line), its first
lines are used instead, shuffled with the seed.

Sentences listed in ``exclude_csv`` (the ``wrd`` column of ASR manifests,
e.g. the ASR test set) never enter the LM training text, so rescoring an
ASR test set with the LM is not helped by having seen its transcripts.

Authors
 * sb_prune developers
"""

import csv
import itertools
import json
import logging
import os
import random

from sb_prune.data.grammar import sample_sentences

logger = logging.getLogger(__name__)

SPLITS = ("train", "valid", "test")


def _read_wrd(csv_path):
    with open(csv_path, newline="", encoding="utf-8") as handle:
        return {row["wrd"] for row in csv.DictReader(handle)}


def _grammar_text(counts, seed):
    rng = random.Random(seed)
    texts, offset = [], 0
    for count in counts:
        sentences = sample_sentences(rng, count, offset=offset)
        texts.append([s.transcript for s in sentences])
        offset += count
    return texts


def _file_text(text_file, counts, seed):
    with open(text_file, encoding="utf-8") as handle:
        lines = [
            " ".join(line.split()).upper()
            for line in itertools.islice(handle, sum(counts))
        ]
    lines = [line for line in lines if line]
    if len(lines) < sum(counts):
        raise ValueError(
            f"lm_text_file {text_file} has {len(lines)} non-empty lines, "
            f"fewer than the {sum(counts)} sentences asked for"
        )
    random.Random(seed).shuffle(lines)
    bounds = list(itertools.accumulate(counts, initial=0))
    return [lines[a:b] for a, b in zip(bounds, bounds[1:])]


def prepare_lm_text(
    save_folder,
    train_sentences=20000,
    valid_sentences=1000,
    test_sentences=1000,
    seed=7,
    text_file=None,
    exclude_csv=(),
    skip_prep=False,
):
    """Write the LM text manifests (skipped if already there, same config).

    Arguments
    ---------
    save_folder : str
        Where ``lm_<split>.csv`` go.
    train_sentences : int
        Training sentences (before removing excluded ones).
    valid_sentences : int
        Validation sentences (before removing those seen in training).
    test_sentences : int
        Test sentences (same).
    seed : int
        Seed of the sampling (or of the shuffle of ``text_file``).
    text_file : str, optional
        LM text, one sentence per line; default: the synthetic grammar.
    exclude_csv : list of str
        Manifests whose ``wrd`` sentences are kept out of training.
    skip_prep : bool
        Do nothing.

    Returns
    -------
    dict
        ``{"train": path, "valid": path, "test": path}``.

    Example
    -------
    >>> paths = prepare_lm_text(getfixture("tmp_path"), 50, 10, 10)
    >>> sorted(paths)
    ['test', 'train', 'valid']
    """
    paths = {s: os.path.join(save_folder, f"lm_{s}.csv") for s in SPLITS}
    if skip_prep:
        return paths
    counts = [train_sentences, valid_sentences, test_sentences]
    for name, count in zip(SPLITS, counts):
        if isinstance(count, bool) or not isinstance(count, int) or count < 1:
            raise ValueError(
                f"{name}_sentences must be an integer >= 1, got {count!r}"
            )
    config = {
        "counts": counts,
        "seed": seed,
        "text_file": text_file,
        "exclude_csv": sorted(map(str, exclude_csv)),
    }
    marker = os.path.join(save_folder, "lm_text.json")
    if os.path.exists(marker):
        with open(marker, encoding="utf-8") as handle:
            if json.load(handle) == config:
                return paths
    if text_file is None:
        train, valid, test = _grammar_text(counts, seed)
    else:
        train, valid, test = _file_text(text_file, counts, seed)
    excluded = set()
    for path in exclude_csv:
        excluded |= _read_wrd(path)
    train = [s for s in train if s not in excluded]
    seen = set(train)
    splits = {
        "train": train,
        "valid": [s for s in valid if s not in seen],
        "test": [s for s in test if s not in seen],
    }
    os.makedirs(save_folder, exist_ok=True)
    for name, sentences in splits.items():
        with open(paths[name], "w", newline="", encoding="utf-8") as handle:
            writer = csv.writer(handle)
            writer.writerow(["ID", "chars", "wrd"])
            for index, sentence in enumerate(sentences):
                writer.writerow([f"{name}-{index}", len(sentence), sentence])
    with open(marker, "w", encoding="utf-8") as handle:
        json.dump(config, handle)
    logger.info(
        "LM text: "
        + ", ".join(f"{k} {len(v)} sentences" for k, v in splits.items())
    )
    return paths
