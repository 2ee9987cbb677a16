"""Benchmark federated dropout on Flower: none vs uniform vs importance.

Runs the federated recipe (``recipes/LibriSpeech/federated``) once per
seed: a seed model trained on the server's speakers, its ambient modules
measured, then the same number of Flower rounds from that seed model for
each strategy, clients being the other speakers:

* ``none``: clients train the full model (FedAvg);
* ``uniform``: federated dropout, one rate for every FFN and attention
  module;
* ``importance``: federated dropout targeted at the most ambient modules
  first, at the same client size.

The two dropout strategies run twice, without and with compensation
(``compensate``: sub-models scaled as inverted dropout scales a network,
undone in the merge), from the same seed model.

Figures per strategy and seed: ``client_params`` (mean trainable
parameters of a client's sub-model), ``bytes_per_round`` (Flower messages
both ways, serialised, per round), ``wer``/``cer`` (test set, final
global model), ``dev_wer`` (whole dev set every ``--eval-every`` rounds,
to see whether FedAvg has converged); per strategy, the mean, standard
deviation, minimum and maximum of the test WER over the seeds.

``--quick``: a tiny corpus (generated here), a tiny model, two rounds of
two clients: a smoke test of the whole path; its WERs mean nothing.
Full mode: the recipe's own configuration, 48 rounds, seeds 1 2 3: about
10 minutes a seed on 2 CPU cores (7 with ``--compensation on``) when
nothing else runs; a second torch job on the same cores made it 4-7 times
slower here.

Usage::

    python benchmarks/federated_dropout.py --quick
    python benchmarks/federated_dropout.py \\
        --json benchmarks/results/federated_dropout.json
    python benchmarks/federated_dropout.py --rounds 96 --seeds 1 2 3 4 5
    python benchmarks/federated_dropout.py --compensation on \\
        --strategies importance --set max_rate=0.6
"""

import argparse
import json
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

import yaml
from common import group_rows, provenance, spread, write_json

ROOT = Path(__file__).resolve().parents[1]
RECIPE = ROOT / "recipes" / "LibriSpeech" / "federated"
OUT = ROOT / "benchmarks" / "out"

#: The tiny corpus of --quick (4 training speakers: 2 server, 2 clients).
QUICK_CORPUS = dict(
    train_speakers=4,
    dev_speakers=1,
    test_speakers=1,
    utterances_per_speaker=6,
    seed=20241,
)
#: The recipe's strategies.
STRATEGIES = ("none", "uniform", "importance")
#: --compensation -> (compensate, strategies) of the recipe's runs per seed.
RUNS = {
    "both": (
        (False, ["none", "uniform", "importance"]),
        (True, ["uniform", "importance"]),
    ),
    "on": ((True, ["none", "uniform", "importance"]),),
    "off": ((False, ["none", "uniform", "importance"]),),
}
#: What each row keeps of the recipe's results.
ROW_KEYS = (
    "strategy",
    "compensate",
    "client_params",
    "client_params_fraction",
    "bytes_per_round",
    "bytes_down_per_round",
    "bytes_up_per_round",
    "wer",
    "cer",
    "dev_wer",
)


def recipe_command(output, quick, seed, compensate, strategies, args):
    """The federated recipe's command line."""
    command = [
        sys.executable,
        "federated.py",
        "hparams/federated_dropout.yaml",
        f"--output_folder={output}",
        f"--seed={seed}",
        f"--compensate={compensate}",
        f"--strategies=[{', '.join(strategies)}]",
        "--noprogressbar",
        *(f"--{setting}" for setting in args.set),
    ]
    if quick:
        overrides = yaml.safe_load(
            (RECIPE / "hparams" / "quick_overrides.yaml").read_text()
        )
        command += [f"--{key}={value}" for key, value in overrides.items()]
        corpus = ", ".join(f"{k}: {v}" for k, v in QUICK_CORPUS.items())
        command += [
            f"--synthetic_folder={OUT / 'federated_quick' / 'corpus'}",
            f"--synthetic_corpus={{{corpus}}}",
        ]
    else:
        command += [
            f"--num_rounds={args.rounds}",
            f"--eval_every={args.eval_every}",
            "--eval_batches=null",
        ]
    return command


def label(row):
    """A strategy's name in the tables."""
    compensated = row["compensate"] and row["strategy"] != "none"
    return row["strategy"] + (" + compensation" if compensated else "")


