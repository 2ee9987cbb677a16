"""Gate the encoders of a model (I3D), as ``sb_prune.convert`` does.

Authors
 * sb_prune developers
"""

from sb_prune.core.registry import answers_under
from sb_prune.core.validation import check_keys
from sb_prune.methods.i3d.gating import DYNAMIC_DEPTH_OPTIONS

METHOD = "dynamic_depth"


def add_dynamic_depth(model, **options):
    """Gate every encoder of ``model`` (I3D), in place.

    Each encoder layer stack is replaced, where the model holds it, by the
    gated encoder its family builds from it (the family's answer to
    ``dynamic_depth``, e.g.
    :meth:`~sb_prune.families.conformer_gated.GatedConformerEncoder.from_encoder`):
    same weights and parameter names, so a trained dense model can be
    converted, then fine-tuned. A family without gated classes refuses by
    name. The model itself cannot be the encoder. This is the
    ``dynamic_depth`` method of :func:`sb_prune.convert`::

        Transformer: !apply:sb_prune.convert
            model: !ref <Transformer_dense>
            dynamic_depth:
                predictor: local        # or global
                gates: [attention, conv, ffn]
                target: 0.5

    Arguments
    ---------
    model : torch.nn.Module
        A model holding encoders of a family that answers
        ``dynamic_depth`` (e.g. a ``TransformerASR`` with
        ``encoder_module: conformer``).
    **options
        The gating options of
        :class:`~sb_prune.methods.i3d.gating.GatedEncoder`:
        ``predictor``, ``gates``, ``predictor_hidden``, ``temperature``,
        ``threshold``, ``target``, ``regularization_weight``,
        ``init_probability``, ``gate_costs``.

    Returns
    -------
    torch.nn.Module
        The same model.

    Example
    -------
    >>> from speechbrain.lobes.models.transformer.TransformerASR import (
    ...     TransformerASR,
    ... )
    >>> model = TransformerASR(
    ...     tgt_vocab=10, input_size=8, d_model=8, nhead=2,
    ...     num_encoder_layers=2, num_decoder_layers=0, d_ffn=16,
    ...     encoder_module="conformer", attention_type="RelPosMHAXL",
    ...     normalize_before=True, causal=False,
    ... )
    >>> model = add_dynamic_depth(model, predictor="global", target=0.5)
    >>> type(model.encoder).__name__
    'GatedConformerEncoder'
    >>> add_dynamic_depth(model, threshold=0.5)
    Traceback (most recent call last):
    ...
    ValueError: dynamic_depth: the encoder is already gated
    """
    check_keys(METHOD, options, DYNAMIC_DEPTH_OPTIONS)
    places = answers_under(
        model,
        METHOD,
        lambda spec: spec.is_layer_stack and spec.role == "encoder",
    )
    if any(path == "" for path, _, _ in places):
        raise ValueError(
            "dynamic_depth: the model is the encoder itself, which cannot be "
            "replaced in place; convert the model that holds it, or use its "
            "gated class's from_encoder"
        )
    gated = {
        id(encoder): gate(encoder, **options) for _, encoder, gate in places
    }
    # An encoder held at several paths is converted once, replaced at all.
    for path, module in list(model.named_modules(remove_duplicate=False)):
        if id(module) in gated:
            parent, _, name = path.rpartition(".")
            setattr(model.get_submodule(parent), name, gated[id(module)])
    return model
