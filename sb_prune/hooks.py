"""Hooks that :class:`sb_prune.PruningBrain` runs during training.

A hook is declared in the hparams file under ``prune_hooks`` and receives
events from the Brain. Events that may change the model's structure return
True when they did; the Brain then re-wraps DDP modules and rebuilds the
optimizer. Hook state is saved with every checkpoint.

Authors
 * sb_prune developers
"""

import logging
import os

import torch
from speechbrain.utils.distributed import ddp_broadcast, if_main_process

from sb_prune.criteria import (
    GROUPS,
    Criterion,
    find_members,
    keep_top,
    make_criterion,
)
from sb_prune.export import export_model
from sb_prune.nn.adaptive_dropout import AdaptiveDropout
from sb_prune.nn.low_rank import LowRankLinear, rank_for_compression
from sb_prune.schedules import Schedule
from sb_prune.surgery import adaptive_dropout_plan, apply_plan

logger = logging.getLogger(__name__)


class PruningHook:
    """Base class of sb_prune hooks: every event does nothing.

    Override the events you need. Structural events return whether they
    changed the model.
    """

    def on_fit_start(self, brain):
        """Called once training starts (after checkpoint recovery).

        Returns True if it pruned (e.g. a layer cut of a loaded model).
        """
        return False

    def on_batch_start(self, brain):
        """Called before each training batch."""

    def on_gradients(self, brain):
        """Called before each optimizer step, gradients still in ``.grad``.

        They are multiplied by ``brain.scaler.get_scale()`` (1.0 unless
        fp16 training on a GPU); divide by it before using them.
        """

    def on_optimizer_step(self, brain):
        """Called after each optimizer step; returns True if it pruned."""
        return False

    def on_train_epoch_end(self, brain, epoch):
        """Called after each training epoch, before validation.

        Returns True if it pruned.
        """
        return False

    def on_fit_end(self, brain):
        """Called when ``fit`` ends; returns True if it pruned."""
        return False

    def state_dict(self):
        """Return the hook's JSON-serialisable state for checkpoints."""
        return {}

    def load_state_dict(self, state):
        """Restore the state returned by :meth:`state_dict`."""


def prune_by_plan(brain, plan):
    """Apply a plan made on the main process identically on every process.

    Arguments
    ---------
    brain : sb_prune.PruningBrain
        The Brain whose (unwrapped) modules the plan refers to.
    plan : dict
        A plan for :func:`sb_prune.surgery.apply_plan`.

    Returns
    -------
    bool
        Whether anything was pruned.
    """
    plan = ddp_broadcast(plan)
    apply_plan(brain.unwrapped_modules(), plan)
    return bool(plan)


