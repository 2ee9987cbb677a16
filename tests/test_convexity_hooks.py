"""Convexity scoring hooks, layer-cut rules and the classification recipe."""

import csv
import importlib.util
import json
import subprocess
import sys
import types
from pathlib import Path

import pytest
import speechbrain as sb
import torch
import yaml
from helpers import (
    SSL_MODELS,
    encode,
    random_batch,
    tiny_conformer,
    tiny_ssl_model,
)
from speechbrain.lobes.features import Fbank
from speechbrain.lobes.models.transformer.TransformerASR import TransformerASR
from speechbrain.utils.checkpoints import Checkpointer
from speechbrain.utils.epoch_loop import EpochCounter
from test_asr_recipe import run_recipe

import sb_prune
from sb_prune.analysis import (
    ConvexityScoring,
    LayerCut,
    LayerStates,
    choose_layers,
    find_layer_stack,
    masked_mean_pool,
    register_layer_stack,
)
from sb_prune.core.structure import describe, restore
from sb_prune.core.surgery import apply_plan
from sb_prune.data import read_labels
from sb_prune.data.librispeech import split_rows

RECIPE = Path(__file__).parents[1] / "recipes" / "LibriSpeech"
SCORES = [5.0, 20.0, 70.0, 68.0, 60.0]  # depth 0 (input) .. 4


@pytest.mark.parametrize(
    "rule, kwargs, kept",
    [
        ("peak", {}, [0, 1]),
        ("peak", {"tolerance": 5.0}, [0, 1]),
        ("peak", {"tolerance": 55.0}, [0]),
        ("fraction", {"fraction": 0.95}, [0, 1]),
        ("fraction", {"fraction": 0.25}, [0]),
        ("first", {"n_layers": 3}, [0, 1, 2]),
        ("last", {"n_layers": 2}, [2, 3]),
        ("evenly_spaced", {"n_layers": 2}, [1, 3]),
        ("none", {}, [0, 1, 2, 3]),
    ],
)
def test_rules_choose_layers(rule, kwargs, kept):
    assert choose_layers(rule, 4, SCORES, **kwargs) == kept


def test_input_is_never_chosen():
    assert choose_layers("peak", 4, [99.0, 20.0, 70.0, 68.0, 60.0]) == [0, 1]


@pytest.mark.parametrize(
    "rule, kwargs, message",
    [
        ("first", {"n_layers": 0}, "removes every encoder layer"),
        ("evenly_spaced", {}, "n_layers must be an integer >= 1"),
        ("last", {"n_layers": 5}, "exceeds the 4 encoder layers"),
        ("fraction", {"fraction": 1.5}, "fraction must be in"),
        ("peak", {"tolerance": -1.0}, "tolerance must be >= 0"),
        ("deepest", {}, "rule must be one of"),
        ("peak", {"scores": [1.0, 2.0]}, "needs 5 convexity scores"),
        ("peak", {"scores": [1.0, 2.0, float("nan"), 3.0, 4.0]}, "NaN"),
    ],
)
def test_bad_rules_raise(rule, kwargs, message):
    kwargs = {"scores": SCORES, **kwargs}
    with pytest.raises(ValueError, match=message):
        choose_layers(rule, 4, **kwargs)


def test_hooks_check_their_arguments(tmp_path):
    with pytest.raises(ValueError, match="scoring must be a ConvexityScoring"):
        LayerCut("fraction", fraction=0.5)
    with pytest.raises(ValueError, match="n_layers must be an integer >= 1"):
        LayerCut("last", n_layers=0)
    with pytest.raises(ValueError, match="max_per_class must be an integer"):
        ConvexityScoring("a.csv", "keyword", tmp_path, max_per_class=1)
    scoring = ConvexityScoring(tmp_path / "no.csv", "keyword", tmp_path)
    with pytest.raises(ValueError, match="does not exist"):
        scoring.dataset()


