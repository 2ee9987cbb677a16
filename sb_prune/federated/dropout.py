"""Federated dropout policies: which units each client's sub-model keeps.

Federated dropout (Caldas et al. 2018) sends each client a sub-model in
which a fraction of the units of every layer is removed at random, fresh
for every client and round. Zhou et al. (2022) target it at layers by
importance: dropping units of ambient layers costs little quality.

The droppable *units* are named as in :mod:`sb_prune.analysis.importance.units`:

* ``layer<i>.ffn1`` / ``layer<i>.ffn2`` (Conformer) or ``layer<i>.ffn``
  (Transformer): hidden units of the feed-forward block;
* ``layer<i>.attention``: query/key and value units of the self-attention
  (convert the model with ``prunable_attention`` first).

Conformer convolution modules, norms, the front end and the output layer
are always sent whole.

:class:`DropoutPolicy` turns a target client size into per-unit dropout
rates, in one of three modes at the same client size:

* ``none``: every client trains the full model (plain FedAvg);
* ``uniform``: the same rate in every unit;
* ``importance``: units sorted from most ambient (smallest quality loss
  when reset, see :class:`sb_prune.analysis.LayerImportance`) to most
  critical; each gets ``max_rate`` in turn until the size is reached. The
  scores come from a report (or its JSON), from ``{unit: score}``, or
  from any importance (:class:`sb_prune.core.importance.Importance`:
  :func:`importance_scores`).

Authors
 * sb_prune developers
"""

import copy
import json
import os

import torch

from sb_prune.analysis.importance.units import find_units
from sb_prune.core.encoders import find_layer_stack
from sb_prune.core.importance import Importance, Members
from sb_prune.core.registry import answered, layer_spec, refusal, spec_of
from sb_prune.core.surgery import apply_plan
from sb_prune.core.validation import (
    check_choice,
    check_choices,
    check_int,
    check_number,
)

MODES = ("none", "uniform", "importance")

#: The unit kinds federated dropout may thin (modules of encoder layers
#: named by their spec's ``layer_modules``, :mod:`sb_prune.families`).
DROPPABLE_UNITS = ("ffn1", "ffn2", "ffn", "attention")
#: The criterion groups of the modules it thins.
_THINNED = ("ffn", "heads")


class Group:
    """One droppable group of units (e.g. the FFN hidden units of a layer).

    Arguments
    ---------
    unit : str
        The unit it belongs to (``layer0.ffn1``).
    path : str
        The module path (relative to the model).
    group : str
        The pruning group (``hidden``, ``qk`` or ``v``).
    size : int
        Number of units.
    params_per_unit : int
        Parameters removed with each unit.
    """

    def __init__(self, unit, path, group, size, params_per_unit):
        self.unit = unit
        self.path = path
        self.group = group
        self.size = size
        self.params_per_unit = params_per_unit

    @property
    def params(self):
        """The parameters the group's units hold."""
        return self.size * self.params_per_unit


def _params_per_unit(module, group, size):
    """Parameters lost when one unit of ``group`` is removed."""
    smaller = copy.deepcopy(module)
    apply_plan(smaller, {"": {group: torch.arange(1, size)}})
    before = sum(p.numel() for p in module.parameters())
    return before - sum(p.numel() for p in smaller.parameters())


def _thinned_module(layer, layer_path, unit, children):
    """Path of the module of ``children`` that federated dropout thins.

    The first prunable module inside them; or the layer itself when its own
    spec's Linear layers are those children (a layer that holds its
    feed-forward block directly, as Whisper's does). None is refused,
    naming the layer's family and its reason.
    """
    own = spec_of(layer)
    if own is not None and own.criterion_group in _THINNED and own.linears:
        names = {name for _, name in own.linears(layer)}
        if names <= set(children):
            return layer_path
    for child in children:
        for name, module in layer.get_submodule(child).named_modules():
            spec = spec_of(module)
            if spec is not None and spec.criterion_group in _THINNED:
                return ".".join(p for p in (layer_path, child, name) if p)
    kind = unit.partition(".")[2]
    hint = f"leave {kind} out of dropped_units"
    if answered(layer, "prunable_attention"):
        hint = (
            f"dropping units of {children} needs prunable attention: convert "
            f"the model with prunable_attention (sb_prune.convert) or {hint}"
        )
    group = "heads" if kind == "attention" else "ffn"
    raise refusal(layer, group, hint, f"dropped_units '{kind}' ({unit})")