class AdaptiveDropoutPruning(PruningHook):
    """Lower adaptive-dropout retention during training and prune.

    The regulariser ``weight * sum_d (beta_d - c(t))^2`` pulls every
    retention logit ``beta_d`` towards a target ``c(t)`` that decreases
    linearly from ``target_start`` to ``target_end`` over the first
    ``ramp_epochs`` epochs (counted per batch), then stays at
    ``target_end``. Units whose retention falls to the AdaptiveDropout
    threshold are removed at the end of every training epoch (and, if set,
    every ``prune_every_n_steps`` optimizer steps) and when training ends.

    Arguments
    ---------
    regularization_weight : float
        The weight of the regulariser, >= 0.
    target_start : float
        Logit target at the start of training.
    target_end : float
        Logit target after ``ramp_epochs`` (<= ``target_start``).
    ramp_epochs : float
        Number of epochs over which the target decreases, > 0.
    prune_every_epoch : bool
        Prune at the end of every training epoch.
    prune_every_n_steps : int, optional
        Also prune every that many optimizer steps.

    Example
    -------
    >>> hook = AdaptiveDropoutPruning(1e-3, 3.0, -5.0, ramp_epochs=4)
    >>> hook.target(0.0), hook.target(2.0), hook.target(10.0)
    (3.0, -1.0, -5.0)
    """

    def __init__(
        self,
        regularization_weight=1e-3,
        target_start=3.0,
        target_end=-6.0,
        ramp_epochs=10,
        prune_every_epoch=True,
        prune_every_n_steps=None,
    ):
        if regularization_weight < 0:
            raise ValueError(
                "regularization_weight must be >= 0, got "
                f"{regularization_weight}"
            )
        if target_end > target_start:
            raise ValueError(
                f"target_end ({target_end}) must not exceed target_start "
                f"({target_start}): the target decreases during training"
            )
        if ramp_epochs <= 0:
            raise ValueError(f"ramp_epochs must be > 0, got {ramp_epochs}")
        if prune_every_n_steps is not None and prune_every_n_steps < 1:
            raise ValueError(
                f"prune_every_n_steps must be >= 1, got {prune_every_n_steps}"
            )
        self.regularization_weight = regularization_weight
        self.target_start = target_start
        self.target_end = target_end
        self.ramp_epochs = ramp_epochs
        self.prune_every_epoch = prune_every_epoch
        self.prune_every_n_steps = prune_every_n_steps
        self.history = []

    def target(self, progress):
        """Return the logit target ``c(t)`` after ``progress`` epochs.

        Arguments
        ---------
        progress : float
            Training progress in epochs.

        Returns
        -------
        float
            The target.
        """
        fraction = min(max(progress / self.ramp_epochs, 0.0), 1.0)
        return self.target_start + fraction * (
            self.target_end - self.target_start
        )

    @staticmethod
    def _layers(brain):
        return [
            m
            for m in brain.unwrapped_modules().modules()
            if isinstance(m, AdaptiveDropout)
        ]

    def on_fit_start(self, brain):
        """Check that the model has AdaptiveDropout layers."""
        if not self._layers(brain):
            raise ValueError(
                "prune_hooks has AdaptiveDropoutPruning but the model has "
                "no AdaptiveDropout layers: add adaptive_dropout to "
                "sb_prune.convert"
            )

    def on_batch_start(self, brain):
        """Set the regulariser's weight and current target."""
        target = self.target(brain.epoch_progress or 0.0)
        for layer in self._layers(brain):
            layer.regularization_weight = self.regularization_weight
            layer.regularization_target = target

    def _prune(self, brain, when):
        root = brain.unwrapped_modules()
        pruned = prune_by_plan(brain, adaptive_dropout_plan(root))
        units = sum(layer.n_units for layer in self._layers(brain))
        self.history.append({"when": when, "units": units})
        return pruned

    def on_train_epoch_end(self, brain, epoch):
        """Prune dropped units at the end of each training epoch."""
        return self.prune_every_epoch and self._prune(brain, f"epoch {epoch}")

    def on_optimizer_step(self, brain):
        """Prune every ``prune_every_n_steps`` optimizer steps."""
        n = self.prune_every_n_steps
        if n and brain.optimizer_step % n == 0:
            return self._prune(brain, f"step {brain.optimizer_step}")
        return False

    def on_fit_end(self, brain):
        """Prune whatever is still dropped when training ends."""
        return self._prune(brain, "end")

    def state_dict(self):
        """Return the pruning history."""
        return {"history": self.history}

    def load_state_dict(self, state):
        """Restore the pruning history."""
        self.history = list(state["history"])


def _number_of_epochs(brain):
    """The epoch limit of a recipe's Brain, or None if it cannot be told."""
    counter = getattr(brain.hparams, "epoch_counter", None)
    limit = getattr(counter, "limit", None)
    return limit or getattr(brain.hparams, "number_of_epochs", None)


def _checked_schedule(schedule):
    if not isinstance(schedule, Schedule):
        raise ValueError(
            "schedule must be an sb_prune.schedules Schedule (OneShot or "
            f"Incremental), got {type(schedule).__name__}"
        )
    return schedule


def _check_epochs(schedule, brain):
    limit = _number_of_epochs(brain)
    if limit is not None:
        schedule.check_epochs(limit)


