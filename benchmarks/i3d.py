#!/usr/bin/env python3
"""I3D dynamic depth: WER against executed depth, and what skipping saves.

Models (the LibriSpeech ASR recipe's CTC Conformer, ``--layers`` deep):

* ``dense``: every layer (the reference of the ratios);
* ``i3d_local`` / ``i3d_global``: I3D gates on the attention, conv and FFN
  branches of every layer (``conformer_ctc_i3d_{local,global}.yaml``),
  regularised towards ``--target`` of the modules;
* ``static``: iterative layer pruning of the dense model down to ``k =
  round(target * layers)`` layers, one layer per epoch by the Taylor
  criterion, with fine-tuning (``conformer_ctc_static_layer_pruning.yaml``);
* ``shallow``: a dense ``k``-layer model trained from scratch.

``avg_layers``: executed layers averaged over the test utterances; an I3D
gate counts as a third of a layer (attention, conv, FFN), a layer of the
static and shallow models as one. ``wer``: test WER of the recipe run
(greedy CTC). Latency: CPU forward time of front end + encoder + CTC
layer on test utterances (features precomputed), at batch 1 (one utterance
at a time) and batch 8 (batches of similar lengths, as the recipe's test
loader makes them), all models timed in alternation in this process
(median of ``--repeats``); ``latency_ratio`` = model / dense.
``ideal_ratio`` = executed multiply-accumulates / dense (counted on the
same inputs, so skipped branches count zero).

Targets (issue 5): at 50-70% of the modules executed, I3D WER <= static
WER at the same average depth; at batch 1 the latency saving is at least
0.8 x the ideal saving, ``1 - latency_ratio >= 0.8 (1 - ideal_ratio)``.

``--quick`` (under a minute) trains nothing: it builds the recipe's model
from its hparams (untrained), draws random gate predictors calibrated so
that about ``--target`` of the modules run (input-dependent decisions) and
measures latency and MACs on random 1.5-4 s inputs; WER is not measured.
The full mode trains the five models through the recipe (``nice -n 10``,
each in its own process), reusing runs already done with the same
settings, then measures them.

Usage::

    python benchmarks/i3d.py --quick
    python benchmarks/i3d.py --json benchmarks/out/i3d.json
"""

import argparse
import json
import os
import platform
import shutil
import subprocess
import sys
import time
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]
RECIPE = REPO / "recipes" / "LibriSpeech" / "ASR"
ALL_GATES = ["attention", "conv", "ffn"]
HPARAMS = {
    "dense": "conformer_ctc.yaml",
    "i3d_local": "conformer_ctc_i3d_local.yaml",
    "i3d_global": "conformer_ctc_i3d_global.yaml",
    "static": "conformer_ctc_static_layer_pruning.yaml",
    "shallow": "conformer_ctc.yaml",
}
#: The I3D models and their static baseline first: they matter most.
TRAINING_ORDER = ["i3d_local", "static", "i3d_global", "shallow", "dense"]
PRESETS = {
    "quick": dict(
        d_model=144, nhead=4, layers=6, d_ffn=576, utterances=16, repeats=3
    ),
    "full": dict(
        d_model=64,
        nhead=4,
        layers=6,
        d_ffn=256,
        epochs=8,
        utterances=32,
        repeats=10,
    ),
}


def run_overrides(name, config, target):
    """Recipe overrides of one model of the benchmark."""
    layers = config["layers"]
    kept = max(1, round(target * layers))
    common = {
        "d_model": config["d_model"],
        "nhead": config["nhead"],
        "num_encoder_layers": layers,
        "d_ffn": config["d_ffn"],
        "avg_checkpoints": 1,
    }
    if "epochs" in config:
        common["number_of_epochs"] = config["epochs"]
    extra = {
        "i3d_local": {"i3d_target": target},
        "i3d_global": {"i3d_target": target},
        "static": {"static_remove_layers": layers - kept},
        "shallow": {"num_encoder_layers": kept},
    }.get(name, {})
    return {**common, **extra}


