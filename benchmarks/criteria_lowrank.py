"""Benchmark pruning criteria x schedules, and low rank, with the recipes.

Emili et al. (2023) compare pruning criteria (magnitude vs data-driven),
schedules (one-shot vs incremental) and an incremental low-rank
approximation on Transformer LMs for ASR. This benchmark measures the same
grid with the repository's recipes, so it measures what users run:

* ``asr``: the ASR recipe's dense CTC Conformer (``conformer_ctc.yaml``)
  trained once on the synthetic corpus, then compressed from its weights
  by every method with ``sb_prune.compress`` for the same epochs and the
  short fine-tuning of ``sb-prune demo``: the criteria recipe one shot (one
  cut at the end of epoch 1) or incremental (cubic, cuts at the ends of
  epochs 1, 2 and 3), the low-rank recipe likewise (FFN layers; linear
  ramp); quality = test WER of greedy decoding;
* ``lm``: the LM recipe (``recipes/LibriSpeech/LM``, a character
  Transformer LM on the synthetic grammar's text), each of its hparams
  files trained from scratch for the same epochs: dense, criteria one shot
  (cut at the end of epoch 2) or incremental (ends of epochs 2, 3 and 4),
  low rank incremental (FFN and attention projections); quality = test
  perplexity per token.

Rows (``rows`` in the JSON): the dense model trained as long as the
others, then ``{magnitude, taylor, activation} x {one_shot, incremental}``
at each target sparsity of the FFN hidden units and attention heads
(structured: physically removed), and low rank at each target fraction of
the converted layers' dense weights. ``params`` counts the model's
parameters. ``latency_ratio`` = CPU forward time of the exported model /
the dense one's, both timed in alternation in this process (median of the
preset's repeats), on 8 inputs of 10 s (ASR) or 64 tokens (LM).

Usage::

    python benchmarks/criteria_lowrank.py --quick
    python benchmarks/criteria_lowrank.py --json benchmarks/out/cl.json
"""

import argparse
import importlib.util
import json
import time
from pathlib import Path

import torch
import yaml
from common import ASR_HPARAMS, REPO, SYNTHETIC_FOLDER, run_asr_recipe
from hyperpyyaml import load_hyperpyyaml

from sb_prune import compress
from sb_prune.asr.compress import SHORT_FINE_TUNING
from sb_prune.core.profiling import measure_latency
from sb_prune.core.saved_model import load_exported
from sb_prune.deploy.pretrained import export_pretrained, load_model
from sb_prune.deploy.torchscript import CTCEncoder

LM_RECIPE = REPO / "recipes" / "LibriSpeech" / "LM"
#: The quick preset's recipe sizes: the test suite's tiny ones.
TINY_ASR = {
    key: value
    for key, value in yaml.safe_load(
        (ASR_HPARAMS / "tiny_overrides.yaml").read_text()
    ).items()
    if key != "number_of_epochs"
}
TINY_LM = dict(
    train_sentences=600,
    valid_sentences=50,
    test_sentences=100,
    d_model=32,
    d_ffn=64,
    num_layers=2,
    batch_size=64,
    warmup_steps=2,
)
PRESETS = {
    "quick": {
        "asr": {
            "corpus": dict(
                train_speakers=4,
                dev_speakers=2,
                test_speakers=2,
                utterances_per_speaker=10,
                seed=20240,
            ),
            "overrides": TINY_ASR,
            "dense_epochs": 3,
        },
        "lm": {"overrides": TINY_LM},
        "epochs": 4,
        "targets": [0.5],
        "repeats": 5,
    },
    "full": {
        "asr": {"corpus": None, "overrides": {}, "dense_epochs": 8},
        "lm": {"overrides": {}},
        "epochs": 5,
        "targets": [0.25, 0.5, 0.75],
        "repeats": 20,
    },
}
#: schedule -> pruning steps (the cuts at the ends of consecutive epochs).
STEPS = {"one_shot": 1, "incremental": 3}


def _time_ratio(dense_fn, other_fn, repeats):
    times = measure_latency(
        {"dense": dense_fn, "other": other_fn}, lambda: (), repeats, warmup=1
    )
    return times["other"] / times["dense"]


class Recorder:
    """Logs each row, with the latency of its model against the dense."""

    def __init__(self, name, metric, forward, dense_model, repeats, log):
        self.name, self.metric, self.forward = name, metric, forward
        self.dense = forward(dense_model)
        self.repeats, self.log = repeats, log
        self.rows = []

    def __call__(self, model, results, criterion, schedule, target, note=""):
        """Record one compressed model (``results``: its run's figures)."""
        row = {
            "model": self.name,
            "target": target,
            "criterion": criterion,
            "schedule": schedule,
            "params": results["params"],
            "ppl_or_wer": results[self.metric],
            "metric": self.metric,
            "latency_ratio": _time_ratio(
                self.dense, self.forward(model), self.repeats
            ),
        }
        if note:
            row["note"] = note
        self.rows.append(row)
        self.log(_format(row))


