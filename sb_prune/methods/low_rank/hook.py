"""The hooks of low rank: SVD ranks on a schedule, or activation PCA.

Authors
 * sb_prune developers
"""

import logging
import os

import torch
from speechbrain.utils.distributed import if_main_process

from sb_prune.core.registry import families_in
from sb_prune.core.saved_model import export_model
from sb_prune.core.validation import (
    check_choices,
    check_int,
    check_keys,
    check_number,
    check_string,
)
from sb_prune.methods.low_rank.activations import (
    OutputStatistics,
    explained_variance_rank,
    pca_low_rank,
)
from sb_prune.methods.low_rank.convert import LOW_RANK_POINTS, low_rank_targets
from sb_prune.methods.low_rank.layer import LowRankLinear, rank_for_compression
from sb_prune.methods.low_rank.speed import (
    choose_ranks,
    fastest_rank,
    load_cost_table,
)
from sb_prune.training.hooks import (
    OnceHook,
    PruningHook,
    check_epochs,
    checked_schedule,
    moment,
    prune_by_plan,
)
from sb_prune.training.schedules import OneShot

logger = logging.getLogger(__name__)


class LowRankCompression(PruningHook):
    """Lower the rank of LowRankLinear layers step by step.

    At each step of the schedule, every :class:`~sb_prune.nn.LowRankLinear`
    is re-factorised so its directions are ordered again
    (:meth:`~sb_prune.nn.LowRankLinear.reorder_`), then cut to the rank
    that removes a fraction ``s_k`` of its dense weight matrix (see
    :func:`~sb_prune.methods.low_rank.layer.rank_for_compression`); the
    epochs in between fine-tune it. The optimizer state of the factors is reset,
    since re-factorising changes their basis. With ``export_folder``, the
    model of every stage (fine-tuned at its rank, just before the next
    cut, and at the end of training) is written there as its own smaller
    checkpoint (:func:`sb_prune.core.saved_model.export_model`), in
    ``compression_<s>``: one run delivers several model sizes.

    Arguments
    ---------
    schedule : sb_prune.training.schedules.Schedule
        Target compression of the converted layers and when to step.
    export_folder : str, optional
        Where to export every stage.
    export_module : str, optional
        Export only this module of the Brain (e.g. ``model``), so a stage
        loads into that module alone; default: all the Brain's modules.
    cost_table : str or dict, optional
        Measured times of the model's matrix shapes (a JSON file from
        ``sb-prune cost-table``): ranks are then chosen so that no matrix
        is slower than dense (those that would be stay dense) and the
        others meet the target together
        (:func:`~sb_prune.methods.low_rank.speed.choose_ranks`). Without
        it every matrix loses the same fraction of its weights.
    name : str, optional
        The key of the hook's state in checkpoints (default: the class
        name); needed when ``prune_hooks`` has two hooks of this class.

    Example
    -------
    >>> from sb_prune.training.schedules import Incremental
    >>> hook = LowRankCompression(Incremental(0.75, steps=3, ramp="linear"))
    >>> [hook.schedule.sparsity(k) for k in (1, 2, 3)]
    [0.25, 0.5, 0.75]
    """

    def __init__(
        self,
        schedule,
        export_folder=None,
        export_module=None,
        cost_table=None,
        name=None,
    ):
        super().__init__(name)
        self.schedule = checked_schedule(schedule)
        self.export_folder = check_string(
            "export_folder", export_folder, optional=True
        )
        self.export_module = check_string(
            "export_module", export_module, optional=True
        )
        self.cost_table = None
        if cost_table is not None:
            self.cost_table = load_cost_table(cost_table)
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
        """Check the model and the schedule; take a step due now."""
        check_epochs(self.schedule, brain)
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
        if self.cost_table is not None:  # every shape must be measured
            for _, layer in self._layers(brain):
                fastest_rank(
                    self.cost_table, layer.in_features, layer.out_features
                )
        due = self.schedule.due_at_start(self.step)
        return self._take_due(brain, due, "start")

    def on_train_epoch_end(self, brain, epoch):
        """Export the current stage, then cut the ranks, if a step is due."""
        return self._take_due(brain, self.schedule.due(self.step, epoch), epoch)

    def on_optimizer_step(self, brain):
        """The same after an optimizer step, for a schedule in steps."""
        step = brain.optimizer_step
        due = self.schedule.due_at_step(self.step, step)
        return self._take_due(brain, due, f"step {step}")

    def _take_due(self, brain, steps, when):
        for step in steps:
            self._export(brain)
            self._take_step(brain, step, when)
        return bool(steps)

    def _take_step(self, brain, step, when):
        compression = self.schedule.sparsity(step)
        plan = {}
        optimizer = getattr(brain, "optimizer", None)
        layers = self._layers(brain)
        for rank, (path, layer) in zip(
            self._ranks(layers, compression), layers
        ):
            layer.reorder_()
            if rank is None and layer.rank is not None:
                plan[path] = {"rank": None}
            elif rank is not None and rank < (layer.rank or float("inf")):
                plan[path] = {"rank": torch.arange(rank)}
            if optimizer is not None:
                for param in layer.parameters():
                    optimizer.state.pop(param, None)
        prune_by_plan(brain, plan)
        self.step = step
        ranks = [layer.rank for _, layer in self._layers(brain)]
        self.history.append(
            {"epoch": when, "compression": compression, "ranks": ranks}
        )
        logger.info(
            f"sb_prune: low-rank step {step}/{self.schedule.steps} at "
            f"{moment(when)}: compression {compression:.2f}, ranks {ranks}"
        )

    def _ranks(self, layers, compression):
        """The rank of each layer at ``compression`` (None: dense)."""
        shapes = [
            (layer.in_features, layer.out_features) for _, layer in layers
        ]
        if self.cost_table is not None:
            return choose_ranks(shapes, compression, self.cost_table)
        return [rank_for_compression(i, o, compression) for i, o in shapes]

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


