"""``sb-prune synth``: write the offline LibriSpeech-format corpus.

Authors
 * sb_prune developers
"""

import os
import time

from sb_prune.data.synthesize import (
    SPLITS,
    corpus_config,
    is_complete,
    read_labels,
    summarize_labels,
    synthesize_corpus,
)


def add_arguments(parser):
    """Declare the options of ``sb-prune synth``.

    Arguments
    ---------
    parser : argparse.ArgumentParser
        The sub-command's parser.

    Example
    -------
    >>> import argparse
    >>> parser = argparse.ArgumentParser()
    >>> add_arguments(parser)
    >>> parser.parse_args(["--out", "data"]).train_speakers
    60
    """
    parser.add_argument(
        "--out", required=True, help="folder that receives LibriSpeech/"
    )
    parser.add_argument("--train-speakers", type=int, default=60)
    parser.add_argument("--dev-speakers", type=int, default=8)
    parser.add_argument("--test-speakers", type=int, default=8)
    parser.add_argument("--utterances-per-speaker", type=int, default=50)
    parser.add_argument("--seed", type=int, default=1234)
    parser.add_argument(
        "--processes",
        type=int,
        default=None,
        help="worker processes (default: the number of CPUs)",
    )


def main(args):
    """Run ``sb-prune synth``: write the corpus and report on it.

    Arguments
    ---------
    args : argparse.Namespace
        Parsed options of ``add_arguments``.

    Returns
    -------
    int
        The exit status.
    """
    sizes = dict(
        train_speakers=args.train_speakers,
        dev_speakers=args.dev_speakers,
        test_speakers=args.test_speakers,
        utterances_per_speaker=args.utterances_per_speaker,
        seed=args.seed,
    )
    cached = is_complete(
        os.path.join(args.out, "LibriSpeech"), corpus_config(**sizes)
    )
    start = time.perf_counter()
    root = synthesize_corpus(args.out, processes=args.processes, **sizes)
    elapsed = time.perf_counter() - start
    summary = summarize_labels(read_labels(root))
    count = summary["utterances"]
    print(f"corpus: {root}")
    if cached:
        print(f"{count} utterances already there (cached), nothing synthesised")
    else:
        print(
            f"{count} utterances in {elapsed:.1f} s "
            f"({count / elapsed:.0f} utterances/s)"
        )
    for split in SPLITS:
        print(
            f"  {split}: {summary[f'{split}_utterances']} utterances, "
            f"{summary[f'{split}_minutes']:.1f} min"
        )
    print(
        f"{summary['distinct_sentences']} distinct sentences over "
        f"{summary['vocabulary_used']} words; "
        f"{summary['test_sentences_in_train']} test utterances repeat a "
        "train sentence"
    )
    return 0