def train(name, overrides, folder):
    """Run the recipe (niced), unless a run with these overrides exists."""
    stamp = folder / "benchmark_overrides.json"
    results = folder / "results.json"
    if results.exists() and stamp.exists():
        if json.loads(stamp.read_text()) == overrides:
            print(f"[{name}] reusing {folder}", flush=True)
            return json.loads(results.read_text())
    # Other settings (or an unfinished run): its checkpoints would be resumed.
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir(parents=True)
    command = [
        "nice",
        "-n",
        "10",
        sys.executable,
        "train.py",
        f"hparams/{HPARAMS[name]}",
        f"--output_folder={folder}",
        "--noprogressbar",
        *[f"--{key}={value}" for key, value in overrides.items()],
    ]
    print(f"[{name}] $ {' '.join(command[3:])}", flush=True)
    start = time.time()
    with open(folder / "benchmark_stdout.txt", "w") as log:
        subprocess.run(command, cwd=RECIPE, check=True, stdout=log, stderr=log)
    print(f"[{name}] trained in {(time.time() - start) / 60:.1f} min")
    stamp.write_text(json.dumps(overrides))
    return json.loads(results.read_text())


def load_hparams(name, overrides, folder):
    from hyperpyyaml import load_hyperpyyaml

    overrides = {**overrides, "output_folder": str(folder)}
    with open(RECIPE / "hparams" / HPARAMS[name]) as handle:
        return load_hyperpyyaml(handle, overrides)


def load_trained(name, overrides, folder):
    """Rebuild a recipe's model and load its best final-structure checkpoint."""
    from sb_prune.core.checkpoints import read_structure
    from sb_prune.core.structure import restore

    hparams = load_hparams(name, overrides, folder)
    checkpointer = hparams["checkpointer"]
    final = read_structure(checkpointer.find_checkpoint())
    restore(torch.nn.ModuleDict(hparams["modules"]), final)
    checkpointer.recover_if_possible(
        min_key="WER", ckpt_predicate=lambda c: read_structure(c) == final
    )
    return hparams


class Model:
    """Front end + encoder + CTC layer of a recipe, in evaluation mode."""

    def __init__(self, name, hparams):
        self.name = name
        self.cnn = hparams["CNN"].eval()
        self.transformer = hparams["Transformer"].eval()
        self.ctc_lin = hparams["ctc_lin"].eval()
        self.encoder = self.transformer.encoder
        self.gated = hasattr(self.encoder, "gate_decisions")

    def __call__(self, feats, lens):
        src = self.cnn(feats)
        return self.ctc_lin(self.transformer.encode(src, lens))

    def executed_layers(self, batches):
        """Mean executed layers over the utterances of ``batches``."""
        if not self.gated:
            return float(len(self.encoder.layers))
        total, count = 0.0, 0
        with torch.no_grad():
            for feats, lens in batches:
                self(feats, lens)
                total += float(self.encoder.executed_layers.sum())
                count += len(lens)
        return total / count


def batches_of(items, size):
    """Pad ``[(feats [T, F])]`` into batches of ``size`` (relative lens)."""
    batches = []
    for start in range(0, len(items), size):
        group = items[start : start + size]
        longest = max(f.shape[0] for f in group)
        feats = torch.zeros(len(group), longest, group[0].shape[1])
        lens = torch.zeros(len(group))
        for row, f in enumerate(group):
            feats[row, : f.shape[0]] = f
            lens[row] = f.shape[0] / longest
        batches.append((feats, lens))
    return batches


def random_features(n, n_mels=80, seed=0):
    """Random features of 1.5-4 s (sorted by length, as test loaders do)."""
    gen = torch.Generator().manual_seed(seed)
    lengths = torch.randint(150, 400, (n,), generator=gen).sort().values
    return [torch.randn(int(t), n_mels, generator=gen) for t in lengths]


