"""Conformance: every method on every model family works or is refused.

One test per cell of ``conformance_matrix.MATRIX``. A method that works on
a family is checked exactly on a tiny seeded model of it (eval mode, random
inputs): the pruned model computes what the original computes with the
removed members silenced (outgoing weights zeroed, layers skipped, gates
closed, directions projected out) to 1e-5, and its structure record
rebuilds it from a freshly built dense model (``describe`` -> ``restore``
-> ``load_state_dict``: the same outputs). The methods that remove nothing
check what they promise instead: conv norm (every norm replaced, padding
out of its statistics), layer importance (every unit's reset changes the
outputs, and the model comes back exactly), convexity (a state per depth;
a cut model's are the first ones). Options the method has but the cell
does not list (other adaptive-dropout points...) must be refused. A method
that does not work is refused with a ValueError naming the method and the
family, and leaves the model as it was: nothing is skipped silently.
Resuming through a PruningBrain checkpoint is checked once per method, on
the Conformer.
"""

import copy
import re
from types import SimpleNamespace

import pytest
import torch
from conformance_matrix import (
    BRANCHFORMER,
    CONFORMER,
    HUBERT,
    MATRIX,
    METHODS,
    README,
    TORCH,
    TRANSFORMER_ASR,
    TRANSFORMER_LM,
    WAV2VEC2,
    WAVLM,
    WHISPER,
    family_of_row,
    readme_table,
    render_table,
)
from helpers import random_batch, tiny_conformer, tiny_ssl_model, tiny_whisper
from speechbrain.lobes.models.transformer.TransformerASR import TransformerASR
from speechbrain.lobes.models.transformer.TransformerLM import TransformerLM
from toy_brain import build_brain, fit, state

from sb_prune import convert
from sb_prune.analysis.convexity.hidden_states import pooled_layer_states
from sb_prune.analysis.importance.units import (
    LayerImportance,
    find_units,
    snapshot,
)
from sb_prune.core.encoders import find_layer_stack, layer_stacks
from sb_prune.core.registry import (
    CRITERION_GROUPS,
    answered,
    answers_under,
    families,
    spec_of,
)
from sb_prune.core.structure import describe, restore
from sb_prune.core.surgery import apply_plan
from sb_prune.federated.dropout import DROPPABLE_UNITS, DropoutPolicy
from sb_prune.federated.submodel import extract_submodel
from sb_prune.hooks import (
    ActivationLowRank,
    AdaptiveDropoutPruning,
    CriterionPruning,
    LayerCut,
    LowRankCompression,
    TokenTableLowRank,
)
from sb_prune.methods.adaptive_dropout.convert import (
    ADAPTIVE_DROPOUT_POINTS,
    masked_layers,
)
from sb_prune.methods.adaptive_dropout.plan import adaptive_dropout_plan
from sb_prune.methods.conv_norm.group_norm import ConvGroupNorm
from sb_prune.methods.criteria.criteria import (
    Magnitude,
    keep_top,
    require_members,
)
from sb_prune.methods.i3d.gating import GATES, GatedLayer
from sb_prune.methods.low_rank.convert import LOW_RANK_POINTS
from sb_prune.methods.low_rank.layer import LowRankLinear, set_compression
from sb_prune.methods.table import METHODS as METHOD_TABLE
from sb_prune.nn import AdaptiveDropout
from sb_prune.schedules import OneShot


def speechbrain_asr(encoder_module, decoder_layers=0):
    """A tiny TransformerASR with RelPosMHAXL attention."""

    def build(seed=0):
        torch.manual_seed(seed)
        return TransformerASR(
            tgt_vocab=10,
            input_size=12,
            d_model=16,
            nhead=4,
            num_encoder_layers=2,
            num_decoder_layers=decoder_layers,
            d_ffn=32,
            dropout=0.0,
            encoder_module=encoder_module,
            attention_type="RelPosMHAXL",
            normalize_before=True,
            causal=False,
            kernel_size=3,
            csgu_linear_units=32,
        ).eval()

    return build


def language_model(seed=0):
    torch.manual_seed(seed)
    return TransformerLM(
        30, d_model=16, nhead=4, num_encoder_layers=2, d_ffn=32, dropout=0.0
    ).eval()


def ssl_model(name):
    def build(seed=0):
        pytest.importorskip("transformers")
        model = tiny_ssl_model(name, layers=2, seed=seed)
        model.config.layerdrop = 0.0  # every layer runs in training too
        return model

    return build


