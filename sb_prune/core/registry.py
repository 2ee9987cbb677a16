"""The registry: what sb_prune knows about each module type, in one place.

Every structural method reduces to *score groups -> a schedule decides how
many go -> surgery removes them -> the structure record is updated*. What
that takes for one module type is a :class:`ModuleSpec`: the groups it has
(units, heads, layers, ranks), how to remove them, how to read and write
its structure record entry, and, for criteria, how to count, score and
plan its members and which module consumes their outputs; for an encoder
layer type, the modules inside it (``layer_modules``). Surgery,
structure records, criteria, low rank, federated dropout, importance
analysis and layer cuts all read these specs; outside the registry, only
the converters (which build sb_prune modules from SpeechBrain ones) name a
SpeechBrain layer class (``tests/test_layout.py`` checks it).

The built-in entries live in :mod:`sb_prune.core.specs` and are loaded on
the first look-up (no import order to respect). Teach sb_prune a model
family of your own with :func:`register` (see CONTRIBUTING.md).

Authors
 * sb_prune developers
"""

import copy
import importlib

import torch

#: The criterion groups a spec can belong to.
CRITERION_GROUPS = ("ffn", "heads", "layers")

_SPECS = {}
_builtins_loaded = False


class ModuleSpec:
    """What sb_prune knows about one prunable module type.

    Every argument but ``groups`` is optional: a spec only says what its
    module type supports, and a method that needs a missing part raises an
    error naming the method and the type.

    Arguments
    ---------
    groups : tuple of str
        The plan groups of the type (``hidden``, ``qk``/``v``, ``inputs``,
        ``rank``, ``layers``): the keywords of ``prune``.
    prune : callable
        ``prune(module, **kept)``: keep, in place, the given sorted indices
        of each group (missing groups keep everything).
    get_structure : callable
        ``module -> dict`` of JSON-serialisable sizes.
    set_structure : callable
        ``(module, dict) -> None``: resize to the sizes (placeholder
        values, a checkpoint load fills them), growing or shrinking.
    criterion_group : str, optional
        The criterion group its members belong to (``ffn``, ``heads``,
        ``layers``), for :class:`sb_prune.hooks.CriterionPruning`.
    count : callable, optional
        ``module -> int``: members of that group (units, heads, layers).
    member_plan : callable, optional
        ``(module, kept member indices) -> {group: kept indices}``.
    consumer : callable, optional
        ``module -> Linear`` reading the members' activations (its input
        columns are the members' outgoing weights).
    per_member : callable, optional
        ``(module, per-unit values) -> per-member values`` (sums units
        over heads); default: the values themselves.
    magnitude : callable, optional
        ``module -> tensor``: the L2 norm of each member's weights.
    group_size : callable, optional
        ``(module, group) -> int``: units in a plan group.
    dropouts : callable, optional
        ``module -> {group: AdaptiveDropout}``: the adaptive dropout layer
        masking each group, for adaptive-dropout pruning.
    linears : callable, optional
        ``module -> [(parent, attribute)]``: the Linear layers a low-rank
        conversion may factorise.
    low_rank_point : str, optional
        The ``low_rank.points`` name that selects those Linear layers.
    layer_modules : dict, optional
        For an encoder layer type: ``{name: [child paths]}``, the modules
        of the layer (feed-forward blocks, attention, convolution...) and
        the children holding their weights, for importance analysis,
        federated dropout and the ``weights`` criterion group. The first
        child with a prunable spec is the one federated dropout thins.
    replaces : callable, optional
        ``(module, record entry) -> module or None``: build a module of this
        type in place of another one (e.g. a Linear that a conversion
        during training replaced), so a structure record restores it.

    Example
    -------
    >>> spec = ModuleSpec(groups=("rows",), get_structure=lambda m: {})
    >>> spec.groups
    ('rows',)
    >>> spec.require("prune", "surgery", "Thing")
    Traceback (most recent call last):
    ...
    ValueError: surgery: a Thing has no 'prune' in its sb_prune spec; ...
    """

    def __init__(
        self,
        groups,
        prune=None,
        get_structure=None,
        set_structure=None,
        criterion_group=None,
        count=None,
        member_plan=None,
        consumer=None,
        per_member=None,
        magnitude=None,
        group_size=None,
        dropouts=None,
        linears=None,
        low_rank_point=None,
        layer_modules=None,
        replaces=None,
    ):
        if criterion_group not in (None, *CRITERION_GROUPS):
            raise ValueError(
                f"criterion_group must be one of {CRITERION_GROUPS}, got "
                f"{criterion_group!r}"
            )
        self.groups = tuple(groups)
        self.prune = prune
        self.get_structure = get_structure
        self.set_structure = set_structure
        self.criterion_group = criterion_group
        self.count = count
        self.member_plan = member_plan
        self.consumer = consumer
        self.per_member = per_member or (lambda module, values: values)
        self.magnitude = magnitude
        self.group_size = group_size
        self.dropouts = dropouts
        self.linears = linears
        self.low_rank_point = low_rank_point
        self.replaces = replaces
        self.layer_modules = layer_modules and {
            name: list(paths) for name, paths in layer_modules.items()
        }

    @property
    def is_encoder_layer(self):
        """Whether the type is an encoder layer (has ``layer_modules``)."""
        return self.layer_modules is not None

    @property
    def is_layer_stack(self):
        """Whether the type holds a stack of encoder layers."""
        return self.criterion_group == "layers"

    def require(self, part, method, type_name):
        """Return the callable ``part``, or raise naming the method and type.

        Arguments
        ---------
        part : str
            An attribute of the spec (``prune``, ``count``...).
        method : str
            What needs it, for the message.
        type_name : str
            The module's class name, for the message.

        Returns
        -------
        callable
            The spec's entry.
        """
        value = getattr(self, part)
        if value is None:
            raise ValueError(
                f"{method}: a {type_name} has no {part!r} in its sb_prune "
                "spec; extend its entry (sb_prune.core.registry.register)"
            )
        return value


