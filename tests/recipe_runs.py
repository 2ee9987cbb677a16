"""Run the recipes of this repository at test size (shared by tests)."""

import csv
import json
import re
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


def finished_run(hparams, data_folder, output_folder, **extra):
    """Run a recipe that must succeed; return its results.json."""
    run = run_recipe(hparams, data_folder, output_folder, **extra)
    assert run.returncode == 0, run.stdout[-2000:] + run.stderr[-3000:]
    return json.loads((Path(output_folder) / "results.json").read_text())


def wer_file_counts(path):
    """The word errors and reference words on the first line of a WER file.

    ``ErrorRateStats.write_stats`` starts with ``%WER 12.40 [ 16 / 129, ...``.
    """
    first = Path(path).read_text().splitlines()[0]
    match = re.match(r"%WER [\d.]+ \[ (\d+) / (\d+),", first)
    assert match, f"{path} starts with {first!r}"
    return int(match[1]), int(match[2])


def reference_words(output_folder, name="test-clean"):
    """Words of the reference transcriptions of a run's test set."""
    with open(Path(output_folder) / f"{name}.csv") as handle:
        return sum(len(row["wrd"].split()) for row in csv.DictReader(handle))
