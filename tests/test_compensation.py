"""Least-squares compensation of pruned units and heads."""

import sys

import pytest
import speechbrain as sb
import torch
from helpers import run_two_processes, tiny_conformer, tiny_whisper
from toy_brain import build_brain, fit, toy_data

from sb_prune import convert
from sb_prune.core.importance import Members
from sb_prune.hooks import CriterionPruning
from sb_prune.methods.criteria.compensation import LeastSquaresCompensation
from sb_prune.methods.criteria.criteria import find_members
from sb_prune.training.schedules import AtStart, OneShot


def _inputs_of(linear, run):
    seen = []
    handle = linear.register_forward_pre_hook(
        lambda module, args: seen.append(args[0].detach().flatten(0, -2))
    )
    run()
    handle.remove()
    return torch.cat(seen).double()


@pytest.mark.parametrize("group", ["ffn", "heads"])
def test_refit_is_the_least_squares_fit_of_the_dense_output(group):
    """The kept columns and bias give the output ``lstsq`` gives when it
    fits the dense output from the kept inputs (and a constant) on the
    frames seen; the removed columns are left for the surgery."""
    layer = tiny_whisper().model.encoder.layers[0].train()
    module = layer if group == "ffn" else layer.self_attn
    members = Members("", group, module)
    consumer = members.consumer()
    compensation = LeastSquaresCompensation(damping=1e-12)
    compensation.attach([members])
    hidden = torch.randn(3, 40, 16)
    x = _inputs_of(consumer, lambda: layer(hidden, attention_mask=None))
    weight = consumer.weight.detach().double().clone()
    bias = consumer.bias.detach().double().clone()
    dense = x @ weight.T + bias
    kept = torch.tensor([1]) if group == "heads" else torch.arange(0, 32, 2)
    columns = torch.arange(8, 16) if group == "heads" else kept
    compensation.compensate(members, kept)
    design = torch.cat([x[:, columns], torch.ones(len(x), 1).double()], 1)
    best = design @ torch.linalg.lstsq(design, dense).solution
    refit = torch.cat([consumer.weight[:, columns], consumer.bias[:, None]], 1)
    fitted = design @ refit.detach().double().T
    # As close as the best fit, to float32 moments' precision (the
    # coefficients may differ: the kept inputs of a random model are
    # nearly collinear), and far closer than the kept columns as they were.
    error = (fitted - dense).norm()
    assert error <= (best - dense).norm() + 1e-4 * dense.norm()
    as_they_were = x[:, columns] @ weight[:, columns].T + bias
    assert error < 0.5 * (as_they_were - dense).norm()
    removed = torch.ones(weight.shape[1], dtype=torch.bool)
    removed[columns] = False
    assert torch.equal(consumer.weight[:, removed].double(), weight[:, removed])


def _ffn_hook(compensate=True):
    return CriterionPruning(
        "magnitude", OneShot(0.5), groups=["ffn"], compensate=compensate
    )


def _pruned_error(tmp_path, compensate):
    """Prune half the FFN units of a tiny Conformer after one epoch at
    learning rate 0 (the dense model stays); output error on its data."""
    torch.manual_seed(0)
    model = tiny_conformer(layers=2).train()
    dense = tiny_conformer(layers=2).eval()
    hook = _ffn_hook(compensate)
    brain = build_brain(tmp_path / str(compensate), model, [hook], 1, lr=0.0)
    fit(brain, n_train=32)
    x = toy_data(n=32).tensors[0]
    lens = torch.ones(len(x))
    with torch.no_grad():
        pruned = model.eval()(x, tgt=None, wav_len=lens)[0]
        target = dense(x, tgt=None, wav_len=lens)[0]
    units = [m.count for m in find_members(model, ["ffn"])]
    if compensate:  # no step to come: no moments summed any more
        assert hook.compensation.moments == {}
        assert hook.compensation._handles == []
    return (pruned - target).pow(2).mean().item(), units


def test_compensated_pruning_in_training_stays_closer_to_dense(tmp_path):
    plain, plain_units = _pruned_error(tmp_path, compensate=False)
    refit, refit_units = _pruned_error(tmp_path, compensate=True)
    assert refit_units == plain_units == [16, 16, 16, 16]
    assert refit < 0.5 * plain


def test_bad_input(tmp_path):
    with pytest.raises(ValueError, match="compensate: refits .* \\['layers'"):
        CriterionPruning("taylor", OneShot(0.5), ["layers"], compensate=True)
    with pytest.raises(ValueError, match="compensate must be"):
        CriterionPruning("taylor", OneShot(0.5), compensate="yes")
    with pytest.raises(ValueError, match="damping must be > 0"):
        LeastSquaresCompensation(damping=0)
    torch.manual_seed(0)
    model = tiny_conformer(layers=2).train()
    hook = CriterionPruning(
        "magnitude", AtStart(0.5), groups=["ffn"], compensate=True
    )
    brain = build_brain(tmp_path / "start", model, [hook], 1)
    with pytest.raises(ValueError, match="compensate: no training frame"):
        fit(brain, n_train=16)
    convert(model, prunable_attention={})  # heads project functionally
    hook = CriterionPruning(
        "magnitude", OneShot(0.5), groups=["heads"], compensate=True
    )
    brain = build_brain(tmp_path / "heads", model, [hook], 1)
    with pytest.raises(ValueError, match="cannot refit its output projection"):
        fit(brain, n_train=16)


class _RecordedRefit(LeastSquaresCompensation):
    """Keeps each consumer's weights as refitted on this process."""

    refits = []

    def compensate(self, members, kept):
        super().compensate(members, kept)
        self.refits.append(members.consumer().weight.detach().clone())


def test_ddp_processes_refit_alike(tmp_path):
    """Each process sees its own data shard; the moments are summed, so
    every process refits the same weights (with its own moments, each
    would refit others)."""
    refits0, refits1 = run_two_processes(__file__, tmp_path)
    assert len(refits0) == len(refits1) == 4
    for refit0, refit1 in zip(refits0, refits1):
        assert torch.equal(refit0, refit1)


if __name__ == "__main__":
    out = sys.argv[1]
    _, run_opts, _ = sb.parse_arguments(
        ["x.yaml", "--noprogressbar", "--distributed_backend=gloo"]
    )
    sb.utils.distributed.ddp_init_group(run_opts)
    torch.manual_seed(0)
    model = tiny_conformer(layers=2).train()
    hook = _ffn_hook()
    hook.compensation = _RecordedRefit()
    brain = build_brain(f"{out}/ckpt", model, [hook], 1, run_opts=run_opts)
    fit(brain, n_train=32)
    rank = torch.distributed.get_rank()
    torch.save(_RecordedRefit.refits, f"{out}/rank{rank}.pt")
