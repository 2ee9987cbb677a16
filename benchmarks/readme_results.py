#!/usr/bin/env python3
"""Write the README's results section from the benchmarks' JSON files.

Every figure of the READMEs' "Results" sections comes from here: this
script reads what the benchmark and study scripts wrote under
``benchmarks/out`` (``--json`` files, markdown tables) and replaces the
text between the ``results:begin`` and ``results:end`` markers of README.md
and of the recipe READMEs. Missing outputs are listed as not run.

Usage:
    python benchmarks/readme_results.py            # rewrite the READMEs
    python benchmarks/readme_results.py --check    # print, write nothing

Authors
 * sb_prune developers
"""

import argparse
import json
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
OUT = REPO / "benchmarks" / "out"
BEGIN, END = "<!-- results:begin -->", "<!-- results:end -->"


def _load(name):
    path = OUT / f"{name}.json"
    return json.loads(path.read_text()) if path.exists() else None


def _fmt(value, digits=2):
    if value is None:
        return "n/a"
    if isinstance(value, float):
        return f"{value:.{digits}f}"
    if isinstance(value, int):
        return f"{value:,}"
    return str(value)


def _table(header, rows):
    lines = ["| " + " | ".join(header) + " |"]
    lines.append("|" + "---|" * len(header))
    lines += ["| " + " | ".join(_fmt(v) for v in row) + " |" for row in rows]
    return lines


def adaptive_dropout(figures):
    """Dense vs adaptive dropout vs one-shot magnitude."""
    lines = [
        f"**Adaptive dropout** (`benchmarks/adaptive_dropout.py`, "
        f"{figures['mode']} mode)",
        "",
    ]
    if "wer_dense" in figures:
        lines += _table(
            ["model", "encoder params", "test WER %"],
            [
                [
                    "dense",
                    figures["encoder_params_dense"],
                    figures["wer_dense"],
                ],
                [
                    "adaptive dropout",
                    figures["encoder_params_pruned"],
                    figures["wer_pruned"],
                ],
                [
                    "one-shot magnitude (size-matched)",
                    figures.get("encoder_params_magnitude"),
                    figures["wer_magnitude_oneshot"],
                ],
            ],
        )
        lines.append("")
    lines += [
        "Conformer-large-sized encoder (18 x 256, 10 s input, CPU) pruned "
        "with the learnt keep ratios: "
        f"speed-up {_fmt(figures['latency_ratio_b1'])}x at batch 1, "
        f"{_fmt(figures['latency_ratio_b8'])}x at batch 8 (ideal "
        f"{_fmt(figures['ideal_ratio'])}x from MACs); torch.nn.utils.prune "
        f"{_fmt(figures['torch_prune_latency_ratio_b1'])}x; training step "
        f"{_fmt(figures['train_step_ratio'])}x dense; pruned vs masked "
        f"max |diff| {figures['max_abs_diff_pruned_vs_masked']:.1e}.",
        "",
    ]
    return lines


def criteria_lowrank(figures):
    """Criterion x schedule x sparsity, and low rank, one row per size."""
    cells, latency, extra = {}, {}, []
    for r in figures["rows"]:
        note = r.get("note", "")
        if r["criterion"] == "none" or "unstructured" in note:
            at = f" at {r['target']:.0%}" if r["target"] else ""
            extra.append(
                f"{r['model']} {note or 'dense'}{at}: {r['metric']} "
                f"{_fmt(r['ppl_or_wer'])} (latency ratio "
                f"{_fmt(r['latency_ratio'])})"
            )
            continue
        key = (r["model"], r["target"])
        cells.setdefault(key, {})[(r["criterion"], r["schedule"])] = r
        kind = "low_rank" if r["criterion"] == "low_rank" else "structured"
        latency.setdefault((key, kind), []).append(r["latency_ratio"])
    criteria = ["magnitude", "taylor", "activation", "low_rank"]
    rows = []
    for (model, target), found in cells.items():
        row = [model, f"{target:.0%}"]
        for criterion in criteria:
            pair = [
                found.get((criterion, schedule), {}).get("ppl_or_wer")
                for schedule in ("one_shot", "incremental")
            ]
            row.append(" / ".join(_fmt(v) for v in pair))
        for kind in ("structured", "low_rank"):
            values = latency.get(((model, target), kind), [])
            row.append(_fmt(sum(values) / len(values)) if values else "n/a")
        rows.append(row)
    return [
        f"**Criteria, schedules, low rank** (`benchmarks/criteria_lowrank.py`,"
        f" {figures['mode']} mode): LM perplexity or ASR test WER %, "
        "one-shot / incremental (the LM recipe's low rank: incremental "
        "only); latency ratio = pruned / dense time, mean over the rows",
        "",
        *_table(
            [
                "model",
                "sparsity",
                "magnitude",
                "taylor",
                "activation",
                "low rank",
                "latency structured",
                "latency low rank",
            ],
            rows,
        ),
        "",
        "; ".join(extra) + ".",
        "",
    ]


