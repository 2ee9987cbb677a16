"""The token table factorised on calibration statistics (TokenTableLowRank).

A random tiny Hugging Face Whisper inside sb_prune's lobe class (built
without its pretrained folder): the statistics are what the decoder reads
and writes in training forwards, the calibrated factors reach the optimum
of the weighted score error, and the hook replaces the table once.
"""

import sys
from types import SimpleNamespace

import pytest
import torch
from helpers import run_two_processes, tiny_whisper
from torch import nn

from sb_prune.hooks import TokenTableLowRank
from sb_prune.methods.low_rank.embedding import LowRankEmbedding
from sb_prune.methods.low_rank.token_table import TokenStatistics
from sb_prune.schedules import Gradual

pytest.importorskip("transformers")


def lobe_of(model):
    """sb_prune's Whisper lobe around a Hugging Face ``WhisperModel`` (no
    folder)."""
    from sb_prune.nn import WhisperLobe

    lobe = WhisperLobe.__new__(WhisperLobe)
    nn.Module.__init__(lobe)
    lobe.model = model
    return lobe


def training_forward(model, seed):
    generator = torch.Generator().manual_seed(seed)
    features = torch.randn(2, 8, 20, generator=generator)
    ids = torch.randint(0, 60, (2, 7), generator=generator)
    model.train()
    with torch.no_grad():
        model(input_features=features, decoder_input_ids=ids)
    return features, ids


def weighted_error(table, low, weights, moment):
    error = (table - low).double()
    return float((weights[:, None] * (error @ moment * error)).sum())


def test_calibrated_factors_reach_the_weighted_optimum():
    torch.manual_seed(0)
    dense = nn.Embedding(30, 8)
    weights = torch.rand(30).double() * 10 + 0.1
    states = torch.randn(100, 8).double() * torch.linspace(0.1, 3, 8)
    moment = states.T @ states / 100
    full = LowRankEmbedding.from_embedding(dense, 8, weights, moment)
    assert torch.allclose(full.weight, dense.weight, atol=1e-5)
    low = LowRankEmbedding.from_embedding(dense, 3, weights, moment)
    values, vectors = torch.linalg.eigh(moment)
    root = (vectors * values.sqrt()) @ vectors.T
    spectrum = torch.linalg.svdvals(
        weights.sqrt()[:, None] * dense.weight.double() @ root
    )
    optimum = float((spectrum[3:] ** 2).sum())
    calibrated = weighted_error(dense.weight, low.weight, weights, moment)
    plain = LowRankEmbedding.from_embedding(dense, 3).weight
    assert calibrated == pytest.approx(optimum, rel=1e-4)
    assert calibrated < 0.9 * weighted_error(
        dense.weight, plain, weights, moment
    )


def test_statistics_are_the_decoder_tokens_and_final_states():
    model = tiny_whisper()  # no dropout: training forwards as evaluation
    stats = TokenStatistics(model.model.decoder, vocabulary=60)
    batches = [training_forward(model, seed) for seed in (1, 2)]
    model.eval()
    with torch.no_grad():  # evaluation forwards are not counted
        states = [
            model.model(input_features=f, decoder_input_ids=i)
            .last_hidden_state.reshape(-1, 16)
            .double()
            for f, i in batches
        ]
    stats.remove()
    ids = torch.cat([i.flatten() for _, i in batches])
    assert stats.counts.tolist() == torch.bincount(ids, minlength=60).tolist()
    flat = torch.cat(states)
    assert stats.states == len(flat) == 28
    assert torch.allclose(stats.moment(), flat.T @ flat / len(flat))


def bare_brain(lobe, **more):
    """What the hook reads of a Brain."""
    return SimpleNamespace(
        unwrapped_modules=lambda: lobe, hparams=SimpleNamespace(), **more
    )


def hook_run(calibrated):
    model = tiny_whisper()
    dense = model.model.decoder.embed_tokens.weight.detach().clone()
    lobe = lobe_of(model.model)
    brain = bare_brain(lobe)
    hook = TokenTableLowRank(4, calibrated=calibrated)
    hook.on_fit_start(brain)
    watcher = TokenStatistics(model.model.decoder, vocabulary=60)
    training_forward(model, seed=3)
    watcher.remove()
    assert hook.on_train_epoch_end(brain, 1)
    assert not hook.on_train_epoch_end(brain, 2)
    return model.model.decoder.embed_tokens, dense, watcher, hook


