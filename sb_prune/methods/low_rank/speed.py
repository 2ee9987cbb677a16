"""Low rank that is never slower: ranks chosen from measured times.

A rank-``R`` factorisation of an ``out x in`` matrix runs two products
(``in -> R -> out``) instead of one. Fewer multiply-accumulates do not
always mean less time: small ranks of small matrices are overhead-bound,
and near the break-even rank the two products cost more than the one.
A *cost table* records, for each matrix shape, the measured time of the
dense product and of factorisations at several ranks, on a given number of
rows (tokens). From it, :func:`choose_ranks` keeps a matrix dense when no
rank it could take is faster than dense, and meets the size target with
the others: all factorised matrices take the same (higher) compression,
the lowest that reaches the target.

The table is plain JSON, measured where the model will run::

    sb-prune cost-table --shapes 256x1024 1024x256 --tokens 250
        --out linear_costs.json

and given to :class:`sb_prune.hooks.LowRankCompression` as
``cost_table: linear_costs.json``.

Authors
 * sb_prune developers
"""

import json
from pathlib import Path

import torch

from sb_prune.core.profiling import measure_latency
from sb_prune.core.validation import check_string
from sb_prune.methods.low_rank.layer import rank_for_compression


def _key(in_features, out_features):
    return f"{in_features}x{out_features}"


def measure_cost_table(shapes, tokens=250, points=8, repeats=10):
    """Time dense and factorised products of each matrix shape.

    Arguments
    ---------
    shapes : list of tuple
        ``(in_features, out_features)`` of the matrices.
    tokens : int
        Rows of the input (batch x frames the model will see).
    points : int
        Ranks timed per shape, evenly spaced up to the break-even rank.
    repeats : int
        Timed calls of each (medians, interleaved).

    Returns
    -------
    dict
        ``{"tokens": n, "threads": t, "shapes": {"INxOUT": {"dense":
        seconds, "ranks": {rank: seconds}}}}``.

    Example
    -------
    >>> table = measure_cost_table([(16, 32)], tokens=8, points=2, repeats=2)
    >>> sorted(table["shapes"]["16x32"]["ranks"])
    ['10', '5']
    """
    table = {
        "tokens": tokens,
        "threads": torch.get_num_threads(),
        "shapes": {},
    }
    for in_features, out_features in sorted(set(map(tuple, shapes))):
        even = rank_for_compression(in_features, out_features, 0.0)
        ranks = sorted(
            {max(1, even * k // points) for k in range(1, 1 + points)}
        )
        weight = torch.randn(out_features, in_features)
        functions = {"dense": lambda x, w=weight: x @ w.T}
        for rank in ranks:
            down = torch.randn(rank, in_features)
            up = torch.randn(out_features, rank)
            functions[str(rank)] = lambda x, u=up, d=down: (x @ d.T) @ u.T
        inputs = (torch.randn(tokens, in_features),)
        times = measure_latency(functions, lambda x=inputs: x, repeats)
        table["shapes"][_key(in_features, out_features)] = {
            "dense": times.pop("dense"),
            "ranks": times,
        }
    return table


def load_cost_table(table):
    """Return a cost table given as a dict or as a JSON file's path.

    Arguments
    ---------
    table : dict or str
        What :func:`measure_cost_table` returns, or where it was saved.

    Returns
    -------
    dict
        The table.
    """
    if isinstance(table, dict):
        return table
    path = Path(check_string("cost_table", table))
    if not path.is_file():
        raise ValueError(f"cost_table: no file {str(path)!r}")
    try:
        table = json.loads(path.read_bytes())
    except (UnicodeDecodeError, json.JSONDecodeError) as error:
        raise ValueError(f"cost_table: {path} is not JSON: {error}") from None
    if not isinstance(table, dict):
        raise ValueError(f"cost_table: {path} holds no table")
    return table


def fastest_rank(table, in_features, out_features):
    """The largest measured rank that is faster than the dense product.

    Arguments
    ---------
    table : dict
        A cost table.
    in_features, out_features : int
        The matrix shape.

    Returns
    -------
    int
        That rank, or 0 when no measured rank is faster.

    Example
    -------
    >>> table = {"shapes": {"4x8": {"dense": 1.0, "ranks": {"1": 0.5,
    ...     "2": 0.9, "3": 1.2}}}}
    >>> fastest_rank(table, 4, 8)
    2
    >>> fastest_rank(table, 8, 4)
    Traceback (most recent call last):
    ...
    ValueError: cost_table has no measurement for a 8x4 matrix (in x out)...
    """
    entry = table["shapes"].get(_key(in_features, out_features))
    if entry is None:
        raise ValueError(
            f"cost_table has no measurement for a "
            f"{_key(in_features, out_features)} matrix (in x out); it has "
            f"{sorted(table['shapes'])}: measure the model's shapes "
            "(sb-prune cost-table)"
        )
    faster = [
        int(rank)
        for rank, seconds in entry["ranks"].items()
        if seconds < entry["dense"]
    ]
    return max(faster, default=0)


def choose_ranks(shapes, compression, table):
    """Ranks that remove ``compression`` of the weights without slowing down.

    A matrix is factorised only at ranks the table finds faster than dense;
    the others stay dense (rank None), and the factorised ones all take
    the lowest common compression that removes ``compression`` of the
    weights of all the matrices together.

    Arguments
    ---------
    shapes : list of tuple
        ``(in_features, out_features)`` of each matrix.
    compression : float
        Fraction of the matrices' weights to remove, in [0, 1).
    table : dict
        A cost table covering every shape.

    Returns
    -------
    list
        Per matrix, its rank or None (dense).

    Raises
    ------
    ValueError
        When the matrices that are faster factorised cannot remove that
        much on their own.

    Example
    -------
    >>> table = {"shapes": {
    ...     "8x8": {"dense": 1.0, "ranks": {"2": 1.5}},
    ...     "8x32": {"dense": 1.0, "ranks": {"3": 0.6, "6": 0.8}}}}
    >>> choose_ranks([(8, 8), (8, 32)], 0.25, table)
    [None, 4]
    """
    limits = [fastest_rank(table, i, o) for i, o in shapes]
    dense = [i * o for i, o in shapes]
    budget = (1 - compression) * sum(dense)

    def ranks_at(level):
        ranks = [rank_for_compression(i, o, level) for i, o in shapes]
        return [r if r <= limit else None for r, limit in zip(ranks, limits)]

    def kept(ranks):
        return sum(
            d if r is None else r * (i + o)
            for r, d, (i, o) in zip(ranks, dense, shapes)
        )

    if kept(ranks_at(compression)) <= budget:
        return ranks_at(compression)
    low, high = compression, 1.0 - 1e-9
    if kept(ranks_at(high)) > budget:
        raise ValueError(
            f"cost_table: only {sum(1 for x in limits if x)} of "
            f"{len(shapes)} matrices are faster factorised, and they cannot "
            f"remove {compression:.0%} of the weights on their own"
        )
    for _ in range(40):
        middle = (low + high) / 2
        if kept(ranks_at(middle)) > budget:
            low = middle
        else:
            high = middle
    return ranks_at(high)
