"""A plain greedy Whisper decoder, straight from CTranslate2 weights.

The yardstick for the folders :mod:`sb_prune.families.whisper.ctranslate2`
converts: it shares no code with ``transformers`` or SpeechBrain (nor with
the converter's mapping of names), so a converted folder that decodes
through ``WhisperASR`` as this does is right end to end.

* :func:`log_mel`: Whisper's front end (16 kHz audio padded or trimmed to
  30 s, 400-point Hann STFT, hop 160, the power of all frames but the
  last, Slaney mel filters (:func:`mel_filters`), log10, floored at 8
  below the maximum, then ``(x + 4) / 4``);
* :class:`CTranslate2Whisper`: the encoder and decoder computed from the
  variables of ``model.bin`` (pre-norm Transformer layers, exact GELU,
  fused query/key/value projections, token table tied to the output);
* :func:`greedy_tokens`: argmax at each step after the prompt
  (:func:`prompt_tokens`: ``<|startoftranscript|><|notimestamps|>`` for an
  English-only model, with the language and task tokens between them for a
  multilingual one), with the blank and ``<|endoftext|>`` suppressed at the
  first step and Whisper's suppressed tokens at every step (the
  ``suppress_ids`` of the folder's ``config.json`` and the special tokens
  that are not text); stops at ``<|endoftext|>`` or after 224 tokens.

Authors
 * sb_prune developers
"""

import json
import math
from pathlib import Path

import torch

#: Whisper's input: 30 s at 16 kHz.
SAMPLE_RATE = 16000
WINDOW_SAMPLES = 30 * SAMPLE_RATE
N_FFT = 400
HOP = 160
#: Whisper samples at most half its 448 text positions.
MAX_TOKENS = 224
#: The special tokens Whisper never lets the decoder produce as text.
NOT_TEXT = (
    "<|transcribe|>",
    "<|translate|>",
    "<|startoftranscript|>",
    "<|startofprev|>",
    "<|startoflm|>",
    "<|nocaptions|>",
    "<|nospeech|>",
)


def _hz_to_slaney(hz):
    """Slaney's mel scale: linear below 1 kHz, logarithmic above."""
    linear = 3 * hz / 200
    log = 15 + 27 * torch.log(hz.clamp_min(1e-10) / 1000) / math.log(6.4)
    return torch.where(hz < 1000, linear, log)


def _slaney_to_hz(mel):
    linear = 200 * mel / 3
    log = 1000 * torch.exp((mel - 15) * math.log(6.4) / 27)
    return torch.where(mel < 15, linear, log)


