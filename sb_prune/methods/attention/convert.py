"""Make self-attention prunable head by head and unit by unit.

Which attention types convert, and into what, is each family's answer to
``prunable_attention`` (SpeechBrain's ``RelPosMHAXL`` and
``MultiheadAttention`` become :class:`~sb_prune.nn.PrunableRelPosMHA` and
:class:`~sb_prune.nn.PrunableMHA`; attention that already keeps its heads
whole, as Hugging Face Whisper's, is prunable as it is).

Authors
 * sb_prune developers
"""

from sb_prune.core.registry import answers_under, spec_of

METHOD = "prunable_attention"


def _replace(model, places):
    for path, module, convert_one in places:
        if not path:
            raise ValueError("sb_prune.convert cannot replace the model itself")
        parent_path, _, name = path.rpartition(".")
        setattr(model.get_submodule(parent_path), name, convert_one(module))


def swap_prunable_attention(model):
    """Swap the attention modules that a family converts, if any.

    Arguments
    ---------
    model : torch.nn.Module
        Any model, converted in place.

    Returns
    -------
    bool
        Whether any attention was converted.
    """
    places = []
    for path, module in model.named_modules():
        spec = spec_of(module)
        if spec is not None and METHOD in spec.answers:
            places.append((path, module, spec.answers[METHOD]))
    _replace(model, places)
    return bool(places)


def add_prunable_attention(model):
    """Make every self-attention module prunable, head by head.

    SpeechBrain's ``RelPosMHAXL`` becomes a
    :class:`~sb_prune.nn.PrunableRelPosMHA` and its ``regularMHA``
    (``MultiheadAttention``) a :class:`~sb_prune.nn.PrunableMHA`; both
    compute the same outputs as before, with the same parameter values laid
    out per unit. Attention modules that are already prunable are left as
    they are.

    Arguments
    ---------
    model : torch.nn.Module
        A model whose family answers ``prunable_attention`` (SpeechBrain
        Conformer/Transformer encoder, TransformerLM).

    Returns
    -------
    torch.nn.Module
        The same model, converted in place.

    Example
    -------
    >>> from speechbrain.lobes.models.transformer.TransformerLM import (
    ...     TransformerLM,
    ... )
    >>> lm = TransformerLM(10, d_model=8, nhead=2, num_encoder_layers=1,
    ...                    d_ffn=16)
    >>> lm = add_prunable_attention(lm)
    >>> type(lm.encoder.layers[0].self_att).__name__
    'PrunableMHA'
    """
    places = answers_under(
        model,
        METHOD,
        missing="the model has no RelPosMHAXL or regularMHA attention "
        "(attention_type: RelPosMHAXL or regularMHA)",
    )
    _replace(model, places)
    return model
