"""The importance and schedule protocols: every implementation conforms.

Importances (criteria, convexity scoring, layer importance) give one score
per member through the same calls, and the layer cut and federated
dropout read any of them. Schedules: every hook takes its moments from a
schedule and checks it against the recipe's epochs the same way.
"""

import pytest
import torch
from helpers import encode, random_batch, tiny_conformer
from toy_brain import build_brain, fit

from sb_prune import convert
from sb_prune.analysis import LayerImportance
from sb_prune.analysis.importance.units import find_units, snapshot
from sb_prune.core.encoders import find_layer_stack
from sb_prune.core.importance import Importance, Members
from sb_prune.core.surgery import apply_plan
from sb_prune.federated.dropout import DropoutPolicy
from sb_prune.hooks import (
    ActivationLowRank,
    AdaptiveDropoutPruning,
    ConvexityScoring,
    CriterionPruning,
    LayerCut,
    LowRankCompression,
)
from sb_prune.methods.criteria.criteria import (
    CRITERIA,
    Magnitude,
    Taylor,
    find_members,
    keep_top,
)
from sb_prune.schedules import AtStart, Gradual, Incremental, OneShot, Ramp

# -- importance -------------------------------------------------------------


@pytest.mark.parametrize("name", sorted(CRITERIA))
def test_every_criterion_scores_through_the_protocol(name):
    model = tiny_conformer(layers=2).train()
    groups = ["ffn"] if name == "wanda" else ["ffn", "layers"]
    members = find_members(model, groups)
    criterion = CRITERIA[name]()
    assert isinstance(criterion, Importance)
    criterion.attach(members)
    x, lens = random_batch()
    model.encode(x, lens).pow(2).sum().backward()
    criterion.observe_gradients(members)
    criterion.all_reduce()
    for item in members:
        scores = criterion.score(item)
        assert scores.shape == (item.count,), item
        assert torch.isfinite(scores).all(), item
    criterion.detach()


def test_magnitude_ranks_the_largest_unit_first():
    model = tiny_conformer(layers=1)
    ffn = find_members(model, ["ffn"])[0]
    with torch.no_grad():
        ffn.consumer().weight[:, 5] *= 100.0
    assert int(Magnitude().score(ffn).argmax()) == 5


def _layers(model):
    path, encoder = find_layer_stack(model)
    return Members(path, "layers", encoder)


def test_convexity_scoring_scores_layers_through_the_protocol(tmp_path):
    scoring = ConvexityScoring("utts.csv", "keyword", tmp_path)
    assert isinstance(scoring, Importance)
    model = tiny_conformer(layers=4)
    layers = _layers(model)
    with pytest.raises(ValueError, match="has not scored the model yet"):
        scoring.score(layers)
    curve = [5.0, 20.0, 70.0, 68.0, 60.0]
    scoring.load_state_dict({"history": [{"when": "start", "scores": curve}]})
    scores = scoring.score(layers)
    assert scores.tolist() == curve[1:]
    assert keep_top(scores, 2).tolist() == [1, 2]
    with pytest.raises(ValueError, match="scores layers, not ffn"):
        scoring.score(find_members(model, ["ffn"])[0])
    apply_plan(model, {layers.path: {"layers": torch.tensor([0, 1])}})
    with pytest.raises(ValueError, match="scored 4 layers at start"):
        scoring.score(_layers(model))


def _tampered_model():
    """A tiny Conformer whose layer 1 FFN moved since theta_0."""
    model = tiny_conformer(layers=2)
    units = find_units(model)
    theta0 = snapshot(model, units)
    torch.manual_seed(3)
    with torch.no_grad():
        for param in model.encoder.layers[1].ffn_module1.parameters():
            param.add_(0.5 * torch.randn_like(param))
    x, lens = random_batch()
    trained = encode(model, x, lens)

    def evaluate():
        return {"loss": float((encode(model, x, lens) - trained).abs().mean())}

    importance = LayerImportance(
        metric="loss",
        ambient_threshold=0.0,
        critical_threshold=1.0,
        max_metric=None,
    )
    return model, importance, evaluate, theta0


def test_layer_importance_scores_through_the_protocol():
    model, importance, evaluate, theta0 = _tampered_model()
    assert isinstance(importance, Importance)
    layers = _layers(model)
    with pytest.raises(ValueError, match="run the tamper tests"):
        importance.score(layers)
    report = importance.run(model, evaluate, {"init": theta0}, progress=False)
    assert importance.report is report
    scores = importance.score(layers)
    assert scores.shape == (2,)
    assert scores[0] == 0.0 and scores[1] > 0.0
    moved = report["units"]["layer1.ffn1"]["delta"]["init"]
    by_path = {item.path: item for item in find_members(model, ["ffn"])}
    ffn1 = importance.score(by_path["encoder.layers.1.ffn_module1.1"])
    assert ffn1.shape == (32,) and torch.all(ffn1 == moved)
    still = importance.score(by_path["encoder.layers.1.ffn_module2.1"])
    assert torch.all(still == 0.0)


