"""Layer importance: theta_0 tracking, tamper tests, group norm, recipe."""

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from helpers import random_batch, tiny_conformer
from toy_brain import build_brain, fit

import sb_prune
from sb_prune.analysis import LayerImportance, WeightChangeTracker
from sb_prune.analysis.importance.units import (
    RANDOM,
    find_units,
    rerandomize_unit_,
    reset_unit_,
    snapshot,
    unit_parameters,
)
from sb_prune.core.structure import describe, restore
from sb_prune.methods.conv_norm.group_norm import ConvGroupNorm

AMBIENT = Path(__file__).parents[1] / "recipes" / "LibriSpeech" / "ambient"


def tracked_brain(save_dir, epochs, seed=0):
    """A small Conformer Brain whose only hook is a WeightChangeTracker."""
    torch.manual_seed(seed)
    model = tiny_conformer(layers=2, seed=seed).train()
    hooks = [WeightChangeTracker(snapshot_every=1)]
    return build_brain(save_dir, model, hooks, epochs, lr=0.02)


def test_reinitialisation_restores_exactly_the_saved_initial_weights(tmp_path):
    brain = tracked_brain(tmp_path, epochs=2)
    root = brain.unwrapped_modules()
    units = find_units(root)
    before = snapshot(root, units)
    fit(brain, n_train=16)
    tracker = brain.prune_hooks[0]
    assert sorted(tracker.files) == ["epoch0", "epoch1", "epoch2"]
    theta0 = tracker.load(brain, "epoch0")
    assert all(torch.equal(theta0[k], before[k]) for k in before)
    assert [h["epoch"] for h in tracker.history] == [1, 2]
    assert all(v > 0 for v in tracker.history[-1]["change"].values())

    trained = snapshot(root, units)
    reset_unit_(root, units["layer0.conv"], theta0)
    for name, param in unit_parameters(root, units["layer0"]).items():
        expected = theta0 if ".convolution_module." in name else trained
        assert torch.equal(param.detach(), expected[name]), name
    for name, param in unit_parameters(root, units["layer1"]).items():
        assert torch.equal(param.detach(), trained[name]), name

    # Resuming keeps the true theta_0, not the weights it resumes from.
    resumed = tracked_brain(tmp_path, epochs=3, seed=5)
    fit(resumed, n_train=16)
    again = resumed.prune_hooks[0]
    assert [h["epoch"] for h in again.history] == [1, 2, 3]
    assert all(torch.equal(again.initial[k], theta0[k]) for k in theta0)
    assert all(torch.equal(again.load(resumed)[k], theta0[k]) for k in theta0)


class Residual(torch.nn.Module):
    """x + live(x) + 0 * dead(x): the dead branch never matters."""

    def __init__(self):
        super().__init__()
        self.live = torch.nn.Sequential(
            torch.nn.Linear(4, 16), torch.nn.Tanh(), torch.nn.Linear(16, 4)
        )
        self.dead = torch.nn.Linear(4, 4)

    def forward(self, x):
        return x + self.live(x) + 0.0 * self.dead(x)


def test_a_dead_layer_ranks_ambient():
    torch.manual_seed(0)
    model = Residual()
    units = {"live": "live", "dead": "dead"}
    theta0 = snapshot(model, find_units(model, units=units))
    x = torch.randn(256, 4)
    y = x + torch.sin(3 * x)
    optimizer = torch.optim.Adam(model.parameters(), lr=0.02)
    for _ in range(300):
        optimizer.zero_grad()
        torch.nn.functional.mse_loss(model(x), y).backward()
        optimizer.step()

    def evaluate():
        with torch.no_grad():
            return {"loss": float(torch.nn.functional.mse_loss(model(x), y))}

    importance = LayerImportance(
        units=units,
        metric="loss",
        ambient_threshold=0.01,
        critical_threshold=0.1,
        max_metric=None,
        rerandomize_init="pytorch",
    )
    trained = snapshot(model, find_units(model, units=units))
    report = importance.run(
        model, evaluate, {"init": theta0, RANDOM: RANDOM}, progress=False
    )
    dead, live = report["units"]["dead"], report["units"]["live"]
    assert dead["class"] == "ambient" and live["class"] == "critical"
    assert dead["delta"] == {"init": 0.0, RANDOM: 0.0}
    assert live["delta"]["init"] > 0.1 and live["delta"][RANDOM] > 0.1
    # The tests put every unit back exactly.
    after = snapshot(model, find_units(model, units=units))
    assert all(torch.equal(after[k], trained[k]) for k in trained)
    assert set(report["spearman"]) == {"rho", "p"}


