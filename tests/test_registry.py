"""The registry: a model family is one entry; unknown types are named."""

import subprocess
import sys

import pytest
import torch
from helpers import SSL_MODELS, tiny_conformer, tiny_ssl_model, tiny_whisper

from sb_prune.core.registry import (
    ModuleSpec,
    register,
    register_layer_stack,
    unregister,
)
from sb_prune.core.structure import describe, restore
from sb_prune.core.surgery import apply_plan
from sb_prune.methods.criteria.criteria import Magnitude, find_members


class Bottleneck(torch.nn.Module):
    """A model family of its own: ``x + down(relu(up(x)))``."""

    def __init__(self, size=4, hidden=6):
        super().__init__()
        self.up = torch.nn.Linear(size, hidden)
        self.down = torch.nn.Linear(hidden, size)

    def forward(self, x):
        return x + self.down(torch.relu(self.up(x)))


class Block(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.mlp = Bottleneck()

    def forward(self, x):
        return self.mlp(x)


class Stack(torch.nn.Module):
    def __init__(self, n_layers=3):
        super().__init__()
        self.layers = torch.nn.ModuleList(Block() for _ in range(n_layers))

    def forward(self, x):
        for layer in self.layers:
            x = layer(x)
        return x


WHISPER = "transformers.models.whisper.modeling_whisper."


def keep_hidden(module, hidden):
    keep = torch.as_tensor(hidden)
    with torch.no_grad():
        up = torch.nn.Linear(module.up.in_features, len(keep))
        up.weight.copy_(module.up.weight[keep])
        up.bias.copy_(module.up.bias[keep])
        down = torch.nn.Linear(len(keep), module.down.out_features)
        down.weight.copy_(module.down.weight[:, keep])
        down.bias.copy_(module.down.bias)
    module.up, module.down = up, down


def set_hidden(module, spec):
    keep_hidden(module, torch.arange(spec["hidden"]) % module.up.out_features)


BOTTLENECK_SPEC = ModuleSpec(
    groups=("hidden",),
    prune=keep_hidden,
    get_structure=lambda m: {"hidden": m.up.out_features},
    set_structure=set_hidden,
    criterion_group="ffn",
    count=lambda m: m.up.out_features,
    member_plan=lambda m, kept: {"hidden": kept},
    consumer=lambda m: m.down,
    magnitude=lambda m: (
        m.up.weight.pow(2).sum(1) + m.down.weight.pow(2).sum(0)
    ).sqrt(),
    group_size=lambda m, group: m.up.out_features,
)


@pytest.fixture
def family():
    """Register the toy family (one entry per type), then forget it."""
    register(Bottleneck, BOTTLENECK_SPEC)
    register(Block, ModuleSpec(groups=(), layer_modules={"mlp": ["mlp"]}))
    register_layer_stack(Stack)
    yield
    for module_type in (Bottleneck, Block, Stack):
        unregister(module_type)


def test_a_registered_family_is_pruned_scored_and_recorded(family):
    torch.manual_seed(0)
    root = torch.nn.ModuleDict({"stack": Stack()}).eval()
    members = find_members(root, ["ffn", "layers"])
    assert [(m.path, m.group, m.count) for m in members] == [
        ("stack", "layers", 3),
        ("stack.layers.0.mlp", "ffn", 6),
        ("stack.layers.1.mlp", "ffn", 6),
        ("stack.layers.2.mlp", "ffn", 6),
    ]
    scores = Magnitude().score(members[1])
    assert scores.shape == (6,)
    x = torch.randn(2, 4)
    mlp = root["stack"].layers[0].mlp
    with torch.no_grad():
        mlp.up.weight[[1, 4]] = 0.0
        mlp.up.bias[[1, 4]] = -1.0  # relu(-1) = 0: units 1 and 4 are dead
        expected = root["stack"](x)
    apply_plan(root, {"stack.layers.0.mlp": {"hidden": [0, 2, 3, 5]}})
    assert torch.allclose(root["stack"](x), expected, atol=1e-6)
    apply_plan(root, {"stack": {"layers": [0, 2]}})
    record = describe(root)
    # Records name types by qualified name.
    assert record["stack"] == {"type": f"{__name__}.Stack", "layers": 2}
    assert record["stack.layers.0.mlp"] == {
        "type": f"{__name__}.Bottleneck",
        "hidden": 4,
    }
    fresh = torch.nn.ModuleDict({"stack": Stack()})
    assert restore(fresh, record)
    fresh.load_state_dict(root.state_dict())
    assert torch.equal(fresh["stack"](x), root["stack"](x))


def test_the_builtin_entries_load_without_import_order():
    """In a fresh interpreter: a user's entry registered before any look-up
    is kept (the built-ins load first), and built-ins need no import."""
    script = "\n".join(
        [
            "import speechbrain.nnet.attention as attention",
            "import speechbrain.lobes.models.transformer.Conformer as conf",
            "from sb_prune.core.registry import ModuleSpec, register, spec_of",
            "mine = ModuleSpec(groups=('mine',))",
            "register(attention.PositionalwiseFeedForward, mine)",
            "ffn = attention.PositionalwiseFeedForward(8, input_size=4)",
            "assert spec_of(ffn) is mine",
            "conv = conf.ConvolutionModule(8, kernel_size=3)",
            "assert spec_of(conv).groups == ('inputs',)",
        ]
    )
    done = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True
    )
    assert done.returncode == 0, done.stderr[-2000:]


