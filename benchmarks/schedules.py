#!/usr/bin/env python3
"""One-shot vs incremental structured pruning at a stated training budget.

Emili et al. (2023) find incremental pruning more accurate than one-shot,
especially at small sizes. Whether it is depends on the training each
schedule gets, so this benchmark spells the budget out. From one dense
model per task (``criteria_lowrank.py``'s LM and ASR encoder, trained
once), for each target sparsity of the FFN hidden units and attention
heads and each fine-tuning seed, in short epochs of the preset's batches:

* ``one_shot``: the cut at the end of epoch 1, then ``budget - 1`` epochs
  of fine-tuning: 1 before, 0 between, ``budget - 1`` after;
* ``incremental``: three cuts (cubic ramp) at the ends of epochs 1, 2 and
  3 in the same ``budget`` epochs: 1 before, 2 between, ``budget - 3``
  after (equal compute);
* ``incremental_longer``: the same three cuts followed by as many epochs
  as one-shot has after its cut: ``budget + 2`` epochs in all (more
  compute: the budget under which gradual pruning is usually reported).

Every run's learning rate decays linearly to zero over its own epochs.
Quality: LM perplexity per character, ASR test WER (greedy CTC); mean and
spread over the seeds.

Usage::

    python benchmarks/schedules.py --quick
    python benchmarks/schedules.py --budgets 4 8 --seeds 1 2 3 \\
        --json benchmarks/results/schedules.json
"""

import argparse
import copy
import time
from pathlib import Path

import torch
from common import group_rows, provenance, spread, write_json
from criteria_lowrank import (
    PRESETS,
    ROOT,
    STRUCTURED,
    ASRTask,
    LMTask,
    asr_corpus,
)

from sb_prune import convert
from sb_prune.hooks import CriterionPruning
from sb_prune.training.schedules import Incremental, OneShot

#: schedule -> (its pruning schedule, epochs given a budget).
SCHEDULES = {
    "one_shot": (lambda target: OneShot(target, epoch=1), lambda b: b),
    "incremental": (
        lambda target: Incremental(
            target, steps=3, ramp="cubic", start_epoch=1
        ),
        lambda b: b,
    ),
    "incremental_longer": (
        lambda target: Incremental(
            target, steps=3, ramp="cubic", start_epoch=1
        ),
        lambda b: b + 2,
    ),
}


def compare(task, targets, budgets, seeds, criterion, log):
    """Every schedule, target, budget and seed from one dense model."""
    c = task.config
    dense = task.train_dense()
    rows = [{"schedule": "dense", "quality": task.evaluate(dense)}]
    for budget in budgets:
        for target in targets:
            for name, (schedule, epochs) in SCHEDULES.items():
                for seed in seeds:
                    hook = CriterionPruning(
                        criterion, schedule(target), groups=STRUCTURED
                    )
                    model = convert(copy.deepcopy(dense), prunable_attention={})
                    model = task.train(
                        model,
                        [hook],
                        epochs=epochs(budget),
                        batches=c["batches"],
                        lr=c["lr"] / 4,
                        seed=seed,
                    )
                    row = {
                        "budget": budget,
                        "target": target,
                        "schedule": name,
                        "epochs": epochs(budget),
                        "seed": seed,
                        "params": sum(p.numel() for p in model.parameters()),
                        "quality": task.evaluate(model),
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
    parser.add_argument(
        "--corpus", default=str(ROOT / "data/synthetic/LibriSpeech")
    )
    parser.add_argument("--out", default=str(ROOT / "benchmarks/out"))
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args(argv)
    short = [budget for budget in args.budgets if budget < 4]
    if short:
        parser.error(
            f"--budgets: at least 4 epochs (3 cuts, then one), got {short}"
        )
    torch.set_num_threads(args.threads)
    preset = PRESETS["quick" if args.quick else "full"]
    targets = args.targets or preset["targets"]
    out_dir = Path(args.out) / (
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
                str(b): {
                    "epochs": epochs(b),
                    "cuts_at_epoch_ends": list(
                        range(1, schedule(0.5).last_epoch + 1)
                    ),
                }
                for b in args.budgets
            }
            for name, (schedule, epochs) in SCHEDULES.items()
        },
        "tasks": {},
    }
    for part in args.parts:
        if part == "lm":
            task = LMTask(preset["lm"], out_dir, 7)
        else:
            corpus = asr_corpus(args, preset, out_dir)
            task = ASRTask(preset["asr"], out_dir, 7, corpus)
        rows = compare(
            task, targets, args.budgets, args.seeds, args.criterion, log
        )
        table = summarise(rows, args.budgets, targets)
        print_table(part, task.metric, table, rows[0]["quality"])
        result["tasks"][part] = {
            "metric": task.metric,
            "config": task.config,
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
