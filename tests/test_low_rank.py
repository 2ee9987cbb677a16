"""LowRankLinear: exactness, ordered ranks, conversion, stages and export."""

import copy
from pathlib import Path

import pytest
import torch
from helpers import encode, random_batch, tiny_conformer, tiny_lm
from speechbrain.nnet.attention import PositionalwiseFeedForward
from toy_brain import build_brain, fit

from sb_prune import convert
from sb_prune.core.profiling import count_macs
from sb_prune.core.saved_model import load_exported
from sb_prune.core.structure import describe, restore
from sb_prune.hooks import ActivationLowRank, LowRankCompression
from sb_prune.methods.low_rank.activations import (
    OutputStatistics,
    explained_variance_rank,
    pca_low_rank,
)
from sb_prune.methods.low_rank.layer import (
    rank_for_compression,
    set_compression,
)
from sb_prune.nn import LowRankLinear
from sb_prune.training.schedules import Gradual, Incremental


def _linear(inputs=24, outputs=40, seed=0):
    torch.manual_seed(seed)
    return torch.nn.Linear(inputs, outputs)


def test_full_rank_equals_the_linear():
    dense = _linear()
    low = LowRankLinear.from_linear(dense)
    x = torch.randn(5, 7, 24)
    assert low.rank == 24
    assert (low(x) - dense(x)).abs().max() <= 1e-5
    assert (low.weight - dense.weight).abs().max() <= 1e-5


def test_error_decreases_with_rank_and_is_optimal():
    dense = _linear()
    values = torch.linalg.svdvals(dense.weight.detach().double())
    errors = []
    for rank in range(1, 25):
        low = LowRankLinear.from_linear(dense, rank)
        error = (low.weight - dense.weight).norm().item()
        errors.append(error)
        # Eckart-Young: the error of the best rank-r approximation.
        assert error == pytest.approx(values[rank:].norm().item(), abs=1e-4)
    assert errors == sorted(errors, reverse=True)
    assert errors[-1] <= 1e-5


def test_set_rank_selects_the_same_model_as_truncation():
    full = LowRankLinear.from_linear(_linear())
    x = torch.randn(3, 24)
    for rank in (1, 5, 17):
        full.set_rank(rank)
        cut = copy.deepcopy(full)
        cut.set_rank(None)
        cut.truncate_(rank)
        assert cut.rank == rank
        assert torch.allclose(full(x), cut(x), atol=1e-5)
    full.set_rank(None)
    assert full.active_rank is None


def test_reorder_restores_the_order_after_training():
    low = LowRankLinear.from_linear(_linear(), rank=12)
    with torch.no_grad():
        low.up.weight.add_(0.3 * torch.randn_like(low.up.weight))
        low.down.weight[[0, 11]] = low.down.weight[[11, 0]]
    x = torch.randn(4, 24)
    before = low(x)
    up, down = low.up.weight, low.down.weight
    values = low.reorder_()
    assert low.up.weight is up and low.down.weight is down
    assert torch.allclose(low(x), before, atol=1e-5)
    assert torch.all(values[:-1] >= values[1:])
    norms = low.up.weight.norm(dim=0) * low.down.weight.norm(dim=1)
    assert torch.allclose(norms, values, rtol=1e-4)


def test_one_trained_model_delivers_several_sizes():
    model = convert(tiny_conformer(), low_rank={"points": ["ffn"]})
    with torch.no_grad():  # "training" moves the factors out of order
        for layer in model.modules():
            if isinstance(layer, LowRankLinear):
                layer.up.weight.mul_(torch.rand_like(layer.up.weight) + 0.5)
    x, lens = random_batch()
    full = encode(model, x, lens)
    errors = []
    for compression in (0.0, 0.25, 0.5, 0.75):
        ranks = set_compression(model, compression)
        selected = encode(model, x, lens)
        cut = copy.deepcopy(model)
        assert set_compression(cut, compression, physical=True) == ranks
        assert (encode(cut, x, lens) - selected).abs().max() <= 1e-5
        errors.append((selected - full).norm().item())
    assert errors == sorted(errors)
    set_compression(model, 0.0)  # selection can go back up


@pytest.mark.parametrize(
    "bad, match",
    [
        ({"rank": 0}, r"rank .* must be in \[1, min"),
        ({"rank": 25}, r"rank .* must be in \[1, min"),
        ({"compression": 1.0}, "compression must be in"),
        ({"points": ["conv"]}, "low_rank.points"),
        ({"rank": 3, "compression": 0.5}, "not both"),
    ],
)
def test_bad_options_name_the_key(bad, match):
    model = torch.nn.Sequential(PositionalwiseFeedForward(24, input_size=40))
    with pytest.raises(ValueError, match=match):
        convert(model, low_rank=bad)


