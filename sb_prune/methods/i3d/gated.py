"""I3D: Conformer encoders whose depth depends on the input.

Peng, Lee and Watanabe, "I3D: Transformer architectures with
input-dependent dynamic depth for speech recognition" (ICASSP 2023). Binary
gates on the residual branches of every encoder layer decide, per
utterance, which modules run. Gate names and what a closed gate skips in a
SpeechBrain ``ConformerEncoderLayer``:

* ``ffn``: both macaron feed-forward branches (``x + 0.5 * ffn_module1(x)``
  and ``x + 0.5 * ffn_module2(x)`` become ``x``; one gate for the pair,
  which is the FFN of I3D's Transformer layer). The layer's closing
  ``norm2`` always runs;
* ``attention``: ``x + mha_layer(norm1(x))`` becomes ``x``;
* ``conv``: ``x + convolution_module(x)`` becomes ``x``.

A branch without a gate always runs; a layer whose branches are all closed
computes ``norm2(x)`` only. Gate probabilities come from a
:class:`GatePredictor` (an MLP on the masked mean of a sequence over its
valid frames):

* ``local``: one predictor per layer, on that layer's input, for the
  layer's gates;
* ``global``: one predictor on the encoder input, for every gate of every
  layer at once (the architecture is fixed before the first layer runs).

In training, gates are straight-through Gumbel-softmax samples (hard 0/1
forward, soft gradient, temperature ``temperature``); every branch runs for
every utterance and is multiplied by its gate, so that the gradient reaches
the predictors. The regulariser ``regularization_weight * (mean p -
target)^2`` on the mean execution probability (over utterances, layers and
gates) enters the gradient through
:func:`sb_prune.training.auxiliary.attach_auxiliary_loss`. With
``gate_costs`` each gate's probability is weighted by its branch's cost
(measured, or given), so the target is a fraction of the gated branches'
time rather than of their number. In evaluation a gate
is open when its probability exceeds ``threshold``, and a closed branch is
not computed at all: each branch runs only on the utterances of the batch
whose gate is open (gathered, then scattered back).

Average executed layers: every gate counts as ``1 / len(gates)`` of a
layer (with ``gates: [attention, ffn]``, I3D's half-layers); see
:attr:`GatedConformerEncoder.executed_layers`.

The gated classes subclass SpeechBrain's and build with its arguments.
Converting a trained model builds new instances that take over the
existing submodules (:meth:`GatedConformerEncoder.from_encoder`). The
encoder's forward is SpeechBrain's; a layer's forward is SpeechBrain's
when no branch is closed, and otherwise runs the branches one by one: the
four branch expressions of ``ConformerEncoderLayer.forward`` are the only
upstream code mirrored (see :meth:`GatedConformerLayer._branches`).

DDP: since training runs every branch, every parameter gets a gradient in
every step and DistributedDataParallel works as is. SpeechBrain's LayerDrop
(``layerdrop_prob > 0``, run by the gated encoder) does leave parameters
unused, which DDP only accepts with ``find_unused_parameters: True``; the
recipes set it (see ``hparams/i3d.yaml``).

Authors
 * sb_prune developers
"""

import functools
import math

import torch
import torch.nn.functional as F
from speechbrain.lobes.models.transformer.Conformer import (
    ConformerEncoder,
    ConformerEncoderLayer,
)
from torch import nn

from sb_prune.core.validation import (
    check_choice,
    check_choices,
    check_int,
    check_keys,
    check_number,
)
from sb_prune.training.auxiliary import attach_auxiliary_loss

GATES = ("attention", "conv", "ffn")
DEFAULT_GATES = ("attention", "ffn")
PREDICTORS = ("local", "global")
DYNAMIC_DEPTH_OPTIONS = (
    "predictor",
    "gates",
    "predictor_hidden",
    "temperature",
    "threshold",
    "target",
    "regularization_weight",
    "init_probability",
    "gate_costs",
)


def _check_probability(key, value):
    """Return ``value`` if it is a number in the open interval (0, 1)."""
    return check_number(key, value, 0, 1, open_low=True, open_high=True)


def check_gates(gates):
    """Validate a list of gate names; return them in the order of GATES.

    Arguments
    ---------
    gates : str or list of str
        A non-empty subset of ``attention, conv, ffn`` (one name: a
        one-element list).

    Returns
    -------
    tuple of str
        The gates.

    Example
    -------
    >>> check_gates(["ffn", "attention"])
    ('attention', 'ffn')
    >>> check_gates("conv")
    ('conv',)
    >>> check_gates(["mlp"])
    Traceback (most recent call last):
    ...
    ValueError: gates: unknown ['mlp']; choose from ['attention', 'conv', 'ffn']
    >>> check_gates([])
    Traceback (most recent call last):
    ...
    ValueError: gates: empty; choose from ['attention', 'conv', 'ffn']
    """
    gates = check_choices("gates", gates, GATES)
    return tuple(gate for gate in GATES if gate in gates)