def summarise(rows):
    """Test WER over the seeds, per strategy: mean, sd, min, max.

    Arguments
    ---------
    rows : list of dict
        One per strategy and seed.

    Returns
    -------
    list of dict
        One per strategy, in the order first seen.

    Example
    -------
    >>> rows = [{"strategy": "none", "compensate": False, "wer": w,
    ...          "client_params": 10, "bytes_per_round": 5}
    ...         for w in (30.0, 34.0)]
    >>> summary = summarise(rows)[0]
    >>> summary["strategy"], summary["wer"]["mean"], summary["wer"]["seeds"]
    ('none', 32.0, 2)
    """
    groups = group_rows(rows, label)
    summary = []
    for name, group in groups.items():
        summary.append(
            {
                "strategy": name,
                "client_params": round(
                    statistics.mean(row["client_params"] for row in group)
                ),
                "bytes_per_round": round(
                    statistics.mean(row["bytes_per_round"] for row in group)
                ),
                "wer": spread([row["wer"] for row in group]),
            }
        )
    return summary


def print_table(figures):
    """Print the comparison table."""
    full = figures["full_params"]
    print(
        f"{'strategy':<28}{'client params':>14}{'vs full':>9}"
        f"{'bytes/round':>13}{'WER mean':>10}{'sd':>6}{'min':>7}{'max':>7}"
    )
    for row in figures["summary"]:
        change = row["client_params"] / full - 1
        print(
            f"{row['strategy']:<28}{row['client_params']:>14,}"
            f"{change:>+9.1%}{row['bytes_per_round']:>13,}"
            f"{row['wer']['mean']:>10.2f}{row['wer']['sd']:>6.2f}"
            f"{row['wer']['min']:>7.2f}{row['wer']['max']:>7.2f}"
        )
    seeds = ", ".join(
        f"{seed}: {wer:.2f}" for seed, wer in figures["seed_model_wer"].items()
    )
    print(
        f"full model {full:,} parameters; {figures['clients']} clients; "
        f"{figures['rounds']} rounds; seed models' WER ({seeds})"
    )


def main(argv=None):
    """Run the benchmark, print the table, optionally write the JSON."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--json", type=Path)
    parser.add_argument(
        "--output",
        type=Path,
        help="the recipe's output folders' parent (default: benchmarks/out)",
    )
    parser.add_argument("--rounds", type=int, default=48, help="Flower rounds")
    parser.add_argument(
        "--eval-every",
        type=int,
        default=12,
        help="rounds between dev-set evaluations of the global model",
    )
    parser.add_argument(
        "--compensation",
        choices=sorted(RUNS),
        default="both",
        help="dropout strategies with compensation, without, or both",
    )
    parser.add_argument(
        "--seeds",
        type=int,
        nargs="+",
        default=[1, 2, 3],
        help="one recipe run (seed model, then every strategy) per seed",
    )
    parser.add_argument(
        "--strategies",
        nargs="+",
        choices=STRATEGIES,
        default=list(STRATEGIES),
        help="the strategies to run (of each --compensation run)",
    )
    parser.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="a recipe override for every run, e.g. max_rate=0.6",
    )
    args = parser.parse_args(argv)
    for setting in args.set:
        if "=" not in setting:
            parser.error(f"--set expects KEY=VALUE, got {setting!r}")
    name = "federated_quick" if args.quick else "federated_full"
    parent = (args.output or OUT / name).resolve()
    start, ran_on = time.time(), provenance()
    rows, seed_wer, results = [], {}, None
    for seed in args.seeds:
        output = parent / f"seed{seed}"
        if args.quick:
            shutil.rmtree(output, ignore_errors=True)
        for compensate, strategies in RUNS[args.compensation]:
            strategies = [s for s in strategies if s in args.strategies]
            if not strategies:
                continue
            subprocess.run(
                recipe_command(
                    output, args.quick, seed, compensate, strategies, args
                ),
                cwd=RECIPE,
                check=True,
                stdout=subprocess.DEVNULL if args.quick else None,
            )
            results = json.loads((output / "results.json").read_text())
            rows += [
                {"seed": seed, **{key: row[key] for key in ROW_KEYS}}
                for row in results["rows"]
            ]
        seed_wer[seed] = results["seed_model"]["wer"]
    figures = {
        "mode": "quick" if args.quick else "full",
        **ran_on,
        "seconds": round(time.time() - start, 1),
        "full_params": results["full_params"],
        "clients": results["clients"],
        "rounds": results["rounds"],
        "seeds": args.seeds,
        "compensation": args.compensation,
        "settings": args.set,
        "seed_model_wer": seed_wer,
        "summary": summarise(rows),
        "rows": rows,
    }
    print_table(figures)
    print(f"({figures['seconds']} s)")
    if args.json:
        write_json(args.json, figures)
    return figures


if __name__ == "__main__":
    main()
