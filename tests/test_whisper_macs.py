"""Whisper's multiply-accumulates against their closed form, attention
products included."""

import pytest
import torch
from helpers import tiny_whisper

from sb_prune.core.profiling import count_macs
from sb_prune.core.surgery import apply_plan
from sb_prune.families.whisper.macs import transcription_macs

pytest.importorskip("transformers")
#: tiny_whisper's sizes: width, mel bins, vocabulary
WIDTH, MELS, VOCAB = 16, 8, 60
#: encoder frames after the strided convolution: long enough for the CPU
#: attention kernel that torch's FLOP counter has no formula for
FRAMES = 300


def encoder_macs(layers):
    """Closed form of the encoder on a full window.

    ``layers``: per layer, its attention width (heads x head width) and
    FFN width.
    """
    d, t = WIDTH, FRAMES
    macs = MELS * d * 3 * 2 * t + d * d * 3 * t  # the two convolutions
    for attention, ffn in layers:
        macs += 4 * d * attention * t  # query, key, value, output
        macs += 2 * t * t * attention  # Q K^T and A V
        macs += 2 * d * ffn * t
    return macs


def decoder_macs(layers, prompt, generated):
    """Closed form of the decoder's greedy steps with a key-value cache:
    the prompt in one step, then one token a step; the encoder frames'
    cross-attention keys and values projected once."""
    d, t = WIDTH, FRAMES
    macs = len(layers) * 2 * d * d * t
    seen = 0
    for step in range(generated):
        new = prompt if step == 0 else 1
        seen += new
        for ffn in layers:
            macs += 4 * d * d * new + 2 * new * seen * d  # self-attention
            macs += 2 * d * d * new + 2 * new * t * d  # cross-attention
            macs += 2 * d * ffn * new
        macs += d * VOCAB  # scores of the last position
    return macs


def test_count_macs_counts_whisper_attention_products():
    model = tiny_whisper(max_source_positions=FRAMES)
    encoder = model.model.encoder
    window = torch.rand(1, MELS, 2 * FRAMES)
    assert count_macs(encoder, window) == encoder_macs([(16, 32), (16, 32)])


def test_transcription_macs_is_the_closed_form_of_the_greedy_steps():
    model = tiny_whisper(max_source_positions=FRAMES)
    macs = transcription_macs(model, prompt=4, generated=7)
    assert macs["encoder"] == encoder_macs([(16, 32), (16, 32)])
    assert macs["decoder"] == decoder_macs([32, 32], prompt=4, generated=7)
    assert macs["total"] == macs["encoder"] + macs["decoder"]


def test_transcription_macs_of_a_pruned_whisper():
    model = tiny_whisper(max_source_positions=FRAMES)
    encoder, decoder = model.model.encoder, model.model.decoder
    apply_plan(encoder.layers[0].self_attn, {"": {"heads": torch.tensor([1])}})
    apply_plan(encoder.layers[1], {"": {"hidden": torch.arange(20)}})
    apply_plan(decoder, {"": {"layers": [1]}})
    macs = transcription_macs(model, prompt=3, generated=5)
    assert macs["encoder"] == encoder_macs([(8, 32), (16, 20)])
    assert macs["decoder"] == decoder_macs([32], prompt=3, generated=5)
