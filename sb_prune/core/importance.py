"""The importance protocol: one score per member of a group.

Every structural method starts by scoring the members of groups (the
hidden units of a feed-forward block, the heads of an attention, the
layers of a stack, single weights) and removing the lowest-scored ones.
:class:`Members` names the members of one module; :class:`Importance` is
what every scorer implements:

* the criteria of :mod:`sb_prune.methods.criteria` (magnitude, Taylor,
  activation, Wanda), which observe training batches and gradients;
* :class:`sb_prune.hooks.ConvexityScoring`, which scores the layers of an
  encoder by the graph convexity of their outputs (``observe_model``);
* :class:`sb_prune.analysis.LayerImportance`, which scores layers and
  their modules by the quality lost when they are reset.

The layer cut (:class:`sb_prune.hooks.LayerCut`) and federated dropout
(:class:`sb_prune.federated.dropout.DropoutPolicy`) read any of them.

Authors
 * sb_prune developers
"""

from sb_prune.core.registry import CRITERION_GROUPS, LAYER_GROUPS, spec_of

#: Every group an importance scores: the criterion groups of the registry,
#: and ``weights`` (the single weights of a Linear, unstructured).
GROUPS = (*CRITERION_GROUPS, "weights")


class Members:
    """The prunable members of one module, of one group.

    Arguments
    ---------
    path : str
        The module's path under the model's root.
    group : str
        One of ``GROUPS``.
    module : torch.nn.Module
        The module whose members these are (for ``layers``: the stack).
    owner : torch.nn.Module, optional
        For a Linear of an attention that applies its projections itself
        (``weights``; e.g. :class:`~sb_prune.nn.PrunableRelPosMHA`): the
        attention (the Linear's forward hooks do not fire).

    Example
    -------
    >>> from speechbrain.nnet.attention import PositionalwiseFeedForward
    >>> Members("f", "ffn", PositionalwiseFeedForward(6, input_size=2))
    Members('f', 'ffn', 6)
    """

    def __init__(self, path, group, module, owner=None):
        self.path = path
        self.group = group
        self.module = module
        self.owner = owner
        self.spec = None if group == "weights" else spec_of(module)

    def __repr__(self):
        return f"Members({self.path!r}, {self.group!r}, {self.count})"

    @property
    def count(self):
        """Number of members (units, heads, layers or weights)."""
        if self.spec is None:
            return self.module.weight.numel()
        return self.spec.count(self.module)

    def plan(self, kept):
        """Return the plan entry that keeps the members ``kept``.

        Arguments
        ---------
        kept : torch.LongTensor
            Sorted indices of the members to keep (not for ``weights``).

        Returns
        -------
        dict
            ``{group name: kept indices}`` for
            :func:`sb_prune.core.surgery.apply_plan`.
        """
        if self.spec is None:
            raise ValueError("single weights are masked, not planned")
        return self.spec.member_plan(self.module, kept)

    def consumer(self):
        """The module that reads the members' activations.

        Returns
        -------
        torch.nn.Module
            The Linear whose input columns are the members' outgoing
            weights (the Linear itself for ``weights``; the layer stack
            for ``layers``).
        """
        if self.group in LAYER_GROUPS or self.spec is None:
            return self.module
        return self.spec.require(
            "consumer", f"groups: {self.group}", type(self.module).__name__
        )(self.module)

    def per_member(self, per_unit):
        """Sum per-unit values into per-member values (units of heads).

        Arguments
        ---------
        per_unit : torch.Tensor
            One value per consumer input column.

        Returns
        -------
        torch.Tensor
            One value per member.
        """
        return self.spec.per_member(self.module, per_unit)


class Importance:
    """The importance protocol: score every member of some groups.

    A scorer is attached to the members it will score, observes the model
    (training batches through the forward hooks :meth:`attach` registers,
    gradients through :meth:`observe_gradients`, or the whole model on
    data of its own through :meth:`observe_model`), and returns one score
    per member, higher for the members to keep. Every method does nothing
    by default: a scorer overrides what it needs, and :meth:`score`.

    Example
    -------
    >>> import torch
    >>> from speechbrain.nnet.attention import PositionalwiseFeedForward
    >>> class Position(Importance):
    ...     def score(self, members):  # the later, the more important
    ...         return torch.arange(members.count, dtype=torch.float)
    >>> ffn = PositionalwiseFeedForward(4, input_size=2)
    >>> Position().score(Members("ffn", "ffn", ffn))
    tensor([0., 1., 2., 3.])
    """

    #: Whether it needs training batches (forward hooks, gradients) before
    #: it can score; its statistics are then summed over DDP processes
    #: (:meth:`all_reduce`) before a decision.
    data_driven = False

    def attach(self, members):
        """Start observing ``members`` (e.g. register forward hooks).

        Arguments
        ---------
        members : list of Members
            The members it will score.
        """

    def detach(self):
        """Stop observing (remove what :meth:`attach` registered)."""

    def observe_gradients(self, members, scale=1.0):
        """Read the gradients of a training batch (``.grad`` populated).

        Arguments
        ---------
        members : list of Members
            The members it scores.
        scale : float
            The loss scale that multiplies the gradients.
        """

    def observe_model(self, brain, when):
        """Measure the model as it is now, on data of its own.

        Arguments
        ---------
        brain : speechbrain.Brain
            The Brain whose model is measured.
        when : str
            The moment (``start``, ``epoch <n>``, ``step <n>``).

        Returns
        -------
        object
            What was measured, JSON-serialisable, for a decision record
            (None: nothing).
        """
        return None

    def all_reduce(self):
        """Make the statistics identical on every DDP process."""

    def score(self, members):
        """Return one importance score per member (higher: keep).

        Arguments
        ---------
        members : Members
            Members of a group the scorer handles.

        Returns
        -------
        torch.Tensor
            ``[members.count]`` (weight-shaped for ``weights``).
        """
        raise NotImplementedError

    def record_decision(self, decision):
        """Remember a decision taken from the scores (e.g. for a report).

        Arguments
        ---------
        decision : dict
            What was kept, JSON-serialisable.
        """

    def reset(self):
        """Forget the observations (after a pruning step)."""
