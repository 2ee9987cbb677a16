"""Helpers shared by the benchmarks.

The benchmarks run as scripts (``python benchmarks/<name>.py``), which puts
this folder first on ``sys.path``: they ``import common``.

Authors
 * sb_prune developers
"""

import torch
from speechbrain.lobes.models.transformer.TransformerASR import TransformerASR


def conformer(
    d_model,
    nhead,
    num_encoder_layers,
    d_ffn,
    tgt_vocab=32,
    dropout=0.0,
    seed=None,
):
    """A CTC Conformer encoder (TransformerASR, no decoder) like the recipe's.

    Arguments
    ---------
    d_model, nhead, num_encoder_layers, d_ffn : int
        The encoder's sizes (its input size is ``d_model``).
    tgt_vocab : int
        Output vocabulary of the TransformerASR.
    dropout : float
        Dropout of the encoder layers.
    seed : int, optional
        Seeds torch's generator before the weights are drawn.

    Returns
    -------
    TransformerASR
        A new model, in training mode.
    """
    if seed is not None:
        torch.manual_seed(seed)
    return TransformerASR(
        tgt_vocab=tgt_vocab,
        input_size=d_model,
        d_model=d_model,
        nhead=nhead,
        num_encoder_layers=num_encoder_layers,
        num_decoder_layers=0,
        d_ffn=d_ffn,
        dropout=dropout,
        encoder_module="conformer",
        attention_type="RelPosMHAXL",
        normalize_before=True,
        causal=False,
    )
