"""Schedules: when a hook acts, and to which sparsity.

Every hook follows a schedule, and every schedule answers the same
questions (:class:`BaseSchedule`, the schedule protocol): which steps are
due when training starts, at the end of a training epoch, after an
optimizer step, and whether they fit in the recipe's epochs.

A :class:`Schedule` is a list of steps; step ``k`` (1-based) happens at the
end of training epoch :meth:`Schedule.epoch_of` ``(k)`` (epoch 0: when
training starts; for :class:`Gradual`, after optimizer step
:meth:`Schedule.epoch_of` ``(k)``) and brings the sparsity to
:meth:`Schedule.sparsity` ``(k)``. Fine-tuning happens between steps and
after the last one. Hooks that act once and decide how much themselves
(:class:`sb_prune.hooks.LayerCut`, :class:`sb_prune.hooks.ActivationLowRank`)
take a one-step schedule without target.

* :class:`AtStart`: a single step when training starts (a pretrained
  model is pruned or cut before fine-tuning);
* :class:`OneShot`: a single step at the end of an epoch;
* :class:`Incremental`: ``steps`` steps with a ``linear`` or ``cubic``
  ramp, at the end of epochs. The cubic ramp is the gradual pruning
  schedule of Zhu and Gupta (2017), ``s_k = s_f + (s_i - s_f) (1 - k /
  n)^3``: large steps first, while the network still has redundancy, small
  ones at the end;
* :class:`Gradual`: the same ramp in many small steps spread over the
  optimizer steps of fine-tuning (a pretrained model loses little at each
  step and recovers before the next one);
* :class:`Ramp`: no steps, a continuous progress from 0 to 1 over the
  first epochs (the regulariser target of
  :class:`sb_prune.hooks.AdaptiveDropoutPruning`).

Sparsity is the fraction of each group's members removed (units, heads,
layers, weights) or, for low rank, of each layer's dense weights. A hook
that follows a schedule stores how many steps it has taken with the
checkpoint, so training resumed mid-schedule continues where it stopped.

Authors
 * sb_prune developers
"""

from sb_prune.core.validation import check_choice, check_int, check_number

RAMPS = ("cubic", "linear")


def check_sparsity(name, value):
    """Raise a ValueError naming ``name`` unless ``value`` is in [0, 1).

    Arguments
    ---------
    name : str
        The YAML key or argument, for the message.
    value : float
        The sparsity to check.

    Example
    -------
    >>> check_sparsity("target", 1.0)
    Traceback (most recent call last):
    ...
    ValueError: target must be in [0, 1), got 1.0
    >>> check_sparsity("target", "0.5")
    Traceback (most recent call last):
    ...
    ValueError: target must be a number in [0, 1), got '0.5'
    """
    check_number(name, value, 0, 1, open_high=True)


class BaseSchedule:
    """The schedule protocol: which steps of a hook are due, and when.

    A hook asks its schedule for the steps due when training starts
    (:meth:`due_at_start`), at the end of each training epoch (:meth:`due`)
    and after each optimizer step (:meth:`due_at_step`), and checks it
    against the recipe's epochs when training starts (:meth:`check_epochs`,
    through :func:`sb_prune.training.hooks.check_epochs`). Nothing is due
    by default.

    Example
    -------
    >>> BaseSchedule().due(done=0, epoch=3)
    []
    """

    def place(self, total_steps):
        """Fit the schedule to a run of ``total_steps`` optimizer steps.

        Nothing to do but for :class:`Gradual` with a ``span``.

        Arguments
        ---------
        total_steps : int
            Optimizer steps of the whole run.
        """

    def due_at_start(self, done):
        """Return the steps due when training starts.

        Arguments
        ---------
        done : int
            Steps already taken.

        Returns
        -------
        list of int
            Step numbers to take now, in order.
        """
        return []

    def due(self, done, epoch):
        """Return the steps due at the end of training epoch ``epoch``.

        Arguments
        ---------
        done : int
            Steps already taken.
        epoch : int
            The epoch that just ended.

        Returns
        -------
        list of int
            Step numbers to take now, in order.
        """
        return []

    def due_at_step(self, done, optimizer_step):
        """Return the steps due after optimizer step ``optimizer_step``.

        Arguments
        ---------
        done : int
            Steps already taken.
        optimizer_step : int
            Optimizer steps taken since training started.

        Returns
        -------
        list of int
            Step numbers to take now, in order.
        """
        return []

    def check_epochs(self, number_of_epochs, key="schedule"):
        """Raise a ValueError if the schedule does not fit in training.

        Arguments
        ---------
        number_of_epochs : int
            The number of training epochs.
        key : str
            The YAML key that gave the schedule, for the message.
        """


