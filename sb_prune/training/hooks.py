"""The hook base class that :class:`sb_prune.PruningBrain` drives.

A hook is declared in the hparams file under ``prune_hooks`` and receives
events from the Brain. Events that may change the model's structure return
True when they did; the Brain then re-wraps DDP modules and rebuilds the
optimizer. Hook state is saved with every checkpoint. Each method's hook
lives with the method (``sb_prune.methods.<method>.hook``); they are all
importable from :mod:`sb_prune.hooks`.

Authors
 * sb_prune developers
"""

from speechbrain.utils.distributed import ddp_broadcast

from sb_prune.core.surgery import apply_plan
from sb_prune.training.schedules import Schedule


class PruningHook:
    """Base class of sb_prune hooks: every event does nothing.

    Override the events you need. Structural events return whether they
    changed the model.

    Arguments
    ---------
    name : str, optional
        The key of the hook's state in checkpoints (default: the class
        name). Two hooks of one class in ``prune_hooks`` need names.

    Example
    -------
    >>> PruningHook().checkpoint_name
    'sb_prune_hook_PruningHook'
    >>> PruningHook(name="second").hook_name
    'second'
    """

    def __init__(self, name=None):
        if name is not None and (not isinstance(name, str) or not name):
            raise ValueError(f"name must be a non-empty string, got {name!r}")
        self.name = name

    @property
    def hook_name(self):
        """The hook's name: ``name``, or its class name."""
        return self.name or type(self).__name__

    @property
    def checkpoint_name(self):
        """The recoverable name of its state in checkpoints."""
        return f"sb_prune_hook_{self.hook_name}"

    def on_fit_start(self, brain):
        """Called once training starts (after checkpoint recovery).

        Returns True if it pruned (e.g. a layer cut of a loaded model).
        """
        return False

    def on_batch_start(self, brain):
        """Called before each training batch.

        Places the hook's ``schedule``, if it has one, on this run (a
        ``Gradual`` given as a span of training needs the run's optimizer
        steps); a hook that overrides this calls it too.
        """
        schedule = getattr(self, "schedule", None)
        if schedule is not None:
            schedule.place(brain.total_optimizer_steps)

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


class OnceHook(PruningHook):
    """Base class of hooks that change the model once.

    At the one moment of ``schedule`` (an epoch's end, an optimizer step;
    at the start too where the subclass's ``on_fit_start`` asks) it calls
    :meth:`act`, unless ``done`` (whether it has acted, which the
    subclass sets). A layer cut, a factorisation.

    Arguments
    ---------
    schedule : sb_prune.training.schedules.Schedule
        One step, no target (:func:`moment_schedule`).
    calibrates : bool
        The hook learns from training batches before it acts, so a
        schedule due when training starts is refused.
    name : str, optional
        The key of the hook's state in checkpoints.

    Example
    -------
    >>> from sb_prune.training.schedules import AtStart, OneShot
    >>> class Report(OnceHook):
    ...     def act(self, brain, when):
    ...         self.done = True
    ...         return print(f"acting at {when}") or True
    >>> hook = Report(OneShot(epoch=2))
    >>> hook.on_train_epoch_end(None, 1), hook.on_train_epoch_end(None, 2)
    acting at epoch 2
    (False, True)
    >>> Report(AtStart(), calibrates=True)
    Traceback (most recent call last):
    ...
    ValueError: schedule: Report calibrates on training batches, so it ...
    """

    #: Whether the hook has acted (a subclass sets it, or overrides it).
    done = False

    def __init__(self, schedule, calibrates=False, name=None):
        super().__init__(name)
        hook = type(self).__name__
        self.schedule = moment_schedule(schedule, hook)
        if calibrates and self.schedule.due_at_start(0):
            raise ValueError(
                f"schedule: {hook} calibrates on training batches, so it "
                "cannot act when training starts"
            )

    def act(self, brain, when):
        """Change the model; return whether it changed.

        Arguments
        ---------
        brain : sb_prune.PruningBrain
            The Brain whose modules change.
        when : str
            ``start``, ``epoch <n>`` or ``step <n>``, for the log.

        Returns
        -------
        bool
            Whether the model's structure changed.
        """
        raise NotImplementedError

    def on_optimizer_step(self, brain):
        """Act after this optimizer step if the schedule says so."""
        step = brain.optimizer_step
        due = self.schedule.due_at_step(int(self.done), step)
        return bool(due) and self.act(brain, f"step {step}")

    def on_train_epoch_end(self, brain, epoch):
        """Act after this epoch if the schedule says so."""
        due = self.schedule.due(int(self.done), epoch)
        return bool(due) and self.act(brain, f"epoch {epoch}")


