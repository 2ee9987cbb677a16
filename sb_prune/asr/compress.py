"""Compress a trained dense model with a method, in process.

:func:`compress` (also ``sb_prune.compress``, and the command line ``sb-prune
compress``) runs the ASR recipe's hparams file of the method (named by the
method table, :mod:`sb_prune.methods.table`) with :func:`sb_prune.asr.
recipe.main`: the model is rebuilt with the source's architecture, starts
from its trained weights, feature statistics and tokenizer (``init_from``),
is converted and pruned by the method while it is fine-tuned on the given
data, then tested and exported as a SpeechBrain pretrained-model folder.
The recipe's hparams files ship with the wheel (``setup.py`` maps
``recipes/LibriSpeech/ASR/hparams`` to ``sb_prune/asr/recipe_hparams``),
so no checkout is needed::

    import sb_prune
    sb_prune.compress("exported_dense/", "taylor", "/data/LibriSpeech",
                      "compressed/", epochs=4)

Authors
 * sb_prune developers
"""

import contextlib
import json
import logging
from pathlib import Path

from sb_prune.asr.recipe import main as run_recipe
from sb_prune.deploy.pretrained import export_pretrained
from sb_prune.methods.table import compressions

_PACKAGED = Path(__file__).resolve().parent / "recipe_hparams"
#: The ASR recipe's hparams files: in the wheel, else in the checkout.
RECIPE_HPARAMS = (
    _PACKAGED
    if _PACKAGED.is_dir()
    else _PACKAGED.parents[2] / "recipes" / "LibriSpeech" / "ASR" / "hparams"
)

#: Overrides for a short fine-tuning (a few epochs on a subset of the
#: training set, as ``sb-prune demo`` runs the methods) instead of the
#: recipe's schedule, which warms up and averages checkpoints as for
#: training from scratch.
SHORT_FINE_TUNING = {"lr": 0.001, "warmup_steps": 10, "avg_checkpoints": 1}

#: The keys of the ASR recipe that define its architecture, read from the
#: source so the compressed model has the same one.
ARCHITECTURE_KEYS = (
    "sample_rate",
    "n_mels",
    "blank_index",
    "d_model",
    "frame_stack",
    "output_neurons",
    "nhead",
    "num_encoder_layers",
    "d_ffn",
    "conv_kernel_size",
    "token_type",
)


def _architecture(source):
    """Read the architecture keys of a source's hyperparams.yaml."""
    import yaml

    path = Path(source) / "hyperparams.yaml"
    if not path.is_file():
        raise FileNotFoundError(
            f"--source {source} is neither a recipe run folder nor an "
            f"exported model: {path} is missing"
        )
    values = {}
    with open(path, encoding="utf-8") as handle:
        for line in handle:
            key, _, value = line.partition(":")
            if key in ARCHITECTURE_KEYS and value.strip():
                values[key] = yaml.safe_load(value)
    missing = sorted(set(ARCHITECTURE_KEYS) - set(values))
    if missing:
        raise ValueError(f"--source {source}: no {missing} in {path}")
    return values


def _data_overrides(data, valid_csv, test_csv, data_root):
    """Recipe overrides for a LibriSpeech folder or CSV manifests."""
    data = Path(data)
    if data.is_dir():
        return {"data_folder": data}
    if data.suffix != ".csv" or not data.is_file():
        raise FileNotFoundError(
            f"--data {data} is neither a LibriSpeech-format folder nor a CSV "
            "file"
        )
    if valid_csv is None:
        raise ValueError("--data is a CSV file: give --valid-csv too")
    return {
        "data_folder": data_root or data.parent,
        "skip_prep": True,
        "train_csv": data,
        "valid_csv": valid_csv,
        "test_csv": f"[{test_csv or valid_csv}]",
    }


@contextlib.contextmanager
def _callers_logging():
    """Give the root logger back as it was once the run is over.

    SpeechBrain points it at the run's ``log.txt`` and the console; a
    caller that compresses several times in one process (``sb-prune
    demo``, benchmarks, tests) keeps its own logging.
    """
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    try:
        yield
    finally:
        for handler in root.handlers:
            if handler not in handlers:
                handler.close()
        root.handlers[:] = handlers
        root.setLevel(level)


def compress(
    source,
    method,
    data,
    out,
    epochs,
    valid_csv=None,
    test_csv=None,
    overrides=None,
    data_root=None,
):
    """Prune a dense model with a method and export the result.

    Arguments
    ---------
    source : str
        A dense exported folder (``sb-prune export``) or ASR recipe run
        folder.
    method : str
        An ``sb-prune compress`` method of the method table
        (:func:`sb_prune.methods.table.compressions`), e.g. ``taylor``.
    data : str
        A LibriSpeech-format folder, or a training CSV (with
        ``valid_csv``).
    out : str
        Output folder: ``run/`` (the recipe run) and ``exported/``.
    epochs : int
        Epochs of pruning and fine-tuning.
    valid_csv, test_csv : str, optional
        Manifests when ``data`` is a CSV.
    overrides : dict, optional
        More recipe overrides (``--set KEY=VALUE``), applied last; values
        are read as YAML, as on the recipe's command line.
    data_root : str, optional
        What ``$data_root`` in the CSV files stands for (default: the
        training CSV's folder).

    Returns
    -------
    dict
        ``results``: the run's ``results.json``; ``export``: the export
        summary.

    Example
    -------
    >>> compress("dense/", "pruning-by-wishes", "data/", "out/", 2)
    Traceback (most recent call last):
    ...
    ValueError: --method 'pruning-by-wishes' is unknown; choose from [...]
    """
    known = compressions()
    if method not in known:
        raise ValueError(
            f"--method {method!r} is unknown; choose from {sorted(known)}"
        )
    if epochs < 1:
        raise ValueError(f"--epochs must be >= 1, got {epochs}")
    compression = known[method]
    out = Path(out).resolve()
    run = out / "run"
    overrides = {
        **_architecture(source),
        **_data_overrides(data, valid_csv, test_csv, data_root),
        **compression.settings(epochs),
        "init_from": Path(source).resolve(),
        "number_of_epochs": epochs,
        "output_folder": run,
        **(overrides or {}),
    }
    with _callers_logging():
        run_recipe(
            [
                str(RECIPE_HPARAMS / compression.recipe),
                "--noprogressbar",
                *(f"--{key}={value}" for key, value in overrides.items()),
            ]
        )
    results = json.loads((run / "results.json").read_text())
    exported = export_pretrained(run, out / "exported")
    return {"results": results, "export": exported}
