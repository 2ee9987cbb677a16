"""Criteria on toy models with known answers; prunable regularMHA; hooks."""

import sys
from pathlib import Path

import pytest
import speechbrain as sb
import torch
from helpers import (
    encode,
    random_batch,
    run_two_processes,
    tiny_conformer,
    tiny_lm,
)
from speechbrain.lobes.models.transformer.Transformer import (
    TransformerEncoder,
)
from speechbrain.nnet.attention import (
    MultiheadAttention,
    PositionalwiseFeedForward,
)
from toy_brain import build_brain, fit, state

from sb_prune import convert
from sb_prune.core.surgery import apply_plan
from sb_prune.hooks import CriterionPruning
from sb_prune.methods.criteria.criteria import (
    Activation,
    Magnitude,
    Members,
    Taylor,
    Wanda,
    find_members,
    keep_top,
    make_criterion,
)
from sb_prune.methods.low_rank.convert import LOW_RANK_POINTS
from sb_prune.nn import PrunableMHA
from sb_prune.training.schedules import Gradual, Incremental, OneShot

HERE = Path(__file__).parent


def _ffn(seed=0, d_ffn=6, size=4):
    torch.manual_seed(seed)
    return PositionalwiseFeedForward(d_ffn=d_ffn, input_size=size)


def _hidden(ffn, x):
    """The FFN's hidden activations (input of its down projection)."""
    return ffn.ffn[1](ffn.ffn[0](x))


# ---------------------------------------------------------------- magnitude
def test_magnitude_is_the_norm_of_each_units_weights():
    ffn = _ffn()
    up, down = ffn.ffn[0], ffn.ffn[3]
    expected = (
        up.weight.pow(2).sum(1) + up.bias.pow(2) + down.weight.pow(2).sum(0)
    ).sqrt()
    score = Magnitude().score(Members("", "ffn", ffn))
    assert torch.allclose(score, expected)


def test_magnitude_finds_a_silent_head_and_layer():
    model = convert(tiny_conformer(layers=3), prunable_attention={})
    mha = model.encoder.layers[0].mha_layer
    with torch.no_grad():
        mha.in_proj.weight[8:12].mul_(0.01)  # query units of head 2
        mha.in_proj.weight[24:28].mul_(0.01)  # key units of head 2
        mha.in_proj.weight[40:44].mul_(0.01)  # value units of head 2
        mha.out_proj.weight[:, 8:12].mul_(0.01)
        mha.linear_pos.weight[8:12].mul_(0.01)
        for param in model.encoder.layers[1].parameters():
            if param.dim() > 1:
                param.mul_(0.1)
    heads = Members("encoder.layers.0.mha_layer", "heads", mha)
    assert Magnitude().score(heads).argmin().item() == 2
    layers = Members("encoder", "layers", model.encoder)
    assert Magnitude().score(layers).argmin().item() == 1


# ------------------------------------------------------------------- taylor
def test_taylor_unit_score_is_the_first_order_removal_estimate():
    ffn = _ffn()
    x = torch.randn(3, 5, 4)
    hidden = _hidden(ffn, x)
    hidden.retain_grad()
    loss = ffn.ffn[3](hidden).sin().sum()
    loss.backward()
    # Removing unit j zeroes its activation: dL ~ -sum_t a_j dL/da_j.
    expected = (hidden * hidden.grad).sum((0, 1)).abs()
    taylor = Taylor()
    members = [Members("", "ffn", ffn)]
    taylor.observe_gradients(members, scale=2.0)
    assert torch.allclose(taylor.score(members[0]), expected / 2, atol=1e-6)


def test_taylor_ranks_a_unit_that_does_not_matter_last():
    ffn = _ffn()
    with torch.no_grad():
        ffn.ffn[3].weight[:, 4] = 0.0
    ffn(torch.randn(2, 5, 4)).pow(2).sum().backward()
    taylor = Taylor()
    members = [Members("", "ffn", ffn)]
    taylor.observe_gradients(members)
    assert taylor.score(members[0]).argmin().item() == 4
    with pytest.raises(ValueError, match="at least one training batch"):
        Taylor().score(members[0])


