"""The built-in entries of the registry: one per module type.

Loaded by :mod:`sb_prune.core.registry` on the first look-up. Each entry
says, for one module type, what :class:`~sb_prune.core.registry.ModuleSpec`
describes (groups, removal, structure record, members for criteria,
adaptive dropout, low rank) or, for encoder layers, which modules a
``layer_modules`` of a spec name. Groups per type:

* ``PositionalwiseFeedForward``: ``hidden`` (rows of the up projection,
  columns of the down projection); criterion group ``ffn``;
* :class:`~sb_prune.nn.PrunableRelPosMHA`, :class:`~sb_prune.nn.PrunableMHA`:
  ``qk`` and ``v`` (per-unit query/key and value dimensions); criterion
  group ``heads``;
* Conformer ``ConvolutionModule``: ``inputs`` (input channels of the
  pointwise convolution after its layer norm, gathered by adaptive
  dropout);
* :class:`~sb_prune.nn.LowRankLinear`: ``rank`` (the directions to keep);
* ``ConformerEncoder``, ``TransformerEncoder`` and the Hugging Face
  wav2vec2, HuBERT, WavLM and Whisper encoders: ``layers``; criterion group
  ``layers``;
* the Hugging Face ``WhisperEncoderLayer``: ``hidden`` (its ``fc1`` /
  ``fc2`` feed-forward block), and the feed-forward blocks of the
  wav2vec2, HuBERT and WavLM encoders: ``hidden``; criterion group ``ffn``;
* the Hugging Face ``WhisperAttention``: ``heads`` (whole heads);
  criterion group ``heads``.

Authors
 * sb_prune developers
"""

import torch
from speechbrain.lobes.models.transformer.Conformer import (
    ConformerEncoder,
    ConformerEncoderLayer,
    ConvolutionModule,
)
from speechbrain.lobes.models.transformer.Transformer import (
    TransformerEncoder,
    TransformerEncoderLayer,
)
from speechbrain.nnet.attention import PositionalwiseFeedForward

from sb_prune.core.inplace import resize_linear_, select_linear_
from sb_prune.core.registry import (
    ModuleSpec,
    register,
    register_layer_stack,
)
from sb_prune.methods.adaptive_dropout.layer import AdaptiveDropout, UnitSelect
from sb_prune.methods.attention.heads import PrunableHeads
from sb_prune.methods.attention.relpos import PrunableRelPosMHA
from sb_prune.methods.conv_norm.group_norm import ConvGroupNorm
from sb_prune.methods.low_rank.layer import LowRankLinear


def _own_structure(module_type, groups=(), prune=None, **more):
    """A spec for a module that records its own structure (sb_prune's)."""
    return ModuleSpec(
        groups=groups,
        prune=prune,
        get_structure=module_type.get_structure,
        set_structure=module_type.set_structure,
        **more,
    )


def _first_dropout(module):
    return next(
        (m for m in module.modules() if isinstance(m, AdaptiveDropout)), None
    )


def _dropouts_under(module):
    return [m for m in module.modules() if isinstance(m, AdaptiveDropout)]


# Feed-forward blocks: group "hidden" (rows of the up projection, columns
# of the down projection), shared by every type that has one.


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
        (``dropouts``, ``layer_modules``...).

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
        for adl in _dropouts_under(module):
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


register(
    PositionalwiseFeedForward,
    feed_forward_spec(
        lambda ffn: (ffn.ffn, "0", str(len(ffn.ffn) - 1)),
        dropouts=lambda ffn: {"hidden": _first_dropout(ffn)},
    ),
)


# Prunable attention: groups "qk" and "v", criterion members are heads.


def _head_units(dims, heads):
    starts = torch.tensor([0] + list(dims)).cumsum(0)
    return torch.cat(
        [torch.arange(starts[h], starts[h + 1]) for h in heads.tolist()]
    )


def _per_head(values, dims):
    index = torch.repeat_interleave(torch.tensor(dims)).to(values.device)
    return values.new_zeros(len(dims)).index_add_(0, index, values)


def _prune_attention(mha, qk=None, v=None):
    if qk is None:
        qk = torch.arange(sum(mha.qk_dims))
    if v is None:
        v = torch.arange(sum(mha.v_dims))
    mha.select_units(qk, v)


