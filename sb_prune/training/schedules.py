"""Pruning schedules: when to prune, and to which sparsity.

A schedule is a list of steps; step ``k`` (1-based) happens at the end of
training epoch :meth:`Schedule.epoch_of` ``(k)`` (or, for :class:`Gradual`,
after optimizer step :meth:`Schedule.epoch_of` ``(k)``) and brings the
sparsity to :meth:`Schedule.sparsity` ``(k)``. Fine-tuning happens
between steps and after the last one.

* :class:`OneShot`: a single step to the target;
* :class:`Incremental`: ``steps`` steps with a ``linear`` or ``cubic``
  ramp, at the end of epochs. The cubic ramp is the gradual pruning
  schedule of Zhu and Gupta (2017), ``s_k = s_f + (s_i - s_f) (1 - k /
  n)^3``: large steps first, while the network still has redundancy, small
  ones at the end;
* :class:`Gradual`: the same ramp in many small steps spread over the
  optimizer steps of fine-tuning (a pretrained model loses little at each
  step and recovers before the next one).

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


class Schedule:
    """Steps towards a target sparsity, at the end of training epochs.

    ``unit`` says when a hook takes the steps: ``epoch`` (at the end of
    training epochs, :meth:`due`) or ``step`` (after optimizer steps,
    :meth:`due_at_step`).

    Arguments
    ---------
    target : float
        Final sparsity, in [0, 1).
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
        target,
        steps=1,
        ramp="cubic",
        start_epoch=1,
        every=1,
        initial=0.0,
    ):
        check_sparsity("target", target)
        check_int("steps", steps, minimum=1)
        check_int("start_epoch", start_epoch, minimum=1)
        check_int("every", every, minimum=1)
        check_choice("ramp", ramp, RAMPS)
        check_sparsity("initial", initial)
        if initial > target:
            raise ValueError(
                f"initial ({initial}) must not exceed target ({target})"
            )
        self.target = float(target)
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

    def place(self, total_steps):
        """Fit the schedule to a run of ``total_steps`` optimizer steps.

        Nothing to do but for :class:`Gradual` with a ``span``.

        Arguments
        ---------
        total_steps : int
            Optimizer steps of the whole run.
        """

    def due(self, done, epoch):
        """Return the steps due at the end of ``epoch``.

        Arguments
        ---------
        done : int
            Steps already taken.
        epoch : int
            The epoch that just ended.

        Returns
        -------
        list of int
            Step numbers to take now, in order (usually zero or one); none
            for a schedule in optimizer steps.

        Example
        -------
        >>> Incremental(0.5, steps=3, start_epoch=2).due(done=1, epoch=3)
        [2]
        """
        return self._due(done, epoch) if self.unit == "epoch" else []

    def due_at_step(self, done, optimizer_step):
        """Return the steps due after optimizer step ``optimizer_step``.

        Arguments
        ---------
        done : int
            Steps already taken.
        optimizer_step : int
            Optimizer steps taken since training started (SpeechBrain's
            ``Brain.optimizer_step``, kept in checkpoints).

        Returns
        -------
        list of int
            Step numbers to take now; none for a schedule in epochs.

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

    def check_epochs(self, number_of_epochs):
        """Raise a ValueError if the schedule does not fit in training.

        A schedule in optimizer steps is not checked (the steps of an epoch
        are known only once the data loader is built).

        Arguments
        ---------
        number_of_epochs : int
            The number of training epochs.

        Example
        -------
        >>> Incremental(0.5, steps=4, every=2).check_epochs(6)
        Traceback (most recent call last):
        ...
        ValueError: schedule: step 4 of Incremental(...) would prune at the end
        of epoch 7, but number_of_epochs is 6; lower steps, every or start_epoch
        """
        if self.unit == "epoch" and self.last_epoch > number_of_epochs:
            raise ValueError(
                f"schedule: step {self.steps} of {self!r} would prune at the "
                f"end of epoch {self.last_epoch}, but number_of_epochs is "
                f"{number_of_epochs}; lower steps, every or start_epoch"
            )


class OneShot(Schedule):
    """Prune to the target in one step, at the end of ``epoch``.

    Arguments
    ---------
    target : float
        Sparsity, in [0, 1).
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

    def __init__(self, target, epoch=1):
        check_int("epoch", epoch, minimum=1)
        super().__init__(target, steps=1, ramp="linear", start_epoch=epoch)

    def __repr__(self):
        return f"OneShot(target={self.target}, epoch={self.start_epoch})"


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
    target : float
        Final sparsity, in [0, 1).
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
        target,
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


SCHEDULES = {
    "one_shot": OneShot,
    "incremental": Incremental,
    "gradual": Gradual,
}


def make_schedule(name, **options):
    """Return the schedule called ``name`` built with ``options``.

    Arguments
    ---------
    name : str
        ``one_shot``, ``incremental`` or ``gradual``.
    **options
        Arguments of :class:`OneShot`, :class:`Incremental` or
        :class:`Gradual`.

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
