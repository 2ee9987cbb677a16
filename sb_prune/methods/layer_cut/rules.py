"""Choose the encoder layers a layer cut keeps.

A layer cut keeps some layers of an encoder's ``layers`` ModuleList and
removes the others. It is an ordinary pruning plan,
``{encoder path: {"layers": kept indices}}``, applied by
:func:`sb_prune.core.surgery.apply_plan` and recorded in the structure record,
so checkpoints, resuming and DDP work as for every other method.

:func:`choose_layers` implements the rules of
:class:`sb_prune.analysis.LayerCut`. Convexity rules read one score per
depth: depth 0 is the encoder input (the input of its first layer) and
depth ``l`` the output of layer ``l``; cutting at depth ``l`` keeps layers
``1..l`` (Dorszewski et al. 2024 keep the layers up to the convexity
peak). The input is scored for the curve but never chosen: a cut keeps at
least one layer.

Which module types are layer stacks is the registry's knowledge
(:mod:`sb_prune.families`; add your own with
:func:`sb_prune.core.registry.register_layer_stack`).

Authors
 * sb_prune developers
"""

import torch

from sb_prune.core.validation import check_choice, check_int, check_number

#: Rules that read convexity scores.
SCORED_RULES = ("peak", "fraction")
#: Rules that keep a given number of layers.
COUNTED_RULES = ("first", "last", "evenly_spaced")
#: Every rule of :func:`choose_layers`.
RULES = ("none", *SCORED_RULES, *COUNTED_RULES)


def _checked(scores, what, minimum):
    scores = torch.as_tensor(scores, dtype=torch.float64)
    if scores.dim() != 1 or len(scores) < minimum:
        raise ValueError(
            f"scores must hold one value per {what}, got shape "
            f"{tuple(scores.shape)}"
        )
    if not torch.isfinite(scores).all():
        raise ValueError("scores contains NaN or inf values")
    return scores


def cut_depth(scores, rule, fraction=None, tolerance=0.0):
    """Return the depth a convexity rule cuts at (at least 1).

    Only the layers (depths 1 and more) are candidates, and the peak is
    the highest layer score: the encoder input (depth 0) is never chosen
    (see :func:`scored_depth`).

    Arguments
    ---------
    scores : sequence of float
        Convexity (%) per depth; depth 0 is the encoder input.
    rule : str
        ``peak`` or ``fraction``, see :func:`scored_depth`.
    fraction : float, optional
        In (0, 1], for ``fraction``.
    tolerance : float
        Points below the maximum still counted as the peak, >= 0.

    Returns
    -------
    int
        The depth: the number of layers to keep.

    Example
    -------
    >>> cut_depth([10.0, 40.0, 59.0, 60.0, 50.0], "peak")
    3
    >>> cut_depth([10.0, 40.0, 59.0, 60.0, 50.0], "peak", tolerance=2.0)
    2
    >>> cut_depth([10.0, 40.0, 59.0, 60.0, 50.0], "fraction", fraction=0.9)
    2
    >>> cut_depth([90.0, 40.0, 59.0, 60.0, 50.0], "peak")  # input ignored
    3
    """
    scores = _checked(scores, "depth (input and layers)", 2)
    return scored_depth(scores[1:], rule, fraction, tolerance)


def scored_depth(layer_scores, rule, fraction=None, tolerance=0.0):
    """Return how many layers a scored rule keeps, from one score per layer.

    Arguments
    ---------
    layer_scores : sequence of float
        One score per layer (e.g. the convexity of its output), in order.
    rule : str
        ``peak``: up to the first layer within ``tolerance`` points of the
        highest score; ``fraction``: up to the first layer reaching
        ``fraction`` of it.
    fraction : float, optional
        In (0, 1], for ``fraction``.
    tolerance : float
        Points below the maximum still counted as the peak, >= 0.

    Returns
    -------
    int
        The number of layers to keep, >= 1.

    Example
    -------
    >>> scored_depth([40.0, 59.0, 60.0, 50.0], "peak", tolerance=2.0)
    2
    """
    check_choice("rule", rule, SCORED_RULES)
    layers = _checked(layer_scores, "layer", 1)
    peak = float(layers.max())
    if rule == "peak":
        threshold = peak - tolerance
    else:
        threshold = fraction * peak
    return 1 + int((layers >= threshold).nonzero()[0])


