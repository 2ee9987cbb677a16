"""TorchScript export of a (pruned) CTC encoder, with its measured latency.

A pruned model is an ordinary PyTorch model with smaller tensors, so it
traces like the dense one: :func:`trace_ctc_encoder` records front end,
encoder and CTC layer (features in, log-probabilities out) with
``torch.jit.trace``; the trace is checked on a second input of another
batch size and length before it is returned. Encoders whose computation
depends on the input in Python (the I3D gated layers decide per utterance
which modules run) cannot be traced faithfully and are refused.

Authors
 * sb_prune developers
"""

import torch

from sb_prune.core.profiling import measure_latency
from sb_prune.methods.i3d.gating import GatedLayer

#: Trace inputs: (batch, seconds) of the example and of the check.
_EXAMPLE, _CHECK = (1, 4.0), (3, 6.5)
_FRAMES_PER_SECOND = 100  # SpeechBrain's Fbank hop: 10 ms


class CTCEncoder(torch.nn.Module):
    """Features -> CTC log-probabilities, as the ASR recipe computes them.

    Arguments
    ---------
    front_end : torch.nn.Module
        The recipe's ``CNN`` (frame stacking).
    transformer : TransformerASR
        The (pruned) encoder model.
    ctc_lin : torch.nn.Module
        The CTC output layer.

    Example
    -------
    >>> from speechbrain.lobes.models.transformer.TransformerASR import (
    ...     TransformerASR,
    ... )
    >>> model = CTCEncoder(
    ...     torch.nn.Linear(10, 16),
    ...     TransformerASR(
    ...         8, 16, 16, 2, 1, 0, 32, encoder_module="conformer",
    ...         attention_type="RelPosMHAXL", normalize_before=True,
    ...     ),
    ...     torch.nn.Linear(16, 8),
    ... ).eval()
    >>> model(torch.randn(2, 30, 10), torch.ones(2)).shape
    torch.Size([2, 30, 8])
    """

    def __init__(self, front_end, transformer, ctc_lin):
        super().__init__()
        self.front_end = front_end
        self.transformer = transformer
        self.ctc_lin = ctc_lin

    @classmethod
    def from_hparams(cls, hparams):
        """The CTC encoder of loaded recipe hparams, in eval mode.

        Arguments
        ---------
        hparams : dict
            With ``CNN``, ``Transformer`` and ``ctc_lin``.

        Returns
        -------
        CTCEncoder
            Holding those modules (not copies).
        """
        return cls(
            hparams["CNN"], hparams["Transformer"], hparams["ctc_lin"]
        ).eval()

    def forward(self, feats, lens):
        """Log-probabilities ``[batch, steps, tokens]`` of features."""
        encoded = self.transformer.encode(self.front_end(feats), lens)
        return torch.log_softmax(self.ctc_lin(encoded), dim=-1)


class TransformerEncode(torch.nn.Module):
    """A TransformerASR's ``encode`` as a module, for the exporters.

    Arguments
    ---------
    transformer : TransformerASR
        The (pruned) model.

    Example
    -------
    >>> from speechbrain.lobes.models.transformer.TransformerASR import (
    ...     TransformerASR,
    ... )
    >>> model = TransformerASR(
    ...     8, 16, 16, 2, 1, 0, 32, encoder_module="conformer",
    ...     attention_type="RelPosMHAXL", normalize_before=True,
    ... )
    >>> TransformerEncode(model)(torch.randn(2, 30, 16), torch.ones(2)).shape
    torch.Size([2, 30, 16])
    """

    def __init__(self, transformer):
        super().__init__()
        self.transformer = transformer

    def forward(self, feats, lens):
        """The encoder output of ``feats`` with relative lengths ``lens``."""
        return self.transformer.encode(feats, lens)


def example_features(batch, seconds, n_mels, seed):
    """Random features and relative lengths to trace or export a model with.

    Arguments
    ---------
    batch : int
        Utterances (all but the first padded when more than one).
    seconds : float
        Length of the longest, at 100 frames per second.
    n_mels : int
        Feature dimension.
    seed : int
        Seeds the features.

    Returns
    -------
    tuple
        ``(features [batch, frames, n_mels], relative lengths [batch])``.

    Example
    -------
    >>> feats, lens = example_features(2, 0.5, 4, seed=0)
    >>> feats.shape, lens.tolist()
    (torch.Size([2, 50, 4]), [1.0, 0.6000000238418579])
    """
    generator = torch.Generator().manual_seed(seed)
    frames = int(seconds * _FRAMES_PER_SECOND)
    feats = torch.randn(batch, frames, n_mels, generator=generator)
    lens = torch.linspace(1.0, 0.6, batch) if batch > 1 else torch.ones(1)
    return feats, lens


def trace_ctc_encoder(hparams, atol=1e-4):
    """Trace the CTC encoder of loaded recipe hparams with TorchScript.

    Arguments
    ---------
    hparams : dict
        Loaded hparams of an ASR run or exported folder (``CNN``,
        ``Transformer``, ``ctc_lin``, ``n_mels``), weights loaded.
    atol : float
        Largest difference allowed between trace and model on the check
        input.

    Returns
    -------
    tuple
        ``(traced module, eager CTCEncoder)``, both in eval mode.

    Raises
    ------
    ValueError
        For I3D gated encoders, or when the trace does not reproduce the
        model on the check input.
    """
    if any(isinstance(m, GatedLayer) for m in hparams["Transformer"].modules()):
        raise ValueError(
            "I3D gated encoders choose per utterance which modules run; a "
            "TorchScript trace would freeze those choices: export them "
            "without --torchscript"
        )
    model = CTCEncoder.from_hparams(hparams)
    n_mels = hparams["n_mels"]
    with torch.no_grad():
        traced = torch.jit.trace(
            model, example_features(*_EXAMPLE, n_mels, 0), check_trace=False
        )
        check = example_features(*_CHECK, n_mels, 1)
        difference = (traced(*check) - model(*check)).abs().max().item()
    if difference > atol:
        raise ValueError(
            f"The TorchScript trace differs from the model by {difference:.2e} "
            "on an input of another shape: not exported"
        )
    return traced, model


def compare_latency(traced, model, n_mels, seconds=10.0, repeats=10):
    """Median CPU latency of the eager model and its trace, interleaved.

    Arguments
    ---------
    traced : torch.jit.ScriptModule
        The trace of ``model``.
    model : torch.nn.Module
        The eager model.
    n_mels : int
        Feature dimension.
    seconds : float
        Input length (batch 1).
    repeats : int
        Timed calls of each.

    Returns
    -------
    dict
        ``eager_s``, ``torchscript_s`` and their ratio ``speedup``.
    """
    inputs = example_features(1, seconds, n_mels, 2)
    with torch.no_grad():
        times = measure_latency(
            {"eager": model, "torchscript": traced},
            lambda: inputs,
            repeats=repeats,
        )
    return {
        "input_seconds": seconds,
        "eager_s": times["eager"],
        "torchscript_s": times["torchscript"],
        "speedup": times["eager"] / times["torchscript"],
    }
