"""The SpeechBrain Transformer family, and the blocks its relatives share.

SpeechBrain's Transformer encoder and decoder
(``speechbrain.lobes.models.transformer.Transformer``, also the encoder of
``TransformerLM``), and the attention and feed-forward blocks that the
Conformer and Branchformer families build on:

* ``PositionalwiseFeedForward``: group ``hidden`` (criterion group
  ``ffn``);
* ``MultiheadAttention`` and ``RelPosMHAXL``: made prunable head by head
  and unit by unit (``prunable_attention``) as
  :class:`~sb_prune.nn.PrunableMHA` / :class:`~sb_prune.nn.PrunableRelPosMHA`
  (same outputs, weights laid out per unit);
* ``TransformerEncoder`` and ``TransformerDecoder``: layer stacks (groups
  ``layers`` / ``decoder_layers``);
* ``TransformerEncoderLayer``: adaptive-dropout points ``ffn`` and, with
  ``RelPosMHAXL`` attention, ``query`` / ``value``.

Authors
 * sb_prune developers
"""

from speechbrain.lobes.models.transformer.Transformer import (
    TransformerDecoder,
    TransformerDecoderLayer,
    TransformerEncoder,
    TransformerEncoderLayer,
)
from speechbrain.nnet.attention import (
    MultiheadAttention,
    PositionalwiseFeedForward,
    RelPosMHAXL,
)

from sb_prune.core.registry import Family, ModuleSpec, layer_stack_spec
from sb_prune.families.common import feed_forward_spec, first_dropout
from sb_prune.methods.adaptive_dropout.points import (
    MaskPoints,
    mask_attention_units,
    mask_hidden_units,
    masks_by_label,
)
from sb_prune.methods.attention.mha import PrunableMHA
from sb_prune.methods.attention.relpos import PrunableRelPosMHA

FAMILY = Family("SpeechBrain Transformer")

#: Why a layer is not gated by I3D (``dynamic_depth``).
NO_GATES = (
    "no ungated Conformer encoder: I3D gates the residual branches of "
    "SpeechBrain Conformer layers only (encoder_module: conformer)"
)

FAMILY.register(
    PositionalwiseFeedForward,
    feed_forward_spec(
        lambda ffn: (ffn.ffn, "0", str(len(ffn.ffn) - 1)),
        dropouts=lambda ffn: {"hidden": first_dropout(ffn)},
    ),
)
FAMILY.register(
    RelPosMHAXL,
    ModuleSpec(
        groups=(),
        answers={"prunable_attention": PrunableRelPosMHA.from_relposmhaxl},
    ),
)
FAMILY.register(
    MultiheadAttention,
    ModuleSpec(
        groups=(),
        answers={"prunable_attention": PrunableMHA.from_multihead},
    ),
)


def _not_unit_prunable(mha):
    """Why ``mha`` takes no per-unit masks (None if it does)."""
    if isinstance(mha, (RelPosMHAXL, PrunableRelPosMHA)):
        return None
    return (
        "sb_prune prunes attention of type RelPosMHAXL (attention_type: "
        f"RelPosMHAXL) unit by unit, not {type(mha).__name__}"
    )


def unit_prunable_attention(layer, name):
    """Make ``layer.<name>`` a PrunableRelPosMHA and return it.

    The attention that takes per-unit adaptive-dropout masks. A
    ``RelPosMHAXL`` is replaced by its equivalent; any other type is
    refused, naming it.

    Arguments
    ---------
    layer : torch.nn.Module
        A Conformer or Transformer encoder layer.
    name : str
        The attribute of its self-attention.

    Returns
    -------
    PrunableRelPosMHA
        The layer's attention.
    """
    mha = getattr(layer, name)
    reason = _not_unit_prunable(mha)
    if reason is not None:
        raise ValueError(reason)
    if isinstance(mha, RelPosMHAXL):
        mha = PrunableRelPosMHA.from_relposmhaxl(mha)
        setattr(layer, name, mha)
    return mha


def attention_points(name):
    """Adaptive-dropout ``query`` / ``value`` points of ``layer.<name>``.

    Arguments
    ---------
    name : str
        The attribute of the layer's self-attention.

    Returns
    -------
    insert : dict
        ``{"query": insert, "value": insert}``, for
        :class:`~sb_prune.methods.adaptive_dropout.points.MaskPoints`.
    unavailable : callable
        Its ``unavailable``: a layer whose attention is not
        ``RelPosMHAXL`` takes neither point.
    """

    def insert(point):
        return lambda layer, options: mask_attention_units(
            unit_prunable_attention(layer, name), point, options
        )

    def unavailable(layer):
        reason = _not_unit_prunable(getattr(layer, name))
        return {} if reason is None else {"query": reason, "value": reason}

    return {"query": insert("query"), "value": insert("value")}, unavailable


def _attention_masks(mha):
    return {
        "query": getattr(mha, "query_dropout", None),
        "value": getattr(mha, "value_dropout", None),
    }


_ATTENTION_INSERT, _ATTENTION_UNAVAILABLE = attention_points("self_att")
FAMILY.register(
    TransformerEncoderLayer,
    ModuleSpec(
        groups=(),
        layer_modules={
            "attention": ["norm1", "self_att"],
            "ffn": ["norm2", "pos_ffn"],
        },
        answers={
            "adaptive_dropout": MaskPoints(
                insert={
                    "ffn": lambda layer, options: mask_hidden_units(
                        layer.pos_ffn.ffn, "3", options
                    ),
                    **_ATTENTION_INSERT,
                },
                find=lambda layer: masks_by_label(
                    {"ffn": layer.pos_ffn, **_attention_masks(layer.self_att)}
                ),
                refused={"conv": "a Transformer layer has no convolution"},
                unavailable=_ATTENTION_UNAVAILABLE,
            )
        },
    ),
)
FAMILY.register(
    TransformerDecoderLayer,
    ModuleSpec(
        groups=(),
        role="decoder",
        layer_modules={
            "self_attention": ["norm1", "self_attn"],
            "cross_attention": ["norm2", "multihead_attn"],
            "ffn": ["norm3", "pos_ffn"],
        },
    ),
)
FAMILY.register(
    TransformerEncoder,
    layer_stack_spec(refusals={"dynamic_depth": NO_GATES}),
)
FAMILY.register(TransformerDecoder, layer_stack_spec(role="decoder"))