def mel_filters(n_mels=80, n_fft=N_FFT, sample_rate=SAMPLE_RATE):
    """Triangular filters on Slaney's mel scale, of unit area (Slaney).

    Arguments
    ---------
    n_mels : int
        Number of filters, from 0 Hz to the Nyquist frequency.
    n_fft : int
        FFT size.
    sample_rate : int
        Hz.

    Returns
    -------
    torch.Tensor
        ``(n_mels, n_fft // 2 + 1)``, float32.

    Example
    -------
    >>> filters = mel_filters()
    >>> filters.shape
    torch.Size([80, 201])
    >>> bool((filters >= 0).all()), bool((filters.sum(1) > 0).all())
    (True, True)
    """
    nyquist = torch.tensor(sample_rate / 2, dtype=torch.float64)
    top = _hz_to_slaney(nyquist)
    edges = _slaney_to_hz(
        torch.linspace(0, float(top), n_mels + 2, dtype=torch.float64)
    )
    bins = torch.linspace(0, float(nyquist), n_fft // 2 + 1).double()
    low, mid, high = edges[:-2, None], edges[1:-1, None], edges[2:, None]
    rising = (bins - low) / (mid - low)
    falling = (high - bins) / (high - mid)
    triangles = torch.minimum(rising, falling).clamp_min(0)
    return (triangles * 2 / (high - low)).float()


def log_mel(audio, filters):
    """Whisper's log-mel features of one utterance (padded to 30 s).

    Arguments
    ---------
    audio : torch.Tensor
        ``(samples,)`` at 16 kHz; trimmed or padded with zeros to 30 s.
    filters : torch.Tensor
        From :func:`mel_filters`.

    Returns
    -------
    torch.Tensor
        ``(n_mels, 3000)``.

    Example
    -------
    >>> features = log_mel(torch.randn(16000), mel_filters())
    >>> features.shape
    torch.Size([80, 3000])
    >>> round(float(features.max() - features.min()), 3)  # the floor
    2.0
    """
    audio = audio.float()[:WINDOW_SAMPLES]
    audio = torch.nn.functional.pad(audio, (0, WINDOW_SAMPLES - len(audio)))
    spectrum = torch.stft(
        audio,
        N_FFT,
        HOP,
        window=torch.hann_window(N_FFT),
        return_complex=True,
    )
    power = spectrum[:, :-1].abs() ** 2
    log = (filters @ power).clamp_min(1e-10).log10()
    log = torch.maximum(log, log.max() - 8)
    return (log + 4) / 4


def greedy_tokens(
    next_logits, prompt, end, suppress=(), suppress_first=(), limit=MAX_TOKENS
):
    """Greedy decoding: the most likely token at each step.

    Arguments
    ---------
    next_logits : callable
        ``next_logits(tokens)``: the logits of the token after ``tokens``
        (a list of ids), a 1-D tensor.
    prompt : list of int
        The tokens decoding starts from.
    end : int
        The token that ends decoding (not returned).
    suppress : sequence of int
        Tokens never produced.
    suppress_first : sequence of int
        Tokens not produced first.
    limit : int
        At most this many tokens.

    Returns
    -------
    list of int
        The tokens after the prompt, without ``end``.

    Example
    -------
    >>> table = torch.eye(5)  # token t is followed by token t
    >>> table[3, 4] = 2.0  # 3 is followed by 4, the end
    >>> step = lambda tokens: table[tokens[-1]]
    >>> greedy_tokens(step, [2], end=4, limit=3)
    [2, 2, 2]
    >>> greedy_tokens(step, [2], end=4, suppress=[2], limit=3)
    [0, 0, 0]
    >>> greedy_tokens(step, [3], end=4)
    []
    >>> greedy_tokens(step, [3], end=4, suppress_first=[4])
    [3]
    """
    suppress, suppress_first = list(suppress), list(suppress_first)
    produced = []
    while len(produced) < limit:
        logits = next_logits(list(prompt) + produced).clone()
        logits[suppress] = -math.inf
        if not produced:
            logits[suppress_first] = -math.inf
        token = int(logits.argmax())
        if token == end:
            break
        produced.append(token)
    return produced


def _norm(x, weights, name):
    return torch.nn.functional.layer_norm(
        x, x.shape[-1:], weights[f"{name}/gamma"], weights[f"{name}/beta"]
    )


def _linear(x, weights, name):
    return x @ weights[f"{name}/weight"].T + weights[f"{name}/bias"]


def _attend(query, key, value, heads, causal=False):
    """Scaled dot-product attention over ``heads`` equal slices."""

    def split(x):
        return x.unflatten(-1, (heads, -1)).transpose(0, 1)

    query, key, value = split(query), split(key), split(value)
    scores = query @ key.transpose(1, 2) / math.sqrt(query.shape[-1])
    if causal:
        future = torch.ones(scores.shape[-2:], dtype=torch.bool).triu(1)
        scores = scores.masked_fill(future, -math.inf)
    return (scores.softmax(-1) @ value).transpose(0, 1).flatten(1)


class CTranslate2Whisper:
    """Whisper's forward pass from the variables of a CTranslate2 model.

    One utterance at a time, float32, self-attention recomputed over all
    the tokens at each step: a yardstick, not a fast decoder.

    Arguments
    ---------
    variables : dict
        ``{name: array}`` of a ``WhisperSpec`` (see
        :func:`sb_prune.families.whisper.ctranslate2.read_model_bin`).
    config : dict
        The folder's ``config.json`` (``suppress_ids``,
        ``suppress_ids_begin``).
    tokenizer : dict
        The folder's ``tokenizer.json``.

    Example
    -------
    >>> import numpy as np
    >>> d = 8
    >>> vocab = ["<|endoftext|>", "<|startoftranscript|>", "<|notimestamps|>"]
    >>> shapes = {
    ...     "encoder/conv1/weight": (d, 80, 3),
    ...     "encoder/conv2/weight": (d, d, 3),
    ...     "encoder/position_encodings/encodings": (1500, d),
    ...     "decoder/embeddings/weight": (len(vocab), d),
    ...     "decoder/position_encodings/encodings": (448, d),
    ... }
    >>> variables = {k: np.ones(s) for k, s in shapes.items()}
    >>> for name in ("encoder/conv1", "encoder/conv2"):
    ...     variables[f"{name}/bias"] = np.zeros(d)
    >>> for name in ("encoder/layer_norm", "decoder/layer_norm"):
    ...     variables[f"{name}/gamma"] = np.ones(d)
    ...     variables[f"{name}/beta"] = np.zeros(d)
    >>> variables["decoder/projection/weight"] = np.eye(len(vocab), d)
    >>> special = [{"content": t, "id": i} for i, t in enumerate(vocab)]
    >>> whisper = CTranslate2Whisper(
    ...     variables, {"suppress_ids_begin": [0]}, {"added_tokens": special}
    ... )
    >>> states = whisper.encode(torch.zeros(80, 3000))
    >>> states.shape
    torch.Size([1500, 8])
    >>> whisper.logits([1], whisper.memory(states)).shape
    torch.Size([3])
    >>> whisper.prompt
    [1, 2]
    >>> whisper.decode(states)  # all tie: 0 ends, but not first; 1 is no text
    [2]
    """

    def __init__(self, variables, config, tokenizer):
        self.weights = {
            name: torch.tensor(value, dtype=torch.float32)
            for name, value in variables.items()
            if value.ndim and value.dtype.kind == "f"
        }
        self.heads = {
            side: int(variables.get(f"{side}/num_heads", 1))
            for side in ("encoder", "decoder")
        }
        self.layers = {
            side: sum(
                name.startswith(f"{side}/layer_")
                and name.endswith("ffn/linear_0/weight")
                for name in variables
            )
            for side in ("encoder", "decoder")
        }
        self.special = {
            token["content"]: token["id"] for token in tokenizer["added_tokens"]
        }
        self.end = self.special["<|endoftext|>"]
        self.suppress = sorted(
            set(config.get("suppress_ids", []))
            | {self.special[t] for t in NOT_TEXT if t in self.special}
        )
        self.suppress_first = list(config.get("suppress_ids_begin", []))
        self.multilingual = (
            self.weights["decoder/projection/weight"].shape[0] >= 51865
        )
        self.prompt = prompt_tokens(self.special, self.multilingual)
        self.filters = mel_filters(
            self.weights["encoder/conv1/weight"].shape[1]
        )

    @classmethod
    def from_folder(cls, folder):
        """Read a CTranslate2 Whisper folder.

        Arguments
        ---------
        folder : str or pathlib.Path
            It holds ``model.bin``, ``config.json`` and ``tokenizer.json``.

        Returns
        -------
        CTranslate2Whisper
            Its model.
        """
        from sb_prune.families.whisper.ctranslate2 import read_model_bin

        folder = Path(folder)
        _, variables = read_model_bin(folder / "model.bin")
        return cls(
            variables,
            json.loads((folder / "config.json").read_text()),
            json.loads((folder / "tokenizer.json").read_text()),
        )

    @torch.no_grad()
    def encode(self, features):
        """The encoder's states of ``(n_mels, 3000)`` features."""
        w, gelu = self.weights, torch.nn.functional.gelu
        x = gelu(
            torch.nn.functional.conv1d(
                features[None],
                w["encoder/conv1/weight"],
                w["encoder/conv1/bias"],
                padding=1,
            )
        )
        x = gelu(
            torch.nn.functional.conv1d(
                x,
                w["encoder/conv2/weight"],
                w["encoder/conv2/bias"],
                stride=2,
                padding=1,
            )
        )[0].T
        x = x + w["encoder/position_encodings/encodings"][: len(x)]
        for index in range(self.layers["encoder"]):
            name = f"encoder/layer_{index}"
            x = x + self._self_attention(x, f"{name}/self_attention", "encoder")
            x = x + self._ffn(x, f"{name}/ffn")
        return _norm(x, w, "encoder/layer_norm")

    def _self_attention(self, x, name, side):
        query, key, value = _linear(
            _norm(x, self.weights, f"{name}/layer_norm"),
            self.weights,
            f"{name}/linear_0",
        ).chunk(3, dim=-1)
        mixed = _attend(
            query, key, value, self.heads[side], causal=side == "decoder"
        )
        return _linear(mixed, self.weights, f"{name}/linear_1")

    def _cross_attention(self, x, memory, name):
        query = _linear(
            _norm(x, self.weights, f"{name}/layer_norm"),
            self.weights,
            f"{name}/linear_0",
        )
        mixed = _attend(query, *memory, self.heads["decoder"])
        return _linear(mixed, self.weights, f"{name}/linear_2")

    def _ffn(self, x, name):
        hidden = _linear(
            _norm(x, self.weights, f"{name}/layer_norm"),
            self.weights,
            f"{name}/linear_0",
        )
        return _linear(
            torch.nn.functional.gelu(hidden), self.weights, f"{name}/linear_1"
        )

    @torch.no_grad()
    def memory(self, states):
        """The keys and values of each decoder layer's cross-attention."""
        return [
            _linear(
                states,
                self.weights,
                f"decoder/layer_{index}/attention/linear_1",
            ).chunk(2, dim=-1)
            for index in range(self.layers["decoder"])
        ]

    @torch.no_grad()
    def logits(self, tokens, memory):
        """The logits of the token after ``tokens`` (a list of ids).

        ``memory``: from :meth:`memory`.
        """
        w = self.weights
        x = w["decoder/embeddings/weight"][tokens]
        x = x + w["decoder/position_encodings/encodings"][: len(tokens)]
        for index in range(self.layers["decoder"]):
            name = f"decoder/layer_{index}"
            x = x + self._self_attention(x, f"{name}/self_attention", "decoder")
            x = x + self._cross_attention(x, memory[index], f"{name}/attention")
            x = x + self._ffn(x, f"{name}/ffn")
        return (
            _norm(x[-1], w, "decoder/layer_norm")
            @ w["decoder/projection/weight"].T
        )

    def decode(self, states):
        """Greedy tokens (:func:`greedy_tokens`) of encoder states."""
        memory = self.memory(states)
        return greedy_tokens(
            lambda tokens: self.logits(tokens, memory),
            self.prompt,
            self.end,
            self.suppress,
            self.suppress_first,
        )

    def transcribe(self, audio):
        """Greedy tokens of 16 kHz audio (a 1-D tensor, at most 30 s)."""
        return self.decode(self.encode(log_mel(audio, self.filters)))


def prompt_tokens(special, multilingual, language="en"):
    """Whisper's prompt for transcription without timestamps.

    Arguments
    ---------
    special : dict
        ``{token: id}`` of the special tokens.
    multilingual : bool
        Whether the model has language and task tokens in its prompt
        (English-only models, ``*.en``, have not).
    language : str
        The language code, for a multilingual model.

    Returns
    -------
    list of int
        The ids.

    Example
    -------
    >>> names = ["<|startoftranscript|>", "<|en|>", "<|transcribe|>"]
    >>> special = {t: i for i, t in enumerate(names + ["<|notimestamps|>"])}
    >>> prompt_tokens(special, multilingual=False)
    [0, 3]
    >>> prompt_tokens(special, multilingual=True)
    [0, 1, 2, 3]
    """
    middle = [f"<|{language}|>", "<|transcribe|>"] if multilingual else []
    names = ["<|startoftranscript|>", *middle, "<|notimestamps|>"]
    return [special[name] for name in names]
