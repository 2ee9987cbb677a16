"""Layer importance: ambient and critical layers of an encoder.

Zhang, Bengio and Singer ("Are all layers created equal?") call a layer
*ambient* when resetting it after training barely changes the model's
quality, and *critical* when resetting it ruins the model. Zhou et al.
(2022) find several ambient layers in Conformers. This module measures it:

* :func:`find_units` names the units to test: whole encoder layers
  (``layer0``...) and, inside Conformer layers, their modules
  (``layer0.ffn1``, ``layer0.attention`` (with its pre-norm),
  ``layer0.conv``, ``layer0.ffn2``); Transformer layers have
  ``attention`` and ``ffn``. Any model works with explicit ``units``.
* :func:`snapshot` keeps a copy of their weights (theta_0 before training,
  or theta_t after epoch t) and :func:`weight_change` measures
  ``||theta_t - theta_0|| / ||theta_0||`` over each unit's parameters.
* :func:`reset_unit_` puts a unit back to saved weights (the
  re-initialisation test when they are theta_0, the heat map of
  Zhang et al. when they are theta_t) and :func:`rerandomize_unit_` draws
  it afresh from SpeechBrain's initialiser (see there).
* :class:`LayerImportance` runs the tests on every unit with any
  ``evaluate`` function (e.g. WER and loss on the validation set), labels
  units ambient / critical with thresholds from the YAML, and correlates
  robustness with weight change (Spearman). It is an importance
  (:class:`sb_prune.core.importance.Importance`): each member of a group
  scores what resetting its unit costs (:func:`member_scores`).

Authors
 * sb_prune developers
"""

import logging
import math

import torch
from scipy.stats import spearmanr
from tqdm import tqdm

from sb_prune.core.encoders import find_layer_stack
from sb_prune.core.importance import Importance
from sb_prune.core.registry import LAYER_GROUPS, layer_spec
from sb_prune.core.validation import (
    check_choice,
    check_choices,
    check_int,
    check_number,
    check_strings,
)

logger = logging.getLogger(__name__)

GRANULARITIES = ("layer", "module", "both")
RERANDOMIZE_INITS = ("speechbrain", "pytorch")
RANDOM = "random"


def _layer_modules(layer):
    spec = layer_spec(layer)
    if spec is None:
        raise ValueError(
            f"importance: sb_prune has no encoder-layer spec for a "
            f"{type(layer).__name__}; name the units to test explicitly "
            "with units: {name: path}, or register the layer type "
            "(sb_prune.core.registry.register)"
        )
    return spec.layer_modules


def _check_paths(root, units):
    for name, paths in units.items():
        for path in paths:
            try:
                root.get_submodule(path)
            except AttributeError as error:
                raise ValueError(
                    f"units.{name}: the model has no module '{path}'"
                ) from error
    return units


def _check_layers(layers):
    """``layers`` as a list of integers (a single one is a list of one)."""
    if layers is None:
        return None
    if isinstance(layers, (str, bytes)) or not hasattr(layers, "__iter__"):
        layers = [layers]
    return [check_int("layers", index, minimum=0) for index in layers]


def check_unit_options(
    granularity="both", layers=None, modules=None, units=None
):
    """Check the options of :func:`find_units` that need no model.

    Arguments
    ---------
    granularity, layers, modules, units
        See :func:`find_units`.

    Returns
    -------
    dict
        The options, ``layers``, ``modules`` and each unit's paths as lists.

    Example
    -------
    >>> options = check_unit_options("layer", layers=1, units={"a": "0"})
    >>> options["layers"], options["units"]
    ([1], {'a': ['0']})
    >>> check_unit_options(units=["0"])
    Traceback (most recent call last):
    ...
    ValueError: units must map unit names to module paths, got ['0']
    """
    check_choice("granularity", granularity, GRANULARITIES)
    if modules is not None:
        modules = check_strings("modules", modules)
    if units is not None:
        if not isinstance(units, dict):
            raise ValueError(
                f"units must map unit names to module paths, got {units!r}"
            )
        units = {
            name: check_strings(f"units.{name}", paths)
            for name, paths in units.items()
        }
    return dict(
        granularity=granularity,
        layers=_check_layers(layers),
        modules=modules,
        units=units,
    )


