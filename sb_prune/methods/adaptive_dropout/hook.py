"""The hook that trains adaptive dropout and removes the dropped units.

Authors
 * sb_prune developers
"""

from sb_prune.core.validation import check_bool, check_int, check_number
from sb_prune.methods.adaptive_dropout.layer import AdaptiveDropout
from sb_prune.methods.adaptive_dropout.plan import adaptive_dropout_plan
from sb_prune.training.hooks import PruningHook, check_epochs, prune_by_plan
from sb_prune.training.schedules import Ramp


class AdaptiveDropoutPruning(PruningHook):
    """Lower adaptive-dropout retention during training and prune.

    The regulariser ``weight * sum_d (beta_d - c(t))^2`` pulls every
    retention logit ``beta_d`` towards a target ``c(t)`` that decreases
    linearly from ``target_start`` to ``target_end`` over the first
    ``ramp_epochs`` epochs (counted per batch), then stays at
    ``target_end``: the hook's schedule, a
    :class:`~sb_prune.training.schedules.Ramp`, says how far along ``t``
    is. Units whose retention falls to the AdaptiveDropout threshold are
    removed at the end of every training epoch (and, if set, every
    ``prune_every_n_steps`` optimizer steps) and when training ends.

    Arguments
    ---------
    regularization_weight : float
        The weight of the regulariser, >= 0.
    target_start : float
        Logit target at the start of training.
    target_end : float
        Logit target after ``ramp_epochs`` (<= ``target_start``).
    ramp_epochs : float, optional
        Shorthand for ``schedule``: the number of epochs over which the
        target decreases, > 0 (default 10), ``Ramp(epochs: n)``.
    prune_every_epoch : bool
        Prune at the end of every training epoch.
    prune_every_n_steps : int, optional
        Also prune every that many optimizer steps.
    schedule : sb_prune.training.schedules.Ramp, optional
        How the target moves (``!new:sb_prune.schedules.Ramp``).

    name : str, optional
        The key of the hook's state in checkpoints (default: the class
        name); needed when ``prune_hooks`` has two hooks of this class.

    Example
    -------
    >>> hook = AdaptiveDropoutPruning(1e-3, 3.0, -5.0, ramp_epochs=4)
    >>> hook.target(0.0), hook.target(2.0), hook.target(10.0)
    (3.0, -1.0, -5.0)
    >>> AdaptiveDropoutPruning(regularization_weight="1e-3")
    Traceback (most recent call last):
    ...
    ValueError: regularization_weight must be a number >= 0, got '1e-3'
    """

    def __init__(
        self,
        regularization_weight=1e-3,
        target_start=3.0,
        target_end=-6.0,
        ramp_epochs=None,
        prune_every_epoch=True,
        prune_every_n_steps=None,
        schedule=None,
        name=None,
    ):
        super().__init__(name)
        check_number("regularization_weight", regularization_weight, low=0)
        check_number("target_start", target_start)
        check_number("target_end", target_end)
        if target_end > target_start:
            raise ValueError(
                f"target_end ({target_end}) must not exceed target_start "
                f"({target_start}): the target decreases during training"
            )
        if schedule is None:
            ramp_epochs = 10 if ramp_epochs is None else ramp_epochs
            check_number("ramp_epochs", ramp_epochs, low=0, open_low=True)
            schedule = Ramp(ramp_epochs)
        elif ramp_epochs is not None:
            raise ValueError("give ramp_epochs or schedule, not both")
        if not isinstance(schedule, Ramp):
            raise ValueError(
                "schedule must be an sb_prune.schedules Ramp, got "
                f"{type(schedule).__name__}"
            )
        if prune_every_n_steps is not None:
            check_int("prune_every_n_steps", prune_every_n_steps, minimum=1)
        check_bool("prune_every_epoch", prune_every_epoch)
        self.regularization_weight = regularization_weight
        self.target_start = target_start
        self.target_end = target_end
        self.schedule = schedule
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
        fraction = self.schedule.progress_at(progress)
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
        """Check the schedule and that the model has AdaptiveDropout layers."""
        check_epochs(self.schedule, brain)
        if not self._layers(brain):
            raise ValueError(
                "prune_hooks has AdaptiveDropoutPruning but the model has "
                "no AdaptiveDropout layers: add adaptive_dropout to "
                "sb_prune.convert"
            )

    def on_batch_start(self, brain):
        """Set the regulariser's weight and current target."""
        super().on_batch_start(brain)
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
