"""PruningBrain: pruning during training, checkpoints, resume and DDP."""

import pytest
import torch
from helpers import HERE, run_two_processes
from toy_brain import fit, make_brain, state

from sb_prune import PruningBrain
from sb_prune.nn import AdaptiveDropout


def _n_params(brain):
    return sum(p.numel() for p in brain.modules.parameters())


def test_training_prunes_and_the_optimizer_follows(tmp_path):
    brain = make_brain(tmp_path, epochs=3)
    dense = _n_params(brain)
    fit(brain)
    assert _n_params(brain) < dense
    assert brain.losses[-1] < brain.losses[0]
    # The optimizer holds exactly the surviving parameters.
    in_optimizer = {
        p for g in brain.optimizer.param_groups for p in g["params"]
    }
    assert in_optimizer == set(brain.modules.parameters())
    for param, param_state in brain.optimizer.state.items():
        assert param_state["exp_avg"].shape == param.shape
    # The history records fewer units after each pruning step.
    units = [entry["units"] for entry in brain.prune_hooks[0].history]
    assert units == sorted(units, reverse=True) and units[-1] < units[0]


def _mean_retention_after_one_epoch(save_dir, weight):
    brain = make_brain(save_dir, epochs=1, weight=weight)
    brain.prune_hooks[0].prune_every_epoch = False
    fit(brain)
    modules = brain.modules.modules()
    layers = [m for m in modules if isinstance(m, AdaptiveDropout)]
    return torch.cat([m.retention().detach() for m in layers]).mean()


def test_regularizer_lowers_retention(tmp_path):
    without = _mean_retention_after_one_epoch(tmp_path / "a", weight=0.0)
    with_regularizer = _mean_retention_after_one_epoch(tmp_path / "b", 0.01)
    assert with_regularizer < without - 0.05


def test_resume_restores_structure_and_parameters(tmp_path):
    first = make_brain(tmp_path, epochs=3)
    fit(first)
    record, params = state(first)
    dense_record, _ = state(make_brain(tmp_path / "other", epochs=3))
    assert record != dense_record

    # A fresh, dense Brain recovers the pruned checkpoint before training.
    resumed = make_brain(tmp_path, epochs=3)
    resumed.checkpointer.recover_if_possible()
    new_record, new_params = state(resumed)
    assert new_record == record
    assert new_params.keys() == params.keys()
    for key, value in params.items():
        assert torch.equal(new_params[key], value), key

    # Interrupted after epoch 3 of 4: the rerun continues with epoch 4 only.
    resumed = make_brain(tmp_path, epochs=4)
    fit(resumed)
    assert len(resumed.losses) == 1


def test_a_resumed_run_ends_as_the_uninterrupted_one(tmp_path):
    # Adaptive-dropout masks draw from the global generator: the resumed
    # run must draw what the uninterrupted one did after its checkpoint.
    whole = make_brain(tmp_path / "whole", epochs=3)
    fit(whole)
    cut = make_brain(tmp_path / "cut", epochs=2)
    fit(cut)
    torch.rand(100)  # the numbers a crashed process drew after its save
    resumed = make_brain(tmp_path / "cut", epochs=3)
    fit(resumed)
    (record, params), (new_record, new_params) = state(whole), state(resumed)
    assert new_record == record
    for key, value in params.items():
        assert torch.equal(new_params[key], value), key


def test_checkpoint_average_keeps_one_structure(tmp_path):
    brain = make_brain(tmp_path, epochs=3)
    fit(brain)
    checkpoints = brain.checkpointer.find_checkpoints()
    same = [c for c in checkpoints if brain.has_current_structure(c)]
    assert 1 <= len(same) < len(checkpoints)


def test_hook_without_adaptive_dropout_is_an_error(tmp_path):
    brain = make_brain(tmp_path, epochs=1, points=None)
    with pytest.raises(ValueError, match="no AdaptiveDropout"):
        fit(brain)


@pytest.mark.skipif(
    not torch.distributed.is_available(), reason="needs torch.distributed"
)
def test_ddp_two_processes_prune_identically(tmp_path):
    (record0, params0), (record1, params1) = run_two_processes(
        HERE / "toy_brain.py", tmp_path
    )
    assert record0 == record1
    assert record0 != state(make_brain(tmp_path / "dense", epochs=1))[0]
    for key in params0:
        assert torch.equal(params0[key], params1[key]), key


def test_two_unnamed_hooks_of_one_class_are_refused():
    from sb_prune.hooks import CriterionPruning
    from sb_prune.schedules import OneShot

    def hook(name=None):
        return CriterionPruning("magnitude", OneShot(0.5), name=name)

    modules = {"lin": torch.nn.Linear(2, 2)}
    with pytest.raises(ValueError, match="two hooks are named"):
        PruningBrain(modules=modules, hparams={"prune_hooks": [hook(), hook()]})
    brain = PruningBrain(
        modules=modules, hparams={"prune_hooks": [hook(), hook("second")]}
    )
    names = [h.checkpoint_name for h in brain.prune_hooks]
    assert names == ["sb_prune_hook_CriterionPruning", "sb_prune_hook_second"]
