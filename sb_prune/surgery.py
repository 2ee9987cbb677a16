"""Exact physical removal of units, heads and layers.

Pruning is expressed as a *plan*: ``{module path: {group: kept indices}}``,
for example ``{"Transformer.encoder.layers.0.ffn_module1.1": {"hidden":
tensor([0, 2, 5])}}``. :func:`apply_plan` hands each entry to the pruner
registered for the module's type. Every pruning method (adaptive dropout,
magnitude or Taylor criteria, layer cuts) produces a plan, so they all share
the same surgery and the same structure record.

Groups per module type:

* ``PositionalwiseFeedForward``: ``hidden`` (rows of the up projection,
  columns of the down projection);
* :class:`~sb_prune.nn.PrunableRelPosMHA` and
  :class:`~sb_prune.nn.PrunableMHA`: ``qk`` and ``v`` (per-unit query
  and value dimensions, see those classes);
* :class:`~sb_prune.nn.LowRankLinear`: ``rank`` (the directions to keep);
* Conformer ``ConvolutionModule``: ``inputs`` (input channels of the
  pointwise convolution that opens the module, after its layer norm);
* ``ConformerEncoder`` / ``TransformerEncoder``: ``layers``.

Authors
 * sb_prune developers
"""

import torch
from speechbrain.lobes.models.transformer.Conformer import (
    ConformerEncoder,
    ConvolutionModule,
)
from speechbrain.lobes.models.transformer.Transformer import TransformerEncoder
from speechbrain.nnet.attention import PositionalwiseFeedForward

from sb_prune.inplace import select_linear_
from sb_prune.nn.adaptive_dropout import AdaptiveDropout
from sb_prune.nn.attention import PrunableRelPosMHA
from sb_prune.nn.low_rank import LowRankLinear, prune_rank
from sb_prune.nn.mha import PrunableMHA
from sb_prune.structure import bottleneck_conv

_PRUNERS = {}


def register_pruner(module_type, prune):
    """Register how to prune the groups of a module type.

    Arguments
    ---------
    module_type : type
        The class (subclasses are matched too).
    prune : callable
        ``prune(module, **kept_indices_per_group)``, in place.
    """
    _PRUNERS[module_type] = prune


def _pruner(module):
    for module_type in type(module).__mro__:
        if module_type in _PRUNERS:
            return _PRUNERS[module_type]
    raise ValueError(f"sb_prune cannot prune a {type(module).__name__}")


def adaptive_dropouts(module):
    """Return the AdaptiveDropout layers inside ``module`` (itself excluded).

    Arguments
    ---------
    module : torch.nn.Module
        The module to search.

    Returns
    -------
    list of AdaptiveDropout
        In module order.
    """
    return [m for m in module.modules() if isinstance(m, AdaptiveDropout)]


def prune_ffn(ffn, hidden):
    """Keep the hidden units ``hidden`` of a feed-forward block.

    Arguments
    ---------
    ffn : speechbrain.nnet.attention.PositionalwiseFeedForward
        The block to prune in place.
    hidden : torch.LongTensor
        Sorted indices of the hidden units to keep.

    Example
    -------
    >>> ffn = PositionalwiseFeedForward(d_ffn=6, input_size=4).eval()
    >>> x = torch.rand(2, 3, 4)
    >>> with torch.no_grad():
    ...     ffn.ffn[3].weight[:, [1, 4]] = 0.0
    ...     expected = ffn(x)
    >>> prune_ffn(ffn, torch.tensor([0, 2, 3, 5]))
    >>> torch.allclose(ffn(x), expected, atol=1e-6)
    True
    """
    select_linear_(ffn.ffn[0], rows=hidden)
    select_linear_(ffn.ffn[-1], cols=hidden)
    for adl in adaptive_dropouts(ffn):
        adl.select_units(hidden)