def test_a_record_naming_an_unknown_type_names_it_and_how_to_register():
    root = torch.nn.ModuleDict({"stack": Stack()})
    record = {"stack": {"type": "Stack", "layers": 2}}
    with pytest.raises(ValueError, match="names a Stack at 'stack'.*register"):
        restore(root, record)


def test_a_plan_for_an_unknown_type_or_group_is_refused():
    root = torch.nn.ModuleDict({"stack": Stack()})
    with pytest.raises(ValueError, match="no spec for Stack"):
        apply_plan(root, {"stack": {"layers": [0]}})
    model = tiny_conformer()
    path = "encoder.layers.0.ffn_module1.1"
    with pytest.raises(ValueError, match="groups are \\['hidden'\\]"):
        apply_plan(model, {path: {"rows": torch.tensor([0])}})


def test_a_spec_without_a_part_names_the_method_and_type(family):
    register(Bottleneck, ModuleSpec(groups=("hidden",), criterion_group="ffn"))
    members = find_members(torch.nn.ModuleDict({"b": Bottleneck()}), ["ffn"])
    with pytest.raises(ValueError, match="magnitude: a Bottleneck has no"):
        Magnitude().score(members[0])


def tiny_whisper_encoder():
    pytest.importorskip("transformers")
    return tiny_whisper(encoder_layers=3).model.encoder


def test_whisper_encoder_is_one_entry_of_the_registry():
    """Hugging Face Whisper: FFN units, layer cuts, records, low rank."""
    from sb_prune import convert

    encoder = tiny_whisper_encoder()
    root = torch.nn.ModuleDict({"whisper": encoder})
    members = find_members(root, ["ffn", "layers"])
    assert [(m.group, m.count) for m in members] == [
        ("layers", 3),
        ("ffn", 32),
        ("ffn", 32),
        ("ffn", 32),
    ]
    features = torch.randn(2, 8, 20)
    layer = encoder.layers[1]
    dead = torch.tensor([3, 7, 30])
    with torch.no_grad():
        layer.fc2.weight[:, dead] = 0.0
        expected = encoder(features).last_hidden_state
    kept = torch.tensor([i for i in range(32) if i not in dead.tolist()])
    apply_plan(root, {"whisper.layers.1": {"hidden": kept}})
    with torch.no_grad():
        pruned = encoder(features).last_hidden_state
    assert torch.allclose(pruned, expected, atol=1e-5)
    apply_plan(root, {"whisper": {"layers": [0, 1]}})
    assert encoder.config.encoder_layers == 2
    record = describe(root)
    assert record["whisper.layers.1"] == {
        "type": WHISPER + "WhisperEncoderLayer",
        "hidden": 29,
    }
    fresh = torch.nn.ModuleDict({"whisper": tiny_whisper_encoder()})
    assert restore(fresh, record)
    fresh.load_state_dict(root.state_dict())
    with torch.no_grad():
        again = fresh["whisper"](features).last_hidden_state
    assert torch.equal(again, encoder(features).last_hidden_state)
    convert(encoder, low_rank={"points": ["ffn"], "compression": 0.5})
    assert type(encoder.layers[0].fc1).__name__ == "LowRankLinear"


