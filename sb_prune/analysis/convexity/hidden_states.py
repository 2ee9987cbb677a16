"""Per-layer hidden states of an encoder, pooled per utterance.

Convexity scoring needs one vector per utterance for the encoder input and
for the output of every layer. :class:`LayerStates` records them with
forward hooks on the layers of the stack, whatever runs the model (a
Brain's ``compute_forward``, a SpeechBrain or Hugging Face wrapper), and
:func:`pooled_layer_states` averages them over the valid frames.

Authors
 * sb_prune developers
"""

import torch
from tqdm import tqdm

from sb_prune.analysis.convexity.pooling import masked_mean_pool


def _hidden(value):
    """The hidden states in a layer's output or input (first tensor)."""
    if torch.is_tensor(value):
        return value
    if isinstance(value, dict):
        value = list(value.values())
    for item in value:
        if torch.is_tensor(item):
            return item
    raise ValueError("a layer's input or output holds no tensor")


class LayerStates:
    """Record an encoder's input and every layer's output, in a ``with``.

    ``states`` holds, after a forward pass, the input of the first layer
    followed by the output of each layer (the first tensor of a tuple
    output, as SpeechBrain and Hugging Face layers return). Layers skipped
    by LayerDrop would leave holes: run the model in evaluation mode.

    Arguments
    ---------
    encoder : torch.nn.Module
        A module with a ``layers`` ModuleList.

    Example
    -------
    >>> from speechbrain.lobes.models.transformer.Transformer import (
    ...     TransformerEncoder)
    >>> encoder = TransformerEncoder(2, 2, 8, d_model=4).eval()
    >>> with LayerStates(encoder) as recorder:
    ...     out, _ = encoder(torch.rand(3, 5, 4))
    >>> len(recorder.states), torch.equal(encoder.norm(recorder.states[-1]),
    ...                                   out)
    (3, True)
    """

    def __init__(self, encoder):
        self.encoder = encoder
        self.states = []
        self._handles = []

    def _record_input(self, module, args, kwargs):
        self.states.clear()
        self.states.append(_hidden(args if args else kwargs).detach())

    def _record_output(self, module, args, output):
        self.states.append(_hidden(output).detach())

    def __enter__(self):
        layers = self.encoder.layers
        self._handles.append(
            layers[0].register_forward_pre_hook(
                self._record_input, with_kwargs=True
            )
        )
        for layer in layers:
            self._handles.append(
                layer.register_forward_hook(self._record_output)
            )
        return self

    def __exit__(self, *exc):
        for handle in self._handles:
            handle.remove()
        self._handles = []


def pooled_layer_states(encoder, batches, run, progress=False):
    """Mean-pool the input and every layer output of an encoder.

    Arguments
    ---------
    encoder : torch.nn.Module
        The layer stack (see :func:`sb_prune.core.encoders.find_layer_stack`).
    batches : iterable
        Batches for ``run``.
    run : callable
        ``run(batch)`` runs the model on a batch (the encoder included) and
        returns the relative lengths ``[B]`` of its utterances (SpeechBrain
        ``wav_lens``), used to skip padded frames.
    progress : bool
        Show a tqdm progress bar.

    Returns
    -------
    torch.Tensor
        ``[L + 1, N, D]`` float32 on the CPU: depth 0 is the input of the
        first layer, depth ``l`` the output of layer ``l``.

    Example
    -------
    >>> from speechbrain.lobes.models.transformer.Transformer import (
    ...     TransformerEncoder)
    >>> encoder = TransformerEncoder(2, 2, 8, d_model=4).eval()
    >>> batches = [torch.rand(3, 5, 4), torch.rand(2, 7, 4)]
    >>> def run(x):
    ...     encoder(x)
    ...     return torch.ones(len(x))
    >>> pooled_layer_states(encoder, batches, run).shape
    torch.Size([3, 5, 4])
    """
    pooled = []
    depth = len(encoder.layers) + 1
    with LayerStates(encoder) as recorder, torch.no_grad():
        for batch in tqdm(batches, desc="hidden states", disable=not progress):
            lengths = run(batch)
            if len(recorder.states) != depth:
                raise ValueError(
                    f"the encoder ran {len(recorder.states) - 1} of its "
                    f"{depth - 1} layers: run it in evaluation mode (no "
                    "LayerDrop)"
                )
            lengths = torch.as_tensor(lengths).float()
            pooled.append(
                torch.stack(
                    [
                        masked_mean_pool(h.float(), lengths.to(h.device)).cpu()
                        for h in recorder.states
                    ]
                )
            )
            recorder.states.clear()
    if not pooled:
        raise ValueError("pooled_layer_states: batches is empty")
    return torch.cat(pooled, dim=1)
