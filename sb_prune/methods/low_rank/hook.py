"""The hooks of low rank: SVD ranks on a schedule, or activation PCA.

Authors
 * sb_prune developers
"""

import logging
import os

import torch
from speechbrain.utils.distributed import if_main_process

from sb_prune.core.validation import (
    check_choices,
    check_int,
    check_keys,
    check_number,
)
from sb_prune.deploy.checkpoint import export_model
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
    PruningHook,
    check_epochs,
    checked_schedule,
    number_of_epochs,
    prune_by_plan,
)

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
    checkpoint (:func:`sb_prune.deploy.checkpoint.export_model`), in
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
        self.export_folder = export_folder
        self.export_module = export_module
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
        """Check the model and the schedule."""
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
            {"epoch": epoch, "compression": compression, "ranks": ranks}
        )
        logger.info(
            f"sb_prune: low-rank step {step}/{self.schedule.steps} at epoch "
            f"{epoch}: compression {compression:.2f}, ranks {ranks}"
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


class ActivationLowRank(PruningHook):
    """Factorise Linear layers on their calibration outputs (LiteASR).

    During the training batches of epoch ``epoch``, the outputs of every
    Linear at the application ``points`` are summarised
    (:class:`~sb_prune.methods.low_rank.activations.OutputStatistics`,
    summed over DDP processes); at the end of that epoch each is replaced
    by a :class:`~sb_prune.nn.LowRankLinear` on the principal directions of
    its outputs (:func:`~sb_prune.methods.low_rank.activations.pca_low_rank`).
    The rank of each layer comes from one of two rules:

    * ``variance`` (LiteASR's rule): the smallest multiple of
      ``rank_multiple`` whose directions explain that fraction of the
      layer's output variance; a layer whose rank would not save weights
      stays the dense Linear it was
      (:func:`~sb_prune.methods.low_rank.activations.explained_variance_rank`).
      One threshold for all points, or one per point (``{attention: 0.99,
      ffn: 0.999}``, LiteASR's default);
    * ``compression``: the rank that removes that fraction of every
      matrix's weights, the rule :class:`LowRankCompression` uses, so both
      give models of the same size.

    The chosen ranks (None: kept dense) are logged and kept in
    :attr:`ranks`, by module path. With ``lr: 0`` in that epoch, the epoch
    is a pure calibration pass; the epochs after it fine-tune the factors.
    Every process computes the same factors from the summed statistics; a
    run resumed in the middle of the calibration epoch uses the batches
    after the resumption only.

    Arguments
    ---------
    compression : float, optional
        In [0, 1); see
        :func:`~sb_prune.methods.low_rank.layer.rank_for_compression`.
    points : list of str
        A subset of ``ffn, attention``.
    epoch : int
        The calibration epoch, >= 1.
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
    >>> ActivationLowRank(variance={"ffn": 1.0})
    Traceback (most recent call last):
    ...
    ValueError: variance.ffn must be in (0, 1), got 1.0
    >>> ActivationLowRank(0.5, variance=0.99)
    Traceback (most recent call last):
    ...
    ValueError: ActivationLowRank: give compression or variance (exactly ...
    """

    def __init__(
        self,
        compression=None,
        points=("ffn",),
        epoch=1,
        variance=None,
        rank_multiple=16,
        name=None,
    ):
        super().__init__(name)
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
        self.epoch = check_int("epoch", epoch, minimum=1)
        self.done = False
        self.ranks = {}
        self._observed = []

    def on_fit_start(self, brain):
        """Start observing the outputs of the layers to factorise."""
        limit = number_of_epochs(brain)
        if limit is not None and self.epoch > limit:
            raise ValueError(
                f"ActivationLowRank: epoch {self.epoch} is after the last "
                f"epoch ({limit})"
            )
        if self.done:
            return
        modules = brain.unwrapped_modules()
        self._observed = [
            (point, path, parent, name, OutputStatistics(getattr(parent, name)))
            for point in self.points
            for parent, name, path in low_rank_targets(modules, [point])
        ]

    def on_train_epoch_end(self, brain, epoch):
        """Replace the observed layers by their factors after ``epoch``."""
        if self.done or epoch != self.epoch:
            return False
        for point, path, parent, name, stats in self._observed:
            stats.remove()
            stats.all_reduce()
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
            f"sb_prune: activation low rank at epoch {epoch}, {rule}: ranks "
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