def _qualified(module_type):
    """The registry key of a class, or of a qualified name given as is."""
    if isinstance(module_type, str):
        return module_type
    return f"{module_type.__module__}.{module_type.__qualname__}"


def register(module_type, spec):
    """Register the spec of a module type (subclasses are matched too).

    Arguments
    ---------
    module_type : type or str
        The class, or its qualified name (``package.module.Class``) for a
        class whose package may not be installed or imported.
    spec : ModuleSpec
        What sb_prune knows about it.

    Example
    -------
    >>> class Stack(torch.nn.Module):
    ...     def __init__(self):
    ...         super().__init__()
    ...         self.layers = torch.nn.ModuleList(
    ...             torch.nn.Linear(2, 2) for _ in range(3))
    >>> register(Stack, layer_stack_spec())
    >>> spec_of(Stack()).is_layer_stack
    True
    >>> unregister(Stack)
    """
    _load_builtins()  # a user's entry must not be replaced by a built-in
    if not isinstance(spec, ModuleSpec):
        raise ValueError(
            f"register: spec must be a ModuleSpec, got {type(spec).__name__}"
        )
    _SPECS[_qualified(module_type)] = spec


def unregister(module_type):
    """Forget the spec of a module type (for tests and experiments).

    Arguments
    ---------
    module_type : type or str
        As given to :func:`register`.
    """
    _SPECS.pop(_qualified(module_type), None)


def _load_builtins():
    global _builtins_loaded
    if not _builtins_loaded:
        # specs registers while it is imported: those calls find the module
        # already in sys.modules and do not import it again.
        importlib.import_module("sb_prune.core.specs")
        _builtins_loaded = True


def spec_of(module):
    """Return the spec registered for a module's type, or None.

    The closest registered class in the module's MRO wins.

    Arguments
    ---------
    module : torch.nn.Module
        Any module.

    Returns
    -------
    ModuleSpec or None
        Its spec.

    Example
    -------
    >>> from speechbrain.nnet.attention import PositionalwiseFeedForward
    >>> spec_of(PositionalwiseFeedForward(8, input_size=4)).groups
    ('hidden',)
    >>> spec_of(torch.nn.ReLU()) is None
    True
    """
    _load_builtins()
    for module_type in type(module).__mro__:
        spec = _SPECS.get(_qualified(module_type))
        if spec is not None:
            return spec
    return None


def spec_named(type_name):
    """Return the spec of the registered type with this class name, or None.

    Arguments
    ---------
    type_name : str
        A class name as structure records store it.

    Returns
    -------
    ModuleSpec or None
        The spec (the first registered, if several classes share the name).

    Example
    -------
    >>> spec_named("LowRankLinear").groups
    ('rank',)
    """
    _load_builtins()
    for key, spec in _SPECS.items():
        if key.rsplit(".", 1)[-1] == type_name:
            return spec
    return None


def layer_spec(module):
    """Return the spec of a module if it is an encoder layer, else None.

    Arguments
    ---------
    module : torch.nn.Module
        Any module.

    Returns
    -------
    ModuleSpec or None
        Its spec, if its type has ``layer_modules``.
    """
    spec = spec_of(module)
    return spec if spec is not None and spec.is_encoder_layer else None


