#!/usr/bin/env python3
"""Speed that follows the MACs: every method on a conformer-large encoder.

On a conformer-large-sized encoder (18 layers of 256, 4 heads, d_ffn 1024;
10 s inputs, 250 frames after stacking), side by side in one run, with the
one latency harness (``sb_prune.core.profiling``: interleaved calls,
warm-up, medians):

* adaptive-dropout pruning (keep ratios like the recipe learns; exactness
  of the pruned model against the masked one);
* criterion pruning (magnitude, FFN units and whole heads) at 25/50/75%;
* low rank (FFN and attention projections) at 25/50/75% compression,
  uniform ranks and speed-aware ranks (a cost table measured here, at
  batch 1; ``sb_prune.methods.low_rank.speed``);
* I3D gated depth, gates decided alike for every utterance (``fixed``) and
  per utterance (``mixed``), plus its overhead with every gate open;
* ONNX Runtime (CPU) for the dense model and the pruned ones;
* the adaptive-dropout training step against a dense step (the recipe's
  model size).

For each model: ``ideal_ratio_b<B>`` (dense MACs / its MACs on the batch;
``ideal_ratio``: batch 1's), ``latency_ratio_b<B>`` (dense time / its
time), ``onnx_latency_ratio_b<B>`` under ONNX Runtime, and
``of_ideal_b<B>`` = latency ratio / ideal ratio. For I3D,
``saving_of_ideal_b<B>`` is the time saved over the MACs saved.

Usage:
    python benchmarks/speed.py --quick
    python benchmarks/speed.py --json benchmarks/results/speed_cpu.json
    python benchmarks/speed.py --device cuda --batches 1 8 32 \
        --dtypes fp32 bf16 --json benchmarks/results/speed_gpu.json

Authors
 * sb_prune developers
"""

import argparse
import copy
import json
import sys
import tempfile
from pathlib import Path

import torch
from common import (
    FRAMES_10S,
    LARGE,
    QUICK_RATIOS,
    apply_keep_ratios,
    conformer,
    encode,
    provenance,
)

from sb_prune import convert
from sb_prune.core.profiling import (
    count_macs,
    measure_latency,
    speedups,
    timing_conditions,
)
from sb_prune.core.surgery import apply_plan
from sb_prune.methods.adaptive_dropout.strip import strip_adaptive_dropout
from sb_prune.methods.criteria.criteria import Magnitude, find_members
from sb_prune.methods.low_rank.layer import LowRankLinear
from sb_prune.methods.low_rank.speed import choose_ranks, measure_cost_table

AD_POINTS = ["ffn", "query", "value", "conv"]
LOW_RANK_POINTS = ["ffn", "attention"]
SIZES = (0.25, 0.5, 0.75)
ONNX_MODELS = ("dense", "adaptive_dropout", "criterion_0.5", "low_rank_0.5")
DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16}


def adaptive_dropout_model(dense, ratios):
    """Prune a copy with adaptive-dropout keep ratios; exactness figure."""
    model = convert(
        copy.deepcopy(dense), adaptive_dropout={"points": AD_POINTS}
    )
    apply_keep_ratios(model, ratios)
    x, lens = torch.randn(2, FRAMES_10S, LARGE["d_model"]), torch.ones(2)
    with torch.no_grad():
        masked = model.encode(x, lens)
        strip_adaptive_dropout(model)
        difference = float((model.encode(x, lens) - masked).abs().max())
    return model, difference


def criterion_model(dense, sparsity):
    """Magnitude pruning of FFN units and whole heads, one shot."""
    model = convert(copy.deepcopy(dense), prunable_attention={})
    plan = {}
    for members in find_members(model, ["ffn", "heads"]):
        kept = max(1, round(members.count * (1 - sparsity)))
        order = Magnitude().score(members).argsort(descending=True)
        plan[members.path] = members.plan(order[:kept].sort().values)
    apply_plan(model, plan)
    return model


def low_rank_shapes(model):
    """``(in, out)`` of the matrices low rank would factorise."""
    probe = convert(copy.deepcopy(model), low_rank={"points": LOW_RANK_POINTS})
    return [
        (m.in_features, m.out_features)
        for m in probe.modules()
        if isinstance(m, LowRankLinear)
    ]


def low_rank_model(dense, compression, table=None):
    """Low rank at ``compression``: uniform ranks, or chosen from a table."""
    if table is None:
        return convert(
            copy.deepcopy(dense),
            low_rank={"points": LOW_RANK_POINTS, "compression": compression},
        )
    model = convert(copy.deepcopy(dense), low_rank={"points": LOW_RANK_POINTS})
    layers = [m for m in model.modules() if isinstance(m, LowRankLinear)]
    shapes = [(m.in_features, m.out_features) for m in layers]
    for layer, rank in zip(layers, choose_ranks(shapes, compression, table)):
        if rank is None:
            layer.densify_()
        else:
            layer.truncate_(rank)
    return model


