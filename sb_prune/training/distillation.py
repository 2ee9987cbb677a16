"""Distillation from the dense teacher while a pretrained model is pruned.

A pretrained model loses what pruning removes; the dense model it came
from knows what it computed. :class:`Distillation` keeps the student close
to a frozen teacher without touching the recipe's code: it watches the
student module's forward (forward hooks), runs the teacher on the same
inputs, and attaches to the student's output (see
:mod:`sb_prune.training.auxiliary`) the gradient of

* ``hidden_weight`` times the mean, over the layers of every layer stack
  (encoder and decoder), of the normalised squared distance between the
  student layer's output and its teacher layer's
  (``||s - t||^2 / ||t||^2``, so that layers of different scales count
  alike), and
* ``logits_weight`` times ``T^2 KL(softmax(t / T) || softmax(s / T))``
  on the logits (element ``logits_at`` of the output), averaged over
  positions (Hinton et al. 2015).

Layers are paired by position when training starts and then follow the
student's layers: after a layer cut, student layer ``i`` is still compared
with the teacher layer it started as. The pairing is saved with the
checkpoint, so a resumed run keeps it. Only training forwards are
distilled.

Authors
 * sb_prune developers
"""

import torch
import torch.nn.functional as F

from sb_prune.core.encoders import layer_stacks
from sb_prune.core.validation import check_int, check_number, check_string
from sb_prune.training.auxiliary import attach_auxiliary_loss
from sb_prune.training.hooks import PruningHook


def _first_tensor(output):
    return output[0] if isinstance(output, (tuple, list)) else output


def normalised_distance(student, teacher):
    """``||s - t||^2 / ||t||^2``, the distance of two hidden states.

    Arguments
    ---------
    student, teacher : torch.Tensor
        Same shapes.

    Returns
    -------
    torch.Tensor
        A scalar.

    Example
    -------
    >>> t = torch.ones(2, 3)
    >>> normalised_distance(t * 0.5, t)
    tensor(0.2500)
    """
    teacher = teacher.detach()
    return (student - teacher).pow(2).sum() / teacher.pow(2).sum().clamp_min(
        1e-12
    )


def logit_divergence(student, teacher, temperature=1.0):
    """``T^2 KL(softmax(t / T) || softmax(s / T))``, mean over positions.

    Arguments
    ---------
    student, teacher : torch.Tensor
        Logits ``[..., classes]``.
    temperature : float
        The softening temperature ``T``.

    Returns
    -------
    torch.Tensor
        A scalar.

    Example
    -------
    >>> t = torch.tensor([[2.0, 0.0]])
    >>> float(logit_divergence(t, t))
    0.0
    """
    classes = student.shape[-1]
    s = F.log_softmax(student.float().reshape(-1, classes) / temperature, -1)
    t = F.log_softmax(
        teacher.detach().float().reshape(-1, classes) / temperature, -1
    )
    divergence = F.kl_div(s, t, log_target=True, reduction="batchmean")
    return divergence * temperature**2


class _LayerOutputs:
    """Forward hooks that keep the output of each layer of some stacks."""

    def __init__(self):
        self.outputs = {}
        self._handles = []

    def watch(self, layers):
        self.remove()
        for key, layer in layers.items():
            self._handles.append(layer.register_forward_hook(self._keeper(key)))

    def _keeper(self, key):
        def keep(module, args, output):
            self.outputs[key] = _first_tensor(output)

        return keep

    def remove(self):
        for handle in self._handles:
            handle.remove()
        self._handles = []