def droppable_groups(model, units=DROPPABLE_UNITS):
    """Find the groups of units that sub-models may drop.

    The kinds an encoder layer does not have are skipped (each family names
    its own); a model with none of them is refused, as is a kind that a
    layer has but cannot thin.

    Arguments
    ---------
    model : torch.nn.Module
        The full model (with one Conformer or Transformer encoder).
    units : list of str
        Unit kinds to consider: ``ffn1, ffn2`` (Conformer), ``ffn``
        (Transformer), ``attention``.

    Returns
    -------
    list of Group
        In layer order.

    Example
    -------
    >>> from speechbrain.lobes.models.transformer.Conformer import (
    ...     ConformerEncoder,
    ... )
    >>> encoder = ConformerEncoder(1, d_model=8, d_ffn=16, nhead=2)
    >>> groups = droppable_groups(encoder, ["ffn1"])
    >>> [(g.unit, g.path, g.size, g.params_per_unit) for g in groups]
    [('layer0.ffn1', 'layers.0.ffn_module1.1', 16, 17)]
    """
    units = check_choices("dropped_units", units, DROPPABLE_UNITS)
    path, encoder = find_layer_stack(model, key="federated encoder")
    prefix = f"{path}.layers" if path else "layers"
    groups = []
    for index, layer in enumerate(encoder.layers):
        layer_path = f"{prefix}.{index}"
        spec = layer_spec(layer)
        if spec is None:
            raise ValueError(
                f"federated dropout: sb_prune has no encoder-layer spec for a "
                f"{type(layer).__name__} (sb_prune.core.registry.register)"
            )
        for kind in units:
            if kind not in spec.layer_modules:
                continue
            unit = f"layer{index}.{kind}"
            module_path = _thinned_module(
                layer, layer_path, unit, spec.layer_modules[kind]
            )
            module = model.get_submodule(module_path)
            module_groups = spec_of(module)
            for name in module_groups.groups:
                size = module_groups.group_size(module, name)
                per_unit = _params_per_unit(module, name, size)
                groups.append(Group(unit, module_path, name, size, per_unit))
    if not groups:
        kinds = sorted(layer_spec(encoder.layers[0]).layer_modules)
        raise refusal(
            model,
            "dropped_units",
            f"its encoder layers have the units {kinds}",
            f"dropped_units {units}",
        )
    return groups


def _kept_units(size, rate):
    return size - int(size * rate + 0.5)


def uniform_rates(groups, drop_params):
    """One dropout rate for every unit, dropping ``drop_params`` in all.

    Arguments
    ---------
    groups : list of Group
        From :func:`droppable_groups`.
    drop_params : float
        Parameters to remove from the sub-model (>= 0).

    Returns
    -------
    dict
        ``{unit: rate}``.

    Example
    -------
    >>> groups = [Group("a", "a", "hidden", 10, 5),
    ...           Group("b", "b", "hidden", 10, 5)]
    >>> uniform_rates(groups, 25)
    {'a': 0.25, 'b': 0.25}
    """
    total = sum(group.params for group in groups)
    rate = drop_params / total if total else 0.0
    return {group.unit: rate for group in groups}