def gated_model(dense, mixed):
    """I3D (local predictors, attention and FFN gates) with set decisions.

    ``mixed=False``: every utterance skips the attention of odd layers and
    the FFNs of layers 0, 4, 8...; ``mixed=True``: random predictors, so
    decisions differ between utterances.
    """
    model = convert(
        copy.deepcopy(dense),
        dynamic_depth={"predictor": "local", "gates": ["attention", "ffn"]},
    ).eval()
    generator = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for j, layer in enumerate(model.encoder.layers):
            output = layer.gate_predictor.output
            if mixed:
                output.weight.normal_(0, 3.0, generator=generator)
                output.bias.zero_()
                continue
            output.weight.zero_()
            closed = [j % 2 == 1, j % 4 == 0]  # attention, ffn
            for gate, skip in enumerate(closed):
                output.bias[2 * gate : 2 * gate + 2] = torch.tensor(
                    [5.0, -5.0] if skip else [-5.0, 5.0]
                )
    return model


def open_gated_model(dense):
    """I3D with every gate open: what predictors and gating cost."""
    model = gated_model(dense, mixed=False)
    with torch.no_grad():
        for layer in model.encoder.layers:
            layer.gate_predictor.output.bias.copy_(
                torch.tensor([-5.0, 5.0]).repeat(2)
            )
    return model


def build_models(sizes, quick):
    """Every model of the benchmark, by name, with notes."""
    dense = conformer(**LARGE, seed=0).eval()
    ad, difference = adaptive_dropout_model(dense, QUICK_RATIOS)
    models = {"dense": dense, "adaptive_dropout": ad}
    table = measure_cost_table(
        low_rank_shapes(dense), tokens=FRAMES_10S, repeats=3 if quick else 10
    )
    for size in sizes:
        models[f"criterion_{size}"] = criterion_model(dense, size)
        models[f"low_rank_{size}_uniform"] = low_rank_model(dense, size)
        models[f"low_rank_{size}"] = low_rank_model(dense, size, table)
    models["i3d_fixed"] = gated_model(dense, mixed=False)
    models["i3d_mixed"] = gated_model(dense, mixed=True)
    models["i3d_all_open"] = open_gated_model(dense)
    notes = {
        "max_abs_diff_pruned_vs_masked": difference,
        "cost_table": table,
    }
    return models, notes


def make_batch_maker(device):
    """``batch -> (features, lengths)``, the same tensors for a batch size."""

    def make(batch):
        generator = torch.Generator().manual_seed(batch)
        x = torch.randn(
            batch, FRAMES_10S, LARGE["d_model"], generator=generator
        )
        return x.to(device), torch.ones(batch, device=device)

    return make


def in_precision(function, device, dtype):
    """``function`` under autocast to ``dtype`` (bf16: mixed precision, as
    SpeechBrain runs it; fp32: as it is)."""
    if dtype == torch.float32:
        return function
    device_type = torch.device(device).type

    def run(*inputs):
        with torch.autocast(device_type, dtype=dtype):
            return function(*inputs)

    return run


def mac_figures(models, batches):
    """MAC ratios against dense per batch size (CPU, fp32).

    ``ideal_ratio`` is the first batch size's (the positional projections
    are computed once per batch, so the ratio moves a little with it).
    """
    make = make_batch_maker("cpu")
    dense = encode(models["dense"])
    figures = {name: {} for name in models}
    for batch in batches:
        x, lens = make(batch)
        dense_macs = count_macs(dense, x, lens)
        for name, model in models.items():
            ideal = dense_macs / count_macs(encode(model), x, lens)
            figures[name][f"ideal_ratio_b{batch}"] = ideal
            figures[name].setdefault("ideal_ratio", ideal)
    for name, model in models.items():
        figures[name]["params"] = sum(
            p.numel() for p in model.encoder.parameters()
        )
    return figures


def add_latency(figures, models, batches, repeats, device, dtype):
    """Latency ratios against dense, and how far they are from the MACs."""
    make = make_batch_maker(device)
    functions = {
        name: in_precision(encode(model), device, dtype)
        for name, model in models.items()
    }
    measured = speedups(functions, make, batches, repeats=repeats, warmup=2)
    for name, row in figures.items():
        row.update(measured[name])
        for batch in batches:
            ratio = row[f"latency_ratio_b{batch}"]
            ideal = row[f"ideal_ratio_b{batch}"]
            if not name.startswith("i3d"):
                row[f"of_ideal_b{batch}"] = ratio / ideal
            elif ideal > 1:  # gated depth: time saved over MACs saved
                row[f"saving_of_ideal_b{batch}"] = (1 - 1 / ratio) / (
                    1 - 1 / ideal
                )