def prune_by_plan(brain, plan):
    """Apply a plan made on the main process identically on every process.

    Arguments
    ---------
    brain : sb_prune.PruningBrain
        The Brain whose (unwrapped) modules the plan refers to.
    plan : dict
        A plan for :func:`sb_prune.core.surgery.apply_plan`.

    Returns
    -------
    bool
        Whether anything was pruned.
    """
    plan = ddp_broadcast(plan)
    apply_plan(brain.unwrapped_modules(), plan)
    return bool(plan)


def moment(when):
    """How a log names the moment of a pruning step.

    Arguments
    ---------
    when : int or str
        An epoch number, or a text such as ``step 40``.

    Returns
    -------
    str
        ``epoch 3`` for an epoch, the text as it is otherwise.

    Example
    -------
    >>> moment(3), moment("step 40")
    ('epoch 3', 'step 40')
    """
    return when if isinstance(when, str) else f"epoch {when}"


def number_of_epochs(brain):
    """The epoch limit of a recipe's Brain, or None if it cannot be told."""
    counter = getattr(brain.hparams, "epoch_counter", None)
    limit = getattr(counter, "limit", None)
    return limit or getattr(brain.hparams, "number_of_epochs", None)


def checked_schedule(schedule):
    """Return ``schedule`` if it is a Schedule with a target sparsity.

    Arguments
    ---------
    schedule : object
        What the YAML gave for ``schedule``.

    Returns
    -------
    Schedule
        The schedule.

    Example
    -------
    >>> from sb_prune.training.schedules import OneShot
    >>> checked_schedule(OneShot(epoch=2))
    Traceback (most recent call last):
    ...
    ValueError: schedule: OneShot(target=None, epoch=2) has no target ...
    """
    if not isinstance(schedule, Schedule):
        raise ValueError(
            "schedule must be an sb_prune.schedules Schedule (AtStart, "
            f"OneShot, Incremental or Gradual), got {type(schedule).__name__}"
        )
    if schedule.target is None:
        raise ValueError(
            f"schedule: {schedule!r} has no target sparsity; give target"
        )
    return schedule


def moment_schedule(schedule, hook):
    """Return ``schedule`` if it takes one step and has no target.

    The schedule of a hook that acts once and decides how much itself (a
    layer cut, activation low rank).

    Arguments
    ---------
    schedule : object
        What the YAML gave for ``schedule``.
    hook : str
        The hook's class name, for the message.

    Returns
    -------
    Schedule
        The schedule.

    Example
    -------
    >>> from sb_prune.training.schedules import Incremental
    >>> moment_schedule(Incremental(0.5, steps=2), "LayerCut")
    Traceback (most recent call last):
    ...
    ValueError: schedule: LayerCut acts once and decides how much itself; ...
    """
    if (
        not isinstance(schedule, Schedule)
        or schedule.steps != 1
        or schedule.target is not None
    ):
        raise ValueError(
            f"schedule: {hook} acts once and decides how much itself; give "
            "a one-step sb_prune.schedules Schedule without target (AtStart, "
            f"OneShot with epoch, Gradual with steps: 1), got {schedule!r}"
        )
    return schedule


def check_epochs(schedule, brain, key="schedule"):
    """Check that the schedule's steps fall inside the recipe's epochs.

    Every hook calls it on its schedule when training starts.

    Arguments
    ---------
    schedule : sb_prune.training.schedules.BaseSchedule
        The hook's schedule.
    brain : sb.Brain
        The Brain, whose ``epoch_counter`` or ``number_of_epochs`` limit
        the training.
    key : str
        The YAML key that gave the schedule (``schedule``, or a hook's
        shorthand such as ``at_epoch``), for the message.
    """
    limit = number_of_epochs(brain)
    if limit is not None:
        schedule.check_epochs(limit, key)
