"""Insert adaptive dropout layers into Conformer encoder layers.

Authors
 * sb_prune developers
"""

from speechbrain.lobes.models.transformer.Conformer import ConformerEncoderLayer
from torch import nn

from sb_prune.core.validation import check_choices, check_keys
from sb_prune.methods.adaptive_dropout.layer import (
    AdaptiveDropout,
    InputMaskedLinear,
)
from sb_prune.methods.attention.convert import prunable_attention


def conformer_layers(model):
    """Return the Conformer encoder layers of a model, in order.

    Arguments
    ---------
    model : torch.nn.Module
        Any module containing SpeechBrain ``ConformerEncoderLayer`` s.

    Returns
    -------
    list of ConformerEncoderLayer
        The layers found.
    """
    return [m for m in model.modules() if isinstance(m, ConformerEncoderLayer)]


ADAPTIVE_DROPOUT_POINTS = ("ffn", "query", "value", "conv")
_ADAPTIVE_DROPOUT_OPTIONS = (
    "init_retention",
    "temperature",
    "threshold",
    "min_units",
    "hard",
    "logit_scale",
)


def adaptive_dropout_points(layer):
    """Return the AdaptiveDropout layers of a Conformer layer by point.

    Arguments
    ---------
    layer : ConformerEncoderLayer
        A layer converted by :func:`add_adaptive_dropout`.

    Returns
    -------
    dict
        ``{"ffn1", "ffn2", "query", "value", "conv"} -> AdaptiveDropout``,
        for the points that have one.
    """
    mha = layer.mha_layer
    candidates = {
        "ffn1": layer.ffn_module1,
        "ffn2": layer.ffn_module2,
        "query": getattr(mha, "query_dropout", None),
        "value": getattr(mha, "value_dropout", None),
        "conv": layer.convolution_module,
    }
    points = {}
    for point, module in candidates.items():
        found = [
            m
            for m in (module.modules() if module is not None else [])
            if isinstance(m, AdaptiveDropout)
        ]
        if found:
            points[point] = found[0]
    return points


def whisper_encoder_layers(model):
    """Return the Hugging Face Whisper encoder layers of a model, in order.

    Arguments
    ---------
    model : torch.nn.Module
        Any module.

    Returns
    -------
    list of torch.nn.Module
        The ``WhisperEncoderLayer`` s found.
    """
    return [
        m for m in model.modules() if type(m).__name__ == "WhisperEncoderLayer"
    ]


def _add_to_whisper(layers, points, options):
    """Whisper: the FFN hidden units, masked through ``fc2``."""
    if points != ["ffn"]:
        raise ValueError(
            "adaptive_dropout.points: a Whisper encoder has only the 'ffn' "
            f"point (its attention reshapes by a fixed head width), got "
            f"{points}"
        )
    for layer in layers:
        adl = AdaptiveDropout(layer.fc1.out_features, **options)
        layer.fc2 = InputMaskedLinear.from_linear(layer.fc2, adl)


def _add_to_conformer(layers, points, options):
    """Conformer: FFN hidden units, query/value units, conv inputs."""
    for layer in layers:
        if "ffn" in points:
            for block in (layer.ffn_module1, layer.ffn_module2):
                ffn = block[1].ffn
                adl = AdaptiveDropout(ffn[0].out_features, **options)
                ffn[3] = InputMaskedLinear.from_linear(ffn[3], adl)
        if "query" in points or "value" in points:
            mha = prunable_attention(layer)
            if "query" in points:
                n_qk = sum(mha.qk_dims)
                mha.query_dropout = AdaptiveDropout(n_qk, **options)
            if "value" in points:
                n_v = sum(mha.v_dims)
                mha.value_dropout = AdaptiveDropout(n_v, **options)
        if "conv" in points:
            conv = layer.convolution_module
            adl = AdaptiveDropout(
                conv.bottleneck[0].in_channels,
                dim=1,
                gathers_input=True,
                **options,
            )
            conv.bottleneck = nn.Sequential(adl, *conv.bottleneck)


def add_adaptive_dropout(model, points=ADAPTIVE_DROPOUT_POINTS, **options):
    """Insert AdaptiveDropout layers into every Conformer or Whisper layer.

    Application points (Kubo et al. 2024):

    * ``ffn``: the hidden units of both macaron feed-forward blocks,
      masked through the columns of the down projection
      (:class:`~sb_prune.methods.adaptive_dropout.layer.InputMaskedLinear`,
      cheaper than masking the activations);
    * ``query`` / ``value``: the query and value vectors of self-attention
      (per unit; a dropped query dimension also removes its key and
      positional dimensions);
    * ``conv``: the input vectors of the convolution module, after its
      layer norm. Masking there lets pruning remove input channels of the
      pointwise convolution exactly. Masking the channels that feed the
      depthwise convolution instead would not be exact in SpeechBrain,
      whose LayerNorm after the depthwise convolution normalises over all
      channels.

    A Hugging Face Whisper encoder (no Conformer layers) has the ``ffn``
    point only: the hidden units (inputs of ``fc2``).

    Arguments
    ---------
    model : torch.nn.Module
        A model containing SpeechBrain ``ConformerEncoderLayer`` s.
    points : list of str
        Application points, a subset of ``ffn, query, value, conv`` (a
        single name is a list of one).
    **options
        ``init_retention``, ``temperature``, ``threshold``, ``min_units``,
        ``hard``, ``logit_scale``: see :class:`~sb_prune.nn.AdaptiveDropout`.

    Returns
    -------
    torch.nn.Module
        The same model, converted in place.

    Example
    -------
    >>> from speechbrain.lobes.models.transformer.Conformer import (
    ...     ConformerEncoder,
    ... )
    >>> enc = add_adaptive_dropout(
    ...     ConformerEncoder(2, 8, 4, 8, attention_type="RelPosMHAXL"),
    ...     points=["ffn", "value"],
    ... )
    >>> type(enc.layers[0].mha_layer).__name__
    'PrunableRelPosMHA'
    """
    check_keys("adaptive_dropout", options, _ADAPTIVE_DROPOUT_OPTIONS)
    points = check_choices(
        "adaptive_dropout.points", points, ADAPTIVE_DROPOUT_POINTS
    )
    if any(isinstance(m, AdaptiveDropout) for m in model.modules()):
        raise ValueError("adaptive_dropout: the model is already converted")
    layers = conformer_layers(model)
    whisper = whisper_encoder_layers(model)
    if whisper and not layers:
        _add_to_whisper(whisper, points, options)
    elif not layers:
        raise ValueError(
            "adaptive_dropout: the model has no Conformer encoder layers "
            "(ConformerEncoderLayer; use encoder_module: conformer) and no "
            "Hugging Face Whisper encoder layers"
        )
    else:
        _add_to_conformer(layers, points, options)
    # New modules follow the model's device and train/eval mode.
    device = next(model.parameters()).device
    return model.to(device).train(model.training)