def execution_probability(logits):
    """Probability of executing, from ``[..., 2]`` (skip, execute) logits.

    Arguments
    ---------
    logits : torch.Tensor
        ``[..., 2]`` gate logits.

    Returns
    -------
    torch.Tensor
        ``[...]`` probabilities.

    Example
    -------
    >>> execution_probability(torch.tensor([[0.0, 2.0], [1.0, 0.0]]))
    tensor([0.8808, 0.2689])
    """
    return logits.softmax(-1)[..., 1]


def decide_gates(logits, training, temperature=1.0, threshold=0.5):
    """Open or close gates from their ``[..., 2]`` (skip, execute) logits.

    Arguments
    ---------
    logits : torch.Tensor
        ``[..., 2]`` gate logits.
    training : bool
        If True, straight-through Gumbel-softmax samples: 0.0/1.0 values
        whose gradient is that of the soft sample. Otherwise a gate is open
        when its execution probability exceeds ``threshold``, tested as
        ``logit_execute - logit_skip > log(threshold / (1 - threshold))``
        (the same test, with fewer operations).
    temperature : float
        Gumbel-softmax temperature.
    threshold : float
        Evaluation threshold on the execution probability.

    Returns
    -------
    torch.Tensor
        ``[...]`` decisions: floats in training, booleans otherwise.

    Example
    -------
    >>> logits = torch.tensor([[0.0, 2.0], [1.0, 0.0]])
    >>> decide_gates(logits, training=False)
    tensor([ True, False])
    >>> decide_gates(logits, training=False, threshold=0.9)
    tensor([False, False])
    """
    if training:
        sample = F.gumbel_softmax(logits, tau=temperature, hard=True)
        return sample[..., 1]
    margin = math.log(threshold / (1.0 - threshold))
    return logits[..., 1] - logits[..., 0] > margin


def pooling_weights(padding_mask):
    """Weights of the mean over the valid frames of each utterance.

    Computed once per batch and shared by every gate predictor.

    Arguments
    ---------
    padding_mask : torch.Tensor or None
        ``[B, T]``, True on padded frames.

    Returns
    -------
    torch.Tensor or None
        ``[B, T]`` weights summing to one per utterance (zero on padding);
        None without a mask (a plain mean over time).

    Example
    -------
    >>> pooling_weights(torch.tensor([[False, False, True]]))
    tensor([[0.5000, 0.5000, 0.0000]])
    """
    if padding_mask is None:
        return None
    valid = (~padding_mask).float()
    return valid / valid.sum(dim=1, keepdim=True).clamp_min(1.0)


class GatePredictor(nn.Module):
    """An MLP from a pooled sequence to (skip, execute) logits per gate.

    The sequence is averaged over its valid frames, then ``Linear -> ReLU
    -> Linear``. The output layer starts with zero weights and a bias that
    gives every gate the execution probability ``init_probability``, so a
    converted trained model starts close to its dense behaviour.

    Arguments
    ---------
    input_size : int
        Feature size of the sequence.
    n_gates : int
        Number of gates predicted.
    hidden_size : int
        Hidden units of the MLP.
    init_probability : float
        Initial execution probability of every gate, in (0, 1).

    Example
    -------
    >>> predictor = GatePredictor(8, n_gates=3, init_probability=0.75)
    >>> x = torch.rand(2, 5, 8)
    >>> mask = torch.tensor([[False] * 5, [False] * 3 + [True] * 2])
    >>> logits = predictor(x, pooling_weights(mask))
    >>> logits.shape
    torch.Size([2, 3, 2])
    >>> logits.softmax(-1)[0, :, 1]
    tensor([0.7500, 0.7500, 0.7500], grad_fn=<SelectBackward0>)
    """

    def __init__(
        self, input_size, n_gates, hidden_size=64, init_probability=0.9
    ):
        super().__init__()
        _check_probability("init_probability", init_probability)
        self.n_gates = n_gates
        self.hidden = nn.Linear(input_size, hidden_size)
        self.activation = nn.ReLU()
        self.output = nn.Linear(hidden_size, 2 * n_gates)
        bias = torch.zeros(n_gates, 2)
        bias[:, 1] = math.log(init_probability / (1.0 - init_probability))
        with torch.no_grad():
            self.output.weight.zero_()
            self.output.bias.copy_(bias.flatten())

    def forward(self, x, pooling=None):
        """Return ``[B, n_gates, 2]`` logits for ``x`` ``[B, T, D]``.

        Arguments
        ---------
        x : torch.Tensor
            The sequence, ``[B, T, D]``.
        pooling : torch.Tensor, optional
            ``[B, T]`` weights of the valid frames (see
            :func:`pooling_weights`); None: the mean over all frames.

        Returns
        -------
        torch.Tensor
            The logits of (skip, execute).
        """
        if pooling is None:
            pooled = x.mean(dim=1)
        else:
            pooled = torch.bmm(pooling.unsqueeze(1).to(x.dtype), x)[:, 0]
        hidden = self.activation(self.hidden(pooled))
        return self.output(hidden).view(-1, self.n_gates, 2)


