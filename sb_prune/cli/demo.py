"""The demo: every method on the embedded synthetic corpus, one report.

``sb-prune demo`` runs the repository's recipes, so it needs a checkout
(an installed wheel has no ``recipes/``; it says so), on the synthetic
corpus (generated on first use and cached):

1. the dense CTC Conformer recipe (``recipes/LibriSpeech/ASR``, its
   ``train.py`` in a subprocess), trained from scratch, then exported as a
   SpeechBrain pretrained-model folder;
2. every compression method on that trained model with
   :func:`sb_prune.compress`, in process as ``sb-prune compress`` runs it
   (short fine-tuning on a subset of the training set, or, for adaptive
   dropout, the whole training set), each ending in its own exported
   folder;
3. ``sb-prune report`` over all runs (REPORT.md, Pareto plots, the
   methods' own plots);

and prints parameters, test WER/CER and wall time per run (MACs, latency
and speed-ups are in REPORT.md).

Authors
 * sb_prune developers
"""

import csv
import json
import random
import subprocess
import sys
import time
from pathlib import Path

from sb_prune.cli.recipes import RECIPES, recipes_folder

#: (name, ``sb-prune compress`` method, epochs, recipe overrides), in run
#: order, each applied to the trained dense model. Overrides None: as a
#: user runs ``sb-prune compress`` (the whole training set, the method's
#: defaults for a trained model); otherwise a short fine-tuning on a subset
#: (FINE_TUNING_UTTERANCES, ``sb_prune.asr.compress.SHORT_FINE_TUNING``)
#: with these overrides.
METHOD_RUNS = [
    # Adaptive dropout needs the steps: on the subset it removed 44-68% of
    # the encoder at test WER 9.2-14.1, on the whole set 61% at about the
    # dense WER (benchmarks/results/ad_compress_*.json).
    ("adaptive_dropout", "adaptive-dropout", 6, None),
    ("taylor", "taylor", 2, {"sparsity": 0.5}),
    ("low_rank", "low-rank", 2, {"compression": 0.5}),
    ("i3d_local", "i3d-local", 2, {}),
]

#: Analyses of the trained dense model: (name, recipe folder, script,
#: hparams file, overrides); ``{dense}`` stands for the dense run folder.
ANALYSIS_RUNS = [
    (
        "convexity_cut",
        "classification",
        "train.py",
        "classify.yaml",
        {
            "pretrained_folder": "{dense}",
            "task": "speaker",
            "cut_rule": "peak",
            "number_of_epochs": 1,
            "convexity_max_per_class": 30,
        },
    ),
    (
        "ambient_layers",
        "ambient",
        "ambient.py",
        "conformer_ctc_importance.yaml",
        {"number_of_epochs": 3, "heatmap_epochs": "[1, 3]"},
    ),
    (
        "federated_dropout",
        "federated",
        "federated.py",
        "federated_dropout.yaml",
        {"num_rounds": 2, "clients_per_round": 4, "seed_epochs": 3},
    ),
]

#: Training and validation utterances of each method's fine-tuning (the
#: test set stays whole).
FINE_TUNING_UTTERANCES = 800
VALIDATION_UTTERANCES = 200


def add_arguments(parser):
    """Declare the ``sb-prune demo`` options."""
    parser.add_argument(
        "--output",
        default="results/demo",
        help="folder of the runs and the report (default: results/demo)",
    )
    for option, runs in (("methods", METHOD_RUNS), ("analyses", ANALYSIS_RUNS)):
        names = [run[0] for run in runs]
        parser.add_argument(
            f"--{option}",
            nargs="*",
            default=names,
            help=f"{option} to run (default: all of {', '.join(names)})",
        )


def run_recipe(folder, hparams, output_folder, extra=(), script="train.py"):
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
    script : str
        The recipe script.

    Returns
    -------
    dict
        The run's ``results.json``.
    """
    recipe = RECIPES / folder
    command = [
        sys.executable,
        script,
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
    run       params    encoder  test WER %  test CER %  minutes
    dense    951,200    900,000       12.30        3.21      7.5
    """
    width = max(len(row["run"]) for row in rows) + 2
    lines = [
        f"{'run':<{width}}{'params':>9}{'encoder':>11}{'test WER %':>12}"
        f"{'test CER %':>12}{'minutes':>9}"
    ]
    for row in rows:
        lines.append(
            f"{row['run']:<{width}}{row['params']:>9,}"
            f"{row['encoder_params']:>11,}{row['wer']:>12.2f}"
            f"{row['cer']:>12.2f}{row['minutes']:>9.1f}"
        )
    return "\n".join(lines)


