"""Multiply-accumulates of a Whisper transcription, end to end.

A greedy transcription runs the encoder once on its 30 s window, then the
decoder once per token it writes, each step on the new token only with the
keys and values of the earlier ones cached (its self-attention grows with
the tokens so far), cross-attending to every encoder frame (their keys and
values are projected once, at the first step). An encoder-only count
misses the decoder, and one without the attention products
(``Q K^T``, ``A V``) misses what grows with the sequence lengths:
:func:`transcription_macs` counts all of it
(:func:`sb_prune.core.profiling.count_macs`) on the model itself, pruned
or not.

Authors
 * sb_prune developers
"""

import inspect

import torch

from sb_prune.core.profiling import count_macs
from sb_prune.families.whisper import whisper_stack


def _scorer(decoder):
    """``hidden -> token scores`` with the decoder's token table."""
    table = decoder.embed_tokens
    if hasattr(table, "logits"):  # LowRankEmbedding
        return table.logits
    return lambda hidden: hidden @ table.weight.T


def transcription_macs(model, prompt, generated):
    """Multiply-accumulates of one greedy transcription, encoder and decoder.

    The encoder runs once on a full window (``2 x max_source_positions``
    frames); the decoder reads the ``prompt`` tokens in one step, then each
    token it wrote but the last, one a step, with its cache: ``generated``
    steps, each scoring the vocabulary for its last position. The cost
    depends on the number of tokens, not on which they are.

    Arguments
    ---------
    model : torch.nn.Module
        SpeechBrain's Whisper lobe or a Hugging Face Whisper (pruned or
        not).
    prompt : int
        Tokens the decoder starts from (``<|startoftranscript|>`` and the
        language, task and timestamp tokens that follow it).
    generated : int
        Tokens the greedy search wrote, the end-of-text token included.

    Returns
    -------
    dict
        ``encoder``, ``decoder`` and ``total`` multiply-accumulates.

    Example
    -------
    >>> import transformers
    >>> config = transformers.WhisperConfig(
    ...     vocab_size=60, num_mel_bins=8, d_model=16, encoder_layers=1,
    ...     decoder_layers=1, encoder_attention_heads=2,
    ...     decoder_attention_heads=2, encoder_ffn_dim=32, decoder_ffn_dim=32,
    ...     max_source_positions=10, max_target_positions=12,
    ...     pad_token_id=0, bos_token_id=0, eos_token_id=0,
    ...     decoder_start_token_id=1,
    ... )
    >>> whisper = transformers.WhisperForConditionalGeneration(config)
    >>> macs = transcription_macs(whisper, prompt=2, generated=3)
    >>> macs["total"] == macs["encoder"] + macs["decoder"]
    True
    >>> longer = transcription_macs(whisper, prompt=2, generated=4)
    >>> longer["decoder"] > macs["decoder"]
    True
    >>> longer["encoder"] == macs["encoder"]
    True
    """
    encoder = whisper_stack(model, "encoder")
    decoder = whisper_stack(model, "decoder")
    score = _scorer(decoder)
    window = torch.zeros(
        1, encoder.config.num_mel_bins, 2 * encoder.config.max_source_positions
    )
    states = []
    encoded = count_macs(lambda: states.append(encoder(window)[0]))

    # transformers 5.2x renamed the cache argument and output
    parameters = inspect.signature(decoder.forward).parameters
    name = "cache" if "cache" in parameters else "past_key_values"

    def decode():
        tokens, cache = torch.zeros(1, prompt, dtype=torch.long), None
        for _ in range(generated):
            out = decoder(
                input_ids=tokens,
                encoder_hidden_states=states[0],
                use_cache=True,
                **{name: cache},
            )
            cache = getattr(out, name)
            score(out.last_hidden_state[:, -1])
            tokens = torch.zeros(1, 1, dtype=torch.long)

    decoded = count_macs(decode)
    return {"encoder": encoded, "decoder": decoded, "total": encoded + decoded}
