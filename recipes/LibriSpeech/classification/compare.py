#!/usr/bin/env python3
"""Compare the convexity layer cut with no cut and a same-depth baseline.

For each task, three fine-tunings of the same pretrained encoder, with the
same epochs and seed (``train.py``):

1. the convexity cut (``--rule``: ``peak``, or ``fraction`` with
   ``--fraction``), which also scores the pretrained encoder;
2. no cut (``cut_rule=none``);
3. another rule keeping as many layers as the convexity cut
   (``--other_rule``, ``evenly_spaced`` by default; ``last`` and ``first``
   also work).

It writes ``<output>/comparison.json`` and ``comparison.md`` (the table of
layers kept, parameters, MACs and accuracy) and prints the table.

Usage::

    python compare.py --pretrained_folder ../ASR/results/conformer_ctc/2024
    python compare.py --quick            # one epoch, few scored utterances

Arguments after ``--`` go to every ``train.py`` run (for example
``-- --number_of_epochs=3``); leave the ``cut_*`` keys to this script.

Authors
 * sb_prune developers
"""

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
QUICK = ["--number_of_epochs=1", "--convexity_max_per_class=10"]


def run(task, cut_rule, args, extra):
    """Run train.py for one task and cut; return its results.json."""
    folder = Path(args.output) / task / cut_rule
    command = [
        sys.executable,
        "train.py",
        args.hparams,
        f"--task={task}",
        f"--output_folder={folder}",
        f"--pretrained_folder={args.pretrained_folder}",
        "--noprogressbar",
        *extra,
        *args.train_args,
    ]
    if cut_rule != "convexity":
        command.append(f"--cut_rule={cut_rule}")
    else:
        command.append(f"--cut_rule={args.rule}")
        if args.fraction is not None:
            command.append(f"--cut_fraction={args.fraction}")
        command.append(f"--cut_tolerance={args.tolerance}")
    print(f"[{time.strftime('%H:%M:%S')}] {' '.join(command[1:])}", flush=True)
    subprocess.run(command, cwd=HERE, check=True)
    with open(folder / "results.json", encoding="utf-8") as handle:
        return json.load(handle)


def table(rows):
    """A Markdown table of the runs."""
    lines = [
        "| task | cut | layers kept | params | encoder params | MACs / 2 s "
        "| valid acc. (%) | test acc. (%) | train time (s) |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for row in rows:
        kept = [k + 1 for k in row["cut"]["kept"]] if row["cut"] else []
        layers = f"{row['layers_kept']}/{row['layers_total']}"
        if kept and len(kept) < row["layers_total"]:
            layers += f" ({', '.join(map(str, kept))})"
        lines.append(
            f"| {row['task']} | {row['variant']} | {layers} "
            f"| {row['params'] / 1e6:.2f}M | {row['encoder_params'] / 1e6:.2f}M"
            f" | {row['macs_per_utterance'] / 1e6:.0f}M "
            f"| {row['valid_accuracy']:.1f} | {row['test_accuracy']:.1f} "
            f"| {row['train_seconds']:.0f} |"
        )
    return "\n".join(lines)


def main(argv=None):
    """Run the comparison; return the rows."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--hparams", default="hparams/classify.yaml")
    parser.add_argument("--tasks", nargs="+", default=["keyword", "speaker"])
    parser.add_argument("--rule", default="peak", help="peak or fraction")
    parser.add_argument("--fraction", type=float, help="for --rule fraction")
    parser.add_argument("--tolerance", type=float, default=0.0)
    parser.add_argument("--other_rule", default="evenly_spaced")
    parser.add_argument(
        "--pretrained_folder", default="../ASR/results/conformer_ctc/2024"
    )
    parser.add_argument("--output", default="results/comparison")
    parser.add_argument("--quick", action="store_true", help=QUICK)
    parser.add_argument("train_args", nargs="*", help="after --: train.py")
    args = parser.parse_args(argv)
    extra = QUICK if args.quick else []
    rows = []
    for task in args.tasks:
        cut = run(task, "convexity", args, extra)
        depth = cut["layers_kept"]
        same_depth = [f"--cut_layers={depth}", "--score_at_start=False"]
        baselines = [
            ("none", ["--score_at_start=False"]),
            (args.other_rule, same_depth),
        ]
        rows.append({**cut, "variant": f"convexity ({cut['cut_rule']})"})
        for rule, options in baselines:
            result = run(task, rule, args, extra + options)
            rows.append({**result, "variant": rule})
    os.makedirs(args.output, exist_ok=True)
    with open(Path(args.output) / "comparison.json", "w") as handle:
        json.dump(rows, handle, indent=2)
    markdown = table(rows)
    (Path(args.output) / "comparison.md").write_text(markdown + "\n")
    print(markdown)
    return rows


if __name__ == "__main__":
    main()