@pytest.mark.parametrize("name", sorted(SSL_MODELS))
def test_ssl_encoder_ffn_units_are_pruned_exactly(name):
    """wav2vec2/HuBERT/WavLM feed-forward blocks: criteria and low rank."""
    pytest.importorskip("transformers")
    from sb_prune import convert

    model = tiny_ssl_model(name, layers=2)
    root = torch.nn.ModuleDict({"ssl": model})
    members = find_members(root, ["ffn", "layers"])
    assert [(m.group, m.count) for m in members] == [
        ("layers", 2),
        ("ffn", 32),
        ("ffn", 32),
    ]
    wavs = torch.randn(2, 1600)
    ffn = members[1].module
    with torch.no_grad():
        ffn.output_dense.weight[:, [0, 5]] = 0.0
        expected = model(wavs).last_hidden_state
    kept = torch.tensor([i for i in range(32) if i not in (0, 5)])
    apply_plan(root, {members[1].path: {"hidden": kept}})
    with torch.no_grad():
        assert torch.allclose(
            model(wavs).last_hidden_state, expected, atol=1e-5
        )
    assert describe(root)[members[1].path]["hidden"] == 30
    convert(model, low_rank={"points": ["ffn"]})  # full rank: exact
    with torch.no_grad():
        assert torch.allclose(
            model(wavs).last_hidden_state, expected, atol=1e-4
        )


@pytest.mark.parametrize("attention", ["RelPosMHAXL", "regularMHA"])
def test_encoder_decoder_transformer_prunes_encoder_and_decoder(attention):
    """TransformerASR with a decoder: FFN units and heads of both are
    removed exactly (a masked model equals the pruned one) and recorded."""
    from speechbrain.lobes.models.transformer.TransformerASR import (
        TransformerASR,
    )

    from sb_prune import convert

    def build():
        torch.manual_seed(0)
        model = TransformerASR(
            tgt_vocab=12,
            input_size=8,
            d_model=16,
            nhead=4,
            num_encoder_layers=2,
            num_decoder_layers=2,
            d_ffn=32,
            dropout=0.0,
            encoder_module="conformer",
            attention_type=attention,
            normalize_before=True,
            causal=False,
        ).eval()
        convert(model, prunable_attention={})
        return torch.nn.ModuleDict({"Transformer": model})

    root = build()
    model = root["Transformer"]
    members = find_members(root, ["ffn", "heads"])
    paths = [m.path for m in members]
    assert any(".decoder." in p for p in paths)
    assert any(".encoder." in p for p in paths)
    src, tgt = torch.randn(2, 10, 8), torch.randint(1, 12, (2, 5))
    plan = {}
    with torch.no_grad():
        for item in members:  # silence member 0 of each, then remove it
            plan[item.path] = item.plan(torch.arange(1, item.count))
            dead = item.plan(torch.tensor([0]))
            columns = dead["hidden"] if item.group == "ffn" else dead["v"]
            item.consumer().weight[:, columns] = 0.0
        expected = model(src, tgt, wav_len=torch.ones(2))
    apply_plan(root, plan)
    with torch.no_grad():
        got = model(src, tgt, wav_len=torch.ones(2))
    for a, b in zip(got, expected):
        assert torch.allclose(a, b, atol=1e-5)
    fresh = build()
    assert restore(fresh, describe(root))
    fresh.load_state_dict(root.state_dict())
    with torch.no_grad():
        again = fresh["Transformer"](src, tgt, wav_len=torch.ones(2))
    for a, b in zip(again, got):
        assert torch.equal(a, b)


