"""Exported pruned models load and transcribe through SpeechBrain itself."""

import csv
import json
from pathlib import Path

import pytest
import torch
import yaml
from speechbrain.dataio.dataio import read_audio
from speechbrain.inference.ASR import EncoderASR
from speechbrain.utils.metric_stats import ErrorRateStats

from sb_prune.deploy.pretrained import export_pretrained, exported_from
from sb_prune.nn import AdaptiveDropout


def _test_batches(run_folder, data_folder, batch_size):
    """The recipe's test utterances, in its order and batches."""
    with open(run_folder / "test-clean.csv") as handle:
        rows = sorted(
            csv.DictReader(handle), key=lambda r: float(r["duration"])
        )
    for start in range(0, len(rows), batch_size):
        batch = rows[start : start + batch_size]
        wavs = [
            read_audio(r["wav"].replace("$data_root", str(data_folder)))
            for r in batch
        ]
        lengths = torch.tensor([len(w) for w in wavs], dtype=torch.float)
        padded = torch.zeros(len(wavs), int(lengths.max()))
        for i, wav in enumerate(wavs):
            padded[i, : len(wav)] = wav
        yield batch, padded, lengths / lengths.max()


def _test_wer(asr, run_folder, data_folder, batch_size):
    """WER of an exported model on the recipe's test batches."""
    wer = ErrorRateStats()
    for rows, wavs, lens in _test_batches(run_folder, data_folder, batch_size):
        hyps = asr.transcribe_batch(wavs, lens)[0]
        wer.append(
            [r["ID"] for r in rows],
            [h.split(" ") for h in hyps],
            [r["wrd"].split(" ") for r in rows],
        )
    return wer.summarize("error_rate")


def _check_transcribe_file(asr, corpus):
    """transcribe_file reads a file as the recipe's data does, and decodes."""
    wav = _first_test_wav(corpus)
    text = asr.transcribe_file(wav)
    alone = asr.transcribe_batch(read_audio(wav)[None], torch.ones(1))[0]
    assert text.strip() and text == alone[0]


def test_export_round_trip(tiny_adaptive_run, tiny_corpus, tmp_path):
    folder = tmp_path / "exported"
    summary = export_pretrained(tiny_adaptive_run, folder)
    assert exported_from(folder) == Path(tiny_adaptive_run).resolve()
    asr = EncoderASR.from_hparams(source=str(folder), savedir=str(folder))
    assert not any(isinstance(m, AdaptiveDropout) for m in asr.mods.modules())
    exported_params = sum(p.numel() for p in asr.hparams.model.parameters())
    assert exported_params == summary["params"]

    results = json.loads((tiny_adaptive_run / "results.json").read_text())
    assert _test_wer(asr, tiny_adaptive_run, tiny_corpus, 8) == pytest.approx(
        results["test-clean"]["WER"], abs=1e-6
    )
    _check_transcribe_file(asr, tiny_corpus)


def test_export_needs_a_run_folder(tmp_path):
    with pytest.raises(FileNotFoundError, match="is not a recipe run folder"):
        export_pretrained(tmp_path, tmp_path / "out")


def test_report_renders_runs(tiny_adaptive_run, tmp_path):
    from sb_prune.reporting.render import render_report

    results = tmp_path / "results"
    results.mkdir()
    (results / "adaptive").symlink_to(tiny_adaptive_run)
    (results / "lm").mkdir()
    (results / "lm" / "results.json").write_text('{"perplexity": 3.2}')
    report = render_report(results).read_text()
    assert "| adaptive |" in report and "perplexity" in report
    assert (results / "wer_vs_params.png").stat().st_size > 0
    assert (results / "wer_vs_latency.png").stat().st_size > 0
    assert "figures/adaptive_retention.png" in report


def test_report_needs_runs(tmp_path):
    from sb_prune.reporting.render import render_report

    with pytest.raises(FileNotFoundError, match="holds no run"):
        render_report(tmp_path)


def test_compress_a_dense_exported_model(tiny_dense_run, tiny_corpus, tmp_path):
    from sb_prune.cli.compress import compress

    dense = export_pretrained(tiny_dense_run, tmp_path / "dense")
    summary = compress(
        tmp_path / "dense",
        "taylor",
        tiny_corpus,
        tmp_path / "compressed",
        epochs=2,
        overrides={"batch_size": 4, "warmup_steps": 5, "sparsity": 0.5},
    )
    assert summary["export"]["params"] < dense["params"]
    folder = tmp_path / "compressed" / "exported"
    asr = EncoderASR.from_hparams(source=str(folder), savedir=str(folder))
    assert (
        sum(p.numel() for p in asr.hparams.model.parameters())
        == (summary["export"]["params"])
    )
    # The criteria recipe tests in batches of 32.
    run = tmp_path / "compressed" / "run"
    assert _test_wer(asr, run, tiny_corpus, 32) == pytest.approx(
        summary["results"]["test-clean"]["WER"], abs=1e-6
    )
    _check_transcribe_file(asr, tiny_corpus)


def _first_test_wav(corpus):
    return str(sorted((corpus / "test-clean").rglob("*.flac"))[0])