@pytest.mark.parametrize("calibrated", [True, False])
def test_hook_factorises_the_table_once(calibrated):
    table, dense, watcher, hook = hook_run(calibrated)
    assert isinstance(table, LowRankEmbedding) and table.rank == 4
    expected = LowRankEmbedding.from_embedding(
        nn.Embedding.from_pretrained(dense),
        4,
        watcher.row_weights() if calibrated else None,
        watcher.moment() if calibrated else None,
    )
    assert torch.allclose(table.weight, expected.weight, atol=1e-5)
    assert hook.state_dict() == {"done": True}


def test_a_span_schedule_factorises_after_its_optimizer_step():
    model = tiny_whisper()
    lobe = lobe_of(model.model)
    brain = bare_brain(lobe, total_optimizer_steps=4)
    hook = TokenTableLowRank(4, schedule=Gradual(steps=1, span=[0.5, 0.5]))
    hook.on_fit_start(brain)
    done = []
    for step in range(1, 5):
        hook.on_batch_start(brain)
        training_forward(model, seed=step)
        brain.optimizer_step = step
        done.append(hook.on_optimizer_step(brain))
    assert done == [False, True, False, False]
    assert model.model.decoder.embed_tokens.rank == 4


def test_hook_needs_training_batches_and_a_table():
    lobe = lobe_of(tiny_whisper().model)
    brain = bare_brain(lobe)
    hook = TokenTableLowRank(4)
    hook.on_fit_start(brain)
    with pytest.raises(ValueError, match="no training batch reached"):
        hook.on_train_epoch_end(brain, 1)
    with pytest.raises(ValueError, match="low_rank_embedding"):
        TokenTableLowRank(4).on_fit_start(bare_brain(nn.Linear(2, 2)))
    untouched = TokenTableLowRank(None)
    untouched.on_fit_start(brain)
    assert not untouched.on_train_epoch_end(brain, 1)


@pytest.mark.parametrize(
    "options, match",
    [
        ({"rank": 0}, "rank must be"),
        ({"rank": 4, "calibrated": "yes"}, "calibrated must be true or false"),
    ],
)
def test_bad_options_name_the_key(options, match):
    with pytest.raises(ValueError, match=match):
        TokenTableLowRank(**options)


def test_bad_statistics_are_refused():
    dense = nn.Embedding(5, 3)
    with pytest.raises(ValueError, match="row_weights must be 5 positive"):
        LowRankEmbedding.from_embedding(dense, 2, torch.zeros(5))
    with pytest.raises(ValueError, match="state_moment must be 3 x 3"):
        LowRankEmbedding.from_embedding(dense, 2, None, torch.eye(2))


def test_ddp_processes_factorise_alike_on_all_their_batches(tmp_path):
    """Each process trains on its own batch; the statistics are summed, so
    both get the factors of the two batches together (each alone would
    get others)."""
    table0, table1 = run_two_processes(__file__, tmp_path)
    assert torch.equal(table0, table1)
    model = tiny_whisper()
    dense = nn.Embedding.from_pretrained(
        model.model.decoder.embed_tokens.weight.detach().clone()
    )
    stats = TokenStatistics(model.model.decoder, vocabulary=60)
    for rank in (0, 1):
        training_forward(model, seed=10 + rank)
    stats.remove()
    both = LowRankEmbedding.from_embedding(
        dense, 4, stats.row_weights(), stats.moment()
    )
    assert torch.allclose(table0, both.weight, atol=1e-5)


if __name__ == "__main__":
    import speechbrain as sb

    _, run_opts, _ = sb.parse_arguments(
        ["x.yaml", "--noprogressbar", "--distributed_backend=gloo"]
    )
    sb.utils.distributed.ddp_init_group(run_opts)
    rank = torch.distributed.get_rank()
    model = tiny_whisper()
    lobe = lobe_of(model.model)
    hook = TokenTableLowRank(4)
    hook.on_fit_start(bare_brain(lobe))
    training_forward(model, seed=10 + rank)
    hook.on_train_epoch_end(bare_brain(lobe), 1)
    table = model.model.decoder.embed_tokens.weight.detach()
    torch.save(table, f"{sys.argv[1]}/rank{rank}.pt")
