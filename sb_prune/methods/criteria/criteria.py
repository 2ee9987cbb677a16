"""Importance criteria: which units, heads, layers or weights to remove.

A criterion scores the members of *groups* of a model (it implements the
importance protocol, :class:`sb_prune.core.importance.Importance`, over
the :class:`~sb_prune.core.importance.Members` of :func:`find_members`);
the lowest-scored members are pruned (see
:class:`sb_prune.hooks.CriterionPruning`). Groups:

* ``ffn``: the hidden units of every feed-forward block;
* ``heads``: the heads of every prunable attention
  (:class:`~sb_prune.nn.PrunableMHA`, :class:`~sb_prune.nn.PrunableRelPosMHA`;
  convert with ``sb_prune.convert(model, prunable_attention={})``);
* ``layers``: the layers of every encoder stack;
* ``weights``: the single weights of every ``Linear`` of the modules of an
  encoder layer (unstructured: pruning them zeroes entries, which saves
  time only with sparse kernels).

Which module types hold these groups is the registry's knowledge (the
``criterion_group`` of each type the families of :mod:`sb_prune.families`
register: SpeechBrain Conformer and Transformer encoders, decoders and
LMs, the Hugging Face wav2vec2, HuBERT and WavLM encoders, Whisper's
encoder and decoder; ``decoder_layers``: the layers of decoder stacks).

Criteria (Emili et al. 2023 compare magnitude with data-driven ones):

* :class:`Magnitude`: the L2 norm of a member's weights (all the rows and
  columns that are removed with it);
* :class:`Taylor`: the first-order estimate of the loss change when the
  member is removed, ``|sum_i w_i dL/dw_i|`` over the member's outgoing
  weights, averaged over training batches. For a hidden unit or a head the
  outgoing weights are the columns of the next projection, which makes the
  estimate exact to first order (removing the unit zeroes its activation
  ``a`` and ``sum_o W_oj dL/dW_oj = sum_t a_j dL/da_j``). For a layer it is
  ``|sum (x_in - x_out) . dL/dx_out|``, for a single weight ``|w dL/dw|``;
* :class:`Activation`: the mean absolute activation of a unit or head (the
  mean relative update ``||x_out - x_in|| / ||x_in||`` of a layer,
  ``|W_ij| mean|x_j|`` of a weight);
* :class:`Wanda`: ``sum_o |W_oj| ||x_j||_2`` over the outgoing weights
  (Sun et al. 2023; ``|W_ij| ||x_j||_2`` for single weights).

Data-driven criteria accumulate statistics during training batches (never
during validation). Their statistics are sums, so under DDP they are summed
over processes before a decision (:meth:`Criterion.all_reduce`), and every
process takes the same decision.

Authors
 * sb_prune developers
"""

import torch
import torch.nn.functional as F
from speechbrain.utils.distributed import ddp_all_reduce
from torch import nn

from sb_prune.core.importance import GROUPS, Importance, Members
from sb_prune.core.registry import (
    LAYER_GROUPS,
    answered,
    layer_spec,
    refusal,
    spec_of,
)
from sb_prune.core.validation import check_choices
from sb_prune.methods.low_rank.layer import LowRankLinear

#: The spec answer of attention that applies its projections itself
#: (functionally, on packed weights): forward hooks on them never fire, so
#: their inputs are observed by one forward hook on the attention.
OWN_PROJECTIONS = "applies_own_projections"


def applies_own_projections(module):
    """Whether attention applies its projections itself (see above)."""
    spec = spec_of(module)
    return spec is not None and spec.answers.get(OWN_PROJECTIONS, False)