def test_constructor_rank_errors():
    with pytest.raises(ValueError, match="rank must be in"):
        LowRankLinear(4, 6, rank=5)
    with pytest.raises(ValueError, match="rank must be in"):
        LowRankLinear.from_linear(_linear()).set_rank(30)


def test_rank_for_compression():
    assert rank_for_compression(144, 576, 0.0) == 115
    assert rank_for_compression(144, 576, 0.75) == 28
    assert rank_for_compression(4, 4, 0.99) == 1


def test_full_rank_conversion_keeps_the_asr_encoder():
    model = tiny_conformer()
    x, lens = random_batch()
    expected = encode(model, x, lens)
    convert(model, low_rank={"points": ["ffn", "attention"]})
    lows = [m for m in model.modules() if isinstance(m, LowRankLinear)]
    assert len(lows) == 2 * (2 * 2 + 2)  # 2 layers x (2 FFNs x 2 + attn 2)
    assert (encode(model, x, lens) - expected).abs().max() <= 1e-5


def _materialised(model):
    """A copy whose LowRankLinear layers are Linear layers of U V."""
    dense = copy.deepcopy(model)
    for name, module in list(dense.named_modules()):
        if isinstance(module, LowRankLinear):
            parent, _, child = name.rpartition(".")
            linear = torch.nn.Linear(
                module.down.in_features,
                module.up.out_features,
                bias=module.bias is not None,
            )
            with torch.no_grad():
                linear.weight.copy_(module.weight)
                if module.bias is not None:
                    linear.bias.copy_(module.bias)
            setattr(dense.get_submodule(parent), child, linear)
    return dense


def test_truncated_attention_runs_as_factors():
    model = convert(tiny_conformer(), low_rank={"points": ["attention"]})
    for module in model.modules():
        if isinstance(module, LowRankLinear):
            module.truncate_(2)
    dense = _materialised(model)
    x, lens = random_batch()
    assert (encode(model, x, lens) - encode(dense, x, lens)).abs().max() <= 1e-5
    # The factors are applied one after the other, never multiplied out.
    assert count_macs(encode, model, x, lens) < count_macs(
        encode, dense, x, lens
    )


def test_full_rank_conversion_keeps_the_lm():
    lm, tokens = tiny_lm()
    with torch.no_grad():
        expected = lm(tokens)
        convert(lm, low_rank={"points": ["ffn", "attention"]})
        assert (lm(tokens) - expected).abs().max() <= 1e-5


def test_structure_record_rebuilds_a_truncated_model():
    options = {"low_rank": {"points": ["ffn"]}}
    model = convert(tiny_conformer(), **options)
    for module in model.modules():
        if isinstance(module, LowRankLinear):
            module.truncate_(3)
    record = describe(model)
    assert {spec["rank"] for spec in record.values() if "rank" in spec} == {3}
    fresh = convert(tiny_conformer(seed=4), **options)
    restore(fresh, record)
    fresh.load_state_dict(model.state_dict())
    x, lens = random_batch()
    assert torch.equal(encode(fresh, x, lens), encode(model, x, lens))


def _low_rank_brain(save_dir, export_dir, epochs=3):
    torch.manual_seed(0)
    model = convert(tiny_conformer().train(), low_rank={"points": ["ffn"]})
    hook = LowRankCompression(
        Incremental(0.75, steps=3, ramp="linear"), export_folder=export_dir
    )
    return build_brain(save_dir, model, [hook], epochs)


def test_incremental_stages_are_exported_and_load(tmp_path):
    brain = _low_rank_brain(tmp_path / "ckpt", tmp_path / "export")
    fit(brain, n_train=16)
    stages = sorted(p.name for p in (tmp_path / "export").iterdir())
    assert stages == [
        "compression_0.25",
        "compression_0.50",
        "compression_0.75",
    ]
    x, lens = random_batch()
    sizes = []
    for stage in stages:
        fresh = torch.nn.ModuleDict(
            {
                "model": convert(
                    tiny_conformer(seed=3), low_rank={"points": ["ffn"]}
                ),
                "head": torch.nn.Linear(16, 4),
            }
        )
        load_exported(fresh, tmp_path / "export" / stage)
        sizes.append(sum(p.numel() for p in fresh.parameters()))
        assert torch.isfinite(encode(fresh["model"], x, lens)).all()
    assert sizes == sorted(sizes, reverse=True)
    # The last stage is the trained model itself.
    brain.modules.eval()
    assert torch.equal(
        encode(fresh["model"], x, lens), encode(brain.modules.model, x, lens)
    )
    ranks = [entry["ranks"][0] for entry in brain.prune_hooks[0].history]
    assert ranks == sorted(ranks, reverse=True)
    assert ranks[-1] == rank_for_compression(16, 32, 0.75)


