"""Find encoders and their layer stacks: one way, everywhere.

A *layer stack* is a module whose type a family registers as one (the
encoders and decoders of :mod:`sb_prune.families`, or a type registered
with :func:`sb_prune.core.registry.register_layer_stack`). Importance
analysis, federated dropout, layer cuts, convexity and reports find them
here; "the encoder" is an encoder stack (a decoder's is found by its path).

Authors
 * sb_prune developers
"""

from sb_prune.core.registry import spec_of


def layer_stacks(root, role="encoder"):
    """Return ``[(path, stack)]`` of every layer stack under ``root``.

    Arguments
    ---------
    root : torch.nn.Module
        A model or the Brain's ModuleDict.
    role : str or None
        ``encoder`` or ``decoder`` stacks; None: both.

    Returns
    -------
    list of tuple
        Paths relative to ``root``, in module order.

    Example
    -------
    >>> import torch
    >>> from speechbrain.lobes.models.transformer.Transformer import (
    ...     TransformerEncoder)
    >>> root = torch.nn.ModuleDict(
    ...     {"enc": TransformerEncoder(2, 2, 8, d_model=4)})
    >>> [path for path, _ in layer_stacks(root)]
    ['enc']
    """
    stacks = []
    for path, module in root.named_modules():
        spec = spec_of(module)
        if spec is not None and spec.is_layer_stack:
            if role is None or spec.role == role:
                stacks.append((path, module))
    return stacks


def find_layer_stack(root, path=None, key="encoder"):
    """Return ``(path, stack)`` of the encoder's layer stack.

    Arguments
    ---------
    root : torch.nn.Module
        Usually the Brain's unwrapped ModuleDict.
    path : str, optional
        Dotted path of the stack (e.g. ``Transformer.encoder`` or, for a
        SpeechBrain wav2vec2 wrapper, ``wav2vec2.model.encoder``; a
        decoder's stack too). Default: the only encoder stack under
        ``root``.
    key : str
        The YAML key or argument that sets ``path``, for the messages.

    Returns
    -------
    path : str
        The stack's path (relative to ``root``).
    stack : torch.nn.Module
        The stack.

    Example
    -------
    >>> import torch
    >>> from speechbrain.lobes.models.transformer.Transformer import (
    ...     TransformerEncoder)
    >>> modules = torch.nn.ModuleDict(
    ...     {"model": torch.nn.ModuleDict(
    ...         {"encoder": TransformerEncoder(2, 2, 8, d_model=4)})})
    >>> find_layer_stack(modules)[0]
    'model.encoder'
    >>> find_layer_stack(modules, "model")
    Traceback (most recent call last):
    ...
    ValueError: encoder: 'model' is a ModuleDict, not a layer stack ...
    """
    if path is not None:
        try:
            module = root.get_submodule(path)
        except AttributeError:
            raise ValueError(
                f"{key}: the model has no module '{path}'"
            ) from None
        spec = spec_of(module)
        if spec is None or not spec.is_layer_stack:
            raise ValueError(
                f"{key}: '{path}' is a {type(module).__name__}, not a layer "
                "stack sb_prune knows (register its type with "
                "sb_prune.core.registry.register_layer_stack)"
            )
        return path, module
    stacks = layer_stacks(root, role="encoder")
    if len(stacks) != 1:
        found = [p for p, _ in stacks]
        raise ValueError(
            f"{key}: found {len(stacks)} layer stacks {found}; set {key} to "
            "the path of the one to use (e.g. Transformer.encoder)"
        )
    return stacks[0]