def _model_dim(layer_norm):
    """``d_model`` of a SpeechBrain LayerNorm wrapper or an nn.LayerNorm."""
    norm = getattr(layer_norm, "norm", layer_norm)
    return norm.normalized_shape[0]


def _device_of(module):
    return next(module.parameters()).device


# What nn.Module.__init__ puts in a module's __dict__, and its hook tables.
_MODULE_INTERNALS = frozenset(vars(nn.Module()))
_HOOK_TABLES = tuple(
    sorted(
        name
        for name, value in vars(nn.Module()).items()
        if "hook" in name and isinstance(value, dict)
    )
)


def _take_over(cls, module):
    """Return a new ``cls`` holding what ``module`` holds.

    ``cls.__init__`` is not run: it would rebuild every submodule from
    hyperparameters that SpeechBrain does not store. The new module is
    initialised as an empty ``nn.Module`` (``nn.Module.__init__``), then
    given ``module``'s submodules, parameters and buffers (the same objects
    under the same names, whatever other conversions made of them), its
    other attributes and its training mode. The caller adds what ``cls``
    adds to ``type(module)``. ``module`` itself is left as it was; it shares
    those objects with the result, which is meant to replace it.

    Arguments
    ---------
    cls : type
        ``type(module)`` or a subclass of it.
    module : torch.nn.Module
        The module taken over. It must have no hooks of its own, which
        would silently stop running.

    Returns
    -------
    torch.nn.Module
        The new ``cls`` instance.

    Example
    -------
    >>> class MyLinear(nn.Linear):
    ...     pass
    >>> linear = nn.Linear(2, 3)
    >>> mine = _take_over(MyLinear, linear)
    >>> type(mine).__name__, mine.weight is linear.weight, mine.in_features
    ('MyLinear', True, 2)
    >>> _ = linear.register_forward_hook(lambda *args: None)
    >>> _take_over(MyLinear, linear)
    Traceback (most recent call last):
    ...
    ValueError: dynamic_depth: the Linear to convert has hooks ...
    """
    hooks = [name for name in _HOOK_TABLES if getattr(module, name)]
    if hooks:
        raise ValueError(
            f"dynamic_depth: the {type(module).__name__} to convert has hooks "
            f"({', '.join(hooks)}); register them after converting"
        )
    new = cls.__new__(cls)
    nn.Module.__init__(new)
    for name, value in vars(module).items():
        if name not in _MODULE_INTERNALS:
            new.__dict__[name] = value
    new._parameters.update(module._parameters)
    new._buffers.update(module._buffers)
    new._non_persistent_buffers_set.update(module._non_persistent_buffers_set)
    new._modules.update(module._modules)
    new.training = module.training
    return new