def whisper(seed=0):
    pytest.importorskip("transformers")
    return tiny_whisper(seed=seed)


def torch_encoder(seed=0):
    torch.manual_seed(seed)
    layer = torch.nn.TransformerEncoderLayer(
        16, 4, 32, dropout=0.0, batch_first=True
    )
    return torch.nn.TransformerEncoder(
        layer, 2, enable_nested_tensor=False
    ).eval()


FEATURES, LENGTHS = random_batch()
TOKENS = torch.randint(
    1, 10, (3, 5), generator=torch.Generator().manual_seed(2)
)
LM_TOKENS = torch.randint(
    1, 30, (3, 9), generator=torch.Generator().manual_seed(3)
)
MELS = torch.randn(2, 8, 20, generator=torch.Generator().manual_seed(4))
WAVES = torch.randn(2, 1600, generator=torch.Generator().manual_seed(5))
SEQUENCES = torch.randn(3, 7, 16, generator=torch.Generator().manual_seed(6))


def encode(model):
    return (model.encode(FEATURES, LENGTHS),)


def encode_decode(model):
    return model(FEATURES, TOKENS, wav_len=LENGTHS)


def ssl_states(model):
    return (model(WAVES).last_hidden_state,)


#: A tiny model of each row: ``build(seed)``, ``run(model)`` -> outputs,
#: and the relative lengths of the batch (padding where they are < 1).
ROWS = {
    CONFORMER: (speechbrain_asr("conformer"), encode, LENGTHS),
    TRANSFORMER_ASR: (
        speechbrain_asr("transformer", decoder_layers=2),
        encode_decode,
        LENGTHS,
    ),
    TRANSFORMER_LM: (language_model, lambda m: (m(LM_TOKENS),), None),
    BRANCHFORMER: (speechbrain_asr("branchformer"), encode, LENGTHS),
    WHISPER: (
        whisper,
        lambda m: (
            m(input_features=MELS, decoder_input_ids=TOKENS[:2]).logits,
        ),
        None,
    ),
    WAV2VEC2: (ssl_model("wav2vec2"), ssl_states, None),
    HUBERT: (ssl_model("hubert"), ssl_states, None),
    WAVLM: (ssl_model("wavlm"), ssl_states, None),
    TORCH: (torch_encoder, lambda m: (m(SEQUENCES),), None),
}


def _needs_prunable_attention(method, options):
    """Heads, and attention units or calibrated factors, need prunable
    attention first (``low_rank`` converts it itself)."""
    asked = [*options.get("points", ()), *options.get("units", ())]
    if method in ("activation_low_rank", "federated_dropout"):
        return "attention" in asked
    return method == "criteria_heads"


class Case:
    """One cell: a row's tiny model, prepared for the method."""

    def __init__(self, row, method, options):
        self.row, self.method, self.options = row, method, options
        self._build, self._run, self.lengths = ROWS[row]

    def model(self, seed=0):
        """A new model of the row (``prunable_attention`` if needed)."""
        model = self._build(seed)
        if _needs_prunable_attention(self.method, self.options):
            make_attention_prunable(model)
        return model

    def outputs(self, model):
        """The model's outputs (a list of tensors), without gradients."""
        with torch.no_grad():
            return [out.detach().clone() for out in self._run(model)]


class Brain:
    """What the hooks use of a PruningBrain, around one model."""

    def __init__(self, model):
        self.modules = torch.nn.ModuleDict({"model": model})
        self.hparams = SimpleNamespace()
        self.device = "cpu"

    def unwrapped_modules(self):
        return self.modules


def assert_outputs(got, expected, atol=1e-5):
    assert len(got) == len(expected)
    for a, b in zip(got, expected):
        torch.testing.assert_close(a, b, atol=atol, rtol=0)


def assert_differ(got, expected):
    assert any(
        not torch.allclose(a, b, atol=1e-4) for a, b in zip(got, expected)
    )


def assert_record_rebuilds(case, model, **conversions):
    """``describe`` -> ``restore`` on a fresh dense model (converted as
    ``model`` was) -> ``load_state_dict`` -> the same outputs."""
    fresh = convert(case.model(seed=1), **conversions)
    restore(fresh, describe(model))
    fresh.load_state_dict(model.state_dict())
    for a, b in zip(case.outputs(fresh.eval()), case.outputs(model.eval())):
        assert torch.equal(a, b)