def test_taylor_layer_score_is_the_update_times_the_gradient():
    torch.manual_seed(0)
    enc = TransformerEncoder(3, 2, 16, d_model=8, dropout=0.0)
    members = find_members(enc, ["layers"])
    taylor = Taylor()
    taylor.attach(members)
    x = torch.randn(2, 5, 8, requires_grad=True)
    outputs = []

    def keep(layer, args, output):
        output[0].retain_grad()
        outputs.append((args[0], output[0]))

    handles = [layer.register_forward_hook(keep) for layer in enc.layers]
    enc(x)[0].pow(2).sum().backward()
    for handle in handles:
        handle.remove()
    expected = torch.stack(
        [((x_in - x_out) * x_out.grad).sum().abs() for x_in, x_out in outputs]
    )
    taylor.observe_gradients(members)
    assert torch.allclose(taylor.score(members[0]), expected, atol=1e-5)


def test_taylor_weights_score_is_w_times_grad():
    ffn = _ffn()
    ffn(torch.randn(2, 5, 4)).sum().backward()
    members = Members("ffn.0", "weights", ffn.ffn[0])
    taylor = Taylor()
    taylor.observe_gradients([members])
    weight = ffn.ffn[0].weight
    assert torch.allclose(taylor.score(members), (weight * weight.grad).abs())


# --------------------------------------------------------------- activation
def test_activation_and_wanda_known_answers():
    ffn = _ffn().train()
    members = [Members("", "ffn", ffn), Members("up", "weights", ffn.ffn[0])]
    activation, wanda = Activation(), Wanda()
    activation.attach(members)
    wanda.attach(members)
    x = torch.randn(3, 5, 4)
    ffn(x)
    ffn.eval()  # evaluation passes are not counted
    hidden = _hidden(ffn, x).detach().reshape(-1, 6)
    down = ffn.ffn[3].weight.detach().abs()
    assert torch.allclose(
        activation.score(members[0]), hidden.abs().mean(0), atol=1e-6
    )
    norms = hidden.norm(dim=0)
    assert torch.allclose(wanda.score(members[0]), (down * norms).sum(0))
    inputs = x.reshape(-1, 4)
    up = ffn.ffn[0].weight.detach().abs()
    assert torch.allclose(wanda.score(members[1]), up * inputs.norm(dim=0))
    assert torch.allclose(
        activation.score(members[1]), up * inputs.abs().mean(0), atol=1e-6
    )
    ffn(torch.randn(3, 5, 4))
    assert torch.allclose(
        activation.score(members[0]), hidden.abs().mean(0), atol=1e-6
    )
    activation.detach()
    wanda.detach()


def test_activation_ranks_a_silent_head_and_an_identity_layer():
    model = convert(tiny_conformer(layers=3), prunable_attention={}).train()
    mha = model.encoder.layers[1].mha_layer
    with torch.no_grad():
        mha.in_proj.weight[32 + 4 : 32 + 8] = 0.0  # values of head 1
    members = find_members(model, ["heads", "layers"])
    activation = Activation()
    activation.attach(members)
    x, lens = random_batch()
    model.encode(x, lens)
    by_path = {m.path: m for m in members}
    heads = activation.score(by_path["encoder.layers.1.mha_layer"])
    assert heads.argmin().item() == 1 and heads[1] == 0
    layers = activation.score(by_path["encoder"])
    assert layers.shape == (3,) and torch.all(layers > 0)
    activation.detach()


def test_relpos_contexts_are_the_inputs_of_the_output_projection():
    torch.manual_seed(0)
    model = convert(tiny_conformer(layers=1), prunable_attention={}).train()
    mha = model.encoder.layers[0].mha_layer
    members = find_members(model, ["heads", "weights"])
    activation = Activation()
    activation.attach(members)
    outputs = []
    mha.register_forward_hook(lambda m, a, o: outputs.append(o[0].detach()))
    x, lens = random_batch(batch=1, time=9)
    model.encode(x, torch.ones(1))
    # out = context @ W_out^T + b, with W_out square and invertible here.
    out_proj = mha.out_proj
    contexts = (outputs[0] - out_proj.bias) @ torch.linalg.inv(
        out_proj.weight.detach().T
    )
    expected = contexts.reshape(-1, 16).abs().mean(0)
    by_path = {m.path: m for m in members}
    heads = activation.score(by_path["encoder.layers.0.mha_layer"])
    per_head = expected.view(4, 4).sum(1)
    assert torch.allclose(heads, per_head, atol=1e-4)
    weights = activation.score(by_path["encoder.layers.0.mha_layer.out_proj"])
    assert torch.allclose(weights, out_proj.weight.abs() * expected, atol=1e-4)
    activation.detach()


