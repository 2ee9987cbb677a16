"""Benchmark federated dropout on Flower: none vs uniform vs importance.

Runs the federated recipe (``recipes/LibriSpeech/federated``) once: a seed
model trained on the server's speakers, its ambient modules measured,
then the same number of Flower rounds from that seed model for each
strategy, clients being the other speakers:

* ``none``: clients train the full model (FedAvg);
* ``uniform``: federated dropout, one rate for every FFN and attention
  module;
* ``importance``: federated dropout targeted at the most ambient modules
  first, at the same client size.

Figures per strategy: ``client_params`` (mean trainable parameters of a
client's sub-model), ``bytes_per_round`` (Flower messages both ways,
serialised, per round), ``wer``/``cer`` (test set, final global model).

``--quick``: a tiny corpus (generated here), a tiny model, two rounds of
two clients: a smoke test of the whole path; its WERs mean nothing.
Full mode: the recipe's own configuration (12 rounds: about 4 minutes on 2
CPU cores when the machine is otherwise idle; ``--rounds`` changes it).

Usage::

    python benchmarks/federated_dropout.py --quick
    python benchmarks/federated_dropout.py --json benchmarks/out/fd.json
    python benchmarks/federated_dropout.py --rounds 48 --json ...
"""

import argparse
import json
import shutil
import subprocess
import sys
import time
from pathlib import Path

import yaml

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


def recipe_command(output, quick, rounds=None):
    """The federated recipe's command line."""
    command = [
        sys.executable,
        "federated.py",
        "hparams/federated_dropout.yaml",
        f"--output_folder={output}",
        "--noprogressbar",
    ]
    if rounds is not None:
        command.append(f"--num_rounds={rounds}")
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
    return command


def print_table(results):
    """Print the comparison table."""
    full = results["full_params"]
    print(
        f"{'strategy':<12}{'client params':>14}{'vs full':>9}"
        f"{'bytes/round':>13}{'WER %':>8}{'CER %':>8}"
    )
    for row in results["rows"]:
        change = row["client_params"] / full - 1
        print(
            f"{row['strategy']:<12}{row['client_params']:>14,}"
            f"{change:>+9.1%}{row['bytes_per_round']:>13,}"
            f"{row['wer']:>8.2f}{row['cer']:>8.2f}"
        )
    print(
        f"full model {full:,} parameters; {results['clients']} clients; "
        f"{results['rounds']} rounds; seed model WER "
        f"{results['seed_model']['wer']:.2f}"
    )


def main(argv=None):
    """Run the benchmark, print the table, optionally write the JSON."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--json", type=Path)
    parser.add_argument(
        "--output",
        type=Path,
        help="the recipe's output folder (default: benchmarks/out/...)",
    )
    parser.add_argument(
        "--rounds", type=int, help="Flower rounds (default: the recipe's)"
    )
    args = parser.parse_args(argv)
    name = "federated_quick" if args.quick else "federated_full"
    output = (args.output or OUT / name / "run").resolve()
    if args.quick:
        shutil.rmtree(output, ignore_errors=True)
    start = time.time()
    subprocess.run(
        recipe_command(output, args.quick, args.rounds),
        cwd=RECIPE,
        check=True,
        stdout=subprocess.DEVNULL if args.quick else None,
    )
    results = json.loads((output / "results.json").read_text())
    figures = {
        "mode": "quick" if args.quick else "full",
        "seconds": round(time.time() - start, 1),
        "full_params": results["full_params"],
        "clients": results["clients"],
        "rounds": results["rounds"],
        "seed_model": results["seed_model"],
        "rows": [
            {
                key: row[key]
                for key in (
                    "strategy",
                    "client_params",
                    "client_params_fraction",
                    "bytes_per_round",
                    "bytes_down_per_round",
                    "bytes_up_per_round",
                    "wer",
                    "cer",
                    "dev_wer",
                )
            }
            for row in results["rows"]
        ],
    }
    print_table(results)
    print(f"({figures['seconds']} s)")
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(figures, indent=1))
    return figures


if __name__ == "__main__":
    main()