def find_members(root, groups):
    """Return the prunable members of ``root`` for the given groups.

    Arguments
    ---------
    root : torch.nn.Module
        The model (or ModuleDict of modules).
    groups : list of str
        A subset of ``GROUPS`` (a single name is a list of one).

    Returns
    -------
    list of Members
        In module order, grouped by module.

    Example
    -------
    >>> from speechbrain.lobes.models.transformer.Transformer import (
    ...     TransformerEncoder,
    ... )
    >>> enc = TransformerEncoder(2, 2, 8, d_model=4)
    >>> find_members(enc, ["layers", "ffn"])
    [Members('', 'layers', 2), Members('layers.0.pos_ffn', 'ffn', 8), \
Members('layers.1.pos_ffn', 'ffn', 8)]
    """
    groups = check_choices("groups", groups, GROUPS)
    found = []
    for path, module in root.named_modules():
        spec = spec_of(module)
        if spec is not None and spec.criterion_group in groups:
            found.append(Members(path, spec.criterion_group, module))
        if "weights" in groups and layer_spec(module) is not None:
            found.extend(_layer_weights(path, module))
    for members in found:
        if members.spec is None or members.spec.linears is None:
            continue
        linears = [
            getattr(parent, name)
            for parent, name in members.spec.linears(members.module)
        ]
        if any(isinstance(linear, LowRankLinear) for linear in linears):
            raise ValueError(
                f"groups: '{members.path}' is low rank; prune its rank "
                f"(LowRankCompression), not its {members.group}"
            )
    return found


def require_members(root, groups, method="CriterionPruning"):
    """Return :func:`find_members`, or raise naming a group without any.

    The error names the method, the group and the model's families, with
    their reasons (their ``refusals`` of the group, see
    :mod:`sb_prune.families`).

    Arguments
    ---------
    root : torch.nn.Module
        The model (or ModuleDict of modules).
    groups : list of str
        A subset of ``GROUPS``.
    method : str
        What asks, for the message.

    Returns
    -------
    list of Members
        As :func:`find_members` returns them.

    Example
    -------
    >>> from speechbrain.lobes.models.transformer.Transformer import (
    ...     TransformerEncoder,
    ... )
    >>> require_members(TransformerEncoder(1, 2, 8, d_model=4), ["heads"])
    Traceback (most recent call last):
    ...
    ValueError: CriterionPruning groups 'heads': the model's SpeechBrain ...
    """
    members = find_members(root, groups)
    found = {m.group for m in members}
    for group in groups:
        if group in found:
            continue
        hint = None
        if group == "heads" and answered(root, "prunable_attention"):
            hint = "add prunable_attention to sb_prune.convert"
        raise refusal(root, group, hint, f"{method} groups '{group}'")
    return members


def _layer_weights(path, layer):
    """The single-weight members of an encoder layer's modules.

    Only the Linear layers of the modules its spec names (feed-forward
    blocks, attention, convolution), not those of sb_prune's own additions
    (gate predictors); a low-rank factor is refused.
    """
    found = []
    for children in layer_spec(layer).layer_modules.values():
        for child in children:
            for name, linear in layer.get_submodule(child).named_modules():
                if type(linear) is not nn.Linear:
                    continue
                full = f"{child}.{name}".rstrip(".")
                parent = layer.get_submodule(full.rpartition(".")[0])
                spec = spec_of(parent)
                if spec is not None and "rank" in spec.groups:
                    raise ValueError(
                        f"groups: '{path}.{full}' is a low-rank factor; "
                        "prune its rank (LowRankCompression), not its weights"
                    )
                owner = parent if applies_own_projections(parent) else None
                found.append(
                    Members(f"{path}.{full}", "weights", linear, owner)
                )
    return found


def _outgoing(members, weight):
    """Per-member sum over the outgoing weights (columns of the consumer)."""
    return members.per_member(weight.sum(0))


