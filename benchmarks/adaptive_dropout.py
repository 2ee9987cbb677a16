#!/usr/bin/env python3
"""Adaptive-dropout pruning: size, accuracy, speed, against two peers.

Side by side, in one run:

* accuracy (full mode only): the dense and the adaptive-dropout recipes on
  the synthetic corpus (same seed, same epochs), and one-shot magnitude
  structured pruning of the dense model to the same sizes, fine-tuned;
* exactness: max |pruned - masked| on a conformer-large-sized encoder;
* CPU latency at batch 1 and 8 on 10-second inputs for that encoder
  (d_model 256, 18 layers, d_ffn 1024, 4 heads), pruned with the per-layer
  keep ratios learnt on the small model, with the ideal ratio (dense MACs /
  pruned MACs), and torch.nn.utils.prune (unstructured, same sparsity);
* training step time of adaptive dropout vs dense on the recipe's model.

Usage:
    python benchmarks/adaptive_dropout.py --quick
    python benchmarks/adaptive_dropout.py --json benchmarks/out/ad.json

Authors
 * sb_prune developers
"""

import argparse
import copy
import json
import sys
from pathlib import Path

import torch
from common import (
    FRAMES_10S,
    LARGE,
    QUICK_RATIOS,
    conformer,
    encode,
    run_asr_recipe,
)
from speed import adaptive_dropout_model, train_step_ratio
from torch.nn.utils import prune as torch_prune

from sb_prune import compress, convert
from sb_prune.core.profiling import count_macs, speedups
from sb_prune.core.surgery import apply_plan
from sb_prune.reporting.summary import count_parameters

REPO = Path(__file__).resolve().parents[1]


def unstructured_peer(dense, sparsity):
    """torch.nn.utils.prune: L1 unstructured masks on the encoder weights."""
    peer = copy.deepcopy(dense)
    targets = [
        (m, "weight")
        for m in peer.encoder.modules()
        if isinstance(m, (torch.nn.Linear, torch.nn.Conv1d))
    ]
    torch_prune.global_unstructured(
        targets, pruning_method=torch_prune.L1Unstructured, amount=sparsity
    )
    nonzero = sum(int((m.weight != 0).sum()) for m, _ in targets)
    stored = sum(p.numel() for p in peer.encoder.parameters()) + sum(
        b.numel() for b in peer.encoder.buffers()
    )
    return peer, stored, nonzero


def large_model_figures(ratios, repeats):
    """Exactness, parameters, MACs and latency on the large encoder."""
    dense = conformer(**LARGE, seed=0).eval()
    model, difference = adaptive_dropout_model(dense, ratios)
    x, lens = torch.randn(1, FRAMES_10S, LARGE["d_model"]), torch.ones(1)
    params_dense = count_parameters(dense.encoder)
    params_pruned = count_parameters(model.encoder)
    sparsity = 1 - params_pruned / params_dense
    peer, peer_stored, peer_nonzero = unstructured_peer(dense, sparsity)
    figures = {
        "max_abs_diff_pruned_vs_masked": difference,
        "large_encoder_params_dense": params_dense,
        "large_encoder_params_pruned": params_pruned,
        "torch_prune_params_stored": peer_stored,
        "torch_prune_nonzero": peer_nonzero,
        "ideal_ratio": count_macs(encode(dense), x, lens)
        / count_macs(encode(model), x, lens),
    }
    measured = speedups(
        {
            "dense": encode(dense),
            "pruned": encode(model),
            "torch_prune": encode(peer),
        },
        lambda b: (torch.randn(b, FRAMES_10S, LARGE["d_model"]), torch.ones(b)),
        repeats=repeats,
    )
    for batch in (1, 8):
        key = f"latency_ratio_b{batch}"
        figures[key] = measured["pruned"][key]
        figures[f"torch_prune_{key}"] = measured["torch_prune"][key]
        figures[f"latency_dense_b{batch}_s"] = measured["dense"][
            f"latency_b{batch}_s"
        ]
    return figures


def run_recipe(hparams, output, epochs):
    """Train one ASR recipe run (or reuse a finished one)."""
    results = output / "results.json"
    if results.exists():
        return json.loads(results.read_text())
    return run_asr_recipe(hparams, output, number_of_epochs=epochs)