def test_low_rank_hook_needs_low_rank_layers(tmp_path):
    brain = _low_rank_brain(tmp_path, None)
    brain.modules["model"] = tiny_conformer()
    with pytest.raises(ValueError, match="add low_rank to sb_prune.convert"):
        brain.prune_hooks[0].on_fit_start(brain)


DENSE_YAML = """
number_of_epochs: 12
output_folder: {out}
Transformer_dense: !new:{module}.TransformerASR
    input_size: 12
    tgt_vocab: 10
    d_model: 16
    nhead: 4
    num_encoder_layers: 2
    num_decoder_layers: 0
    d_ffn: 32
    encoder_module: conformer
    attention_type: RelPosMHAXL
    normalize_before: True
"""


def load_fragment(name, tmp_path):
    """An hparams fragment of the repository's hparams/ on a tiny model."""
    from hyperpyyaml import load_hyperpyyaml

    root = Path(__file__).resolve().parents[1]
    module = "speechbrain.lobes.models.transformer.TransformerASR"
    dense = DENSE_YAML.format(out=tmp_path, module=module)
    return load_hyperpyyaml(dense + (root / "hparams" / name).read_text())


def test_low_rank_fragment(tmp_path):
    hparams = load_fragment("low_rank.yaml", tmp_path)
    lows = [
        m
        for m in hparams["Transformer"].modules()
        if isinstance(m, LowRankLinear)
    ]
    assert len(lows) == 12
    hook = hparams["prune_hooks"][0]
    assert hook.schedule.start_epoch == 6 and hook.schedule.last_epoch == 8


def load_asr_hparams(name, tmp_path):
    """An hparams file of the ASR recipe, as train.py loads it."""
    from hyperpyyaml import load_hyperpyyaml

    root = Path(__file__).resolve().parents[1]
    path = root / "recipes/LibriSpeech/ASR/hparams" / name
    with open(path) as handle:
        return load_hyperpyyaml(handle, {"output_folder": str(tmp_path)})


def test_asr_low_rank_hparams(tmp_path):
    hparams = load_asr_hparams("conformer_ctc_low_rank.yaml", tmp_path)
    lows = [
        m
        for m in hparams["Transformer"].modules()
        if isinstance(m, LowRankLinear)
    ]
    layers = hparams["num_encoder_layers"]
    assert len(lows) == layers * (2 * 2 + 2)
    hook = hparams["prune_hooks"][0]
    assert isinstance(hook, LowRankCompression)
    assert [hook.schedule.epoch_of(k) for k in (1, 2)] == [4, 6]


def test_activation_pca_beats_weight_svd_on_its_calibration_inputs():
    """LiteASR-style factors: exact on outputs of low rank, and closer than
    truncated SVD to the layer on inputs from a low-dimensional subspace."""
    torch.manual_seed(0)
    dense = torch.nn.Linear(24, 40)
    mixing = torch.randn(6, 24)
    x = torch.randn(400, 6) @ mixing + 0.01 * torch.randn(400, 24)
    stats = OutputStatistics(dense)
    dense(x)
    stats.remove()
    pca = pca_low_rank(dense, stats, rank=6)
    svd = LowRankLinear.from_linear(dense, rank=6)
    with torch.no_grad():
        target = dense(x)
        pca_error = (pca(x) - target).pow(2).mean()
        svd_error = (svd(x) - target).pow(2).mean()
    assert pca_error < 1e-3 * target.pow(2).mean()
    assert pca_error < 0.01 * svd_error
    full = pca_low_rank(dense, stats, rank=24)
    assert torch.allclose(full(x), target, atol=1e-4)


def test_activation_low_rank_hook_converts_and_resumes(tmp_path):
    """Calibrated during epoch 1, factorised at its end, and a resumed run
    rebuilds the factors from the structure record."""
    torch.manual_seed(0)
    hook = ActivationLowRank(0.5, points=["ffn"], epoch=1)
    brain = build_brain(tmp_path, tiny_conformer().train(), [hook], epochs=2)
    fit(brain, n_train=16)
    layers = [
        m for m in brain.modules.model.modules() if isinstance(m, LowRankLinear)
    ]
    assert len(layers) == 8 and hook.done  # 2 layers x 2 FFNs x 2
    assert {m.rank for m in layers} == {rank_for_compression(16, 32, 0.5)}
    x, lens = random_batch()
    brain.modules.eval()
    trained = encode(brain.modules.model, x, lens)
    resumed = build_brain(
        tmp_path, tiny_conformer(seed=5), [ActivationLowRank(0.5)], epochs=2
    )
    fit(resumed, n_train=16)  # recovers, with the optimizer, and stops
    assert resumed.prune_hooks[0].done
    resumed.modules.eval()
    assert torch.equal(encode(resumed.modules.model, x, lens), trained)