def subset_csv(source, target, count, seed=1234):
    """Write a random subset of a CSV manifest, in the source's order.

    Arguments
    ---------
    source : pathlib.Path
        A recipe CSV file.
    target : pathlib.Path
        Where to write the subset.
    count : int
        Rows to keep (all if the source has fewer).
    seed : int
        The sampling seed.

    Returns
    -------
    pathlib.Path
        ``target``.
    """
    with open(source, encoding="utf-8") as handle:
        reader = csv.DictReader(handle)
        rows, fields = list(reader), reader.fieldnames
    keep = sorted(
        random.Random(seed).sample(range(len(rows)), min(count, len(rows)))
    )
    with open(target, "w", encoding="utf-8", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=fields)
        writer.writeheader()
        writer.writerows(rows[i] for i in keep)
    return target


def _row(name, results, minutes):
    test = results["test-clean"]
    return {
        "run": name,
        "params": results["params"],
        "encoder_params": results["encoder_params"],
        "wer": test["WER"],
        "cer": test["CER"],
        "minutes": minutes,
    }


def main(args):
    """Run the demo, print its table and write the report."""
    from sb_prune.asr.compress import SHORT_FINE_TUNING, compress
    from sb_prune.deploy.pretrained import export_pretrained
    from sb_prune.reporting.render import render_report

    recipes_folder("demo")
    for option, known in (
        ("methods", METHOD_RUNS),
        ("analyses", ANALYSIS_RUNS),
    ):
        unknown = sorted(set(getattr(args, option)) - {r[0] for r in known})
        if unknown:
            raise ValueError(f"--{option}: unknown {unknown}")
    output = Path(args.output).resolve()
    runs = output / "runs"
    runs.mkdir(parents=True, exist_ok=True)
    start = time.time()
    dense = runs / "dense"
    rows = [_row("dense", run_recipe("ASR", "conformer_ctc.yaml", dense), 0)]
    rows[0]["minutes"] = (time.time() - start) / 60
    exported = export_pretrained(dense, output / "exported" / "dense")
    data_folder = json.loads((dense / "librispeech_prepare.json").read_text())
    finetune = subset_csv(
        dense / "train.csv", output / "finetune.csv", FINE_TUNING_UTTERANCES
    )
    validation = subset_csv(
        dense / "dev-clean.csv",
        output / "validation.csv",
        VALIDATION_UTTERANCES,
    )
    for name, method, epochs, overrides in METHOD_RUNS:
        if name not in args.methods:
            continue
        began = time.time()
        whole = overrides is None
        summary = compress(
            output / "exported" / "dense",
            method,
            dense / "train.csv" if whole else finetune,
            runs / name,
            epochs,
            valid_csv=validation,
            test_csv=dense / "test-clean.csv",
            overrides=None if whole else {**SHORT_FINE_TUNING, **overrides},
            data_root=data_folder["data_folder"],
        )
        rows.append(_row(name, summary["results"], (time.time() - began) / 60))
    for name, folder, script, hparams, overrides in ANALYSIS_RUNS:
        if name not in args.analyses:
            continue
        began = time.time()
        values = {k: str(v).format(dense=dense) for k, v in overrides.items()}
        target = Path(values.pop("output_folder", runs / name))
        extra = [f"--{key}={value}" for key, value in values.items()]
        run_recipe(folder, hparams, target, extra, script)
        print(f"[{name}] {(time.time() - began) / 60:.1f} minutes")
    report = render_report(runs, out=output)
    table = format_table(rows)
    (output / "summary.json").write_text(json.dumps(rows, indent=2))
    (output / "summary.txt").write_text(table + "\n")
    print("\n" + table)
    print(f"\nDense model exported to {exported['folder']}; report: {report}")
    print(f"Total: {(time.time() - start) / 60:.1f} minutes")
