"""Compress an existing model without writing a recipe.

``sb-prune compress --source MODEL --method METHOD --data DATA`` starts the
repository's ASR recipe for the method from the source's trained weights
(``init_from``), with the source's architecture and tokenizer, on the given
data, and exports the result as a SpeechBrain pretrained-model folder::

    sb-prune compress --source exported_dense/ --method adaptive-dropout
        --data /data/LibriSpeech --epochs 10 --out compressed/

The source is a folder written by ``sb-prune export`` or a run folder of
``recipes/LibriSpeech/ASR``; it must be dense.

Authors
 * sb_prune developers
"""

import json
import subprocess
import sys
from pathlib import Path

from sb_prune.cli.recipes import recipes_folder
from sb_prune.deploy.pretrained import export_pretrained

#: The keys of recipes/LibriSpeech/ASR that define its architecture, read
#: from the source so the compressed model has the same one.
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

#: Adaptive dropout from a trained model (the recipe's defaults are the
#: paper's, from scratch): retention starts at 0.6 and moves fast, and a
#: weak regulariser lets the task keep what it needs. Chosen on the
#: validation set, the demo's dense model, 6 epochs on the whole synthetic
#: training set (benchmarks/results/ad_compress_whole_set.json): 60.5%
#: fewer encoder parameters at test WER 5.81 +- 0.15 (3 seeds) against the
#: dense 6.16; weight 3e-5 removed 73% at 7.27. Fewer steps or a lower
#: learning rate need a stronger regulariser.
ADAPTIVE_DROPOUT_FROM_TRAINED = {
    "adl_init_retention": 0.6,
    "adl_logit_scale": 30.0,
    "adl_regularization_weight": 0.00001,
}

#: method -> (ASR recipe hparams file, overrides)
METHODS = {
    "adaptive-dropout": (
        "conformer_ctc_adaptive_dropout.yaml",
        ADAPTIVE_DROPOUT_FROM_TRAINED,
    ),
    "magnitude": ("conformer_ctc_criteria.yaml", {"criterion": "magnitude"}),
    "taylor": ("conformer_ctc_criteria.yaml", {"criterion": "taylor"}),
    "activation": ("conformer_ctc_criteria.yaml", {"criterion": "activation"}),
    "wanda": ("conformer_ctc_criteria.yaml", {"criterion": "wanda"}),
    "low-rank": ("conformer_ctc_low_rank.yaml", {}),
    "layer-pruning": ("conformer_ctc_static_layer_pruning.yaml", {}),
    "i3d-local": ("conformer_ctc_i3d_local.yaml", {}),
    "i3d-global": ("conformer_ctc_i3d_global.yaml", {}),
}


def schedule_overrides(hparams, epochs):
    """Start a method's pruning schedule at once, for a trained model.

    A trained model needs no pre-training before pruning: the schedule
    starts after the first epoch and spreads its steps over the first half
    of the budget, leaving the rest for fine-tuning.

    Arguments
    ---------
    hparams : str
        The method's recipe hparams file.
    epochs : int
        The epoch budget.

    Returns
    -------
    dict
        Recipe overrides.

    Example
    -------
    >>> schedule_overrides("conformer_ctc_criteria.yaml", 6)
    {'prune_start_epoch': 1, 'prune_steps': 3}
    >>> schedule_overrides("conformer_ctc_low_rank.yaml", 2)
    {'prune_start_epoch': 1, 'prune_steps': 1, 'prune_every': 1}
    """
    steps = max(1, epochs // 2)
    if hparams == "conformer_ctc_criteria.yaml":
        return {"prune_start_epoch": 1, "prune_steps": steps}
    if hparams == "conformer_ctc_low_rank.yaml":
        return {"prune_start_epoch": 1, "prune_steps": steps, "prune_every": 1}
    if hparams == "conformer_ctc_static_layer_pruning.yaml":
        return {"static_start_epoch": 1}
    return {}


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
        A dense exported folder or ASR recipe run folder.
    method : str
        One of :data:`METHODS`.
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
        More recipe overrides (``--set KEY=VALUE``), applied last.
    data_root : str, optional
        What ``$data_root`` in the CSV files stands for (default: the
        training CSV's folder).

    Returns
    -------
    dict
        The run's results and the export summary.
    """
    if method not in METHODS:
        raise ValueError(
            f"--method {method!r} is unknown; choose from {sorted(METHODS)}"
        )
    if epochs < 1:
        raise ValueError(f"--epochs must be >= 1, got {epochs}")
    hparams, method_overrides = METHODS[method]
    out = Path(out).resolve()
    run = out / "run"
    overrides = {
        **_architecture(source),
        **_data_overrides(data, valid_csv, test_csv, data_root),
        **method_overrides,
        **schedule_overrides(hparams, epochs),
        "init_from": Path(source).resolve(),
        "number_of_epochs": epochs,
        "output_folder": run,
        **(overrides or {}),
    }
    command = [
        sys.executable,
        "train.py",
        f"hparams/{hparams}",
        "--noprogressbar",
        *(f"--{key}={value}" for key, value in overrides.items()),
    ]
    finished = subprocess.run(command, cwd=recipes_folder("compress") / "ASR")
    if finished.returncode:
        raise ChildProcessError(
            f"the recipe hparams/{hparams} failed (exit "
            f"{finished.returncode}); see its output above and {run}/log.txt"
        )
    results = json.loads((run / "results.json").read_text())
    exported = export_pretrained(run, out / "exported")
    return {"results": results, "export": exported}


def add_arguments(parser):
    """Declare the ``sb-prune compress`` options."""
    parser.add_argument("--source", required=True, help="dense model folder")
    parser.add_argument(
        "--method", required=True, help=f"one of {', '.join(METHODS)}"
    )
    parser.add_argument(
        "--data", required=True, help="LibriSpeech-format folder or CSV"
    )
    parser.add_argument("--valid-csv", help="validation CSV (CSV --data)")
    parser.add_argument("--test-csv", help="test CSV (CSV --data)")
    parser.add_argument(
        "--data-root",
        help="what $data_root stands for in the CSV files (CSV --data; "
        "default: the training CSV's folder)",
    )
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument("--out", default="compressed", help="output folder")
    parser.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override a recipe hparam (repeatable), e.g. --set lr=0.001",
    )


def parse_settings(settings):
    """Parse ``--set KEY=VALUE`` options into overrides.

    Arguments
    ---------
    settings : list of str
        The ``KEY=VALUE`` strings.

    Returns
    -------
    dict
        Key to value (a string; the recipe parses it as YAML).

    Example
    -------
    >>> parse_settings(["lr=0.001", "adl_points=[ffn]"])
    {'lr': '0.001', 'adl_points': '[ffn]'}
    >>> parse_settings(["lr"])
    Traceback (most recent call last):
    ...
    ValueError: --set lr: expected KEY=VALUE
    """
    overrides = {}
    for setting in settings:
        key, sep, value = setting.partition("=")
        if not sep or not key:
            raise ValueError(f"--set {setting}: expected KEY=VALUE")
        overrides[key] = value
    return overrides


def main(args):
    """Compress and print the summary."""
    summary = compress(
        args.source,
        args.method,
        args.data,
        args.out,
        args.epochs,
        args.valid_csv,
        args.test_csv,
        parse_settings(args.set),
        args.data_root,
    )
    print(json.dumps(summary, indent=2))