def asr_forward(folder):
    """The exported CTC model as a function of nothing: 8 x 10 s."""
    hparams = load_model(folder)
    model = CTCEncoder.from_hparams(hparams).eval()
    feats = torch.randn(
        8, 1000, hparams["n_mels"], generator=torch.Generator().manual_seed(0)
    )
    return lambda: model(feats, torch.ones(8))


def asr_corpus(preset, out_dir):
    """The preset's corpus (made under ``out_dir``), or the recipe's own.

    The recipe's own synthetic corpus is made by its first run.
    """
    from sb_prune.data import synthesize_corpus

    options = preset["asr"]["corpus"]
    if options is None:
        return SYNTHETIC_FOLDER / "LibriSpeech"
    return synthesize_corpus(str(out_dir / "corpus"), progress=False, **options)


def dense_asr(preset, out_dir, log):
    """Train the ASR recipe's dense model once: ``(corpus, run folder)``."""
    corpus = asr_corpus(preset, out_dir)
    dense_run = out_dir / "asr" / "dense"
    start = time.time()
    run_asr_recipe(
        "conformer_ctc.yaml",
        dense_run,
        data_folder=corpus,
        number_of_epochs=preset["asr"]["dense_epochs"],
        **preset["asr"]["overrides"],
    )
    log(f"[asr] dense trained in {time.time() - start:.0f} s")
    return corpus, dense_run


def compress_asr(preset, corpus, dense_run, method, folder, epochs, **extra):
    """``sb_prune.compress`` of the dense model; its results, with wer."""
    summary = compress(
        dense_run,
        method,
        corpus,
        folder,
        epochs,
        overrides={**preset["asr"]["overrides"], **SHORT_FINE_TUNING, **extra},
    )
    results = summary["results"]
    return {**results, "wer": results["test-clean"]["WER"]}


def benchmark_asr(preset, targets, criteria, out_dir, log):
    """The dense ASR recipe run, then every method from its weights."""
    corpus, dense_run = dense_asr(preset, out_dir, log)
    epochs = preset["epochs"]
    dense = out_dir / "asr" / "dense_exported"
    export_pretrained(dense_run, dense)
    record = Recorder("asr", "wer", asr_forward, dense, preset["repeats"], log)
    tuned = out_dir / "asr" / "dense_tuned"
    results = run_asr_recipe(
        "conformer_ctc.yaml",
        tuned,
        data_folder=corpus,
        init_from=dense_run,
        number_of_epochs=epochs,
        **{**preset["asr"]["overrides"], **SHORT_FINE_TUNING},
    )
    export_pretrained(tuned, tuned / "exported")
    results["wer"] = results["test-clean"]["WER"]
    note = "dense, fine-tuned like the others"
    record(tuned / "exported", results, "none", "none", 0.0, note)
    methods = [(c, "sparsity", c) for c in criteria]
    methods.append(("low-rank", "compression", "low_rank"))
    for target in targets:
        for schedule, steps in STEPS.items():
            for method, key, name in methods:
                folder = out_dir / "asr" / f"{name}_{schedule}_{target}"
                results = compress_asr(
                    preset,
                    corpus,
                    dense_run,
                    method,
                    folder,
                    epochs,
                    **{key: target, "prune_steps": steps},
                )
                record(folder / "exported", results, name, schedule, target)
    return record.rows


class LMRecipe:
    """Runs of the LM recipe (its ``train.py``, imported) in this process."""

    def __init__(self, preset, out_dir):
        spec = importlib.util.spec_from_file_location(
            "lm_recipe", LM_RECIPE / "train.py"
        )
        self.module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(self.module)
        self.preset, self.out_dir = preset, out_dir

    def run(self, hparams, name, **overrides):
        """One run of a hparams file: ``(folder, results with ppl)``."""
        folder = self.out_dir / "lm" / name
        settings = {
            **self.preset["lm"]["overrides"],
            "number_of_epochs": self.preset["epochs"],
            **overrides,
        }
        self.module.main(
            [
                str(LM_RECIPE / "hparams" / hparams),
                f"--output_folder={folder}",
                "--noprogressbar",
                *(f"--{key}={value}" for key, value in settings.items()),
            ]
        )
        results = json.loads((folder / "results.json").read_text())
        return folder, {**results, "ppl": results["test_ppl"]}


