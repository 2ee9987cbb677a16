"""Compressed Whisper folders: rebuilt exactly, loaded by WhisperASR."""

from pathlib import Path

import pytest
import torch
from helpers import prune_by_magnitude, tiny_whisper

from sb_prune.core.surgery import apply_plan
from sb_prune.deploy.whisper import (
    ENCODER_STRUCTURE,
    ENCODER_WEIGHTS,
    export_whisper,
    load_exported_encoder,
    rebuild_encoder,
)
from sb_prune.methods.criteria.criteria import find_members

transformers = pytest.importorskip("transformers")
SHARED = Path(__file__).resolve().parents[2] / "shared" / "data"


def prune_encoder(encoder, keep=0.75):
    """Magnitude pruning of FFN units and heads, then a layer cut."""
    members = find_members(encoder, ["ffn", "heads"])
    prune_by_magnitude(
        encoder, {m: max(1, int(m.count * keep)) for m in members}
    )
    apply_plan(encoder, {"": {"layers": list(range(len(encoder.layers) - 1))}})


def test_pruned_encoder_round_trips_through_the_folder(tmp_path):
    model = tiny_whisper()
    model.save_pretrained(tmp_path / "dense")
    prune_encoder(model.model.encoder)
    summary = export_whisper(model, tmp_path / "dense", tmp_path / "out")
    assert summary["encoder_params"] < sum(
        p.numel()
        for p in transformers.WhisperForConditionalGeneration.from_pretrained(
            tmp_path / "dense"
        ).model.encoder.parameters()
    )
    fresh = transformers.WhisperForConditionalGeneration.from_pretrained(
        tmp_path / "out"
    ).eval()
    encoder = rebuild_encoder(fresh, tmp_path / "out" / ENCODER_STRUCTURE)
    encoder.load_state_dict(torch.load(tmp_path / "out" / ENCODER_WEIGHTS))
    features = torch.randn(2, 8, 20)
    tokens = torch.tensor([[51, 3, 4], [51, 7, 8]])
    with torch.no_grad():
        expected = model(features, decoder_input_ids=tokens).logits
        got = fresh(features, decoder_input_ids=tokens).logits
        alone = load_exported_encoder(tmp_path / "out")(features)
    assert torch.equal(got, expected)
    assert torch.equal(
        alone.last_hidden_state,
        model.model.encoder(features).last_hidden_state,
    )


def test_compressed_real_whisper_transcribes_as_exported(
    whisper_tiny_en, tmp_path
):
    """The pruned real tiny.en, exported and reloaded through WhisperASR,
    transcribes three real utterances exactly as the in-memory model."""
    folder = SHARED / "librilight" / "1h" / "0" / "clean"
    if not folder.is_dir():
        pytest.skip("real speech not here: ../shared/data (CI has it)")
    from speechbrain.inference.ASR import WhisperASR

    dense = whisper_tiny_en
    asr = WhisperASR.from_hparams(source=str(dense), savedir=str(dense))
    encoder = asr.mods.whisper.model.encoder
    prune_encoder(encoder, keep=0.9)
    out = tmp_path / "pruned"
    summary = export_whisper(asr.mods.whisper, dense, out)
    assert summary["encoder_params"] < 8208384 * 0.8
    reloaded = WhisperASR.from_hparams(source=str(out), savedir=str(out))
    assert len(reloaded.mods.whisper.model.encoder.layers) == 3
    audio = sorted(folder.rglob("*.flac"))[:3]
    for path in audio:
        expected = asr.transcribe_file(str(path))[0].words
        assert reloaded.transcribe_file(str(path))[0].words == expected


def test_low_rank_token_table_scores_like_the_dense_one_and_exports(
    whisper_tiny_en, tmp_path
):
    """tiny.en's decoder token table factorised at full rank decodes real
    speech as the dense table does (through sb_prune's lobe, which scores
    through the factors); at rank 192 the exported folder rebuilds the
    factors and transcribes as the in-memory model."""
    folder = SHARED / "librilight" / "1h" / "0" / "clean"
    if not folder.is_dir():
        pytest.skip("real speech not here: ../shared/data (CI has it)")
    from speechbrain.decoders.seq2seq import S2SWhisperGreedySearcher
    from speechbrain.inference.ASR import WhisperASR

    from sb_prune import convert
    from sb_prune.nn import LowRankEmbedding, WhisperLobe

    dense = whisper_tiny_en
    asr = WhisperASR.from_hparams(source=str(dense), savedir=str(dense))
    wav = sorted(folder.rglob("*.flac"))[0]
    expected = asr.transcribe_file(str(wav))[0].words

    def transcribe(lobe):  # as the folders decode
        search = S2SWhisperGreedySearcher(
            lobe,
            min_decode_ratio=0.0,
            max_decode_ratio=asr.mods.decoder.max_decode_ratio,
            suppress_tokens=list(asr.mods.decoder.suppress_tokens),
        )
        asr.mods.whisper, asr.mods.decoder = lobe, search
        return asr.transcribe_file(str(wav))[0].words

    def lobe():
        return WhisperLobe(str(dense), str(dense), language="english").eval()

    full = convert(
        lobe(),
        low_rank_embedding={"rank": 384},
    )
    assert isinstance(full.model.decoder.embed_tokens, LowRankEmbedding)
    assert transcribe(full) == expected
    low = convert(
        lobe(),
        low_rank_embedding={"rank": 192},
    )
    in_memory = transcribe(low)
    out = tmp_path / "low"
    summary = export_whisper(low, dense, out)
    assert summary["pruned"] == ["decoder"]
    assert summary["decoder_params"] < 29_600_000 - 51864 * 190
    reloaded = WhisperASR.from_hparams(source=str(out), savedir=str(out))
    table = reloaded.mods.whisper.model.decoder.embed_tokens
    assert isinstance(reloaded.mods.whisper, WhisperLobe)
    assert table.rank == 192
    assert reloaded.transcribe_file(str(wav))[0].words == in_memory
