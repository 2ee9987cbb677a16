"""Spec builders that several families share.

A feed-forward block (group ``hidden``: rows of its up projection, columns
of its down projection) and attention that keeps its heads whole (group
``heads``: the query, key and value rows and output columns of each head)
look alike in every family that has them; a family names where they are.

Authors
 * sb_prune developers
"""

import torch

from sb_prune.core.inplace import resize_linear_, select_linear_
from sb_prune.core.registry import ModuleSpec
from sb_prune.methods.adaptive_dropout.layer import AdaptiveDropout


def first_dropout(module):
    """The first AdaptiveDropout under ``module``, or None.

    Arguments
    ---------
    module : torch.nn.Module
        Any module.

    Returns
    -------
    AdaptiveDropout or None
        The layer.
    """
    return next(
        (m for m in module.modules() if isinstance(m, AdaptiveDropout)), None
    )


def dropouts_under(module):
    """Every AdaptiveDropout under ``module``, in module order.

    Arguments
    ---------
    module : torch.nn.Module
        Any module.

    Returns
    -------
    list of AdaptiveDropout
        The layers.
    """
    return [m for m in module.modules() if isinstance(m, AdaptiveDropout)]


def _keep_hidden(up, down, hidden):
    select_linear_(up, rows=hidden)
    select_linear_(down, cols=hidden)


def _resize_hidden(up, down, hidden):
    resize_linear_(up, hidden, up.in_features)
    resize_linear_(down, down.out_features, hidden)


def _hidden_magnitude(up, down):
    with torch.no_grad():
        rows = up.weight.pow(2).sum(1)
        if up.bias is not None:
            rows = rows + up.bias.pow(2)
        return (rows + down.weight.pow(2).sum(0)).sqrt()


def feed_forward_spec(up_down, **more):
    """The spec of a module with a feed-forward block (group ``hidden``).

    Arguments
    ---------
    up_down : callable
        ``module -> (parent, up attribute, down attribute)``: where the
        block's up and down projections are.
    **more
        Other :class:`~sb_prune.core.registry.ModuleSpec` arguments
        (``dropouts``, ``layer_modules``, ``answers``...).

    Returns
    -------
    ModuleSpec
        Group ``hidden``, criterion group ``ffn``, low-rank point ``ffn``.

    Example
    -------
    >>> spec = feed_forward_spec(lambda m: (m, "0", "2"))
    >>> block = torch.nn.Sequential(
    ...     torch.nn.Linear(2, 6), torch.nn.ReLU(), torch.nn.Linear(6, 2))
    >>> spec.prune(block, hidden=torch.tensor([0, 5]))
    >>> spec.get_structure(block), spec.magnitude(block).shape
    ({'hidden': 2}, torch.Size([2]))
    """

    def linears(module):
        parent, up, down = up_down(module)
        return getattr(parent, up), getattr(parent, down)

    def hidden(module):
        return linears(module)[0].out_features

    def prune(module, hidden):
        _keep_hidden(*linears(module), hidden)
        for adl in dropouts_under(module):
            adl.select_units(hidden)

    return ModuleSpec(
        groups=("hidden",),
        prune=prune,
        get_structure=lambda module: {"hidden": hidden(module)},
        set_structure=lambda module, spec: _resize_hidden(
            *linears(module), spec["hidden"]
        ),
        criterion_group="ffn",
        count=hidden,
        member_plan=lambda module, kept: {"hidden": kept},
        consumer=lambda module: linears(module)[1],
        magnitude=lambda module: _hidden_magnitude(*linears(module)),
        group_size=lambda module, group: hidden(module),
        linears=lambda module: [
            (up_down(module)[0], name) for name in up_down(module)[1:]
        ],
        low_rank_point="ffn",
        **more,
    )


#: The projections of attention that keeps its heads whole.
PROJECTIONS = ("q_proj", "k_proj", "v_proj")


def _head_units(attention, heads):
    width = attention.head_dim
    heads = torch.as_tensor(heads, dtype=torch.long)
    return (heads[:, None] * width + torch.arange(width)).flatten()


def _prune_heads(attention, heads):
    units = _head_units(attention, heads)
    for name in PROJECTIONS:
        select_linear_(getattr(attention, name), rows=units)
    select_linear_(attention.out_proj, cols=units)
    attention.num_heads = len(heads)


def _set_heads(attention, spec):
    width = spec["heads"] * attention.head_dim
    for name in PROJECTIONS:
        linear = getattr(attention, name)
        resize_linear_(linear, width, linear.in_features)
    resize_linear_(attention.out_proj, attention.out_proj.out_features, width)
    attention.num_heads = spec["heads"]


def _per_head(attention, values):
    return values.reshape(attention.num_heads, attention.head_dim).sum(1)


def _head_magnitude(attention):
    with torch.no_grad():
        rows = attention.out_proj.weight.pow(2).sum(0)
        for name in PROJECTIONS:
            linear = getattr(attention, name)
            rows = rows + linear.weight.pow(2).sum(1)
            if linear.bias is not None:
                rows = rows + linear.bias.pow(2)
        return _per_head(attention, rows).sqrt()


def whole_head_attention_spec(**more):
    """The spec of attention whose heads all keep one width (group ``heads``).

    For attention that projects with ``q_proj``, ``k_proj``, ``v_proj``
    (a bias or not) and ``out_proj``, and reshapes by ``head_dim`` with a
    ``num_heads`` attribute (Hugging Face Whisper, wav2vec2, HuBERT):
    removing a head removes its ``head_dim`` rows of the three projections
    and columns of the output projection.

    Arguments
    ---------
    **more
        Other :class:`~sb_prune.core.registry.ModuleSpec` arguments.

    Returns
    -------
    ModuleSpec
        Group ``heads``, criterion group ``heads``, low-rank point
        ``attention``.
    """
    return ModuleSpec(
        groups=("heads",),
        prune=_prune_heads,
        get_structure=lambda attention: {"heads": attention.num_heads},
        set_structure=_set_heads,
        criterion_group="heads",
        count=lambda attention: attention.num_heads,
        member_plan=lambda attention, kept: {"heads": kept},
        consumer=lambda attention: attention.out_proj,
        per_member=_per_head,
        magnitude=_head_magnitude,
        group_size=lambda attention, group: attention.num_heads,
        linears=lambda attention: [
            (attention, name) for name in PROJECTIONS + ("out_proj",)
        ],
        low_rank_point="attention",
        **more,
    )
