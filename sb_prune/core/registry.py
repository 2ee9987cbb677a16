"""The registry: what sb_prune knows about each module type, in one place.

Every structural method reduces to *score groups -> a schedule decides how
many go -> surgery removes them -> the structure record is updated*. What
that takes for one module type is a :class:`ModuleSpec`: the groups it has
(units, heads, layers, ranks), how to remove them, how to read and write
its structure record entry, and, for criteria, how to count, score and
plan its members and which module consumes their outputs; for a layer
type, the modules inside it (``layer_modules``); and the *answers* its
model family gives the methods (where adaptive-dropout masks go, how its
attention becomes prunable, how an I3D gate wraps its branches...) or the
reasons it refuses them.

Specs come in families: each module of :mod:`sb_prune.families` is one
model family (SpeechBrain Conformer, Transformer, Branchformer, Hugging
Face Whisper, wav2vec2/HuBERT/WavLM, ``torch.nn.TransformerEncoderLayer``,
and sb_prune's own modules) and registers its types with a
:class:`Family`. The registry loads the families on its first look-up,
from the ``sb_prune.model_families`` entry-point group (``setup.py``), so
that this module imports nothing above it and a package of your own can
add a family the same way. Teach sb_prune a type in your own code with
:func:`register` (see CONTRIBUTING.md).

Authors
 * sb_prune developers
"""

import copy
from importlib import import_module
from importlib.metadata import entry_points

import torch

from sb_prune.core.validation import check_int

#: The criterion groups a spec can belong to (``decoder_layers``: the
#: layers of a decoder's stack; ``layers``: those of an encoder's).
CRITERION_GROUPS = ("ffn", "heads", "layers", "decoder_layers")
#: The criterion groups of layer stacks.
LAYER_GROUPS = ("layers", "decoder_layers")
#: The entry-point group the families are loaded from.
FAMILY_ENTRY_POINTS = "sb_prune.model_families"
#: The family of the types registered by :func:`register`.
USER_FAMILY = "your own"

#: The most layers a structure record may give a stack (it grows by copies
#: of its last layer): far above any speech encoder's tens of layers.
MAX_LAYERS = 1024
_SPECS = {}
_FAMILIES = {}
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
    role : str, optional
        For a layer stack or a layer type: ``encoder`` (default) or
        ``decoder``. Methods that find "the encoder" look at encoder
        stacks only; criteria prune decoder stacks with the group
        ``decoder_layers``.
    answers : dict, optional
        ``{method: answer}``: what the type's family answers a method
        (see :meth:`answer`); each method documents the answer it asks.
    refusals : dict, optional
        ``{method: reason}``: methods the type cannot take, and why; a
        criterion group (``ffn``, ``heads``) stands for the criteria and
        federated dropout of its members.

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
        role="encoder",
        answers=None,
        refusals=None,
    ):
        if criterion_group not in (None, *CRITERION_GROUPS):
            raise ValueError(
                f"criterion_group must be one of {CRITERION_GROUPS}, got "
                f"{criterion_group!r}"
            )
        if role not in ("encoder", "decoder"):
            raise ValueError(f"role must be encoder or decoder, got {role!r}")
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
        self.role = role
        self.answers = dict(answers or {})
        self.refusals = dict(refusals or {})
        #: Set when a family registers the spec.
        self.family = None
        self.type_name = None

    @property
    def is_encoder_layer(self):
        """Whether the type is an encoder layer (``layer_modules``)."""
        return self.layer_modules is not None and self.role == "encoder"

    @property
    def is_layer_stack(self):
        """Whether the type holds a stack of layers (encoder or decoder)."""
        return self.criterion_group in LAYER_GROUPS

    def answer(self, method):
        """Return the family's answer to ``method``, or raise naming both.

        Arguments
        ---------
        method : str
            The method (its ``sb_prune.convert`` key or hook name).

        Returns
        -------
        object
            The answer (a callable, or what the method documents).

        Example
        -------
        >>> spec = ModuleSpec(groups=(), refusals={"gates": "no branches"})
        >>> spec.type_name, spec.family = "Thing", "Toy"
        >>> spec.answer("gates")
        Traceback (most recent call last):
        ...
        ValueError: gates: the Toy family cannot (Thing): no branches
        """
        if method in self.answers:
            return self.answers[method]
        reason = self.refusals.get(method, "its family module has no answer")
        raise ValueError(
            f"{method}: the {self.family} family cannot ({self.type_name}): "
            f"{reason}"
        )

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


