"""I3D gated Conformer: equivalences, real skipping, regulariser, recipe."""

import copy
import io
import json

import pytest
import torch
from helpers import HERE, random_batch, run_two_processes, tiny_conformer
from speechbrain.lobes.models.transformer.Conformer import (
    ConformerEncoder,
    ConformerEncoderLayer,
)
from test_asr_recipe import run_recipe

import sb_prune
from sb_prune.core.profiling import count_macs
from sb_prune.methods.i3d.gates import GateRecorder
from sb_prune.nn import GatedConformerEncoder, GatedConformerLayer

ALL_GATES = ["attention", "conv", "ffn"]
BRANCHES = {
    "ffn": ["ffn_module1", "ffn_module2"],
    "attention": ["mha_layer"],
    "conv": ["convolution_module"],
}


def gated_model(predictor="local", gates=ALL_GATES, **options):
    """A tiny Conformer and its gated copy (same weights)."""
    dense = tiny_conformer(layers=3)
    gated = sb_prune.convert(
        copy.deepcopy(dense),
        dynamic_depth={"predictor": predictor, "gates": gates, **options},
    )
    return dense, gated.eval()


def randomize_predictors(model, scale=3.0, seed=0):
    """Make gate decisions depend strongly on the input."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, param in model.named_parameters():
            if "gate_predictor" in name:
                param.copy_(scale * torch.randn(param.shape, generator=gen))


def layer_inputs(batch=4, time=7, d_model=16, seed=0):
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(batch, time, d_model, generator=gen)
    pos = torch.randn(1, 2 * time - 1, d_model, generator=gen)
    mask = torch.zeros(batch, time, dtype=torch.bool)
    mask[1, 5:] = True
    mask[-1, 3:] = True
    return x, pos, mask


def reference_layer(layer, x, pos, mask, skip=()):
    """SpeechBrain's ConformerEncoderLayer forward without some branches."""
    conv_mask = mask.unsqueeze(-1)
    if "ffn" not in skip:
        x = x + 0.5 * layer.ffn_module1(x)
    if "attention" not in skip:
        h = layer.norm1(x)
        out, _ = layer.mha_layer(h, h, h, key_padding_mask=mask, pos_embs=pos)
        x = x + out
    if "conv" not in skip:
        x = x + layer.convolution_module(x, conv_mask)
    if "ffn" not in skip:
        x = x + 0.5 * layer.ffn_module2(x)
    return layer.norm2(x)


def test_all_gates_open_is_the_ungated_model_exactly():
    dense, gated = gated_model(init_probability=0.9)
    x, lens = random_batch(batch=3, time=11)
    with torch.no_grad():
        expected = dense.encode(x, lens)
        got = gated.encode(x, lens)
    assert torch.equal(got, expected)
    assert gated.encoder.executed_modules.tolist() == [9.0, 9.0, 9.0]
    # Training mode with gates forced open (the masking path) is exact too.
    dense_layer = dense.encoder.layers[0].train()
    layer = gated.encoder.layers[0].train()
    x, pos, mask = layer_inputs()
    ones = torch.ones(x.shape[0], 3)
    with torch.no_grad():
        expected, _ = dense_layer(x, src_key_padding_mask=mask, pos_embs=pos)
        got, _ = layer(x, src_key_padding_mask=mask, pos_embs=pos, gates=ones)
    assert torch.equal(got, expected)


def test_converting_keeps_the_dense_weights_and_names():
    dense, gated = gated_model()
    gated_state = gated.state_dict()
    for name, tensor in dense.state_dict().items():
        assert torch.equal(gated_state[name], tensor), name
    extra = set(gated_state) - set(dense.state_dict())
    assert extra and all("gate_predictor" in name for name in extra)


@pytest.mark.parametrize("training", [False, True])
@pytest.mark.parametrize("closed", ["ffn", "attention", "conv"])
def test_a_closed_gate_skips_its_branch(closed, training):
    torch.manual_seed(0)
    layer = GatedConformerLayer(16, 32, 4, kernel_size=3, gates=ALL_GATES)
    layer.train(training)
    x, pos, mask = layer_inputs()
    gates = torch.ones(x.shape[0], 3)
    gates[[0, 2], ALL_GATES.index(closed)] = 0.0
    with torch.no_grad():
        got, _ = layer(x, src_key_padding_mask=mask, pos_embs=pos, gates=gates)
        skipped = reference_layer(layer, x, pos, mask, skip=[closed])
        full = reference_layer(layer, x, pos, mask)
    torch.testing.assert_close(got[[0, 2]], skipped[[0, 2]])
    torch.testing.assert_close(got[[1, 3]], full[[1, 3]])


