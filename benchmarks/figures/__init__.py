"""The README's figure blocks, each rendered from the committed results
files ``benchmarks/results/*.json``.

A README marks a block with ``<!-- figures:NAME -->`` and
``<!-- /figures:NAME -->``; ``BLOCKS[NAME](results)`` writes what goes
between them, ``results`` being every results file by name (its stem).

Authors
 * sb_prune developers
"""

import json
from pathlib import Path

from . import (
    adaptive_dropout,
    federated,
    i3d,
    schedules,
    speed,
    whisper,
    whisper_accuracy,
    whisper_runtime,
)

RESULTS = Path(__file__).resolve().parents[1] / "results"

BLOCKS = {
    "whisper_dense": whisper.dense,
    "whisper_compress": whisper.compress,
    "whisper_recipe": whisper.recipe,
    "whisper_accuracy": whisper_accuracy.main,
    "whisper_accuracy_decoder": whisper_accuracy.decoder,
    "whisper_runtime": whisper_runtime.main,
    "speed_cpu": speed.cpu,
    "ad_compress": adaptive_dropout.compress,
    "ad_from_scratch": adaptive_dropout.from_scratch,
    "federated": federated.main,
    "federated_recipe": federated.recipe,
    "schedules": schedules.main,
    "i3d_demo_path": i3d.demo_path,
    "i3d_whole_set": i3d.whole_set,
}


def load_results(folder=RESULTS):
    """Every ``*.json`` of ``folder``, by file stem."""
    return {
        path.stem: json.loads(path.read_text())
        for path in sorted(Path(folder).glob("*.json"))
    }
