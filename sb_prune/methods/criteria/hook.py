"""The hook that prunes the lowest-scored groups on a schedule.

Authors
 * sb_prune developers
"""

import logging

import torch
from speechbrain.utils.distributed import ddp_broadcast

from sb_prune.core.registry import LAYER_GROUPS
from sb_prune.core.validation import (
    check_bool,
    check_choice,
    check_choices,
    check_int,
    check_strings,
)
from sb_prune.methods.criteria.compensation import (
    COMPENSATED_GROUPS,
    LeastSquaresCompensation,
)
from sb_prune.methods.criteria.criteria import (
    GROUPS,
    Criterion,
    global_keep,
    keep_top,
    make_criterion,
    require_members,
)
from sb_prune.training.hooks import (
    PruningHook,
    check_epochs,
    checked_schedule,
    moment,
    prune_by_plan,
)

#: How a step's sparsity is shared between the modules of a group.
ALLOCATIONS = ("uniform", "global")

logger = logging.getLogger(__name__)


class CriterionPruning(PruningHook):
    """Prune the lowest-scored members of groups, following a schedule.

    At the end of each training epoch where the schedule takes a step (or
    after the optimizer step, for a :class:`~sb_prune.schedules.Gradual`
    schedule), the criterion scores every member (units of each
    feed-forward block, heads of each attention, layers of each encoder or
    decoder, or single weights) within ``scope``. With ``allocation:
    uniform`` each module keeps its ``round(n_0 (1 - s_k))`` best members
    (``n_0``: what it had when the schedule started; at least
    ``min_units``); with ``allocation: global`` the members of a group are
    ranked together across modules and the group keeps its ``round(N_0 (1 -
    s_k))`` best, so each module's budget follows its measured importance
    (use it with a criterion whose scores compare across layers, such as
    ``taylor``: an estimate of the loss change). Scores of
    data-driven criteria are collected during the training batches since
    the previous step and summed over DDP processes; the plan is broadcast
    from the main process. Structured groups are removed physically;
    ``weights`` are zeroed and kept at zero by a mask (no speed-up without
    sparse kernels).

    Arguments
    ---------
    criterion : str or sb_prune.methods.criteria.criteria.Criterion
        ``magnitude``, ``taylor``, ``activation``, ``wanda``, or an
        instance (``!new:sb_prune.methods.criteria.Taylor``).
    schedule : sb_prune.training.schedules.Schedule
        ``!new:sb_prune.schedules.OneShot``, ``Incremental``, ``Gradual``
        or ``AtStart`` (prune the loaded model before fine-tuning), with a
        target sparsity.
    groups : list of str
        A subset of ``ffn, heads, layers, decoder_layers`` (structured), or
        ``[weights]`` (unstructured); a single name is a list of one.
    min_units : int
        Members each module always keeps, >= 1.
    scope : list of str, optional
        Paths of the modules (relative to the Brain's ``modules``, e.g.
        ``whisper.model.encoder``) whose members are pruned; default: all.
    allocation : str
        ``uniform`` (every module loses the same fraction) or ``global``
        (see above).
    compensate : bool
        Before each step, refit the Linear that reads the pruned units or
        heads so that its output on the training frames seen since the
        previous step changes least (least squares,
        :mod:`sb_prune.methods.criteria.compensation`); groups ``ffn`` and
        ``heads`` only, and never at the start (it needs those frames).

    name : str, optional
        The key of the hook's state in checkpoints (default: the class
        name); needed when ``prune_hooks`` has two hooks of this class.

    Example
    -------
    >>> from sb_prune.training.schedules import Incremental
    >>> hook = CriterionPruning(
    ...     "taylor", Incremental(0.5, steps=2), groups=["ffn", "heads"]
    ... )
    >>> hook.schedule.sparsity(1), hook.keep_count(8, count=8, step=1)
    (0.4375, 5)
    >>> CriterionPruning("taylor", Incremental(0.5), groups="ffn").groups
    ['ffn']
    >>> CriterionPruning("taylor", Incremental(0.5), groups=["rows"])
    Traceback (most recent call last):
    ...
    ValueError: groups: unknown ['rows']; choose from [...]
    """

    def __init__(
        self,
        criterion,
        schedule,
        groups=("ffn",),
        min_units=1,
        scope=None,
        allocation="uniform",
        compensate=False,
        name=None,
    ):
        super().__init__(name)
        if isinstance(criterion, str):
            criterion = make_criterion(criterion)
        if not isinstance(criterion, Criterion):
            raise ValueError(
                "criterion must be a name or an sb_prune.methods.criteria "
                f"Criterion, got {type(criterion).__name__}"
            )
        groups = check_choices("groups", groups, GROUPS)
        if "weights" in groups and len(groups) > 1:
            raise ValueError(
                "groups: 'weights' (unstructured masks) cannot be combined "
                "with structured groups: masks do not follow their surgery"
            )
        check_int("min_units", min_units, minimum=1)
        self.scope = None
        if scope is not None:
            self.scope = check_strings("scope", scope)
        self.allocation = check_choice("allocation", allocation, ALLOCATIONS)
        self.compensation = None
        if check_bool("compensate", compensate):
            others = [g for g in groups if g not in COMPENSATED_GROUPS]
            if others:
                raise ValueError(
                    f"compensate: refits what reads pruned "
                    f"{' or '.join(COMPENSATED_GROUPS)}, not {others}"
                )
            self.compensation = LeastSquaresCompensation()
        self.criterion = criterion
        self.schedule = checked_schedule(schedule)
        self.groups = groups
        self.min_units = min_units
        self.step = 0
        self.history = []
        self.initial = {}
        self._members = []
        self._masks = {}
        self._global = {}

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

    def _in_scope(self, path):
        return self.scope is None or any(
            path == prefix or path.startswith(prefix + ".")
            for prefix in self.scope
        )

    def _find(self, brain):
        root = brain.unwrapped_modules()
        for prefix in self.scope or []:
            try:
                root.get_submodule(prefix)
            except AttributeError:
                raise ValueError(
                    f"scope: the Brain's modules have no {prefix!r}"
                ) from None
        self._members = [
            members
            for members in require_members(root, self.groups)
            if self._in_scope(members.path)
        ]
        found = {members.group for members in self._members}
        outside = [group for group in self.groups if group not in found]
        if outside:
            raise ValueError(
                f"scope {self.scope}: the groups {outside} have no member there"
            )
        self.criterion.attach(self._members)
        if self.compensation is None:
            return
        # From zero after each step; summing moments costs a product per
        # forward: only while a step that removes members is still to come.
        if self.step < self.schedule.steps and self.schedule.target != 0:
            self.compensation.attach(self._members)
        else:
            self.compensation.detach()

    def on_fit_start(self, brain):
        """Check the model and schedule; attach the criterion; re-mask.

        A step due when training starts (``AtStart``) is taken now.
        """
        check_epochs(self.schedule, brain)
        self._find(brain)
        for members in self._members:
            self.initial.setdefault(members.path, members.count)
        if self.unstructured and self.step > 0:
            self._masks = {
                members.module.weight: members.module.weight != 0
                for members in self._members
            }
        steps = self.schedule.due_at_start(self.step)
        return self._take_due(brain, steps, "start")

    def on_gradients(self, brain):
        """Let data-driven criteria read the gradients."""
        self.criterion.observe_gradients(
            self._members, brain.scaler.get_scale()
        )

    def on_optimizer_step(self, brain):
        """Keep masked weights at zero; take a step due after this one."""
        for weight, mask in self._masks.items():
            weight.data.mul_(mask)
        steps = self.schedule.due_at_step(self.step, brain.optimizer_step)
        return self._take_due(brain, steps, f"step {brain.optimizer_step}")

    def on_train_epoch_end(self, brain, epoch):
        """Take the schedule's step(s) due at the end of this epoch."""
        steps = self.schedule.due(self.step, epoch)
        return self._take_due(brain, steps, epoch)

    def _take_due(self, brain, steps, when):
        if steps:
            # Sizes are relative to the start: several due steps (a run
            # resumed past them) are the last one.
            self._take_step(brain, steps[-1], when)
        return bool(steps) and not self.unstructured

    def _take_step(self, brain, step, when):
        if self.criterion.data_driven:
            self.criterion.all_reduce()
        self._global = {}
        if self.unstructured:
            self._mask_weights(step)
        else:
            # Layer cuts renumber the paths below them: apply them last.
            ordered = sorted(
                self._members, key=lambda m: m.group in LAYER_GROUPS
            )
            kept = {m.path: self._kept(m, step) for m in ordered}
            if self.compensation is not None:
                self._compensate(ordered, ddp_broadcast(kept))
            plan = {
                m.path: m.plan(kept[m.path])
                for m in ordered
                if kept[m.path] is not None
            }
            prune_by_plan(brain, plan)
            self._renumber(plan)
        self.step = step
        dropped = self.criterion.non_finite
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
                "epoch": when,
                "step": step,
                "sparsity": self.schedule.sparsity(step),
                "kept": counts,
            }
        )
        logger.info(
            f"sb_prune: {self.criterion!r} step {step}/"
            f"{self.schedule.steps} at {moment(when)}, kept {counts}; "
            f"{dropped} non-finite observations dropped"
        )

    def _compensate(self, members, kept):
        """Refit the consumers of the members that lose some.

        Every process refits alike: the moments are summed over processes
        and ``kept`` is the main process's choice.
        """
        self.compensation.all_reduce()
        for item in members:
            if kept[item.path] is not None:
                self.compensation.compensate(item, kept[item.path])

    def _kept(self, members, step):
        """Indices a module keeps at this step, or None if it keeps all."""
        if self.allocation == "global" and members.group not in LAYER_GROUPS:
            kept = self._global_kept(members.group, step)[members.path]
        else:
            initial = self.initial[members.path]
            keep = self.keep_count(initial, members.count, step)
            kept = None
            if keep < members.count:
                kept = keep_top(self.criterion.score(members), keep)
        return None if kept is None or len(kept) == members.count else kept

    def _global_kept(self, group, step):
        """``{path: kept indices}`` of one group ranked across modules."""
        if group not in self._global:
            self._global[group] = global_keep(
                [m for m in self._members if m.group == group],
                {m.path: self.criterion.score(m) for m in self._members},
                self.initial,
                self.schedule.sparsity(step),
                self.min_units,
            )
        return self._global[group]

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
