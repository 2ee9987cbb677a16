"""The demo: every method on the embedded synthetic corpus, one table.

``sb-prune demo`` runs the LibriSpeech recipes of the repository checkout
on the synthetic corpus (generated on first use and cached) and prints
parameters, test WER/CER and wall time for each run.

Authors
 * sb_prune developers
"""

import json
import subprocess
import sys
import time
from pathlib import Path

RECIPES = Path(__file__).resolve().parents[1] / "recipes" / "LibriSpeech"

#: (name, recipe folder, hparams file, extra overrides) in run order.
RUNS = [
    ("dense", "ASR", "conformer_ctc.yaml", []),
]


def add_arguments(parser):
    """Declare the ``sb-prune demo`` options."""
    parser.add_argument(
        "--output",
        default="results/demo",
        help="folder of the runs and the summary (default: results/demo)",
    )
    parser.add_argument(
        "--only",
        nargs="*",
        default=None,
        help=f"run only these ({', '.join(r[0] for r in RUNS)})",
    )


def run_recipe(folder, hparams, output_folder, extra=()):
    """Run one recipe in a subprocess; return its results.json content.

    Arguments
    ---------
    folder : str
        Recipe folder under ``recipes/LibriSpeech``.
    hparams : str
        Hparams file name inside ``hparams/``.
    output_folder : pathlib.Path
        Where the run writes its results.
    extra : list of str
        More ``--key=value`` overrides.

    Returns
    -------
    dict
        The run's ``results.json``.
    """
    recipe = RECIPES / folder
    command = [
        sys.executable,
        "train.py",
        f"hparams/{hparams}",
        f"--output_folder={output_folder}",
        "--noprogressbar",
        *extra,
    ]
    print(f"$ (cd {recipe} && {' '.join(command[1:])})", flush=True)
    subprocess.run(command, cwd=recipe, check=True)
    return json.loads((output_folder / "results.json").read_text())


def format_table(rows):
    """Render result rows as a fixed-width table.

    Arguments
    ---------
    rows : list of dict
        Each with ``run, params, encoder_params, wer, cer, minutes``.

    Returns
    -------
    str
        The table.

    Example
    -------
    >>> print(format_table([{"run": "dense", "params": 951200,
    ...     "encoder_params": 900000, "wer": 12.3, "cer": 3.21,
    ...     "minutes": 7.5}]))
    run       params  encoder  test WER %  test CER %  minutes
    dense    951,200  900,000       12.30        3.21      7.5
    """
    header = (
        f"{'run':<7}{'params':>9}{'encoder':>9}{'test WER %':>12}"
        f"{'test CER %':>12}{'minutes':>9}"
    )
    lines = [header]
    for row in rows:
        lines.append(
            f"{row['run']:<7}{row['params']:>9,}{row['encoder_params']:>9,}"
            f"{row['wer']:>12.2f}{row['cer']:>12.2f}{row['minutes']:>9.1f}"
        )
    return "\n".join(lines)


def main(args):
    """Run the demo and print its table."""
    if not RECIPES.is_dir():
        raise FileNotFoundError(
            f"The recipes folder {RECIPES} is missing: the demo runs from a "
            "checkout of the sb_prune repository (pip install -e .)"
        )
    output = Path(args.output).resolve()
    output.mkdir(parents=True, exist_ok=True)
    selected = [r for r in RUNS if args.only is None or r[0] in args.only]
    rows = []
    for name, folder, hparams, extra in selected:
        start = time.time()
        results = run_recipe(folder, hparams, output / name, extra)
        test = results["test-clean"]
        rows.append(
            {
                "run": name,
                "params": results["params"],
                "encoder_params": results["encoder_params"],
                "wer": test["WER"],
                "cer": test["CER"],
                "minutes": (time.time() - start) / 60,
            }
        )
    table = format_table(rows)
    (output / "summary.json").write_text(json.dumps(rows, indent=2))
    (output / "summary.txt").write_text(table + "\n")
    print("\n" + table)