def find_units(root, granularity="both", layers=None, modules=None, units=None):
    """Name the units whose importance is measured.

    Arguments
    ---------
    root : torch.nn.Module
        The model (or ModuleDict) the paths are relative to.
    granularity : str
        ``layer`` (whole encoder layers), ``module`` (the modules inside
        them) or ``both``.
    layers : list of int, optional
        Indices of the encoder layers to test (default: all; a single
        index is a list of one).
    modules : list of str, optional
        Module names to test (default: all, e.g. ``ffn1, attention, conv,
        ffn2`` for Conformer layers; a single name is a list of one).
    units : dict, optional
        Explicit units ``{name: path or [paths]}``, for any model; the
        other arguments are then ignored.

    Returns
    -------
    dict
        ``{unit name: [module paths]}`` in model order.

    Example
    -------
    >>> from speechbrain.lobes.models.transformer.Conformer import (
    ...     ConformerEncoder,
    ... )
    >>> encoder = ConformerEncoder(2, 8, 4, 8)
    >>> list(find_units(encoder, "module", layers=[1], modules=["conv"]))
    ['layer1.conv']
    >>> find_units(encoder, modules=["ffn3"])
    Traceback (most recent call last):
    ...
    ValueError: modules: unknown ['ffn3']; choose from ['attention', ...]
    """
    options = check_unit_options(granularity, layers, modules, units)
    if options["units"]:
        return _check_paths(root, options["units"])
    path, encoder = find_layer_stack(root, key="importance encoder")
    n_layers = len(encoder.layers)
    indices = options["layers"]
    if indices is None:
        indices = list(range(n_layers))
    bad = [i for i in indices if i >= n_layers]
    if bad:
        raise ValueError(
            f"layers: {bad} out of range, the encoder has {n_layers} layers"
        )
    prefix = f"{path}.layers" if path else "layers"
    found = {}
    for index in indices:
        layer_path = f"{prefix}.{index}"
        children = _layer_modules(encoder.layers[index])
        wanted = list(children)
        if modules is not None:
            wanted = check_choices("modules", modules, sorted(children))
        if granularity in ("layer", "both"):
            found[f"layer{index}"] = [layer_path]
        if granularity in ("module", "both"):
            for module in wanted:
                found[f"layer{index}.{module}"] = [
                    f"{layer_path}.{child}" for child in children[module]
                ]
    return found


def unit_parameters(root, paths):
    """Return ``{name: parameter}`` of the modules at ``paths``.

    Arguments
    ---------
    root : torch.nn.Module
        The model the paths are relative to.
    paths : list of str
        Module paths of one unit.

    Returns
    -------
    dict
        Parameter names (relative to ``root``) -> parameters.

    Example
    -------
    >>> net = torch.nn.Sequential(torch.nn.Linear(2, 2), torch.nn.ReLU())
    >>> list(unit_parameters(net, ["0"]))
    ['0.weight', '0.bias']
    """
    params = {}
    for path in paths:
        module = root.get_submodule(path)
        params.update(module.named_parameters(prefix=path))
    return params


def snapshot(root, units):
    """Copy the weights of every unit (to the CPU).

    Arguments
    ---------
    root : torch.nn.Module
        The model.
    units : dict
        From :func:`find_units`.

    Returns
    -------
    dict
        ``{parameter name: tensor}``, a plain state dict.
    """
    state = {}
    for paths in units.values():
        for name, param in unit_parameters(root, paths).items():
            state[name] = param.detach().cpu().clone()
    return state


def _same_shapes(params, state):
    return all(
        name in state and state[name].shape == param.shape
        for name, param in params.items()
    )


