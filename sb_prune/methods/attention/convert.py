"""Make SpeechBrain self-attention prunable head by head and unit by unit.

Authors
 * sb_prune developers
"""

from speechbrain.nnet.attention import MultiheadAttention, RelPosMHAXL

from sb_prune.methods.attention.mha import PrunableMHA
from sb_prune.methods.attention.relpos import PrunableRelPosMHA


def prunable_attention(layer):
    """Return the layer's attention as a :class:`PrunableRelPosMHA`.

    A SpeechBrain ``RelPosMHAXL`` is replaced by an equivalent prunable
    module (same outputs, weights re-laid out per unit).

    Arguments
    ---------
    layer : ConformerEncoderLayer
        The layer whose ``mha_layer`` is converted in place.

    Returns
    -------
    PrunableRelPosMHA
        The layer's attention module.
    """
    mha = layer.mha_layer
    if isinstance(mha, RelPosMHAXL):
        layer.mha_layer = mha = PrunableRelPosMHA.from_relposmhaxl(mha)
    if not isinstance(mha, PrunableRelPosMHA):
        raise ValueError(
            "sb_prune prunes attention of type RelPosMHAXL "
            f"(attention_type: RelPosMHAXL), not {type(mha).__name__}"
        )
    return mha


def _replace_modules(model, convert_one):
    """Swap every module for which ``convert_one`` returns a new one."""
    for path, module in list(model.named_modules()):
        new = convert_one(module)
        if new is None:
            continue
        if not path:
            raise ValueError("sb_prune.convert cannot replace the model itself")
        parent_path, _, name = path.rpartition(".")
        setattr(model.get_submodule(parent_path), name, new)


def _prunable_equivalent(module):
    if isinstance(module, RelPosMHAXL):
        return PrunableRelPosMHA.from_relposmhaxl(module)
    if isinstance(module, MultiheadAttention):
        return PrunableMHA.from_multihead(module)
    return None


def swap_speechbrain_attention(model):
    """Swap SpeechBrain's attention modules for prunable ones, if any.

    Arguments
    ---------
    model : torch.nn.Module
        Any model, converted in place.

    Returns
    -------
    bool
        Whether the model now has prunable SpeechBrain attention.
    """
    _replace_modules(model, _prunable_equivalent)
    return any(
        isinstance(m, (PrunableMHA, PrunableRelPosMHA)) for m in model.modules()
    )


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
        A SpeechBrain model (Conformer/Transformer encoder, TransformerLM).

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
    if not swap_speechbrain_attention(model):
        raise ValueError(
            "prunable_attention: the model has no RelPosMHAXL or regularMHA "
            "attention (attention_type: RelPosMHAXL or regularMHA)"
        )
    return model