def test_dropout_policy_reads_an_importance_as_its_report():
    model, importance, evaluate, theta0 = _tampered_model()
    report = importance.run(model, evaluate, {"init": theta0}, progress=False)
    options = dict(
        mode="importance",
        client_size=0.9,
        max_rate=0.5,
        dropped_units=["ffn1", "ffn2"],
    )
    rates = DropoutPolicy(importance=importance, **options).setup(model)
    assert rates == DropoutPolicy(importance=report, **options).setup(model)
    assert rates["layer1.ffn1"] == 0.0  # the critical unit stays whole
    assert max(rates.values()) == 0.5


def test_dropout_policy_drops_the_smallest_magnitudes_first():
    model = tiny_conformer(layers=2)
    with torch.no_grad():
        for param in model.encoder.layers[0].ffn_module2.parameters():
            param.mul_(0.01)
    policy = DropoutPolicy(
        "importance",
        client_size=0.97,
        importance=Magnitude(),
        max_rate=0.5,
        dropped_units=["ffn1", "ffn2"],
    )
    rates = policy.setup(model)
    assert rates["layer0.ffn2"] > 0.0
    assert all(
        rate == 0.0 for unit, rate in rates.items() if unit != "layer0.ffn2"
    )


class FixedLayerScores(Importance):
    """Fixed scores of the layers; records what the layer cut asks."""

    def __init__(self, scores):
        self.scores, self.moments, self.decision = scores, [], None

    def observe_model(self, brain, when):
        self.moments.append(when)
        return {"measured at": when}

    def score(self, members):
        assert members.group == "layers"
        return torch.tensor(self.scores)

    def record_decision(self, decision):
        self.decision = decision


def _conformer_brain(save_dir, hooks, epochs):
    torch.manual_seed(0)
    return build_brain(
        save_dir, tiny_conformer(layers=4).train(), hooks, epochs
    )


def test_layer_cut_reads_any_importance_of_layers(tmp_path):
    scoring = FixedLayerScores([1.0, 4.75, 5.0, 0.0])
    cut = LayerCut("peak", scoring, tolerance=0.5, at_epoch=1)
    brain = _conformer_brain(tmp_path, [cut], epochs=2)
    fit(brain, n_train=16)
    assert cut.decision["kept"] == [0, 1] and cut.decision["when"] == "epoch 1"
    assert cut.decision["layer_scores"] == [1.0, 4.75, 5.0, 0.0]
    assert cut.decision["scores"] == {"measured at": "epoch 1"}
    assert scoring.moments == ["epoch 1"] and scoring.decision is cut.decision
    assert len(brain.modules.model.encoder.layers) == 2


def test_layer_cut_drives_a_data_driven_criterion(tmp_path):
    cut = LayerCut("peak", Taylor(), schedule=OneShot(epoch=1))
    brain = _conformer_brain(tmp_path, [cut], epochs=1)
    fit(brain, n_train=16)
    scores = cut.decision["layer_scores"]
    assert len(scores) == 4 and all(score > 0 for score in scores)
    depth = 1 + next(i for i, s in enumerate(scores) if s >= max(scores))
    assert cut.decision["kept"] == list(range(depth))
    assert len(brain.modules.model.encoder.layers) == depth


def test_layer_cut_refuses_a_scoring_outside_the_protocol():
    class Duck:
        encoder = None

        def scores(self, brain, when):
            return [0.0, 1.0]

    with pytest.raises(ValueError, match="scoring must be a ConvexityScoring"):
        LayerCut("peak", Duck())


# -- schedules --------------------------------------------------------------