def make_attention_prunable(model):
    """``prunable_attention`` where the model's family answers it."""
    if answered(model, "prunable_attention"):
        convert(model, prunable_attention={})


def _skip_layer(layer, args, kwargs, output):
    """Forward hook: the layer's output is its input (a removed layer)."""
    hidden = args[0] if args else next(iter(kwargs.values()))
    if torch.is_tensor(output):
        return hidden
    return (hidden, *output[1:])


def _member_columns(module, spec, members):
    """The consumer's input columns that belong to ``members``."""
    consumer = spec.consumer(module)
    one_hot = torch.eye(consumer.in_features)
    owners = [int(spec.per_member(module, row).argmax()) for row in one_hot]
    return [c for c, owner in enumerate(owners) if owner in members]


def _silence(module, spec, group, removed):
    with torch.no_grad():
        if group == "layers":
            for index in removed:
                module.layers[index].register_forward_hook(
                    _skip_layer, with_kwargs=True
                )
        elif group == "qk":  # a query/key dimension without its query
            for name in ("weight", "bias"):
                if getattr(module.in_proj, name) is not None:
                    getattr(module.in_proj, name)[removed] = 0.0
            for name in ("pos_bias_u", "pos_bias_v"):
                if hasattr(module, name):
                    getattr(module, name)[removed] = 0.0
        else:
            if group == "heads":
                removed = _member_columns(module, spec, removed)
            spec.consumer(module).weight[:, removed] = 0.0


def silenced(root, plan):
    """A copy of ``root`` where the members a plan removes are silent."""
    root = copy.deepcopy(root)
    for path, groups in plan.items():
        module = root.get_submodule(path)
        spec = spec_of(module)
        for group, kept in groups.items():
            size = (
                len(module.layers)
                if group == "layers"
                else spec.group_size(module, group)
            )
            kept = set(torch.as_tensor(kept).tolist())
            removed = [i for i in range(size) if i not in kept]
            _silence(module, spec, group, removed)
    return root


def check_adaptive_dropout(case, model, points=ADAPTIVE_DROPOUT_POINTS):
    """Masks at every point; units their eval masks drop are removed."""
    options = {"adaptive_dropout": {"points": points}}
    convert(model, **options)
    labels = {label for _, masks in masked_layers(model) for label in masks}
    for point in points:
        assert any(label.startswith(point) for label in labels), point
    gen = torch.Generator().manual_seed(0)
    for adl in model.modules():
        if isinstance(adl, AdaptiveDropout):
            adl.set_logits(6 * torch.rand(adl.n_units, generator=gen) - 3)
    masked = case.outputs(model)
    plan = adaptive_dropout_plan(model)
    assert plan
    apply_plan(model, plan)
    assert_outputs(case.outputs(model), masked)
    assert_record_rebuilds(case, model, **options)