@pytest.mark.parametrize("module", ["conformer", "transformer"])
def test_cut_equals_truncated_original(module):
    if module == "conformer":
        model = tiny_conformer(layers=4)
    else:
        torch.manual_seed(0)
        model = TransformerASR(
            tgt_vocab=10,
            input_size=12,
            d_model=16,
            nhead=4,
            num_encoder_layers=4,
            num_decoder_layers=0,
            d_ffn=32,
            dropout=0.0,
            causal=False,
        ).eval()
    x, lens = random_batch()
    with LayerStates(model.encoder) as recorder:
        encode(model, x, lens)
    states = list(recorder.states)
    root = torch.nn.ModuleDict({"Transformer": model})
    path, encoder = find_layer_stack(root)
    kept = choose_layers("peak", len(encoder.layers), SCORES)
    apply_plan(root, {path: {"layers": torch.tensor(kept)}})
    assert len(model.encoder.layers) == 2
    with torch.no_grad():
        expected = model.encoder.norm(states[2])
    assert torch.allclose(encode(model, x, lens), expected, atol=1e-6)
    assert describe(root)["Transformer.encoder"]["layers"] == 2


class FakeSSLLayer(torch.nn.Module):
    """A layer that returns a tuple, as Hugging Face layers do."""

    def __init__(self, dims):
        super().__init__()
        self.linear = torch.nn.Linear(dims, dims)

    def forward(self, hidden_states, attention_mask=None):
        return (hidden_states + torch.tanh(self.linear(hidden_states)), None)


class FakeSSLEncoder(torch.nn.Module):
    """A Hugging Face-like encoder: a config and a loop over its layers."""

    def __init__(self, dims=6, layers=4):
        super().__init__()
        self.config = types.SimpleNamespace(num_hidden_layers=layers)
        self.layers = torch.nn.ModuleList(
            FakeSSLLayer(dims) for _ in range(layers)
        )

    def forward(self, hidden_states):
        for layer in self.layers:
            hidden_states = layer(hidden_states, attention_mask=None)[0]
        return hidden_states


def test_registered_stack_cuts_restores_and_syncs_its_config():
    register_layer_stack(FakeSSLEncoder)
    torch.manual_seed(0)
    model = torch.nn.ModuleDict({"ssl": torch.nn.ModuleDict()})
    model["ssl"]["encoder"] = FakeSSLEncoder()
    x = torch.randn(2, 5, 6)
    with LayerStates(model["ssl"]["encoder"]) as recorder:
        model["ssl"]["encoder"](x)
    path, encoder = find_layer_stack(model)
    apply_plan(model, {path: {"layers": torch.tensor([0, 1, 2])}})
    assert torch.allclose(encoder(x), recorder.states[3])
    assert encoder.config.num_hidden_layers == 3
    fresh = torch.nn.ModuleDict({"ssl": torch.nn.ModuleDict()})
    fresh["ssl"]["encoder"] = FakeSSLEncoder()
    assert restore(fresh, describe(model))
    fresh.load_state_dict(model.state_dict())
    assert fresh["ssl"]["encoder"].config.num_hidden_layers == 3
    assert torch.equal(fresh["ssl"]["encoder"](x), encoder(x))


@pytest.mark.parametrize("name", sorted(SSL_MODELS))
def test_huggingface_encoder_cut(name):
    """Tiny randomly initialised SSL models (runs where transformers is)."""
    pytest.importorskip("transformers")
    model = tiny_ssl_model(name, layers=4)
    wavs = torch.randn(2, 1600)
    root = torch.nn.ModuleDict({"ssl": model})
    path, encoder = find_layer_stack(root)
    assert path == "ssl.encoder"
    with torch.no_grad(), LayerStates(encoder) as recorder:
        full = model(wavs, output_hidden_states=True)
    for state, hidden in zip(recorder.states, full.hidden_states):
        assert torch.allclose(state, hidden, atol=1e-6)
    apply_plan(root, {path: {"layers": torch.tensor([0, 1])}})
    assert model.config.num_hidden_layers == 2
    assert describe(root)[path]["layers"] == 2
    with torch.no_grad():
        cut = model(wavs).last_hidden_state
    assert torch.allclose(cut, full.hidden_states[2], atol=1e-5)