class GatedConformerLayer(ConformerEncoderLayer):
    """A ConformerEncoderLayer with binary gates on its residual branches.

    The forward takes SpeechBrain's arguments plus ``gates``; without gates
    it is ``ConformerEncoderLayer.forward``. Gate decisions are made by the
    :class:`GatedConformerEncoder` that holds the layer; with a ``local``
    predictor, the layer holds its own :class:`GatePredictor` as
    ``gate_predictor`` (so it follows the layer when layers are cut).

    Arguments
    ---------
    d_model, d_ffn, nhead, kernel_size, kdim, vdim, activation, bias, \
dropout, causal, attention_type
        Those of SpeechBrain's ``ConformerEncoderLayer``.
    gates : list of str
        The gated branches, a subset of ``attention, conv, ffn``.
    local_predictor : bool
        Whether the layer has its own gate predictor.
    predictor_hidden : int
        Hidden units of the local predictor, >= 1.
    init_probability : float
        Initial execution probability of the local predictor's gates.

    Example
    -------
    >>> layer = GatedConformerLayer(
    ...     8, 16, 2, kernel_size=3, gates=["attention", "conv", "ffn"]
    ... ).eval()
    >>> x, pos = torch.rand(3, 5, 8), torch.rand(1, 9, 8)
    >>> gates = torch.tensor([[1.0, 1, 1], [0.0, 1, 1], [0.0, 0, 0]])
    >>> out, _ = layer(x, pos_embs=pos, gates=gates)
    >>> torch.allclose(out[2], layer.norm2(x[2]))
    True
    """

    def __init__(
        self,
        *args,
        gates=DEFAULT_GATES,
        local_predictor=True,
        predictor_hidden=64,
        init_probability=0.9,
        **kwargs,
    ):
        super().__init__(*args, **kwargs)
        self._add_gates(
            gates, local_predictor, predictor_hidden, init_probability
        )

    @classmethod
    def from_layer(
        cls,
        layer,
        gates=DEFAULT_GATES,
        local_predictor=True,
        predictor_hidden=64,
        init_probability=0.9,
    ):
        """Return a gated layer that replaces a ``ConformerEncoderLayer``.

        The result is what ``GatedConformerLayer(...)`` builds, without
        rebuilding the submodules: it holds those of ``layer`` (the same
        objects under the same names, so weights and parameter names are
        kept, whatever other conversions made of them), plus a gate
        predictor if ``local_predictor``. ``layer`` is left as it was; use
        the result in its place.

        Arguments
        ---------
        layer : ConformerEncoderLayer
            The layer to convert.
        gates, local_predictor, predictor_hidden, init_probability
            See :class:`GatedConformerLayer`.

        Returns
        -------
        GatedConformerLayer
            A new layer.

        Example
        -------
        >>> layer = ConformerEncoderLayer(8, 16, 2, kernel_size=3)
        >>> gated = GatedConformerLayer.from_layer(layer, gates="conv")
        >>> type(gated).__name__, gated.gates
        ('GatedConformerLayer', ('conv',))
        >>> gated.convolution_module is layer.convolution_module
        True
        """
        if isinstance(layer, GatedConformerLayer):
            raise ValueError("dynamic_depth: the layer is already gated")
        if type(layer) is not ConformerEncoderLayer:
            raise ValueError(
                "dynamic_depth gates SpeechBrain ConformerEncoderLayers, not "
                f"{type(layer).__name__}"
            )
        gated = _take_over(cls, layer)
        gated._add_gates(
            gates, local_predictor, predictor_hidden, init_probability
        )
        return gated

    def _add_gates(self, gates, local_predictor, predictor_hidden, init_prob):
        """What the class adds to a ``ConformerEncoderLayer``."""
        self.gates = check_gates(gates)
        self.gate_predictor = None
        # Set by GatedConformerEncoder.forward while it runs the layer.
        self._gate_source = None
        if local_predictor:
            self.gate_predictor = GatePredictor(
                _model_dim(self.norm1),
                len(self.gates),
                check_int("predictor_hidden", predictor_hidden, minimum=1),
                init_prob,
            ).to(_device_of(self))

    def forward(
        self,
        x,
        src_mask=None,
        src_key_padding_mask=None,
        pos_embs=None,
        dynchunktrain_config=None,
        gates=None,
    ):
        """Run the layer; closed branches are skipped.

        When no branch is closed (no gates, or at inference every gate of
        the batch open), this is ``ConformerEncoderLayer.forward``.
        Otherwise the residual branches of :meth:`_branches` run one by one,
        each through :meth:`_residual`.

        Arguments
        ---------
        x : torch.Tensor
            ``[B, T, d_model]``.
        src_mask, src_key_padding_mask, pos_embs, dynchunktrain_config
            As for SpeechBrain's ``ConformerEncoderLayer``.
        gates : torch.Tensor, optional
            ``[B, len(self.gates)]`` gate values in the order of
            ``self.gates``. In training the branches are multiplied by
            them; in evaluation a branch runs only for the utterances whose
            gate is positive. None: those that the
            :class:`GatedConformerEncoder` running the layer decides, if
            any; otherwise every branch runs.

        Returns
        -------
        x : torch.Tensor
            The layer's output.
        attention : torch.Tensor or None
            Attention weights (zeros for utterances that skipped the
            attention; None if none ran it).
        """
        if gates is None and self._gate_source is not None:
            gates = self._gate_source(self, x)
        if gates is not None and self.training:
            gate = dict(zip(self.gates, gates.unbind(1)))
        elif gates is not None:
            # One synchronisation per layer: open flags as Python lists.
            flags = gates if gates.dtype == torch.bool else gates > 0
            gate = dict(zip(self.gates, flags.t().tolist()))
            if all(all(column) for column in gate.values()):
                gates = None
        if gates is None:
            return super().forward(
                x,
                src_mask=src_mask,
                src_key_padding_mask=src_key_padding_mask,
                pos_embs=pos_embs,
                dynchunktrain_config=dynchunktrain_config,
            )
        attention = None
        branches = self._branches(src_mask, pos_embs, dynchunktrain_config)
        for name, branch in branches:
            x, extra = self._residual(
                x, gate.get(name), src_key_padding_mask, branch
            )
            if name == "attention":
                attention = extra
        return self.norm2(x), attention

    def _branches(self, src_mask, pos_embs, dynchunktrain_config):
        """The residual branches of the layer, in order, with their gates.

        The only upstream code mirrored in this module. SpeechBrain's
        ``ConformerEncoderLayer.forward`` (1.1.2) computes ``x = x +
        branch(x)`` for each of these four branches, in this order, then
        returns ``norm2(x)`` and the attention weights:

        * ``ffn``: ``0.5 * ffn_module1(x)``;
        * ``attention``: ``mha_layer(h, h, h, attn_mask=src_mask,
          key_padding_mask=mask, pos_embs=pos_embs)`` with ``h = norm1(x)``
          (it also returns the attention weights);
        * ``conv``: ``convolution_module(x, mask.unsqueeze(-1),
          dynchunktrain_config=dynchunktrain_config)``;
        * ``ffn``: ``0.5 * ffn_module2(x)``.

        :meth:`forward` cannot call ``super().forward`` for a gated layer:
        it runs the four branches in one call, where one of them must be
        skipped for some utterances (or scaled by the gate in training).
        The branches call the layer's submodules, so conversions of those
        modules still apply; ``mask`` is the key padding mask of the
        utterances a branch runs on. ``tests/test_gated.py`` checks that
        they still compute ``ConformerEncoderLayer.forward``.

        Arguments
        ---------
        src_mask, pos_embs, dynchunktrain_config
            Those of :meth:`forward`.

        Returns
        -------
        list
            ``(gate name, branch)`` pairs; ``branch(x, mask)`` returns the
            update of ``x`` and the attention weights (None for the other
            branches).
        """

        def ffn1(x, mask):
            return 0.5 * self.ffn_module1(x), None

        def attention(x, mask):
            x = self.norm1(x)
            return self.mha_layer(
                x,
                x,
                x,
                attn_mask=src_mask,
                key_padding_mask=mask,
                pos_embs=pos_embs,
            )

        def convolution(x, mask):
            conv_mask = None if mask is None else mask.unsqueeze(-1)
            out = self.convolution_module(
                x, conv_mask, dynchunktrain_config=dynchunktrain_config
            )
            return out, None

        def ffn2(x, mask):
            return 0.5 * self.ffn_module2(x), None

        return [
            ("ffn", ffn1),
            ("attention", attention),
            ("conv", convolution),
            ("ffn", ffn2),
        ]

    def _residual(self, x, gate, mask, branch):
        """``x + gate * branch(x)``, the branch computed only where needed.

        ``gate``: None (ungated), a ``[B]`` tensor in training (multiplies
        the branch), or a list of B open flags in evaluation.
        """
        if gate is None:
            update, extra = branch(x, mask)
            return x + update, extra
        if self.training:
            update, extra = branch(x, mask)
            return x + gate.view(-1, 1, 1).to(update.dtype) * update, extra
        if all(gate):
            update, extra = branch(x, mask)
            return x + update, extra
        if not any(gate):
            return x, None
        index = [i for i, is_open in enumerate(gate) if is_open]
        index = torch.tensor(index, device=x.device)
        sub_mask = None if mask is None else mask[index]
        update, extra = branch(x[index], sub_mask)
        if extra is not None:
            full = extra.new_zeros((x.shape[0],) + extra.shape[1:])
            extra = full.index_copy(0, index, extra)
        return x.index_add(0, index, update), extra


