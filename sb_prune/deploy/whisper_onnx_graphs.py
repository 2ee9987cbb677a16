"""A (pruned) Whisper as three ONNX graphs with an explicit key/value cache.

:func:`export_whisper_graphs` writes, for a Hugging Face Whisper:

* ``encoder.onnx``: ``mel`` (batch, mel bins, frames) to ``states``
  (batch, positions, width), the encoder as it is;
* ``cross_kv.onnx``: ``states`` to each decoder layer's cross-attention
  keys and values, ``cross_key_<i>`` and ``cross_value_<i>`` (batch,
  heads, positions, head width), computed once per utterance;
* ``decoder.onnx``: ``tokens`` (batch, new), each layer's self-attention
  cache ``self_key_<i>``, ``self_value_<i>`` (batch, heads, past, head
  width; ``past`` may be 0) and the cross keys and values, to ``logits``
  (batch, vocabulary) of the last new token and the grown cache
  ``new_self_key_<i>``, ``new_self_value_<i>`` (past + new positions).

The decoder step (:class:`DecoderStep`) computes Hugging Face's
``WhisperDecoder`` from its submodules, reading each attention block's own
head count, so that pruned models (FFN widths, head counts, layers that
differ per layer; low-rank factors; a low-rank token table, which scores
through its factors) export as they are. Each graph is checked under ONNX
Runtime against PyTorch on inputs other than the export's.

Authors
 * sb_prune developers
"""

from pathlib import Path

import torch

from sb_prune.deploy.onnx import onnx_program, ort_difference

#: The graphs :func:`export_whisper_graphs` writes, by role.
GRAPHS = {
    "encoder": "encoder.onnx",
    "cross_kv": "cross_kv.onnx",
    "decoder": "decoder.onnx",
}


def _split_heads(attention, x):
    """(batch, length, heads * head width) to (batch, heads, length, hw)."""
    batch, length = x.shape[:2]
    return x.view(batch, length, -1, attention.head_dim).transpose(1, 2)


def _attend(attention, queries, keys, values, mask=None):
    """A Whisper attention block's output from its cached keys and values."""
    scores = _split_heads(attention, queries * attention.scaling)
    scores = scores @ keys.transpose(-1, -2)
    if mask is not None:
        scores = scores.masked_fill(mask, float("-inf"))
    mixed = scores.softmax(dim=-1) @ values
    batch, _, length, _ = mixed.shape
    return attention.out_proj(mixed.transpose(1, 2).reshape(batch, length, -1))


class EncoderGraph(torch.nn.Module):
    """A Whisper encoder returning its last hidden states only.

    Arguments
    ---------
    encoder : torch.nn.Module
        Hugging Face ``WhisperEncoder``.
    """

    def __init__(self, encoder):
        super().__init__()
        self.encoder = encoder

    def forward(self, mel):
        """(batch, mel bins, frames) to (batch, positions, width)."""
        return self.encoder(mel).last_hidden_state


class CrossKeysValues(torch.nn.Module):
    """Each decoder layer's cross-attention keys and values.

    Arguments
    ---------
    decoder : torch.nn.Module
        Hugging Face ``WhisperDecoder``.
    """

    def __init__(self, decoder):
        super().__init__()
        self.decoder = decoder

    def forward(self, states):
        """Encoder states to ``(key_0, value_0, key_1, ...)``."""
        out = []
        for layer in self.decoder.layers:
            attention = layer.encoder_attn
            out.append(_split_heads(attention, attention.k_proj(states)))
            out.append(_split_heads(attention, attention.v_proj(states)))
        return tuple(out)


class DecoderStep(torch.nn.Module):
    """Whisper's decoder on new tokens, given every layer's cache.

    Arguments
    ---------
    decoder : torch.nn.Module
        Hugging Face ``WhisperDecoder`` (pruned or not).

    Example
    -------
    >>> from transformers import WhisperConfig
    >>> from transformers.models.whisper.modeling_whisper import (
    ...     WhisperDecoder,
    ... )
    >>> config = WhisperConfig(
    ...     vocab_size=20, d_model=8, decoder_layers=1,
    ...     decoder_attention_heads=2, decoder_ffn_dim=16,
    ...     max_target_positions=8, pad_token_id=0, bos_token_id=0,
    ...     eos_token_id=0, decoder_start_token_id=1,
    ... )
    >>> decoder = WhisperDecoder(config).eval()
    >>> states = torch.randn(1, 5, 8)
    >>> cross = CrossKeysValues(decoder)(states)
    >>> empty = torch.zeros(1, 2, 0, 4)
    >>> tokens = torch.tensor([[3, 4, 5]])
    >>> logits, key, value = DecoderStep(decoder)(tokens, empty, empty, *cross)
    >>> key.shape
    torch.Size([1, 2, 3, 4])
    >>> hidden = decoder(tokens, encoder_hidden_states=states)[0][:, -1]
    >>> expected = hidden @ decoder.embed_tokens.weight.T
    >>> torch.allclose(logits, expected, atol=1e-5)
    True
    """

    def __init__(self, decoder):
        super().__init__()
        self.decoder = decoder

    def forward(self, tokens, *caches):
        """One step: new tokens and the caches to logits and grown caches.

        ``(tokens, self_key_0, self_value_0, ..., cross_key_0, ...)`` to
        ``(logits, new_self_key_0, new_self_value_0, ...)``.
        """
        decoder = self.decoder
        layers = len(decoder.layers)
        own, cross = caches[: 2 * layers], caches[2 * layers :]
        past, new = own[0].shape[2], tokens.shape[1]
        positions = decoder.embed_positions.weight[past : past + new]
        x = decoder.embed_tokens(tokens) + positions
        # New token i sees the cache and new tokens 0..i.
        mask = torch.arange(past + new) > past + torch.arange(new)[:, None]
        grown = []
        for index, layer in enumerate(decoder.layers):
            attention = layer.self_attn
            h = layer.self_attn_layer_norm(x)
            keys = torch.cat(
                [own[2 * index], _split_heads(attention, attention.k_proj(h))],
                dim=2,
            )
            values = torch.cat(
                [
                    own[2 * index + 1],
                    _split_heads(attention, attention.v_proj(h)),
                ],
                dim=2,
            )
            grown += [keys, values]
            x = x + _attend(attention, attention.q_proj(h), keys, values, mask)
            attention = layer.encoder_attn
            h = layer.encoder_attn_layer_norm(x)
            x = x + _attend(
                attention,
                attention.q_proj(h),
                cross[2 * index],
                cross[2 * index + 1],
            )
            h = layer.final_layer_norm(x)
            x = x + layer.fc2(layer.activation_fn(layer.fc1(h)))
        last = decoder.layer_norm(x[:, -1])
        table = decoder.embed_tokens
        if hasattr(table, "logits"):  # a low-rank table scores by factors
            logits = table.logits(last)
        else:
            logits = last @ table.weight.T
        return (logits.float(), *grown)