def encoder_params_at(dense_run, sparsity):
    """Encoder parameters after removing a fraction of FFN units and heads.

    The same surgery as ``CriterionPruning`` (groups ffn and heads, keep
    ``round(n (1 - sparsity))`` per module), on the dense run's model.
    """
    from sb_prune.deploy.pretrained import load_model
    from sb_prune.methods.criteria.criteria import find_members

    model = load_model(dense_run)["Transformer"]
    convert(model, prunable_attention={})
    plan = {}
    for members in find_members(model, ["ffn", "heads"]):
        kept = max(1, int(members.count * (1 - sparsity) + 0.5))
        plan[members.path] = members.plan(torch.arange(kept))
    apply_plan(model, plan)
    return count_parameters(model.encoder)


def matching_sparsity(dense_run, target):
    """FFN-unit and head sparsity whose encoder size is closest to target."""
    low, high = 0.0, 0.97
    for _ in range(12):
        middle = (low + high) / 2
        if encoder_params_at(dense_run, middle) > target:
            low = middle
        else:
            high = middle
    return round(high, 4)


def magnitude_peer(output, dense_run, target, epochs):
    """One-shot magnitude pruning of the trained dense model, fine-tuned.

    Size-matched to ``target`` encoder parameters; pruned after the first
    of ``epochs`` fine-tuning epochs on the full training set (through
    ``sb-prune compress``).
    """
    from sb_prune.deploy.pretrained import export_pretrained

    run = output / "magnitude_oneshot" / "run"
    if not (run / "results.json").exists():
        export_pretrained(dense_run, output / "dense_exported")
        sparsity = matching_sparsity(dense_run, target)
        data = json.loads((dense_run / "librispeech_prepare.json").read_text())
        compress(
            output / "dense_exported",
            "magnitude",
            data["data_folder"],
            output / "magnitude_oneshot",
            epochs,
            overrides={
                "sparsity": sparsity,
                "prune_steps": 1,
                "lr": 0.001,
                "warmup_steps": 10,
            },
        )
    return json.loads((run / "results.json").read_text())


def accuracy_figures(output, epochs, finetune_epochs):
    """Dense and adaptive-dropout recipe runs, same seed and epochs, and
    the size-matched one-shot magnitude peer."""
    dense = run_recipe("conformer_ctc.yaml", output / "dense", epochs)
    pruned = run_recipe(
        "conformer_ctc_adaptive_dropout.yaml", output / "adaptive", epochs
    )
    peer = magnitude_peer(
        output, output / "dense", pruned["encoder_params"], finetune_epochs
    )
    return {
        "encoder_params_dense": dense["encoder_params"],
        "encoder_params_pruned": pruned["encoder_params"],
        "encoder_params_magnitude": peer["encoder_params"],
        "params_dense": dense["params"],
        "params_pruned": pruned["params"],
        "wer_dense": dense["test-clean"]["WER"],
        "wer_pruned": pruned["test-clean"]["WER"],
        "wer_magnitude_oneshot": peer["test-clean"]["WER"],
        "cer_dense": dense["test-clean"]["CER"],
        "cer_pruned": pruned["test-clean"]["CER"],
        "magnitude_finetune_epochs": finetune_epochs,
    }, pruned["keep_ratios"]


def print_table(figures):
    """Print the figures as a two-column table."""
    width = max(len(k) for k in figures)
    print(f"{'figure':<{width}}  value")
    for key, value in figures.items():
        text = f"{value:.4g}" if isinstance(value, float) else str(value)
        print(f"{key:<{width}}  {text}")


def main(argv=None):
    """Run the benchmark and print (and optionally save) its figures."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--json", type=Path)
    parser.add_argument(
        "--output",
        type=Path,
        default=REPO / "benchmarks" / "out" / "adaptive_dropout",
        help="recipe runs of the full mode (reused when finished)",
    )
    parser.add_argument("--epochs", type=int, default=8)
    parser.add_argument(
        "--finetune-epochs",
        type=int,
        default=3,
        help="fine-tuning epochs of the one-shot magnitude peer",
    )
    args = parser.parse_args(argv)

    figures = {"mode": "quick" if args.quick else "full"}
    if args.quick:
        ratios = QUICK_RATIOS
    else:
        accuracy, ratios = accuracy_figures(
            args.output, args.epochs, args.finetune_epochs
        )
        figures.update(accuracy)
    repeats = 3 if args.quick else 15
    figures.update(large_model_figures(ratios, repeats))
    figures["train_step_ratio"] = train_step_ratio(2 * repeats)
    figures["keep_ratios"] = ratios
    print_table({k: v for k, v in figures.items() if k != "keep_ratios"})
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(figures, indent=2))
    return figures


if __name__ == "__main__":
    sys.exit(main() and 0)