def test_names_and_bad_input():
    assert isinstance(make_criterion("wanda"), Wanda)
    with pytest.raises(ValueError, match="criterion: unknown name 'l2'"):
        make_criterion("l2")
    with pytest.raises(ValueError, match="not layers"):
        Wanda().attach(find_members(tiny_conformer(), ["layers"]))
    with pytest.raises(ValueError, match="groups: unknown"):
        find_members(tiny_conformer(), ["channels"])
    with pytest.raises(ValueError, match="cannot be combined"):
        CriterionPruning("magnitude", OneShot(0.5), groups=["ffn", "weights"])
    with pytest.raises(ValueError, match="min_units"):
        CriterionPruning("magnitude", OneShot(0.5), min_units=0)
    with pytest.raises(ValueError, match="criterion must be"):
        CriterionPruning(3, OneShot(0.5))
    with pytest.raises(ValueError, match="schedule must be"):
        CriterionPruning("taylor", "one_shot")
    low = convert(tiny_conformer(), low_rank={"points": LOW_RANK_POINTS})
    for group in ("ffn", "heads"):
        with pytest.raises(ValueError, match=f"is low rank.*not its {group}"):
            find_members(low, [group])
    assert keep_top(torch.tensor([3.0, 1.0, 2.0]), 2).tolist() == [0, 2]


# ------------------------------------------------------ prunable regularMHA
def test_prunable_mha_equals_regular_mha_with_masks():
    torch.manual_seed(0)
    reference = MultiheadAttention(nhead=4, d_model=16).eval()
    mha = PrunableMHA.from_multihead(reference).eval()
    x = torch.randn(3, 7, 16)
    causal = torch.triu(torch.full((7, 7), float("-inf")), diagonal=1)
    padding = torch.zeros(3, 7, dtype=torch.bool)
    padding[1, 5:] = True
    padding[2, 3:] = True
    for kwargs in (
        {},
        {"attn_mask": causal, "key_padding_mask": padding},
        {"attn_mask": causal.isinf()},
    ):
        out, attn = mha(x, x, x, **kwargs)
        ref_out, ref_attn = reference(x, x, x, **kwargs)
        assert (out - ref_out).abs().max() <= 1e-5
        assert (attn - ref_attn).abs().max() <= 1e-5
    memory = torch.randn(3, 4, 16)
    out, _ = mha(x, memory, memory)
    assert (out - reference(x, memory, memory)[0]).abs().max() <= 1e-5


def test_removing_a_head_equals_silencing_it():
    torch.manual_seed(0)
    mha = PrunableMHA(16, 4).eval()
    x = torch.randn(2, 6, 16)
    with torch.no_grad():
        mha.out_proj.weight[:, 4:8] = 0.0
        expected = mha(x, x, x)[0]
    members = Members("", "heads", mha)
    apply_plan(mha, {"": members.plan(torch.tensor([0, 2, 3]))})
    assert mha.num_heads == 3 and mha.in_proj.out_features == 36
    assert (mha(x, x, x)[0] - expected).abs().max() <= 1e-5


def test_lm_converts_exactly_and_prunes_heads():
    lm, tokens = tiny_lm(padded_row=1)
    with torch.no_grad():
        expected = lm(tokens)
        convert(lm, prunable_attention={})
        assert (lm(tokens) - expected).abs().max() <= 1e-5
    heads = [m for m in find_members(lm, ["heads"])]
    assert len(heads) == 2
    plan = {m.path: m.plan(torch.tensor([1, 3])) for m in heads}
    apply_plan(lm, plan)
    assert lm(tokens).shape == expected.shape
    with pytest.raises(ValueError, match="no RelPosMHAXL or regularMHA"):
        convert(
            torch.nn.Sequential(torch.nn.Linear(2, 2)), prunable_attention={}
        )


# -------------------------------------------------------------------- hooks
def _brain(save_dir, hook, epochs, prunable=True, run_opts=None):
    torch.manual_seed(0)
    model = tiny_conformer(layers=3).train()
    if prunable:
        convert(model, prunable_attention={})
    return build_brain(save_dir, model, [hook], epochs, run_opts=run_opts)


