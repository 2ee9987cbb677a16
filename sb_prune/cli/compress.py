"""``sb-prune compress``: prune a trained dense model, export the result.

``sb-prune compress --source MODEL --method METHOD --data DATA`` runs
:func:`sb_prune.compress` (:mod:`sb_prune.asr.compress`) in process: the
ASR recipe's hparams file of the method, from the source's trained weights
(``init_from``), with the source's architecture and tokenizer, on the given
data, then exports the result as a SpeechBrain pretrained-model folder::

    sb-prune compress --source exported_dense/ --method adaptive-dropout
        --data /data/LibriSpeech --epochs 10 --out compressed/

The source is a folder written by ``sb-prune export`` or a run folder of
``recipes/LibriSpeech/ASR``; it must be dense. An installed wheel is
enough: the recipe's hparams files ship with it.

Authors
 * sb_prune developers
"""

import json

from sb_prune.asr.compress import compress
from sb_prune.methods.table import compressions


def add_arguments(parser):
    """Declare the ``sb-prune compress`` options."""
    parser.add_argument("--source", required=True, help="dense model folder")
    parser.add_argument(
        "--method", required=True, help=f"one of {', '.join(compressions())}"
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
