"""Insert sb_prune modules into an existing SpeechBrain model.

:func:`convert` works in place and returns the model, so an existing
hparams file only has to wrap the model it already builds::

    Transformer: !apply:sb_prune.convert
        model: !ref <Transformer_dense>
        adaptive_dropout:
            points: [ffn, query, value, conv]

Converted modules keep the parameter names of the modules they extend, so
load dense pretrained weights before converting (``sb-prune compress`` does
this for you); sb_prune checkpoints are loaded after converting.

Authors
 * sb_prune developers
"""

import inspect

from sb_prune.core.names import resolve
from sb_prune.core.validation import check_keys
from sb_prune.methods.table import converters


def _check_options(name, converter, options):
    """Name unknown options of a converter that takes a fixed set."""
    parameters = list(inspect.signature(converter).parameters.values())[1:]
    if all(p.kind != p.VAR_KEYWORD for p in parameters):
        check_keys(name, options, [p.name for p in parameters])


def convert(model, **methods):
    """Insert sb_prune modules into ``model`` (in place) and return it.

    Arguments
    ---------
    model : torch.nn.Module
        A SpeechBrain model (e.g. ``TransformerASR`` with a Conformer
        encoder).
    **methods
        One keyword per method (the ``convert`` entries of
        :mod:`sb_prune.methods.table`), each a mapping of its options:
        ``adaptive_dropout`` (see :func:`add_adaptive_dropout`),
        ``prunable_attention`` (no options, see
        :func:`add_prunable_attention`), ``low_rank`` (see
        :func:`add_low_rank`), ``conv_norm`` (see
        :func:`~sb_prune.methods.conv_norm.group_norm.set_conv_norm`),
        ``dynamic_depth`` (I3D gates, see
        :func:`~sb_prune.methods.i3d.convert.add_dynamic_depth`).

    Returns
    -------
    torch.nn.Module
        The converted model.

    Example
    -------
    >>> from speechbrain.lobes.models.transformer.TransformerASR import (
    ...     TransformerASR,
    ... )
    >>> model = TransformerASR(
    ...     tgt_vocab=10, input_size=8, d_model=8, nhead=2,
    ...     num_encoder_layers=1, num_decoder_layers=0, d_ffn=16,
    ...     encoder_module="conformer", attention_type="RelPosMHAXL",
    ...     normalize_before=True, causal=False,
    ... )
    >>> model = convert(model, adaptive_dropout={"points": ["ffn"]})
    >>> convert(model, pruning={})
    Traceback (most recent call last):
    ...
    ValueError: sb_prune.convert: unknown method(s) ['pruning']; ...
    """
    known = converters()
    unknown = sorted(set(methods) - set(known))
    if unknown:
        raise ValueError(
            f"sb_prune.convert: unknown method(s) {unknown}; valid methods "
            f"are {sorted(known)}"
        )
    for name, options in methods.items():
        converter = resolve(known[name])
        _check_options(name, converter, options or {})
        converter(model, **(options or {}))
        # Remembered so that exports can rebuild the architecture.
        history = recorded_conversions(model) + [(name, dict(options or {}))]
        model._sb_prune_conversions = history
    return model


def recorded_conversions(model):
    """Return the ``(method, options)`` pairs :func:`convert` applied.

    Arguments
    ---------
    model : torch.nn.Module
        A model passed to :func:`convert` (or not).

    Returns
    -------
    list
        In the order they were applied (empty if none).
    """
    return list(getattr(model, "_sb_prune_conversions", []))