@pytest.mark.parametrize("criterion", ["magnitude", "taylor", "activation"])
def test_structured_pruning_in_training(tmp_path, criterion):
    hook = CriterionPruning(
        criterion,
        Incremental(0.5, steps=2, ramp="linear"),
        groups=["ffn", "heads", "layers"],
    )
    brain = _brain(tmp_path, hook, epochs=2)
    fit(brain, n_train=16)
    model = brain.modules.model
    assert len(model.encoder.layers) == 2  # 3 -> 2 -> 2 (rounded)
    for layer in model.encoder.layers:
        assert layer.mha_layer.num_heads == 2
        assert layer.ffn_module1[1].ffn[0].out_features == 16
    assert [entry["step"] for entry in hook.history] == [1, 2]
    x, lens = random_batch()
    assert torch.isfinite(encode(model.eval(), x, lens)).all()


def test_gradual_schedule_prunes_after_optimizer_steps_and_resumes(tmp_path):
    """Gradual: steps after optimizer steps 2, 4, 6 (2 per epoch of 16
    utterances in batches of 8); a run resumed after epoch 2 takes the third
    step only, and ends with the sizes of an uninterrupted run."""

    def hook():
        return CriterionPruning(
            "taylor",
            Gradual(0.5, steps=3, ramp="linear", start_step=2, every=2),
            groups=["ffn"],
        )

    def ffn_units(brain):
        members = find_members(brain.unwrapped_modules(), ["ffn"])
        return [m.count for m in members]

    whole = _brain(tmp_path / "whole", hook(), epochs=3)
    fit(whole, n_train=16)
    assert [e["epoch"] for e in whole.prune_hooks[0].history] == [
        "step 2",
        "step 4",
        "step 6",
    ]
    assert set(ffn_units(whole)) == {16}
    first = _brain(tmp_path / "split", hook(), epochs=2)
    fit(first, n_train=16)
    assert first.prune_hooks[0].step == 2
    assert set(ffn_units(first)) == {21}  # 32 * (1 - 2/3 * 0.5), rounded
    resumed = _brain(tmp_path / "split", hook(), epochs=3)
    fit(resumed, n_train=16)
    assert [e["step"] for e in resumed.prune_hooks[0].history] == [1, 2, 3]
    assert ffn_units(resumed) == ffn_units(whole)


def test_gradual_span_places_steps_on_the_run(tmp_path):
    """span [0.25, 0.75] of a 3-epoch run of 2 optimizer steps per epoch
    (6 in all): pruning steps after optimizer steps 2, 3 and 4."""
    hook = CriterionPruning(
        "magnitude",
        Gradual(0.5, steps=3, ramp="linear", span=[0.25, 0.75]),
        groups=["ffn"],
    )
    fit(_brain(tmp_path, hook, epochs=3), n_train=16)
    assert [e["epoch"] for e in hook.history] == ["step 2", "step 3", "step 4"]


def test_scope_and_global_allocation(tmp_path):
    """scope limits pruning to some modules; global allocation ranks a
    group's members across modules: the layer whose FFN units all score
    low loses them (down to min_units), the total matches the target."""
    torch.manual_seed(0)
    model = tiny_conformer(layers=3).train()
    ffn = model.encoder.layers[1].ffn_module1[1].ffn
    with torch.no_grad():  # layer 1's first FFN: units of tiny magnitude
        ffn[0].weight.mul_(1e-3)
        ffn[0].bias.mul_(1e-3)
        ffn[3].weight.mul_(1e-3)
    hook = CriterionPruning(
        "magnitude",
        OneShot(0.25),
        groups=["ffn"],
        min_units=2,
        scope=["model.encoder.layers.1", "model.encoder.layers.2"],
        allocation="global",
    )
    fit(build_brain(tmp_path, model, [hook], 1), n_train=16)
    units = {
        m.path: m.count
        for m in find_members(torch.nn.ModuleDict({"model": model}), ["ffn"])
    }
    path = "model.encoder.layers.{}.ffn_module{}.1"
    assert units[path.format(0, 1)] == units[path.format(0, 2)] == 32
    assert units[path.format(1, 1)] == 2
    assert sum(units[path.format(i, j)] for i in (1, 2) for j in (1, 2)) == 96
    with pytest.raises(ValueError, match="scope: the Brain's modules have no"):
        bad = CriterionPruning("magnitude", OneShot(0.25), scope="model.dec")
        fit(build_brain(tmp_path / "bad", tiny_conformer(), [bad], 1), 16)