def test_skipping_matches_masking_on_a_padded_batch():
    """Gathering the open utterances = running all and multiplying by 0/1."""
    torch.manual_seed(0)
    layer = GatedConformerLayer(16, 32, 4, kernel_size=3, gates=ALL_GATES)
    x, pos, mask = layer_inputs()
    gates = torch.tensor([[1.0, 0, 1], [0, 1, 1], [1, 1, 0], [0, 0, 1]])
    with torch.no_grad():
        skipped, attn = layer.eval()(
            x, src_key_padding_mask=mask, pos_embs=pos, gates=gates
        )
        masked, _ = layer.train()(
            x, src_key_padding_mask=mask, pos_embs=pos, gates=gates
        )
    torch.testing.assert_close(skipped, masked)
    assert attn[[1, 3]].abs().sum() == 0 and attn[[0, 2]].abs().sum() > 0


def count_branch_calls(layers):
    """Utterances processed by each branch, via forward hooks."""
    calls = {gate: 0 for gate in BRANCHES}
    handles = []
    for layer in layers:
        for gate, names in BRANCHES.items():
            module = getattr(layer, names[0])

            def hook(module, args, output, gate=gate):
                calls[gate] += args[0].shape[0]

            handles.append(module.register_forward_hook(hook))
    return calls, handles


def test_closed_branches_are_never_computed_at_inference():
    _, gated = gated_model(init_probability=0.6)
    randomize_predictors(gated)
    encoder = gated.encoder
    calls, handles = count_branch_calls(encoder.layers)
    x, lens = random_batch(batch=6, time=11, seed=3)
    with torch.no_grad():
        gated.encode(x, lens)
    for handle in handles:
        handle.remove()
    decisions = encoder.gate_decisions
    assert 0 < decisions.mean() < 1
    for g, gate in enumerate(ALL_GATES):
        assert calls[gate] == int(decisions[:, :, g].sum()), gate
    # Everything closed: no branch runs at all, and MACs drop accordingly.
    for layer in encoder.layers:
        with torch.no_grad():
            layer.gate_predictor.output.weight.zero_()
            bias = layer.gate_predictor.output.bias
            bias.copy_(torch.tensor([0.0, -9.0]).repeat(3))
    calls, handles = count_branch_calls(encoder.layers)
    with torch.no_grad():
        gated.encode(x, lens)
    assert sum(calls.values()) == 0
    assert count_macs(gated.encode, x, lens) < 0.1 * count_macs(
        tiny_conformer(layers=3).encode, x, lens
    )


@pytest.mark.parametrize("predictor", ["local", "global"])
def test_batched_inference_equals_one_utterance_at_a_time(predictor):
    _, gated = gated_model(predictor=predictor, init_probability=0.6)
    randomize_predictors(gated, seed=1)
    # Equal lengths: SpeechBrain's convolution module lets padded frames
    # leak into valid ones, with or without gates.
    x = torch.randn(8, 11, 12, generator=torch.Generator().manual_seed(2))
    lens = torch.ones(8)
    with torch.no_grad():
        batched = gated.encode(x, lens)
        decisions = gated.encoder.gate_decisions.clone()
        single = [gated.encode(x[i : i + 1], lens[:1]) for i in range(8)]
    assert len({tuple(d.flatten().tolist()) for d in decisions}) > 1
    torch.testing.assert_close(batched, torch.cat(single), atol=1e-5, rtol=0)


def test_regularizer_reaches_the_predictors():
    _, gated = gated_model(regularization_weight=2.0, target=0.3)
    gated.train()
    x, lens = random_batch(batch=3, time=11)
    out = gated.encode(x, lens)
    probabilities = gated.encoder.gate_probabilities
    # A loss blind to the output: only the regulariser has a gradient.
    (0.0 * out).sum().backward()
    grads = [
        p.grad
        for name, p in gated.named_parameters()
        if "gate_predictor.output.bias" in name
    ]
    assert len(grads) == 3
    for grad in grads:
        # d/d(logit_execute) of 2 (mean p - 0.3)^2 is positive: fewer gates.
        assert grad is not None and (grad.view(3, 2)[:, 1] > 0).all()
    expected = 2.0 * (probabilities.mean() - 0.3) ** 2
    assert float(gated.encoder.regularizer(probabilities)) == pytest.approx(
        float(expected)
    )
    assert 0 < probabilities.mean() < 1