def test_layer_cut_moments_are_schedules(tmp_path):
    assert repr(LayerCut("none").schedule) == "AtStart(target=None)"
    assert repr(LayerCut("none", at_epoch=0).schedule) == "AtStart(target=None)"
    assert LayerCut("none", at_epoch=2).schedule.due(0, 2) == [1]
    with pytest.raises(ValueError, match="give at_epoch or schedule"):
        LayerCut("none", at_epoch=2, schedule=OneShot(epoch=2))
    with pytest.raises(ValueError, match="acts once and decides how much"):
        LayerCut("none", schedule=Incremental(0.5, steps=2))
    with pytest.raises(ValueError, match="acts once and decides how much"):
        LayerCut("none", schedule=OneShot(0.5, epoch=2))
    # After an optimizer step: a one-step schedule in steps.
    cut = LayerCut("first", n_layers=3, schedule=Gradual(steps=1, start_step=2))
    brain = _conformer_brain(tmp_path, [cut], epochs=1)
    fit(brain, n_train=32)
    assert cut.decision["when"] == "step 2"
    assert len(brain.modules.model.encoder.layers) == 3


def test_adaptive_dropout_ramp_is_a_schedule():
    shorthand = AdaptiveDropoutPruning(1e-3, 3.0, -5.0, ramp_epochs=4)
    explicit = AdaptiveDropoutPruning(1e-3, 3.0, -5.0, schedule=Ramp(4))
    assert (
        repr(shorthand.schedule) == repr(explicit.schedule) == "Ramp(epochs=4)"
    )
    for progress in (0.0, 0.5, 2.0, 3.9, 4.0, 7.0):
        assert shorthand.target(progress) == explicit.target(progress)
    assert AdaptiveDropoutPruning().schedule.epochs == 10
    with pytest.raises(ValueError, match="give ramp_epochs or schedule"):
        AdaptiveDropoutPruning(ramp_epochs=4, schedule=Ramp(4))
    with pytest.raises(ValueError, match="schedule must be an sb_prune"):
        AdaptiveDropoutPruning(schedule=OneShot(epoch=2))


def test_activation_low_rank_epoch_is_a_schedule():
    assert repr(ActivationLowRank(0.5).schedule) == repr(OneShot(epoch=1))
    hook = ActivationLowRank(0.5, schedule=OneShot(epoch=3))
    assert hook.schedule.due(0, 2) == [] and hook.schedule.due(0, 3) == [1]
    with pytest.raises(ValueError, match="give epoch or schedule"):
        ActivationLowRank(0.5, epoch=2, schedule=OneShot(epoch=2))
    with pytest.raises(ValueError, match="cannot act when training"):
        ActivationLowRank(0.5, schedule=AtStart())


#: ``(hook whose schedule ends after epoch 3, the key its message names)``.
LATE = [
    (lambda: CriterionPruning("magnitude", OneShot(0.5, epoch=3)), "schedule"),
    (lambda: LowRankCompression(Incremental(0.5, steps=3)), "schedule"),
    (lambda: LayerCut("none", at_epoch=3), "at_epoch"),
    (lambda: LayerCut("none", schedule=OneShot(epoch=3)), "schedule"),
    (lambda: ActivationLowRank(0.5, epoch=3), "epoch"),
    (lambda: ActivationLowRank(0.5, schedule=OneShot(epoch=3)), "schedule"),
]


@pytest.mark.parametrize("build, key", LATE)
def test_every_hook_checks_its_schedule_against_the_epochs(
    tmp_path, build, key
):
    hook = build()
    model = convert(tiny_conformer(layers=2), low_rank={"rank": 4})
    brain = build_brain(tmp_path, model, [hook], epochs=2)
    with pytest.raises(ValueError, match="number_of_epochs is 2") as error:
        hook.on_fit_start(brain)
    assert str(error.value).startswith(f"{key}: step ")


def test_at_start_prunes_before_the_first_batch(tmp_path):
    hook = CriterionPruning("magnitude", AtStart(0.5), groups=["ffn"])
    model = tiny_conformer(layers=2).train()
    counts = [m.count for m in find_members(model, ["ffn"])]
    brain = build_brain(tmp_path, model, [hook], epochs=1)
    fit(brain, n_train=16)
    assert hook.history[0]["epoch"] == "start" and len(hook.history) == 1
    assert [m.count for m in find_members(model, ["ffn"])] == [
        count // 2 for count in counts
    ]
    taylor = CriterionPruning("taylor", AtStart(0.5), groups=["ffn"])
    brain = build_brain(
        tmp_path / "taylor", tiny_conformer(layers=2), [taylor], 1
    )
    with pytest.raises(ValueError, match="at least one training batch"):
        taylor.on_fit_start(brain)


def test_sparsity_hooks_need_a_target():
    with pytest.raises(ValueError, match="has no target sparsity"):
        CriterionPruning("magnitude", OneShot(epoch=2))
    with pytest.raises(ValueError, match="has no target sparsity"):
        LowRankCompression(AtStart())
    assert OneShot(0.5, epoch=2).sparsity(1) == 0.5