def test_activation_low_rank_after_a_placed_optimizer_step(tmp_path):
    """A one-step Gradual span is placed on the run (the base hook's
    on_batch_start) and factorises after that optimizer step."""
    torch.manual_seed(0)
    span = Gradual(steps=1, span=[0.5, 0.5])
    hook = ActivationLowRank(0.5, points=["ffn"], schedule=span)
    brain = build_brain(tmp_path, tiny_conformer().train(), [hook], epochs=2)
    fit(brain, n_train=16)  # 2 optimizer steps an epoch
    assert hook.done and span.epoch_of(1) == 2
    assert any(isinstance(m, LowRankLinear) for m in brain.modules.modules())


def _known_spectrum(variances, out_features, seed=0):
    """A Linear and its statistics whose centred outputs have exactly
    ``variances`` (then zeros) along orthonormal directions."""
    gen = torch.Generator().manual_seed(seed)
    n, width = 200, len(variances)
    inputs = torch.randn(n, width, generator=gen, dtype=torch.float64)
    inputs, _ = torch.linalg.qr(inputs - inputs.mean(0))  # centred, orthonormal
    inputs = inputs * (n * torch.tensor(variances, dtype=torch.float64)).sqrt()
    rotation, _ = torch.linalg.qr(
        torch.randn(out_features, width, generator=gen, dtype=torch.float64)
    )
    dense = torch.nn.Linear(width, out_features).double()
    with torch.no_grad():
        dense.weight.copy_(rotation)
        dense.bias.normal_(generator=gen)
    stats = OutputStatistics(dense)
    dense(inputs)
    stats.remove()
    return dense, stats


def _smallest_rank(variances, threshold):
    total = sum(variances)
    return next(
        k
        for k in range(1, len(variances) + 1)
        if sum(variances[:k]) >= threshold * total
    )


@pytest.mark.parametrize("threshold", [0.3, 0.5, 0.8, 0.9, 0.97, 0.995])
def test_explained_variance_rank_is_exact_on_a_known_spectrum(threshold):
    variances = [0.9**k for k in range(48)]
    dense, stats = _known_spectrum(variances, out_features=64)
    needed = _smallest_rank(variances, threshold)
    assert explained_variance_rank(dense, stats, threshold, 1) == (
        needed if needed * (48 + 64) < 48 * 64 else None
    )
    # Multiples of 16 of a 48 -> 64 layer: 16 saves weights, 32 does not.
    by_16 = explained_variance_rank(dense, stats, threshold, 16)
    assert by_16 == (16 if needed <= 16 else None)


def test_explained_variance_of_a_bias_free_layer_is_uncentred():
    """Outputs far from zero along one axis: their energy is one direction
    (all a bias-free factorisation can keep), their variance is not."""
    torch.manual_seed(0)
    dense = torch.nn.Linear(8, 8, bias=False)
    with torch.no_grad():
        dense.weight.copy_(torch.eye(8))
    stats = OutputStatistics(dense)
    dense(torch.randn(500, 8) + torch.tensor([20.0] + [0.0] * 7))
    assert explained_variance_rank(dense, stats, 0.9, multiple=1) == 1
    dense.bias = torch.nn.Parameter(torch.zeros(8))  # now centred: spread
    assert explained_variance_rank(dense, stats, 0.9, multiple=1) is None


def test_variance_rule_keeps_dense_layers_and_resumes(tmp_path):
    """LiteASR's rule factorises some FFN matrices and keeps the others
    dense; the ranks are recorded, and a resumed run rebuilds the mixed
    model from the structure record."""
    torch.manual_seed(0)
    hook = ActivationLowRank(variance=0.95, rank_multiple=4)
    model = tiny_conformer().train()
    brain = build_brain(tmp_path, model, [hook], epochs=2)
    fit(brain, n_train=16)
    layers = {
        path: module
        for path, module in brain.unwrapped_modules().named_modules()
        if path in hook.ranks
    }
    assert len(layers) == 8
    assert set(hook.ranks.values()) == {8, None}
    for path, rank in hook.ranks.items():
        if rank is None:
            assert type(layers[path]) is torch.nn.Linear
        else:
            assert layers[path].rank == rank
            assert rank * (16 + 32) < 16 * 32
    x, lens = random_batch()
    brain.modules.eval()
    trained = encode(brain.modules.model, x, lens)
    again = ActivationLowRank(variance=0.95, rank_multiple=4)
    resumed = build_brain(tmp_path, tiny_conformer(seed=5), [again], epochs=2)
    fit(resumed, n_train=16)  # recovers and stops
    assert again.done and again.ranks == hook.ranks
    resumed.modules.eval()
    assert torch.equal(encode(resumed.modules.model, x, lens), trained)