def qualified_name(module_type):
    """The registry key of a class: its module and qualified name.

    Arguments
    ---------
    module_type : type or str
        A class, or a qualified name given as is.

    Returns
    -------
    str
        ``package.module.Class``.

    Example
    -------
    >>> qualified_name(torch.nn.Linear)
    'torch.nn.modules.linear.Linear'
    """
    if isinstance(module_type, str):
        return module_type
    return f"{module_type.__module__}.{module_type.__qualname__}"


class Family:
    """A model family: the module types it registers and its refusals.

    A family module (one of :mod:`sb_prune.families`, or a package of
    yours listed under the ``sb_prune.model_families`` entry points)
    builds one and registers each of its types once.

    Arguments
    ---------
    name : str
        The family's name, as errors and the conformance matrix show it.

    Example
    -------
    >>> toy = Family("Toy")
    >>> class Thing(torch.nn.Module):
    ...     pass
    >>> toy.register(Thing, ModuleSpec(groups=()))
    >>> family_of(Thing()).name
    'Toy'
    >>> toy.register(Thing, ModuleSpec(groups=()))
    Traceback (most recent call last):
    ...
    ValueError: The Toy family registers ...Thing, which the Toy family...
    >>> unregister(Thing)
    """

    def __init__(self, name):
        if not isinstance(name, str) or not name:
            raise ValueError(f"Family name must be a string, got {name!r}")
        self.name = name
        self.types = []

    def __repr__(self):
        return f"Family({self.name!r})"

    def register(self, module_type, spec):
        """Register the spec of one of the family's module types.

        Arguments
        ---------
        module_type : type or str
            The class, or its qualified name (``package.module.Class``)
            for a class whose package may not be installed or imported.
        spec : ModuleSpec
            What sb_prune knows about it.
        """
        key = qualified_name(module_type)
        owner = _SPECS.get(key)
        if owner is not None:
            raise ValueError(
                f"The {self.name} family registers {key}, which the "
                f"{owner.family} family registered already: a type belongs "
                "to one family"
            )
        _add(key, spec, self)


def _add(key, spec, family):
    if not isinstance(spec, ModuleSpec):
        raise ValueError(
            f"register: spec must be a ModuleSpec, got {type(spec).__name__}"
        )
    spec.family = family.name
    spec.type_name = key.rsplit(".", 1)[-1]
    _SPECS[key] = spec
    _FAMILIES.setdefault(family.name, family)
    if key not in family.types:
        family.types.append(key)