class Distillation(PruningHook):
    """Distil a frozen dense teacher into the student while it is pruned.

    Arguments
    ---------
    teacher : torch.nn.Module
        The dense model, built like the student from the same pretrained
        weights (e.g. a second
        ``speechbrain.integrations.huggingface.whisper.Whisper`` with
        ``freeze: True``). It is moved to the Brain's device, kept in
        evaluation mode, and never trained or saved.
    student : str
        The key of the student in the Brain's ``modules``.
    hidden_weight : float
        Weight of the hidden-state distance, >= 0.
    logits_weight : float
        Weight of the logit divergence, >= 0.
    temperature : float
        Softening temperature of the logit divergence, > 0.
    logits_at : int, optional
        Which element of the student's (tuple) output holds the logits
        (1 for SpeechBrain's Whisper lobe, whose forward returns the
        encoder states, the decoder logits and attention); None: no logit
        divergence. The distillation gradient enters through that element
        (else the first), which must be on the path to the recipe's loss.

    name : str, optional
        The key of the hook's state in checkpoints (default: the class
        name).

    Example
    -------
    >>> from speechbrain.lobes.models.transformer.Transformer import (
    ...     TransformerEncoder)
    >>> teacher = TransformerEncoder(2, 2, 8, d_model=4)
    >>> Distillation(teacher, student="encoder").hidden_weight
    1.0
    >>> Distillation(teacher, temperature=0)
    Traceback (most recent call last):
    ...
    ValueError: temperature must be > 0, got 0
    """

    def __init__(
        self,
        teacher,
        student="model",
        hidden_weight=1.0,
        logits_weight=1.0,
        temperature=1.0,
        logits_at=None,
        name=None,
    ):
        super().__init__(name)
        if not isinstance(teacher, torch.nn.Module):
            raise ValueError(
                f"teacher must be a torch module, got {type(teacher).__name__}"
            )
        self.teacher = teacher.eval().requires_grad_(False)
        self.student = check_string("student", student)
        self.hidden_weight = check_number("hidden_weight", hidden_weight, 0)
        self.logits_weight = check_number("logits_weight", logits_weight, 0)
        self.temperature = check_number(
            "temperature", temperature, low=0, open_low=True
        )
        if logits_at is not None:
            check_int("logits_at", logits_at, minimum=0)
        self.logits_at = logits_at
        #: ``{stack path: [teacher layer index of each student layer]}``.
        self.pairing = {}
        self._teacher_of = {}
        self._inputs = None
        self._watched = []
        self._student_stacks = {}
        self._student_states = _LayerOutputs()
        self._teacher_states = _LayerOutputs()
        self._handles = []

    def on_fit_start(self, brain):
        """Pair the layers, move the teacher, watch the student's forward."""
        modules = brain.unwrapped_modules()
        if self.student not in modules:
            raise ValueError(
                f"student: the Brain has no module {self.student!r}; it has "
                f"{sorted(modules)}"
            )
        student = modules[self.student]
        self.teacher.to(brain.device).eval()
        teacher_stacks = dict(layer_stacks(self.teacher, role=None))
        student_stacks = dict(layer_stacks(student, role=None))
        if set(teacher_stacks) != set(student_stacks):
            raise ValueError(
                "teacher: its layer stacks "
                f"{sorted(teacher_stacks)} are not the student's "
                f"{sorted(student_stacks)}: build it like the student"
            )
        teacher_layers = {}
        self._teacher_of = {}
        for path, stack in student_stacks.items():
            order = self.pairing.get(path, range(len(stack.layers)))
            for layer, index in zip(stack.layers, order):
                self._teacher_of[id(layer)] = (path, int(index))
            for index, layer in enumerate(teacher_stacks[path].layers):
                teacher_layers[(path, index)] = layer
        self._teacher_states.watch(teacher_layers)
        self._student_stacks = student_stacks
        self._watch_student_layers()
        for handle in self._handles:
            handle.remove()
        self._handles = [
            student.register_forward_pre_hook(
                self._keep_inputs, with_kwargs=True
            ),
            student.register_forward_hook(self._distil),
        ]
        return False

    def _layer_ids(self):
        return [
            id(layer)
            for stack in self._student_stacks.values()
            for layer in stack.layers
        ]

    def _watch_student_layers(self):
        self._watched = self._layer_ids()
        layers = {}
        for stack in self._student_stacks.values():
            for layer in stack.layers:
                layers[self._teacher_of[id(layer)]] = layer
        self._student_states.watch(layers)

    def _keep_inputs(self, module, args, kwargs):
        self._inputs = (args, kwargs) if module.training else None

    def _distil(self, module, args, output):
        if self._inputs is None or not torch.is_grad_enabled():
            return None
        args, kwargs = self._inputs
        self._inputs = None
        with torch.no_grad():
            teacher_output = self.teacher(*args, **kwargs)
        loss = 0.0
        student_states = self._student_states.outputs
        teacher_states = self._teacher_states.outputs
        if self.hidden_weight > 0 and student_states:
            distances = [
                normalised_distance(state, teacher_states[key])
                for key, state in student_states.items()
            ]
            loss = loss + self.hidden_weight * torch.stack(distances).mean()
        if self.logits_at is not None and self.logits_weight > 0:
            loss = loss + self.logits_weight * logit_divergence(
                output[self.logits_at],
                teacher_output[self.logits_at],
                self.temperature,
            )
        self._student_states.outputs = {}
        self._teacher_states.outputs = {}
        if self._layer_ids() != self._watched:
            self._watch_student_layers()  # a cut removed layers
        if not torch.is_tensor(loss):
            return None
        if not isinstance(output, tuple):
            return attach_auxiliary_loss(output, loss)
        # On the logits, which the recipe's loss is computed from.
        at = self.logits_at or 0
        output = list(output)
        output[at] = attach_auxiliary_loss(output[at], loss)
        return tuple(output)

    def on_fit_end(self, brain):
        """Stop watching the student."""
        for handle in self._handles:
            handle.remove()
        self._handles = []
        self._student_states.remove()
        self._teacher_states.remove()
        return False

    def state_dict(self):
        """Return the layer pairing (which teacher layer each follows)."""
        if self._student_stacks:  # follow the cuts made since the start
            self.pairing = {
                path: [self._teacher_of[id(layer)][1] for layer in stack.layers]
                for path, stack in self._student_stacks.items()
            }
        return {"pairing": self.pairing}

    def load_state_dict(self, state):
        """Restore the layer pairing of a resumed run."""
        self.pairing = {k: list(v) for k, v in state["pairing"].items()}
