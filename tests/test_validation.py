"""Bad hparams values: every constructor names the YAML key it rejects."""

import pytest
import torch
from helpers import tiny_conformer
from hyperpyyaml import load_hyperpyyaml
from speechbrain.nnet.attention import PositionalwiseFeedForward

from sb_prune import convert
from sb_prune.analysis import LayerImportance, WeightChangeTracker
from sb_prune.analysis.importance.units import find_units
from sb_prune.federated.dropout import DropoutPolicy
from sb_prune.hooks import (
    AdaptiveDropoutPruning,
    ConvexityScoring,
    CriterionPruning,
    LayerCut,
)
from sb_prune.methods.conv_norm.group_norm import ConvGroupNorm, set_conv_norm
from sb_prune.methods.criteria.criteria import find_members
from sb_prune.methods.layer_cut.rules import choose_layers
from sb_prune.methods.low_rank.layer import rank_for_compression
from sb_prune.nn import AdaptiveDropout, LowRankLinear
from sb_prune.training.schedules import (
    Incremental,
    OneShot,
    Schedule,
    check_sparsity,
)


def _ffn_model():
    return torch.nn.Sequential(PositionalwiseFeedForward(24, input_size=40))


def _scoring(**options):
    return ConvexityScoring("utts.csv", "keyword", "out", **options)


def _adaptive_dropout(**options):
    return convert(tiny_conformer(), adaptive_dropout=options)


#: ``(key in the message, bad value, build(value))``: one row per argument.
NUMBERS = [
    (key, lambda v, key=key: AdaptiveDropoutPruning(**{key: v}))
    for key in (
        "regularization_weight",
        "target_start",
        "target_end",
        "ramp_epochs",
        "prune_every_n_steps",
    )
]
NUMBERS += [
    (key, lambda v, key=key: AdaptiveDropout(4, **{key: v}))
    for key in (
        "init_retention",
        "temperature",
        "threshold",
        "min_units",
        "logit_scale",
        "dim",
    )
]
NUMBERS += [
    ("temperature", lambda v: _adaptive_dropout(temperature=v)),
    (
        "min_units",
        lambda v: CriterionPruning("taylor", OneShot(0.5), min_units=v),
    ),
    ("rank", lambda v: LowRankLinear(4, 6, rank=v)),
    ("rank", lambda v: LowRankLinear(4, 6, rank=4).set_rank(v)),
    ("compression", lambda v: rank_for_compression(4, 6, v)),
    ("low_rank.rank", lambda v: convert(_ffn_model(), low_rank={"rank": v})),
    (
        "low_rank.compression",
        lambda v: convert(_ffn_model(), low_rank={"compression": v}),
    ),
    ("target", lambda v: OneShot(v)),
    ("epoch", lambda v: OneShot(0.5, epoch=v)),
    ("sparsity", lambda v: check_sparsity("sparsity", v)),
]
NUMBERS += [
    (key, lambda v, key=key: Incremental(0.5, **{key: v}))
    for key in ("steps", "start_epoch", "every", "initial")
]
NUMBERS += [
    (key, lambda v, key=key: _scoring(**{key: v}))
    for key in (
        "batch_size",
        "n_neighbors",
        "max_pairs",
        "every_n_epochs",
        "seed",
        "max_per_class",
    )
]
NUMBERS += [
    ("n_layers", lambda v: LayerCut("last", n_layers=v)),
    ("fraction", lambda v: LayerCut("fraction", fraction=v)),
    ("tolerance", lambda v: LayerCut("none", tolerance=v)),
    ("at_epoch", lambda v: LayerCut("none", at_epoch=v)),
    ("n_layers", lambda v: choose_layers("first", 4, n_layers=v)),
]
NUMBERS += [
    (key, lambda v, key=key: LayerImportance(**{key: v}))
    for key in (
        "ambient_threshold",
        "critical_threshold",
        "max_metric",
        "seed",
        "layers",
    )
]
NUMBERS += [
    ("snapshot_every", lambda v: WeightChangeTracker(snapshot_every=v)),
    ("client_size", lambda v: DropoutPolicy(client_size=v)),
    ("max_rate", lambda v: DropoutPolicy(max_rate=v)),
    ("seed", lambda v: DropoutPolicy(seed=v)),
    ("conv_norm.groups", lambda v: set_conv_norm(tiny_conformer(), groups=v)),
    ("conv_norm.eps", lambda v: set_conv_norm(tiny_conformer(), eps=v)),
    ("conv_norm.groups", lambda v: ConvGroupNorm(8, v)),
]