def importance_rates(groups, scores, drop_params, max_rate):
    """Drop from the most ambient units first, at most ``max_rate`` each.

    Arguments
    ---------
    groups : list of Group
        From :func:`droppable_groups`.
    scores : dict
        ``{unit: score}``, lower is more ambient (e.g. the WER increase
        when the unit is reset to its initial weights).
    drop_params : float
        Parameters to remove from the sub-model (>= 0).
    max_rate : float
        The largest dropout rate of a unit, in (0, 1).

    Returns
    -------
    dict
        ``{unit: rate}`` (0 for units left whole).

    Example
    -------
    >>> groups = [Group("a", "a", "hidden", 10, 5),
    ...           Group("b", "b", "hidden", 10, 5)]
    >>> importance_rates(groups, {"a": 9.0, "b": 0.1}, 25, max_rate=0.8)
    {'b': 0.5, 'a': 0.0}
    """
    params = {}
    for group in groups:
        params[group.unit] = params.get(group.unit, 0) + group.params
    missing = sorted(unit for unit in params if unit not in scores)
    if missing:
        raise ValueError(
            f"importance: no score for the unit(s) {missing}; give one per "
            "droppable unit (or per layer)"
        )
    order = sorted(params, key=lambda unit: scores[unit])
    rates, left = {}, float(drop_params)
    for unit in order:
        dropped = min(max_rate * params[unit], left)
        rates[unit] = dropped / params[unit]
        left -= dropped
    if left > 1e-6:
        raise ValueError(
            f"client_size cannot be reached with max_rate {max_rate}: raise "
            "max_rate or client_size"
        )
    return rates


def importance_scores(importance, model, groups):
    """Per-unit scores from an importance: its mean score of their members.

    Arguments
    ---------
    importance : sb_prune.core.importance.Importance
        Scores the members (units, heads) of the thinned modules of
        ``model``, e.g. a :class:`~sb_prune.analysis.LayerImportance`
        that ran on it, or a data-free criterion
        (:class:`~sb_prune.methods.criteria.Magnitude`).
    model : torch.nn.Module
        The full model.
    groups : list of Group
        From :func:`droppable_groups`.

    Returns
    -------
    dict
        ``{unit: score}``; lower is more ambient.

    Example
    -------
    >>> from speechbrain.lobes.models.transformer.Conformer import (
    ...     ConformerEncoder,
    ... )
    >>> from sb_prune.methods.criteria import Magnitude
    >>> encoder = ConformerEncoder(1, d_model=8, d_ffn=16, nhead=2)
    >>> groups = droppable_groups(encoder, ["ffn1", "ffn2"])
    >>> with torch.no_grad():
    ...     _ = encoder.layers[0].ffn_module2[1].ffn[0].weight.mul_(0.01)
    >>> scores = importance_scores(Magnitude(), encoder, groups)
    >>> scores["layer0.ffn2"] < scores["layer0.ffn1"]
    True
    """
    per_unit = {}
    for path in dict.fromkeys(group.path for group in groups):
        module = model.get_submodule(path)
        members = Members(path, spec_of(module).criterion_group, module)
        unit = next(group.unit for group in groups if group.path == path)
        score = importance.score(members).float().mean()
        per_unit.setdefault(unit, []).append(float(score))
    return {unit: sum(s) / len(s) for unit, s in per_unit.items()}


def scores_from_report(report, label=None):
    """Per-unit importance scores from a layer-importance report.

    A module unit without its own test (e.g. a report of whole layers)
    takes its layer's score.

    Arguments
    ---------
    report : dict
        From :meth:`sb_prune.analysis.LayerImportance.run` (or its JSON).
    label : str, optional
        The test to read (default: the report's ``labelled_by``).

    Returns
    -------
    dict
        ``{unit: metric increase}``; lower is more ambient.

    Example
    -------
    >>> report = {"labelled_by": "init", "units": {
    ...     "layer0": {"delta": {"init": 3.0}},
    ...     "layer0.ffn1": {"delta": {"init": 0.5}}}}
    >>> scores = scores_from_report(report)
    >>> scores["layer0.ffn1"], scores["layer0.attention"]
    (0.5, 3.0)
    """
    label = label or report["labelled_by"]
    own = {
        unit: entry["delta"][label] for unit, entry in report["units"].items()
    }
    return _ScoreTable(own)