def register(module_type, spec):
    """Register the spec of a module type (subclasses are matched too).

    Your own entry: it replaces a built-in family's entry for the same
    type (the built-in families load first).

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
    key = qualified_name(module_type)
    previous = _SPECS.get(key)
    if previous is not None and previous.family != USER_FAMILY:
        _FAMILIES[previous.family].types.remove(key)
    _add(key, spec, _FAMILIES.get(USER_FAMILY) or Family(USER_FAMILY))


def unregister(module_type):
    """Forget the spec of a module type (for tests and experiments).

    Arguments
    ---------
    module_type : type or str
        As given to :func:`register`.
    """
    key = qualified_name(module_type)
    spec = _SPECS.pop(key, None)
    if spec is not None and key in _FAMILIES[spec.family].types:
        _FAMILIES[spec.family].types.remove(key)


def _load_builtins():
    global _builtins_loaded
    if _builtins_loaded:
        return
    _builtins_loaded = True
    found = entry_points(group=FAMILY_ENTRY_POINTS)
    if not found:
        raise RuntimeError(
            f"No sb_prune model family is installed (entry points "
            f"{FAMILY_ENTRY_POINTS!r}): install sb_prune (pip install -e . "
            "in a checkout) rather than running it from its source folder"
        )
    for entry in sorted(found, key=lambda e: e.name):
        import_module(entry.value)


def families():
    """Return the registered families, by name.

    Returns
    -------
    dict
        ``{name: Family}``.

    Example
    -------
    >>> "SpeechBrain Conformer" in families()
    True
    """
    _load_builtins()
    return dict(_FAMILIES)


def families_in(root):
    """The names of the model families of the modules under ``root``.

    sb_prune's own modules (family ``sb_prune``) are left out.

    Arguments
    ---------
    root : torch.nn.Module
        A model.

    Returns
    -------
    list of str
        Sorted names.

    Example
    -------
    >>> from speechbrain.nnet.attention import PositionalwiseFeedForward
    >>> families_in(PositionalwiseFeedForward(8, input_size=4))
    ['SpeechBrain Transformer']
    """
    found = {spec.family for spec in map(spec_of, root.modules()) if spec}
    return sorted(found - {"sb_prune"})


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
        spec = _SPECS.get(qualified_name(module_type))
        if spec is not None:
            return spec
    return None


def family_of(module):
    """Return the family of a module's type, or None.

    Arguments
    ---------
    module : torch.nn.Module
        Any module.

    Returns
    -------
    Family or None
        The family that registered its type.

    Example
    -------
    >>> from speechbrain.nnet.attention import PositionalwiseFeedForward
    >>> family_of(PositionalwiseFeedForward(8, input_size=4)).name
    'SpeechBrain Transformer'
    """
    spec = spec_of(module)
    return None if spec is None else _FAMILIES[spec.family]


def spec_named(type_name, source="structure record"):
    """Return the spec of the type a structure record names, or None.

    Arguments
    ---------
    type_name : str
        A qualified class name (what records store), or a bare class name
        (records written before they were qualified).
    source : str
        Where the name comes from, for the message.

    Returns
    -------
    ModuleSpec or None
        The spec.

    Example
    -------
    >>> spec_named("LowRankLinear").groups
    ('rank',)
    """
    _load_builtins()
    if "." in type_name:
        return _SPECS.get(type_name)
    matches = [k for k in _SPECS if k.rsplit(".", 1)[-1] == type_name]
    if len({_SPECS[k].family for k in matches}) > 1:
        raise ValueError(
            f"{source}: the bare type name {type_name!r} matches "
            f"{sorted(matches)} of several families; save the record again "
            "with this version of sb_prune (it writes qualified names)"
        )
    return _SPECS[matches[0]] if matches else None


def type_matches(module, type_name):
    """Whether a record's type name (qualified or bare) names ``module``'s.

    Arguments
    ---------
    module : torch.nn.Module
        A module.
    type_name : str
        As :func:`spec_named` takes it.

    Returns
    -------
    bool
        True if it names the module's class.

    Example
    -------
    >>> type_matches(torch.nn.Linear(1, 1), "torch.nn.modules.linear.Linear")
    True
    >>> type_matches(torch.nn.Linear(1, 1), "Linear")
    True
    """
    if "." in type_name:
        return qualified_name(type(module)) == type_name
    return type(module).__name__ == type_name


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
            f"({qualified_name(type(module))}); "
            + how_to_register(type(module).__name__)
        )
    return spec


def answers_under(root, method, select=None, missing=None):
    """The answers of the modules under ``root`` to a method.

    Arguments
    ---------
    root : torch.nn.Module
        A model.
    method : str
        The method asking (its ``sb_prune.convert`` key or hook name).
    select : callable, optional
        ``spec -> bool``: the modules that must answer (e.g. encoder
        layers); a selected module whose family refuses raises. Default:
        the modules whose spec answers.
    missing : str, optional
        What the model lacks when nothing answers, for the message.

    Returns
    -------
    list of tuple
        ``(path, module, answer)`` in module order (each module once).

    Example
    -------
    >>> from speechbrain.lobes.models.transformer.Transformer import (
    ...     TransformerEncoder)
    >>> answers_under(TransformerEncoder(1, 2, 8, d_model=4), "conv_norm")
    Traceback (most recent call last):
    ...
    ValueError: conv_norm: the model's SpeechBrain Transformer family ...
    """
    found = []
    for path, module in root.named_modules():
        spec = spec_of(module)
        if spec is None:
            continue
        if select is None and method not in spec.answers:
            continue
        if select is not None and not select(spec):
            continue
        found.append((path, module, spec.answer(method)))
    if not found:
        raise refusal(root, method, missing)
    return found


def answered(root, method):
    """Whether a module under ``root`` answers ``method``.

    Arguments
    ---------
    root : torch.nn.Module
        A model.
    method : str
        The method.

    Returns
    -------
    bool
        True if some module's family answers it.

    Example
    -------
    >>> from speechbrain.nnet.attention import RelPosMHAXL
    >>> answered(RelPosMHAXL(8, 2), "prunable_attention")
    True
    """
    specs = filter(None, map(spec_of, root.modules()))
    return any(method in spec.answers for spec in specs)


def refusal(root, method, missing=None, name=None):
    """The error for a model that has nothing a method can take.

    It names the method, the families of the model's modules and the
    reasons those families give (their ``refusals`` of ``method``).

    Arguments
    ---------
    root : torch.nn.Module
        The model.
    method : str
        The key of the families' refusals: a method (its
        ``sb_prune.convert`` key or hook name) or a criterion group.
    missing : str, optional
        What the model lacks, or a hint.
    name : str, optional
        How the message names what was asked (default: ``method``).

    Returns
    -------
    ValueError
        The error, to raise.

    Example
    -------
    >>> print(refusal(torch.nn.Linear(2, 2), "conv_norm", "no conv"))
    conv_norm: the model's unknown family has nothing it can take (no conv)
    """
    reasons = {}
    for spec in filter(None, map(spec_of, root.modules())):
        if method in spec.refusals:
            reasons.setdefault(spec.family, spec.refusals[method])
    families_found = ", ".join(families_in(root)) or "unknown"
    reasons = "; ".join(f"{family}: {why}" for family, why in reasons.items())
    detail = "; ".join(filter(None, [missing, reasons]))
    return ValueError(
        f"{name or method}: the model's {families_found} family has nothing "
        f"it can take ({detail or 'no module of the model answers it'})"
    )


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


def _keep_layers(stack, layers, after_cut):
    kept = [stack.layers[int(i)] for i in layers]
    if not kept:
        raise ValueError("Cannot remove every layer of an encoder")
    stack.layers = type(stack.layers)(kept)
    after_cut(stack)


def _set_layer_count(stack, spec, after_cut):
    layers = list(stack.layers)
    wanted = check_int("layers", spec["layers"], 1, MAX_LAYERS)
    while len(layers) < wanted:
        layers.append(copy.deepcopy(layers[-1]))
    stack.layers = type(stack.layers)(layers[:wanted])
    after_cut(stack)


def sync_num_hidden_layers(stack):
    """Keep a Hugging Face ``config.num_hidden_layers`` in step.

    The default ``after_cut`` of :func:`layer_stack_spec`.

    Arguments
    ---------
    stack : torch.nn.Module
        A layer stack, with a ``config`` or without.
    """
    config = getattr(stack, "config", None)
    if config is not None and hasattr(config, "num_hidden_layers"):
        config.num_hidden_layers = len(stack.layers)


def _layer_rms(stack):
    def rms(layer):
        squares = [p.detach().pow(2) for p in layer.parameters() if p.dim() > 1]
        return torch.cat([s.flatten() for s in squares]).mean().sqrt()

    return torch.stack([rms(layer) for layer in stack.layers])


def layer_stack_spec(after_cut=None, role="encoder", **more):
    """The spec of a module holding its layers in a ``layers`` ModuleList.

    Its forward must loop over ``self.layers``. Group ``layers`` (the
    indices of the layers to keep, in order); structure ``{"layers":
    count}``. Magnitude scores a layer by the root-mean-square of its
    weight matrices.

    Arguments
    ---------
    after_cut : callable, optional
        ``stack -> None``: what the family must update once the stack
        holds other layers (a configuration's layer count, layer indices);
        default :func:`sync_num_hidden_layers`.
    role : str
        ``encoder`` (criterion group ``layers``) or ``decoder``
        (``decoder_layers``).
    **more
        Other :class:`ModuleSpec` arguments (``answers``, ``refusals``).

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
    after_cut = after_cut or sync_num_hidden_layers
    return ModuleSpec(
        groups=("layers",),
        prune=lambda stack, layers: _keep_layers(stack, layers, after_cut),
        get_structure=lambda stack: {"layers": len(stack.layers)},
        set_structure=lambda stack, spec: _set_layer_count(
            stack, spec, after_cut
        ),
        criterion_group="layers" if role == "encoder" else "decoder_layers",
        count=lambda stack: len(stack.layers),
        member_plan=lambda stack, kept: {"layers": kept},
        magnitude=_layer_rms,
        role=role,
        **more,
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
