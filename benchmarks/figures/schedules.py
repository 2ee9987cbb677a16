"""README block of one-shot vs incremental pruning at a stated budget
(``schedules_lm.json``, ``schedules_asr.json``).

Authors
 * sb_prune developers
"""

from .text import blocks, holds, mean_sd, num, paragraph, span, table

#: results file -> (task key, README label, metric)
TASKS = {
    "schedules_lm": ("lm", "LM", "ppl"),
    "schedules_asr": ("asr", "ASR", "WER"),
}
SCHEDULES = ("one_shot", "incremental", "incremental_longer")


def _cells(task):
    """``{(budget, target): entry}`` of one task's table."""
    return {(e["budget"], e["target"]): e for e in task["table"]}


def _mean(entry, schedule):
    return entry[schedule]["mean"]


def main(results):
    """The table and which of the paper's claims it supports."""
    tasks, rows = {}, []
    for name, (key, label, metric) in TASKS.items():
        figures = results[name]
        task = figures["tasks"][key]
        tasks[label] = _cells(task)
        budgets = sorted({budget for budget, _ in tasks[label]})
        targets = sorted({target for _, target in tasks[label]})
        for i, budget in enumerate(budgets):
            entries = [tasks[label][budget, t] for t in targets]
            rows.append(
                [
                    f"{label} ({metric}, dense {num(task['dense'])})"
                    if i == 0
                    else label,
                    budget,
                    " / ".join(f"{t:.0%}" for t in targets),
                ]
                + [
                    " / ".join(num(_mean(e, s)) for e in entries)
                    for s in SCHEDULES
                ]
            )
    lm = results["schedules_lm"]
    cuts = lm["budgets"]
    budgets = [budget for budget, _ in tasks["LM"]]
    small, large = min(budgets), max(budgets)
    top = max(t for _, t in tasks["LM"])
    one_shot_cuts = cuts["one_shot"][str(small)]["cuts_at_epoch_ends"]
    incremental_cuts = cuts["incremental"][str(small)]["cuts_at_epoch_ends"]
    extra = cuts["incremental_longer"][str(small)]["epochs"] - small
    lm_large, lm_small = tasks["LM"][large, top], tasks["LM"][small, top]
    asr_top = [tasks["ASR"][b, top] for b in (small, large)]
    asr_sds = [e[s]["sd"] for e in asr_top for s in ("one_shot", "incremental")]
    claim = holds(
        _mean(lm_large, "incremental") < _mean(lm_large, "one_shot")
        and _mean(lm_small, "incremental") > _mean(lm_small, "one_shot")
        and all(
            _mean(e, "incremental") > _mean(e, "one_shot") for e in asr_top
        ),
        f"holds at {top:.0%} only for the LM with {large} epochs",
    )
    every = [e for cells in tasks.values() for e in cells.values()]
    close = [
        f"{label} {target:.0%}, {budget} epochs"
        for label, cells in tasks.items()
        for (budget, target), e in cells.items()
        if _mean(e, "one_shot") - _mean(e, "incremental_longer")
        < max(e["one_shot"]["sd"], e["incremental_longer"]["sd"])
    ]
    longer_top = {label: cells[small, top] for label, cells in tasks.items()}
    short_top = {label: cells[large, top] for label, cells in tasks.items()}
    return blocks(
        paragraph(
            "**One-shot vs incremental at a stated budget** "
            f"(`benchmarks/schedules.py`, {lm['criterion']} pruning of FFN "
            "units and heads from one dense model per task; commands in "
            "`benchmarks/results/schedules_{lm,asr}.json`; mean over "
            "fine-tuning seeds "
            f"{' / '.join(str(s) for s in lm['seeds'])}, sd in the JSON). A "
            "budget of B short epochs: one-shot cuts after epoch "
            f"{', '.join(map(str, one_shot_cuts))} and fine-tunes B - "
            f"{one_shot_cuts[-1]}; incremental cuts after epochs "
            f"{', '.join(map(str, incremental_cuts))} (cubic) and "
            f"fine-tunes B - {incremental_cuts[-1]} (equal compute); "
            f'"incremental + {extra}" adds the {extra} epochs it spent '
            "between cuts (more compute)."
        ),
        table(
            [
                "task",
                "budget",
                "sparsity",
                "one-shot",
                "incremental",
                f"incremental + {extra}",
            ],
            rows,
        ),
        paragraph(
            f"At equal compute the paper's claim {claim} "
            f"({mean_sd(lm_large['incremental'], 3)} vs "
            f"{mean_sd(lm_large['one_shot'], 3)}), not with {small} "
            "(fine-tuning after the last cut is then too short), and not "
            f"for the ASR encoder at either budget (at {top:.0%}: "
            + " and ".join(
                f"{num(_mean(e, 'incremental'))} vs {num(_mean(e, 'one_shot'))}"
                for e in asr_top
            )
            + f"; the sds are {span(asr_sds)}). Given the {extra} extra "
            "epochs incremental "
            + holds(
                all(
                    _mean(e, "incremental_longer") < _mean(e, "one_shot")
                    for e in every
                ),
                "wins everywhere",
            )
            + (f" (within the spread at {'; '.join(close)})" if close else "")
            + f", but one-shot given {large} epochs "
            + holds(
                all(
                    _mean(short_top[t], "one_shot")
                    < _mean(longer_top[t], "incremental_longer")
                    for t in tasks
                ),
                f"beats incremental given {small + extra}",
            )
            + f" ({top:.0%}: "
            + "; ".join(
                f"{t} {num(_mean(short_top[t], 'one_shot'))} vs "
                f"{num(_mean(longer_top[t], 'incremental_longer'))}"
                for t in tasks
            )
            + "): the advantage of gradual pruning is, here, the advantage "
            "of its extra training."
        ),
    )