class Criterion(Importance):
    """Base class of importance criteria.

    A criterion is an :class:`~sb_prune.core.importance.Importance`:
    attached to the members of :func:`find_members`, it scores each of
    them (higher: keep).

    Subclasses implement :meth:`score`, and the statistics they need:
    gradients (:meth:`observe_gradients`, called before each optimizer
    step) or activations (forward hooks registered by :meth:`attach`).
    Statistics are float32 sums kept in ``self.stats``, keyed by
    ``(members path, name)``, and allocated (zeros) when the criterion
    attaches (:meth:`stat_shapes`): every DDP process has the same keys even
    if it never runs some module (LayerDrop, a closed I3D gate), so the
    collectives of :meth:`all_reduce` match. Non-finite observations (fp16
    overflow, steps the GradScaler skips) are dropped and counted in
    ``non_finite``.
    """

    def __init__(self):
        self.stats = {}
        self.batches = 0
        self.observations = 0
        self.non_finite = 0
        self._handles = []

    def __repr__(self):
        return f"{type(self).__name__}()"

    def _add(self, key, value):
        value = value.detach().float()
        if not bool(torch.isfinite(value).all()):
            self.non_finite += 1
            return
        self.observations += 1
        if key in self.stats:
            self.stats[key] = self.stats[key] + value
        else:
            self.stats[key] = value.clone()

    def stat_shapes(self, members):
        """The statistics the criterion keeps for some members.

        Arguments
        ---------
        members : Members
            From :func:`find_members`.

        Returns
        -------
        dict
            ``{name: shape}`` (none for a data-free criterion).
        """
        return {}

    def attach(self, members):
        """Allocate the statistics and start collecting them.

        Subclasses add their forward hooks after calling this.

        Arguments
        ---------
        members : list of Members
            From :func:`find_members`.
        """
        self.detach()
        for item in members:
            device = next(item.module.parameters()).device
            for name, shape in self.stat_shapes(item).items():
                key = (item.path, name)
                if key not in self.stats:
                    self.stats[key] = torch.zeros(shape, device=device)

    def detach(self):
        """Remove the forward hooks registered by :meth:`attach`."""
        for handle in self._handles:
            handle.remove()
        self._handles = []

    def reset(self):
        """Forget the statistics (after a pruning step)."""
        self.stats = {}
        self.batches = 0
        self.observations = 0
        self.non_finite = 0

    def observe_gradients(self, members, scale=1.0):
        """Accumulate gradient statistics (``.grad`` still populated).

        Arguments
        ---------
        members : list of Members
            From :func:`find_members`.
        scale : float
            The loss scale that multiplies the gradients.
        """
        self.batches += 1

    def all_reduce(self):
        """Sum the statistics over DDP processes (no-op otherwise).

        The observation count is summed too, so that every process agrees
        on whether there is anything to score.
        """
        for key in sorted(self.stats):
            self.stats[key] = ddp_all_reduce(
                self.stats[key], torch.distributed.ReduceOp.SUM
            )
        device = next(iter(self.stats.values())).device if self.stats else None
        count = torch.tensor(float(self.observations), device=device)
        count = ddp_all_reduce(count, torch.distributed.ReduceOp.SUM)
        self.observations = int(count)

    def _stat(self, members, name):
        key = (members.path, name)
        if key not in self.stats or self.observations == 0:
            raise ValueError(
                f"criterion {type(self).__name__} has no statistics for "
                f"'{members.path}': data-driven criteria need at least one "
                "training batch before a pruning step"
            )
        return self.stats[key]


class Magnitude(Criterion):
    """The L2 norm of each member's weights (data-free).

    Units and heads: every row and column removed with them (and biases);
    layers: the root-mean-square of the layer's weight matrices (a weak
    baseline: it says nothing about what the layer computes); weights:
    ``|w|``.

    Example
    -------
    >>> from speechbrain.nnet.attention import PositionalwiseFeedForward
    >>> ffn = PositionalwiseFeedForward(d_ffn=3, input_size=2)
    >>> with torch.no_grad():
    ...     for p in ffn.parameters():
    ...         _ = p.fill_(0.1)
    ...     ffn.ffn[0].weight[1] = 5.0
    >>> Magnitude().score(Members("", "ffn", ffn)).argmax().item()
    1
    """

    def score(self, members):
        if members.group == "weights":
            return members.module.weight.detach().abs()
        magnitude = members.spec.require(
            "magnitude", "criterion magnitude", type(members.module).__name__
        )
        return magnitude(members.module)


