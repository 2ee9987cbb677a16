"""I3D: binary gates on the residual branches of encoder layers.

Peng, Lee and Watanabe, "I3D: Transformer architectures with
input-dependent dynamic depth for speech recognition" (ICASSP 2023). Binary
gates on the residual branches of every encoder layer decide, per
utterance, which modules run. What the branches of a layer are is its
family's answer: a family gates its encoder with classes built from the
two mixins here (:class:`GatedLayer`, :class:`GatedEncoder`; the
SpeechBrain Conformer's are
:class:`~sb_prune.families.conformer_gated.GatedConformerEncoder`). Gate
names: ``attention``, ``conv`` and ``ffn`` (what each skips is the
family's: see its gated classes).

A branch without a gate always runs. Gate probabilities come from a
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
time rather than of their number. In evaluation a gate is open when its
probability exceeds ``threshold``, and a closed branch is not computed at
all: each branch runs only on the utterances of the batch whose gate is
open (gathered, then scattered back).

Average executed layers: every gate counts as ``1 / len(gates)`` of a
layer (with ``gates: [attention, ffn]``, I3D's half-layers); see
:attr:`GatedEncoder.executed_layers`.

Converting a trained model builds new instances that take over the
existing submodules (:func:`take_over`), so weights and parameter names
are kept.

DDP: since training runs every branch, every parameter gets a gradient in
every step and DistributedDataParallel works as is. LayerDrop (when the
family's encoder has it) does leave parameters unused, which DDP only
accepts with ``find_unused_parameters: True``; the recipes set it (see
``hparams/i3d.yaml``).

Authors
 * sb_prune developers
"""

import functools
import math

import torch
import torch.nn.functional as F
from torch import nn

from sb_prune.core.validation import (
    check_choice,
    check_choices,
    check_int,
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


def check_probability(key, value):
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
        check_probability("init_probability", init_probability)
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


def device_of(module):
    """The device of a module's first parameter.

    Arguments
    ---------
    module : torch.nn.Module
        A module with parameters.

    Returns
    -------
    torch.device
        Where its parameters are.
    """
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


def take_over(cls, module):
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
    >>> mine = take_over(MyLinear, linear)
    >>> type(mine).__name__, mine.weight is linear.weight, mine.in_features
    ('MyLinear', True, 2)
    >>> _ = linear.register_forward_hook(lambda *args: None)
    >>> take_over(MyLinear, linear)
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


class GatedLayer:
    """Mixin: binary gates on the residual branches of an encoder layer.

    A family's gated layer class derives from this and from its layer
    class, and defines ``_branches(...)`` (the residual branches of its
    forward, in order, as ``(gate name, branch)`` pairs, ``branch(x,
    mask)`` returning the update of ``x`` and the attention weights or
    None) and ``_timing_inputs(frames, batch)`` (an input and the branches
    to time on it, for ``gate_costs: measure``). Its forward asks
    :meth:`_gate_values`; with gates it runs :meth:`_run_branches`,
    otherwise its layer class's own forward.
    """

    def _add_gates(self, gates, local_predictor, predictor_hidden, init_prob):
        """What the mixin adds to a layer."""
        self.gates = check_gates(gates)
        self.gate_predictor = None
        # Set by the GatedEncoder's forward while it runs the layer.
        self._gate_source = None
        if local_predictor:
            self.gate_predictor = GatePredictor(
                self._gate_width(),
                len(self.gates),
                check_int("predictor_hidden", predictor_hidden, minimum=1),
                init_prob,
            ).to(device_of(self))

    def _gate_values(self, x, gates):
        """The gates of this forward by name, or None when all run.

        Arguments
        ---------
        x : torch.Tensor
            The layer's input.
        gates : torch.Tensor or None
            ``[B, len(self.gates)]`` values given to the forward; None:
            those the encoder running the layer decides, if any.

        Returns
        -------
        dict or None
            ``gate -> [B] tensor`` in training, ``gate -> list of open
            flags`` in evaluation; None when every branch runs.
        """
        if gates is None and self._gate_source is not None:
            gates = self._gate_source(self, x)
        if gates is None:
            return None
        if self.training:
            return dict(zip(self.gates, gates.unbind(1)))
        # One synchronisation per layer: open flags as Python lists.
        flags = gates if gates.dtype == torch.bool else gates > 0
        gate = dict(zip(self.gates, flags.t().tolist()))
        if all(all(column) for column in gate.values()):
            return None
        return gate

    def _run_branches(self, x, gate, mask, branches):
        """Run the residual branches; return ``x`` and attention weights."""
        attention = None
        for name, branch in branches:
            x, extra = self._residual(x, gate.get(name), mask, branch)
            if name == "attention":
                attention = extra
        return x, attention

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


class GatedEncoder:
    """Mixin: an encoder whose layers take their gates from it.

    A family's gated encoder class derives from this and from its encoder
    class, sets ``gated_layer_type`` (its :class:`GatedLayer` class, with a
    ``from_layer`` constructor) and defines ``_gate_width()`` (the input
    width of a global predictor); its forward calls :meth:`_gated_forward`
    with its encoder class's forward. After each forward the encoder
    exposes, for the utterances of the batch, ``gate_logits`` (``[B,
    layers, gates, 2]``), ``gate_probabilities`` and ``gate_decisions``
    (``[B, layers, gates]``, 1.0: executed), ``executed_modules`` and
    ``executed_layers``.
    """

    gated_layer_type = None

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
        are gated in a new ModuleList, so that a module taken over from an
        ungated encoder leaves that encoder as it was.
        """
        gates = check_gates(gates)
        check_choice("predictor", predictor, PREDICTORS)
        check_int("predictor_hidden", predictor_hidden, minimum=1)
        temperature = check_number(
            "temperature", temperature, low=0, open_low=True
        )
        threshold = check_probability("threshold", threshold)
        check_probability("init_probability", init_probability)
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
        layers = take_over(type(self.layers), self.layers)
        for i, layer in enumerate(self.layers):
            layers[i] = self.gated_layer_type.from_layer(
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
                self._gate_width(),
                len(self.layers) * len(gates),
                predictor_hidden,
                init_probability,
            ).to(device_of(self))
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

    def _gated_forward(self, run, src, padding_mask):
        """Run the encoder's own forward with gated layers.

        The family's forward runs unchanged (its checks, LayerDrop, hidden
        states and final norm are not copied here). It calls the layers
        without gates; while it runs, each layer asks :meth:`_decide_gates`
        for them, which records them for :attr:`gate_logits` and
        :attr:`gate_decisions`. In training, the gate regulariser is
        attached to the output.

        Arguments
        ---------
        run : callable
            ``() -> result``: the encoder class's own forward on the batch
            (a tuple whose first element is the output).
        src : torch.Tensor
            The encoder input ``[B, T, D]``.
        padding_mask : torch.Tensor or None
            ``[B, T]``, True on padded frames.

        Returns
        -------
        tuple
            What ``run`` returns, the regulariser attached in training.
        """
        pooling = pooling_weights(padding_mask)
        global_logits = None
        if self.predictor == "global":
            global_logits = self._global_logits(src, pooling)
        decided = []
        for index, layer in enumerate(self.layers):
            layer._gate_source = functools.partial(
                self._decide_gates, index, pooling, global_logits, decided
            )
        try:
            result = run()
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
        layer : GatedLayer
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