def read_scores(importance):
    """Per-unit scores from scores, a report, or a report's JSON file.

    Arguments
    ---------
    importance : dict, str or None
        ``{unit: score}``; a :class:`~sb_prune.analysis.LayerImportance`
        report; an ``importance.json`` of ``ambient.py`` (its module
        report); or the path of such a JSON file.

    Returns
    -------
    dict or None
        ``{unit: score}`` (None stays None).

    Example
    -------
    >>> read_scores({"reports": {"modules": {"labelled_by": "init",
    ...     "units": {"layer0.ffn1": {"delta": {"init": 1.5}}}}}})
    {'layer0.ffn1': 1.5}
    """
    if isinstance(importance, (str, os.PathLike)):
        with open(importance, encoding="utf-8") as handle:
            importance = json.load(handle)
    if isinstance(importance, dict) and "reports" in importance:
        importance = importance["reports"]["modules"]
    if isinstance(importance, dict) and "units" in importance:
        importance = scores_from_report(importance)
    return importance


def check_unit_names(scores, model):
    """Refuse scores of units that ``model`` does not have.

    Arguments
    ---------
    scores : dict
        ``{unit: score}`` (see :func:`read_scores`).
    model : torch.nn.Module
        The federated model.

    Example
    -------
    >>> from speechbrain.lobes.models.transformer.Conformer import (
    ...     ConformerEncoder,
    ... )
    >>> encoder = ConformerEncoder(2, d_model=8, d_ffn=16, nhead=2)
    >>> check_unit_names({"layer1.ffn2": 0.3, "layer0": 1.0}, encoder)
    >>> check_unit_names({"layer5.ffn1": 0.3}, encoder)
    Traceback (most recent call last):
    ...
    ValueError: importance: the unit(s) ['layer5.ffn1'] are not in the ...
    """
    names = find_units(model, "both")
    unknown = sorted(set(scores) - set(names))
    if unknown:
        layers = [name for name in names if "." not in name]
        first = f"{layers[0]}."
        kinds = [name[len(first) :] for name in names if name.startswith(first)]
        raise ValueError(
            f"importance: the unit(s) {unknown} are not in the model "
            f"({layers[0]}..{layers[-1]}, each with {', '.join(kinds)}): "
            "are the scores of another model?"
        )


class _ScoreTable(dict):
    """Scores whose missing module units fall back to their layer."""

    def __missing__(self, unit):
        layer = unit.split(".")[0]
        if layer != unit and layer in self:
            return self[layer]
        raise KeyError(unit)

    def __contains__(self, unit):
        try:
            self[unit]
        except KeyError:
            return False
        return True