class Taylor(Criterion):
    """First-order Taylor estimate of the loss change of a removal.

    ``|sum_i w_i dL/dw_i|`` over each member's outgoing weights per
    optimizer step, summed over steps (see the module docstring); for
    layers ``|sum (x_in - x_out) . dL/dx_out|``. Gradients are read before
    each optimizer step, because SpeechBrain clears them after it.

    Example
    -------
    >>> from speechbrain.nnet.attention import PositionalwiseFeedForward
    >>> ffn = PositionalwiseFeedForward(d_ffn=4, input_size=3)
    >>> members = [Members("", "ffn", ffn)]
    >>> taylor = Taylor()
    >>> ffn(torch.rand(2, 5, 3)).pow(2).sum().backward()
    >>> taylor.observe_gradients(members)
    >>> taylor.score(members[0]).shape
    torch.Size([4])
    """

    data_driven = True

    def __init__(self):
        super().__init__()
        self._pending = {}

    def stat_shapes(self, members):
        """One sum per member (per weight for ``weights``)."""
        if members.group == "weights":
            return {"taylor": tuple(members.module.weight.shape)}
        return {"taylor": (members.count,)}

    def attach(self, members):
        """Register the layer hooks that collect ``(x_in - x_out) . g``."""
        super().attach(members)
        for item in members:
            if item.group in LAYER_GROUPS:
                for index, layer in enumerate(item.module.layers):
                    hook = _LayerTaylorHook(
                        self._pending, item.path, index, item.count
                    )
                    self._handles.append(layer.register_forward_hook(hook))

    def reset(self):
        super().reset()
        self._pending.clear()

    def observe_gradients(self, members, scale=1.0):
        super().observe_gradients(members, scale)
        for item in members:
            if item.group in LAYER_GROUPS:
                pending = self._pending.pop(item.path, None)
                if pending is not None:
                    self._add((item.path, "taylor"), pending.abs() / scale)
                continue
            weight = item.consumer().weight
            if weight.grad is None:
                continue
            products = weight.detach() * weight.grad / scale
            if item.group == "weights":
                self._add((item.path, "taylor"), products.abs())
            else:
                self._add(
                    (item.path, "taylor"), _outgoing(item, products).abs()
                )

    def score(self, members):
        return self._stat(members, "taylor")


class _LayerTaylorHook:
    """Forward hook adding ``(x_in - x_out) . dL/dx_out`` per layer."""

    def __init__(self, pending, path, index, count):
        self.pending, self.path = pending, path
        self.index, self.count = index, count

    def __call__(self, layer, args, output):
        out = output[0] if isinstance(output, tuple) else output
        if not (layer.training and out.requires_grad):
            return
        delta = (args[0] - out).detach()

        def on_grad(grad):
            value = (delta * grad).sum().detach().float()
            if self.path not in self.pending:
                self.pending[self.path] = torch.zeros(
                    self.count, device=value.device
                )
            self.pending[self.path][self.index] += value

        out.register_hook(on_grad)


class _ActivationCriterion(Criterion):
    """Collects input statistics of the members' consumer layers."""

    data_driven = True

    def stat_shapes(self, members):
        """Per-column input sums of the consumer, or per-layer updates."""
        if members.group in LAYER_GROUPS:
            return {"update": (members.count,), "count": (members.count,)}
        columns = members.consumer().in_features
        return {"abs": (columns,), "sq": (columns,), "count": ()}

    def attach(self, members):
        """Register forward hooks on the consumers (and layers)."""
        super().attach(members)
        # Attention that applies its projections itself (F.linear on packed
        # weights): their inputs are observed by one hook on the attention.
        relpos = {}
        for item in members:
            if item.group in LAYER_GROUPS:
                for index, layer in enumerate(item.module.layers):
                    hook = _LayerUpdateHook(self, item.path, index, item.count)
                    self._handles.append(layer.register_forward_hook(hook))
            elif applies_own_projections(item.module):
                relpos.setdefault(item.module, {})["heads"] = item.path
            elif item.owner is not None:
                role = item.path.rpartition(".")[2]
                relpos.setdefault(item.owner, {})[role] = item.path
            else:
                hook = _InputStatsHook(self, item.path)
                self._handles.append(
                    item.consumer().register_forward_pre_hook(hook)
                )
        for mha, paths in relpos.items():
            hook = _RelPosInputsHook(self, paths)
            self._handles.append(
                mha.register_forward_hook(hook, with_kwargs=True)
            )

    def observe_gradients(self, members, scale=1.0):
        self.batches += 1

    def _input_norms(self, members):
        """Mean absolute input and input L2 norm per consumer column."""
        count = self._stat(members, "count")
        return self._stat(members, "abs") / count, self._stat(members, "sq")

    def _layer_score(self, members):
        return self._stat(members, "update") / self._stat(members, "count")


def _add_input_stats(criterion, path, x):
    """Per-column sums of ``|x|`` and ``x^2``, and the row count.

    Summed in float32: ``x^2`` of fp16 activations over ``B * T`` rows
    overflows fp16.
    """
    x = x.detach().float().reshape(-1, x.shape[-1])
    criterion._add((path, "abs"), x.abs().sum(0))
    criterion._add((path, "sq"), x.pow(2).sum(0))
    criterion._add((path, "count"), torch.tensor(float(x.shape[0])))


