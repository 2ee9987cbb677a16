"""Federated dropout: sub-models, merging, policies and a Flower run."""

import copy
import itertools
import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml
from helpers import tiny_conformer
from speechbrain.nnet.attention import PositionalwiseFeedForward

import sb_prune
from sb_prune.federated import (
    DropoutPolicy,
    FederatedDropout,
    extract_submodel,
    load_parameter_record,
    make_client_app,
    make_server_app,
    merge_submodels,
    parameter_record,
    run_inprocess,
)
from sb_prune.federated.dropout import Group, importance_rates
from sb_prune.federated.partition import (
    check_partitions,
    partition_by_speaker,
)
from sb_prune.federated.submodel import flat_parameters

UNITS = ["ffn1", "ffn2", "attention"]


def prunable_conformer(seed=0, d_ffn=32):
    model = tiny_conformer(layers=2, d_ffn=d_ffn, seed=seed).train()
    return sb_prune.convert(model, prunable_attention={})


def importance(critical_layer=0):
    """Scores: every module of ``critical_layer`` critical, others ambient."""
    return {
        f"layer{i}.{unit}": 50.0 if i == critical_layer else 0.1 * j
        for i in range(2)
        for j, unit in enumerate(UNITS)
    }


def covered(sub):
    return torch.cat([p.reshape(-1) for p in sub.positions.values()])


def test_extract_and_merge_keep_outside_and_average_inside():
    model = prunable_conformer()
    full = flat_parameters(model).double()
    policy = DropoutPolicy("uniform", client_size=0.7, dropped_units=UNITS)
    subs = [
        extract_submodel(model, policy.plan(model, client, 1))
        for client in (1, 2)
    ]
    for sub in subs:
        assert sub.num_parameters < 0.72 * full.numel()
        for name, param in sub.module.named_parameters():
            # Each kept weight is the full model's weight at its position.
            expected = full[sub.positions[name].reshape(-1)]
            assert torch.equal(param.detach().reshape(-1).double(), expected)
    updates = []
    for sub, shift in zip(subs, (1.0, 3.0)):
        params = {n: p + shift for n, p in sub.parameters_dict().items()}
        updates.append((sub.positions, params, shift))  # weight = shift
    coverage = merge_submodels(model, updates)
    merged = flat_parameters(model).double()
    first, second = torch.zeros_like(full), torch.zeros_like(full)
    first[covered(subs[0])] = 1
    second[covered(subs[1])] = 1
    expected = full.clone()
    both = (first > 0) & (second > 0)
    expected[both] += (1 * 1.0 + 3 * 3.0) / 4
    expected[(first > 0) & ~both] += 1.0
    expected[(second > 0) & ~both] += 3.0
    assert torch.allclose(merged, expected, atol=1e-6)
    untouched = (first == 0) & (second == 0)
    assert untouched.any()
    assert torch.equal(merged[untouched], full[untouched])
    assert torch.equal(coverage, first * 1.0 + second * 3.0)


def test_compensated_submodels_average_to_the_full_model():
    # Inverted dropout: over every way of keeping 2 of 4 hidden units, the
    # compensated sub-models' mean output is the full model's output.
    torch.manual_seed(0)
    ffn = PositionalwiseFeedForward(d_ffn=4, input_size=3).eval()
    x = torch.randn(2, 5, 3)
    outputs = {True: [], False: []}
    for kept in itertools.combinations(range(4), 2):
        plan = {"": {"hidden": torch.tensor(kept)}}
        for compensate in outputs:
            sub = extract_submodel(ffn, plan, compensate)
            outputs[compensate].append(sub.module(x))
            # Undone before the merge: untrained, the full model is back.
            twin = copy.deepcopy(ffn)
            params = sub.unscaled(sub.parameters_dict())
            merge_submodels(twin, [(sub.positions, params, 1.0)])
            for before, after in zip(ffn.parameters(), twin.parameters()):
                assert torch.allclose(before, after, atol=1e-7)
    full = ffn(x)
    mean = torch.stack(outputs[True]).mean(0)
    assert torch.allclose(mean, full, atol=1e-6)
    uncompensated = torch.stack(outputs[False]).mean(0)
    assert not torch.allclose(uncompensated, full, atol=1e-2)