def weight_change(root, initial, units):
    """Relative weight change ``||theta - theta_0|| / ||theta_0||`` per unit.

    Arguments
    ---------
    root : torch.nn.Module
        The model now (theta).
    initial : dict
        A :func:`snapshot` taken earlier (theta_0).
    units : dict
        From :func:`find_units`.

    Returns
    -------
    dict
        ``{unit: float}``; NaN for a unit whose shapes changed (pruned).

    Example
    -------
    >>> net = torch.nn.Sequential(torch.nn.Linear(2, 2, bias=False))
    >>> units = {"lin": ["0"]}
    >>> theta0 = snapshot(net, units)
    >>> with torch.no_grad():
    ...     _ = net[0].weight.mul_(1.5)
    >>> round(weight_change(net, theta0, units)["lin"], 3)
    0.5
    """
    changes = {}
    for unit, paths in units.items():
        params = unit_parameters(root, paths)
        if not _same_shapes(params, initial):
            changes[unit] = math.nan
            continue
        moved, norm = 0.0, 0.0
        for name, param in params.items():
            start = initial[name].to(param.device, param.dtype)
            moved += float((param.detach() - start).pow(2).sum())
            norm += float(start.pow(2).sum())
        changes[unit] = math.sqrt(moved) / max(math.sqrt(norm), 1e-12)
    return changes


def reset_unit_(root, paths, state):
    """Copy saved weights into one unit, in place.

    Arguments
    ---------
    root : torch.nn.Module
        The model.
    paths : list of str
        The unit's module paths.
    state : dict
        A :func:`snapshot` holding the unit's parameters.

    Example
    -------
    >>> net = torch.nn.Sequential(torch.nn.Linear(2, 2))
    >>> theta0 = snapshot(net, {"lin": ["0"]})
    >>> with torch.no_grad():
    ...     _ = net[0].weight.add_(1.0)
    >>> reset_unit_(net, ["0"], theta0)
    >>> torch.equal(net[0].weight, theta0["0.weight"])
    True
    """
    params = unit_parameters(root, paths)
    if not _same_shapes(params, state):
        raise ValueError(
            f"The saved weights do not fit the unit {paths}: the model was "
            "pruned or built differently since they were saved"
        )
    with torch.no_grad():
        for name, param in params.items():
            param.copy_(state[name])


def _reset_module(module):
    for method in ("reset_parameters", "_reset_parameters"):
        if callable(getattr(module, method, None)):
            getattr(module, method)()
            return


def rerandomize_unit_(root, paths, init="speechbrain", seed=0):
    """Draw one unit's weights afresh from the initialiser, in place.

    ``init="speechbrain"`` reproduces how ``TransformerASR`` initialises
    its encoder: every sub-module gets its PyTorch default (its
    ``reset_parameters``: uniform Linear/Conv weights and biases, LayerNorm
    ones and zeros, ``RelPosMHAXL._reset_parameters``), then
    ``TransformerASR._init_params`` applies ``xavier_normal_`` to every
    parameter with more than one dimension. ``init="pytorch"`` stops after
    the defaults (modules built outside ``TransformerASR``). sb_prune's
    prunable attention stores its projections per unit: xavier is then
    drawn for the per-unit shapes (same fan-in, a larger fan-out for the
    fused input projection), and its 1-D positional biases, which no
    reset covers, keep their values. Buffers (e.g. BatchNorm statistics)
    are not touched.

    Arguments
    ---------
    root : torch.nn.Module
        The model.
    paths : list of str
        The unit's module paths.
    init : str
        ``speechbrain`` or ``pytorch``.
    seed : int
        Seed of the draw (the global RNG state is left as it was).

    Example
    -------
    >>> net = torch.nn.Sequential(torch.nn.Linear(4, 4))
    >>> before = net[0].weight.detach().clone()
    >>> rerandomize_unit_(net, ["0"], seed=3)
    >>> bool((net[0].weight != before).all())
    True
    """
    check_choice("rerandomize_init", init, RERANDOMIZE_INITS)
    with torch.random.fork_rng(devices=[]), torch.no_grad():
        torch.manual_seed(seed)
        for path in paths:
            for module in root.get_submodule(path).modules():
                _reset_module(module)
        if init == "speechbrain":
            for param in unit_parameters(root, paths).values():
                if param.dim() > 1:
                    torch.nn.init.xavier_normal_(param)


def _check_thresholds(ambient, critical):
    check_number("ambient_threshold", ambient, low=0)
    check_number("critical_threshold", critical)
    if critical <= ambient:
        raise ValueError(
            f"critical_threshold ({critical}) must be larger than "
            f"ambient_threshold ({ambient})"
        )