class Schedule(BaseSchedule):
    """Steps towards a target sparsity, at the end of training epochs.

    ``unit`` says when a hook takes the steps: ``epoch`` (at the end of
    training epochs, :meth:`due`; epoch 0 is when training starts,
    :meth:`due_at_start`) or ``step`` (after optimizer steps,
    :meth:`due_at_step`).

    Arguments
    ---------
    target : float, optional
        Final sparsity, in [0, 1); None for a hook that decides how much
        itself (a layer cut).
    steps : int
        Number of pruning steps, >= 1.
    ramp : str
        ``cubic`` or ``linear``: how sparsity grows over the steps.
    start_epoch : int
        The epoch at whose end the first step happens, >= 1.
    every : int
        Epochs between two steps, >= 1.
    initial : float
        Sparsity before the first step, in [0, target].

    Example
    -------
    >>> schedule = Schedule(0.5, steps=2, ramp="linear", start_epoch=3)
    >>> [schedule.sparsity(k) for k in range(3)]
    [0.0, 0.25, 0.5]
    >>> [schedule.epoch_of(k) for k in (1, 2)]
    [3, 4]
    """

    #: When the steps happen: ``epoch`` or ``step``.
    unit = "epoch"

    def __init__(
        self,
        target=None,
        steps=1,
        ramp="cubic",
        start_epoch=1,
        every=1,
        initial=0.0,
    ):
        if target is not None:
            check_sparsity("target", target)
            target = float(target)
        check_int("steps", steps, minimum=1)
        check_int("start_epoch", start_epoch, minimum=1)
        check_int("every", every, minimum=1)
        check_choice("ramp", ramp, RAMPS)
        check_sparsity("initial", initial)
        if target is not None and initial > target:
            raise ValueError(
                f"initial ({initial}) must not exceed target ({target})"
            )
        self.target = target
        self.steps = steps
        self.ramp = ramp
        self.start_epoch = start_epoch
        self.every = every
        self.initial = float(initial)

    def __repr__(self):
        return (
            f"{type(self).__name__}(target={self.target}, steps="
            f"{self.steps}, ramp={self.ramp!r}, start_epoch="
            f"{self.start_epoch}, every={self.every})"
        )

    def sparsity(self, step):
        """Return the sparsity after ``step`` steps (0: ``initial``).

        Arguments
        ---------
        step : int
            In ``[0, steps]``.

        Returns
        -------
        float
            The sparsity.
        """
        if self.target is None:
            raise ValueError(f"schedule: {self!r} has no target sparsity")
        if not 0 <= step <= self.steps:
            raise ValueError(f"step must be in [0, {self.steps}], got {step}")
        progress = step / self.steps
        span = self.target - self.initial
        if self.ramp == "cubic":
            return self.target - span * (1.0 - progress) ** 3
        return self.initial + span * progress

    def epoch_of(self, step):
        """Return the epoch at whose end step ``step`` (1-based) happens.

        Arguments
        ---------
        step : int
            In ``[1, steps]``.

        Returns
        -------
        int
            The epoch.
        """
        return self.start_epoch + (step - 1) * self.every

    @property
    def last_epoch(self):
        """The epoch at whose end the last step happens."""
        return self.epoch_of(self.steps)

    def due_at_start(self, done):
        """Return the steps due when training starts (at epoch 0).

        Example
        -------
        >>> AtStart().due_at_start(done=0), OneShot(0.5).due_at_start(0)
        ([1], [])
        """
        return self.due(done, 0)

    def due(self, done, epoch):
        """Return the steps due at the end of ``epoch``.

        Usually zero or one; none for a schedule in optimizer steps.

        Example
        -------
        >>> Incremental(0.5, steps=3, start_epoch=2).due(done=1, epoch=3)
        [2]
        """
        return self._due(done, epoch) if self.unit == "epoch" else []

    def due_at_step(self, done, optimizer_step):
        """Return the steps due after optimizer step ``optimizer_step``.

        ``optimizer_step`` is SpeechBrain's ``Brain.optimizer_step`` (kept
        in checkpoints); none are due for a schedule in epochs.

        Example
        -------
        >>> Gradual(0.5, steps=4, start_step=10, every=5).due_at_step(1, 15)
        [2]
        >>> Incremental(0.5).due_at_step(0, 15)
        []
        """
        return self._due(done, optimizer_step) if self.unit == "step" else []

    def _due(self, done, now):
        return [
            step
            for step in range(done + 1, self.steps + 1)
            if self.epoch_of(step) <= now
        ]

    def check_epochs(self, number_of_epochs, key="schedule"):
        """Raise a ValueError if the last step falls after the last epoch.

        A schedule in optimizer steps is not checked (the steps of an epoch
        are known only once the data loader is built).

        Example
        -------
        >>> Incremental(0.5, steps=4, every=2).check_epochs(6)
        Traceback (most recent call last):
        ...
        ValueError: schedule: step 4 of Incremental(...) falls at the end of
        epoch 7, but number_of_epochs is 6; lower steps, every or start_epoch
        >>> OneShot(epoch=3).check_epochs(2, key="at_epoch")
        Traceback (most recent call last):
        ...
        ValueError: at_epoch: step 1 of OneShot(target=None, epoch=3) falls at
        the end of epoch 3, but number_of_epochs is 2; lower epoch
        """
        if self.unit == "epoch" and self.last_epoch > number_of_epochs:
            raise ValueError(
                f"{key}: step {self.steps} of {self!r} falls at the end of "
                f"epoch {self.last_epoch}, but number_of_epochs is "
                f"{number_of_epochs}; lower {self._timing_keys}"
            )

    #: The arguments that set when the steps happen, for messages.
    _timing_keys = "steps, every or start_epoch"


