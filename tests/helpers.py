"""Small models shared by the tests."""

import torch
from speechbrain.lobes.models.transformer.TransformerASR import TransformerASR


def tiny_conformer(layers=2, d_model=16, heads=4, d_ffn=32, seed=0):
    """A CTC-style Conformer TransformerASR (encoder only), in eval mode."""
    torch.manual_seed(seed)
    return TransformerASR(
        tgt_vocab=10,
        input_size=12,
        d_model=d_model,
        nhead=heads,
        num_encoder_layers=layers,
        num_decoder_layers=0,
        d_ffn=d_ffn,
        dropout=0.0,
        encoder_module="conformer",
        attention_type="RelPosMHAXL",
        normalize_before=True,
        causal=False,
    ).eval()


def encode(model, x, lens):
    """Encoder output of a TransformerASR for features x and relative lens."""
    with torch.no_grad():
        return model.encode(x, lens)


def random_batch(batch=3, time=11, feats=12, seed=1):
    """Features and relative lengths with padding in all but one item."""
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(batch, time, feats, generator=gen)
    lens = torch.linspace(1.0, 0.5, batch)
    return x, lens