def test_training_gates_are_hard_samples_with_soft_gradients():
    _, gated = gated_model(predictor="global", init_probability=0.5)
    gated.train()
    x, lens = random_batch(batch=4, time=11)
    out = gated.encode(x, lens)
    decisions = gated.encoder.gate_decisions
    assert set(decisions.unique().tolist()) <= {0.0, 1.0}
    out.pow(2).sum().backward()
    weight = gated.encoder.gate_predictor.output.weight
    assert weight.grad is not None and weight.grad.abs().sum() > 0


def test_global_predictor_refuses_a_layer_cut():
    from sb_prune.core.surgery import apply_plan

    _, gated = gated_model(predictor="global")
    apply_plan(gated, {"encoder": {"layers": [0, 2]}})
    with pytest.raises(ValueError, match="predictor: global"):
        gated.encode(*random_batch())


def test_local_gates_follow_a_layer_cut():
    from sb_prune.core.surgery import apply_plan

    _, gated = gated_model(predictor="local")
    apply_plan(gated, {"encoder": {"layers": [0, 2]}})
    gated.encode(*random_batch())
    assert gated.encoder.gate_decisions.shape[1:] == (2, 3)


@pytest.mark.parametrize(
    "options, key",
    [
        ({"target": 0.0}, "target must be in \\(0, 1\\]"),
        ({"target": 1.5}, "target must be in \\(0, 1\\]"),
        ({"predictor": "layerwise"}, "predictor must be one of"),
        ({"threshold": 0.0}, "threshold must be in \\(0, 1\\)"),
        ({"threshold": 1.0}, "threshold must be in \\(0, 1\\)"),
        ({"gates": ["mlp"]}, "gates: unknown"),
        ({"temperature": 0}, "temperature must be > 0"),
        ({"regularization_weight": -1}, "regularization_weight must be"),
        ({"init_probability": 1.0}, "init_probability must be in"),
        ({"predictor_hidden": 0}, "predictor_hidden must be"),
        ({"tau": 1.0}, "dynamic_depth: unknown key"),
        ({"gate_costs": {"ffn": 1.0}}, "gate_costs: give 'measure' or one"),
        ({"gate_costs": "time"}, "gate_costs: give 'measure' or one"),
        (
            {"gate_costs": {"ffn": 1.0, "attention": 0}},
            "gate_costs.attention must be",
        ),
    ],
)
def test_bad_options_name_their_key(options, key):
    dense = tiny_conformer()
    with pytest.raises(ValueError, match=key):
        sb_prune.convert(dense, dynamic_depth=options)
    # A refused conversion leaves the model as it was.
    assert type(dense.encoder) is ConformerEncoder


def test_encoder_without_conformer_is_refused():
    from speechbrain.lobes.models.transformer.Transformer import (
        TransformerEncoder,
    )

    with pytest.raises(ValueError, match="no ungated Conformer encoder"):
        sb_prune.convert(
            TransformerEncoder(1, 2, 8, d_model=4), dynamic_depth={}
        )


def test_gate_recorder_summarises_and_plots(tmp_path):
    _, gated = gated_model(init_probability=0.6)
    randomize_predictors(gated, seed=4)
    x, lens = random_batch(batch=5, time=11, seed=5)
    with GateRecorder(gated) as gates:
        with torch.no_grad():
            gated.encode(x, lens)
            gated.train()
            gated.encode(x, lens)  # training forwards are not recorded
    ids = [f"{spk}-1-{i}" for i, spk in enumerate([1, 1, 2, 2, 3])]
    summary = gates.report(str(tmp_path), "test", ids)
    assert summary["utterances"] == 5
    assert summary["avg_layers"] == pytest.approx(
        float(gates.executed_layers.mean()), abs=1e-4
    )
    assert set(summary["correlation"]) == {"length"}
    assert (tmp_path / "gates_test.png").stat().st_size > 0
    detail = json.loads((tmp_path / "gates_test.json").read_text())
    assert detail["utterances_detail"][4]["id"] == "3-1-4"


def test_gated_encoder_built_from_yaml_arguments():
    torch.manual_seed(0)
    encoder = GatedConformerEncoder(
        2, 16, 32, 4, kernel_size=3, predictor="global", gates=["ffn"]
    ).eval()
    x, pos, mask = layer_inputs(batch=2)
    out, attention = encoder(x, src_key_padding_mask=mask, pos_embs=pos)
    assert out.shape == x.shape and len(attention) == 2
    assert encoder.executed_layers.tolist() == [2.0, 2.0]