def classify(delta, ambient_threshold, critical_threshold):
    """Label a unit from the metric increase its reset causes.

    Arguments
    ---------
    delta : float
        Metric after the reset minus the trained model's metric (e.g. WER
        points; higher is worse).
    ambient_threshold : float
        Ambient when ``delta <= ambient_threshold``.
    critical_threshold : float
        Critical when ``delta >= critical_threshold``.

    Returns
    -------
    str
        ``ambient``, ``critical`` or ``intermediate``.

    Example
    -------
    >>> [classify(d, 1.0, 20.0) for d in (0.5, 5.0, 60.0)]
    ['ambient', 'intermediate', 'critical']
    """
    _check_thresholds(ambient_threshold, critical_threshold)
    if delta <= ambient_threshold:
        return "ambient"
    if delta >= critical_threshold:
        return "critical"
    return "intermediate"


def spearman(x, y):
    """Spearman rank correlation of two sequences, NaN entries dropped.

    Arguments
    ---------
    x, y : sequence of float
        Paired values, e.g. robustness and weight change per unit.

    Returns
    -------
    dict
        ``rho`` and ``p`` (None when fewer than 3 pairs or a constant).

    Example
    -------
    >>> spearman([1, 2, 3, 4], [10, 20, 30, 45])["rho"]
    1.0
    """
    pairs = [
        (a, b)
        for a, b in zip(x, y)
        if not (math.isnan(float(a)) or math.isnan(float(b)))
    ]
    if len(pairs) < 3 or len({a for a, _ in pairs}) < 2:
        return {"rho": None, "p": None}
    if len({b for _, b in pairs}) < 2:
        return {"rho": None, "p": None}
    result = spearmanr([a for a, _ in pairs], [b for _, b in pairs])
    return {"rho": float(result[0]), "p": float(result[1])}


def member_scores(report, members):
    """Score members with the metric increase their unit's reset causes.

    Each member gets the increase (under the report's ``labelled_by``
    test) of the most specific tested unit holding it: its layer's for
    the members of ``layers``, and for units, heads or weights that of the
    module unit around them (``layer0.ffn1``), else of their layer
    (``layer0``). Resetting a critical unit costs much: its members score
    high. The tests measure whole units, so the members of one module
    score alike.

    Arguments
    ---------
    report : dict
        From :meth:`LayerImportance.run` (or its JSON), on the model whose
        members these are.
    members : sb_prune.core.importance.Members
        Members of a group.

    Returns
    -------
    torch.Tensor
        ``[members.count]`` (weight-shaped for ``weights``).

    Example
    -------
    >>> from speechbrain.lobes.models.transformer.Transformer import (
    ...     TransformerEncoder,
    ... )
    >>> from sb_prune.core.importance import Members
    >>> encoder = TransformerEncoder(2, 2, 8, d_model=4)
    >>> report = {"labelled_by": "init", "units": {
    ...     "layer0": {"paths": ["layers.0"], "delta": {"init": 0.5}},
    ...     "layer1": {"paths": ["layers.1"], "delta": {"init": 7.0}},
    ...     "layer1.ffn": {"paths": ["layers.1.pos_ffn"],
    ...                    "delta": {"init": 2.0}}}}
    >>> member_scores(report, Members("", "layers", encoder))
    tensor([0.5000, 7.0000])
    >>> ffn = encoder.layers[1].pos_ffn
    >>> member_scores(report, Members("layers.1.pos_ffn", "ffn", ffn))
    tensor([2., 2., 2., 2., 2., 2., 2., 2.])
    """
    label = report["labelled_by"]
    tested = [
        (path, float(entry["delta"][label]))
        for entry in report["units"].values()
        for path in entry["paths"]
    ]

    def covering(path):
        holders = [
            (len(unit), delta)
            for unit, delta in tested
            if unit in ("", path) or path.startswith(f"{unit}.")
        ]
        if not holders:
            raise ValueError(
                f"importance: no tested unit holds '{path}'; test its layer "
                "or module (layers, modules or units)"
            )
        return max(holders)[1]

    if members.group in LAYER_GROUPS:
        prefix = f"{members.path}.layers" if members.path else "layers"
        return torch.tensor(
            [covering(f"{prefix}.{i}") for i in range(members.count)]
        )
    shape = (members.count,)
    if members.group == "weights":
        shape = tuple(members.module.weight.shape)
    return torch.full(shape, covering(members.path))