def test_a_dropped_layer_maps_back_to_its_place():
    model = tiny_conformer(layers=2)
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    sub = extract_submodel(model, {"encoder": {"layers": [1]}})
    assert len(sub.module.encoder.layers) == 1
    params = {n: p + 1.0 for n, p in sub.parameters_dict().items()}
    merge_submodels(model, [(sub.positions, params, 2.0)])
    for name, param in model.named_parameters():
        shift = 0.0 if "encoder.layers.0." in name else 1.0
        assert torch.allclose(param, before[name] + shift), name


def test_policies_reach_the_same_client_size():
    model = prunable_conformer()
    full = sum(p.numel() for p in model.parameters())
    sizes, rates = {}, {}
    for mode in ("uniform", "importance"):
        policy = DropoutPolicy(
            mode,
            client_size=0.72,
            importance=importance(critical_layer=0),
            max_rate=0.9,
            dropped_units=UNITS,
        )
        sub = extract_submodel(model, policy.plan(model, 7, 3))
        sizes[mode], rates[mode] = sub.num_parameters / full, policy.rates
    assert sizes["uniform"] == pytest.approx(0.72, abs=0.02)
    assert sizes["importance"] == pytest.approx(sizes["uniform"], abs=0.02)
    # Targeted: the critical layer is left whole, the ambient one dropped.
    assert all(rates["importance"][f"layer0.{u}"] == 0 for u in UNITS)
    assert all(rates["importance"][f"layer1.{u}"] > 0 for u in UNITS)
    assert len(set(rates["uniform"].values())) == 1


def test_bad_dropout_settings_name_the_key_or_client():
    model = prunable_conformer()
    with pytest.raises(ValueError, match=r"client_size must be in \(0, 1\]"):
        DropoutPolicy("uniform", client_size=0.0)
    with pytest.raises(ValueError, match=r"max_rate must be in \(0, 1\)"):
        DropoutPolicy("importance", importance={}, max_rate=1.0)
    with pytest.raises(ValueError, match="leaves clients too little"):
        DropoutPolicy("uniform", 0.05, dropped_units=UNITS).setup(model)
    with pytest.raises(ValueError, match="no score for the unit"):
        DropoutPolicy("importance", 0.7, {"layer0.ffn1": 1.0}).setup(model)
    other_model = {"layer2.ffn1": 0.0, "layer0.ffn1": 1.0, "layer1": 2.0}
    with pytest.raises(ValueError, match=r"\['layer2.ffn1'\] are not in"):
        DropoutPolicy("importance", 0.9, other_model).setup(model)
    with pytest.raises(ValueError, match="compensate must be True or False"):
        DropoutPolicy("uniform", compensate="yes")
    with pytest.raises(ValueError, match="needs prunable attention"):
        DropoutPolicy("uniform", 0.7).setup(tiny_conformer())
    tiny = prunable_conformer(d_ffn=2)
    scores = {"layer0.ffn1": 0.0, "layer1.ffn1": 1.0}
    policy = DropoutPolicy(
        "importance", 0.99, scores, max_rate=0.8, dropped_units=["ffn1"]
    )
    with pytest.raises(ValueError, match="leaves none of its 2 hidden units"):
        policy.setup(tiny)
    with pytest.raises(ValueError, match="cannot be reached with max_rate"):
        importance_rates([Group("a", "a", "hidden", 4, 1)], {"a": 0}, 4, 0.5)
    with pytest.raises(ValueError, match=r"client 1 \(speakers \['9'\]\)"):
        check_partitions(
            [
                {"speakers": ["7"], "ids": ["a"]},
                {"speakers": ["9"], "ids": []},
            ]
        )
    with pytest.raises(ValueError, match="There are no clients"):
        partition_by_speaker({"a": "7"}, exclude=["7"])


def train_on_random_data(model, partition, config):
    generator = torch.Generator().manual_seed(partition)
    x = torch.randn(4, 9, 12, generator=generator)
    y = torch.randn(4, 9, 16, generator=generator)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    for _ in range(2):
        loss = (model.encode(x, torch.ones(4)) - y).pow(2).mean()
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    return 4 + partition, {"loss": float(loss)}