def test_rerandomisation_draws_like_speechbrain():
    model = tiny_conformer(layers=1)
    units = find_units(model, "module")
    ffn = units["layer0.ffn1"]
    norm = model.encoder.layers[0].ffn_module1[0]
    with torch.no_grad():
        norm.weight.fill_(5.0)
    rerandomize_unit_(model, ffn, seed=1)
    first = snapshot(model, {"ffn": ffn})
    rerandomize_unit_(model, ffn, seed=1)
    assert all(
        torch.equal(first[k], v) for k, v in snapshot(model, {"f": ffn}).items()
    )
    assert torch.equal(norm.weight, torch.ones_like(norm.weight))
    weight = model.encoder.layers[0].ffn_module1[1].ffn[0].weight
    fan_in, fan_out = weight.shape[1], weight.shape[0]
    expected_std = (2.0 / (fan_in + fan_out)) ** 0.5  # xavier_normal_
    assert abs(float(weight.std()) / expected_std - 1) < 0.25


def test_bad_input_names_the_key():
    model = tiny_conformer(layers=2)
    with pytest.raises(ValueError, match=r"layers: \[5\] out of range"):
        find_units(model, layers=[5])
    with pytest.raises(ValueError, match=r"modules: unknown \['ffn3'\]"):
        find_units(model, modules=["ffn3"])
    with pytest.raises(ValueError, match="units.x: the model has no module"):
        find_units(model, units={"x": "encoder.layers.7"})
    with pytest.raises(ValueError, match="granularity must be one of"):
        LayerImportance(granularity="head")
    with pytest.raises(ValueError, match="ambient_threshold must be >= 0"):
        LayerImportance(ambient_threshold=-1.0)
    with pytest.raises(ValueError, match="critical_threshold .* larger"):
        LayerImportance(ambient_threshold=5.0, critical_threshold=5.0)
    with pytest.raises(ValueError, match="critical_threshold must be below"):
        LayerImportance(critical_threshold=150.0)
    with pytest.raises(ValueError, match="snapshot_every must be >= 0"):
        WeightChangeTracker(snapshot_every=-1)
    with pytest.raises(ValueError, match="references.x: unknown test"):
        LayerImportance().run(model, lambda: {"WER": 1.0}, {"x": "zeros"})


def test_group_norm_option_is_masked_and_recorded():
    model = sb_prune.convert(
        tiny_conformer(layers=2), conv_norm={"norm": "group", "groups": 4}
    )
    norms = [
        layer.convolution_module.after_conv[0] for layer in model.encoder.layers
    ]
    assert all(isinstance(norm, ConvGroupNorm) for norm in norms)
    x, lens = random_batch()
    seen = []
    hook = norms[0].register_forward_pre_hook(
        lambda module, args: seen.append(module.padding_mask)
    )
    with torch.no_grad():
        model.encode(x, lens)
    hook.remove()
    # The padding mask reached the norm during the forward, then left.
    assert seen[0] is not None and bool(seen[0][-1].any())
    assert norms[0].padding_mask is None
    record = describe(torch.nn.ModuleDict({"T": model}))
    assert record["T.encoder.layers.0.convolution_module.after_conv.0"] == {
        "type": "sb_prune.methods.conv_norm.group_norm.ConvGroupNorm",
        "groups": 4,
    }
    plain = torch.nn.ModuleDict({"T": tiny_conformer(layers=2)})
    with pytest.raises(ValueError, match="expects a ConvGroupNorm"):
        restore(plain, record)
    with pytest.raises(ValueError, match=r"conv_norm.groups \(5\) must divide"):
        sb_prune.convert(tiny_conformer(), conv_norm={"groups": 5})


@pytest.mark.slow
def test_ambient_recipe_on_a_trained_model(tiny_corpus, tmp_path):
    command = [
        sys.executable,
        "ambient.py",
        "hparams/conformer_ctc_importance.yaml",
        f"--data_folder={tiny_corpus}",
        f"--output_folder={tmp_path}",
        "--number_of_epochs=1",
        "--d_model=32",
        "--nhead=2",
        "--num_encoder_layers=2",
        "--d_ffn=64",
        "--conv_kernel_size=7",
        "--token_type=char",
        "--output_neurons=32",
        "--frame_stack=4",
        "--conv_norm=group",
        "--batch_size=8",
        "--warmup_steps=5",
        "--heatmap_epochs=[1]",
        "--analysis_batches=1",
        "--valid_dataloader_opts={batch_size: 8}",
        "--test_dataloader_opts={batch_size: 8}",
        "--noprogressbar",
    ]
    run = subprocess.run(
        command, cwd=AMBIENT, capture_output=True, text=True, timeout=600
    )
    assert run.returncode == 0, run.stderr[-3000:]
    summary = json.loads((tmp_path / "importance.json").read_text())
    assert summary["theta0_matches_rebuilt"] is True
    layers = summary["reports"]["layers"]["units"]
    assert list(layers) == ["layer0", "layer1"]
    assert list(layers["layer0"]["delta"]) == ["init", "epoch1", RANDOM]
    modules = summary["reports"]["modules"]["units"]
    assert len(modules) == 8
    assert all(m["weight_change"] > 0 for m in modules.values())
    assert len(summary["weight_change_history"]) == 1
    for png in ("robustness_heatmap.png", "robustness_vs_change.png"):
        assert (tmp_path / png).stat().st_size > 0