class CriterionPruning(PruningHook):
    """Prune the lowest-scored members of groups, following a schedule.

    At the end of each training epoch where the schedule takes a step, the
    criterion scores every member (units of each feed-forward block, heads
    of each attention, layers of each encoder, or single weights) and each
    module keeps its ``round(n_0 (1 - s_k))`` best members (``n_0``: what it
    had when the schedule started; at least ``min_units``). Scores of
    data-driven criteria are collected during the training batches since
    the previous step and summed over DDP processes; the plan is broadcast
    from the main process. Structured groups are removed physically;
    ``weights`` are zeroed and kept at zero by a mask (no speed-up without
    sparse kernels).

    Arguments
    ---------
    criterion : str or sb_prune.criteria.Criterion
        ``magnitude``, ``taylor``, ``activation``, ``wanda``, or an
        instance (``!new:sb_prune.criteria.Taylor``).
    schedule : sb_prune.schedules.Schedule
        ``!new:sb_prune.schedules.OneShot`` or ``Incremental``.
    groups : list of str
        A subset of ``ffn, heads, layers`` (structured), or ``[weights]``
        (unstructured).
    min_units : int
        Members each module always keeps, >= 1.

    Example
    -------
    >>> from sb_prune.schedules import Incremental
    >>> hook = CriterionPruning(
    ...     "taylor", Incremental(0.5, steps=2), groups=["ffn", "heads"]
    ... )
    >>> hook.schedule.sparsity(1), hook.keep_count(8, count=8, step=1)
    (0.4375, 5)
    >>> CriterionPruning("taylor", Incremental(0.5), groups=["rows"])
    Traceback (most recent call last):
    ...
    ValueError: groups: unknown or empty ['rows']; choose from [...]
    """

    def __init__(self, criterion, schedule, groups=("ffn",), min_units=1):
        if isinstance(criterion, str):
            criterion = make_criterion(criterion)
        if not isinstance(criterion, Criterion):
            raise ValueError(
                "criterion must be a name or an sb_prune.criteria Criterion, "
                f"got {type(criterion).__name__}"
            )
        groups = list(groups)
        unknown = sorted(set(groups) - set(GROUPS))
        if unknown or not groups:
            raise ValueError(
                f"groups: unknown or empty {unknown or groups}; choose from "
                f"{list(GROUPS)}"
            )
        if "weights" in groups and len(groups) > 1:
            raise ValueError(
                "groups: 'weights' (unstructured masks) cannot be combined "
                "with structured groups: masks do not follow their surgery"
            )
        if isinstance(min_units, bool) or not (
            isinstance(min_units, int) and min_units >= 1
        ):
            raise ValueError(
                f"min_units must be an integer >= 1, got {min_units}"
            )
        self.criterion = criterion
        self.schedule = _checked_schedule(schedule)
        self.groups = groups
        self.min_units = min_units
        self.step = 0
        self.history = []
        self.initial = {}
        self._members = []
        self._masks = {}

    @property
    def unstructured(self):
        """Whether the hook masks single weights."""
        return self.groups == ["weights"]

    def keep_count(self, initial, count, step):
        """How many members a module keeps after step ``step``.

        Arguments
        ---------
        initial : int
            Members the module had when the schedule started.
        count : int
            Members it has now.
        step : int
            The step being taken (1-based).

        Returns
        -------
        int
            ``round(initial * (1 - s_step))`` (halves up), at least
            ``min_units`` and at most ``count``.
        """
        kept = int(initial * (1.0 - self.schedule.sparsity(step)) + 0.5)
        return min(count, max(self.min_units, kept))

    def _renumber(self, plan):
        """Follow layer cuts in the paths of ``self.initial``."""
        for path, groups in plan.items():
            if "layers" not in groups:
                continue
            prefix = f"{path}.layers." if path else "layers."
            moved = {int(old): new for new, old in enumerate(groups["layers"])}
            renamed = {}
            for key, count in self.initial.items():
                if key.startswith(prefix):
                    index, _, rest = key[len(prefix) :].partition(".")
                    if int(index) not in moved:
                        continue
                    key = f"{prefix}{moved[int(index)]}" + (
                        f".{rest}" if rest else ""
                    )
                renamed[key] = count
            self.initial = renamed

    def _find(self, brain):
        root = brain.unwrapped_modules()
        self._members = find_members(root, self.groups)
        found = {members.group for members in self._members}
        for group in self.groups:
            if group not in found:
                hint = {
                    "heads": ": add prunable_attention to sb_prune.convert",
                }.get(group, "")
                raise ValueError(
                    f"groups has '{group}' but the model has nothing to prune "
                    f"there{hint}"
                )
        self.criterion.attach(self._members)

    def on_fit_start(self, brain):
        """Check the model and schedule; attach the criterion; re-mask."""
        _check_epochs(self.schedule, brain)
        self._find(brain)
        for members in self._members:
            self.initial.setdefault(members.path, members.count)
        if self.unstructured and self.step > 0:
            self._masks = {
                members.module.weight: members.module.weight != 0
                for members in self._members
            }

    def on_gradients(self, brain):
        """Let data-driven criteria read the gradients."""
        self.criterion.observe_gradients(
            self._members, brain.scaler.get_scale()
        )

    def on_optimizer_step(self, brain):
        """Keep masked weights at zero."""
        for weight, mask in self._masks.items():
            weight.data.mul_(mask)
        return False

    def on_train_epoch_end(self, brain, epoch):
        """Take the schedule's step(s) due at the end of this epoch."""
        steps = self.schedule.due(self.step, epoch)
        for step in steps:
            self._take_step(brain, step, epoch)
        return bool(steps) and not self.unstructured

    def _take_step(self, brain, step, epoch):
        if self.criterion.data_driven:
            self.criterion.all_reduce()
        if self.unstructured:
            self._mask_weights(step)
        else:
            plan = {}
            # Layer cuts renumber the paths below them: apply them last.
            for members in sorted(
                self._members, key=lambda m: m.group == "layers"
            ):
                initial = self.initial[members.path]
                keep = self.keep_count(initial, members.count, step)
                if keep < members.count:
                    scores = self.criterion.score(members)
                    plan[members.path] = members.plan(keep_top(scores, keep))
            prune_by_plan(brain, plan)
            self._renumber(plan)
        self.step = step
        self.criterion.reset()
        self._find(brain)
        counts = {}
        for members in self._members:
            counts[members.group] = counts.get(members.group, 0) + (
                int((members.module.weight != 0).sum())
                if self.unstructured
                else members.count
            )
        self.history.append(
            {
                "epoch": epoch,
                "step": step,
                "sparsity": self.schedule.sparsity(step),
                "kept": counts,
            }
        )
        logger.info(
            f"sb_prune: {self.criterion!r} step {step}/"
            f"{self.schedule.steps} at epoch {epoch}, kept {counts}"
        )

    def _mask_weights(self, step):
        for members in self._members:
            weight = members.module.weight
            keep = self.keep_count(weight.numel(), weight.numel(), step)
            scores = self.criterion.score(members).flatten()
            mask = torch.zeros(weight.numel(), dtype=torch.bool)
            mask[keep_top(scores, keep)] = True
            mask = ddp_broadcast(mask.view_as(weight.data.cpu()))
            self._masks[weight] = mask.to(weight.device)
            weight.data.mul_(self._masks[weight])

    def state_dict(self):
        """Return the steps taken, the original counts and the history."""
        return {
            "step": self.step,
            "initial": self.initial,
            "history": self.history,
        }

    def load_state_dict(self, state):
        """Restore the steps taken (training resumes mid-schedule)."""
        self.step = int(state["step"])
        self.initial = dict(state["initial"])
        self.history = list(state["history"])