class _InputStatsHook:
    """Forward pre-hook: statistics of a consumer Linear's input."""

    def __init__(self, criterion, path):
        self.criterion, self.path = criterion, path

    def __call__(self, module, args):
        if module.training:
            _add_input_stats(self.criterion, self.path, args[0])


class _RelPosInputsHook:
    """Forward hook on attention that applies its projections itself.

    ``paths`` maps roles to statistics keys: ``in_proj`` (the query),
    ``linear_pos`` (the positional embeddings), ``out_proj`` and ``heads``
    (the attention context of each value unit, ``attn_h @ v_j``, recomputed
    from the value input and the per-head attention weights returned).
    """

    def __init__(self, criterion, paths):
        self.criterion, self.paths = criterion, paths

    @torch.no_grad()
    def __call__(self, mha, args, kwargs, output):
        if not mha.training:
            return
        names = ("query", "key", "value", "pos_embs")
        inputs = dict(zip(names, args), **kwargs)
        for role, name in (("in_proj", "query"), ("linear_pos", "pos_embs")):
            if role in self.paths:
                _add_input_stats(self.criterion, self.paths[role], inputs[name])
        roles = [r for r in ("out_proj", "heads") if r in self.paths]
        if not roles or not isinstance(output, tuple):
            return
        n_qk = sum(mha.qk_dims)
        v = F.linear(inputs["value"], mha.in_proj.weight[2 * n_qk :])
        contexts, start = [], 0
        for head, width in enumerate(mha.v_dims):
            unit_values = v[..., start : start + width]
            contexts.append(output[1][:, head].to(v.dtype) @ unit_values)
            start += width
        contexts = torch.cat(contexts, -1)
        for role in roles:
            _add_input_stats(self.criterion, self.paths[role], contexts)


class _LayerUpdateHook:
    def __init__(self, criterion, path, index, count):
        self.criterion, self.path = criterion, path
        self.index, self.count = index, count

    def __call__(self, layer, args, output):
        if not layer.training:
            return
        out = output[0] if isinstance(output, tuple) else output
        out, x = out.detach().float(), args[0].detach().float()
        update = (out - x).norm(dim=-1) / x.norm(dim=-1).clamp_min(1e-8)
        one_hot = torch.zeros(self.count, device=update.device)
        one_hot[self.index] = 1.0
        self.criterion._add((self.path, "update"), one_hot * update.sum())
        self.criterion._add(
            (self.path, "count"), one_hot * float(update.numel())
        )


class Activation(_ActivationCriterion):
    """Mean absolute activation of each member (data-driven).

    Units: ``mean |a_j|``; heads: the sum of that over the head's value
    units; layers: the mean relative update ``||x_out - x_in|| /
    ||x_in||``; weights: ``|W_ij| mean |x_j|``.

    Example
    -------
    >>> from speechbrain.nnet.attention import PositionalwiseFeedForward
    >>> ffn = PositionalwiseFeedForward(d_ffn=4, input_size=3)
    >>> members = [Members("", "ffn", ffn)]
    >>> activation = Activation()
    >>> activation.attach(members)
    >>> _ = ffn(torch.rand(2, 5, 3))
    >>> activation.score(members[0]).shape
    torch.Size([4])
    """

    def score(self, members):
        if members.group in LAYER_GROUPS:
            return self._layer_score(members)
        mean_abs, _ = self._input_norms(members)
        if members.group == "weights":
            return members.module.weight.detach().abs() * mean_abs
        if members.group == "heads":
            return members.per_member(mean_abs)
        return mean_abs


class Wanda(_ActivationCriterion):
    """Weights times input norms, ``|W| ||x||_2`` (Sun et al. 2023).

    Units and heads: ``sum_o |W_oj| ||x_j||_2`` over their outgoing
    weights; weights: ``|W_ij| ||x_j||_2``. Layers have no such form: use
    ``activation`` or ``taylor`` for them.

    Example
    -------
    >>> Wanda().attach([Members("", "layers", None)])
    Traceback (most recent call last):
    ...
    ValueError: criterion wanda scores ffn, heads and weights, not layers; ...
    """

    def attach(self, members):
        if any(item.group in LAYER_GROUPS for item in members):
            raise ValueError(
                "criterion wanda scores ffn, heads and weights, not layers; "
                "use activation or taylor for groups: [layers]"
            )
        super().attach(members)

    def score(self, members):
        _, squares = self._input_norms(members)
        norms = squares.sqrt()
        weight = members.consumer().weight.detach().abs()
        if members.group == "weights":
            return weight * norms
        return _outgoing(members, weight * norms)