def _head_magnitude(mha):
    """The L2 norm of every parameter that belongs to each head."""
    with torch.no_grad():
        n_qk = sum(mha.qk_dims)
        rows = mha.in_proj.weight.pow(2).sum(1)
        if mha.in_proj.bias is not None:
            rows = rows + mha.in_proj.bias.pow(2)
        qk = rows[:n_qk] + rows[n_qk : 2 * n_qk]
        if isinstance(mha, PrunableRelPosMHA):
            qk = qk + mha.linear_pos.weight.pow(2).sum(1)
            qk = qk + mha.pos_bias_u.pow(2) + mha.pos_bias_v.pow(2)
        v = rows[2 * n_qk :] + mha.out_proj.weight.pow(2).sum(0)
        return (_per_head(qk, mha.qk_dims) + _per_head(v, mha.v_dims)).sqrt()


register(
    PrunableHeads,
    _own_structure(
        PrunableHeads,
        groups=("qk", "v"),
        prune=_prune_attention,
        criterion_group="heads",
        count=lambda mha: mha.num_heads,
        member_plan=lambda mha, kept: {
            "qk": _head_units(mha.qk_dims, kept),
            "v": _head_units(mha.v_dims, kept),
        },
        consumer=lambda mha: mha.out_proj,
        per_member=lambda mha, values: _per_head(values, mha.v_dims),
        magnitude=_head_magnitude,
        group_size=lambda mha, group: sum(
            mha.qk_dims if group == "qk" else mha.v_dims
        ),
        dropouts=lambda mha: {
            "qk": getattr(mha, "query_dropout", None),
            "v": getattr(mha, "value_dropout", None),
        },
        linears=lambda mha: [(mha, "in_proj"), (mha, "out_proj")],
        low_rank_point="attention",
    ),
)


# Conformer convolution module: group "inputs".


def bottleneck_conv(conv_module):
    """Return the pointwise Conv1d that opens a Conformer conv module.

    Arguments
    ---------
    conv_module : ConvolutionModule
        A SpeechBrain Conformer convolution module.

    Returns
    -------
    torch.nn.Conv1d
        The ``input -> 2 * input`` pointwise convolution before the GLU.

    Example
    -------
    >>> bottleneck_conv(ConvolutionModule(8, kernel_size=3)).in_channels
    8
    """
    return next(
        m for m in conv_module.bottleneck if isinstance(m, torch.nn.Conv1d)
    )


def _prune_conv_inputs(conv_module, inputs):
    gathers = [a for a in _dropouts_under(conv_module) if a.index is not None]
    if not gathers:
        raise ValueError(
            "Pruning the inputs of a convolution module needs the "
            "AdaptiveDropout that gathers them: use sb_prune.convert with "
            "the 'conv' application point"
        )
    select_linear_(bottleneck_conv(conv_module), cols=inputs)
    for adl in _dropouts_under(conv_module):
        adl.select_units(inputs)


def _set_conv_inputs(conv_module, spec):
    conv = bottleneck_conv(conv_module)
    resize_linear_(conv, conv.out_channels, spec["inputs"])


register(
    ConvolutionModule,
    ModuleSpec(
        groups=("inputs",),
        prune=_prune_conv_inputs,
        get_structure=lambda conv: {
            "inputs": bottleneck_conv(conv).in_channels
        },
        set_structure=_set_conv_inputs,
        group_size=lambda conv, group: bottleneck_conv(conv).in_channels,
        dropouts=lambda conv: {"inputs": _first_dropout(conv)},
    ),
)


# sb_prune's own modules: low rank (group "rank") and what rides along.


def _prune_rank(module, rank):
    if rank is None:
        module.densify_()
    else:
        module.select_ranks(torch.as_tensor(rank, dtype=torch.long))


def _low_rank_in_place_of(linear, record):
    if type(linear) is not torch.nn.Linear:
        return None
    return LowRankLinear(
        linear.in_features,
        linear.out_features,
        record["rank"] or 1,  # a dense record: set_structure densifies
        bias=linear.bias is not None,
    ).to(device=linear.weight.device, dtype=linear.weight.dtype)


register(
    LowRankLinear,
    _own_structure(
        LowRankLinear,
        groups=("rank",),
        prune=_prune_rank,
        group_size=lambda module, group: (
            module.rank or min(module.in_features, module.out_features)
        ),
        replaces=_low_rank_in_place_of,
    ),
)
for _type in (AdaptiveDropout, UnitSelect, ConvGroupNorm):
    register(_type, _own_structure(_type))


# Layer stacks: group "layers".