def require_module_spec(module, method):
    """Return the :class:`ModuleSpec` of a module, or raise naming both.

    Arguments
    ---------
    module : torch.nn.Module
        The module a method wants to handle.
    method : str
        The method (or YAML key), for the message.

    Returns
    -------
    ModuleSpec
        Its spec.

    Example
    -------
    >>> require_module_spec(torch.nn.ReLU(), "surgery")
    Traceback (most recent call last):
    ...
    ValueError: surgery: sb_prune has no spec for ReLU (torch.nn...ReLU); ...
    """
    spec = spec_of(module)
    if spec is None:
        raise ValueError(
            f"{method}: sb_prune has no spec for {type(module).__name__} "
            f"({_qualified(type(module))}); "
            + how_to_register(type(module).__name__)
        )
    return spec


def how_to_register(type_name):
    """The hint given when a module type has no spec.

    Arguments
    ---------
    type_name : str
        The class name.

    Returns
    -------
    str
        One sentence.
    """
    return (
        f"register one with sb_prune.core.registry.register({type_name}, "
        "ModuleSpec(...)) before building or loading the model (see "
        "CONTRIBUTING.md, 'Adding a model family')"
    )


def _keep_layers(stack, layers):
    kept = [stack.layers[int(i)] for i in layers]
    if not kept:
        raise ValueError("Cannot remove every layer of an encoder")
    stack.layers = type(stack.layers)(kept)
    _sync_config(stack)


def _set_layer_count(stack, spec):
    layers = list(stack.layers)
    wanted = spec["layers"]
    while len(layers) < wanted:
        layers.append(copy.deepcopy(layers[-1]))
    stack.layers = type(stack.layers)(layers[:wanted])
    _sync_config(stack)


def _sync_config(stack):
    """Keep a Hugging Face ``config.num_hidden_layers`` in step."""
    config = getattr(stack, "config", None)
    if config is not None and hasattr(config, "num_hidden_layers"):
        config.num_hidden_layers = len(stack.layers)


def _layer_rms(stack):
    def rms(layer):
        squares = [p.detach().pow(2) for p in layer.parameters() if p.dim() > 1]
        return torch.cat([s.flatten() for s in squares]).mean().sqrt()

    return torch.stack([rms(layer) for layer in stack.layers])


def layer_stack_spec():
    """The spec of a module holding its layers in a ``layers`` ModuleList.

    Its forward must loop over ``self.layers``. Group ``layers`` (the
    indices of the layers to keep, in order); structure ``{"layers":
    count}``; a Hugging Face ``config.num_hidden_layers`` follows the
    count. Magnitude scores a layer by the root-mean-square of its weight
    matrices.

    Returns
    -------
    ModuleSpec
        A new spec.

    Example
    -------
    >>> stack = torch.nn.Module()
    >>> stack.layers = torch.nn.ModuleList(
    ...     torch.nn.Linear(2, 2) for _ in range(3))
    >>> spec = layer_stack_spec()
    >>> spec.prune(stack, layers=[2, 0])
    >>> spec.get_structure(stack)
    {'layers': 2}
    """
    return ModuleSpec(
        groups=("layers",),
        prune=_keep_layers,
        get_structure=lambda stack: {"layers": len(stack.layers)},
        set_structure=_set_layer_count,
        criterion_group="layers",
        count=lambda stack: len(stack.layers),
        member_plan=lambda stack, kept: {"layers": kept},
        magnitude=_layer_rms,
    )


def register_layer_stack(module_type):
    """Let sb_prune cut a module type that holds a ``layers`` ModuleList.

    Shorthand for ``register(module_type, layer_stack_spec())``.

    Arguments
    ---------
    module_type : type or str
        The class of the stack, or its qualified name.

    Example
    -------
    >>> from sb_prune.core.surgery import apply_plan
    >>> class Stack(torch.nn.Module):
    ...     def __init__(self):
    ...         super().__init__()
    ...         self.layers = torch.nn.ModuleList(
    ...             torch.nn.Linear(2, 2) for _ in range(3))
    >>> register_layer_stack(Stack)
    >>> root = torch.nn.ModuleDict({"stack": Stack()})
    >>> apply_plan(root, {"stack": {"layers": [0, 1]}})
    >>> len(root["stack"].layers)
    2
    >>> unregister(Stack)
    """
    register(module_type, layer_stack_spec())
