"""Compressed Whisper under ONNX Runtime: graphs, cache, greedy tokens."""

from pathlib import Path

import numpy as np
import pytest
import torch
from helpers import prune_by_magnitude, tiny_whisper

from sb_prune.core.surgery import apply_plan
from sb_prune.methods.criteria.criteria import find_members
from sb_prune.methods.low_rank.embedding import LowRankEmbedding
from sb_prune.methods.low_rank.layer import LowRankLinear

pytest.importorskip("onnxruntime", reason="the onnx extra is not installed")
pytest.importorskip("transformers")

from sb_prune.deploy.whisper_onnx import (  # noqa: E402
    OnnxWhisperGreedy,
)
from sb_prune.deploy.whisper_onnx_graphs import (  # noqa: E402
    export_whisper_graphs,
)

SHARED = Path(__file__).resolve().parents[2] / "shared" / "data"
#: Greedy rules for the tiny model (the end of text a token it decodes
#: often, so that decoding stops on it as well as on the length limits).
RULES = {
    "prompt": [51, 52, 53, 54],
    "suppress": [3, 51, 52, 53, 54],
    "suppress_first": [30, 7],
    "eos": 30,
    "steps": 7,
    "memory_limit": 9,
}


def compressed_whisper():
    """The tiny Whisper, its FFN units pruned to a different width per
    layer, heads to 1 or 2 by block (decoder layers differ, self- from
    cross-attention too), an encoder layer cut, one low-rank FFN matrix
    and a low-rank token table. Its matrices are drawn at unit gain (the
    attention's far above: far from uniform), its biases small, so that
    the tokens depend on the input and on the tokens before them."""
    model = tiny_whisper(encoder_layers=3)
    generator = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for name, param in model.named_parameters():
            if param.dim() >= 2:
                gain = 20 if "proj" in name else 2 if "embed" in name else 1
                param.copy_(
                    torch.randn(param.shape, generator=generator)
                    * gain
                    / param.shape[-1] ** 0.5
                )
            elif name.endswith("bias"):
                param.mul_(0.1)
    kept = {}
    for index, member in enumerate(find_members(model, ["ffn"])):
        kept[member] = 9 + index
    for index, member in enumerate(find_members(model, ["heads"])):
        if index in (0, 3, 6):
            kept[member] = 1
    prune_by_magnitude(model, kept)
    encoder, decoder = model.model.encoder, model.model.decoder
    apply_plan(encoder, {"": {"layers": [0, 2]}})
    decoder.layers[1].fc1 = LowRankLinear.from_linear(decoder.layers[1].fc1, 4)
    decoder.embed_tokens = LowRankEmbedding.from_embedding(
        decoder.embed_tokens, 6
    )
    return model.eval()


def pytorch_greedy(model, mel, rules):
    """Greedy decoding by full forward passes (no cache), the rules'
    suppression and stops: the tokens and the logits of each step."""
    decoder = model.model.decoder
    tokens, scores = [], []
    with torch.no_grad():
        states = model.model.encoder(mel).last_hidden_state
        for step in range(rules["steps"]):
            ids = torch.tensor([rules["prompt"] + tokens])
            hidden = decoder(ids, encoder_hidden_states=states)
            logits = decoder.embed_tokens.logits(hidden[0][0, -1])
            scores.append(logits.clone())
            if step == 0:
                logits[rules["suppress_first"]] = -torch.inf
            logits[rules["suppress"]] = -torch.inf
            if int(logits.argmax()) == rules["eos"]:
                break
            tokens.append(int(logits.argmax()))
            if len(rules["prompt"]) + step >= rules["memory_limit"]:
                break
    return tokens, torch.stack(scores)


def test_compressed_whisper_decodes_under_onnx_runtime_as_in_pytorch(
    tmp_path,
):
    """Encoder, cross keys/values and decoder step export with per-layer
    FFN widths and head counts and low-rank factors; under ONNX Runtime,
    the encoder states and every step's logits (the cache growing from
    empty) stay within 1e-4 of PyTorch and the greedy tokens are equal."""
    model = compressed_whisper()
    summary = export_whisper_graphs(model, tmp_path)
    assert summary["encoder"]["heads"] == [1, 2]
    assert summary["decoder"]["self_heads"] == [1, 2]
    assert summary["decoder"]["cross_heads"] == [2, 1]
    assert max(summary[p]["max_abs_diff"] for p in summary) <= 1e-4
    greedy = OnnxWhisperGreedy(tmp_path, RULES, threads=1)
    lengths = set()
    for seed in range(4):
        mel = torch.randn(
            1, 8, 20, generator=torch.Generator().manual_seed(seed)
        )
        with torch.no_grad():
            states = model.model.encoder(mel).last_hidden_state
        got = torch.from_numpy(greedy.encode(mel))
        assert (got - states).abs().max() <= 1e-4
        tokens, scores = greedy.decode(mel)
        expected_tokens, expected_scores = pytorch_greedy(model, mel, RULES)
        assert tokens == expected_tokens
        lengths.add(len(tokens))
        assert scores.shape == tuple(expected_scores.shape)
        assert np.abs(scores - expected_scores.numpy()).max() <= 1e-4
    assert len(lengths) > 1  # stops on the end of text and on the limit


def test_pruned_real_whisper_transcribes_under_onnx_runtime(
    whisper_tiny_en, tmp_path
):
    """Real tiny.en, 5% of its FFN units pruned by magnitude and one head
    of three attention blocks (encoder self-, decoder self- and
    cross-attention), exported for ONNX Runtime: on two real utterances,
    the ONNX transcriber gives WhisperASR's exact tokens and words (the
    exported folder is the in-memory model: test_whisper_export)."""
    folder = SHARED / "librilight" / "1h" / "0" / "clean"
    if not folder.is_dir():
        pytest.skip("real speech not here: ../shared/data (CI has it)")
    from speechbrain.inference.ASR import WhisperASR

    from sb_prune.deploy.whisper_onnx import (
        export_asr_onnx,
        onnx_whisper_transcriber,
    )

    dense = whisper_tiny_en
    asr = WhisperASR.from_hparams(source=str(dense), savedir=str(dense))
    lobe = asr.mods.whisper
    kept = {m: m.count * 95 // 100 for m in find_members(lobe, ["ffn"])}
    for index, member in enumerate(find_members(lobe, ["heads"])):
        if index in (0, 6, 9):  # encoder 0, decoder 1 self, 2 cross
            kept[member] = member.count - 1
    prune_by_magnitude(lobe, kept)
    summary = export_asr_onnx(asr, tmp_path / "onnx")
    assert summary["encoder"]["heads"] == [5, 6, 6, 6]
    assert summary["decoder"]["self_heads"] == [6, 5, 6, 6]
    assert summary["decoder"]["cross_heads"] == [6, 6, 5, 6]
    assert summary["rules"]["prompt"] == list(asr.mods.decoder.initial_tokens)
    transcribe = onnx_whisper_transcriber(tmp_path / "onnx", threads=1)
    for path in sorted(folder.rglob("*.flac"))[:2]:
        wav = asr.load_audio(str(path))
        expected_words, expected_tokens = asr.transcribe_batch(
            wav.unsqueeze(0), torch.tensor([1.0])
        )
        words, tokens = transcribe(wav)
        assert tokens == [int(t) for t in expected_tokens[0]]
        assert words == expected_words[0]