class LowRankCompression(PruningHook):
    """Lower the rank of LowRankLinear layers step by step.

    At each step of the schedule, every :class:`~sb_prune.nn.LowRankLinear`
    is re-factorised so its directions are ordered again
    (:meth:`~sb_prune.nn.LowRankLinear.reorder_`), then cut to the rank
    that removes a fraction ``s_k`` of its dense weight matrix (see
    :func:`~sb_prune.nn.low_rank.rank_for_compression`); the epochs in
    between fine-tune it. The optimizer state of the factors is reset,
    since re-factorising changes their basis. With ``export_folder``, the
    model of every stage (fine-tuned at its rank, just before the next
    cut, and at the end of training) is written there as its own smaller
    checkpoint (:func:`sb_prune.export.export_model`), in
    ``compression_<s>``: one run delivers several model sizes.

    Arguments
    ---------
    schedule : sb_prune.schedules.Schedule
        Target compression of the converted layers and when to step.
    export_folder : str, optional
        Where to export every stage.
    export_module : str, optional
        Export only this module of the Brain (e.g. ``model``), so a stage
        loads into that module alone; default: all the Brain's modules.

    Example
    -------
    >>> from sb_prune.schedules import Incremental
    >>> hook = LowRankCompression(Incremental(0.75, steps=3, ramp="linear"))
    >>> [hook.schedule.sparsity(k) for k in (1, 2, 3)]
    [0.25, 0.5, 0.75]
    """

    def __init__(self, schedule, export_folder=None, export_module=None):
        self.schedule = _checked_schedule(schedule)
        self.export_folder = export_folder
        self.export_module = export_module
        self.step = 0
        self.history = []

    @staticmethod
    def _layers(brain):
        return [
            (path, module)
            for path, module in brain.unwrapped_modules().named_modules()
            if isinstance(module, LowRankLinear)
        ]

    def on_fit_start(self, brain):
        """Check the model and the schedule."""
        _check_epochs(self.schedule, brain)
        modules = brain.unwrapped_modules()
        if self.export_module is not None and self.export_module not in modules:
            raise ValueError(
                f"export_module: the Brain has no module {self.export_module!r}"
                f"; it has {sorted(modules)}"
            )
        if not self._layers(brain):
            raise ValueError(
                "prune_hooks has LowRankCompression but the model has no "
                "LowRankLinear layers: add low_rank to sb_prune.convert"
            )

    def on_train_epoch_end(self, brain, epoch):
        """Export the current stage, then cut the ranks, if a step is due."""
        steps = self.schedule.due(self.step, epoch)
        for step in steps:
            self._export(brain)
            self._take_step(brain, step, epoch)
        return bool(steps)

    def _take_step(self, brain, step, epoch):
        compression = self.schedule.sparsity(step)
        plan = {}
        optimizer = getattr(brain, "optimizer", None)
        for path, layer in self._layers(brain):
            layer.reorder_()
            rank = rank_for_compression(
                layer.in_features, layer.out_features, compression
            )
            if rank < layer.rank:
                plan[path] = {"rank": torch.arange(rank)}
            if optimizer is not None:
                for param in layer.parameters():
                    optimizer.state.pop(param, None)
        prune_by_plan(brain, plan)
        self.step = step
        ranks = [layer.rank for _, layer in self._layers(brain)]
        self.history.append(
            {"epoch": epoch, "compression": compression, "ranks": ranks}
        )
        logger.info(
            f"sb_prune: low-rank step {step}/{self.schedule.steps} at epoch "
            f"{epoch}: compression {compression:.2f}, ranks {ranks}"
        )

    def _export(self, brain):
        if self.export_folder is None or self.step == 0:
            return
        compression = self.schedule.sparsity(self.step)
        folder = os.path.join(
            self.export_folder, f"compression_{compression:.2f}"
        )
        modules = brain.unwrapped_modules()
        if self.export_module is not None:
            modules = modules[self.export_module]
        if if_main_process():
            export_model(modules, folder)

    def on_fit_end(self, brain):
        """Export the last stage."""
        self._export(brain)
        return False

    def state_dict(self):
        """Return the steps taken and their history."""
        return {"step": self.step, "history": self.history}

    def load_state_dict(self, state):
        """Restore the steps taken (training resumes mid-schedule)."""
        self.step = int(state["step"])
        self.history = list(state["history"])