def prune_conv_inputs(conv_module, inputs):
    """Keep the input channels ``inputs`` of a Conformer conv module.

    The module's layer norm still sees every channel (it sits on the
    residual stream); the pointwise convolution after it reads only the
    kept ones, gathered by the module's AdaptiveDropout.

    Arguments
    ---------
    conv_module : ConvolutionModule
        A module converted by :func:`sb_prune.convert` (its bottleneck
        starts with an input-gathering AdaptiveDropout).
    inputs : torch.LongTensor
        Sorted indices of the input channels to keep.
    """
    gathers = [a for a in adaptive_dropouts(conv_module) if a.index is not None]
    if not gathers:
        raise ValueError(
            "Pruning the inputs of a convolution module needs the "
            "AdaptiveDropout that gathers them: use sb_prune.convert with "
            "the 'conv' application point"
        )
    select_linear_(bottleneck_conv(conv_module), cols=inputs)
    for adl in adaptive_dropouts(conv_module):
        adl.select_units(inputs)


def prune_attention(mha, qk=None, v=None):
    """Keep query/key units ``qk`` and value units ``v`` of an attention.

    Arguments
    ---------
    mha : sb_prune.nn.PrunableRelPosMHA or sb_prune.nn.PrunableMHA
        The attention module to prune in place.
    qk : torch.LongTensor, optional
        Sorted indices of the query/key units to keep (default: all).
    v : torch.LongTensor, optional
        Sorted indices of the value units to keep (default: all).
    """
    if qk is None:
        qk = torch.arange(sum(mha.qk_dims))
    if v is None:
        v = torch.arange(sum(mha.v_dims))
    mha.select_units(qk, v)


def keep_layers(encoder, layers):
    """Keep the layers ``layers`` of an encoder stack, in that order.

    Arguments
    ---------
    encoder : ConformerEncoder or TransformerEncoder
        The encoder whose ``layers`` ModuleList is cut in place.
    layers : torch.LongTensor or list of int
        Indices of the layers to keep.

    Example
    -------
    >>> enc = TransformerEncoder(3, 2, 8, d_model=4)
    >>> second = enc.layers[1]
    >>> keep_layers(enc, [1])
    >>> len(enc.layers), enc.layers[0] is second
    (1, True)
    """
    kept = [encoder.layers[int(i)] for i in layers]
    if not kept:
        raise ValueError("Cannot remove every layer of an encoder")
    encoder.layers = torch.nn.ModuleList(kept)


register_pruner(PositionalwiseFeedForward, prune_ffn)
register_pruner(ConvolutionModule, prune_conv_inputs)
register_pruner(PrunableRelPosMHA, prune_attention)
register_pruner(PrunableMHA, prune_attention)
register_pruner(LowRankLinear, prune_rank)
register_pruner(ConformerEncoder, keep_layers)
register_pruner(TransformerEncoder, keep_layers)


def apply_plan(root, plan):
    """Physically prune the modules under ``root`` as the plan says.

    Arguments
    ---------
    root : torch.nn.Module
        The root the plan's paths are relative to.
    plan : dict
        ``{path: {group: kept indices}}``.
    """
    for path, groups in plan.items():
        module = root.get_submodule(path)
        _pruner(module)(module, **groups)


def _kept(adl):
    return adl.keep_mask().nonzero()[:, 0]


def adaptive_dropout_plan(root):
    """Plan the removal of every unit that adaptive dropout drops.

    A unit is removed when its AdaptiveDropout's evaluation mask drops it,
    so the pruned model computes exactly what the masked model computes in
    evaluation.

    Arguments
    ---------
    root : torch.nn.Module
        The model (or ModuleDict of modules) holding AdaptiveDropout layers.

    Returns
    -------
    dict
        A plan for :func:`apply_plan`; modules that lose nothing are left
        out.
    """
    plan = {}
    for path, module in root.named_modules():
        if isinstance(module, PrunableRelPosMHA):
            groups = {
                "qk": module.query_dropout,
                "v": module.value_dropout,
            }
        elif isinstance(module, PositionalwiseFeedForward):
            groups = {"hidden": next(iter(adaptive_dropouts(module)), None)}
        elif isinstance(module, ConvolutionModule):
            groups = {"inputs": next(iter(adaptive_dropouts(module)), None)}
        else:
            continue
        kept = {
            group: _kept(adl)
            for group, adl in groups.items()
            if adl is not None and not bool(adl.keep_mask().all())
        }
        if kept:
            plan[path] = kept
    return plan
