"""The ASR recipe end to end on the tiny synthetic corpus."""

import json

import pytest
from recipe_runs import (
    dense_encoder_params,
    reference_words,
    run_recipe,
    train_log,
    wer_file_counts,
)


def test_tiny_training_run(tiny_dense_run):
    tmp_path = tiny_dense_run
    log = [line for line in train_log(tmp_path) if line.startswith("epoch")]
    losses = [
        float(line.split("train loss: ")[1].split(" ")[0]) for line in log
    ]
    assert len(losses) == 2 and losses[1] < losses[0]
    assert list((tmp_path / "save").glob("CKPT+*"))
    # The WER in results.json is that of the WER file, over every test word.
    errors, words = wer_file_counts(tmp_path / "wer_test-clean.txt")
    assert words == reference_words(tmp_path) > 0
    results = json.loads((tmp_path / "results.json").read_text())
    assert results["test-clean"]["WER"] == pytest.approx(100 * errors / words)
    assert results["params"] > results["encoder_params"] > 0
    # Model selection is recorded: the best checkpoint's validation WER.
    valid = [float(line.split("valid WER: ")[1]) for line in log]
    assert results["valid"]["WER"] == pytest.approx(min(valid), abs=0.01)


def test_resume_continues_from_the_checkpoint(tiny_corpus, tmp_path):
    first = run_recipe(
        "conformer_ctc.yaml", tiny_corpus, tmp_path, number_of_epochs=1
    )
    assert first.returncode == 0, first.stderr[-3000:]
    second = run_recipe("conformer_ctc.yaml", tiny_corpus, tmp_path)
    assert second.returncode == 0, second.stderr[-3000:]
    epochs = [line.split(",")[0] for line in train_log(tmp_path)]
    assert [e for e in epochs if e.startswith("epoch")] == [
        "epoch: 1",
        "epoch: 2",
    ]
    assert "Going into epoch 2" in second.stderr + second.stdout
    assert "Going into epoch 1" not in second.stderr + second.stdout


def test_missing_data_folder_names_the_path(tmp_path):
    missing = tmp_path / "no_such_corpus"
    run = run_recipe("conformer_ctc.yaml", missing, tmp_path / "out")
    assert run.returncode != 0
    assert f"data_folder {missing} does not exist" in run.stdout + run.stderr


def test_adaptive_dropout_recipe_prunes(tiny_adaptive_run):
    results = json.loads((tiny_adaptive_run / "results.json").read_text())
    assert results["encoder_params"] < dense_encoder_params(tiny_adaptive_run)
    assert (tiny_adaptive_run / "retention.png").stat().st_size > 0
    assert "units=" in (tiny_adaptive_run / "structure.txt").read_text()