def write_keyword_csv(corpus, path):
    """A labelled CSV (ID, duration, wav, keyword) of the train split."""
    labels = read_labels(corpus)
    rows = split_rows(corpus, "train-clean-100")
    with open(path, "w", newline="") as handle:
        writer = csv.DictWriter(
            handle, fieldnames=["ID", "duration", "wav", "keyword"]
        )
        writer.writeheader()
        for row in rows:
            writer.writerow(
                {
                    "ID": row["ID"],
                    "duration": row["duration"],
                    "wav": row["wav"],
                    "keyword": labels[row["ID"]]["keyword"],
                }
            )
    return path


class WavBrain(sb_prune.PruningBrain):
    """Fbank -> tiny Conformer -> pooled head, trained towards zero."""

    def compute_forward(self, batch, stage):
        batch = batch.to(self.device)
        wavs, lens = batch.sig
        enc, _ = self.modules.model(
            self.hparams.fbank(wavs), tgt=None, wav_len=lens
        )
        return self.modules.head(masked_mean_pool(enc, lens))

    def compute_objectives(self, predictions, batch, stage):
        return predictions.pow(2).mean()

    def on_stage_end(self, stage, stage_loss, epoch):
        if stage == sb.Stage.VALID:
            self.checkpointer.save_and_keep_only(meta={"loss": stage_loss})


def make_wav_brain(save_dir, epochs, hooks):
    torch.manual_seed(0)
    model = tiny_conformer(layers=4).train()
    head = torch.nn.Linear(16, 2)
    counter = EpochCounter(epochs)
    checkpointer = Checkpointer(
        save_dir,
        recoverables={"model": model, "head": head, "counter": counter},
    )
    return WavBrain(
        modules={"model": model, "head": head},
        opt_class=lambda params: torch.optim.Adam(params, lr=1e-3),
        hparams={
            "prune_hooks": hooks,
            "epoch_counter": counter,
            "fbank": Fbank(n_mels=12),
        },
        run_opts={"noprogressbar": True},
        checkpointer=checkpointer,
    )


def convexity_hooks(csv_file, data_root, folder):
    scoring = ConvexityScoring(
        csv_file,
        "keyword",
        folder,
        data_root=str(data_root),
        max_per_class=2,
        n_neighbors=4,
        every_n_epochs=1,
    )
    # Tolerance 100: the first layer always counts as the peak.
    cut = LayerCut("peak", scoring, tolerance=100.0, at_epoch=1)
    return [scoring, cut]


def test_scoring_and_cut_during_training_then_resume(tiny_corpus, tmp_path):
    csv_file = write_keyword_csv(tiny_corpus, tmp_path / "utts.csv")
    hooks = convexity_hooks(csv_file, tiny_corpus, tmp_path / "out")
    brain = make_wav_brain(tmp_path / "ckpt", 2, hooks)
    data = hooks[0].dataset()
    train, valid = (data.filtered_sorted(select_n=n) for n in (8, 2))
    fit_kwargs = {"train_loader_kwargs": {"batch_size": 8}}
    brain.fit(brain.hparams.epoch_counter, train, valid, **fit_kwargs)
    scoring, cut = brain.prune_hooks
    whens = [entry["when"] for entry in scoring.history]
    assert whens == ["start", "epoch 1", "epoch 2"]
    assert cut.decision["kept"] == [0] and cut.decision["when"] == "epoch 1"
    assert cut.decision["scores"] == scoring.history[1]["scores"]
    assert len(brain.modules.model.encoder.layers) == 1
    depths = [len(entry["scores"]) for entry in scoring.history]
    assert depths == [5, 5, 2]
    in_optimizer = {
        p for g in brain.optimizer.param_groups for p in g["params"]
    }
    assert in_optimizer == set(brain.modules.parameters())
    report = json.loads((tmp_path / "out" / "convexity.json").read_text())
    assert report["cut"]["kept"] == [0]
    assert report["history"][0]["n_points"] == 20
    assert (tmp_path / "out" / "convexity.png").stat().st_size > 0

    # A fresh dense model resumes from the checkpoint: no new cut or score.
    hooks = convexity_hooks(csv_file, tiny_corpus, tmp_path / "out")
    hooks[0].every_n_epochs = 0
    resumed = make_wav_brain(tmp_path / "ckpt", 3, hooks)
    resumed.fit(resumed.hparams.epoch_counter, train, valid, **fit_kwargs)
    assert len(resumed.modules.model.encoder.layers) == 1
    assert resumed.prune_hooks[1].decision == cut.decision
    assert len(resumed.prune_hooks[0].history) == 3