class DropoutPolicy:
    """Per-client sub-model plans for federated dropout.

    Arguments
    ---------
    mode : str
        ``none``, ``uniform`` or ``importance`` (see the module docstring).
    client_size : float
        Target size of every client's sub-model, as a fraction of the full
        model's parameters, in (0, 1]; ``none`` ignores it.
    importance : dict, str or Importance, optional
        ``importance`` mode: ``{unit: score}`` (lower is more ambient), a
        :class:`~sb_prune.analysis.LayerImportance` report, the path of
        an ``ambient.py`` ``importance.json`` (see :func:`read_scores`),
        or an :class:`~sb_prune.core.importance.Importance` of the model's
        units and heads (see :func:`importance_scores`).
    max_rate : float
        ``importance`` mode: the largest dropout rate of one unit, in
        (0, 1).
    dropped_units : list of str
        Unit kinds that may be dropped, see :func:`droppable_groups` (a
        single name is a list of one).
    seed : int
        Seed of the random choice of kept units (per client and round).
    compensate : bool
        Scale each sub-model as inverted dropout does: the layers reading
        thinned units are multiplied by ``units / kept units`` before the
        client trains and divided by it before the merge (see
        :mod:`sb_prune.federated.submodel`). False: plain federated
        dropout (Caldas et al.), which lost 7-17 WER points to FedAvg in
        ``benchmarks/federated_dropout.py`` where compensation lost 3-4.

    Example
    -------
    >>> from speechbrain.lobes.models.transformer.Conformer import (
    ...     ConformerEncoder,
    ... )
    >>> encoder = ConformerEncoder(2, d_model=8, d_ffn=32, nhead=2)
    >>> policy = DropoutPolicy("uniform", client_size=0.8,
    ...                        dropped_units=["ffn1", "ffn2"])
    >>> plan = policy.plan(encoder, client=3, server_round=1)
    >>> sorted(plan)[0], len(plan["layers.0.ffn_module1.1"]["hidden"])
    ('layers.0.ffn_module1.1', 20)
    >>> DropoutPolicy("uniform", client_size="0.8")
    Traceback (most recent call last):
    ...
    ValueError: client_size must be a number in (0, 1], got '0.8'
    """

    def __init__(
        self,
        mode="uniform",
        client_size=0.7,
        importance=None,
        max_rate=0.9,
        dropped_units=("ffn1", "ffn2", "ffn", "attention"),
        seed=0,
        compensate=True,
    ):
        check_choice("mode", mode, MODES)
        check_number("client_size", client_size, 0, 1, open_low=True)
        check_number("max_rate", max_rate, 0, 1, open_low=True, open_high=True)
        dropped_units = check_choices(
            "dropped_units", dropped_units, DROPPABLE_UNITS
        )
        check_int("seed", seed)
        if not isinstance(compensate, bool):
            raise ValueError(
                f"compensate must be True or False, got {compensate!r}"
            )
        if mode == "importance" and importance is None:
            raise ValueError("mode importance needs importance scores")
        if not isinstance(importance, Importance):
            importance = read_scores(importance)
        self.mode = mode
        self.client_size = client_size
        self.importance = importance
        self.max_rate = max_rate
        self.dropped_units = dropped_units
        self.seed = seed
        self.compensate = compensate
        self.groups = None
        self.rates = None

    def setup(self, model):
        """Find the droppable groups of ``model`` and their rates.

        Arguments
        ---------
        model : torch.nn.Module
            The full model.

        Returns
        -------
        dict
            ``{unit: rate}``.
        """
        self.groups = droppable_groups(model, self.dropped_units)
        total = sum(p.numel() for p in model.parameters())
        fixed = total - sum(group.params for group in self.groups)
        drop = total - self.client_size * total
        if self.mode == "none":
            self.rates = {group.unit: 0.0 for group in self.groups}
            return self.rates
        if drop > total - fixed:
            raise ValueError(
                f"client_size {self.client_size} leaves clients too little to "
                f"train: at least {fixed / total:.2f} of the parameters "
                "(conv modules, norms, front end, output) are always sent"
            )
        if self.mode == "uniform":
            self.rates = uniform_rates(self.groups, drop)
        else:
            scores = self.importance
            if isinstance(scores, Importance):
                scores = importance_scores(scores, model, self.groups)
            else:
                check_unit_names(scores, model)
            self.rates = importance_rates(
                self.groups, scores, drop, self.max_rate
            )
        for group in self.groups:
            rate = self.rates[group.unit]
            check_number(
                f"the dropout rate of {group.unit}", rate, 0, 1, open_high=True
            )
            if _kept_units(group.size, rate) < 1:
                raise ValueError(
                    f"The dropout rate {rate:.3f} of {group.unit} leaves none "
                    f"of its {group.size} {group.group} units to train: "
                    "lower max_rate or raise client_size"
                )
        return self.rates

    def plan(self, model, client, server_round):
        """Return the surgery plan of one client's sub-model.

        Arguments
        ---------
        model : torch.nn.Module
            The full model.
        client : int
            The client (node) identifier.
        server_round : int
            The round (with the client, it seeds the choice of units).

        Returns
        -------
        dict
            ``{module path: {group: kept indices}}``, empty for ``none``.
        """
        if self.rates is None:
            self.setup(model)
        generator = torch.Generator().manual_seed(
            hash((self.seed, int(client), int(server_round))) % 2**63
        )
        plan = {}
        for group in self.groups:
            rate = self.rates[group.unit]
            kept = _kept_units(group.size, rate)
            if kept == group.size:
                continue
            order = torch.randperm(group.size, generator=generator)
            plan.setdefault(group.path, {})[group.group] = order[:kept].sort()[
                0
            ]
        return plan
