"""The ASR recipe end to end on the tiny synthetic corpus."""

import json
import subprocess
import sys
from pathlib import Path

import yaml
from hyperpyyaml import load_hyperpyyaml

RECIPE = Path(__file__).parents[1] / "recipes" / "LibriSpeech" / "ASR"


def tiny_args(data_folder, output_folder, **extra):
    """Command-line overrides of the recipe's tiny test configuration."""
    with open(RECIPE / "hparams" / "tiny_overrides.yaml") as handle:
        overrides = yaml.safe_load(handle)
    overrides.update(extra)
    args = [f"--{key}={value}" for key, value in overrides.items()]
    return args + [
        f"--data_folder={data_folder}",
        f"--output_folder={output_folder}",
        "--noprogressbar",
    ]


def run_recipe(hparams, data_folder, output_folder, **extra):
    """Run train.py in a subprocess; return its completed process."""
    command = [
        sys.executable,
        "train.py",
        f"hparams/{hparams}",
        *tiny_args(data_folder, output_folder, **extra),
    ]
    return subprocess.run(
        command, cwd=RECIPE, capture_output=True, text=True, timeout=300
    )


def dense_encoder_params(output_folder):
    """Encoder parameters of the tiny dense model, built from its YAML."""
    with open(RECIPE / "hparams" / "tiny_overrides.yaml") as handle:
        overrides = yaml.safe_load(handle)
    overrides["output_folder"] = str(output_folder / "dense")
    with open(RECIPE / "hparams" / "conformer_ctc.yaml") as handle:
        hparams = load_hyperpyyaml(handle, overrides)
    encoder = hparams["Transformer"].encoder
    return sum(p.numel() for p in encoder.parameters())


def train_log(output_folder):
    return (Path(output_folder) / "train_log.txt").read_text().splitlines()


def test_tiny_training_run(tiny_corpus, tmp_path):
    run = run_recipe("conformer_ctc.yaml", tiny_corpus, tmp_path)
    assert run.returncode == 0, run.stderr[-3000:]
    log = [line for line in train_log(tmp_path) if line.startswith("epoch")]
    losses = [
        float(line.split("train loss: ")[1].split(" ")[0]) for line in log
    ]
    assert len(losses) == 2 and losses[1] < losses[0]
    assert list((tmp_path / "save").glob("CKPT+*"))
    assert (tmp_path / "wer_test-clean.txt").read_text().startswith("%WER")
    results = json.loads((tmp_path / "results.json").read_text())
    assert results["test-clean"]["WER"] >= 0
    assert results["params"] > results["encoder_params"] > 0


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


def test_adaptive_dropout_recipe_prunes(tiny_corpus, tmp_path):
    run = run_recipe(
        "conformer_ctc_adaptive_dropout.yaml",
        tiny_corpus,
        tmp_path,
        number_of_epochs=3,
        adl_init_retention=0.8,
        adl_logit_scale=50.0,
        adl_regularization_weight=0.01,
        adl_ramp_epochs=1,
    )
    assert run.returncode == 0, run.stderr[-3000:]
    results = json.loads((tmp_path / "results.json").read_text())
    assert results["encoder_params"] < dense_encoder_params(tmp_path)
    assert (tmp_path / "retention.png").stat().st_size > 0
    assert "units=" in (tmp_path / "structure.txt").read_text()