def _ids(rows):
    return [f"{key}-{index}" for index, (key, *_) in enumerate(rows)]


@pytest.mark.parametrize("key, build", NUMBERS, ids=_ids(NUMBERS))
def test_a_string_for_a_number_names_the_key(key, build):
    # What YAML gives for a quoted number: a ValueError, not a TypeError.
    with pytest.raises(ValueError) as error:
        build("2")
    assert key in str(error.value) and "'2'" in str(error.value)


OUT_OF_RANGE = [
    ("regularization_weight", -1.0, AdaptiveDropoutPruning),
    ("ramp_epochs", 0, AdaptiveDropoutPruning),
    ("prune_every_n_steps", 0, AdaptiveDropoutPruning),
    ("init_retention", 1.0, lambda **kw: AdaptiveDropout(4, **kw)),
    ("threshold", 0.0, lambda **kw: AdaptiveDropout(4, **kw)),
    ("temperature", 0.0, lambda **kw: AdaptiveDropout(4, **kw)),
    ("logit_scale", -1.0, lambda **kw: AdaptiveDropout(4, **kw)),
    ("min_units", 5, lambda **kw: AdaptiveDropout(4, **kw)),
    (
        "min_units",
        0,
        lambda **kw: CriterionPruning("wanda", OneShot(0.5), **kw),
    ),
    ("rank", 0, lambda **kw: LowRankLinear(4, 6, **kw)),
    ("compression", 1.0, lambda **kw: rank_for_compression(4, 6, **kw)),
    ("target", 1.0, OneShot),
    ("epoch", 0, lambda **kw: OneShot(0.5, **kw)),
    ("steps", 0, lambda **kw: Incremental(0.5, **kw)),
    ("initial", 0.75, lambda **kw: Incremental(0.5, **kw)),
    ("seed", -1, lambda **kw: _scoring(**kw)),
    ("max_per_class", 1, lambda **kw: _scoring(**kw)),
    ("n_layers", 0, lambda **kw: LayerCut("evenly_spaced", **kw)),
    ("fraction", 1.5, lambda **kw: LayerCut("fraction", **kw)),
    ("tolerance", -1.0, lambda **kw: LayerCut("none", **kw)),
    ("at_epoch", -1, lambda **kw: LayerCut("none", **kw)),
    ("ambient_threshold", -1.0, LayerImportance),
    ("critical_threshold", 150.0, LayerImportance),
    ("layers", -1, LayerImportance),
    ("snapshot_every", -1, WeightChangeTracker),
    ("snapshot_every", 1.5, WeightChangeTracker),
    ("client_size", 1.5, DropoutPolicy),
    ("max_rate", 0.0, DropoutPolicy),
    ("groups", 0, lambda **kw: set_conv_norm(tiny_conformer(), **kw)),
    ("eps", 0.0, lambda **kw: set_conv_norm(tiny_conformer(), **kw)),
]


@pytest.mark.parametrize(
    "key, value, build", OUT_OF_RANGE, ids=_ids(OUT_OF_RANGE)
)
def test_out_of_range_names_the_key(key, value, build):
    with pytest.raises(ValueError) as error:
        build(**{key: value})
    assert key in str(error.value) and str(value) in str(error.value)


