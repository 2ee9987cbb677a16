"""Every structural method on a recipe shaped like SpeechBrain's own.

``tests/upstream/`` holds a CTC recipe written in the style of SpeechBrain's
upstream LibriSpeech one: its ``on_evaluate_start`` averages the best
checkpoints and loads them with ``strict=True``, and it keeps checkpoints
with ``save_and_keep_only`` by WER. Each test applies exactly the README's
edits (rename ``Transformer`` to ``Transformer_dense``, append a fragment
of ``hparams/``, ``class ASR(sb_prune.PruningBrain)``), with values tuned
so that the toy run really prunes within four epochs, then trains, tests,
and resumes, and checks that the tested model is the final pruned one.
"""

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from hyperpyyaml import load_hyperpyyaml
from upstream.runs import logged_tests, newest_structure

from sb_prune.core.structure import restore

HERE = Path(__file__).parent
RECIPE = HERE / "upstream"
FRAGMENTS = HERE.parent / "hparams"

pytestmark = pytest.mark.slow


def compose(
    folder,
    fragment=None,
    substitutions=(),
    extra="",
    base="ctc_conformer.yaml",
):
    """The upstream-style hparams file with the README's edits applied.

    ``fragment`` is a file of ``hparams/``, appended after renaming the
    model; ``substitutions`` change values of the fragment (``(old, new)``
    pairs, each of which must occur); ``extra`` is appended as it is.
    """
    text = (RECIPE / "hparams" / base).read_text()
    if fragment is not None:
        text = text.replace("Transformer: !new:", "Transformer_dense: !new:", 1)
        added = (FRAGMENTS / fragment).read_text()
        for old, new in substitutions:
            assert re.search(old, added), old
            added = re.sub(old, new, added)
        text += "\n" + added
    path = Path(folder) / "hparams.yaml"
    path.write_text(text + "\n" + extra)
    return path


def run(hparams_file, corpus, output, *args, check=True, script="train.py"):
    """Run an upstream-style recipe script with PruningBrain as its base."""
    command = [
        sys.executable,
        script,
        str(hparams_file),
        f"--data_folder={corpus}",
        f"--output_folder={output}",
        "--noprogressbar",
        # Keep (and average) every checkpoint, the dense ones too.
        "--avg_checkpoints=10",
        *args,
    ]
    env = dict(os.environ, SB_PRUNE_BRAIN="1", OMP_NUM_THREADS="1")
    done = subprocess.run(
        command,
        cwd=RECIPE,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    if check:
        assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-4000:]
    return done


def model_params(hparams_file, corpus, output, structure=None):
    """Parameters of the recipe's ``model``, reshaped to ``structure``."""
    with open(hparams_file) as handle:
        hparams = load_hyperpyyaml(
            handle, {"data_folder": str(corpus), "output_folder": str(output)}
        )
    modules = torch.nn.ModuleDict(hparams["modules"])
    if structure is not None:
        restore(modules, structure)
    return sum(p.numel() for p in hparams["model"].parameters())


def check_pruned_and_tested(hparams_file, corpus, output):
    """The model tested is the final structure, smaller than dense."""
    (tested,) = logged_tests(output)
    final = newest_structure(output)
    dense = model_params(hparams_file, corpus, output)
    final_params = model_params(hparams_file, corpus, output, final)
    assert final_params < dense
    assert tested["params"] == final_params
    return tested


def encoded_by_the_run(output, corpus):
    """The run's evaluated model, three test utterances and its encoding.

    Returns ``(modules, wav paths, signals, lengths, encoder output)``,
    computed with the run's own blocks (the reference for exports).
    """
    from speechbrain.dataio.batch import PaddedBatch
    from speechbrain.dataio.dataio import read_audio

    from sb_prune.deploy.pretrained import load_model

    run_model = load_model(output)  # the evaluated checkpoints
    torch.nn.ModuleDict(run_model["modules"]).eval()
    wavs = sorted(Path(corpus, "test-clean").rglob("*.flac"))[:3]
    signals, lengths = PaddedBatch(
        [{"sig": read_audio(str(w))} for w in wavs]
    ).sig
    with torch.no_grad():
        feats = run_model["normalize"](
            run_model["compute_features"](signals), lengths
        )
        encoded = run_model["Transformer"].encode(
            run_model["CNN"](feats), lengths
        )
    return run_model, wavs, signals, lengths, encoded


def check_export(output, folder, corpus):
    """The export loads in EncoderASR and computes what the run tested."""
    from speechbrain.inference.ASR import EncoderASR

    from sb_prune.deploy.pretrained import export_pretrained

    export_pretrained(output, folder)
    asr = EncoderASR.from_hparams(source=str(folder), savedir=str(folder))
    run_model, wavs, signals, lengths, encoded = encoded_by_the_run(
        output, corpus
    )
    with torch.no_grad():
        exported = asr.encode_batch(signals, lengths)
        expected = run_model["log_softmax"](run_model["ctc_lin"](encoded))
    assert torch.allclose(exported, expected, atol=1e-5)
    assert (
        asr.transcribe_file(str(wavs[0]))
        == asr.transcribe_batch(signals[:1], lengths[:1] / lengths[0])[0][0]
    )


def check_resume(hparams_file, corpus, output, tested, script="train.py"):
    """Running again (and with --test_only) tests the same model."""
    run(hparams_file, corpus, output, script=script)
    run(hparams_file, corpus, output, "--test_only", script=script)
    first, again, test_only = logged_tests(output)
    assert test_only == again == first == tested