def test_two_round_flower_simulation_in_process():
    initial = prunable_conformer()
    results = {}
    for mode in ("none", "importance"):
        policy = DropoutPolicy(
            mode, 0.7, importance(critical_layer=1), dropped_units=UNITS
        )
        strategy = FederatedDropout(
            prunable_conformer(), policy, clients_per_round=2, seed=3
        )
        app = make_server_app(strategy, parameter_record(initial), 2)
        client = make_client_app(prunable_conformer, train_on_random_data)
        context, grid = run_inprocess(app, client, num_nodes=3)
        final = prunable_conformer()
        load_parameter_record(final, context.state["arrays"])
        results[mode] = (strategy, grid, final)
    for strategy, grid, final in results.values():
        assert [r["round"] for r in strategy.history] == [1, 2]
        assert [t["messages"] for t in grid.traffic] == [2, 2]
        changed = flat_parameters(final) - flat_parameters(initial)
        assert changed.abs().max() > 0
    none, targeted = results["none"], results["importance"]
    assert [r["coverage"] for r in none[0].history] == [1.0, 1.0]
    assert all(r["coverage"] < 1.0 for r in targeted[0].history)
    assert targeted[1].traffic[0]["down"] < 0.8 * none[1].traffic[0]["down"]
    # The critical layer 1 is trained whole, the ambient layer 0 thinned.
    for params in targeted[0].history[0]["client_params"]:
        assert params < 0.72 * sum(p.numel() for p in initial.parameters())


def test_compensation_is_undone_in_the_merge():
    # Clients that do not train send back their scaled weights: the merge
    # must turn them back into the global model's own.
    def no_training(model, partition, config):
        return 4, {}

    initial = prunable_conformer()
    policy = DropoutPolicy("uniform", 0.7, dropped_units=UNITS, compensate=True)
    strategy = FederatedDropout(prunable_conformer(), policy, 2, seed=1)
    app = make_server_app(strategy, parameter_record(initial), 2)
    client = make_client_app(prunable_conformer, no_training)
    context, _ = run_inprocess(app, client, num_nodes=3)
    final = prunable_conformer()
    load_parameter_record(final, context.state["arrays"])
    assert all(r["coverage"] < 1.0 for r in strategy.history)
    assert torch.allclose(
        flat_parameters(final), flat_parameters(initial), atol=1e-6
    )


def test_a_client_without_data_is_named():
    def no_data(model, partition, config):
        return 0, {}

    strategy = FederatedDropout(prunable_conformer(), clients_per_round=1)
    app = make_server_app(strategy, parameter_record(prunable_conformer()), 1)
    client = make_client_app(prunable_conformer, no_data)
    with pytest.raises(ValueError, match="client 0 has no training data"):
        run_inprocess(app, client, num_nodes=1)


RECIPE = Path(__file__).parents[1] / "recipes" / "LibriSpeech" / "federated"


@pytest.mark.slow
def test_federated_recipe_tiny(tiny_corpus, tmp_path):
    overrides = yaml.safe_load(
        (RECIPE / "hparams" / "quick_overrides.yaml").read_text()
    )
    overrides.update(num_rounds=1, strategies="[importance]")
    command = [
        sys.executable,
        "federated.py",
        "hparams/federated_dropout.yaml",
        f"--data_folder={tiny_corpus}",
        f"--output_folder={tmp_path}",
        "--noprogressbar",
        *[f"--{key}={value}" for key, value in overrides.items()],
    ]
    run = subprocess.run(
        command, cwd=RECIPE, capture_output=True, text=True, timeout=600
    )
    assert run.returncode == 0, run.stderr[-3000:]
    results = json.loads((tmp_path / "results.json").read_text())
    assert results["clients"] == 2
    rows = {row["strategy"]: row for row in results["rows"]}
    assert set(rows) == {"importance"}
    for row in rows.values():
        assert row["client_params"] < 0.7 * results["full_params"]
        assert 0 < row["bytes_per_round"] and row["wer"] >= 0
    assert set(results["importance_scores"]) == {
        f"layer{i}.{unit}" for i in range(2) for unit in UNITS
    }
    # Measured against the initial weights, not against themselves.
    units = results["importance_report"]["units"].values()
    assert all(unit["weight_change"] > 0 for unit in units)