UNKNOWN_CHOICES = [
    ("ramp", lambda v: Incremental(0.5, ramp=v)),
    ("groups", lambda v: CriterionPruning("taylor", OneShot(0.5), groups=v)),
    ("groups", lambda v: find_members(tiny_conformer(), v)),
    (
        "adaptive_dropout.points",
        lambda v: _adaptive_dropout(points=v),
    ),
    (
        "low_rank.points",
        lambda v: convert(_ffn_model(), low_rank={"points": v}),
    ),
    ("rule", lambda v: LayerCut(v)),
    ("rule", lambda v: choose_layers(v, 4, n_layers=2)),
    ("granularity", lambda v: LayerImportance(granularity=v)),
    ("rerandomize_init", lambda v: LayerImportance(rerandomize_init=v)),
    ("granularity", lambda v: WeightChangeTracker(granularity=v)),
    ("modules", lambda v: find_units(tiny_conformer(), modules=v)),
    ("mode", lambda v: DropoutPolicy(mode=v)),
    ("dropped_units", lambda v: DropoutPolicy(dropped_units=v)),
    ("conv_norm.norm", lambda v: set_conv_norm(tiny_conformer(), norm=v)),
]


@pytest.mark.parametrize(
    "key, build", UNKNOWN_CHOICES, ids=_ids(UNKNOWN_CHOICES)
)
def test_unknown_choice_names_the_key(key, build):
    with pytest.raises(ValueError) as error:
        build("cosine")
    assert key in str(error.value) and "cosine" in str(error.value)


def test_empty_lists_name_the_key():
    with pytest.raises(ValueError, match="groups: empty"):
        CriterionPruning("taylor", OneShot(0.5), groups=[])
    with pytest.raises(ValueError, match="adaptive_dropout.points: empty"):
        _adaptive_dropout(points=[])
    with pytest.raises(ValueError, match="low_rank.points: empty"):
        convert(_ffn_model(), low_rank={"points": []})
    with pytest.raises(ValueError, match="dropped_units: empty"):
        DropoutPolicy(dropped_units=[])


def test_a_single_string_is_a_list_of_one():
    hook = CriterionPruning("taylor", Incremental(0.5), groups="ffn")
    assert hook.groups == ["ffn"]
    model = tiny_conformer()
    assert repr(find_members(model, "ffn")) == repr(
        find_members(model, ["ffn"])
    )
    # Both macaron FFNs of both layers; no attention or conv points.
    converted = convert(tiny_conformer(), adaptive_dropout={"points": "ffn"})
    layers = [m for m in converted.modules() if isinstance(m, AdaptiveDropout)]
    assert len(layers) == 4
    assert all(layer.dim == -1 for layer in layers)
    low = convert(_ffn_model(), low_rank={"points": "ffn", "rank": 2})
    assert low[0].ffn[0].rank == 2
    policy = DropoutPolicy(dropped_units="ffn1")
    assert policy.dropped_units == ["ffn1"]
    units = find_units(model, "module", modules="conv")
    assert units == find_units(model, "module", modules=["conv"])
    assert LayerImportance(layers=1).layers == [1]


def test_yaml_strings_reach_the_constructor_as_value_errors():
    with pytest.raises(ValueError, match="regularization_weight") as error:
        AdaptiveDropoutPruning(regularization_weight="1e-3")
    assert "'1e-3'" in str(error.value)
    hparams = """
    hook: !new:sb_prune.hooks.CriterionPruning
        criterion: magnitude
        groups: ffn
        schedule: !new:sb_prune.schedules.Incremental
            target: 0.5
            steps: "4"
    """
    with pytest.raises(ValueError, match="steps must be an integer >= 1"):
        load_hyperpyyaml(hparams)
    hook = load_hyperpyyaml(hparams.replace('"4"', "4"))["hook"]
    assert hook.groups == ["ffn"] and hook.schedule.steps == 4


def test_valid_values_still_pass():
    assert AdaptiveDropoutPruning(1e-3, 3, -5, ramp_epochs=4).target(2) == -1
    assert OneShot(0, epoch=2).last_epoch == 2
    assert LayerCut("last", n_layers=2, tolerance=0).n_layers == 2
    assert Schedule(0.5, steps=2, initial=0).sparsity(0) == 0.0
    assert DropoutPolicy(client_size=1).client_size == 1
