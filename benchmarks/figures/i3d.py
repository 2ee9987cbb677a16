"""README blocks of I3D dynamic depth against static layer pruning and
shallow dense models (``i3d_demo_path.json``, ``i3d_whole_set.json``).

Authors
 * sb_prune developers
"""

from .text import blocks, holds, mean_sd, num, paragraph, percent, table

#: encoder layers of the demo's dense model (the ASR recipe's default)
DEMO_LAYERS = 4


def _only(settings):
    (setting,) = settings
    return setting


def _gates(setting):
    return (
        f"{percent(setting['input_dependent']['mean'])} ± "
        f"{percent(setting['input_dependent']['sd'])}"
    )


def demo_path(results):
    """I3D and static layer pruning on the demo's path."""
    figures = results["i3d_demo_path"]
    models = figures["models"]
    local, glob, static = (
        _only(models[name]["settings"])
        for name in ("i3d_local", "i3d_global", "static")
    )
    seeds = " / ".join(str(r["seed"]) for r in models["i3d_local"]["rows"])
    kept = DEMO_LAYERS - static["setting"]["static_remove_layers"]
    return blocks(
        paragraph(
            "**I3D on the demo's path** "
            "(`benchmarks/results/i3d_demo_path.json`, commands there; "
            f"seeds {seeds}, mean ± sd): from the demo's trained "
            f"{DEMO_LAYERS}-layer dense model, {local['epochs']} epochs of "
            "`sb-prune compress` on the demo's fine-tuning subset. Local "
            "gates: "
            f"{mean_sd(local['avg_layers'])} executed layers at test WER "
            f"{mean_sd(local['wer'])}, with {_gates(local)} of the gates "
            "input-dependent (open for some test utterances, closed for "
            f"others); global gates: {mean_sd(glob['avg_layers'])} layers "
            f"at {mean_sd(glob['wer'])}, {_gates(glob)} input-dependent. "
            "Static layer pruning on the same path (one layer cut by "
            f"Taylor after epoch 1): {kept} layers at "
            f"{mean_sd(static['wer'])}."
        ),
    )


def _interpolate(layers, two, three):
    """WER at ``layers`` executed layers, between 2- and 3-layer models."""
    return two + (three - two) * (layers - 2)


def whole_set(results):
    """I3D, static pruning and shallow dense models, 4 epochs each."""
    runs = results["i3d_whole_set"]["runs"]
    shallow = results["i3d_demo_path"]["models"]["shallow"]
    local, glob, static, static_2 = (
        _only(runs[name]["settings"])
        for name in ("i3d_local", "i3d_global", "static", "static_2_layers")
    )
    two_8, two_12, three_12 = (
        _only(runs[name]["settings"])
        for name in (
            "dense_2_layers_8_epochs",
            "dense_2_layers_12_epochs",
            "dense_3_layers_12_epochs",
        )
    )

    def cut(setting):
        return DEMO_LAYERS - setting["setting"]["static_remove_layers"]

    rows = [
        [
            f"I3D {kind}",
            mean_sd(s["avg_layers"]),
            mean_sd(s["wer"]),
            mean_sd(s["valid_wer"]),
            _gates(s),
        ]
        for kind, s in (("local", local), ("global", glob))
    ]
    rows += [
        [
            f"static: {s['setting']['static_remove_layers']} layer"
            f"{'s' if s['setting']['static_remove_layers'] > 1 else ''} cut",
            cut(s),
            mean_sd(s["wer"]),
            mean_sd(s["valid_wer"]),
            None,
        ]
        for s in (static, static_2)
    ]
    rows += [
        [
            f"dense from scratch, {two['epochs']} epochs",
            "2 / 3",
            f"{mean_sd(two['wer'])} / {mean_sd(three['wer'])}",
            f"{num(two['valid_wer']['mean'])} / "
            f"{num(three['valid_wer']['mean'])}",
            None,
        ]
        for two, three in ((two_8, shallow), (two_12, three_12))
    ]
    layers = local["avg_layers"]["mean"]
    wer = local["wer"]["mean"]
    short = _interpolate(layers, two_8["wer"]["mean"], shallow["wer"]["mean"])
    long = _interpolate(layers, two_12["wer"]["mean"], three_12["wer"]["mean"])
    static_claim = holds(
        wer < static["wer"]["mean"]
        and local["valid_wer"]["mean"] > static["valid_wer"]["mean"]
        and wer < static_2["wer"]["mean"],
        f"beats static layer pruning at {cut(static)} layers (on the test "
        f"set; not on validation) and by far at {cut(static_2)}",
    )
    return blocks(
        paragraph(
            f"With {local['epochs']} epochs on the whole training set "
            "instead (the recipe's fine-tuning settings; "
            "`benchmarks/results/i3d_whole_set.json`, commands there), and "
            "dense models of 2 and 3 layers trained from scratch by the "
            "recipe (validation: the demo's dev subset for the "
            "compressions, the whole dev set for the models from scratch):"
        ),
        table(
            [
                "model",
                "executed layers",
                "test WER",
                "validation WER",
                "input-dependent gates",
            ],
            rows,
        ),
        paragraph(
            f"At {num(layers)} executed layers, local I3D {static_claim}, "
            "and "
            + holds(
                wer < short,
                "beats the dense models trained for the dense recipe's "
                f"{two_8['epochs']} epochs",
            )
            + f" ({num(short)} interpolated between 2 and 3 layers), with a "
            "few input-dependent gates. It "
            + holds(
                wer > long,
                f"loses to dense models of that depth trained for "
                f"{two_12['epochs']} epochs",
            )
            + f" ({num(long)} interpolated), "
            + holds(
                two_8["epochs"] + local["epochs"] == two_12["epochs"],
                "the epochs I3D had in all",
            )
            + " "
            f"({two_8['epochs']} dense, then {local['epochs']} gated; the "
            "shallow models do less work per epoch): the seed paper's claim "
            "that I3D beats a vanilla model of similar depth holds here only "
            "against the shorter training."
        ),
    )