CRITERIA = {
    "magnitude": Magnitude,
    "taylor": Taylor,
    "activation": Activation,
    "wanda": Wanda,
}


def make_criterion(name):
    """Return the criterion called ``name``.

    Arguments
    ---------
    name : str
        One of ``magnitude``, ``taylor``, ``activation``, ``wanda``.

    Returns
    -------
    Criterion
        A new instance.

    Example
    -------
    >>> make_criterion("taylor")
    Taylor()
    >>> make_criterion("l1")
    Traceback (most recent call last):
    ...
    ValueError: criterion: unknown name 'l1'; choose from [...]
    """
    if name not in CRITERIA:
        raise ValueError(
            f"criterion: unknown name {name!r}; choose from {sorted(CRITERIA)}"
        )
    return CRITERIA[name]()


def keep_top(scores, n_keep):
    """Indices of the ``n_keep`` highest scores, sorted (ties: lower index).

    A NaN score ranks lowest: a member whose importance could not be
    measured is not kept in favour of one that was.

    Arguments
    ---------
    scores : torch.Tensor
        One score per member.
    n_keep : int
        How many to keep.

    Returns
    -------
    torch.LongTensor
        Sorted indices.

    Example
    -------
    >>> keep_top(torch.tensor([0.5, 2.0, 0.5, 1.0]), 3)
    tensor([0, 1, 3])
    >>> keep_top(torch.tensor([float("nan"), 2.0, 0.5]), 2)
    tensor([1, 2])
    """
    scores = scores.detach().cpu().float().nan_to_num(nan=-float("inf"))
    order = torch.sort(-scores, stable=True).indices
    return order[:n_keep].sort().values


def global_keep(members, scores, initial, sparsity, min_units=1):
    """Kept members of several modules of one group, ranked together.

    The group keeps ``round(N_0 (1 - sparsity))`` members in all (``N_0``:
    what the modules had when the schedule started), its best-scored ones
    wherever they are, each module keeping at least its ``min_units`` best
    (and never more than it has).

    Arguments
    ---------
    members : list of Members
        The modules of one group.
    scores : dict
        ``{path: one score per member}``.
    initial : dict
        ``{path: members when the schedule started}``.
    sparsity : float
        The group's sparsity after this step.
    min_units : int
        Members each module keeps at least.

    Returns
    -------
    dict
        ``{path: sorted kept indices}``.

    Example
    -------
    >>> class M:
    ...     def __init__(self, path, count):
    ...         self.path, self.count = path, count
    >>> mods = [M("a", 3), M("b", 3)]
    >>> kept = global_keep(
    ...     mods,
    ...     {"a": torch.tensor([5.0, 4, 3]), "b": torch.tensor([0.1, 9, 0.2])},
    ...     {"a": 3, "b": 3},
    ...     sparsity=0.5,
    ... )
    >>> {path: index.tolist() for path, index in kept.items()}
    {'a': [0, 1], 'b': [1]}
    """
    total = sum(initial[m.path] for m in members)
    budget = max(int(total * (1.0 - sparsity) + 0.5), 0)
    chosen = {m.path: set() for m in members}
    ranked = []
    for m in members:
        values = scores[m.path].detach().cpu().float()
        values = values.nan_to_num(nan=-float("inf"))
        floor = min(min_units, m.count)
        for index in keep_top(values, floor).tolist():
            chosen[m.path].add(index)
        ranked += [
            (float(values[i]), m.path, i)
            for i in range(m.count)
            if i not in chosen[m.path]
        ]
    budget -= sum(len(kept) for kept in chosen.values())
    ranked.sort(key=lambda item: (-item[0], item[1], item[2]))
    for _, path, index in ranked[: max(budget, 0)]:
        chosen[path].add(index)
    return {
        path: torch.tensor(sorted(kept), dtype=torch.long)
        for path, kept in chosen.items()
    }
