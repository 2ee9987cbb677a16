"""An installed wheel compresses a model, with no checkout in sight.

The wheel is built offline from a copy of what ``setup.py`` packages,
installed into a folder of its own, and ``sb-prune compress`` runs from an
empty folder with only that installation on ``PYTHONPATH``.
"""

import csv
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
#: What setup.py reads and packages.
SOURCES = (
    "setup.py",
    "pyproject.toml",
    "README.md",
    "sb_prune",
    "recipes/LibriSpeech/ASR/hparams",
)


def pip(*args):
    subprocess.run(
        [sys.executable, "-m", "pip", "--quiet", *args, "--no-index"],
        check=True,
        timeout=300,
    )


def install_wheel(tmp_path):
    """Build the wheel of a copy of the sources; install it in a folder."""
    source = tmp_path / "source"
    for name in SOURCES:
        if (ROOT / name).is_dir():
            shutil.copytree(
                ROOT / name,
                source / name,
                ignore=shutil.ignore_patterns("__pycache__"),
            )
        else:
            (source / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy(ROOT / name, source / name)
    dist, target = tmp_path / "dist", tmp_path / "installed"
    pip("wheel", str(source), "--no-deps", "--no-build-isolation", "-w", dist)
    (wheel,) = dist.glob("sb_prune-*.whl")
    pip("install", "--no-deps", "--target", str(target), str(wheel))
    return target


def head_csv(source, target, rows):
    with open(source, newline="") as handle:
        lines = list(csv.reader(handle))
    with open(target, "w", newline="") as handle:
        csv.writer(handle).writerows(lines[: rows + 1])
    return target


def run_installed(target, cwd, *args):
    """Run Python with only the installed wheel (no checkout) importable."""
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    env.update(PYTHONPATH=str(target), OMP_NUM_THREADS="1")
    done = subprocess.run(
        [sys.executable, *args],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    return done.stdout


def test_installed_wheel_compresses_a_dense_run(
    tiny_dense_run, tiny_corpus, tmp_path
):
    target = install_wheel(tmp_path)
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    where = run_installed(
        target,
        elsewhere,
        "-c",
        "import sb_prune.asr.compress as c; print(c.__file__); "
        "print(c.RECIPE_HPARAMS)",
    )
    assert all(Path(line).is_relative_to(target) for line in where.split()), (
        where
    )

    data = {
        name: head_csv(
            tiny_dense_run / f"{name}.csv", tmp_path / f"{name}.csv", n
        )
        for name, n in (("train", 8), ("dev-clean", 4), ("test-clean", 4))
    }
    out = tmp_path / "compressed"
    run_installed(
        target,
        elsewhere,
        str(target / "bin" / "sb-prune"),
        "compress",
        f"--source={tiny_dense_run}",
        "--method=magnitude",
        f"--data={data['train']}",
        f"--valid-csv={data['dev-clean']}",
        f"--test-csv={data['test-clean']}",
        f"--data-root={tiny_corpus}",
        "--epochs=1",
        f"--out={out}",
        "--set=batch_size=4",
        "--set=warmup_steps=1",
    )
    loaded = run_installed(
        target,
        elsewhere,
        "-c",
        "from speechbrain.inference.ASR import EncoderASR; "
        f"asr = EncoderASR.from_hparams(source='{out}/exported', "
        f"savedir='{out}/exported'); "
        "print(sum(p.numel() for p in asr.hparams.model.parameters()))",
    )
    dense = json.loads((tiny_dense_run / "results.json").read_text())
    pruned = json.loads((out / "run" / "results.json").read_text())
    assert int(loaded.split()[-1]) == pruned["params"] < dense["params"]