@pytest.mark.parametrize(
    "options, match",
    [
        ({"variance": 0}, r"variance must be in \(0, 1\), got 0"),
        ({"variance": 1.0}, r"variance must be in \(0, 1\), got 1.0"),
        ({"variance": "0.9"}, "variance must be a number in"),
        ({"variance": {"ffn": 1.5}}, r"variance.ffn must be in \(0, 1\)"),
        (
            {"variance": {"ffn": 0.9}, "points": ["ffn", "attention"]},
            r"variance: no threshold for the point\(s\) \['attention'\]",
        ),
        ({"variance": {"ffn": 0.9, "conv": 0.9}}, "unknown key"),
        ({"variance": 0.9, "compression": 0.5}, "exactly one"),
        ({}, "exactly one"),
        ({"variance": 0.9, "rank_multiple": 0}, "rank_multiple must be"),
    ],
)
def test_bad_variance_options_name_the_key(options, match):
    with pytest.raises(ValueError, match=match):
        ActivationLowRank(**options)


def test_densify_and_refactorise_keep_the_output():
    torch.manual_seed(0)
    low = LowRankLinear.from_linear(torch.nn.Linear(6, 5), rank=3)
    x = torch.randn(4, 6)
    expected = low(x)
    low.densify_()
    assert low.rank is None and low.up.weight.shape == (5, 6)
    assert torch.allclose(low(x), expected, atol=1e-5)
    low.select_ranks(torch.arange(3))  # factorised again, ordered
    assert low.rank == 3
    assert torch.allclose(low(x), expected, atol=1e-5)


def _stub_cost_table():
    """The FFN's up projections (16x32) are never faster factorised; its
    down projections (32x16) are faster at every rank."""
    return {
        "tokens": 8,
        "shapes": {
            "16x32": {"dense": 1.0, "ranks": {"2": 1.1, "5": 1.2, "10": 1.3}},
            "32x16": {"dense": 1.0, "ranks": {"2": 0.2, "5": 0.4, "10": 0.9}},
        },
    }


def test_rank_chooser_keeps_slower_matrices_dense(tmp_path):
    torch.manual_seed(0)
    model = convert(tiny_conformer().train(), low_rank={"points": ["ffn"]})
    hook = LowRankCompression(
        Incremental(0.25, steps=2, ramp="linear"),
        cost_table=_stub_cost_table(),
    )
    brain = build_brain(tmp_path, model, [hook], epochs=3)
    fit(brain, n_train=16)
    layers = [m for m in model.modules() if isinstance(m, LowRankLinear)]
    up = [m for m in layers if m.in_features == 16]
    down = [m for m in layers if m.in_features == 32]
    assert up and all(m.rank is None for m in up)
    assert down and all(m.rank is not None for m in down)
    # The size target is met by the factorised matrices alone.
    stored = sum(
        p.numel() for m in layers for p in m.parameters() if p.ndim == 2
    )
    assert stored <= 0.75 * len(layers) * 16 * 32
    # The record rebuilds the dense and the factorised layers.
    fresh = convert(tiny_conformer(seed=4), low_rank={"points": ["ffn"]})
    restore(fresh, describe(model))
    fresh.load_state_dict(model.state_dict())
    x, lens = random_batch()
    model.eval()
    assert torch.equal(encode(fresh, x, lens), encode(model, x, lens))


def test_cost_table_must_cover_the_model(tmp_path):
    table = _stub_cost_table()
    del table["shapes"]["32x16"]
    model = convert(tiny_conformer().train(), low_rank={"points": ["ffn"]})
    hook = LowRankCompression(Incremental(0.5, steps=1), cost_table=table)
    brain = build_brain(tmp_path, model, [hook], epochs=1)
    with pytest.raises(ValueError, match="no measurement for a 32x16"):
        hook.on_fit_start(brain)
    with pytest.raises(ValueError, match="cost_table: no file"):
        LowRankCompression(Incremental(0.5, steps=1), cost_table="nope.json")