_WHISPER = "transformers.models.whisper.modeling_whisper."
for _stack in (
    ConformerEncoder,
    TransformerEncoder,
    "transformers.models.wav2vec2.modeling_wav2vec2.Wav2Vec2Encoder",
    "transformers.models.wav2vec2.modeling_wav2vec2."
    "Wav2Vec2EncoderStableLayerNorm",
    "transformers.models.hubert.modeling_hubert.HubertEncoder",
    "transformers.models.hubert.modeling_hubert.HubertEncoderStableLayerNorm",
    "transformers.models.wavlm.modeling_wavlm.WavLMEncoder",
    "transformers.models.wavlm.modeling_wavlm.WavLMEncoderStableLayerNorm",
    _WHISPER + "WhisperEncoder",
):
    register_layer_stack(_stack)


# Encoder layers: their modules, for importance and federated dropout.

register(
    ConformerEncoderLayer,
    ModuleSpec(
        groups=(),
        layer_modules={
            "ffn1": ["ffn_module1"],
            "attention": ["norm1", "mha_layer"],
            "conv": ["convolution_module"],
            "ffn2": ["ffn_module2"],
        },
    ),
)
register(
    TransformerEncoderLayer,
    ModuleSpec(
        groups=(),
        layer_modules={
            "attention": ["norm1", "self_att"],
            "ffn": ["norm2", "pos_ffn"],
        },
    ),
)
# The Hugging Face Whisper encoder layer holds its feed-forward block as
# fc1/fc2 itself: the layer is both an encoder layer and an FFN.
register(
    _WHISPER + "WhisperEncoderLayer",
    feed_forward_spec(
        lambda layer: (layer, "fc1", "fc2"),
        dropouts=lambda layer: {"hidden": _first_dropout(layer)},
        layer_modules={
            "attention": ["self_attn_layer_norm", "self_attn"],
            "ffn": ["final_layer_norm", "fc1", "fc2"],
        },
    ),
)


# Hugging Face Whisper attention: group "heads" (whole heads; Whisper's
# attention reshapes by ``num_heads`` and ``head_dim``, so heads cannot
# keep different widths). The key projection has no bias.

_WHISPER_PROJECTIONS = ("q_proj", "k_proj", "v_proj")


def _whisper_head_units(attention, heads):
    width = attention.head_dim
    heads = torch.as_tensor(heads, dtype=torch.long)
    return (heads[:, None] * width + torch.arange(width)).flatten()


def _prune_whisper_heads(attention, heads):
    units = _whisper_head_units(attention, heads)
    for name in _WHISPER_PROJECTIONS:
        select_linear_(getattr(attention, name), rows=units)
    select_linear_(attention.out_proj, cols=units)
    attention.num_heads = len(heads)


def _set_whisper_heads(attention, spec):
    width = spec["heads"] * attention.head_dim
    for name in _WHISPER_PROJECTIONS:
        linear = getattr(attention, name)
        resize_linear_(linear, width, linear.in_features)
    resize_linear_(attention.out_proj, attention.out_proj.out_features, width)
    attention.num_heads = spec["heads"]


def _per_whisper_head(attention, values):
    return values.reshape(attention.num_heads, attention.head_dim).sum(1)


def _whisper_head_magnitude(attention):
    with torch.no_grad():
        rows = attention.out_proj.weight.pow(2).sum(0)
        for name in _WHISPER_PROJECTIONS:
            linear = getattr(attention, name)
            rows = rows + linear.weight.pow(2).sum(1)
            if linear.bias is not None:
                rows = rows + linear.bias.pow(2)
        return _per_whisper_head(attention, rows).sqrt()


register(
    _WHISPER + "WhisperAttention",
    ModuleSpec(
        groups=("heads",),
        prune=_prune_whisper_heads,
        get_structure=lambda attention: {"heads": attention.num_heads},
        set_structure=_set_whisper_heads,
        criterion_group="heads",
        count=lambda attention: attention.num_heads,
        member_plan=lambda attention, kept: {"heads": kept},
        consumer=lambda attention: attention.out_proj,
        per_member=_per_whisper_head,
        magnitude=_whisper_head_magnitude,
        group_size=lambda attention, group: attention.num_heads,
        linears=lambda attention: [
            (attention, name) for name in _WHISPER_PROJECTIONS + ("out_proj",)
        ],
        low_rank_point="attention",
    ),
)

# The feed-forward blocks of the Hugging Face SSL encoders (wav2vec2,
# HuBERT, WavLM): intermediate_dense up, output_dense down.
for _ffn in (
    "transformers.models.wav2vec2.modeling_wav2vec2.Wav2Vec2FeedForward",
    "transformers.models.hubert.modeling_hubert.HubertFeedForward",
    "transformers.models.wavlm.modeling_wavlm.WavLMFeedForward",
):
    register(
        _ffn,
        feed_forward_spec(
            lambda ffn: (ffn, "intermediate_dense", "output_dense")
        ),
    )