def test_scoring_is_deterministic_and_cut_reads_cached_scores(
    tiny_corpus, tmp_path
):
    csv_file = write_keyword_csv(tiny_corpus, tmp_path / "utts.csv")
    scoring, _ = convexity_hooks(csv_file, tiny_corpus, tmp_path / "out")
    brain = make_wav_brain(tmp_path / "ckpt", 1, [])
    states, labels, _ = scoring.pooled_states(brain)
    again, labels_again, _ = scoring.pooled_states(brain)
    assert states.shape == (5, 20, 16) and labels == labels_again
    assert torch.equal(states, again)
    assert brain.modules.training  # left in training mode
    scoring.history = [{"when": "start", "scores": SCORES}]
    cut = LayerCut("peak", scoring)
    assert cut.act(brain, "start")
    assert len(brain.modules.model.encoder.layers) == 2
    assert not cut.act(brain, "start")  # once only


@pytest.fixture(scope="module")
def tiny_asr_run(tiny_corpus, tmp_path_factory):
    """A one-epoch, 3-layer run of the ASR recipe (the pretrained model)."""
    out = tmp_path_factory.mktemp("asr")
    run = run_recipe(
        "conformer_ctc.yaml",
        tiny_corpus,
        out,
        number_of_epochs=1,
        num_encoder_layers=3,
        avg_checkpoints=1,
    )
    assert run.returncode == 0, run.stderr[-3000:]
    return out


def run_classification(data_folder, pretrained, output_folder, **extra):
    """Run the classification recipe with its tiny overrides."""
    folder = RECIPE / "classification"
    with open(folder / "hparams" / "tiny_overrides.yaml") as handle:
        overrides = yaml.safe_load(handle)
    overrides.update(extra)
    command = [
        sys.executable,
        "train.py",
        "hparams/classify.yaml",
        *[f"--{key}={value}" for key, value in overrides.items()],
        f"--data_folder={data_folder}",
        f"--pretrained_folder={pretrained}",
        f"--output_folder={output_folder}",
        "--noprogressbar",
    ]
    return subprocess.run(
        command, cwd=folder, capture_output=True, text=True, timeout=300
    )


def test_classification_recipe_cuts_the_pretrained_encoder(
    tiny_corpus, tiny_asr_run, tmp_path
):
    run = run_classification(
        tiny_corpus,
        tiny_asr_run,
        tmp_path,
        num_encoder_layers=3,
        cut_rule="peak",
        cut_tolerance=100.0,  # the first layer always counts as the peak
    )
    assert run.returncode == 0, run.stderr[-3000:]
    results = json.loads((tmp_path / "results.json").read_text())
    assert results["layers_total"] == 3 and results["layers_kept"] == 1
    assert results["params"] < results["params_dense"]
    assert results["macs_per_utterance"] > 0 and results["classes"] == 10
    assert 0.0 <= results["test_accuracy"] <= 100.0
    report = json.loads((tmp_path / "convexity.json").read_text())
    assert len(report["history"][0]["scores"]) == 4
    assert (tmp_path / "convexity.png").stat().st_size > 0


def test_classification_recipe_names_a_missing_pretrained_folder(tmp_path):
    spec = importlib.util.spec_from_file_location(
        "classification_train", RECIPE / "classification" / "train.py"
    )
    recipe = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(recipe)
    with pytest.raises(ValueError, match="pretrained_folder .* no save/"):
        recipe.load_pretrained_encoder({"pretrained_folder": str(tmp_path)})
