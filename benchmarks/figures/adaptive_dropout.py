"""README blocks of adaptive dropout on the synthetic corpus: through
``sb-prune compress`` from the demo's dense model
(``ad_compress_whole_set.json``, ``ad_compress_subset.json``) and trained
from scratch by the recipe (``ad_from_scratch.json``).

Authors
 * sb_prune developers
"""

from .text import (
    blocks,
    count,
    holds,
    mean_sd,
    num,
    paragraph,
    percent,
    sci,
    seeds,
    signed,
    table,
)

#: our target: at most this many WER points above the dense model
WER_MARGIN = 0.5

#: setting key -> (column, how a value is written)
COLUMNS = {
    "adl_regularization_weight": ("weight", sci),
    "adl_logit_scale": ("logit scale", str),
    "adl_ramp_epochs": ("ramp (epochs)", str),
    "adl_init_retention": ("init retention", str),
    "adl_points": ("points", ", ".join),
}


def compress(results):
    """Whole training set over 3 seeds; the demo's old subset path."""
    whole, subset = (
        results["ad_compress_whole_set"],
        results["ad_compress_subset"],
    )
    dense = whole["dense"]
    by_weight = {float(s["weight"]): s for s in whole["settings"]}
    chosen = by_weight[float(whole["chosen"]["weight"])]
    other = next(s for w, s in by_weight.items() if s is not chosen)
    chosen_seeds = [
        r["wer"] for r in whole["rows"] if r["weight"] == chosen["weight"]
    ]
    seed_names = " / ".join(
        str(r["seed"]) for r in whole["rows"] if r["weight"] == chosen["weight"]
    )
    old_path = "; ".join(
        f"{percent(r['removed'])} fewer at {num(r['wer'])} "
        f"({sci(r['weight'])}, {r['epochs']} epochs)"
        for r in sorted(subset["rows"], key=lambda r: r["removed"])
    )
    return blocks(
        paragraph(
            "**Adaptive dropout through `sb-prune compress`** (from the "
            f"demo's trained dense model: {count(dense['encoder_params'])} "
            f"encoder parameters, test WER {num(dense['wer'])}, one run; "
            "`python benchmarks/compress_grid.py --method adaptive-dropout`, "
            "rows and command in "
            "`benchmarks/results/ad_compress_whole_set.json`): "
            f"{chosen['epochs']} epochs on the whole synthetic training set "
            "with `sb-prune compress`'s defaults, the regulariser weight "
            "chosen on the validation subset over seeds "
            f"{seed_names}: **weight {sci(chosen['weight'])} (the default): "
            f"{percent(chosen['removed']['mean'])} fewer encoder parameters "
            f"at test WER {mean_sd(chosen['wer'])}** "
            f"({seeds(chosen_seeds)}; validation "
            f"{mean_sd(chosen['valid_wer'])}), "
            + holds(
                chosen["wer"]["mean"] < dense["wer"],
                "below the dense model's",
            )
            + f" {num(dense['wer'])}; {sci(other['weight'])}: "
            f"{percent(other['removed']['mean'])} fewer at "
            f"{mean_sd(other['wer'])} (validation "
            f"{mean_sd(other['valid_wer'])}). The demo now compresses this "
            "way. On the demo's old path, its fine-tuning subset at the "
            "demo's lower learning rate (one seed, "
            f"`ad_compress_subset.json`): {old_path}: too few steps at too "
            "low a learning rate for the retentions to settle. Caveats: one "
            "dense model; the seeds vary the compression, not the dense "
            "training."
        ),
    )


def _grid_rows(runs, chosen):
    """One row per setting of the grids on one seed."""
    rows = []
    for name, run in runs.items():
        if not name.startswith("grid_"):
            continue
        for setting in run["settings"]:
            values = setting["setting"]
            cells = [
                write(values[key]) if key in values else "–"
                for key, (_, write) in COLUMNS.items()
            ]
            cells += [
                percent(setting["removed"]["mean"]),
                num(setting["valid_wer"]["mean"]),
                num(setting["wer"]["mean"]),
            ]
            if values == chosen:
                cells = [f"**{cell}**" for cell in cells]
            rows.append(cells)
    return rows


def from_scratch(results):
    """The grid on one seed, the chosen setting and dense over 3 seeds."""
    figures = results["ad_from_scratch"]
    runs = figures["runs"]
    (chosen,) = runs["chosen"]["settings"]
    (dense,) = runs["dense"]["settings"]
    (small,) = runs["dense_d_ffn_128"]["settings"]
    rows = _grid_rows(runs, chosen["setting"])
    seed_names = " / ".join(str(r["seed"]) for r in runs["chosen"]["rows"])
    gap = chosen["wer"]["mean"] - dense["wer"]["mean"]
    met = holds(
        chosen["removed"]["mean"] >= runs["chosen"]["min_removed"]
        and gap <= WER_MARGIN,
        "is met on the mean",
    )
    small_setting = ", ".join(f"{k}={v}" for k, v in small["setting"].items())
    return blocks(
        paragraph(
            "**Adaptive dropout from scratch** (the ASR recipe trained from "
            f"scratch like the dense one: {chosen['epochs']} epochs, whole "
            "synthetic training set; `python benchmarks/compress_grid.py "
            "--method adaptive-dropout --from-scratch --set KEY=V1,V2 ...`, "
            "all runs and commands in "
            "`benchmarks/results/ad_from_scratch.json`). Dense recipe, seeds "
            f"{seed_names}: "
            f"{count(runs['dense']['rows'][0]['encoder_params'])} encoder "
            f"parameters, test WER {mean_sd(dense['wer'])} (validation "
            f"{mean_sd(dense['valid_wer'])}). {len(rows)} settings on seed "
            f"{runs['chosen']['rows'][0]['seed']}, chosen on the validation "
            "WER among those removing at least "
            f"{percent(runs['chosen']['min_removed'], 0)} (–: the recipe's "
            "default at the run's commit; bold: chosen):"
        ),
        table(
            [column for column, _ in COLUMNS.values()]
            + ["removed", "valid WER", "test WER"],
            rows,
        ),
        paragraph(
            "The chosen setting, now the recipe's default, over seeds "
            f"{seed_names}: **{percent(chosen['removed']['mean'])} ± "
            f"{percent(chosen['removed']['sd'])} fewer encoder parameters "
            f"at test WER {mean_sd(chosen['wer'])}** "
            f"({seeds(r['wer'] for r in runs['chosen']['rows'])}; "
            f"validation {mean_sd(chosen['valid_wer'])}), dense "
            f"{signed(gap)}: our target (≥ "
            f"{percent(runs['chosen']['min_removed'], 0)} at ≤ dense + "
            f"{WER_MARGIN}) {met}, "
            + holds(gap > 0, 'not the paper\'s "better than dense"')
            + ". A dense model of about the same size trained the same way "
            f"(`--method dense --set {small_setting}`: "
            f"{percent(small['removed']['mean'])} fewer) reaches "
            f"{mean_sd(small['wer'])}, so on this small corpus "
            + holds(
                small["wer"]["mean"] <= chosen["wer"]["mean"],
                "what adaptive dropout buys is the size without the "
                "architecture search, not accuracy",
            )
            + "."
        ),
    )
