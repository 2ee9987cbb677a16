#!/usr/bin/env python3
"""A method through ``sb-prune compress`` on the demo's path, over a grid.

Compresses the demo's trained dense model (``make demo`` writes it under
``results/demo``) as the demo does: its fine-tuning subset, validation
subset, test set and short fine-tuning (``sb-prune demo``), through
``sb_prune.compress``.
``--whole-training-set``: the dense model's training set instead of the
subset; ``--no-demo-fine-tuning``: the recipe's learning rate, warm-up
and checkpoint averaging (``sb-prune compress``'s own) instead of the
demo's. One run for every combination of ``--epochs``, the values of
each ``--set KEY=V1,V2`` and ``--seeds``.

Prints per setting, mean and spread over the seeds: encoder parameters
removed, validation WER (of the checkpoint tested), test WER and, for
I3D, executed layers and the share of input-dependent gates. The setting
to keep is chosen on the validation WER, among those removing at least
``--min-removed`` of the encoder's parameters.

``--from-scratch``: the method's recipe trained from scratch instead (the
dense model's corpus, whole training set, its dev set for validation;
``--method dense``: the dense recipe), the comparison the paper of the
method makes; sizes are still measured against the demo's dense model.

Usage::

    python benchmarks/compress_grid.py --method adaptive-dropout \\
        --whole-training-set --no-demo-fine-tuning --epochs 6 \\
        --set adl_regularization_weight=1e-5,3e-5 --seeds 2024 1 2 \\
        --min-removed 0.5 --json benchmarks/results/ad_compress.json
    python benchmarks/compress_grid.py --method i3d-local \\
        --set i3d_temperature=1.0,0.5 --seeds 2024 1 2
    python benchmarks/compress_grid.py --method dense --from-scratch \\
        --epochs 8 --set num_encoder_layers=3,4 --seeds 2024 1 2
"""

import argparse
import itertools
import json
import time
from pathlib import Path

import yaml
from common import group_rows, provenance, run_asr_recipe, spread, write_json

from sb_prune import compress
from sb_prune.asr.compress import SHORT_FINE_TUNING
from sb_prune.methods.table import compressions

OUT = Path(__file__).resolve().parents[1] / "benchmarks" / "out"
#: Test figures of I3D runs (``GateRecorder.summary``) kept in the rows.
GATE_FIGURES = ("avg_layers", "input_dependent")
#: --from-scratch: method -> its ASR recipe hparams file.
RECIPE_HPARAMS = {
    "dense": "conformer_ctc.yaml",
    **{method: c.recipe for method, c in compressions().items()},
}


def parse_grid(items):
    """``["KEY=V1,V2", ...]`` -> every combination, as override dicts.

    Example
    -------
    >>> parse_grid(["a=1,2", "b=x"])
    [{'a': 1, 'b': 'x'}, {'a': 2, 'b': 'x'}]
    >>> parse_grid([])
    [{}]
    """
    keys, values = [], []
    for item in items:
        key, sep, text = item.partition("=")
        if not sep or not key or not text:
            raise ValueError(f"--set expects KEY=V1,V2,..., got {item!r}")
        keys.append(key)
        values.append([yaml.safe_load(v) for v in text.split(",")])
    return [dict(zip(keys, combo)) for combo in itertools.product(*values)]


def compress_run(args, train_csv, epochs, setting, seed, folder):
    """One compression of the demo's dense model; its results.json."""
    fine_tuning = {} if args.no_demo_fine_tuning else SHORT_FINE_TUNING
    summary = compress(
        args.demo / "exported" / "dense",
        args.method,
        train_csv,
        folder,
        epochs,
        valid_csv=args.demo / "validation.csv",
        test_csv=args.dense_run / "test-clean.csv",
        overrides={**fine_tuning, **setting, "seed": seed},
        data_root=args.data_root,
    )
    return summary["results"]


def scratch_run(args, epochs, setting, seed, folder):
    """The method's recipe from scratch on the dense model's corpus."""
    overrides = {
        **setting,
        "data_folder": args.data_root,
        "number_of_epochs": epochs,
        "seed": seed,
    }
    return run_asr_recipe(RECIPE_HPARAMS[args.method], folder, **overrides)


