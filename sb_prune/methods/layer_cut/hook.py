"""The layer cut as a PruningBrain hook: remove encoder layers once.

Authors
 * sb_prune developers
"""

import logging

import torch

from sb_prune.core.encoders import find_layer_stack
from sb_prune.core.importance import Importance, Members
from sb_prune.core.validation import check_int, check_string
from sb_prune.methods.layer_cut.rules import (
    SCORED_RULES,
    check_rule,
    choose_layers,
    scored_depth,
)
from sb_prune.training.hooks import OnceHook, check_epochs, prune_by_plan
from sb_prune.training.schedules import AtStart, OneShot

logger = logging.getLogger(__name__)


class LayerCut(OnceHook):
    """Remove encoder layers once, as a rule chooses; fine-tuning goes on.

    The cut happens when its schedule's one step is due: when training
    starts (``at_epoch: 0``, e.g. on a pretrained model, as in Dorszewski
    et al. 2024), at the end of training epoch ``at_epoch`` (before
    validation), or after an optimizer step (``schedule:`` a one-step
    ``Gradual``). It goes through :func:`sb_prune.hooks.prune_by_plan`, so
    it is identical on every process, the optimizer is rebuilt and
    checkpoints record the smaller stack.

    The scored rules read the layer scores of ``scoring``, an
    :class:`~sb_prune.core.importance.Importance` of the ``layers`` group:
    the hook attaches it to the encoder's layers when training starts,
    lets it read the gradients (a data-driven criterion such as
    ``Taylor``), has it measure the model at the moment of the cut
    (:meth:`~sb_prune.core.importance.Importance.observe_model`: a
    :class:`~sb_prune.hooks.ConvexityScoring` scores its convexity curve
    then, unless it already has) and tells it the decision.

    Arguments
    ---------
    rule : str
        ``peak`` or ``fraction`` (scored, need ``scoring``), ``first``,
        ``last`` or ``evenly_spaced`` (need ``n_layers``), or ``none``
        (keep every layer: a baseline run with the same hooks). See
        :func:`sb_prune.methods.layer_cut.rules.choose_layers` and
        :func:`~sb_prune.methods.layer_cut.rules.scored_depth`.
    scoring : Importance, optional
        The scores ``peak`` and ``fraction`` read: a ConvexityScoring (the
        convexity of each layer's output), or any importance of layers.
    n_layers : int, optional
        Layers kept by ``first``, ``last`` and ``evenly_spaced``.
    fraction : float, optional
        For ``fraction``: cut at the first layer reaching this fraction of
        the peak score, in (0, 1].
    tolerance : float
        For ``peak``: cut at the first layer within this many points of
        the peak.
    at_epoch : int, optional
        Shorthand for ``schedule``: 0 (the default) when training starts
        (``AtStart()``), n after training epoch n (``OneShot(epoch: n)``).
    encoder : str, optional
        Path of the layer stack; default: that of ``scoring``, else the
        first module called ``encoder`` with a ``layers`` ModuleList.
    schedule : sb_prune.training.schedules.Schedule, optional
        When the cut happens: a one-step schedule without target
        (``AtStart``, ``OneShot``, ``Gradual`` with ``steps: 1``).

    name : str, optional
        The key of the hook's state in checkpoints (default: the class
        name); needed when ``prune_hooks`` has two hooks of this class.

    Example
    -------
    >>> LayerCut("evenly_spaced", n_layers=2).schedule
    AtStart(target=None)
    >>> LayerCut("last", n_layers=2, at_epoch=3).schedule
    OneShot(target=None, epoch=3)
    >>> LayerCut("peak")
    Traceback (most recent call last):
    ...
    ValueError: scoring must be a ConvexityScoring for rule 'peak' (or ...
    >>> LayerCut("last", n_layers=2, at_epoch="1")
    Traceback (most recent call last):
    ...
    ValueError: at_epoch must be an integer >= 0, got '1'
    """

    def __init__(
        self,
        rule="peak",
        scoring=None,
        n_layers=None,
        fraction=None,
        tolerance=0.0,
        at_epoch=None,
        encoder=None,
        schedule=None,
        name=None,
    ):
        check_rule(rule, n_layers, fraction, tolerance)
        needed = rule in SCORED_RULES or scoring is not None
        if needed and not isinstance(scoring, Importance):
            raise ValueError(
                f"scoring must be a ConvexityScoring for rule '{rule}' (or "
                "another sb_prune Importance of layers), got "
                f"{type(scoring).__name__ if scoring is not None else None}"
            )
        self.schedule_key = "schedule"
        if schedule is None:
            self.schedule_key = "at_epoch"
            at_epoch = 0 if at_epoch is None else at_epoch
            check_int("at_epoch", at_epoch, minimum=0)
            schedule = OneShot(epoch=at_epoch) if at_epoch else AtStart()
        elif at_epoch is not None:
            raise ValueError("give at_epoch or schedule, not both")
        super().__init__(schedule, name=name)
        self.rule = rule
        self.scoring = scoring
        self.n_layers = n_layers
        self.fraction = fraction
        self.tolerance = tolerance
        if encoder is None:
            encoder = getattr(scoring, "encoder", None)
        else:
            check_string("encoder", encoder)
        self.encoder = encoder
        self.decision = None
        self._members = []

    @property
    def done(self):
        """Steps of the schedule taken: 1 once the cut is decided."""
        return int(self.decision is not None)

    def on_fit_start(self, brain):
        """Check the set-up; attach the scoring; cut now if due."""
        path, encoder = find_layer_stack(
            brain.unwrapped_modules(), self.encoder
        )
        check_epochs(self.schedule, brain, self.schedule_key)
        if self.scoring is not None and self.decision is None:
            self._members = [Members(path, "layers", encoder)]
            self.scoring.attach(self._members)
        due = self.schedule.due_at_start(self.done)
        return bool(due) and self.act(brain, "start")

    def on_gradients(self, brain):
        """Let a data-driven scoring read the gradients."""
        if self._members and self.scoring.data_driven:
            self.scoring.observe_gradients(
                self._members, brain.scaler.get_scale()
            )

    def act(self, brain, when):
        """Choose the layers and remove the others (once).

        Arguments
        ---------
        brain : sb_prune.PruningBrain
            The Brain whose encoder is cut.
        when : str
            ``start``, ``epoch <n>`` or ``step <n>`` (the moment the
            scoring measures).

        Returns
        -------
        bool
            Whether layers were removed.
        """
        if self.decision is not None:
            return False
        path, encoder = find_layer_stack(
            brain.unwrapped_modules(), self.encoder
        )
        total = len(encoder.layers)
        measured, layer_scores = None, None
        if self.rule in SCORED_RULES:
            measured, layer_scores = self._score(brain, when, path, encoder)
            depth = scored_depth(
                layer_scores, self.rule, self.fraction, self.tolerance
            )
            kept = list(range(depth))
        else:
            kept = choose_layers(self.rule, total, n_layers=self.n_layers)
        plan = {}
        if len(kept) < total:
            plan = {path: {"layers": torch.tensor(kept)}}
        pruned = prune_by_plan(brain, plan)
        self.decision = {
            "when": when,
            "rule": self.rule,
            "encoder": path,
            "kept": kept,
            "total": total,
            "scores": measured,
            "layer_scores": layer_scores,
        }
        if self.scoring is not None:
            self.scoring.detach()
            self.scoring.record_decision(self.decision)
        self._members = []
        logger.info(
            f"sb_prune: layer cut ({self.rule}) at {when}: kept layers "
            f"{[k + 1 for k in kept]} of {total} in {path}"
        )
        return pruned

    def _score(self, brain, when, path, encoder):
        """What the scoring measured now, and its score of each layer."""
        measured = self.scoring.observe_model(brain, when)
        if self.scoring.data_driven:
            self.scoring.all_reduce()
        scores = self.scoring.score(Members(path, "layers", encoder))
        return measured, [float(score) for score in scores]

    def state_dict(self):
        """Return the decision (None before the cut)."""
        return {"decision": self.decision}

    def load_state_dict(self, state):
        """Restore the decision (a resumed run does not cut again)."""
        self.decision = state["decision"]