class GatedConformerEncoder(ConformerEncoder):
    """A Conformer encoder with I3D input-dependent dynamic depth.

    Built like SpeechBrain's ``ConformerEncoder`` (same arguments, plus the
    gating options as keywords), or converted from one with
    :meth:`from_encoder` (what ``sb_prune.convert(model, dynamic_depth=
    {...})`` does). Its forward is ``ConformerEncoder.forward`` (LayerDrop,
    hidden states and final norm included), its layers taking their gates
    from the encoder. After each forward it exposes, for the utterances of
    the batch, ``gate_logits`` (``[B, layers, gates, 2]``),
    ``gate_probabilities`` and ``gate_decisions`` (``[B, layers, gates]``,
    1.0: executed), ``executed_modules`` and ``executed_layers``.

    Arguments
    ---------
    num_layers, d_model, d_ffn, nhead, kernel_size, kdim, vdim, activation, \
bias, dropout, causal, attention_type, output_hidden_states, layerdrop_prob
        Those of SpeechBrain's ``ConformerEncoder``.
    predictor : str, default "local"
        ``local`` (one gate predictor per layer, on its input) or
        ``global`` (one on the encoder input, for all gates).
    gates : list of str, default ["attention", "ffn"]
        The gated branches of every layer, a subset of ``attention, conv,
        ffn`` (see the module docstring).
    predictor_hidden : int, default 64
        Hidden units of the gate predictor(s), >= 1.
    temperature : float, default 1.0
        Gumbel-softmax temperature in training, > 0.
    threshold : float, default 0.5
        In evaluation a gate is open when its execution probability
        exceeds it, in (0, 1).
    target : float, default 0.6
        Target fraction of executed modules, in (0, 1].
    regularization_weight : float, default 1.0
        Weight of ``(mean p - target)^2`` in the training loss, >= 0.
    init_probability : float, default 0.9
        Initial execution probability of every gate, in (0, 1).
    gate_costs : dict or str, optional
        Weights of the gates in the regulariser: ``{gate: cost}`` (positive
        numbers, one per gate), or ``measure`` to time each branch of the
        first layer on 10 s of input where the model is built
        (:func:`~sb_prune.methods.i3d.costs.measure_gate_costs`; under DDP
        each process measures its own, so give the dict for identical
        costs). Default: every gate counts alike.

    Example
    -------
    >>> enc = GatedConformerEncoder(
    ...     2, 8, 16, 2, kernel_size=3, predictor="global", init_probability=0.8
    ... ).eval()
    >>> out, _ = enc(torch.rand(3, 5, 8), pos_embs=torch.rand(1, 9, 8))
    >>> enc.gate_probabilities.shape
    torch.Size([3, 2, 2])
    >>> enc.executed_modules, enc.executed_layers
    (tensor([4., 4., 4.]), tensor([2., 2., 2.]))
    >>> enc.threshold = 0.9
    >>> _ = enc(torch.rand(3, 5, 8), pos_embs=torch.rand(1, 9, 8))
    >>> enc.executed_layers
    tensor([0., 0., 0.])
    """

    def __init__(self, *args, **kwargs):
        options = {
            k: kwargs.pop(k) for k in DYNAMIC_DEPTH_OPTIONS if k in kwargs
        }
        super().__init__(*args, **kwargs)
        self._add_gates(**options)

    @classmethod
    def from_encoder(cls, encoder, **options):
        """Return a gated encoder that replaces a ``ConformerEncoder``.

        The result is what ``GatedConformerEncoder(...)`` builds, without
        rebuilding the submodules: it holds those of ``encoder``, its layers
        converted by :meth:`GatedConformerLayer.from_layer`, so every weight
        and parameter name is kept (gate predictors are added). ``encoder``
        is left as it was; use the result in its place.

        Arguments
        ---------
        encoder : ConformerEncoder
            The encoder to convert (trained or not).
        predictor, gates, predictor_hidden, temperature, threshold, \
target, regularization_weight, init_probability, gate_costs
            The gating options of :class:`GatedConformerEncoder`.

        Returns
        -------
        GatedConformerEncoder
            A new encoder.

        Example
        -------
        >>> enc = ConformerEncoder(2, 8, 16, 2, kernel_size=3)
        >>> gated = GatedConformerEncoder.from_encoder(enc, gates=["ffn"])
        >>> type(gated.layers[1]).__name__, gated.layers[1].gates
        ('GatedConformerLayer', ('ffn',))
        >>> type(enc.layers[1]).__name__
        'ConformerEncoderLayer'
        >>> GatedConformerEncoder.from_encoder(gated)
        Traceback (most recent call last):
        ...
        ValueError: dynamic_depth: the encoder is already gated
        """
        if isinstance(encoder, GatedConformerEncoder):
            raise ValueError("dynamic_depth: the encoder is already gated")
        if type(encoder) is not ConformerEncoder:
            raise ValueError(
                "dynamic_depth converts SpeechBrain ConformerEncoders, not "
                f"{type(encoder).__name__}"
            )
        gated = _take_over(cls, encoder)
        gated._add_gates(**options)
        return gated

    def _add_gates(
        self,
        predictor="local",
        gates=DEFAULT_GATES,
        predictor_hidden=64,
        temperature=1.0,
        threshold=0.5,
        target=0.6,
        regularization_weight=1.0,
        init_probability=0.9,
        gate_costs=None,
    ):
        """Validate the options, gate the layers, add the predictor.

        Every option is checked before anything changes, and the layers
        are gated in a new ModuleList, so that a module taken over from a
        ``ConformerEncoder`` leaves that encoder as it was.
        """
        gates = check_gates(gates)
        check_choice("predictor", predictor, PREDICTORS)
        check_int("predictor_hidden", predictor_hidden, minimum=1)
        temperature = check_number(
            "temperature", temperature, low=0, open_low=True
        )
        threshold = _check_probability("threshold", threshold)
        _check_probability("init_probability", init_probability)
        target = check_number("target", target, 0, 1, open_low=True)
        regularization_weight = check_number(
            "regularization_weight", regularization_weight, low=0
        )
        self.predictor = predictor
        self.gates = gates
        self.temperature = temperature
        self.threshold = threshold
        self.target = target
        self.regularization_weight = regularization_weight
        layers = _take_over(type(self.layers), self.layers)
        for i, layer in enumerate(self.layers):
            layers[i] = GatedConformerLayer.from_layer(
                layer,
                gates=gates,
                local_predictor=predictor == "local",
                predictor_hidden=predictor_hidden,
                init_probability=init_probability,
            )
        self.layers = layers
        self.gate_predictor = None
        if predictor == "global":
            self.gate_predictor = GatePredictor(
                _model_dim(self.norm),
                len(self.layers) * len(gates),
                predictor_hidden,
                init_probability,
            ).to(_device_of(self))
        self.gate_logits = None
        self.gate_decisions = None
        self.gate_costs = self._checked_costs(gate_costs)

    def _checked_costs(self, gate_costs):
        """Per-gate regulariser weights averaging to 1 (None: alike)."""
        if gate_costs is None:
            return None
        if gate_costs == "measure":
            from sb_prune.methods.i3d.costs import measure_gate_costs

            gate_costs = measure_gate_costs(self.layers[0], self.gates)
        if not isinstance(gate_costs, dict) or set(gate_costs) != set(
            self.gates
        ):
            raise ValueError(
                "gate_costs: give 'measure' or one cost per gate "
                f"{list(self.gates)}, got {gate_costs!r}"
            )
        costs = [
            check_number(f"gate_costs.{g}", gate_costs[g], 0, open_low=True)
            for g in self.gates
        ]
        return [c * len(costs) / sum(costs) for c in costs]

    @property
    def gate_probabilities(self):
        """Execution probabilities of the last batch, ``[B, layers, gates]``."""
        if self.gate_logits is None:
            return None
        return execution_probability(self.gate_logits)

    @property
    def executed_modules(self):
        """Gated modules each utterance of the last batch ran, ``[B]``."""
        return self.gate_decisions.sum(dim=(1, 2))

    @property
    def executed_layers(self):
        """Executed layers per utterance (each gate is a layer fraction)."""
        return self.executed_modules / len(self.gates)

    def regularizer(self, probabilities):
        """Return ``weight * (mean(probabilities) - target)^2``.

        With ``gate_costs``, the mean weighs each gate by its cost.

        Arguments
        ---------
        probabilities : torch.Tensor
            Execution probabilities ``[..., gates]``.

        Returns
        -------
        torch.Tensor
            A scalar.
        """
        if self.gate_costs is not None:
            probabilities = probabilities * probabilities.new_tensor(
                self.gate_costs
            )
        return (
            self.regularization_weight
            * (probabilities.mean() - self.target) ** 2
        )

    def forward_streaming(self, src, context, pos_embs=None):
        """Not supported: chunks would need gates decided per utterance.

        Arguments
        ---------
        src, context, pos_embs
            Those of ``ConformerEncoder.forward_streaming``.
        """
        raise NotImplementedError(
            "GatedConformerEncoder does not support streaming inference: "
            "its gates are decided on whole utterances"
        )

    def _global_logits(self, src, pooling):
        logits = self.gate_predictor(src, pooling)
        expected = len(self.layers) * len(self.gates)
        if logits.shape[1] != expected:
            raise ValueError(
                f"The global gate predictor predicts {logits.shape[1]} gates "
                f"but the encoder has {expected}: layers cannot be removed "
                "from an encoder with predictor: global"
            )
        return logits.view(src.shape[0], len(self.layers), len(self.gates), 2)

    def forward(
        self,
        src,
        src_mask=None,
        src_key_padding_mask=None,
        pos_embs=None,
        dynchunktrain_config=None,
    ):
        """Run ``ConformerEncoder.forward`` with gated layers.

        SpeechBrain's forward runs unchanged (its checks, LayerDrop, hidden
        states and final norm are not copied here). It calls the layers
        without gates; while it runs, each layer asks
        :meth:`_decide_gates` for them, which records them for
        :attr:`gate_logits` and :attr:`gate_decisions`. In training, the
        gate regulariser is attached to the output.

        Arguments
        ---------
        src : torch.Tensor
            ``[B, T, d_model]``.
        src_mask, src_key_padding_mask, pos_embs, dynchunktrain_config
            As for SpeechBrain's ``ConformerEncoder``.

        Returns
        -------
        output : torch.Tensor
            The encoder output.
        attention_lst : list
            Attention weights of each layer that ran.
        hidden_state_lst : list
            Only with ``output_hidden_states``.
        """
        pooling = pooling_weights(src_key_padding_mask)
        global_logits = None
        if self.predictor == "global":
            global_logits = self._global_logits(src, pooling)
        decided = []
        for index, layer in enumerate(self.layers):
            layer._gate_source = functools.partial(
                self._decide_gates, index, pooling, global_logits, decided
            )
        try:
            result = super().forward(
                src,
                src_mask=src_mask,
                src_key_padding_mask=src_key_padding_mask,
                pos_embs=pos_embs,
                dynchunktrain_config=dynchunktrain_config,
            )
        finally:
            for layer in self.layers:
                layer._gate_source = None
        if not decided:  # LayerDrop dropped every layer
            return result
        logits = torch.stack([logits for logits, _ in decided], dim=1)
        gates = torch.stack([gates for _, gates in decided], dim=1)
        self.gate_logits = logits.detach()
        self.gate_decisions = gates.detach().float()
        if self.training and self.regularization_weight > 0:
            penalty = self.regularizer(execution_probability(logits))
            result = (attach_auxiliary_loss(result[0], penalty), *result[1:])
        return result

    def _decide_gates(self, index, pooling, global_logits, decided, layer, x):
        """Gates of layer ``index`` of the current forward, on its input.

        Arguments
        ---------
        index : int
            The layer's position in ``self.layers``.
        pooling : torch.Tensor or None
            :func:`pooling_weights` of the batch.
        global_logits : torch.Tensor or None
            ``[B, layers, gates, 2]`` from the global predictor; None: the
            layer's own predictor decides.
        decided : list
            ``(logits, gates)`` of the layers that ran so far; appended to.
        layer : GatedConformerLayer
            The layer.
        x : torch.Tensor
            Its input.

        Returns
        -------
        torch.Tensor
            ``[B, gates]`` decisions (see :func:`decide_gates`).
        """
        if global_logits is not None:
            logits = global_logits[:, index]
        else:
            logits = layer.gate_predictor(x, pooling)
        gates = decide_gates(
            logits, self.training, self.temperature, self.threshold
        )
        decided.append((logits, gates))
        return gates