def _names(prefix, layers):
    return [
        f"{prefix}{kind}_{index}"
        for index in range(layers)
        for kind in ("key", "value")
    ]


def _decoder_examples(decoder, states, past, new, seed):
    """Tokens, an own cache of ``past`` positions and the cross cache."""
    generator = torch.Generator().manual_seed(seed)
    batch = states.shape[0]
    tokens = torch.randint(
        decoder.config.vocab_size, (batch, new), generator=generator
    )
    own = []
    for layer in decoder.layers:
        attention = layer.self_attn
        shape = (batch, attention.num_heads, past, attention.head_dim)
        own += [torch.randn(shape, generator=generator) for _ in range(2)]
    with torch.no_grad():
        cross = CrossKeysValues(decoder)(states)
    return (tokens, *own, *cross)


def export_whisper_graphs(model, folder, atol=1e-4):
    """Write a Whisper's encoder, cross-cache and decoder-step graphs.

    Arguments
    ---------
    model : torch.nn.Module
        Hugging Face ``WhisperForConditionalGeneration`` (or
        ``WhisperModel``), pruned or not, in eval mode.
    folder : str or pathlib.Path
        Where to write :data:`GRAPHS` (created if missing).
    atol : float
        Largest difference allowed between ONNX Runtime and PyTorch.

    Returns
    -------
    dict
        Per part, the layers, the heads of each attention block and the
        largest difference found; the decoder's ``past=0`` case (the
        prompt) and ``past>0`` case (one token) are both checked.

    Raises
    ------
    ValueError
        When a graph cannot be exported or does not reproduce PyTorch.
    """
    core = getattr(model, "model", model)
    encoder, decoder = core.encoder.eval(), core.decoder.eval()
    frames = 2 * encoder.config.max_source_positions
    layers = len(decoder.layers)
    # Free axes: batch, new tokens, cached tokens, encoder positions.
    batch = new = past = length = torch.export.Dim.DYNAMIC
    generator = torch.Generator().manual_seed(0)
    mel = torch.randn(
        2, encoder.config.num_mel_bins, frames, generator=generator
    )
    with torch.no_grad():
        states = EncoderGraph(encoder)(mel)
    own_names = _names("self_", layers)
    cross_names = _names("cross_", layers)
    summary = {
        "encoder": {
            "layers": len(encoder.layers),
            "heads": [layer.self_attn.num_heads for layer in encoder.layers],
        },
        "decoder": {
            "layers": layers,
            "self_heads": [
                layer.self_attn.num_heads for layer in decoder.layers
            ],
            "cross_heads": [
                layer.encoder_attn.num_heads for layer in decoder.layers
            ],
        },
        "cross_kv": {},
    }
    specs = {
        "encoder": (
            EncoderGraph(encoder),
            (mel,),
            ({0: batch},),
            ["mel"],
            ["states"],
            [(torch.randn(1, *mel.shape[1:], generator=generator),)],
        ),
        "cross_kv": (
            CrossKeysValues(decoder),
            (states,),
            ({0: batch, 1: length},),
            ["states"],
            cross_names,
            [(torch.randn(1, 7, states.shape[2], generator=generator),)],
        ),
        "decoder": (
            DecoderStep(decoder),
            _decoder_examples(decoder, states, past=3, new=2, seed=0),
            (  # the caches are the step's *args: one tuple
                {0: batch, 1: new},
                (
                    *[{0: batch, 2: past}] * (2 * layers),
                    *[{0: batch, 2: length}] * (2 * layers),
                ),
            ),
            ["tokens", *own_names, *cross_names],
            ["logits", *(f"new_{name}" for name in own_names)],
            [
                _decoder_examples(decoder, states[:1], 0, 4, seed=1),
                _decoder_examples(decoder, states[:1], 5, 1, seed=2),
            ],
        ),
    }
    for part, (module, args, dynamic, inputs, outputs, checks) in specs.items():
        module.eval()
        path = Path(folder) / GRAPHS[part]
        path.parent.mkdir(parents=True, exist_ok=True)
        onnx_program(
            module, args, dynamic, input_names=inputs, output_names=outputs
        ).save(str(path))
        difference = max(ort_difference(path, module, c) for c in checks)
        if difference > atol:
            raise ValueError(
                f"{GRAPHS[part]} differs from PyTorch by {difference:.2e} "
                f"(more than {atol:g})"
            )
        summary[part]["max_abs_diff"] = difference
    return summary
