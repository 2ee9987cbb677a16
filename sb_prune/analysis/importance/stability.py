"""Stability of ambient layers across runs (seeds, sizes, norms).

Zhou et al. (2022) report that the ambient layers of a Conformer are
stable across training runs. Given the labels of several runs (from
:meth:`sb_prune.analysis.LayerImportance.run`), these helpers find the
units that are ambient in enough runs, measure the overlap of the runs'
ambient sets, and render both as Markdown tables.

Authors
 * sb_prune developers
"""

from itertools import combinations

SHORT = {"ambient": "A", "intermediate": "i", "critical": "C"}


def stable_units(labels, min_runs):
    """Units labelled ambient in at least ``min_runs`` runs.

    Arguments
    ---------
    labels : dict
        ``{run: {unit: class}}``.
    min_runs : int
        The number of runs a unit must be ambient in (>= 1).

    Returns
    -------
    list of str
        In the order of the first run's units.

    Example
    -------
    >>> labels = {1: {"a": "ambient", "b": "critical"},
    ...           2: {"a": "ambient", "b": "ambient"},
    ...           3: {"a": "intermediate", "b": "critical"}}
    >>> stable_units(labels, 2)
    ['a']
    """
    if min_runs < 1:
        raise ValueError(f"min_runs must be >= 1, got {min_runs}")
    units = list(next(iter(labels.values())))
    return [
        unit
        for unit in units
        if sum(run.get(unit) == "ambient" for run in labels.values())
        >= min_runs
    ]


def jaccard(first, second):
    """Jaccard overlap of two sets (1.0 when both are empty).

    Arguments
    ---------
    first, second : iterable
        The sets.

    Returns
    -------
    float
        ``|A & B| / |A | B|``.

    Example
    -------
    >>> jaccard({"a", "b"}, {"b", "c"})
    0.3333333333333333
    """
    first, second = set(first), set(second)
    union = first | second
    return len(first & second) / len(union) if union else 1.0


def pairwise_overlap(labels):
    """Mean Jaccard overlap of the ambient sets of every pair of runs.

    Arguments
    ---------
    labels : dict
        ``{run: {unit: class}}``.

    Returns
    -------
    float or None
        None with fewer than two runs.

    Example
    -------
    >>> pairwise_overlap({1: {"a": "ambient", "b": "ambient"},
    ...                   2: {"a": "ambient", "b": "critical"}})
    0.5
    """
    sets = [
        {u for u, cls in run.items() if cls == "ambient"}
        for run in labels.values()
    ]
    pairs = list(combinations(sets, 2))
    if not pairs:
        return None
    return sum(jaccard(a, b) for a, b in pairs) / len(pairs)


def stability_table(labels, min_runs=2, base=None):
    """Markdown table: one row per unit, one column per run.

    Arguments
    ---------
    labels : dict
        ``{run: {unit: class}}``.
    min_runs : int
        Ambient in at least that many runs counts as stable.
    base : dict, optional
        ``{run: metric of the trained model}``, shown as a last row.

    Returns
    -------
    str
        The table; ``A`` ambient, ``i`` intermediate, ``C`` critical.

    Example
    -------
    >>> print(stability_table({1: {"a": "ambient"}, 2: {"a": "critical"}},
    ...                       min_runs=1))
    | unit | 1 | 2 | stable |
    |---|---|---|---|
    | a | A | C | yes |
    """
    runs = list(labels)
    stable = set(stable_units(labels, min_runs))
    lines = [
        "| unit | " + " | ".join(str(r) for r in runs) + " | stable |",
        "|---" * (len(runs) + 2) + "|",
    ]
    for unit in next(iter(labels.values())):
        cells = [SHORT[labels[r][unit]] for r in runs]
        mark = "yes" if unit in stable else ""
        lines.append(f"| {unit} | " + " | ".join(cells) + f" | {mark} |")
    if base:
        cells = [f"{base[r]:.1f}" for r in runs]
        lines.append("| base WER | " + " | ".join(cells) + " | |")
    return "\n".join(lines)
