#!/usr/bin/env python3
"""One-shot vs incremental structured pruning at a stated training budget.

Emili et al. (2023) find incremental pruning more accurate than one-shot,
especially at small sizes. Whether it is depends on the training each
schedule gets, so this benchmark spells the budget out, with the
repository's recipes (``criteria_lowrank.py``'s runs), for each target
sparsity of the FFN hidden units and attention heads and each seed:

* ``one_shot``: one cut, then the rest of the ``budget`` epochs;
* ``incremental``: three cuts (cubic ramp) at the ends of consecutive
  epochs in the same ``budget`` epochs (equal compute);
* ``incremental_longer``: the same three cuts followed by as many epochs
  as one-shot has after its cut: ``budget + 2`` epochs in all (more
  compute: the budget under which gradual pruning is usually reported).

ASR: from the ASR recipe's dense model (trained once), ``sb_prune.compress``
with the criteria recipe and the demo's short fine-tuning, cuts from the
end of epoch 1. LM: the LM recipe's one-shot and incremental files from
scratch, cuts from the end of epoch 2. Every run's learning rate decays
linearly to zero over its own epochs. Quality: ASR test WER (greedy CTC),
LM test perplexity per token; mean and spread over the seeds.

Usage::

    python benchmarks/schedules.py --quick
    python benchmarks/schedules.py --budgets 4 8 --seeds 1 2 3 \\
        --json benchmarks/results/schedules.json
"""

import argparse
import json
import time
from pathlib import Path

import torch
from common import REPO, group_rows, provenance, spread, write_json
from criteria_lowrank import PRESETS, LMRecipe, compress_asr, dense_asr

#: schedule -> (pruning steps, the criteria recipe of the LM, epochs
#: given a budget).
SCHEDULES = {
    "one_shot": (1, "transformer_lm_one_shot.yaml", lambda b: b),
    "incremental": (3, "transformer_lm_incremental.yaml", lambda b: b),
    "incremental_longer": (
        3,
        "transformer_lm_incremental.yaml",
        lambda b: b + 2,
    ),
}


def compare(part, preset, out_dir, targets, budgets, seeds, criterion, log):
    """Every schedule, target, budget and seed; the dense row first."""
    if part == "asr":
        corpus, dense_run = dense_asr(preset, out_dir, log)
        dense = json.loads((dense_run / "results.json").read_text())
        quality = dense["test-clean"]["WER"]
    else:
        recipe = LMRecipe(preset, out_dir)
        epochs = SCHEDULES["incremental_longer"][2](max(budgets))
        _, results = recipe.run(
            "transformer_lm.yaml", "dense", number_of_epochs=epochs
        )
        quality = results["ppl"]
    rows = [{"schedule": "dense", "quality": quality}]
    for budget in budgets:
        for target in targets:
            for name, (steps, lm_hparams, epochs) in SCHEDULES.items():
                for seed in seeds:
                    tag = f"{name}_b{budget}_t{target}_s{seed}"
                    if part == "asr":
                        results = compress_asr(
                            preset,
                            corpus,
                            dense_run,
                            criterion,
                            out_dir / "asr" / tag,
                            epochs(budget),
                            sparsity=target,
                            prune_steps=steps,
                            seed=seed,
                        )
                        quality = results["wer"]
                    else:
                        _, results = recipe.run(
                            lm_hparams,
                            tag,
                            number_of_epochs=epochs(budget),
                            criterion=criterion,
                            sparsity=target,
                            seed=seed,
                        )
                        quality = results["ppl"]
                    row = {
                        "budget": budget,
                        "target": target,
                        "schedule": name,
                        "epochs": epochs(budget),
                        "seed": seed,
                        "params": results["params"],
                        "quality": quality,
                    }
                    rows.append(row)
                    log(row)
    return rows


def summarise(rows, budgets, targets):
    """Per budget and target: each schedule's quality over the seeds."""
    groups = group_rows(
        rows, lambda r: (r.get("budget"), r.get("target"), r["schedule"])
    )
    table = []
    for budget in budgets:
        for target in targets:
            entry = {"budget": budget, "target": target}
            for name in SCHEDULES:
                runs = groups[(budget, target, name)]
                entry[name] = spread([r["quality"] for r in runs])
            table.append(entry)
    return table


def print_table(task, metric, table, dense):
    """One line per budget and target: mean ± sd of every schedule."""
    print(f"\n{task} ({metric}; dense {dense:.3f}); mean ± sd over seeds")
    print(
        f"{'budget':>6}{'target':>7}" + "".join(f"{n:>24}" for n in SCHEDULES)
    )
    for entry in table:
        cells = "".join(
            f"{entry[n]['mean']:>16.3f} ± {entry[n]['sd']:<5.3f}"
            for n in SCHEDULES
        )
        print(f"{entry['budget']:>6}{entry['target']:>7.2f}{cells}")


def main(argv=None):
    """Run the comparison, print the tables, optionally write the JSON."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument(
        "--parts", nargs="+", default=["lm", "asr"], choices=["lm", "asr"]
    )
    parser.add_argument("--criterion", default="magnitude")
    parser.add_argument("--targets", type=float, nargs="+")
    parser.add_argument("--budgets", type=int, nargs="+", default=[4, 8])
    parser.add_argument("--seeds", type=int, nargs="+", default=[1, 2, 3])
    parser.add_argument("--out", default=str(REPO / "benchmarks/out"))
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args(argv)
    short = [budget for budget in args.budgets if budget < 4]
    if short:
        parser.error(
            f"--budgets: at least 4 epochs (the LM's third cut is at the end "
            f"of epoch 4), got {short}"
        )
    torch.set_num_threads(args.threads)
    preset = PRESETS["quick" if args.quick else "full"]
    targets = args.targets or preset["targets"]
    out_dir = Path(args.out).resolve() / (
        "schedules_quick" if args.quick else "schedules"
    )
    out_dir.mkdir(parents=True, exist_ok=True)
    start = time.time()

    def log(row):
        print(f"[{time.time() - start:6.0f} s] {row}", flush=True)

    result = {
        **provenance(),
        "mode": "quick" if args.quick else "full",
        "criterion": args.criterion,
        "threads": args.threads,
        "seeds": args.seeds,
        "budgets": {
            name: {
                str(b): {"epochs": epochs(b), "cuts": steps}
                for b in args.budgets
            }
            for name, (steps, _, epochs) in SCHEDULES.items()
        },
        "tasks": {},
    }
    for part in args.parts:
        rows = compare(
            part,
            preset,
            out_dir,
            targets,
            args.budgets,
            args.seeds,
            args.criterion,
            log,
        )
        table = summarise(rows, args.budgets, targets)
        metric = "wer" if part == "asr" else "ppl"
        print_table(part, metric, table, rows[0]["quality"])
        result["tasks"][part] = {
            "metric": metric,
            "config": preset[part],
            "dense": rows[0]["quality"],
            "table": table,
            "rows": rows[1:],
        }
    result["seconds"] = round(time.time() - start, 1)
    print(f"\n{result['seconds']} s")
    if args.json:
        write_json(args.json, result)
    return result


if __name__ == "__main__":
    main()