class OneShot(Schedule):
    """Prune to the target in one step, at the end of ``epoch``.

    Arguments
    ---------
    target : float, optional
        Sparsity, in [0, 1); None for a hook that decides how much itself.
    epoch : int
        The epoch at whose end pruning happens, >= 1.

    Example
    -------
    >>> OneShot(0.75, epoch=2).sparsity(1), OneShot(0.75, epoch=2).last_epoch
    (0.75, 2)
    >>> OneShot(0.75, epoch="2")
    Traceback (most recent call last):
    ...
    ValueError: epoch must be an integer >= 1, got '2'
    """

    _timing_keys = "epoch"

    def __init__(self, target=None, epoch=1):
        check_int("epoch", epoch, minimum=1)
        super().__init__(target, steps=1, ramp="linear", start_epoch=epoch)

    def __repr__(self):
        return f"OneShot(target={self.target}, epoch={self.start_epoch})"


class AtStart(Schedule):
    """Prune to the target in one step, when training starts.

    The step is due at epoch 0, before the first training batch: a
    pretrained model is pruned (or cut) once, then fine-tuned.

    Arguments
    ---------
    target : float, optional
        Sparsity, in [0, 1); None for a hook that decides how much itself.

    Example
    -------
    >>> at_start = AtStart(0.5)
    >>> at_start.due_at_start(done=0), at_start.due(done=1, epoch=1)
    ([1], [])
    """

    def __init__(self, target=None):
        super().__init__(target, steps=1, ramp="linear")
        self.start_epoch = 0  # epoch 0: when training starts

    def __repr__(self):
        return f"AtStart(target={self.target})"


class Incremental(Schedule):
    """Prune in ``steps`` steps with fine-tuning between them.

    Arguments are those of :class:`Schedule`.

    Example
    -------
    >>> cubic = Incremental(0.75, steps=3, ramp="cubic")
    >>> [round(cubic.sparsity(k), 4) for k in range(4)]
    [0.0, 0.5278, 0.7222, 0.75]
    """


