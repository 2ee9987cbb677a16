"""Keep the part of a saved hparams file that builds some of its objects.

A finished run's ``hyperparams.yaml`` (SpeechBrain writes it with every
reference resolved into YAML anchors and aliases) builds everything the
recipe used: data paths, optimizers, loggers, the model. An exported
folder needs only what builds the model, with every constructor option as
the run had it. :func:`keep_keys` reads the file with ruamel's round-trip
loader (tags, comments and shared objects kept), keeps the top-level keys
that the wanted ones refer to, at any depth, and the plain scalar keys
(sizes, token type...), and returns a document that ruamel writes back
with its anchors where they are now needed.

Authors
 * sb_prune developers
"""

import io

import ruamel.yaml
from ruamel.yaml.comments import CommentedMap, CommentedSeq
from ruamel.yaml.tag import Tag

_CONTAINERS = (CommentedMap, CommentedSeq, ruamel.yaml.comments.TaggedScalar)


def round_trip():
    """The ruamel YAML object used to read and write hparams files.

    Returns
    -------
    ruamel.yaml.YAML
        A round-trip loader and dumper.
    """
    yaml = ruamel.yaml.YAML()
    yaml.width = 4096
    return yaml


def _nodes(value, seen):
    """Every container node inside ``value`` (itself included)."""
    if id(value) in seen or not isinstance(value, _CONTAINERS):
        return
    seen.add(id(value))
    yield value
    if isinstance(value, CommentedMap):
        children = value.values()
    elif isinstance(value, CommentedSeq):
        children = value
    else:
        children = ()
    for child in children:
        yield from _nodes(child, seen)


def _is_plain(value):
    return isinstance(value, (int, float, str, bool)) or value is None


def load(text):
    """Read an hparams file, keeping tags, comments and shared objects.

    Arguments
    ---------
    text : str
        A ``hyperparams.yaml`` as SpeechBrain saves it in a run folder.

    Returns
    -------
    ruamel.yaml.comments.CommentedMap
        The document (not built: tags stay tags).
    """
    return round_trip().load(text)


def keep_keys(document, wanted):
    """The top-level keys of an hparams document that build ``wanted``.

    Arguments
    ---------
    document : ruamel.yaml.comments.CommentedMap
        From :func:`load`.
    wanted : list of str
        The top-level keys to keep.

    Returns
    -------
    ruamel.yaml.comments.CommentedMap
        The kept keys, in the file's order: the wanted ones, those whose
        objects they contain (by identity), and every plain scalar key.

    Example
    -------
    >>> text = '''
    ... d_model: 8
    ... path: /data
    ... act: &a !name:torch.nn.GELU
    ... enc: &e !new:torch.nn.Linear
    ...     in_features: 8
    ...     out_features: 8
    ... opt: !name:torch.optim.Adam
    ...     lr: 0.1
    ... model: !new:torch.nn.Sequential [*e, *a]
    ... '''
    >>> list(keep_keys(load(text), ["model"]))
    ['d_model', 'path', 'act', 'enc', 'model']
    """
    missing = [key for key in wanted if key not in document]
    if missing:
        raise ValueError(f"the hparams file has no top-level {missing}")
    owners = {
        id(value): key
        for key, value in document.items()
        if isinstance(value, _CONTAINERS)
    }
    needed, stack = set(), list(wanted)
    while stack:
        key = stack.pop()
        if key in needed:
            continue
        needed.add(key)
        for node in _nodes(document[key], set()):
            owner = owners.get(id(node))
            if owner is not None and owner not in needed:
                stack.append(owner)
    kept = CommentedMap()
    for key, value in document.items():
        if key in needed or (_is_plain(value) and not key.startswith("__")):
            kept[key] = value
    return kept


def tagged(tag, value=None):
    """A mapping node with a hyperpyyaml tag (``!new:...``, ``!apply:...``).

    Arguments
    ---------
    tag : str
        The tag, e.g. ``!new:torch.nn.Linear``.
    value : dict, optional
        The arguments.

    Returns
    -------
    ruamel.yaml.comments.CommentedMap
        The node.

    Example
    -------
    >>> print(dump({"lin": tagged("!new:torch.nn.Linear", {"in_features": 2})}))
    lin: !new:torch.nn.Linear
      in_features: 2
    <BLANKLINE>
    """
    node = CommentedMap(value or {})
    node.yaml_set_ctag(Tag(suffix=tag))
    return node


def dump(document):
    """Write a document back as YAML text.

    Arguments
    ---------
    document : dict
        A document from :func:`keep_keys`, extended.

    Returns
    -------
    str
        The YAML text.
    """
    buffer = io.StringIO()
    round_trip().dump(document, buffer)
    return buffer.getvalue()