def test_initialize_from_copies_weights_statistics_and_tokenizer(
    tiny_dense_run, tmp_path
):
    from hyperpyyaml import load_hyperpyyaml
    from recipe_runs import RECIPE

    from sb_prune.deploy.pretrained import (
        initialize_from,
        load_model,
        tokenizer_file,
    )

    overrides = yaml.safe_load(
        (RECIPE / "hparams/tiny_overrides.yaml").read_text()
    )
    overrides["output_folder"] = str(tmp_path)
    with open(RECIPE / "hparams/conformer_ctc_criteria.yaml") as handle:
        hparams = load_hyperpyyaml(handle, overrides)
    dense = load_model(tiny_dense_run)
    initialize_from(hparams, tiny_dense_run)
    for name in ("CNN", "ctc_lin"):
        for ours, theirs in zip(
            hparams[name].parameters(), dense[name].parameters()
        ):
            assert torch.equal(ours, theirs)
    assert torch.equal(
        hparams["normalize"].glob_mean, dense["normalize"].glob_mean
    )
    copied = tmp_path / "save" / "32_char.model"
    assert copied.read_bytes() == tokenizer_file(tiny_dense_run).read_bytes()


@pytest.mark.parametrize(
    "argv, message",
    [
        (["--method", "pruning-by-wishes"], "--method 'pruning-by-wishes'"),
        (["--method", "taylor"], "--source"),
    ],
)
def test_compress_cli_errors_name_the_argument(tmp_path, capsys, argv, message):
    from sb_prune.cli import main

    argv = ["compress", "--source", str(tmp_path / "nothing"), *argv]
    with pytest.raises(SystemExit) as exit_info:
        main([*argv, "--data", str(tmp_path)])
    assert exit_info.value.code == 2
    assert message in capsys.readouterr().err


def test_torchscript_export_reproduces_the_pruned_model(
    tiny_adaptive_run, tmp_path
):
    from sb_prune.deploy.pretrained import TORCHSCRIPT, load_model
    from sb_prune.deploy.torchscript import CTCEncoder

    summary = export_pretrained(tiny_adaptive_run, tmp_path, torchscript=True)
    assert summary["torchscript"]["eager_s"] > 0
    traced = torch.jit.load(str(tmp_path / TORCHSCRIPT))
    hparams = load_model(tmp_path)
    model = CTCEncoder.from_hparams(hparams)
    feats, lens = torch.randn(2, 333, hparams["n_mels"]), torch.tensor([1, 0.5])
    with torch.no_grad():
        assert torch.allclose(
            traced(feats, lens), model(feats, lens), atol=1e-5
        )


def test_torchscript_refuses_gated_encoders():
    from speechbrain.lobes.models.transformer.TransformerASR import (
        TransformerASR,
    )

    from sb_prune import convert
    from sb_prune.deploy.torchscript import trace_ctc_encoder

    transformer = TransformerASR(
        8,
        16,
        16,
        2,
        1,
        0,
        32,
        encoder_module="conformer",
        attention_type="RelPosMHAXL",
        normalize_before=True,
    )
    convert(transformer, dynamic_depth={"predictor": "local"})
    hparams = {
        "CNN": torch.nn.Linear(10, 16),
        "Transformer": transformer,
        "ctc_lin": torch.nn.Linear(16, 8),
        "n_mels": 10,
    }
    with pytest.raises(ValueError, match="I3D gated encoders"):
        trace_ctc_encoder(hparams)


def test_runs_without_the_metric_are_not_asr_runs(tiny_adaptive_run):
    from sb_prune.deploy.pretrained import (
        load_evaluated_checkpoints,
        read_hparams,
    )

    hparams = read_hparams(tiny_adaptive_run, "source")
    with pytest.raises(FileNotFoundError, match="records accuracy"):
        load_evaluated_checkpoints(hparams, "accuracy")


def test_report_groups_compressions_by_their_dense_model(tmp_path):
    """Compressions of one dense model are one family; a model trained
    from scratch (the ambient run) is marked apart."""
    from sb_prune.reporting.render import model_families, render_report

    def run(name, init_from=None, wer=10.0, params=100):
        folder = tmp_path / name
        folder.mkdir(parents=True)
        lines = ["seed: 1"]
        if init_from is not None:
            lines.append(f"init_from: {init_from}")
        (folder / "hyperparams.yaml").write_text("\n".join(lines) + "\n")
        results = {"params": params, "test": {"WER": wer}}
        (folder / "results.json").write_text(json.dumps(results))
        return folder

    dense = run("dense", init_from="", params=300)
    # An export elsewhere stands for its run (sb-prune demo's layout).
    export = tmp_path / "elsewhere" / "dense"
    export.mkdir(parents=True)
    header = f"# Exported by sb_prune from {dense}: the run's blocks, then\n"
    (export / "hyperparams.yaml").write_text(header)
    run("taylor/run", init_from=export, wer=12.0, params=150)
    run("low_rank/run", init_from=dense, wer=11.0, params=200)
    run("ambient", wer=30.0, params=50)
    families = model_families(
        {
            name: tmp_path / name
            for name in ("dense", "taylor/run", "low_rank/run", "ambient")
        }
    )
    assert families == {
        "dense": "dense",
        "taylor/run": "dense",
        "low_rank/run": "dense",
        "ambient": "ambient",
    }
    report = render_report(tmp_path, latency=False).read_text()
    assert "| taylor/run | dense |" in report
    assert "| ambient | ambient |" in report