class ActivationLowRank(OnceHook):
    """Factorise Linear layers on their calibration outputs (LiteASR).

    During the training batches up to epoch ``epoch``, the outputs of every
    Linear at the application ``points`` are summarised
    (:class:`~sb_prune.methods.low_rank.activations.OutputStatistics`,
    summed over DDP processes); at the end of that epoch each is replaced
    by a :class:`~sb_prune.nn.LowRankLinear` on the principal directions of
    its outputs (:func:`~sb_prune.methods.low_rank.activations.pca_low_rank`)
    at the rank that removes ``compression`` of its weights, the rule
    :class:`LowRankCompression` uses, so both give models of the same size.
    With ``lr: 0`` in that epoch, the epoch is a pure calibration pass; the
    epochs after it fine-tune the factors. Every process computes the same
    factors from the summed statistics; a run resumed in the middle of the
    calibration epoch uses the batches after the resumption only.

    Arguments
    ---------
    compression : float
        In [0, 1); see
        :func:`~sb_prune.methods.low_rank.layer.rank_for_compression`.
    points : list of str
        A subset of ``ffn, attention``.
    epoch : int, optional
        Shorthand for ``schedule``: the calibration epoch, >= 1 (default
        1), ``OneShot(epoch: n)``.
    schedule : sb_prune.training.schedules.Schedule, optional
        When the layers are factorised: a one-step schedule without
        target, after some training batches (``OneShot``, or ``Gradual``
        with ``steps: 1`` to factorise after an optimizer step).
    variance : float or dict, optional
        Instead of ``compression``: the fraction of output variance to
        explain, in (0, 1); a dict gives one per point of ``points``.
    rank_multiple : int
        With ``variance``: ranks are multiples of this (default 16).

    name : str, optional
        The key of the hook's state in checkpoints (default: the class
        name).

    Example
    -------
    >>> ActivationLowRank(0.5, points="ffn").points
    ['ffn']
    >>> ActivationLowRank(0.5, epoch=2).schedule
    OneShot(target=None, epoch=2)
    >>> hook = ActivationLowRank(
    ...     variance={"attention": 0.99, "ffn": 0.999},
    ...     points=["ffn", "attention"],
    ... )
    >>> hook.variance
    {'ffn': 0.999, 'attention': 0.99}
    >>> ActivationLowRank(1.5)
    Traceback (most recent call last):
    ...
    ValueError: compression must be in [0, 1), got 1.5
    """

    def __init__(
        self,
        compression=None,
        points=("ffn",),
        epoch=None,
        schedule=None,
        variance=None,
        rank_multiple=16,
        name=None,
    ):
        if (compression is None) == (variance is None):
            raise ValueError(
                "ActivationLowRank: give compression or variance (exactly "
                f"one), got compression={compression!r}, variance={variance!r}"
            )
        self.compression = compression
        if compression is not None:
            check_number("compression", compression, 0, 1, open_high=True)
        self.points = check_choices("points", points, LOW_RANK_POINTS)
        self.variance = None
        if variance is not None:
            self.variance = _thresholds(variance, self.points)
        self.rank_multiple = check_int(
            "rank_multiple", rank_multiple, minimum=1
        )
        self.schedule_key = "schedule"
        if schedule is None:
            self.schedule_key = "epoch"
            schedule = OneShot(epoch=1 if epoch is None else epoch)
        elif epoch is not None:
            raise ValueError("give epoch or schedule, not both")
        super().__init__(schedule, calibrates=True, name=name)
        self.done = False
        self.ranks = {}
        self._observed = []

    def on_fit_start(self, brain):
        """Start observing the outputs of the layers to factorise."""
        check_epochs(self.schedule, brain, self.schedule_key)
        if self.done:
            return
        modules = brain.unwrapped_modules()
        self._observed = [
            (point, parent, name, path, OutputStatistics(getattr(parent, name)))
            for point in self.points
            for parent, name, path in low_rank_targets(
                modules, [point], "ActivationLowRank"
            )
        ]

    def act(self, brain, when):
        """Replace the observed layers by their factors.

        A layer whose outputs no calibration batch showed is refused,
        naming it: attention that projects queries and keys from different
        inputs (cross-attention) runs its packed projection without calling
        it.

        Arguments
        ---------
        brain : sb_prune.PruningBrain
            The Brain whose modules are factorised.
        when : str
            The moment, for the log.

        Returns
        -------
        bool
            True (the model changed).
        """
        for *_, stats in self._observed:
            stats.remove()
            stats.all_reduce()
        unseen = [path for *_, path, stats in self._observed if not stats.count]
        if unseen:
            families = ", ".join(families_in(brain.unwrapped_modules()))
            raise ValueError(
                f"ActivationLowRank: the calibration until {when} showed no "
                f"output of {unseen} (the model's {families} family): "
                "attention whose queries and keys come from different inputs "
                "(cross-attention) runs its packed projection without calling "
                "it, so it has no outputs to take components of; leave "
                "attention out of points (low_rank factorises it by SVD)"
            )
        for point, parent, name, path, stats in self._observed:
            dense = getattr(parent, name)
            rank = self._rank(point, dense, stats)
            if rank is not None:
                low = pca_low_rank(dense, stats, rank).train(dense.training)
                setattr(parent, name, low)
            self.ranks[path] = rank
        self._observed = []
        self.done = True
        rule = (
            f"variance {self.variance}"
            if self.variance is not None
            else f"compression {self.compression:.2f}"
        )
        logger.info(
            f"sb_prune: activation low rank at {when}, {rule}: ranks "
            f"(None: dense) {self.ranks}"
        )
        return True

    def _rank(self, point, dense, stats):
        """The rank of one layer (None: keep it dense)."""
        if self.variance is None:
            return rank_for_compression(
                dense.in_features, dense.out_features, self.compression
            )
        return explained_variance_rank(
            dense, stats, self.variance[point], self.rank_multiple
        )

    def state_dict(self):
        """Return whether the layers were factorised, and their ranks."""
        return {"done": self.done, "ranks": self.ranks}

    def load_state_dict(self, state):
        """Restore whether the layers were factorised, and their ranks."""
        self.done = bool(state["done"])
        self.ranks = dict(state.get("ranks", {}))  # older checkpoints: none


def _thresholds(variance, points):
    """``{point: threshold}`` from one threshold or one per point."""
    if not isinstance(variance, dict):
        check_number("variance", variance, 0, 1, open_low=True, open_high=True)
        return {point: variance for point in points}
    check_keys("variance", variance, points)
    missing = [point for point in points if point not in variance]
    if missing:
        raise ValueError(
            f"variance: no threshold for the point(s) {missing}; give one "
            f"for each of {points}, or a single number"
        )
    return {
        point: check_number(
            f"variance.{point}",
            variance[point],
            0,
            1,
            open_low=True,
            open_high=True,
        )
        for point in points
    }