def i3d(figures):
    """I3D vs static and shallow models."""
    rows = [
        [
            r["model"],
            r["avg_layers"],
            r["wer"],
            r["latency_ratio_b1"],
            r["ideal_ratio_b1"],
        ]
        for r in figures["rows"]
    ]
    return [
        f"**I3D dynamic depth** (`benchmarks/i3d.py`, {figures['mode']} mode;"
        " ratios = model / dense time or MACs)",
        "",
        *_table(
            ["model", "avg layers", "test WER %", "latency b1", "ideal b1"],
            rows,
        ),
        "",
    ]


def convexity(figures):
    """Our graph convexity vs nnconvexity."""
    return [
        f"**Graph convexity** (`benchmarks/convexity.py`): "
        f"N = {figures['n_points']:,}, {figures['dims']} dims: ours "
        f"{_fmt(figures['score_ours'])} vs nnconvexity "
        f"{_fmt(figures['score_reference'])}, "
        f"{_fmt(figures['speedup_vs_reference'], 1)}x faster.",
        "",
    ]


def from_json(name, render):
    """A section rendered from ``benchmarks/out/<name>.json``."""

    def section():
        figures = _load(name)
        if figures is None:
            return [f"`benchmarks/{name}.py`: not run yet.", ""]
        return render(figures)

    return section


def from_markdown(relative, command):
    """A table that a recipe script wrote as markdown under OUT."""

    def section():
        path = OUT / relative
        if not path.exists():
            return [f"`{command}`: not run yet.", ""]
        return [f"`{command}`", "", path.read_text().strip(), ""]

    return section


#: README file -> its sections, in order.
TARGETS = {
    "README.md": [
        from_json("adaptive_dropout", adaptive_dropout),
        from_json("criteria_lowrank", criteria_lowrank),
        from_json("i3d", i3d),
        from_json("convexity", convexity),
    ],
    "recipes/LibriSpeech/ambient/README.md": [
        from_markdown(
            "stability/stability.md",
            "python stability.py hparams/conformer_ctc_importance.yaml "
            "--output ../../../benchmarks/out/stability",
        )
    ],
    "recipes/LibriSpeech/classification/README.md": [
        from_markdown(
            "classification/comparison.md",
            "python compare.py --pretrained_folder ../../../results/demo/"
            "runs/dense --output ../../../benchmarks/out/classification",
        )
    ],
}


def results_section(sections):
    """The markdown between the markers of one README."""
    lines = [
        BEGIN,
        "",
        "_Written by `python benchmarks/readme_results.py` from "
        "`benchmarks/out/`; synthetic corpus, 2 CPU cores._",
        "",
    ]
    for section in sections:
        lines += section()
    return "\n".join(lines + [END])


def main(argv=None):
    """Rewrite (or, with --check, print) the READMEs' results sections."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--check", action="store_true")
    args = parser.parse_args(argv)
    for name, sections in TARGETS.items():
        section = results_section(sections)
        print(f"==> {name}\n{section}\n")
        if args.check:
            continue
        readme = REPO / name
        text = readme.read_text()
        if BEGIN not in text or END not in text:
            raise SystemExit(f"{name} has no {BEGIN} ... {END} block")
        head, rest = text.split(BEGIN, 1)
        readme.write_text(head + section + rest.split(END, 1)[1])
    return 0


if __name__ == "__main__":
    sys.exit(main())