def onnx_figures(models, batches, repeats):
    """ONNX Runtime latency of dense and pruned models (CPU)."""
    from sb_prune.deploy.onnx import export_onnx, ort_session
    from sb_prune.deploy.torchscript import TransformerEncode

    figures = {name: {} for name in ONNX_MODELS}
    with tempfile.TemporaryDirectory() as folder:
        make = make_batch_maker("cpu")
        for batch in batches:
            inputs = make(batch)
            check = (
                torch.randn(batch, FRAMES_10S + 37, LARGE["d_model"]),
                torch.ones(batch),
            )
            sessions = {}
            for name in ONNX_MODELS:
                path = f"{folder}/{name}_b{batch}.onnx"
                difference = export_onnx(
                    TransformerEncode(models[name]).eval(), path, inputs, check
                )
                figures[name][f"onnx_max_abs_diff_b{batch}"] = difference
                sessions[name] = ort_session(path)
            times = measure_latency(
                sessions, lambda x=inputs: x, repeats=repeats, warmup=2
            )
            for name in ONNX_MODELS:
                figures[name][f"onnx_latency_ratio_b{batch}"] = (
                    times["dense"] / times[name]
                )
                figures[name][f"onnx_b{batch}_s"] = times[name]
    return figures


def train_step_ratio(repeats):
    """Median adaptive-dropout training step over a dense one.

    The recipe's model size (d_model 96, 4 layers, d_ffn 384), batch 16 of
    60 frames, AdamW; steps interleaved by the latency harness.
    """
    sizes = dict(d_model=96, nhead=4, num_encoder_layers=4, d_ffn=384)
    dense = conformer(**sizes, seed=0)
    adaptive = convert(
        copy.deepcopy(dense), adaptive_dropout={"points": AD_POINTS}
    )
    steps = {}
    for name, model in (("dense", dense), ("adaptive", adaptive)):
        optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4)

        def step(x, lens, model=model, optimizer=optimizer):
            model.encode(x, lens).pow(2).mean().backward()
            optimizer.step()
            optimizer.zero_grad()

        steps[name] = step
    times = measure_latency(
        steps,
        lambda: (torch.randn(16, 60, 96), torch.ones(16)),
        repeats=repeats,
        warmup=3,
        inference=False,
    )
    return times["adaptive"] / times["dense"]


def print_table(figures, batches):
    """One row per model: ideal ratio, measured ratios, ONNX ratios."""
    columns = ["ideal_ratio"]
    for batch in batches:
        columns += [f"latency_ratio_b{batch}", f"of_ideal_b{batch}"]
    for batch in batches:
        columns.append(f"onnx_latency_ratio_b{batch}")
    short = [
        c.replace("latency_ratio", "x").replace("_ratio", "") for c in columns
    ]
    print(f"{'model':<24}" + "".join(f"{c:>10}" for c in short))
    for name, row in figures.items():
        cells = []
        for column in columns:
            value = row.get(column)
            if value is None and column.startswith("of_ideal"):
                value = row.get(f"saving_{column}")  # gated depth
            cells.append(f"{value:>10.3f}" if value is not None else " " * 10)
        print(f"{name:<24}" + "".join(cells))


def main(argv=None):
    """Run the benchmark, print the table, optionally save the JSON."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument(
        "--quick", action="store_true", help="50%% only, few repeats"
    )
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--batches", type=int, nargs="+", default=[1, 8])
    parser.add_argument("--dtypes", nargs="+", default=["fp32"], choices=DTYPES)
    parser.add_argument("--repeats", type=int, default=None)
    parser.add_argument("--no-onnx", action="store_true")
    parser.add_argument("--json", type=Path)
    args = parser.parse_args(argv)
    repeats = args.repeats or (3 if args.quick else 15)
    sizes = (0.5,) if args.quick else SIZES
    models, notes = build_models(sizes, args.quick)
    result = {
        **provenance(),
        "conditions": timing_conditions(args.device),
        "encoder": {**LARGE, "frames": FRAMES_10S},
        "repeats": repeats,
        **notes,
        "runs": {},
    }
    macs = mac_figures(models, args.batches)
    onnx = {}
    if args.device == "cpu" and not args.no_onnx:
        onnx = onnx_figures(models, args.batches, repeats)
    if args.device == "cpu":
        result["train_step_ratio"] = train_step_ratio(repeats * 2)
    for model in models.values():
        model.to(args.device)
    for dtype_name in args.dtypes:
        dtype = DTYPES[dtype_name]
        figures = copy.deepcopy(macs)
        add_latency(figures, models, args.batches, repeats, args.device, dtype)
        if dtype_name == "fp32":
            for name, row in onnx.items():
                figures[name].update(row)
        result["runs"][dtype_name] = figures
        print(f"\n{args.device} {dtype_name}, {timing_conditions(args.device)}")
        print_table(figures, args.batches)
    if "train_step_ratio" in result:
        print(
            f"\nadaptive-dropout training step / dense: "
            f"{result['train_step_ratio']:.3f}"
        )
    print(
        f"max |pruned - masked|: {notes['max_abs_diff_pruned_vs_masked']:.2e}"
    )
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(result, indent=1))
    return result


if __name__ == "__main__":
    sys.exit(main() and 0)
