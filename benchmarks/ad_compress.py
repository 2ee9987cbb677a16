#!/usr/bin/env python3
"""Adaptive dropout through ``sb-prune compress``, the demo's path.

Compresses the demo's trained dense model (``make demo`` writes it under
``results/demo``) with adaptive dropout as the demo does: its fine-tuning
subset, validation subset, test set and fine-tuning overrides
(``sb_prune.cli.demo``). ``--whole-training-set``: the dense model's
training set instead of the subset; ``--no-demo-fine-tuning``: the
recipe's learning rate instead of the demo's. One run for every
combination of ``--epochs``, ``--weights`` (``adl_regularization_weight``)
and ``--seeds``. Prints encoder parameters removed, validation WER (of
the checkpoint tested) and test WER per setting, mean and spread over the
seeds; the setting to keep is chosen on the validation WER, among those
removing at least half of the encoder's parameters.

Usage::

    python benchmarks/ad_compress.py --demo results/demo \\
        --epochs 6 10 --weights 3e-5 1e-4 --seeds 2024 1 2 \\
        --json benchmarks/results/ad_compress_demo.json
"""

import argparse
import json
import time
from pathlib import Path

from common import provenance, spread

from sb_prune.cli.compress import compress
from sb_prune.cli.demo import FINE_TUNING

OUT = Path(__file__).resolve().parents[1] / "benchmarks" / "out"


def run(demo, train_csv, output, epochs, weight, seed, fine_tuning):
    """One compression; return its row."""
    dense = demo / "runs" / "dense"
    data = json.loads((dense / "librispeech_prepare.json").read_text())
    tag = "demo_lr" if fine_tuning else "recipe_lr"
    folder = output / f"{train_csv.stem}_{tag}_e{epochs}_w{weight:g}_s{seed}"
    began = time.time()
    summary = compress(
        demo / "exported" / "dense",
        "adaptive-dropout",
        train_csv,
        folder,
        epochs,
        valid_csv=demo / "validation.csv",
        test_csv=dense / "test-clean.csv",
        overrides={
            **fine_tuning,
            "adl_regularization_weight": weight,
            "seed": seed,
        },
        data_root=data["data_folder"],
    )
    results = summary["results"]
    return {
        "epochs": epochs,
        "weight": weight,
        "seed": seed,
        "encoder_params": results["encoder_params"],
        "valid_wer": results["valid"]["WER"],
        "wer": results["test-clean"]["WER"],
        "minutes": round((time.time() - began) / 60, 2),
    }


def main(argv=None):
    """Run the grid, print the table, optionally write the JSON."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--demo", type=Path, default=Path("results/demo"))
    parser.add_argument(
        "--no-demo-fine-tuning",
        action="store_true",
        help="leave the recipe's learning rate, warm-up and checkpoint "
        "averaging (sb-prune compress's defaults) instead of the demo's "
        "FINE_TUNING overrides",
    )
    parser.add_argument(
        "--whole-training-set",
        action="store_true",
        help="fine-tune on the dense model's whole training set instead of "
        "the demo's subset",
    )
    parser.add_argument("--epochs", type=int, nargs="+", default=[3])
    parser.add_argument("--weights", type=float, nargs="+", default=[3e-4])
    parser.add_argument("--seeds", type=int, nargs="+", default=[2024])
    parser.add_argument("--output", type=Path, default=OUT / "ad_compress")
    parser.add_argument("--json", type=Path)
    args = parser.parse_args(argv)
    dense = json.loads(
        (args.demo / "runs" / "dense" / "results.json").read_text()
    )
    demo = args.demo.resolve()
    train_csv = (
        demo / "runs" / "dense" / "train.csv"
        if args.whole_training_set
        else demo / "finetune.csv"
    )
    fine_tuning = {} if args.no_demo_fine_tuning else FINE_TUNING
    rows = [
        run(
            demo,
            train_csv,
            args.output.resolve(),
            epochs,
            weight,
            seed,
            fine_tuning,
        )
        for epochs in args.epochs
        for weight in args.weights
        for seed in args.seeds
    ]
    settings = []
    for epochs in args.epochs:
        for weight in args.weights:
            mine = [
                r
                for r in rows
                if (r["epochs"], r["weight"]) == (epochs, weight)
            ]
            removed = [
                1 - r["encoder_params"] / dense["encoder_params"] for r in mine
            ]
            settings.append(
                {
                    "epochs": epochs,
                    "weight": weight,
                    "removed": spread(removed),
                    "valid_wer": spread([r["valid_wer"] for r in mine]),
                    "wer": spread([r["wer"] for r in mine]),
                }
            )
    small = [s for s in settings if s["removed"]["mean"] >= 0.5]
    chosen = min(small, key=lambda s: s["valid_wer"]["mean"], default=None)
    print(
        f"dense: {dense['encoder_params']:,} encoder parameters, test WER "
        f"{dense['test-clean']['WER']:.2f}"
    )
    print(
        f"{'epochs':>6}{'weight':>9}{'removed':>9}{'valid WER':>16}"
        f"{'test WER':>16}"
    )
    for s in settings:
        mark = " <- chosen on validation" if s is chosen else ""
        print(
            f"{s['epochs']:>6}{s['weight']:>9.0e}{s['removed']['mean']:>9.1%}"
            f"{s['valid_wer']['mean']:>10.2f} ±{s['valid_wer']['sd']:>4.2f}"
            f"{s['wer']['mean']:>10.2f} ±{s['wer']['sd']:>4.2f}{mark}"
        )
    figures = {
        **provenance(),
        "dense": {
            "encoder_params": dense["encoder_params"],
            "wer": dense["test-clean"]["WER"],
        },
        "fine_tuning": fine_tuning,
        "train_csv": str(train_csv.relative_to(demo)),
        "settings": settings,
        "chosen": chosen and {k: chosen[k] for k in ("epochs", "weight")},
        "rows": rows,
    }
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(figures, indent=1))
    return figures


if __name__ == "__main__":
    main()