def test_converting_builds_gated_instances_like_the_constructor():
    dense = tiny_conformer(layers=2)
    old_encoder, old_layers = dense.encoder, list(dense.encoder.layers)
    gated = sb_prune.convert(dense, dynamic_depth={"gates": ALL_GATES})
    encoder = gated.encoder
    assert type(encoder) is GatedConformerEncoder
    assert encoder is not old_encoder
    for layer, old in zip(encoder.layers, old_layers):
        assert type(layer) is GatedConformerLayer and layer is not old
        assert layer.mha_layer is old.mha_layer  # submodules taken over
    # The encoder taken over is left as it was.
    assert type(old_encoder) is ConformerEncoder
    assert list(old_encoder.layers) == old_layers
    # Conversion sets what __init__ sets (the hparams-file way).
    built = GatedConformerEncoder(2, 16, 32, 4, gates=ALL_GATES)
    assert set(vars(encoder)) == set(vars(built))
    assert set(vars(encoder.layers[0])) == set(vars(built.layers[0]))

    randomize_predictors(gated)
    x, pos, mask = layer_inputs()

    def run(enc):
        with torch.no_grad():
            out, _ = enc.eval()(x, src_key_padding_mask=mask, pos_embs=pos)
        return out, enc.gate_decisions

    expected, decisions = run(encoder)
    assert 0 < decisions.mean() < 1
    clone = copy.deepcopy(gated)
    assert type(clone.encoder) is GatedConformerEncoder
    assert type(clone.encoder.layers[1]) is GatedConformerLayer
    assert clone.encoder.layers[0].norm1 is not encoder.layers[0].norm1
    got, got_decisions = run(clone.encoder)
    assert torch.equal(got, expected) and torch.equal(got_decisions, decisions)
    # The state dict round-trips through torch.save into a built encoder.
    buffer = io.BytesIO()
    torch.save(encoder.state_dict(), buffer)
    buffer.seek(0)
    built.load_state_dict(torch.load(buffer))  # strict: same names
    got, got_decisions = run(built)
    assert torch.equal(got, expected) and torch.equal(got_decisions, decisions)
    # So does the whole model (pickled with its classes).
    buffer = io.BytesIO()
    torch.save(gated, buffer)
    buffer.seek(0)
    loaded = torch.load(buffer, weights_only=False)
    assert type(loaded.encoder.layers[0]) is GatedConformerLayer
    assert torch.equal(run(loaded.encoder)[0], expected)


def test_gated_branches_still_compute_speechbrain_forward():
    """The mirrored branches = ConformerEncoderLayer.forward (drift guard)."""
    from speechbrain.utils.dynamic_chunk_training import DynChunkTrainConfig

    torch.manual_seed(0)
    layer = GatedConformerLayer(
        16, 32, 4, kernel_size=3, dropout=0.1, gates=ALL_GATES
    ).train()
    x, pos, mask = layer_inputs()
    kwargs = {
        "src_mask": torch.ones(7, 7, dtype=torch.bool).triu(diagonal=3),
        "src_key_padding_mask": mask,
        "pos_embs": pos,
        "dynchunktrain_config": DynChunkTrainConfig(2, 1),
    }
    with torch.no_grad():
        torch.manual_seed(1)
        expected, expected_attn = ConformerEncoderLayer.forward(
            layer, x, **kwargs
        )
        torch.manual_seed(1)
        # Training gates, all open: the branch by branch path.
        got, attn = layer(x, gates=torch.ones(4, 3), **kwargs)
    assert torch.equal(got, expected)
    assert torch.equal(attn, expected_attn)


def test_gated_encoder_runs_speechbrain_layerdrop_and_hidden_states():
    torch.manual_seed(0)
    encoder = GatedConformerEncoder(
        4,
        16,
        32,
        4,
        kernel_size=3,
        layerdrop_prob=0.5,
        output_hidden_states=True,
        predictor="global",
        gates=ALL_GATES,
    ).train()
    x, pos, mask = layer_inputs()
    torch.manual_seed(1)
    ran = int((torch.rand(4) > 0.5).sum())  # SpeechBrain's LayerDrop draw
    torch.manual_seed(1)
    out, attention, hidden = encoder(x, src_key_padding_mask=mask, pos_embs=pos)
    assert 0 < ran < 4
    assert len(attention) == ran and len(hidden) == ran + 1
    assert encoder.gate_decisions.shape == (4, ran, 3)
    assert all(layer._gate_source is None for layer in encoder.layers)


