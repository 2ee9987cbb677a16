#!/usr/bin/env python3
"""Stability of ambient layers across seeds, model sizes and norms.

Runs ``ambient.py`` (train, then tamper tests) for every seed x model size
with SpeechBrain's LayerNorm in the convolution modules, and for every
seed of the ``--group_norm_sizes`` with GroupNorm instead, each in its own
process and output folder (finished runs are reused). Then it writes
``stability.md`` and ``stability.json`` into ``--output``:

* per size and norm: which units are ambient (A), intermediate (i) or
  critical (C) in each seed, those ambient in at least ``--min_runs``
  seeds ("stable"), and the mean pairwise Jaccard overlap of the seeds'
  ambient sets;
* per size: the stable ambient units with LayerNorm and with GroupNorm,
  and their overlap (does the ambient pattern survive GroupNorm?).

Model sizes are the ``stability_sizes`` of the hparams file.

To run this recipe, do the following:
> python stability.py hparams/conformer_ctc_importance.yaml
> python stability.py hparams/conformer_ctc_importance.yaml --seeds 1 2 3
>     --sizes small base --group_norm_sizes small   (one line)

Authors
 * sb_prune developers
"""

import argparse
import json
import subprocess
import sys
from pathlib import Path

import yaml

from sb_prune.analysis.importance.stability import (
    jaccard,
    pairwise_overlap,
    stability_table,
    stable_units,
)

HERE = Path(__file__).resolve().parent


class _PlainLoader(yaml.SafeLoader):
    """Reads a hyperpyyaml file as plain data (tagged values become None)."""


_PlainLoader.add_multi_constructor("!", lambda loader, suffix, node: None)


def parse(argv):
    """Split the study's options from the overrides passed to the runs."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("hparams")
    parser.add_argument("--seeds", type=int, nargs="+", default=[1, 2, 3])
    parser.add_argument("--sizes", nargs="+", default=["small", "base"])
    parser.add_argument("--group_norm_sizes", nargs="*", default=["small"])
    parser.add_argument("--min_runs", type=int, default=2)
    parser.add_argument("--output", default="results/stability")
    return parser.parse_known_args(argv)


def run_one(args, overrides, size, norm, seed):
    """Train and analyse one run (reused if finished); return its summary."""
    text = Path(args.hparams).read_text()
    sizes = yaml.load(text, Loader=_PlainLoader)["stability_sizes"]
    if size not in sizes:
        raise ValueError(
            f"--sizes: unknown {size!r}; hparams has {list(sizes)}"
        )
    folder = Path(args.output) / f"{size}_{norm}" / str(seed)
    summary = folder / "importance.json"
    if not summary.exists():
        command = [
            sys.executable,
            str(HERE / "ambient.py"),
            args.hparams,
            f"--seed={seed}",
            f"--conv_norm={norm}",
            f"--output_folder={folder}",
            *[f"--{key}={value}" for key, value in sizes[size].items()],
            *overrides,
        ]
        print("$", " ".join(command[1:]), flush=True)
        subprocess.run(command, check=True)
    return json.loads(summary.read_text())


def labels_of(summary):
    """``{unit: class}`` over the module and layer reports of a run."""
    labels = {}
    for report in summary["reports"].values():
        labels.update({u: e["class"] for u, e in report["units"].items()})
    return labels


def main(argv):
    """Run the study and write its tables."""
    args, overrides = parse(argv)
    if args.min_runs > len(args.seeds):
        raise ValueError(
            f"--min_runs {args.min_runs} exceeds the {len(args.seeds)} seeds"
        )
    configs = [(s, "layer") for s in args.sizes]
    configs += [(s, "group") for s in args.group_norm_sizes]
    study, sections = {}, []
    for size, norm in configs:
        runs = {
            seed: run_one(args, overrides, size, norm, seed)
            for seed in args.seeds
        }
        labels = {seed: labels_of(s) for seed, s in runs.items()}
        base = {
            seed: s["reports"]["modules"]["base"]["WER"]
            for seed, s in runs.items()
        }
        stable = stable_units(labels, args.min_runs)
        overlap = pairwise_overlap(labels)
        study[f"{size}_{norm}"] = {
            "labels": labels,
            "base_wer": base,
            "stable_ambient": stable,
            "pairwise_jaccard": overlap,
            "spearman": {
                seed: s["reports"]["modules"]["spearman"]["rho"]
                for seed, s in runs.items()
            },
        }
        sections.append(
            f"### {size}, {norm} norm (seeds {', '.join(map(str, args.seeds))})"
            f"\n\n{stability_table(labels, args.min_runs, base)}\n\n"
            f"Stable ambient (>= {args.min_runs} of {len(args.seeds)} seeds): "
            f"{', '.join(stable) or 'none'}; mean pairwise Jaccard of the "
            f"ambient sets: {overlap:.2f}"
        )
    rows = [
        "| size | stable ambient, LayerNorm | stable ambient, GroupNorm "
        "| Jaccard |",
        "|---|---|---|---|",
    ]
    for size in args.group_norm_sizes:
        layer = (
            study[f"{size}_layer"]["stable_ambient"]
            if size in args.sizes
            else []
        )
        group = study[f"{size}_group"]["stable_ambient"]
        study[f"{size}_layer_vs_group"] = jaccard(layer, group)
        rows.append(
            f"| {size} | {', '.join(layer) or 'none'} | "
            f"{', '.join(group) or 'none'} | {jaccard(layer, group):.2f} |"
        )
    sections.append("### LayerNorm vs GroupNorm\n\n" + "\n".join(rows))
    output = Path(args.output)
    output.mkdir(parents=True, exist_ok=True)
    (output / "stability.json").write_text(json.dumps(study, indent=1))
    text = "\n\n".join(sections) + "\n"
    (output / "stability.md").write_text(text)
    print(text)
    return study


if __name__ == "__main__":
    main(sys.argv[1:])
