"""The layer cut as a PruningBrain hook: remove encoder layers once.

Authors
 * sb_prune developers
"""

import logging

import torch

from sb_prune.core.encoders import find_layer_stack
from sb_prune.core.validation import check_int
from sb_prune.methods.layer_cut.rules import (
    SCORED_RULES,
    check_rule,
    choose_layers,
)
from sb_prune.training.hooks import PruningHook, number_of_epochs, prune_by_plan

logger = logging.getLogger(__name__)


class LayerCut(PruningHook):
    """Remove encoder layers once, as a rule chooses; fine-tuning goes on.

    The cut happens when training starts (``at_epoch: 0``, e.g. on a
    pretrained model, as in Dorszewski et al. 2024) or at the end of
    training epoch ``at_epoch`` (before validation). It goes through
    :func:`sb_prune.hooks.prune_by_plan`, so it is identical on every
    process, the optimizer is rebuilt and checkpoints record the smaller
    stack.

    Arguments
    ---------
    rule : str
        ``peak`` or ``fraction`` (convexity-based, need ``scoring``),
        ``first``, ``last`` or ``evenly_spaced`` (need ``n_layers``), or
        ``none`` (keep every layer: a baseline run with the same hooks).
        See :func:`sb_prune.methods.layer_cut.rules.choose_layers`.
    scoring : ConvexityScoring, optional
        The scoring whose curve ``peak`` and ``fraction`` read (scored at
        the moment of the cut if it has not been yet).
    n_layers : int, optional
        Layers kept by ``first``, ``last`` and ``evenly_spaced``.
    fraction : float, optional
        For ``fraction``: cut at the first depth reaching this fraction of
        the peak convexity, in (0, 1].
    tolerance : float
        For ``peak``: cut at the first depth within this many points of
        the peak.
    at_epoch : int
        0: when training starts; n: after training epoch n.
    encoder : str, optional
        Path of the layer stack; default: that of ``scoring``, else the
        first module called ``encoder`` with a ``layers`` ModuleList.

    name : str, optional
        The key of the hook's state in checkpoints (default: the class
        name); needed when ``prune_hooks`` has two hooks of this class.

    Example
    -------
    >>> LayerCut("evenly_spaced", n_layers=2).rule
    'evenly_spaced'
    >>> LayerCut("peak")
    Traceback (most recent call last):
    ...
    ValueError: scoring must be a ConvexityScoring for rule 'peak', got None
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
        at_epoch=0,
        encoder=None,
        name=None,
    ):
        super().__init__(name)
        check_rule(rule, n_layers, fraction, tolerance)
        # A layer scoring (ConvexityScoring): ``scores(brain, when)``.
        scores = getattr(scoring, "scores", None)
        if rule in SCORED_RULES and not callable(scores):
            raise ValueError(
                f"scoring must be a ConvexityScoring for rule '{rule}', got "
                f"{type(scoring).__name__ if scoring is not None else None}"
            )
        check_int("at_epoch", at_epoch, minimum=0)
        self.rule = rule
        self.scoring = scoring
        self.n_layers = n_layers
        self.fraction = fraction
        self.tolerance = tolerance
        self.at_epoch = at_epoch
        if encoder is None and scoring is not None:
            encoder = scoring.encoder
        self.encoder = encoder
        self.decision = None

    def on_fit_start(self, brain):
        """Check the set-up; cut now if ``at_epoch`` is 0."""
        find_layer_stack(brain.unwrapped_modules(), self.encoder)
        limit = number_of_epochs(brain)
        if limit is not None and self.at_epoch > limit:
            raise ValueError(
                f"at_epoch ({self.at_epoch}) is after the last epoch "
                f"({limit}): the cut would never happen"
            )
        return self.at_epoch == 0 and self.cut(brain, "start")

    def on_train_epoch_end(self, brain, epoch):
        """Cut after epoch ``at_epoch``."""
        return epoch == self.at_epoch and self.cut(brain, f"epoch {epoch}")

    def cut(self, brain, when):
        """Choose the layers and remove the others (once).

        Arguments
        ---------
        brain : sb_prune.PruningBrain
            The Brain whose encoder is cut.
        when : str
            ``start`` or ``epoch <n>`` (the moment scored for convexity).

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
        scores = None
        if self.rule in SCORED_RULES:
            scores = self.scoring.scores(brain, when)
        kept = choose_layers(
            self.rule,
            total,
            scores,
            self.n_layers,
            self.fraction,
            self.tolerance,
        )
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
            "scores": scores,
        }
        if self.scoring is not None:
            self.scoring.record_cut(self.decision)
        logger.info(
            f"sb_prune: layer cut ({self.rule}) at {when}: kept layers "
            f"{[k + 1 for k in kept]} of {total} in {path}"
        )
        return pruned

    def state_dict(self):
        """Return the decision (None before the cut)."""
        return {"decision": self.decision}

    def load_state_dict(self, state):
        """Restore the decision (a resumed run does not cut again)."""
        self.decision = state["decision"]