def test_unstructured_masks_stay_zero_and_survive_resume(tmp_path):
    def hook():
        return CriterionPruning(
            "wanda", Incremental(0.5, steps=2), groups=["weights"]
        )

    brain = _brain(tmp_path, hook(), epochs=3)
    fit(brain, n_train=16)
    linears = [m.module for m in find_members(brain.modules, ["weights"])]
    zeros = [(lin.weight == 0).float().mean().item() for lin in linears]
    assert all(z == pytest.approx(0.5, abs=0.01) for z in zeros)
    # A resumed run rebuilds the masks: zeros stay zero while training.
    resumed = _brain(tmp_path, hook(), epochs=4)
    fit(resumed, n_train=16)
    assert resumed.prune_hooks[0].step == 2
    linears = [m.module for m in find_members(resumed.modules, ["weights"])]
    again = [(lin.weight == 0).float().mean().item() for lin in linears]
    assert again == zeros


def test_heads_need_prunable_attention(tmp_path):
    hook = CriterionPruning("magnitude", OneShot(0.5), groups=["heads"])
    brain = _brain(tmp_path, hook, epochs=1, prunable=False)
    with pytest.raises(ValueError, match="add prunable_attention"):
        fit(brain, n_train=16)


def test_schedule_longer_than_training_is_refused(tmp_path):
    hook = CriterionPruning("taylor", Incremental(0.5, steps=3, every=2))
    brain = _brain(tmp_path, hook, epochs=4)
    with pytest.raises(ValueError, match="number_of_epochs is 4"):
        fit(brain, n_train=16)


class _RecordedActivation(Activation):
    """Activation that records its statistics and scores at each step."""

    def __init__(self):
        super().__init__()
        self.alone, self.reduced, self.scores = [], [], []

    def all_reduce(self):
        self.alone.append({k: v.clone() for k, v in self.stats.items()})
        super().all_reduce()
        self.reduced.append({k: v.clone() for k, v in self.stats.items()})
        self.scores.append({})

    def score(self, members):
        scores = super().score(members)
        self.scores[-1][members.path] = scores.clone()
        return scores


def test_ddp_two_processes_take_the_same_decisions(tmp_path):
    rank0, rank1 = run_two_processes(__file__, tmp_path)
    (record0, params0, seen0), (record1, params1, seen1) = rank0, rank1
    assert record0 == record1
    heads = [s["v_dims"] for s in record0.values() if "v_dims" in s]
    assert heads and all(len(v) == 2 for v in heads)
    for key in params0:
        assert torch.equal(params0[key], params1[key]), key
    # Each rank saw its own data; the statistics behind each step are the
    # sums over both ranks, and so are the scores each rank computes.
    assert len(seen0["alone"]) == len(seen1["alone"]) == 2
    for step in range(2):
        alone0, alone1 = seen0["alone"][step], seen1["alone"][step]
        assert alone0.keys() == alone1.keys()
        assert not all(torch.equal(alone0[k], alone1[k]) for k in alone0)
        for key in alone0:
            total = alone0[key] + alone1[key]
            assert torch.allclose(seen0["reduced"][step][key], total), key
            assert torch.allclose(seen1["reduced"][step][key], total), key
        scores0, scores1 = seen0["scores"][step], seen1["scores"][step]
        assert scores0 and scores0.keys() == scores1.keys()
        for path in scores0:
            assert torch.allclose(scores0[path], scores1[path]), path


def test_criterion_pruning_fragment(tmp_path):
    from test_low_rank import load_fragment

    hparams = load_fragment("criterion_pruning.yaml", tmp_path)
    mha = hparams["Transformer"].encoder.layers[0].mha_layer
    assert type(mha).__name__ == "PrunableRelPosMHA"
    hook = hparams["prune_hooks"][0]
    assert isinstance(hook.criterion, Taylor)
    assert hook.groups == ["ffn", "heads"]
    assert hook.schedule.epoch_of(1) == 6


def test_asr_criteria_hparams(tmp_path):
    from test_low_rank import load_asr_hparams

    hparams = load_asr_hparams("conformer_ctc_criteria.yaml", tmp_path)
    assert hparams["experiment"] == "conformer_ctc_taylor_0.5"
    mha = hparams["Transformer"].encoder.layers[0].mha_layer
    assert type(mha).__name__ == "PrunableRelPosMHA"
    hook = hparams["prune_hooks"][0]
    assert hook.groups == ["ffn", "heads"]
    # 8 epochs: steps after epochs 4, 5, 6, then two of fine-tuning.
    assert [hook.schedule.epoch_of(k) for k in (1, 2, 3)] == [4, 5, 6]
    hook.schedule.check_epochs(hparams["number_of_epochs"])


