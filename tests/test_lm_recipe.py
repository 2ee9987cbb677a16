"""The LM recipe end to end on a few hundred grammar sentences."""

import importlib.util
import json
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
from hyperpyyaml import load_hyperpyyaml

from sb_prune.core.saved_model import load_exported
from sb_prune.nn import LowRankLinear
from sb_prune.rescoring import LMRescorer

RECIPE = Path(__file__).resolve().parents[1] / "recipes/LibriSpeech/LM"
TINY = [
    "--train_sentences=300",
    "--valid_sentences=40",
    "--test_sentences=40",
    "--d_model=32",
    "--d_ffn=64",
    "--num_layers=2",
    "--number_of_epochs=4",
    "--batch_size=64",
    "--warmup_steps=2",
    "--noprogressbar",
]


def _recipe():
    spec = importlib.util.spec_from_file_location(
        "lm_recipe", RECIPE / "train.py"
    )
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _run(hparams, out, *extra):
    argv = [str(RECIPE / "hparams" / hparams), f"--output_folder={out}"]
    brain = _recipe().main(argv + TINY + list(extra))
    results = json.loads((out / "results.json").read_text())
    return brain, results


def _fresh_model(hparams, out, *extra):
    overrides = [arg[2:].replace("=", ": ") for arg in TINY[:-1] + list(extra)]
    overrides.append(f"output_folder: {out / 'fresh'}")
    with open(RECIPE / "hparams" / hparams) as handle:
        return load_hyperpyyaml(handle, "\n".join(overrides))["model"]


@pytest.fixture(scope="module")
def pruned_lm_run(tmp_path_factory):
    """A finished tiny run of the incremental-pruning LM recipe."""
    out = tmp_path_factory.mktemp("lm_recipe") / "activation"
    brain, results = _run(
        "transformer_lm_incremental.yaml", out, "--criterion=activation"
    )
    return out, brain, results


def test_incremental_pruning_recipe(pruned_lm_run, tmp_path):
    out, brain, results = pruned_lm_run
    dense_params = sum(
        p.numel()
        for p in _fresh_model("transformer_lm.yaml", tmp_path).parameters()
    )
    assert results["params"] < 0.7 * dense_params
    assert 1.0 < results["test_ppl"] < 30.0
    steps = results["history"][0]["history"]
    assert [step["epoch"] for step in steps] == [2, 3, 4]
    # The exported LM loads into a freshly built model and scores text.
    model = _fresh_model("transformer_lm_incremental.yaml", tmp_path)
    load_exported(model, out / "lm")
    assert (out / "lm" / "tokenizer.model").exists()
    tokens = torch.tensor([[1, 5, 6, 7]])
    reference = brain.modules.model.eval()(tokens)
    assert torch.allclose(model.eval()(tokens), reference, atol=1e-5)


def test_rescorer_uses_the_exported_lm(pruned_lm_run, tmp_path):
    _check_rescorer(pruned_lm_run[0] / "lm", tmp_path)


@pytest.mark.slow
def test_asr_recipe_rescores_with_the_pruned_lm(
    pruned_lm_run, tiny_corpus, tmp_path
):
    from recipe_runs import RECIPE as ASR_RECIPE
    from recipe_runs import (
        finished_run,
        reference_words,
        tiny_args,
        wer_file_counts,
    )

    dense = finished_run("conformer_ctc.yaml", tiny_corpus, tmp_path)
    lm = [f"--lm_{key}" for key in ("d_model=32", "d_ffn=64", "num_layers=2")]
    command = [
        sys.executable,
        "train.py",
        "hparams/conformer_ctc_lm_rescoring.yaml",
        *tiny_args(tiny_corpus, tmp_path),
        "--test_only",
        f"--lm_folder={pruned_lm_run[0] / 'lm'}",
        "--lm_name=pruned",
        *lm,
    ]
    run = subprocess.run(
        command, cwd=ASR_RECIPE, capture_output=True, text=True, timeout=300
    )
    assert run.returncode == 0, run.stdout[-2000:] + run.stderr[-3000:]
    rescored = json.loads((tmp_path / "results_pruned.json").read_text())
    assert rescored["params"] == dense["params"]
    # Each WER is that of its own WER file, over every test word.
    words = reference_words(tmp_path)
    for results, wer_file in (
        (rescored, "wer_pruned_test-clean.txt"),
        (dense, "wer_test-clean.txt"),
    ):
        errors, scored = wer_file_counts(tmp_path / wer_file)
        assert scored == words > 0
        wer = results["test-clean"]["WER"]
        assert wer == pytest.approx(100 * errors / words)


def _check_rescorer(lm_folder, tmp_path):
    """The rescorer loads the exported LM and decodes CTC outputs."""
    import sentencepiece

    model = _fresh_model("transformer_lm_incremental.yaml", tmp_path)
    rescorer = LMRescorer(model, lm_folder, lm_weight=0.0, nbest=4)
    tokenizer = SimpleNamespace(
        sp=sentencepiece.SentencePieceProcessor(
            model_file=str(lm_folder / "tokenizer.model")
        )
    )
    log_probs = torch.randn(2, 12, 32).log_softmax(-1)
    lens = torch.tensor([1.0, 0.75])
    plain = rescorer(log_probs, lens, tokenizer)
    pieces = tokenizer.sp.vocab_size()
    top = rescorer._searcher(log_probs[..., :pieces], lens)
    assert plain == [hyps[0].text.split(" ") for hyps in top]
    scores = rescorer.lm_scores(["WHERE IS THE RIVER", "REVIR EHT SI"])
    assert scores.shape == (2,) and torch.all(scores < 0)
    rescorer.lm_weight = 1.0
    assert len(rescorer(log_probs, lens, tokenizer)) == 2


def test_low_rank_recipe_delivers_three_sizes(tmp_path):
    out = tmp_path / "low_rank"
    _, results = _run("transformer_lm_low_rank.yaml", out)
    stages = sorted((out / "stages").iterdir())
    assert [s.name for s in stages] == [
        "compression_0.25",
        "compression_0.50",
        "compression_0.75",
    ]
    sizes = []
    for stage in stages:
        model = _fresh_model("transformer_lm_low_rank.yaml", tmp_path)
        load_exported(model, stage)
        sizes.append(sum(p.numel() for p in model.parameters()))
        ranks = {
            m.rank for m in model.modules() if isinstance(m, LowRankLinear)
        }
        assert ranks and max(ranks) < 32
    assert sizes == sorted(sizes, reverse=True)
    assert results["params"] == sizes[-1]


def test_bad_criterion_name_is_refused(tmp_path):
    with pytest.raises(ValueError, match="criterion: unknown name 'l1'"):
        _run("transformer_lm_one_shot.yaml", tmp_path / "bad", "--criterion=l1")
