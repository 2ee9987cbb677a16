"""Where adaptive-dropout masks go: the answer a family gives.

A family answers the ``adaptive_dropout`` method on its layer types with a
:class:`MaskPoints`: for each application point it supports, a function
that inserts the masks into one layer, and a function that finds them
again (for plots and summaries). The helpers below insert the masks of the
three kinds of points that exist: the hidden units of a feed-forward block
(masked through its down projection), the query or value units of an
attention module that keeps per-unit widths, and the input channels of a
block that gathers them.

Authors
 * sb_prune developers
"""

from torch import nn

from sb_prune.methods.adaptive_dropout.layer import (
    AdaptiveDropout,
    InputMaskedLinear,
)


class MaskPoints:
    """A family's adaptive-dropout application points for one layer type.

    Arguments
    ---------
    insert : dict
        ``{point: insert(layer, options)}``: adds the masks of that point
        (``options``: the AdaptiveDropout keyword arguments).
    find : callable
        ``layer -> {label: AdaptiveDropout}``: the masks of a converted
        layer by label (a point may have several, e.g. ``ffn1``, ``ffn2``).
    refused : dict, optional
        ``{point: reason}``: points of the method that the layer cannot
        take, and why.
    unavailable : callable, optional
        ``layer -> {point: reason}``: points that one layer of the type
        cannot take, and why (they depend on its modules, e.g. the type
        of its attention).

    Example
    -------
    >>> points = MaskPoints({"ffn": lambda layer, options: None}, dict)
    >>> points.insert["ffn"](None, {})
    >>> points.refusals(None, ["ffn", "conv"])
    {'conv': "no 'conv' point"}
    """

    def __init__(self, insert, find, refused=None, unavailable=None):
        self.insert = dict(insert)
        self.find = find
        self.refused = dict(refused or {})
        self.unavailable = unavailable or (lambda layer: {})

    def refusals(self, layer, points):
        """The points of ``points`` that ``layer`` cannot take, and why.

        Arguments
        ---------
        layer : torch.nn.Module
            A layer of the type.
        points : list of str
            Application points asked for.

        Returns
        -------
        dict
            ``{point: reason}``, empty when it takes them all.
        """
        reasons = {**self.refused, **self.unavailable(layer)}
        return {
            point: reasons.get(point, f"no '{point}' point")
            for point in points
            if point not in self.insert or point in reasons
        }


def mask_hidden_units(parent, down, options):
    """Mask the input units of ``parent.<down>`` (a feed-forward block's).

    The Linear becomes an
    :class:`~sb_prune.methods.adaptive_dropout.layer.InputMaskedLinear`
    sharing its parameters.

    Arguments
    ---------
    parent : torch.nn.Module
        The module holding the down projection.
    down : str
        Its attribute name (or index in a Sequential).
    options : dict
        AdaptiveDropout keyword arguments.

    Example
    -------
    >>> block = nn.Sequential(nn.Linear(2, 6), nn.ReLU(), nn.Linear(6, 2))
    >>> mask_hidden_units(block, "2", {})
    >>> type(block[2]).__name__, block[2].mask.n_units
    ('InputMaskedLinear', 6)
    """
    linear = getattr(parent, down)
    adl = AdaptiveDropout(linear.in_features, **options)
    setattr(parent, down, InputMaskedLinear.from_linear(linear, adl))


def mask_attention_units(mha, point, options):
    """Mask the query/key (``query``) or value (``value``) units of ``mha``.

    Arguments
    ---------
    mha : sb_prune.nn.PrunableRelPosMHA
        Attention that applies per-unit masks (``query_dropout``,
        ``value_dropout``).
    point : str
        ``query`` or ``value``.
    options : dict
        AdaptiveDropout keyword arguments.
    """
    dims = mha.qk_dims if point == "query" else mha.v_dims
    setattr(mha, f"{point}_dropout", AdaptiveDropout(sum(dims), **options))


def mask_input_channels(parent, name, channels, options):
    """Gather the kept input channels of ``parent.<name>`` (a Sequential).

    An input-gathering AdaptiveDropout (over dimension 1, channels first)
    opens the Sequential, so pruning removes input channels of the first
    convolution exactly.

    Arguments
    ---------
    parent : torch.nn.Module
        The module holding the Sequential.
    name : str
        Its attribute name.
    channels : int
        Input channels.
    options : dict
        AdaptiveDropout keyword arguments.
    """
    adl = AdaptiveDropout(channels, dim=1, gathers_input=True, **options)
    setattr(parent, name, nn.Sequential(adl, *getattr(parent, name)))


def masks_by_label(modules):
    """The first AdaptiveDropout under each labelled module.

    Arguments
    ---------
    modules : dict
        ``{label: module or None}``.

    Returns
    -------
    dict
        ``{label: AdaptiveDropout}`` for the labels that have one.

    Example
    -------
    >>> block = nn.Sequential(nn.Linear(2, 6), nn.ReLU(), nn.Linear(6, 2))
    >>> mask_hidden_units(block, "2", {})
    >>> list(masks_by_label({"ffn": block, "conv": None}))
    ['ffn']
    """
    found = {}
    for label, module in modules.items():
        if module is None:
            continue
        adl = next(
            (m for m in module.modules() if isinstance(m, AdaptiveDropout)),
            None,
        )
        if adl is not None:
            found[label] = adl
    return found