if __name__ == "__main__":
    # Run by the DDP test: activation statistics differ between the two
    # processes (each sees its own data shard); decisions must not.
    out = sys.argv[1]
    _, run_opts, _ = sb.parse_arguments(
        ["x.yaml", "--noprogressbar", "--distributed_backend=gloo"]
    )
    sb.utils.distributed.ddp_init_group(run_opts)
    criterion = _RecordedActivation()
    hook = CriterionPruning(
        criterion,
        Incremental(0.5, steps=2, ramp="linear"),
        groups=["ffn", "heads"],
    )
    brain = _brain(f"{out}/ckpt", hook, epochs=2, run_opts=run_opts)
    fit(brain, n_train=16)
    rank = torch.distributed.get_rank()
    seen = {
        "alone": criterion.alone,
        "reduced": criterion.reduced,
        "scores": criterion.scores,
    }
    torch.save((*state(brain), seen), f"{out}/rank{rank}.pt")


def test_activation_statistics_are_float32_sums_of_fp16_inputs():
    ffn = PositionalwiseFeedForward(d_ffn=4, input_size=3).train()
    members = [Members("", "ffn", ffn)]
    activation = Activation()
    activation.attach(members)
    hidden = torch.full((8, 50, 4), 300.0, dtype=torch.float16)
    ffn.ffn[-1].half()(hidden)  # 300^2 = 90000 > fp16 max: float32 sums
    squares = activation.stats[("", "sq")]
    assert squares.dtype == torch.float32
    assert torch.equal(squares, torch.full((4,), 90000.0 * 400))


def test_non_finite_observations_are_dropped_and_counted():
    ffn = PositionalwiseFeedForward(d_ffn=4, input_size=3)
    members = [Members("", "ffn", ffn)]
    taylor = Taylor()
    taylor.attach(members)
    ffn(torch.rand(2, 5, 3)).sum().backward()
    ffn.ffn[-1].weight.grad[0, 1] = float("inf")  # a step the scaler skips
    taylor.observe_gradients(members)
    assert taylor.non_finite == 1
    assert torch.equal(taylor.stats[("", "taylor")], torch.zeros(4))


@pytest.mark.parametrize("criterion", ["taylor", "activation"])
def test_statistics_keys_are_the_same_whatever_ran(criterion):
    """A process that skips a layer (LayerDrop, a closed I3D gate) has the
    same statistics keys and shapes, and summing over processes (what
    all_reduce does) gives the statistics of one process that saw all."""
    torch.manual_seed(0)
    encoder = TransformerEncoder(2, 2, 8, d_model=4).train()
    members = find_members(encoder, ["ffn", "layers"])
    x = torch.rand(2, 5, 4)
    ranks = [make_criterion(criterion) for _ in range(2)]
    both = make_criterion(criterion)

    def step(crit, skip_second_layer):
        crit.attach(members)
        out = encoder.layers[0](x)[0]
        if not skip_second_layer:
            out = encoder.layers[1](out)[0]
        out.pow(2).sum().backward()
        crit.observe_gradients(members)
        encoder.zero_grad()
        crit.detach()

    step(ranks[0], False)
    step(ranks[1], True)
    step(both, False)
    step(both, True)
    assert sorted(ranks[0].stats) == sorted(ranks[1].stats)
    for key, value in both.stats.items():
        assert ranks[0].stats[key].shape == ranks[1].stats[key].shape
        summed = ranks[0].stats[key] + ranks[1].stats[key]
        assert torch.allclose(summed, value, atol=1e-6), key


@pytest.mark.skipif(
    not torch.distributed.is_available(), reason="needs torch.distributed"
)
def test_ddp_statistics_reduce_when_a_process_skips_a_layer(tmp_path):
    rank0, rank1 = run_two_processes(HERE / "criteria_ddp_skip.py", tmp_path)
    assert sorted(rank0["alone"]) == sorted(rank1["alone"])
    skipped = ("layers.1.pos_ffn", "count")
    assert rank1["alone"][skipped] == 0 < rank0["alone"][skipped]
    for key, value in rank0["alone"].items():
        total = value + rank1["alone"][key]
        assert torch.allclose(rank0["reduced"][key], total), key
        assert torch.allclose(rank1["reduced"][key], total), key