class Gradual(Schedule):
    """Prune in many small steps spread over optimizer steps.

    Step ``k`` happens after optimizer step ``start_step + (k - 1) *
    every``, or, with ``span: [a, b]``, at evenly spaced points from the
    fraction ``a`` to the fraction ``b`` of the run's optimizer steps (the
    same schedule then fits a short run and a long one; it is placed when
    training starts, from the epochs and batches per epoch). The sparsity
    follows the ``cubic`` or ``linear`` ramp of :class:`Schedule`. Made for
    pretrained models: each step removes a little, and the model recovers
    before the next one and after the last.

    Arguments
    ---------
    target : float, optional
        Final sparsity, in [0, 1); None for a hook that decides how much
        itself.
    steps : int
        Number of pruning steps, >= 1.
    ramp : str
        ``cubic`` or ``linear``.
    start_step : int
        The optimizer step after which the first pruning step happens,
        >= 1.
    every : int
        Optimizer steps between two pruning steps, >= 1.
    initial : float
        Sparsity before the first step, in [0, target].
    span : list of float, optional
        ``[a, b]``, 0 <= a <= b <= 1: place the steps over that fraction of
        training instead of ``start_step`` and ``every``.

    Example
    -------
    >>> gradual = Gradual(0.4, steps=4, ramp="linear", start_step=10, every=5)
    >>> [gradual.epoch_of(k) for k in (1, 4)], gradual.sparsity(2)
    ([10, 25], 0.2)
    >>> spread = Gradual(0.4, steps=3, span=[0.1, 0.5])
    >>> spread.place(total_steps=200)
    >>> [spread.epoch_of(k) for k in (1, 2, 3)]
    [20, 60, 100]
    >>> Gradual(0.4, start_step=0)
    Traceback (most recent call last):
    ...
    ValueError: start_step must be an integer >= 1, got 0
    >>> Gradual(0.4, span=[0.5, 0.2])
    Traceback (most recent call last):
    ...
    ValueError: span must be [a, b] with 0 <= a <= b <= 1, got [0.5, 0.2]
    """

    unit = "step"

    def __init__(
        self,
        target=None,
        steps=10,
        ramp="cubic",
        start_step=1,
        every=100,
        initial=0.0,
        span=None,
    ):
        check_int("start_step", start_step, minimum=1)
        super().__init__(target, steps, ramp, start_step, every, initial)
        if span is not None:
            valid = (
                isinstance(span, (list, tuple))
                and len(span) == 2
                and all(isinstance(v, (int, float)) for v in span)
                and 0 <= span[0] <= span[1] <= 1
            )
            if not valid:
                raise ValueError(
                    f"span must be [a, b] with 0 <= a <= b <= 1, got {span!r}"
                )
            span = [float(v) for v in span]
        self.span = span
        self._placed = None

    def place(self, total_steps):
        """Place a ``span`` schedule on a run of ``total_steps`` steps.

        Arguments
        ---------
        total_steps : int or None
            Optimizer steps of the whole run (None: not known yet).
        """
        if self.span is None or total_steps is None:
            return
        start, stop = self.span
        points = [
            start + (stop - start) * k / max(self.steps - 1, 1)
            for k in range(self.steps)
        ]
        self._placed = [max(1, round(p * total_steps)) for p in points]

    def epoch_of(self, step):
        """The optimizer step after which step ``step`` (1-based) happens.

        Arguments
        ---------
        step : int
            In ``[1, steps]``.

        Returns
        -------
        int
            The optimizer step.
        """
        if self.span is None:
            return super().epoch_of(step)
        if self._placed is None:
            raise ValueError(
                "schedule: a Gradual schedule with span is placed when "
                "training starts (place(total_steps)); it was not"
            )
        return self._placed[step - 1]

    def __repr__(self):
        if self.span is not None:
            return (
                f"Gradual(target={self.target}, steps={self.steps}, ramp="
                f"{self.ramp!r}, span={self.span})"
            )
        return (
            f"Gradual(target={self.target}, steps={self.steps}, ramp="
            f"{self.ramp!r}, start_step={self.start_epoch}, every="
            f"{self.every})"
        )


class Ramp(BaseSchedule):
    """Progress from 0 to 1, linearly over the first ``epochs`` epochs.

    A ramp has no steps: a hook reads how far along it is at any moment of
    training (:meth:`progress_at`), e.g. to move a regulariser's target. A
    ramp longer than training stops short of 1 (:meth:`check_epochs`
    accepts it).

    Arguments
    ---------
    epochs : float
        Length of the ramp in epochs, > 0 (need not be whole).

    Example
    -------
    >>> ramp = Ramp(epochs=4)
    >>> ramp.progress_at(0.0), ramp.progress_at(1.0), ramp.progress_at(9.0)
    (0.0, 0.25, 1.0)
    >>> Ramp(epochs=0)
    Traceback (most recent call last):
    ...
    ValueError: epochs must be > 0, got 0
    """

    def __init__(self, epochs):
        check_number("epochs", epochs, low=0, open_low=True)
        self.epochs = epochs

    def __repr__(self):
        return f"Ramp(epochs={self.epochs})"

    def progress_at(self, epochs):
        """Return how far along the ramp is after ``epochs`` epochs.

        Arguments
        ---------
        epochs : float
            Training progress in epochs (fractional within an epoch).

        Returns
        -------
        float
            In [0, 1].
        """
        return min(max(epochs / self.epochs, 0.0), 1.0)


SCHEDULES = {
    "at_start": AtStart,
    "one_shot": OneShot,
    "incremental": Incremental,
    "gradual": Gradual,
    "ramp": Ramp,
}


def make_schedule(name, **options):
    """Return the schedule called ``name`` built with ``options``.

    Arguments
    ---------
    name : str
        ``at_start``, ``one_shot``, ``incremental``, ``gradual`` or
        ``ramp``.
    **options
        Arguments of that schedule's class.

    Returns
    -------
    Schedule
        The schedule.

    Example
    -------
    >>> make_schedule("one_shot", target=0.5)
    OneShot(target=0.5, epoch=1)
    >>> make_schedule("smooth", target=0.5)
    Traceback (most recent call last):
    ...
    ValueError: schedule: unknown name 'smooth'; choose from [...]
    """
    if name not in SCHEDULES:
        raise ValueError(
            f"schedule: unknown name {name!r}; choose from {sorted(SCHEDULES)}"
        )
    try:
        return SCHEDULES[name](**options)
    except TypeError as error:
        raise ValueError(f"schedule {name!r}: {error}") from error
