"""The structure record: what survives pruning, as plain JSON.

A structure record maps module paths to the sizes that pruning can change
(hidden units of a feed-forward block, per-head attention widths, inputs of
a convolution module, number of layers of an encoder, ranks...). It is saved
with every checkpoint; before a checkpoint is loaded, the freshly built
dense model is reshaped to the record, so the checkpoint fits. A module
whose recorded type differs is replaced when the recorded type's spec says
it ``replaces`` it (a Linear factorised during training becomes a
LowRankLinear of the recorded rank).

Sizes are read and written by the ``get_structure`` / ``set_structure`` of
each module type's spec (:mod:`sb_prune.core.registry`). ``set_structure``
resizes tensors to the recorded sizes with placeholder values (the
checkpoint load fills them), so a module can grow back to an older, larger
structure as well as shrink.

Authors
 * sb_prune developers
"""

from sb_prune.core.registry import (
    how_to_register,
    qualified_name,
    spec_named,
    spec_of,
    type_matches,
)


def _structure_spec(module):
    spec = spec_of(module)
    if spec is None or spec.get_structure is None:
        return None
    return spec


def describe(root):
    """Return the structure record of every registered module under root.

    Arguments
    ---------
    root : torch.nn.Module
        Usually a ``ModuleDict`` of the Brain's (unwrapped) modules.

    Returns
    -------
    dict
        ``{path: {"type": qualified class name, **sizes}}``.

    Example
    -------
    >>> import torch
    >>> from speechbrain.nnet.attention import PositionalwiseFeedForward
    >>> ffn = PositionalwiseFeedForward(d_ffn=8, input_size=4)
    >>> describe(torch.nn.ModuleDict({"ffn": ffn}))
    {'ffn': {'type': 'speechbrain.nnet.attention.PositionalwiseFeedForward', \
'hidden': 8}}
    """
    record = {}
    for path, module in root.named_modules():
        spec = _structure_spec(module)
        if spec is not None:
            sizes = spec.get_structure(module)
            record[path] = {"type": qualified_name(type(module)), **sizes}
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
        A record from :func:`describe` (records that name types by their
        bare class name, as sb_prune wrote them before qualified names,
        load too).

    Returns
    -------
    bool
        Whether any module changed.

    Example
    -------
    >>> import torch
    >>> from speechbrain.nnet.attention import PositionalwiseFeedForward
    >>> root = torch.nn.ModuleDict(
    ...     {"ffn": PositionalwiseFeedForward(d_ffn=8, input_size=4)}
    ... )
    >>> spec = {"type": "speechbrain.nnet.attention.PositionalwiseFeedForward",
    ...         "hidden": 3}
    >>> restore(root, {"ffn": spec})
    True
    >>> root["ffn"].ffn[0]
    Linear(in_features=4, out_features=3, bias=True)
    """
    changed = False
    for path in sorted(record, key=lambda p: (p.count(".") if p else -1, p)):
        spec = dict(record[path])
        expected_type = spec.pop("type")
        name = _named(expected_type)
        try:
            module = root.get_submodule(path)
        except AttributeError as error:
            raise ValueError(
                f"The structure record names the module '{path}', which the "
                "model does not have: build the model with the same "
                "sb_prune.convert options as the checkpoint"
            ) from error
        if not type_matches(module, expected_type):
            replaced = _replace(root, path, module, expected_type, spec)
            changed = changed or replaced is not module
            module = replaced
        if not type_matches(module, expected_type):
            raise ValueError(
                f"The structure record expects a {name} at "
                f"'{path}' but the model has a {type(module).__name__}: "
                "build the model with the same sb_prune.convert options as "
                "the checkpoint"
            )
        handler = _structure_spec(module)
        if handler is None:
            raise ValueError(
                f"The structure record names a {name} at '{path}', "
                "a module type sb_prune has no spec for: "
                + how_to_register(expected_type.rsplit(".", 1)[-1])
            )
        if handler.get_structure(module) != spec:
            handler.set_structure(module, spec)
            changed = True
    return changed


def _named(type_name):
    """``Class (package.module.Class)`` for a qualified name."""
    bare = type_name.rsplit(".", 1)[-1]
    return bare if bare == type_name else f"{bare} ({type_name})"


def _replace(root, path, module, expected_type, spec):
    """Build the recorded type in place of ``module`` if its spec can."""
    builder = getattr(spec_named(expected_type), "replaces", None)
    new = builder(module, spec) if builder is not None else None
    if new is None or not path:
        return module
    parent, _, name = path.rpartition(".")
    setattr(root.get_submodule(parent), name, new)
    return new


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
    >>> print(summarize({"a.ffn": {"type": "my.blocks.FFN", "hidden": 3}}))
    a.ffn  FFN  hidden=3
    """
    lines = []
    for path, spec in record.items():
        sizes = " ".join(f"{k}={v}" for k, v in spec.items() if k != "type")
        lines.append(f"{path}  {spec['type'].rsplit('.', 1)[-1]}  {sizes}")
    return "\n".join(lines)