def add_dynamic_depth(model, **options):
    """Gate every Conformer encoder of ``model`` (I3D), in place.

    Each SpeechBrain ``ConformerEncoder`` is replaced, where the model
    holds it, by a :class:`GatedConformerEncoder` built from it with
    :meth:`~GatedConformerEncoder.from_encoder`: same weights and parameter
    names (so a trained dense model can be converted, then fine-tuned). The
    model itself cannot be a ``ConformerEncoder``. This is the
    ``dynamic_depth`` method of :func:`sb_prune.convert`::

        Transformer: !apply:sb_prune.convert
            model: !ref <Transformer_dense>
            dynamic_depth:
                predictor: local        # or global
                gates: [attention, conv, ffn]
                target: 0.5

    Arguments
    ---------
    model : torch.nn.Module
        A model holding ConformerEncoders (e.g. a ``TransformerASR`` with
        ``encoder_module: conformer``).
    **options
        The gating options of :class:`GatedConformerEncoder`:
        ``predictor``, ``gates``, ``predictor_hidden``, ``temperature``,
        ``threshold``, ``target``, ``regularization_weight``,
        ``init_probability``, ``gate_costs``.

    Returns
    -------
    torch.nn.Module
        The same model.

    Example
    -------
    >>> from speechbrain.lobes.models.transformer.TransformerASR import (
    ...     TransformerASR,
    ... )
    >>> model = TransformerASR(
    ...     tgt_vocab=10, input_size=8, d_model=8, nhead=2,
    ...     num_encoder_layers=2, num_decoder_layers=0, d_ffn=16,
    ...     encoder_module="conformer", attention_type="RelPosMHAXL",
    ...     normalize_before=True, causal=False,
    ... )
    >>> model = add_dynamic_depth(model, predictor="global", target=0.5)
    >>> type(model.encoder).__name__
    'GatedConformerEncoder'
    >>> add_dynamic_depth(model, threshold=0.5)
    Traceback (most recent call last):
    ...
    ValueError: dynamic_depth: the model has no ungated Conformer encoder...
    """
    check_keys("dynamic_depth", options, DYNAMIC_DEPTH_OPTIONS)
    places = [
        (path, module)
        for path, module in model.named_modules(remove_duplicate=False)
        if type(module) is ConformerEncoder
    ]
    if not places:
        raise ValueError(
            "dynamic_depth: the model has no ungated Conformer encoder "
            "(ConformerEncoder); use encoder_module: conformer, and convert "
            "once"
        )
    if any(path == "" for path, _ in places):
        raise ValueError(
            "dynamic_depth: the model is a ConformerEncoder, which cannot be "
            "replaced in place; convert the model that holds it, or use "
            "GatedConformerEncoder.from_encoder"
        )
    gated = {}  # an encoder found at several paths is converted once
    for path, encoder in places:
        if id(encoder) not in gated:
            gated[id(encoder)] = GatedConformerEncoder.from_encoder(
                encoder, **options
            )
        parent, _, name = path.rpartition(".")
        setattr(model.get_submodule(parent), name, gated[id(encoder)])
    return model