def criteria(group):
    """Half the members of ``group`` go: those of lowest magnitude."""

    def check(case, model):
        groups = [group]
        if group == "layers" and layer_stacks(model, role="decoder"):
            groups.append("decoder_layers")
        plan = {}
        for members in require_members(model, groups):
            scores = Magnitude().score(members)
            kept = keep_top(scores, max(1, members.count // 2))
            plan[members.path] = members.plan(kept)
        expected = case.outputs(silenced(model, plan))
        apply_plan(model, plan)
        assert_outputs(case.outputs(model), expected)
        assert_record_rebuilds(case, model)

    return check


def check_layer_cut(case, model):
    """LayerCut keeps the first layer of the encoder."""
    brain = Brain(model)
    path, stack = find_layer_stack(brain.modules)
    plan = {path: {"layers": [0]}}
    expected = case.outputs(silenced(brain.modules, plan)["model"])
    assert LayerCut("first", n_layers=1).on_fit_start(brain)
    assert len(stack.layers) == 1
    assert_outputs(case.outputs(model), expected)
    assert_record_rebuilds(case, model)


def check_low_rank(case, model, points=LOW_RANK_POINTS):
    """Full-rank SVD factors, then LowRankCompression halves the weights."""
    dense = case.outputs(model)
    options = {"low_rank": {"points": points}}
    convert(model, **options)
    assert_outputs(case.outputs(model), dense)
    brain = Brain(model)
    hook = LowRankCompression(OneShot(0.5))
    hook.on_fit_start(brain)
    masked = copy.deepcopy(model)
    set_compression(masked, 0.5)  # only the directions a cut keeps run
    assert hook.on_train_epoch_end(brain, 1)
    for layer in model.modules():
        if isinstance(layer, LowRankLinear):
            assert layer.rank < min(layer.in_features, layer.out_features)
    assert_outputs(case.outputs(model), case.outputs(masked))
    assert_record_rebuilds(case, model, **options)


def check_low_rank_embedding(case, model, rank=4):
    """Refused by every family row, by the hook as by the conversion, with
    the same message (SpeechBrain's lobe, which takes both, is checked in
    tests/test_token_table.py and on the real tiny.en in
    tests/test_whisper_export.py)."""
    brain = SimpleNamespace(
        unwrapped_modules=lambda: model, hparams=SimpleNamespace()
    )
    with pytest.raises(ValueError) as by_hook:
        TokenTableLowRank(rank).on_fit_start(brain)
    with pytest.raises(ValueError, match=re.escape(str(by_hook.value))):
        convert(model, low_rank_embedding={"rank": rank})
    raise by_hook.value


def _project_output(low):
    """Forward hook: a Linear's output projected as ``low`` computes it."""
    basis = low.up.weight.detach().double()
    projection = (basis @ basis.T).float()

    def project(linear, args, output):
        shift = 0.0
        if linear.bias is not None:
            shift = low.up.bias - linear.bias @ projection
        return output @ projection + shift

    return project


def check_activation_low_rank(case, model, points=LOW_RANK_POINTS):
    """Calibrated PCA factors equal the dense layers projected on them."""
    dense = copy.deepcopy(model)
    brain = Brain(model)
    hook = ActivationLowRank(0.5, points=points)
    hook.on_fit_start(brain)
    with torch.no_grad():
        case.outputs(model.train())  # the calibration batch
    assert hook.on_train_epoch_end(brain, 1)
    model.eval()
    factorised = 0
    for path, low in model.named_modules():
        if isinstance(low, LowRankLinear):
            dense.get_submodule(path).register_forward_hook(
                _project_output(low)
            )
            factorised += 1
    assert factorised
    assert_outputs(case.outputs(model), case.outputs(dense), atol=1e-4)
    assert_record_rebuilds(case, model)


def _set_gates(model, closed):
    """Open every gate of the gated layers but those ``closed`` names."""
    for index, layer in enumerate(
        m for m in model.modules() if isinstance(m, GatedLayer)
    ):
        logits = torch.tensor([-30.0, 30.0]).repeat(len(layer.gates), 1)
        for gate, name in enumerate(layer.gates):
            if name in closed.get(index, ()):
                logits[gate] = torch.tensor([30.0, -30.0])
        with torch.no_grad():
            layer.gate_predictor.output.bias.copy_(logits.flatten())


def check_dynamic_depth(case, model, gates=GATES):
    """Open gates compute the dense model; closed branches are skipped at
    inference exactly as training's zero gates mask them."""
    dense = case.outputs(model)
    options = {"dynamic_depth": {"gates": gates, "predictor": "local"}}
    convert(model, **options)
    _set_gates(model, {})
    assert_outputs(case.outputs(model), dense)
    _set_gates(model, {0: gates[:1], 1: gates[1:]})
    skipped = case.outputs(model)
    assert_differ(skipped, dense)
    masked = case.outputs(model.train())  # gates multiply the branches
    assert_outputs(skipped, masked)
    assert_record_rebuilds(case, model, **options)


def check_conv_norm(case, model):
    """Group norms in every convolution module, which leave the padding
    out of their statistics: on each utterance of the padded batch a norm
    computes what it computes on that utterance alone."""
    dense = case.outputs(model)
    options = {"conv_norm": {"norm": "group", "groups": 4}}
    convert(model, **options)
    norms = [m for m in model.modules() if isinstance(m, ConvGroupNorm)]
    assert len(norms) == len(answers_under(model, "conv_norm"))
    seen = []
    handles = [
        norm.register_forward_hook(
            lambda norm, args, out: seen.append(
                (norm, args[0], out, norm.padding_mask)
            )
        )
        for norm in norms
    ]
    assert_differ(case.outputs(model), dense)
    for handle in handles:
        handle.remove()
    assert len(seen) == len(norms)
    for norm, x, out, padding in seen:
        valid = (~padding).reshape(len(x), -1).sum(1).tolist()
        assert len(set(valid)) > 1  # the batch's padding reached the norm
        for index, frames in enumerate(valid):
            with torch.no_grad():
                alone = norm(x[index : index + 1, :frames])
            assert_outputs([alone[0]], [out[index, :frames]])
    assert_record_rebuilds(case, model, **options)


def check_federated_dropout(case, model, units=DROPPABLE_UNITS):
    """A client's sub-model computes the full model with its dropped
    units silenced (no compensation); its record rebuilds it."""
    policy = DropoutPolicy(
        "uniform", client_size=0.8, dropped_units=units, compensate=False
    )
    plan = policy.plan(model, client=1, server_round=1)
    thinned = {group.unit.split(".")[1] for group in policy.groups}
    assert thinned == set(units)
    sub = extract_submodel(model, plan)
    assert sub.num_parameters < sum(p.numel() for p in model.parameters())
    expected = case.outputs(silenced(model, plan))
    assert_outputs(case.outputs(sub.module), expected)
    assert_record_rebuilds(case, sub.module)


def check_layer_importance(case, model):
    """Resetting any unit changes the outputs; the model comes back."""
    base = case.outputs(model)

    def evaluate():
        outputs = case.outputs(model)
        change = max((a - b).abs().max() for a, b in zip(outputs, base))
        return {"change": float(change)}

    units = find_units(model)
    assert any("." in unit for unit in units)  # modules inside layers
    importance = LayerImportance(
        metric="change",
        ambient_threshold=0.0,
        critical_threshold=1.0,
        max_metric=None,
    )
    initial = snapshot(case.model(seed=1), units)
    report = importance.run(model, evaluate, {"init": initial}, progress=False)
    assert list(report["units"]) == list(units)
    for unit, entry in report["units"].items():
        assert entry["delta"]["init"] > 0, unit
    assert_outputs(case.outputs(model), base, atol=0)


def check_convexity(case, model):
    """Pooled states of every depth; a cut model's are the first ones."""
    path, stack = find_layer_stack(model)

    def run(batch):
        batch_size = len(case.outputs(model)[0])
        return torch.ones(batch_size) if case.lengths is None else case.lengths

    states = pooled_layer_states(stack, [None], run)
    assert states.shape[0] == len(stack.layers) + 1
    for shallow, deep in zip(states, states[1:]):
        assert not torch.allclose(shallow, deep)
    apply_plan(model, {path: {"layers": [0]}})
    assert_outputs(pooled_layer_states(stack, [None], run), states[:2])


CHECKS = {
    "adaptive_dropout": check_adaptive_dropout,
    "criteria_ffn": criteria("ffn"),
    "criteria_heads": criteria("heads"),
    "criteria_layers": criteria("layers"),
    "layer_cut": check_layer_cut,
    "low_rank": check_low_rank,
    "low_rank_embedding": check_low_rank_embedding,
    "activation_low_rank": check_activation_low_rank,
    "dynamic_depth": check_dynamic_depth,
    "conv_norm": check_conv_norm,
    "federated_dropout": check_federated_dropout,
    "layer_importance": check_layer_importance,
    "convexity": check_convexity,
}
#: ``{method: (option, choices)}``: the choices a cell does not list are
#: refused.
CHOICES = {
    "adaptive_dropout": ("points", ADAPTIVE_DROPOUT_POINTS),
    "low_rank": ("points", LOW_RANK_POINTS),
    "activation_low_rank": ("points", LOW_RANK_POINTS),
    "federated_dropout": ("units", DROPPABLE_UNITS),
}
#: What each column exercises: its method of the method table
#: (:mod:`sb_prune.methods.table`), ``sb_prune.convert`` keywords, hooks
#: (some through the functions they are built on: ConvexityScoring pools
#: layer states, the WeightChangeTracker snapshots the units that
#: LayerImportance resets) and criterion groups.
EXERCISES = {
    "adaptive_dropout": {"adaptive_dropout", "AdaptiveDropoutPruning"},
    "criteria_ffn": {"criteria", "CriterionPruning", "ffn"},
    "criteria_heads": {"criteria", "prunable_attention", "heads"},
    "criteria_layers": {"criteria", "layers", "decoder_layers"},
    "layer_cut": {"convexity_layer_cut", "LayerCut"},
    "low_rank": {"low_rank", "LowRankCompression"},
    "low_rank_embedding": {"low_rank_embedding", "TokenTableLowRank"},
    "activation_low_rank": {"low_rank", "ActivationLowRank"},
    "dynamic_depth": {"i3d", "dynamic_depth"},
    "conv_norm": {"layer_importance", "conv_norm"},
    "federated_dropout": {"federated_dropout"},
    "layer_importance": {"layer_importance", "WeightChangeTracker"},
    "convexity": {"convexity_layer_cut", "ConvexityScoring"},
}
#: Methods of the table that change no family's modules (a loss term).
NOT_ON_MODULES = {"distillation"}


def assert_refused(row, method, **options):
    """The method raises naming itself and the family; the model is kept."""
    case = Case(row, method, options)
    model = case.model()
    types = [type(m) for m in model.modules()]
    with pytest.raises(ValueError) as error:
        CHECKS[method](case, model, **options)
    message = str(error.value)
    assert METHODS[method][1] in message, message
    assert family_of_row(row) in message, message
    assert [type(m) for m in model.modules()] == types


@pytest.mark.parametrize(
    "row, method", [(row, method) for row in MATRIX for method in METHODS]
)
def test_a_method_works_on_a_family_or_is_refused_by_name(row, method):
    outcome, detail = MATRIX[row][method]
    if outcome == "refused":
        assert_refused(row, method)
        return
    case = Case(row, method, detail)
    CHECKS[method](case, case.model(), **detail)
    option, choices = CHOICES.get(method, (None, ()))
    for choice in choices:
        if choice not in detail[option]:
            assert_refused(row, method, **{option: [choice]})


def test_the_matrix_covers_every_family_and_method():
    registered = {
        name for name, family in families().items() if family.types
    } - {"sb_prune"}
    assert {family_of_row(row) for row in MATRIX} == registered
    assert set(ROWS) == set(MATRIX)
    for cells in MATRIX.values():
        assert set(cells) == set(METHODS)
    assert set(EXERCISES) == set(METHODS)
    required = set(CRITERION_GROUPS)
    for name, method in METHOD_TABLE.items():
        if name not in NOT_ON_MODULES:
            hooks = {path.rpartition(".")[2] for path in method.hooks}
            required |= {name, *hooks} | ({method.convert} - {None})
    assert required <= set().union(*EXERCISES.values())


def test_the_readme_shows_the_matrix():
    readme = README.read_text(encoding="utf-8")
    assert readme_table(readme) == render_table()


#: One resume per method, on the Conformer: ``(sb_prune.convert keywords,
#: hook or None)``.
RESUMED = {
    "adaptive_dropout": (
        {"adaptive_dropout": {"init_retention": 0.5}},
        lambda: AdaptiveDropoutPruning(0.1, -6.0, -6.0, ramp_epochs=1),
    ),
    "criteria": (
        {"prunable_attention": {}},
        lambda: CriterionPruning(
            "magnitude", OneShot(0.5), groups=["ffn", "heads", "layers"]
        ),
    ),
    "layer_cut": ({}, lambda: LayerCut("first", n_layers=1)),
    "low_rank": (
        {"low_rank": {"points": ["ffn", "attention"]}},
        lambda: LowRankCompression(OneShot(0.5)),
    ),
    "activation_low_rank": (
        {"prunable_attention": {}},
        lambda: ActivationLowRank(0.5, points=["ffn", "attention"]),
    ),
    "dynamic_depth": ({"dynamic_depth": {"gates": list(GATES)}}, None),
    "conv_norm": ({"conv_norm": {"groups": 4}}, None),
}


@pytest.mark.parametrize("method", RESUMED)
def test_a_pruned_checkpoint_resumes_in_a_fresh_brain(method, tmp_path):
    """A PruningBrain trained one epoch with the method; a Brain built
    afresh (other weights, dense) recovers its structure and parameters."""
    conversions, hook = RESUMED[method]

    def brain(seed):
        model = convert(tiny_conformer(seed=seed).train(), **conversions)
        hooks = [hook()] if hook else []
        return build_brain(tmp_path, model, hooks, epochs=1)

    dense_record, _ = state(brain(0))
    trained = brain(0)
    fit(trained, n_train=16)
    record, params = state(trained)
    assert (record != dense_record) == (hook is not None)
    resumed = brain(5)
    resumed.checkpointer.recover_if_possible()
    new_record, new_params = state(resumed)
    assert new_record == record
    assert new_params.keys() == params.keys()
    for key, value in params.items():
        assert torch.equal(new_params[key], value), key
