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

A record is data read from files (checkpoints, exported folders): before
any tensor is resized, :func:`restore` checks that it maps module paths to
entries holding a ``type`` name and the sizes that type records, each a
whole number in ``[0, MAX_SIZE]`` (or a list of them, of that sum at
most), so a corrupt or hostile record ends in a ValueError naming the
module, never in an allocation without bound.

Authors
 * sb_prune developers
"""

import json
import numbers
from pathlib import Path

from sb_prune.core.registry import (
    how_to_register,
    qualified_name,
    spec_named,
    spec_of,
    type_matches,
)

#: The largest size a record may hold: above any group of a speech model
#: (feed-forward blocks have thousands of units, stacks tens of layers),
#: and a bound on what a record can make the placeholders allocate.
MAX_SIZE = 2**16

#: What a spec's ``set_structure`` raises on sizes its module cannot take.
_RESIZE_ERRORS = (AttributeError, RuntimeError, TypeError, ValueError)


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
    if not isinstance(record, dict):
        raise ValueError(
            "A structure record maps module paths to entries, got a "
            f"{type(record).__name__}"
        )
    changed = False
    for path in sorted(record, key=lambda p: (p.count(".") if p else -1, p)):
        spec = _checked_entry(path, record[path])
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
        current = handler.get_structure(module)
        _check_keys(path, spec, current)
        if current != spec:
            try:
                handler.set_structure(module, spec)
            except _RESIZE_ERRORS as error:
                raise ValueError(
                    f"The structure record's entry for '{path}' does not fit "
                    f"its {name}: {error}"
                ) from error
            changed = True
    return changed


def _checked_entry(path, entry):
    """A copy of a record's entry, its type name and sizes checked."""
    if not isinstance(entry, dict) or not isinstance(entry.get("type"), str):
        raise ValueError(
            f"The structure record's entry for '{path}' must be a mapping "
            f"with a type name (key: type), got {entry!r}"
        )
    for key, value in entry.items():
        if key != "type" and not _is_size(value, lists=True):
            raise ValueError(
                f"The structure record's entry for '{path}': {key} must be "
                f"a whole number in [0, {MAX_SIZE}], a list of them (its sum "
                f"at most {MAX_SIZE}) or null, got {value!r}"
            )
    return dict(entry)


def _is_size(value, lists=False):
    """Whether a recorded value is a size (or, with ``lists``, sizes)."""
    if lists and isinstance(value, list):
        return all(_is_size(v) for v in value) and sum(value) <= MAX_SIZE
    if value is None:
        return lists
    return (
        isinstance(value, numbers.Integral)
        and not isinstance(value, bool)
        and 0 <= value <= MAX_SIZE
    )


def _check_keys(path, spec, current):
    """The recorded sizes must be those the module's type records."""
    if set(spec) != set(current):
        raise ValueError(
            f"The structure record's entry for '{path}' has the sizes "
            f"{sorted(spec)}; its type records {sorted(current)}"
        )
    for key, value in spec.items():
        if isinstance(value, list) != isinstance(current[key], list):
            raise ValueError(
                f"The structure record's entry for '{path}': {key} must be "
                f"like {current[key]!r}, got {value!r}"
            )


def _named(type_name):
    """``Class (package.module.Class)`` for a qualified name."""
    bare = type_name.rsplit(".", 1)[-1]
    return bare if bare == type_name else f"{bare} ({type_name})"


def _replace(root, path, module, expected_type, spec):
    """Build the recorded type in place of ``module`` if its spec can."""
    builder = getattr(spec_named(expected_type), "replaces", None)
    try:
        new = builder(module, spec) if builder is not None else None
    except KeyError as missing:
        raise ValueError(
            f"The structure record's entry for '{path}' has no {missing}"
        ) from None
    if new is None or not path:
        return module
    parent, _, name = path.rpartition(".")
    setattr(root.get_submodule(parent), name, new)
    return new


def read_record(path):
    """Read a structure record from its JSON file.

    Arguments
    ---------
    path : str or pathlib.Path
        The file (``structure.json``, ``<part>_structure.json``, the
        structure file of a checkpoint).

    Returns
    -------
    dict
        The record (:func:`restore` checks its entries).

    Example
    -------
    >>> path = Path(getfixture("tmp_path")) / "structure.json"
    >>> _ = path.write_text('{"ffn": {"type": "FFN", "hidden": 3}}')
    >>> read_record(path)
    {'ffn': {'type': 'FFN', 'hidden': 3}}
    >>> _ = path.write_text('{"ffn": {"type": "FF')
    >>> read_record(path)
    Traceback (most recent call last):
    ...
    ValueError: .../structure.json is not a structure record: ...
    """
    try:
        record = json.loads(Path(path).read_bytes())
    except (UnicodeDecodeError, json.JSONDecodeError) as error:
        raise ValueError(f"{path} is not a structure record: {error}") from None
    if not isinstance(record, dict):
        raise ValueError(
            f"{path} is not a structure record: it holds a "
            f"{type(record).__name__}, not a mapping of module paths"
        )
    return record


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
