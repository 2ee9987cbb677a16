"""Whisper under ONNX Runtime against PyTorch: tokens, words and WER.

For each Whisper folder (one ``WhisperASR`` loads: ``convert_whisper``'s
dense one, ``export_whisper``'s compressed one), writes its ONNX folder
(``sb_prune.deploy.whisper_onnx.export_whisper_onnx``, into a
temporary folder), then transcribes the first utterances of a recipe
run's ``test.csv`` with ``WhisperASR`` (PyTorch, the folder's searcher)
and with ``onnx_whisper_transcriber`` (ONNX Runtime, greedy). Prints, per
folder: utterances whose tokens are identical, the word error rate of
ONNX Runtime's words against PyTorch's (0 = same words), the WER of each
against the references (upper case, punctuation but apostrophes removed)
and the seconds each took (one thread; indicative only, timings belong to
the runtime benchmark).

Usage: python benchmarks/whisper_onnx.py --folder NAME=PATH [...]
       --csv RUN/test.csv [--utterances 16] [--json PATH]
"""

import argparse
import csv
import json
import tempfile
import time
from pathlib import Path

import torch
from common import REPO, provenance, write_json

SHARED = REPO.parent / "shared" / "data" / "librilight"


def agreement(folder, rows, out):
    """The figures of one folder on ``rows`` of a recipe CSV."""
    from speechbrain.inference.ASR import WhisperASR
    from speechbrain.utils.metric_stats import ErrorRateStats

    from sb_prune.data.real_speech import plain_words
    from sb_prune.deploy.whisper_onnx import (
        export_whisper_onnx,
        onnx_whisper_transcriber,
    )

    summary = export_whisper_onnx(folder, out)
    asr = WhisperASR.from_hparams(
        source=str(folder),
        savedir=str(folder),
        overrides={"whisper_folder": str(Path(folder).resolve())},
    )
    transcribe = onnx_whisper_transcriber(out, threads=1)
    same_words, pytorch_wer, onnx_wer = (ErrorRateStats() for _ in range(3))
    same_tokens, seconds = 0, {"pytorch": 0.0, "onnx": 0.0}
    for row in rows:
        wav = asr.load_audio(row["wav"].replace("$data_root", str(SHARED)))
        start = time.perf_counter()
        words, tokens = asr.transcribe_batch(
            wav.unsqueeze(0), torch.tensor([1.0])
        )
        seconds["pytorch"] += time.perf_counter() - start
        start = time.perf_counter()
        onnx_words, onnx_tokens = transcribe(wav)
        seconds["onnx"] += time.perf_counter() - start
        same_tokens += onnx_tokens == [int(t) for t in tokens[0]]
        pytorch, onnx = plain_words(words[0]), plain_words(onnx_words)
        reference = plain_words(row["wrd"])
        same_words.append([row["ID"]], [onnx], [pytorch])
        pytorch_wer.append([row["ID"]], [pytorch], [reference])
        onnx_wer.append([row["ID"]], [onnx], [reference])
    return {
        "utterances": len(rows),
        "same_tokens": same_tokens,
        "onnx_vs_pytorch_word_error_pct": same_words.summarize("error_rate"),
        "wer_pytorch_pct": pytorch_wer.summarize("error_rate"),
        "wer_onnx_pct": onnx_wer.summarize("error_rate"),
        "seconds_1_thread": {k: round(v, 1) for k, v in seconds.items()},
        "heads": {
            "encoder": summary["encoder"]["heads"],
            "decoder_self": summary["decoder"]["self_heads"],
            "decoder_cross": summary["decoder"]["cross_heads"],
        },
        "max_abs_diff": {
            part: summary[part]["max_abs_diff"]
            for part in ("encoder", "cross_kv", "decoder")
        },
    }


def main():
    """Parse the options, measure each folder, print and save."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--folder", action="append", required=True)
    parser.add_argument("--csv", required=True, type=Path)
    parser.add_argument("--utterances", type=int, default=16)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    torch.set_num_threads(1)
    with open(args.csv, newline="") as handle:
        rows = list(csv.DictReader(handle))[: args.utterances]
    figures = {"provenance": provenance(), "folders": {}}
    with tempfile.TemporaryDirectory() as scratch:
        for spec in args.folder:
            name, folder = spec.split("=", 1)
            result = agreement(folder, rows, Path(scratch) / name)
            figures["folders"][name] = result
            print(name, json.dumps(result), flush=True)
    if args.json:
        write_json(args.json, figures)


if __name__ == "__main__":
    main()
