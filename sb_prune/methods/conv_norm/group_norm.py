"""Group normalisation for the convolution module of Conformer layers.

The Conformer paper normalises the depthwise convolution's output with
BatchNorm; SpeechBrain uses a LayerNorm there (where it is, and how the
padding mask reaches the new norm, is the family's answer to
``conv_norm``). Zhou et al. (2022) show that GroupNorm (Wu and He, 2018)
keeps the ambient layers of a Conformer, while batch statistics blur the
re-initialisation test.
:class:`ConvGroupNorm` normalises each group of channels over time and
the group's channels, like Lingvo's ``GroupNormLayer`` in its Conformer
``LConvLayer``: padded frames are left out of the statistics (the
convolution module's padding mask is handed to it by a forward pre-hook),
so the output of an utterance does not depend on the batch it is in.

Use it from YAML through :func:`sb_prune.convert`::

    Transformer: !apply:sb_prune.convert
        model: !ref <Transformer_dense>
        conv_norm: {norm: group, groups: 4}

Authors
 * sb_prune developers
"""

import torch
from torch import nn

from sb_prune.core.registry import answers_under
from sb_prune.core.validation import check_choice, check_int, check_number

CONV_NORMS = ("layer", "group")


class ConvGroupNorm(nn.Module):
    """GroupNorm over time and channel groups for ``[batch, time, channels]``.

    Arguments
    ---------
    num_channels : int
        Number of channels (the model dimension).
    num_groups : int
        Number of groups; must divide ``num_channels``.
    eps : float
        Added to the variance.

    Example
    -------
    >>> norm = ConvGroupNorm(8, 2)
    >>> x = torch.randn(2, 5, 8)
    >>> mask = torch.zeros(2, 5, 1, dtype=torch.bool)
    >>> mask[1, 3:] = True  # the second utterance has 3 frames
    >>> norm.padding_mask = mask
    >>> y = norm(x)
    >>> norm.padding_mask = None
    >>> torch.allclose(y[1, :3], norm(x[1:, :3])[0], atol=1e-5)
    True
    """

    def __init__(self, num_channels, num_groups, eps=1e-5):
        super().__init__()
        check_int("conv_norm.groups", num_groups, minimum=1)
        check_number("conv_norm.eps", eps, low=0, open_low=True)
        if num_channels % num_groups:
            raise ValueError(
                f"conv_norm.groups ({num_groups}) must divide the number of "
                f"channels ({num_channels})"
            )
        self.norm = nn.GroupNorm(num_groups, num_channels, eps=eps)
        self.padding_mask = None

    @property
    def num_groups(self):
        """The number of channel groups."""
        return self.norm.num_groups

    def forward(self, x):
        """Normalise ``x`` of shape ``[batch, time, channels]``."""
        mask = self.padding_mask
        if mask is None or tuple(mask.shape[:2]) != tuple(x.shape[:2]):
            return self.norm(x.transpose(1, 2)).transpose(1, 2)
        batch, time, channels = x.shape
        groups = self.norm.num_groups
        valid = (~mask.reshape(batch, time, 1, 1)).to(x.dtype)
        grouped = x.reshape(batch, time, groups, channels // groups)
        count = valid.sum(dim=1, keepdim=True).clamp(min=1) * (
            channels // groups
        )
        mean = (grouped * valid).sum(dim=(1, 3), keepdim=True) / count
        centred = grouped - mean
        var = (centred.pow(2) * valid).sum(dim=(1, 3), keepdim=True) / count
        out = (centred * torch.rsqrt(var + self.norm.eps)).reshape(
            batch, time, channels
        )
        return out * self.norm.weight + self.norm.bias

    def get_structure(self):
        """Return the number of groups (the structure record)."""
        return {"groups": self.num_groups}

    def set_structure(self, spec):
        """Set the number of groups of a structure record."""
        self.norm.num_groups = int(spec["groups"])

    def extra_repr(self):
        return f"groups={self.num_groups}, channels={self.norm.num_channels}"


def set_conv_norm(model, norm="group", groups=4, eps=1e-5):
    """Choose the norm after the depthwise conv of every convolution module.

    Arguments
    ---------
    model : torch.nn.Module
        A model whose family answers ``conv_norm`` (SpeechBrain Conformer
        ``ConvolutionModule`` s).
    norm : str
        ``group``: replace their LayerNorm by :class:`ConvGroupNorm`
        (weights 1, biases 0, as a fresh norm); ``layer``: keep
        SpeechBrain's LayerNorm (the model is left unchanged).
    groups : int
        Number of channel groups of the GroupNorm; must divide the model
        dimension.
    eps : float
        Added to the variance.

    Returns
    -------
    torch.nn.Module
        The same model, converted in place.

    Example
    -------
    >>> from speechbrain.lobes.models.transformer.Conformer import (
    ...     ConformerEncoder,
    ... )
    >>> enc = set_conv_norm(ConformerEncoder(1, 8, 4, 8), groups=2)
    >>> enc.layers[0].convolution_module.after_conv[0]
    ConvGroupNorm(
      groups=2, channels=8
      (norm): GroupNorm(2, 8, eps=1e-05, affine=True...)
    )
    >>> set_conv_norm(enc, norm="batch")
    Traceback (most recent call last):
    ...
    ValueError: conv_norm.norm must be one of ['layer', 'group'], got 'batch'
    >>> set_conv_norm(enc, groups="2")
    Traceback (most recent call last):
    ...
    ValueError: conv_norm.groups must be an integer >= 1, got '2'
    """
    check_choice("conv_norm.norm", norm, CONV_NORMS)
    check_int("conv_norm.groups", groups, minimum=1)
    check_number("conv_norm.eps", eps, low=0, open_low=True)
    places = answers_under(
        model,
        "conv_norm",
        missing="no convolution module with a norm after its depthwise "
        "convolution (SpeechBrain Conformer layers have one)",
    )
    if norm == "layer":
        return model
    if any(isinstance(m, ConvGroupNorm) for m in model.modules()):
        raise ValueError("conv_norm: the model is already converted")
    for _, conv, replace_norm in places:
        replace_norm(
            conv, lambda channels: ConvGroupNorm(channels, groups, eps=eps)
        )
    return model
