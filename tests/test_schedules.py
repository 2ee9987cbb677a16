"""Schedule arithmetic, bad input, and resuming in the middle of one."""

import pytest
import speechbrain as sb
import torch
from helpers import tiny_conformer
from toy_brain import ToyBrain, build_brain, fit, state

from sb_prune import convert
from sb_prune.hooks import CriterionPruning
from sb_prune.training.schedules import (
    Incremental,
    OneShot,
    Schedule,
    make_schedule,
)


def test_linear_and_cubic_ramps():
    linear = Incremental(0.6, steps=3, ramp="linear")
    assert [linear.sparsity(k) for k in range(4)] == pytest.approx(
        [0.0, 0.2, 0.4, 0.6]
    )
    cubic = Incremental(0.8, steps=4, ramp="cubic", initial=0.2)
    # Zhu & Gupta: s_t = s_f + (s_i - s_f) (1 - t / n)^3.
    expected = [0.8 + (0.2 - 0.8) * (1 - k / 4) ** 3 for k in range(5)]
    assert [cubic.sparsity(k) for k in range(5)] == pytest.approx(expected)
    steps = [cubic.sparsity(k + 1) - cubic.sparsity(k) for k in range(4)]
    assert steps == sorted(steps, reverse=True)  # big steps first


def test_epochs_of_steps():
    schedule = Incremental(0.5, steps=3, start_epoch=2, every=3)
    assert [schedule.epoch_of(k) for k in (1, 2, 3)] == [2, 5, 8]
    assert schedule.last_epoch == 8
    assert schedule.due(done=0, epoch=1) == []
    assert schedule.due(done=0, epoch=2) == [1]
    assert schedule.due(done=1, epoch=4) == []
    # A run resumed late takes every step it missed.
    assert schedule.due(done=1, epoch=9) == [2, 3]
    schedule.check_epochs(8)
    one_shot = OneShot(0.25, epoch=3)
    assert one_shot.steps == 1 and one_shot.sparsity(1) == 0.25
    assert one_shot.due(0, 3) == [1]


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"target": 1.0}, r"target must be in \[0, 1\), got 1.0"),
        ({"target": -0.1}, r"target must be in \[0, 1\)"),
        ({"target": "half"}, "target must be a number"),
        ({"target": 0.5, "steps": 0}, "steps must be an integer >= 1"),
        ({"target": 0.5, "steps": 2.5}, "steps must be an integer"),
        ({"target": 0.5, "ramp": "exp"}, "ramp must be one of"),
        ({"target": 0.5, "start_epoch": 0}, "start_epoch must be"),
        ({"target": 0.5, "every": 0}, "every must be"),
        ({"target": 0.5, "initial": 0.6}, r"initial \(0.6\) must not exceed"),
    ],
)
def test_bad_schedules_name_the_key(kwargs, match):
    with pytest.raises(ValueError, match=match):
        Schedule(**kwargs)


def test_names_and_epochs_errors():
    assert isinstance(make_schedule("incremental", target=0.5), Incremental)
    with pytest.raises(ValueError, match="schedule: unknown name 'cosine'"):
        make_schedule("cosine", target=0.5)
    with pytest.raises(ValueError, match="schedule 'one_shot'"):
        make_schedule("one_shot", target=0.5, steps=3)
    with pytest.raises(ValueError, match="number_of_epochs is 3"):
        Incremental(0.5, steps=4).check_epochs(3)
    with pytest.raises(ValueError, match="step must"):
        Incremental(0.5, steps=2).sparsity(3)


class _Interrupted(Exception):
    pass


class _StoppingBrain(ToyBrain):
    """Stops after the checkpoint of epoch ``stop_after`` is saved."""

    stop_after = None

    def on_stage_end(self, stage, stage_loss, epoch):
        super().on_stage_end(stage, stage_loss, epoch)
        if stage == sb.Stage.VALID and epoch == self.stop_after:
            raise _Interrupted


def _brain(save_dir, stop_after=None):
    torch.manual_seed(0)
    model = convert(tiny_conformer(layers=2).train(), prunable_attention={})
    hook = CriterionPruning(
        "taylor",
        Incremental(0.75, steps=3, ramp="cubic"),
        groups=["ffn", "heads"],
    )
    brain = build_brain(save_dir, model, [hook], 4, brain_class=_StoppingBrain)
    brain.stop_after = stop_after
    return brain


def test_resume_mid_schedule_continues_where_it_stopped(tmp_path):
    straight = _brain(tmp_path / "straight")
    fit(straight, n_train=16)
    hook = straight.prune_hooks[0]
    assert [entry["epoch"] for entry in hook.history] == [1, 2, 3]

    interrupted = _brain(tmp_path / "resumed", stop_after=2)
    with pytest.raises(_Interrupted):
        fit(interrupted, n_train=16)
    assert interrupted.prune_hooks[0].step == 2

    resumed = _brain(tmp_path / "resumed")  # a fresh, dense model
    fit(resumed, n_train=16)
    assert len(resumed.losses) == 2  # epochs 3 and 4 only
    assert resumed.prune_hooks[0].step == 3
    assert resumed.prune_hooks[0].history == hook.history
    record, params = state(resumed)
    expected_record, expected_params = state(straight)
    assert record == expected_record
    for key, value in expected_params.items():
        assert torch.allclose(params[key], value, atol=1e-5), key