class LayerImportance(Importance):
    """Tamper tests of every unit, ambient/critical labels, correlation.

    For every unit and every *reference* the unit is reset (to saved
    weights, or re-drawn for the reference ``random``), the model is
    evaluated, and the unit is put back exactly. The metric increase
    against the trained model labels each unit (see :func:`classify`),
    using the reference ``init`` (theta_0: the re-initialisation test).

    After :meth:`run`, it is an
    :class:`~sb_prune.core.importance.Importance` of every group: a
    member scores the metric increase of the unit holding it (see
    :func:`member_scores`), e.g. for
    :class:`sb_prune.federated.dropout.DropoutPolicy` or
    :class:`sb_prune.hooks.LayerCut`.

    Arguments
    ---------
    granularity, layers, modules, units
        Which units to test, see :func:`find_units`.
    metric : str
        The key of ``evaluate``'s result used for the labels (higher is
        worse), e.g. ``WER`` or ``loss``.
    ambient_threshold : float
        A unit is ambient when resetting it raises the metric by at most
        this much (in the metric's unit, e.g. WER points), >= 0.
    critical_threshold : float
        A unit is critical when resetting it raises the metric by at least
        this much, > ``ambient_threshold``.
    max_metric : float, optional
        The metric's upper bound (100 for error rates in percent):
        thresholds must stay below it. None for unbounded metrics.
    rerandomize_init : str
        The initialiser of the re-randomisation test, see
        :func:`rerandomize_unit_`.
    seed : int
        Seed of the re-randomisation draws.

    Example
    -------
    >>> net = torch.nn.Sequential(torch.nn.Linear(1, 1), torch.nn.Linear(1, 1))
    >>> importance = LayerImportance(
    ...     units={"first": "0", "second": "1"}, metric="loss",
    ...     ambient_threshold=0.1, critical_threshold=1.0, max_metric=None,
    ... )
    >>> importance.units(net)
    {'first': ['0'], 'second': ['1']}
    >>> LayerImportance(ambient_threshold="1.0")
    Traceback (most recent call last):
    ...
    ValueError: ambient_threshold must be a number >= 0, got '1.0'
    """

    def __init__(
        self,
        granularity="both",
        layers=None,
        modules=None,
        units=None,
        metric="WER",
        ambient_threshold=1.0,
        critical_threshold=20.0,
        max_metric=100.0,
        rerandomize_init="speechbrain",
        seed=0,
    ):
        check_choice("granularity", granularity, GRANULARITIES)
        _check_thresholds(ambient_threshold, critical_threshold)
        if max_metric is not None:
            check_number("max_metric", max_metric)
            if critical_threshold >= max_metric:
                raise ValueError(
                    f"critical_threshold must be below {max_metric} (the "
                    f"largest {metric}), got {critical_threshold}"
                )
        check_choice("rerandomize_init", rerandomize_init, RERANDOMIZE_INITS)
        check_int("seed", seed)
        self.granularity = granularity
        self.layers = _check_layers(layers)
        self.modules = modules
        self.explicit_units = units
        self.metric = metric
        self.ambient_threshold = ambient_threshold
        self.critical_threshold = critical_threshold
        self.rerandomize_init = rerandomize_init
        self.seed = seed
        self.report = None

    def units(self, root):
        """Return the units of ``root`` to test (see :func:`find_units`)."""
        return find_units(
            root,
            granularity=self.granularity,
            layers=self.layers,
            modules=self.modules,
            units=self.explicit_units,
        )

    def _tamper(self, root, paths, reference, unit_index):
        if isinstance(reference, str):
            seed = self.seed + unit_index
            rerandomize_unit_(root, paths, self.rerandomize_init, seed)
        else:
            reset_unit_(root, paths, reference)

    def run(self, root, evaluate, references, initial=None, progress=True):
        """Run the tamper tests and return the report.

        Arguments
        ---------
        root : torch.nn.Module
            The trained model (restored exactly after each test).
        evaluate : callable
            ``evaluate() -> {metric: value}`` on the current weights of
            ``root`` (e.g. validation WER and loss).
        references : dict
            ``{label: snapshot or "random"}``, e.g. ``{"init": theta_0,
            "random": "random", "epoch2": theta_2}``. ``init`` (theta_0)
            gives the labels; without it, the first reference does.
        initial : dict, optional
            theta_0, for the weight change of each unit (default:
            ``references["init"]`` when given).
        progress : bool
            Show a progress bar.

        Returns
        -------
        dict
            ``base`` (metrics of the trained model), ``units`` (per unit:
            ``paths``, ``params``, ``weight_change``, ``tests``
            (metrics per reference), ``delta`` (metric increase per
            reference) and ``class``), ``labelled_by``, ``spearman``
            (robustness vs weight change), ``thresholds`` and ``metric``;
            kept as ``report``, which :meth:`score` reads.
        """
        if not references:
            raise ValueError("references: give at least one test")
        for label, reference in references.items():
            if isinstance(reference, str) and reference != RANDOM:
                raise ValueError(
                    f"references.{label}: unknown test {reference!r}; give "
                    f"saved weights or '{RANDOM}'"
                )
        units = self.units(root)
        if initial is None:
            initial = references.get("init")
        labelled_by = "init" if "init" in references else next(iter(references))
        base = dict(evaluate())
        if self.metric not in base:
            raise ValueError(
                f"metric: evaluate() returned {sorted(base)}, not "
                f"{self.metric!r}"
            )
        changes = weight_change(root, initial, units) if initial else {}
        report_units = {}
        jobs = [(u, label) for u in units for label in references]
        bar = tqdm(jobs, disable=not progress, desc="tamper tests")
        for index, (unit, label) in enumerate(bar):
            paths = units[unit]
            saved = snapshot(root, {unit: paths})
            self._tamper(root, paths, references[label], index)
            metrics = dict(evaluate())
            reset_unit_(root, paths, saved)
            entry = report_units.setdefault(
                unit,
                {
                    "paths": paths,
                    "params": sum(
                        p.numel() for p in unit_parameters(root, paths).values()
                    ),
                    "weight_change": changes.get(unit),
                    "tests": {},
                    "delta": {},
                },
            )
            entry["tests"][label] = metrics
            entry["delta"][label] = metrics[self.metric] - base[self.metric]
        for entry in report_units.values():
            entry["class"] = classify(
                entry["delta"][labelled_by],
                self.ambient_threshold,
                self.critical_threshold,
            )
        names = list(report_units)
        self.report = {
            "metric": self.metric,
            "base": base,
            "labelled_by": labelled_by,
            "thresholds": {
                "ambient": self.ambient_threshold,
                "critical": self.critical_threshold,
            },
            "units": report_units,
            "spearman": spearman(
                [report_units[n]["delta"][labelled_by] for n in names],
                [
                    math.nan
                    if report_units[n]["weight_change"] is None
                    else report_units[n]["weight_change"]
                    for n in names
                ],
            ),
        }
        return self.report

    def score(self, members):
        """Score members by their unit's metric increase (see :meth:`run`).

        Arguments
        ---------
        members : sb_prune.core.importance.Members
            Members of the model :meth:`run` tested.

        Returns
        -------
        torch.Tensor
            See :func:`member_scores`.
        """
        if self.report is None:
            raise ValueError(
                "LayerImportance has no scores yet: run the tamper tests "
                "(run) first"
            )
        return member_scores(self.report, members)


def ambient_units(report):
    """Return the names of the units a report labels ambient.

    Arguments
    ---------
    report : dict
        From :meth:`LayerImportance.run`.

    Returns
    -------
    list of str
        In model order.

    Example
    -------
    >>> ambient_units({"units": {"a": {"class": "ambient"},
    ...                          "b": {"class": "critical"}}})
    ['a']
    """
    return [
        name
        for name, entry in report["units"].items()
        if entry["class"] == "ambient"
    ]
