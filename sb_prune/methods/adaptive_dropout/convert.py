"""Insert adaptive dropout layers into the encoder layers of a model.

Where the masks go in a layer is its family's answer (a
:class:`~sb_prune.methods.adaptive_dropout.points.MaskPoints`, see
:mod:`sb_prune.families`); this module validates the options, asks every
encoder layer of the model and converts them all, or none.

Authors
 * sb_prune developers
"""

from sb_prune.core.registry import answers_under, spec_of
from sb_prune.core.validation import check_choices, check_keys
from sb_prune.methods.adaptive_dropout.layer import AdaptiveDropout

METHOD = "adaptive_dropout"
ADAPTIVE_DROPOUT_POINTS = ("ffn", "query", "value", "conv")
_ADAPTIVE_DROPOUT_OPTIONS = (
    "init_retention",
    "temperature",
    "threshold",
    "min_units",
    "hard",
    "logit_scale",
)


def encoder_layers(model):
    """Return ``(layer, MaskPoints)`` for every encoder layer of a model.

    Arguments
    ---------
    model : torch.nn.Module
        Any model.

    Returns
    -------
    list of tuple
        In module order; raises if a layer's family has no answer.
    """
    found = answers_under(model, METHOD, lambda spec: spec.is_encoder_layer)
    return [(layer, points) for _, layer, points in found]


def masked_layers(model):
    """The encoder layers of a model that hold adaptive-dropout masks.

    Arguments
    ---------
    model : torch.nn.Module
        Any model.

    Returns
    -------
    list of tuple
        ``(layer, {label: AdaptiveDropout})`` in module order.
    """
    found = []
    for module in model.modules():
        spec = spec_of(module)
        if spec is None or not spec.is_encoder_layer:
            continue
        if METHOD in spec.answers:
            masks = spec.answers[METHOD].find(module)
            if masks:
                found.append((module, masks))
    return found


def add_adaptive_dropout(model, points=ADAPTIVE_DROPOUT_POINTS, **options):
    """Insert AdaptiveDropout layers into every encoder layer of a model.

    Application points (Kubo et al. 2024), as each family places them:

    * ``ffn``: the hidden units of the feed-forward blocks, masked through
      the columns of the down projection
      (:class:`~sb_prune.methods.adaptive_dropout.layer.InputMaskedLinear`,
      cheaper than masking the activations);
    * ``query`` / ``value``: the query and value vectors of self-attention
      (per unit; a dropped query dimension also removes its key and
      positional dimensions);
    * ``conv``: the input vectors of a Conformer convolution module, after
      its layer norm. Masking there lets pruning remove input channels of
      the pointwise convolution exactly. Masking the channels that feed
      the depthwise convolution instead would not be exact in
      SpeechBrain, whose LayerNorm after the depthwise convolution
      normalises over all channels.

    A family that cannot take a point (Whisper's attention reshapes by a
    fixed head width, so it has ``ffn`` only) refuses it by name; nothing
    is converted then.

    Arguments
    ---------
    model : torch.nn.Module
        A model with encoder layers of a family that answers
        ``adaptive_dropout``.
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
    check_keys(METHOD, options, _ADAPTIVE_DROPOUT_OPTIONS)
    points = check_choices(
        "adaptive_dropout.points", points, ADAPTIVE_DROPOUT_POINTS
    )
    if any(isinstance(m, AdaptiveDropout) for m in model.modules()):
        raise ValueError("adaptive_dropout: the model is already converted")
    layers = encoder_layers(model)
    for layer, answer in layers:
        refused = answer.refusals(layer, points)
        if refused:
            spec = spec_of(layer)
            raise ValueError(
                f"adaptive_dropout.points: the {spec.family} family's "
                f"{spec.type_name} cannot take {list(refused)}: "
                + "; ".join(refused.values())
            )
    for layer, answer in layers:
        for point in points:
            answer.insert[point](layer, options)
    # New modules follow the model's device and train/eval mode.
    device = next(model.parameters()).device
    return model.to(device).train(model.training)
