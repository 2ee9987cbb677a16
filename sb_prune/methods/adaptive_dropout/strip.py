"""Prepare a pruned model for inference.

After training, adaptive dropout has done its job: every unit it keeps has
an evaluation mask of one. :func:`strip_adaptive_dropout` removes the
layers themselves (an input-gathering layer becomes a plain
:class:`~sb_prune.methods.adaptive_dropout.layer.UnitSelect`, an
``InputMaskedLinear`` a plain ``Linear``, a mask that a module applies
itself None), so inference pays
neither for the masks nor for their parameters. The outputs do not change.

Authors
 * sb_prune developers
"""

from torch import nn

from sb_prune.core.surgery import apply_plan
from sb_prune.methods.adaptive_dropout.layer import (
    AdaptiveDropout,
    InputMaskedLinear,
    UnitSelect,
)
from sb_prune.methods.adaptive_dropout.plan import adaptive_dropout_plan


def strip_adaptive_dropout(model):
    """Prune what adaptive dropout drops, then remove its layers, in place.

    Arguments
    ---------
    model : torch.nn.Module
        A model converted with ``adaptive_dropout`` (trained or not).

    Returns
    -------
    torch.nn.Module
        The same model, computing the same evaluation outputs.

    Example
    -------
    >>> from speechbrain.lobes.models.transformer.Conformer import (
    ...     ConformerEncoder,
    ... )
    >>> from sb_prune import convert
    >>> enc = convert(
    ...     ConformerEncoder(1, 8, 4, 8, attention_type="RelPosMHAXL"),
    ...     adaptive_dropout={"points": ["ffn", "query", "conv"]},
    ... )
    >>> enc = strip_adaptive_dropout(enc)
    >>> any(isinstance(m, AdaptiveDropout) for m in enc.modules())
    False
    """
    apply_plan(model, adaptive_dropout_plan(model))
    for parent in list(model.modules()):
        for child_name, child in list(parent.named_children()):
            if isinstance(child, InputMaskedLinear):
                setattr(parent, child_name, child.to_linear())
                continue
            if not isinstance(child, AdaptiveDropout):
                continue
            if not isinstance(parent, nn.Sequential):
                # A mask the module applies itself (attention's query and
                # value masks): it checks for None.
                replacement = None
            elif child.index is not None:
                replacement = UnitSelect(child.index, child.dim)
            else:
                replacement = nn.Identity()
            setattr(parent, child_name, replacement)
    return model