def test_features(hparams, folder, n):
    """Normalised features of ``n`` test utterances spread over lengths."""
    import csv

    from speechbrain.dataio.dataio import read_audio

    with open(folder / "test-clean.csv", newline="") as handle:
        rows = sorted(
            csv.DictReader(handle), key=lambda r: float(r["duration"])
        )
    step = max(1, len(rows) // n)
    chosen = rows[::step][:n]
    data_root = str(RECIPE / hparams["data_folder"])  # relative to it
    normalize = hparams["normalize"].eval()  # frozen statistics
    features = []
    with torch.no_grad():
        for row in chosen:
            wav = read_audio(row["wav"].replace("$data_root", data_root))
            feats = hparams["compute_features"](wav[None])
            feats = normalize(feats, torch.ones(1))
            features.append(feats[0])
    return features


def calibrate_gates(model, batches, target, seed=0):
    """Random input-dependent predictors; threshold giving ~target run."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, param in model.transformer.named_parameters():
            if "gate_predictor" in name:
                param.copy_(2.0 * torch.randn(param.shape, generator=gen))
    layers = len(model.encoder.layers)
    low, high = 0.0, 1.0
    for _ in range(10):
        model.encoder.threshold = (low + high) / 2
        if model.executed_layers(batches) / layers > target:
            low = model.encoder.threshold
        else:
            high = model.encoder.threshold
    model.encoder.threshold = max(low, 1e-3)  # just above the target


def quick_models(config, target, folder):
    """Untrained recipe models: dense, I3D (calibrated), static/shallow."""
    from sb_prune.core.surgery import apply_plan

    models = {}
    for name in HPARAMS:
        hparams = load_hparams(
            name, run_overrides(name, config, target), folder
        )
        models[name] = Model(name, hparams)
    kept = round(target * config["layers"])
    apply_plan(models["static"].encoder, {"": {"layers": list(range(kept))}})
    return models


def measure(models, inputs, repeats):
    """MACs, latency and executed layers of every model at batch 1 and 8."""
    from sb_prune.core.profiling import count_macs, measure_latency

    results = {name: {} for name in models}
    for batch in (1, 8):
        batches = {name: batches_of(inputs[name], batch) for name in models}

        def run_all(model, data):
            return lambda: [model(f, lens) for f, lens in data]

        functions = {
            name: run_all(model, batches[name])
            for name, model in models.items()
        }
        load = os.getloadavg()[0]
        times = measure_latency(functions, lambda: (), repeats=repeats)
        for name, model in models.items():
            macs = sum(count_macs(model, f, lens) for f, lens in batches[name])
            results[name][f"macs_b{batch}"] = macs
            results[name][f"ms_b{batch}"] = (
                1000 * times[name] / len(inputs[name])
            )
            results[name][f"load_b{batch}"] = round(load, 2)
        dense = results["dense"]
        for name in models:
            row = results[name]
            row[f"latency_ratio_b{batch}"] = times[name] / times["dense"]
            row[f"ideal_ratio_b{batch}"] = (
                row[f"macs_b{batch}"] / dense[f"macs_b{batch}"]
            )
    for name, model in models.items():
        results[name]["measured_layers"] = model.executed_layers(
            batches_of(inputs[name], 8)
        )
    return results


def targets(rows, config):
    """Check the issue's two targets on the measured rows."""
    by_name = {row["model"]: row for row in rows}
    layers = config["layers"]
    checks = {}
    static = by_name["static"]
    for name in ("i3d_local", "i3d_global"):
        row = by_name[name]
        fraction = row["avg_layers"] / layers
        saving = 1 - row["latency_ratio_b1"]
        ideal = 1 - row["ideal_ratio_b1"]
        checks[name] = {
            "executed_fraction": round(fraction, 3),
            "in_50_70": 0.5 <= fraction <= 0.7,
            "static_avg_layers": static["avg_layers"],
            "wer_le_static": (
                None if row["wer"] is None else row["wer"] <= static["wer"]
            ),
            "latency_saving_b1": round(saving, 3),
            "ideal_saving_b1": round(ideal, 3),
            "latency_ge_0.8_ideal_b1": saving >= 0.8 * ideal,
        }
    return checks


def format_table(rows):
    header = (
        f"{'model':<11}{'avg_layers':>11}{'WER %':>8}{'lat b1':>8}"
        f"{'ideal b1':>9}{'lat b8':>8}{'ideal b8':>9}{'ms/utt b1':>10}"
    )
    lines = [header, "-" * len(header)]
    for row in rows:
        wer = "n/a" if row["wer"] is None else f"{row['wer']:.2f}"
        lines.append(
            f"{row['model']:<11}{row['avg_layers']:>11.2f}{wer:>8}"
            f"{row['latency_ratio_b1']:>8.3f}{row['ideal_ratio_b1']:>9.3f}"
            f"{row['latency_ratio_b8']:>8.3f}{row['ideal_ratio_b8']:>9.3f}"
            f"{row['ms_b1']:>10.2f}"
        )
    return "\n".join(lines)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--json", help="write all figures to this file")
    parser.add_argument("--target", type=float, default=0.5)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument(
        "--out",
        default=str(REPO / "benchmarks" / "out" / "i3d"),
        help="folder of the recipe runs (full mode)",
    )
    args = parser.parse_args(argv)
    mode = "quick" if args.quick else "full"
    config = dict(PRESETS[mode])
    torch.set_num_threads(args.threads)
    out = Path(args.out).resolve() / mode
    out.mkdir(parents=True, exist_ok=True)
    start = time.time()
    recipe_results = {}
    if args.quick:
        models = quick_models(config, args.target, out)
        features = random_features(config["utterances"])
        inputs = {name: features for name in models}
        for name in ("i3d_local", "i3d_global"):
            calibrate_gates(models[name], batches_of(features, 8), args.target)
    else:
        for name in TRAINING_ORDER:
            overrides = run_overrides(name, config, args.target)
            recipe_results[name] = train(name, overrides, out / name)
        models, inputs = {}, {}
        for name in HPARAMS:
            overrides = run_overrides(name, config, args.target)
            folder = out / name
            hparams = load_trained(name, overrides, folder)
            models[name] = Model(name, hparams)
            inputs[name] = test_features(hparams, folder, config["utterances"])
    measured = measure(models, inputs, config["repeats"])
    rows = []
    for name, model in models.items():
        test = recipe_results.get(name, {}).get("test-clean", {})
        avg_layers = test.get("avg_layers", measured[name]["measured_layers"])
        rows.append(
            {
                "model": name,
                "avg_layers": round(avg_layers, 3),
                "wer": test.get("WER"),
                "cer": test.get("CER"),
                "params": sum(
                    p.numel()
                    for m in (model.cnn, model.transformer, model.ctc_lin)
                    for p in m.parameters()
                ),
                **{k: v for k, v in measured[name].items()},
            }
        )
    checks = targets(rows, config)
    table = format_table(rows)
    print(table)
    for name, check in checks.items():
        print(f"{name}: {check}")
    summary = {
        "mode": mode,
        "config": config,
        "target": args.target,
        "threads": args.threads,
        "cpu": platform.processor() or platform.machine(),
        "cpu_count": os.cpu_count(),
        "seconds": round(time.time() - start, 1),
        "rows": rows,
        "targets": checks,
        "gate_stats": {
            name: {
                k: v
                for k, v in recipe_results[name].get("test-clean", {}).items()
                if k
                in (
                    "executed_fraction",
                    "input_dependent",
                    "open_rate",
                    "correlation",
                )
            }
            for name in recipe_results
        },
    }
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps(summary, indent=2))
    return summary


if __name__ == "__main__":
    main()