def evenly_spaced(n_layers, n_total):
    """Return ``n_layers`` indices spread evenly over ``n_total`` layers.

    Every ``n_total / n_layers``-th layer is kept, the last one included
    (keeping every other layer of a 6-layer stack gives 1, 3, 5).

    Arguments
    ---------
    n_layers : int
        Layers to keep, in ``[1, n_total]``.
    n_total : int
        Layers in the stack.

    Returns
    -------
    list of int
        Increasing layer indices.

    Example
    -------
    >>> evenly_spaced(3, 6), evenly_spaced(2, 6), evenly_spaced(4, 6)
    ([1, 3, 5], [2, 5], [1, 2, 4, 5])
    """
    return [
        ((i + 1) * n_total + n_layers - 1) // n_layers - 1
        for i in range(n_layers)
    ]


def check_rule(rule, n_layers=None, fraction=None, tolerance=0.0):
    """Check the arguments of a layer-cut rule; raise ``ValueError``.

    Arguments
    ---------
    rule : str
        One of :data:`RULES`.
    n_layers : int, optional
        Layers kept by ``first``, ``last`` and ``evenly_spaced``.
    fraction : float, optional
        Fraction of the peak for ``fraction``.
    tolerance : float
        Points below the peak for ``peak``.

    Example
    -------
    >>> check_rule("last", n_layers=0)
    Traceback (most recent call last):
    ...
    ValueError: n_layers must be an integer >= 1, got 0 (rule 'last': ...)
    >>> check_rule("fraction", fraction="0.5")
    Traceback (most recent call last):
    ...
    ValueError: fraction must be a number in (0, 1], got '0.5'

    A value the rule does not read must be valid too:

    >>> check_rule("peak", fraction=2)
    Traceback (most recent call last):
    ...
    ValueError: fraction must be in (0, 1], got 2
    """
    check_choice("rule", rule, RULES)
    if rule in COUNTED_RULES:
        try:
            check_int("n_layers", n_layers, minimum=1)
        except ValueError as error:
            raise ValueError(
                f"{error} (rule '{rule}': a cut that keeps no layer removes "
                "every encoder layer)"
            ) from None
    if rule == "fraction" or fraction is not None:
        check_number("fraction", fraction, 0, 1, open_low=True)
    if n_layers is not None:
        check_int("n_layers", n_layers, minimum=1)
    check_number("tolerance", tolerance, low=0)


def choose_layers(
    rule, n_total, scores=None, n_layers=None, fraction=None, tolerance=0.0
):
    """Return the indices of the layers a cut keeps.

    Arguments
    ---------
    rule : str
        ``none`` (keep all), ``peak`` or ``fraction`` (convexity, see
        :func:`cut_depth`: keep the layers up to that depth), ``first``,
        ``last`` or ``evenly_spaced`` (keep ``n_layers`` layers: the first
        ones, the last ones, or spread as in :func:`evenly_spaced`).
    n_total : int
        Layers in the stack.
    scores : sequence of float, optional
        ``n_total + 1`` convexity scores (depth 0 = input), for ``peak``
        and ``fraction``.
    n_layers : int, optional
        For ``first``, ``last`` and ``evenly_spaced``.
    fraction : float, optional
        For ``fraction``, in (0, 1].
    tolerance : float
        For ``peak``, >= 0 points.

    Returns
    -------
    list of int
        Increasing indices into the stack's ``layers``, never empty.

    Example
    -------
    >>> scores = [5.0, 20.0, 70.0, 68.0, 60.0, 55.0, 50.0]
    >>> choose_layers("peak", 6, scores)
    [0, 1]
    >>> choose_layers("evenly_spaced", 6, n_layers=2)
    [2, 5]
    >>> choose_layers("first", 6, n_layers=0)
    Traceback (most recent call last):
    ...
    ValueError: n_layers must be an integer >= 1, got 0 (rule 'first': ...)
    """
    check_rule(rule, n_layers, fraction, tolerance)
    if rule == "none":
        return list(range(n_total))
    if rule in SCORED_RULES:
        if scores is None or len(scores) != n_total + 1:
            got = "none" if scores is None else len(scores)
            raise ValueError(
                f"rule '{rule}' needs {n_total + 1} convexity scores (the "
                f"input and {n_total} layers), got {got}"
            )
        return list(range(cut_depth(scores, rule, fraction, tolerance)))
    if n_layers > n_total:
        raise ValueError(
            f"n_layers ({n_layers}) exceeds the {n_total} encoder layers"
        )
    if rule == "first":
        return list(range(n_layers))
    if rule == "last":
        return list(range(n_total - n_layers, n_total))
    return evenly_spaced(n_layers, n_total)
