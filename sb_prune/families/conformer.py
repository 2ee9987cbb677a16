"""The SpeechBrain Conformer family.

``speechbrain.lobes.models.transformer.Conformer``: the encoder (a layer
stack; I3D gates it as a
:class:`~sb_prune.families.conformer_gated.GatedConformerEncoder`), its
layers (modules ``ffn1``, ``attention``, ``conv``, ``ffn2``; adaptive
dropout at ``ffn``, ``query``, ``value``, ``conv``) and the convolution
module (group ``inputs``: input channels of its pointwise convolution,
gathered by adaptive dropout; ``conv_norm`` replaces the LayerNorm after
its depthwise convolution). Attention and feed-forward blocks are the
SpeechBrain Transformer family's.

Authors
 * sb_prune developers
"""

import torch
from speechbrain.lobes.models.transformer.Conformer import (
    ConformerEncoder,
    ConformerEncoderLayer,
    ConvolutionModule,
)
from torch import nn

from sb_prune.core.inplace import resize_linear_, select_linear_
from sb_prune.core.registry import Family, ModuleSpec, layer_stack_spec
from sb_prune.families.common import dropouts_under, first_dropout
from sb_prune.families.conformer_gated import GatedConformerEncoder
from sb_prune.families.speechbrain_transformer import attention_points
from sb_prune.methods.adaptive_dropout.points import (
    MaskPoints,
    mask_hidden_units,
    mask_input_channels,
    masks_by_label,
)

FAMILY = Family("SpeechBrain Conformer")


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
    gathers = [a for a in dropouts_under(conv_module) if a.index is not None]
    if not gathers:
        raise ValueError(
            "Pruning the inputs of a convolution module needs the "
            "AdaptiveDropout that gathers them: use sb_prune.convert with "
            "the 'conv' application point"
        )
    select_linear_(bottleneck_conv(conv_module), cols=inputs)
    for adl in dropouts_under(conv_module):
        adl.select_units(inputs)


def _set_conv_inputs(conv_module, spec):
    conv = bottleneck_conv(conv_module)
    resize_linear_(conv, conv.out_channels, spec["inputs"])


def _remember_mask(conv_module, args, kwargs):
    """Forward pre-hook: hand the padding mask to the module's norm."""
    mask = args[1] if len(args) > 1 else kwargs.get("mask")
    conv_module.after_conv[0].padding_mask = mask


def _forget_mask(conv_module, args, kwargs, output):
    """Forward hook: drop the mask once the module has run."""
    conv_module.after_conv[0].padding_mask = None


def _replace_conv_norm(conv_module, build):
    """The ``conv_norm`` answer: a new norm after the depthwise conv.

    SpeechBrain's LayerNorm is ``after_conv[0]``; the module's padding mask
    (its second argument) is handed to the new norm while it runs.
    """
    old = conv_module.after_conv[0]
    if not isinstance(old, nn.LayerNorm):
        raise ValueError(
            "conv_norm: expected a LayerNorm at after_conv[0] of the "
            f"convolution module, found {type(old).__name__}"
        )
    new = build(old.normalized_shape[0])
    conv_module.after_conv[0] = new.to(old.weight.device).train(old.training)
    conv_module.register_forward_pre_hook(_remember_mask, with_kwargs=True)
    conv_module.register_forward_hook(_forget_mask, with_kwargs=True)


FAMILY.register(
    ConvolutionModule,
    ModuleSpec(
        groups=("inputs",),
        prune=_prune_conv_inputs,
        get_structure=lambda conv: {
            "inputs": bottleneck_conv(conv).in_channels
        },
        set_structure=_set_conv_inputs,
        group_size=lambda conv, group: bottleneck_conv(conv).in_channels,
        dropouts=lambda conv: {"inputs": first_dropout(conv)},
        answers={"conv_norm": _replace_conv_norm},
    ),
)


def _mask_ffn(layer, options):
    for block in (layer.ffn_module1, layer.ffn_module2):
        mask_hidden_units(block[1].ffn, "3", options)


def _mask_conv(layer, options):
    conv = layer.convolution_module
    mask_input_channels(
        conv, "bottleneck", bottleneck_conv(conv).in_channels, options
    )


def _masks(layer):
    mha = layer.mha_layer
    return masks_by_label(
        {
            "ffn1": layer.ffn_module1,
            "ffn2": layer.ffn_module2,
            "query": getattr(mha, "query_dropout", None),
            "value": getattr(mha, "value_dropout", None),
            "conv": layer.convolution_module,
        }
    )


_ATTENTION_INSERT, _ATTENTION_UNAVAILABLE = attention_points("mha_layer")
FAMILY.register(
    ConformerEncoderLayer,
    ModuleSpec(
        groups=(),
        layer_modules={
            "ffn1": ["ffn_module1"],
            "attention": ["norm1", "mha_layer"],
            "conv": ["convolution_module"],
            "ffn2": ["ffn_module2"],
        },
        answers={
            "adaptive_dropout": MaskPoints(
                insert={
                    "ffn": _mask_ffn,
                    **_ATTENTION_INSERT,
                    "conv": _mask_conv,
                },
                find=_masks,
                unavailable=_ATTENTION_UNAVAILABLE,
            )
        },
    ),
)
FAMILY.register(
    ConformerEncoder,
    layer_stack_spec(
        answers={"dynamic_depth": GatedConformerEncoder.from_encoder}
    ),
)
