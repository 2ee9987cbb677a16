"""The structure record: what survives pruning, as plain JSON.

A structure record maps module paths to the sizes that pruning can change
(hidden units of a feed-forward block, per-head attention widths, inputs of
a convolution module, number of layers of an encoder, ranks...). It is saved
with every checkpoint; before a checkpoint is loaded, the freshly built
dense model is reshaped to the record, so the checkpoint fits.

Sizes are read and written through a registry that maps a module type to a
pair of functions ``(get_structure, set_structure)``. sb_prune's own modules
implement ``get_structure()`` / ``set_structure(spec)`` methods; SpeechBrain
modules are registered below. Register your own module types with
:func:`register_structure`. ``set_structure`` resizes tensors to the
recorded sizes with placeholder values (the checkpoint load fills them), so
a module can grow back to an older, larger structure as well as shrink.

Authors
 * sb_prune developers
"""

import copy

import torch
from speechbrain.lobes.models.transformer.Conformer import (
    ConformerEncoder,
    ConvolutionModule,
)
from speechbrain.lobes.models.transformer.Transformer import TransformerEncoder
from speechbrain.nnet.attention import PositionalwiseFeedForward

from sb_prune.inplace import resize_linear_

_HANDLERS = {}


def register_structure(module_type, get_structure, set_structure):
    """Teach the structure record about a module type.

    Arguments
    ---------
    module_type : type
        The class (subclasses are matched too).
    get_structure : callable
        ``module -> dict`` of JSON-serialisable sizes.
    set_structure : callable
        ``(module, dict) -> None``, resizing the module in place.

    Example
    -------
    >>> register_structure(
    ...     torch.nn.Embedding,
    ...     lambda m: {"rows": m.num_embeddings},
    ...     lambda m, spec: None,
    ... )
    >>> describe(torch.nn.ModuleDict({"emb": torch.nn.Embedding(5, 2)}))
    {'emb': {'type': 'Embedding', 'rows': 5}}
    >>> _ = _HANDLERS.pop(torch.nn.Embedding)
    """
    _HANDLERS[module_type] = (get_structure, set_structure)


def _handler(module):
    if hasattr(module, "get_structure"):
        return type(module).get_structure, type(module).set_structure
    for module_type in type(module).__mro__:
        if module_type in _HANDLERS:
            return _HANDLERS[module_type]
    return None


def describe(root):
    """Return the structure record of every registered module under root.

    Arguments
    ---------
    root : torch.nn.Module
        Usually a ``ModuleDict`` of the Brain's (unwrapped) modules.

    Returns
    -------
    dict
        ``{path: {"type": class name, **sizes}}``.

    Example
    -------
    >>> from speechbrain.nnet.attention import PositionalwiseFeedForward
    >>> ffn = PositionalwiseFeedForward(d_ffn=8, input_size=4)
    >>> describe(torch.nn.ModuleDict({"ffn": ffn}))
    {'ffn': {'type': 'PositionalwiseFeedForward', 'hidden': 8}}
    """
    record = {}
    for path, module in root.named_modules():
        handler = _handler(module)
        if handler is not None:
            record[path] = {"type": type(module).__name__, **handler[0](module)}
    return record


def restore(root, record):
    """Reshape the modules under ``root`` to a structure record.

    Parents are reshaped before children, so a layer stack grows or shrinks
    before the layers inside it are resized.

    Arguments
    ---------
    root : torch.nn.Module
        The same root that :func:`describe` was given.
    record : dict
        A record from :func:`describe`.

    Returns
    -------
    bool
        Whether any module changed.

    Example
    -------
    >>> from speechbrain.nnet.attention import PositionalwiseFeedForward
    >>> root = torch.nn.ModuleDict(
    ...     {"ffn": PositionalwiseFeedForward(d_ffn=8, input_size=4)}
    ... )
    >>> spec = {"type": "PositionalwiseFeedForward", "hidden": 3}
    >>> restore(root, {"ffn": spec})
    True
    >>> root["ffn"].ffn[0]
    Linear(in_features=4, out_features=3, bias=True)
    """
    changed = False
    for path in sorted(record, key=lambda p: (p.count(".") if p else -1, p)):
        spec = dict(record[path])
        expected_type = spec.pop("type")
        try:
            module = root.get_submodule(path)
        except AttributeError as error:
            raise ValueError(
                f"The structure record names the module '{path}', which the "
                "model does not have: build the model with the same "
                "sb_prune.convert options as the checkpoint"
            ) from error
        if type(module).__name__ != expected_type:
            raise ValueError(
                f"The structure record expects a {expected_type} at "
                f"'{path}' but the model has a {type(module).__name__}: "
                "build the model with the same sb_prune.convert options as "
                "the checkpoint"
            )
        get, set_ = _handler(module)
        if get(module) != spec:
            set_(module, spec)
            changed = True
    return changed


def summarize(record):
    """Return one line per recorded module: its path and sizes.

    Arguments
    ---------
    record : dict
        A record from :func:`describe`.

    Returns
    -------
    str
        A readable table of the surviving structure.

    Example
    -------
    >>> print(summarize({"a.ffn": {"type": "FFN", "hidden": 3}}))
    a.ffn  FFN  hidden=3
    """
    lines = []
    for path, spec in record.items():
        sizes = " ".join(f"{k}={v}" for k, v in spec.items() if k != "type")
        lines.append(f"{path}  {spec['type']}  {sizes}")
    return "\n".join(lines)


def _ffn_linears(ffn):
    return ffn.ffn[0], ffn.ffn[-1]


def _set_ffn(ffn, spec):
    up, down = _ffn_linears(ffn)
    resize_linear_(up, spec["hidden"], up.in_features)
    resize_linear_(down, down.out_features, spec["hidden"])


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
    """
    return next(
        m for m in conv_module.bottleneck if isinstance(m, torch.nn.Conv1d)
    )


def _set_conv_inputs(conv_module, spec):
    conv = bottleneck_conv(conv_module)
    resize_linear_(conv, conv.out_channels, spec["inputs"])


def _set_layers(encoder, spec):
    layers = list(encoder.layers)
    wanted = spec["layers"]
    while len(layers) < wanted:
        layers.append(copy.deepcopy(layers[-1]))
    encoder.layers = torch.nn.ModuleList(layers[:wanted])


register_structure(
    PositionalwiseFeedForward,
    lambda ffn: {"hidden": _ffn_linears(ffn)[0].out_features},
    _set_ffn,
)
register_structure(
    ConvolutionModule,
    lambda conv: {"inputs": bottleneck_conv(conv).in_channels},
    _set_conv_inputs,
)
for _encoder_type in (ConformerEncoder, TransformerEncoder):
    register_structure(
        _encoder_type, lambda enc: {"layers": len(enc.layers)}, _set_layers
    )