CASES = {
    "adaptive_dropout": (
        "adaptive_dropout.yaml",
        [
            ("init_retention: 0.95", "init_retention: 0.6"),
            ("regularization_weight: 0.00003", "regularization_weight: 0.01"),
            ("logit_scale: 10.0", "logit_scale: 50.0"),
            ("min_units: 4", "min_units: 2"),
            (r"ramp_epochs: .*", "ramp_epochs: 1"),
        ],
        "",
        (),
    ),
    "criteria_grad_accumulation": (
        "criterion_pruning.yaml",
        [(r"start_epoch: .*", "start_epoch: 2"), (r"steps: 3", "steps: 2")],
        "",
        ("--grad_accumulation_factor=2",),
    ),
    "low_rank_bf16": (
        "low_rank.yaml",
        [(r"start_epoch: .*", "start_epoch: 2"), (r"every: 2", "every: 1")],
        "",
        ("--precision=bf16",),
    ),
    "layer_cut": (
        None,
        [],
        "prune_hooks:\n"
        "    - !new:sb_prune.hooks.LayerCut\n"
        "        rule: first\n"
        "        n_layers: 2\n"
        "        at_epoch: 2\n",
        (),
    ),
    "i3d": ("i3d.yaml", [(r"target: 0.5 ", "target: 0.4 ")], "", ()),
    "criteria_two_optimizers": (
        "criterion_pruning.yaml",
        [(r"start_epoch: .*", "start_epoch: 2"), (r"steps: 3", "steps: 2")],
        "frontend_opt_class: !name:torch.optim.Adam\n    lr: 0.001\n",
        (),
    ),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_upstream_recipe_prunes_tests_the_pruned_model_and_resumes(
    case, tiny_corpus, tmp_path
):
    fragment, substitutions, extra, args = CASES[case]
    hparams_file = compose(tmp_path, fragment, substitutions, extra)
    output = tmp_path / "run"
    run(hparams_file, tiny_corpus, output, *args)
    if case == "i3d":
        # Dynamic depth skips modules per utterance; it removes nothing.
        (tested,) = logged_tests(output)
        dense = model_params(hparams_file, tiny_corpus, output)
        assert tested["params"] == dense
    else:
        tested = check_pruned_and_tested(hparams_file, tiny_corpus, output)
    check_resume(hparams_file, tiny_corpus, output, tested)
    check_export(output, tmp_path / "exported", tiny_corpus)


def test_resuming_without_a_hook_state_is_refused(tiny_corpus, tmp_path):
    fragment, substitutions, extra, args = CASES["criteria_grad_accumulation"]
    hparams_file = compose(tmp_path, fragment, substitutions, extra)
    output = tmp_path / "run"
    run(hparams_file, tiny_corpus, output)
    renamed = hparams_file.read_text().replace(
        "criterion: taylor", "criterion: taylor\n        name: second", 1
    )
    hparams_file.write_text(renamed)
    done = run(hparams_file, tiny_corpus, output, check=False)
    assert done.returncode != 0
    assert (
        "no state for the prune_hooks ['second']" in done.stdout + done.stderr
    )


def test_swapping_a_linear_for_a_low_rank_one(tiny_corpus, tmp_path):
    """The other way users work: swap one class in the hparams file."""
    hparams_file = compose(
        tmp_path,
        extra="prune_hooks:\n"
        "    - !new:sb_prune.hooks.LowRankCompression\n"
        "        schedule: !new:sb_prune.schedules.OneShot\n"
        "            target: 0.5\n"
        "            epoch: 2\n",
    )
    text = hparams_file.read_text()
    swapped = text.replace(
        "ctc_lin: !new:speechbrain.nnet.linear.Linear\n",
        "ctc_lin: !new:sb_prune.nn.LowRankLinear\n    rank: 16\n",
    )
    assert swapped != text
    hparams_file.write_text(swapped)
    output = tmp_path / "run"
    run(hparams_file, tiny_corpus, output)
    tested = check_pruned_and_tested(hparams_file, tiny_corpus, output)
    assert newest_structure(output)["ctc_lin"]["rank"] == 8
    check_resume(hparams_file, tiny_corpus, output, tested)
    check_export(output, tmp_path / "exported", tiny_corpus)


def test_encoder_decoder_recipe_prunes_both_and_exports(tiny_corpus, tmp_path):
    """Joint CTC-attention Transformer: criteria prune encoder and decoder;
    the export loads in EncoderDecoderASR and decodes like the run."""
    from speechbrain.inference.ASR import EncoderDecoderASR

    from sb_prune.deploy.pretrained import export_pretrained

    fragment, substitutions, _, _ = CASES["criteria_two_optimizers"]
    hparams_file = compose(
        tmp_path, fragment, substitutions, base="transformer_seq2seq.yaml"
    )
    output = tmp_path / "run"
    run(hparams_file, tiny_corpus, output, script="train_seq2seq.py")
    final = newest_structure(output)
    assert any(".decoder." in path for path in final)
    tested = check_pruned_and_tested(hparams_file, tiny_corpus, output)
    check_resume(
        hparams_file, tiny_corpus, output, tested, script="train_seq2seq.py"
    )
    folder = tmp_path / "exported"
    summary = export_pretrained(output, folder)
    assert summary["interface"] == "EncoderDecoderASR"
    asr = EncoderDecoderASR.from_hparams(
        source=str(folder), savedir=str(folder)
    )
    run_model, _, signals, lengths, encoded = encoded_by_the_run(
        output, tiny_corpus
    )
    with torch.no_grad():
        exported = asr.encode_batch(signals, lengths)
        hyps, _, _, _ = run_model["valid_search"](encoded, lengths)
        _, exported_tokens = asr.transcribe_batch(signals, lengths)
    assert torch.allclose(exported, encoded, atol=1e-5)
    assert [list(h) for h in hyps] == [list(t) for t in exported_tokens]