def test_whisper_heads_are_pruned_exactly_and_rebuilt():
    """Removing a Whisper encoder head equals zeroing its output columns."""
    encoder = tiny_whisper_encoder()
    root = torch.nn.ModuleDict({"whisper": encoder})
    heads = find_members(root, ["heads"])
    assert [(m.path, m.count) for m in heads] == [
        (f"whisper.layers.{i}.self_attn", 2) for i in range(3)
    ]
    features = torch.randn(2, 8, 20)
    attention = encoder.layers[2].self_attn
    with torch.no_grad():
        attention.out_proj.weight[:, :8] = 0.0  # head 0 of width 8
        expected = encoder(features).last_hidden_state
    apply_plan(root, {"whisper.layers.2.self_attn": {"heads": [1]}})
    assert attention.q_proj.out_features == attention.out_proj.in_features
    assert attention.num_heads == 1 and attention.k_proj.out_features == 8
    with torch.no_grad():
        assert torch.allclose(
            encoder(features).last_hidden_state, expected, atol=1e-5
        )
    record = describe(root)
    assert record["whisper.layers.2.self_attn"] == {
        "type": WHISPER + "WhisperAttention",
        "heads": 1,
    }
    fresh = torch.nn.ModuleDict({"whisper": tiny_whisper_encoder()})
    restore(fresh, record)
    fresh.load_state_dict(root.state_dict())
    with torch.no_grad():
        again = fresh["whisper"](features).last_hidden_state
    assert torch.equal(again, encoder(features).last_hidden_state)


def test_a_type_belongs_to_one_family():
    """A family module registering a type that another family owns fails,
    naming the type and both families."""
    from speechbrain.nnet.attention import PositionalwiseFeedForward

    from sb_prune.core.registry import Family

    with pytest.raises(ValueError) as error:
        Family("Mine").register(PositionalwiseFeedForward, BOTTLENECK_SPEC)
    message = str(error.value)
    assert "PositionalwiseFeedForward" in message
    assert "Mine" in message and "SpeechBrain Transformer" in message


def test_an_old_record_whose_bare_name_matches_two_families_is_refused():
    """Records written before qualified names carry bare class names; one
    that two families register cannot be told apart and is refused by
    name, while an unambiguous bare name still loads."""
    from sb_prune.core.registry import Family, spec_named

    class Linear(torch.nn.Linear):
        """A second 'Linear' in another family."""

    twin = Family("Twin")
    twin.register(Linear, ModuleSpec(groups=()))
    other = Family("Other")
    other.register("some.package.LowRankLinear", ModuleSpec(groups=()))
    try:
        with pytest.raises(ValueError, match="'LowRankLinear' matches"):
            spec_named("LowRankLinear")
        assert spec_named("sb_prune.methods.low_rank.layer.LowRankLinear")
        assert spec_named("Linear").family == "Twin"
    finally:
        unregister(Linear)
        unregister("some.package.LowRankLinear")
    assert spec_named("LowRankLinear").groups == ("rank",)


def test_a_record_with_bare_names_still_loads(family):
    """Records written by the previous version (bare type names) load."""
    root = torch.nn.ModuleDict({"stack": Stack()})
    apply_plan(root, {"stack": {"layers": [0, 2]}})
    old = {
        path: {**entry, "type": entry["type"].rsplit(".", 1)[-1]}
        for path, entry in describe(root).items()
    }
    fresh = torch.nn.ModuleDict({"stack": Stack()})
    assert restore(fresh, old)
    assert len(fresh["stack"].layers) == 2