def run(args, train_csv, epochs, setting, seed):
    """One run of the grid; return its row."""
    tag = "_".join(f"{k}{v}" for k, v in setting.items())
    data = "scratch" if args.from_scratch else train_csv.stem
    folder = args.output / f"{args.method}_{data}_e{epochs}_{tag}_s{seed}"
    began = time.time()
    if args.from_scratch:
        results = scratch_run(args, epochs, setting, seed, folder)
    else:
        results = compress_run(args, train_csv, epochs, setting, seed, folder)
    test = results["test-clean"]
    return {
        "epochs": epochs,
        "setting": setting,
        "seed": seed,
        "encoder_params": results["encoder_params"],
        "valid_wer": results["valid"]["WER"],
        "wer": test["WER"],
        **{key: test[key] for key in GATE_FIGURES if key in test},
        "minutes": round((time.time() - began) / 60, 2),
    }


def summarise(rows, dense_params):
    """Per epochs and setting: every figure's spread over the seeds."""
    groups = group_rows(
        rows,
        lambda r: (r["epochs"], json.dumps(r["setting"], sort_keys=True)),
    )
    settings = []
    for mine in groups.values():
        entry = {
            "epochs": mine[0]["epochs"],
            "setting": mine[0]["setting"],
            "removed": spread(
                [1 - r["encoder_params"] / dense_params for r in mine]
            ),
        }
        for key in ("valid_wer", "wer", *GATE_FIGURES):
            if key in mine[0]:
                entry[key] = spread([r[key] for r in mine])
        settings.append(entry)
    return settings


def main(argv=None):
    """Run the grid, print the table, optionally write the JSON."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument(
        "--method", required=True, choices=sorted(RECIPE_HPARAMS)
    )
    parser.add_argument("--from-scratch", action="store_true")
    parser.add_argument("--demo", type=Path, default=Path("results/demo"))
    parser.add_argument("--whole-training-set", action="store_true")
    parser.add_argument("--no-demo-fine-tuning", action="store_true")
    parser.add_argument("--epochs", type=int, nargs="+", default=[3])
    parser.add_argument("--set", action="append", default=[], metavar="K=V,V")
    parser.add_argument("--seeds", type=int, nargs="+", default=[2024])
    parser.add_argument("--min-removed", type=float, default=0.0)
    parser.add_argument("--output", type=Path, default=OUT / "compress_grid")
    parser.add_argument("--json", type=Path)
    args = parser.parse_args(argv)
    if args.method not in compressions() and not args.from_scratch:
        parser.error(f"--method {args.method} needs --from-scratch")
    if args.from_scratch and (
        args.whole_training_set or args.no_demo_fine_tuning
    ):
        parser.error(
            "--from-scratch trains the recipe on its own training set: "
            "--whole-training-set and --no-demo-fine-tuning do not apply"
        )
    args.demo, args.output = args.demo.resolve(), args.output.resolve()
    args.dense_run = args.demo / "runs" / "dense"
    args.data_root = json.loads(
        (args.dense_run / "librispeech_prepare.json").read_text()
    )["data_folder"]
    ran_on = provenance()
    grid = parse_grid(args.set)
    dense = json.loads((args.dense_run / "results.json").read_text())
    train_csv = (
        args.dense_run / "train.csv"
        if args.whole_training_set
        else args.demo / "finetune.csv"
    )
    rows = [
        run(args, train_csv, epochs, setting, seed)
        for epochs in args.epochs
        for setting in grid
        for seed in args.seeds
    ]
    settings = summarise(rows, dense["encoder_params"])
    eligible = [s for s in settings if s["removed"]["mean"] >= args.min_removed]
    chosen = min(eligible, key=lambda s: s["valid_wer"]["mean"], default=None)
    print(
        f"dense: {dense['encoder_params']:,} encoder parameters, test WER "
        f"{dense['test-clean']['WER']:.2f}"
    )
    for s in settings:
        cells = "  ".join(
            f"{key} {s[key]['mean']:.3g} ± {s[key]['sd']:.2g}"
            for key in ("removed", "valid_wer", "wer", *GATE_FIGURES)
            if key in s
        )
        mark = "  <- chosen on validation" if s is chosen else ""
        print(f"epochs {s['epochs']} {s['setting']}: {cells}{mark}")
    figures = {
        **ran_on,
        "method": args.method,
        "dense": {
            "encoder_params": dense["encoder_params"],
            "wer": dense["test-clean"]["WER"],
        },
        "from_scratch": args.from_scratch,
        "train_csv": "the recipe's"
        if args.from_scratch
        else str(train_csv.relative_to(args.demo)),
        "fine_tuning": "the recipe's"
        if args.from_scratch or args.no_demo_fine_tuning
        else SHORT_FINE_TUNING,
        "min_removed": args.min_removed,
        "settings": settings,
        "chosen": chosen and {k: chosen[k] for k in ("epochs", "setting")},
        "rows": rows,
    }
    if args.json:
        write_json(args.json, figures)
    return figures


if __name__ == "__main__":
    main()
