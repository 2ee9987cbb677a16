"""Exactness of conversion, adaptive-dropout masking and physical pruning."""

import copy

import pytest
import torch
from helpers import encode, random_batch, tiny_conformer

from sb_prune import convert
from sb_prune.core.structure import describe, restore
from sb_prune.core.surgery import apply_plan
from sb_prune.methods.adaptive_dropout.plan import adaptive_dropout_plan
from sb_prune.nn import AdaptiveDropout, PrunableRelPosMHA

POINTS = ["ffn", "query", "value", "conv"]


def _scramble_retention(model, seed=0, low=-3.0, high=3.0):
    """Give every unit a random logit so some fall below the threshold."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for adl in model.modules():
            if isinstance(adl, AdaptiveDropout):
                noise = torch.rand(adl.n_units, generator=gen)
                adl.set_logits(low + (high - low) * noise)


def _n_params(model):
    return sum(p.numel() for p in model.parameters())


def test_conversion_keeps_outputs():
    model = tiny_conformer()
    x, lens = random_batch()
    expected = encode(model, x, lens)
    convert(model, adaptive_dropout={"points": POINTS, "init_retention": 0.9})
    assert isinstance(model.encoder.layers[0].mha_layer, PrunableRelPosMHA)
    assert torch.allclose(encode(model, x, lens), expected, atol=1e-5)


@pytest.mark.parametrize("points", [[p] for p in POINTS] + [POINTS])
def test_pruned_equals_masked(points):
    model = tiny_conformer(layers=3)
    convert(model, adaptive_dropout={"points": points})
    _scramble_retention(model)
    x, lens = random_batch()
    masked = encode(model, x, lens)
    before = _n_params(model)
    plan = adaptive_dropout_plan(model)
    assert plan, "the scrambled retentions must drop some units"
    apply_plan(model, plan)
    assert _n_params(model) < before
    pruned = encode(model, x, lens)
    assert (pruned - masked).abs().max() <= 1e-5
    # Nothing is left to prune: the plan is now empty.
    assert adaptive_dropout_plan(model) == {}


def test_ragged_heads_and_removed_heads():
    model = tiny_conformer(layers=1)
    convert(model, adaptive_dropout={"points": ["query", "value"]})
    mha = model.encoder.layers[0].mha_layer
    with torch.no_grad():
        mha.query_dropout.set_logits(torch.linspace(-3, 3, 16))
        # Head 0 loses all its values (so the head goes), head 2 loses one.
        logits = torch.full((16,), 3.0)
        logits[:4] = -3.0
        logits[9] = -3.0
        mha.value_dropout.set_logits(logits)
    x, lens = random_batch()
    masked = encode(model, x, lens)
    apply_plan(model, adaptive_dropout_plan(model))
    assert mha.num_heads == 3
    assert mha.v_dims == [4, 3, 4]
    assert len(set(mha.qk_dims)) > 1
    assert (encode(model, x, lens) - masked).abs().max() <= 1e-5


def test_structure_record_rebuilds_a_pruned_model():
    options = {"adaptive_dropout": {"points": POINTS}}
    model = convert(tiny_conformer(layers=2), **options)
    _scramble_retention(model)
    apply_plan(model, adaptive_dropout_plan(model))
    record = describe(model)
    state = copy.deepcopy(model.state_dict())

    fresh = convert(tiny_conformer(layers=2, seed=5), **options)
    with pytest.raises(RuntimeError):
        fresh.load_state_dict(state)
    assert restore(fresh, record)
    fresh.load_state_dict(state)
    x, lens = random_batch()
    assert torch.equal(encode(fresh, x, lens), encode(model, x, lens))
    assert describe(fresh) == record
    assert not restore(fresh, record)


def test_structure_record_can_grow_back():
    options = {"adaptive_dropout": {"points": POINTS}}
    dense = convert(tiny_conformer(layers=2), **options)
    record = describe(dense)
    state = copy.deepcopy(dense.state_dict())
    pruned = copy.deepcopy(dense)
    _scramble_retention(pruned)
    apply_plan(pruned, adaptive_dropout_plan(pruned))
    restore(pruned, record)
    pruned.load_state_dict(state)
    x, lens = random_batch()
    assert torch.equal(encode(pruned, x, lens), encode(dense, x, lens))


def test_layer_plan_and_record():
    model = tiny_conformer(layers=3)
    x, lens = random_batch()
    apply_plan(model, {"encoder": {"layers": [0, 2]}})
    assert len(model.encoder.layers) == 2
    fresh = tiny_conformer(layers=3, seed=3)
    restore(fresh, describe(model))
    fresh.load_state_dict(model.state_dict())
    assert torch.equal(encode(fresh, x, lens), encode(model, x, lens))


def test_record_mismatch_names_the_module():
    model = convert(tiny_conformer(), adaptive_dropout={"points": ["query"]})
    record = describe(model)
    with pytest.raises(ValueError, match="sb_prune.convert"):
        restore(tiny_conformer(), record)


def test_strip_adaptive_dropout_keeps_outputs():
    from sb_prune.methods.adaptive_dropout.strip import strip_adaptive_dropout

    model = convert(
        tiny_conformer(layers=2), adaptive_dropout={"points": POINTS}
    )
    _scramble_retention(model)
    x, lens = random_batch()
    masked = encode(model, x, lens)
    strip_adaptive_dropout(model)
    assert not any(isinstance(m, AdaptiveDropout) for m in model.modules())
    assert (encode(model, x, lens) - masked).abs().max() <= 1e-5
    # The stripped structure can be rebuilt like any other.
    fresh = strip_adaptive_dropout(
        convert(
            tiny_conformer(layers=2, seed=3),
            adaptive_dropout={"points": POINTS},
        )
    )
    restore(fresh, describe(model))
    fresh.load_state_dict(model.state_dict())
    assert torch.equal(encode(fresh, x, lens), encode(model, x, lens))


def test_whisper_ffn_adaptive_dropout_pruned_equals_masked():
    """Whisper encoder: FFN units dropped by adaptive dropout are removed
    exactly; the stripped encoder loads into a plain one."""
    from helpers import tiny_whisper

    from sb_prune.methods.adaptive_dropout.strip import strip_adaptive_dropout

    encoder = tiny_whisper().model.encoder
    convert(encoder, adaptive_dropout={"points": ["ffn"]})
    _scramble_retention(encoder)
    encoder.eval()
    features = torch.randn(2, 8, 20)
    with torch.no_grad():
        masked = encoder(features).last_hidden_state
    strip_adaptive_dropout(encoder)
    assert encoder.layers[0].fc1.out_features < 32
    plain = tiny_whisper(seed=4).model.encoder.eval()
    restore(plain, describe(encoder))
    plain.load_state_dict(encoder.state_dict())
    with torch.no_grad():
        assert (plain(features).last_hidden_state - masked).abs().max() < 1e-5
    with pytest.raises(ValueError, match="has only the 'ffn' point"):
        convert(tiny_whisper().model.encoder, adaptive_dropout={})


def test_ragged_heads_stay_exact_over_several_prunings():
    """Groups of equal heads, ragged heads and a removed head, pruned in
    three rounds: each round equals the masked model before it."""
    from sb_prune.methods.attention.heads import head_groups

    model = tiny_conformer(layers=1, d_model=24, heads=6)
    convert(model, adaptive_dropout={"points": ["query", "value"]})
    mha = model.encoder.layers[0].mha_layer
    x, lens = random_batch()

    def drop(adl, units):
        logits = torch.full((adl.n_units,), 3.0)
        logits[units] = -3.0
        adl.set_logits(logits)

    rounds = [
        # One query unit of heads 2 and 3: groups (0, 1), (2, 3), (4, 5).
        (lambda: drop(mha.query_dropout, [8, 12]), [(2, 4, 4), (2, 3, 4)]),
        # Every value unit of head 1: the head goes.
        (lambda: drop(mha.value_dropout, [4, 5, 6, 7]), None),
        # Scattered units everywhere.
        (lambda: drop(mha.query_dropout, [0, 5, 6, 11]), None),
    ]
    for make_drops, groups in rounds:
        make_drops()
        masked = encode(model, x, lens)
        apply_plan(model, adaptive_dropout_plan(model))
        assert (encode(model, x, lens) - masked).abs().max() <= 1e-5
        if groups:
            assert head_groups(mha.qk_dims, mha.v_dims)[:2] == groups
    assert mha.num_heads == 5
    assert len(head_groups(mha.qk_dims, mha.v_dims)) > 2


def test_ragged_units_of_regular_attention_equal_zeroed_weights():
    from sb_prune.nn import PrunableMHA

    torch.manual_seed(0)
    mha = PrunableMHA(16, 4).eval()
    x, memory = torch.randn(2, 6, 16), torch.randn(2, 5, 16)
    keep_qk = torch.tensor([0, 1, 2, 4, 5, 8, 9, 10, 11, 12])
    keep_v = torch.tensor([0, 3, 4, 5, 6, 7, 12, 13])  # no value of head 2
    with torch.no_grad():
        # A zero query unit adds nothing to the scores, a zero output
        # column nothing to the output.
        dropped_q = torch.ones(16, dtype=torch.bool)
        dropped_q[keep_qk] = False
        mha.in_proj.weight[:16][dropped_q] = 0.0
        mha.in_proj.bias[:16][dropped_q] = 0.0
        dropped_v = torch.ones(16, dtype=torch.bool)
        dropped_v[keep_v] = False
        mha.out_proj.weight[:, dropped_v] = 0.0
        expected = [mha(x, x, x)[0], mha(x, memory, memory)[0]]
    mha.select_units(keep_qk, keep_v)
    assert mha.qk_dims == [3, 2, 1] and mha.v_dims == [2, 4, 2]
    got = [mha(x, x, x)[0], mha(x, memory, memory)[0]]
    for out, ref in zip(got, expected):
        assert (out - ref).abs().max() <= 1e-5