def test_converting_refuses_a_bare_encoder_and_hooked_modules():
    encoder = ConformerEncoder(1, 16, 32, 4, kernel_size=3)
    with pytest.raises(ValueError, match="cannot be replaced in place"):
        sb_prune.convert(encoder, dynamic_depth={})
    assert type(encoder) is ConformerEncoder
    gated = GatedConformerEncoder.from_encoder(encoder)
    assert type(gated.layers[0]) is GatedConformerLayer
    dense = tiny_conformer()
    dense.encoder.layers[1].register_forward_hook(lambda *args: None)
    with pytest.raises(ValueError, match="has hooks"):
        sb_prune.convert(dense, dynamic_depth={})
    assert type(dense.encoder) is ConformerEncoder


def test_gates_accept_one_name_and_refuse_an_empty_list():
    _, gated = gated_model(gates="conv")
    assert gated.encoder.gates == ("conv",)
    with pytest.raises(ValueError, match="gates: empty; choose from"):
        sb_prune.convert(tiny_conformer(), dynamic_depth={"gates": []})


def test_i3d_recipe_writes_gate_plots(tiny_corpus, tmp_path):
    run = run_recipe(
        "conformer_ctc_i3d_global.yaml",
        tiny_corpus,
        tmp_path,
        number_of_epochs=1,
    )
    assert run.returncode == 0, run.stderr[-3000:]
    results = json.loads((tmp_path / "results.json").read_text())
    test = results["test-clean"]
    assert 0 < test["avg_layers"] <= 2 and test["utterances"] == 20
    assert "snr_db" in test["correlation"]
    assert (tmp_path / "gates_test-clean.png").stat().st_size > 0


@pytest.mark.skipif(
    not torch.distributed.is_available(), reason="needs torch.distributed"
)
def test_ddp_two_processes_train_gates_identically(tmp_path):
    params0, params1 = run_two_processes(HERE / "gated_ddp.py", tmp_path)
    for key in params0:
        assert torch.equal(params0[key], params1[key]), key
    assert any("gate_predictor" in key for key in params0)


def test_gate_costs_weight_the_regulariser():
    """Skipping the expensive gate meets a cost target that skipping the
    cheap one does not."""
    _, alike = gated_model(gates=["attention", "ffn"], target=0.5)
    _, costly = gated_model(
        gates=["attention", "ffn"],
        target=0.5,
        gate_costs={"attention": 1.0, "ffn": 3.0},
    )
    ffn_skipped = torch.tensor([[[1.0, 0.0]]])
    attention_skipped = torch.tensor([[[0.0, 1.0]]])
    assert alike.encoder.regularizer(ffn_skipped) == 0
    assert alike.encoder.regularizer(attention_skipped) == 0
    assert costly.encoder.regularizer(ffn_skipped) == pytest.approx(0.0625)
    assert costly.encoder.regularizer(attention_skipped) == pytest.approx(
        0.0625
    )
    # Executed cost fractions: 0.25 when the FFN is skipped, 0.75 when the
    # attention is; a target of 0.25 is met by skipping the FFN only.
    costly.encoder.target = 0.25
    assert costly.encoder.regularizer(ffn_skipped) == 0
    assert costly.encoder.regularizer(attention_skipped) > 0


def test_measured_gate_costs():
    _, gated = gated_model(gates=["attention", "ffn"], gate_costs="measure")
    costs = gated.encoder.gate_costs
    assert len(costs) == 2 and min(costs) > 0
    assert sum(costs) == pytest.approx(2.0)


def test_predictor_learns_gates_that_depend_on_the_input():
    """Utterances whose feature 0 is positive gain from a branch, the others
    lose: trained through straight-through Gumbel gates, the predictor opens
    the gate for the first and closes it for the second."""
    from sb_prune.methods.i3d.gating import GatePredictor, decide_gates

    torch.manual_seed(0)
    predictor = GatePredictor(8, n_gates=1, hidden_size=16)
    optimizer = torch.optim.Adam(predictor.parameters(), lr=0.05)
    sign = torch.tensor([1.0, -1.0]).repeat(8)  # + gains, - loses
    for _ in range(150):
        x = torch.randn(16, 5, 8)
        x[..., 0] += 2 * sign[:, None]
        gates = decide_gates(predictor(x), training=True)[:, 0]
        loss = -(gates * sign).mean()
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    x = torch.randn(16, 5, 8)
    x[..., 0] += 2 * sign[:, None]
    with torch.no_grad():
        opened = decide_gates(predictor(x), training=False)[:, 0]
    assert torch.equal(opened, sign > 0)