def lm_forward(folder):
    """The LM exported by a recipe run, on 8 x 64 tokens."""
    with open(folder / "hyperparams.yaml", encoding="utf-8") as handle:
        hparams = load_hyperpyyaml(handle)
    model = load_exported(hparams["model"], folder / "lm").eval()
    tokens = torch.randint(
        3,
        hparams["output_neurons"],
        (8, 64),
        generator=torch.Generator().manual_seed(0),
    )
    return lambda: model(tokens)


def benchmark_lm(preset, targets, criteria, out_dir, log):
    """Every LM recipe file from scratch, the same epochs each."""
    recipe = LMRecipe(preset, out_dir)
    start = time.time()
    dense, results = recipe.run("transformer_lm.yaml", "dense")
    log(f"[lm] dense trained in {time.time() - start:.0f} s")
    record = Recorder("lm", "ppl", lm_forward, dense, preset["repeats"], log)
    record(dense, results, "none", "none", 0.0, "dense, trained as long")
    for target in targets:
        for schedule in STEPS:
            for criterion in criteria:
                folder, results = recipe.run(
                    f"transformer_lm_{schedule}.yaml",
                    f"{criterion}_{schedule}_{target}",
                    criterion=criterion,
                    sparsity=target,
                )
                record(folder, results, criterion, schedule, target)
        folder, results = recipe.run(
            "transformer_lm_low_rank.yaml",
            f"low_rank_{target}",
            compression=target,
        )
        record(folder, results, "low_rank", "incremental", target)
    return record.rows


def _format(row):
    return (
        f"{row['model']:4} {row['target']:5.2f} {row['criterion']:10} "
        f"{row['schedule']:12} {row['params']:9d} "
        f"{row['metric']}={row['ppl_or_wer']:7.3f} "
        f"latency x{row['latency_ratio']:.3f}"
    )


def print_table(rows):
    print()
    header = (
        f"{'model':5} {'target':>6} {'criterion':10} {'schedule':12} "
        f"{'params':>9} {'ppl/wer':>8} {'latency':>8}  note"
    )
    print(header)
    print("-" * len(header))
    for row in rows:
        print(
            f"{row['model']:5} {row['target']:6.2f} {row['criterion']:10} "
            f"{row['schedule']:12} {row['params']:9d} "
            f"{row['ppl_or_wer']:8.3f} {row['latency_ratio']:8.3f}  "
            f"{row.get('note', '')}"
        )


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument(
        "--quick",
        action="store_true",
        help="the test suite's tiny sizes and corpus",
    )
    parser.add_argument("--json", help="write all figures to this file")
    parser.add_argument(
        "--parts", nargs="+", default=["lm", "asr"], choices=["lm", "asr"]
    )
    parser.add_argument(
        "--criteria",
        nargs="+",
        default=["magnitude", "taylor", "activation"],
        choices=["magnitude", "taylor", "activation", "wanda"],
    )
    parser.add_argument(
        "--targets", nargs="+", type=float, help="sparsities (default: preset)"
    )
    parser.add_argument(
        "--out", default=str(REPO / "benchmarks/out"), help="work folder"
    )
    parser.add_argument("--threads", type=int, default=1)
    return parser.parse_args(argv)


def main(argv=None):
    args = parse_args(argv)
    torch.set_num_threads(args.threads)
    preset = PRESETS["quick" if args.quick else "full"]
    targets = args.targets or preset["targets"]
    for target in targets:
        if not 0.0 < target < 1.0:
            raise ValueError(f"--targets must be in (0, 1), got {target}")
    out_dir = Path(args.out).resolve() / (
        "criteria_lowrank_quick" if args.quick else "criteria_lowrank"
    )
    out_dir.mkdir(parents=True, exist_ok=True)
    start = time.time()

    def log(message):
        print(f"[{time.time() - start:6.0f} s] {message}", flush=True)

    rows = []
    if "lm" in args.parts:
        rows += benchmark_lm(preset, targets, args.criteria, out_dir, log)
    if "asr" in args.parts:
        rows += benchmark_asr(preset, targets, args.criteria, out_dir, log)
    print_table(rows)
    result = {
        "mode": "quick" if args.quick else "full",
        "threads": args.threads,
        "seconds": round(time.time() - start, 1),
        "presets": preset,
        "rows": rows,
    }
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        with open(args.json, "w") as handle:
            json.dump(result, handle, indent=1, default=str)
    print(f"\n{result['seconds']} s")
    return result


if __name__ == "__main__":
    main()
