"""Sub-models for federated dropout: extract them, merge their updates.

A client of federated dropout (Caldas et al. 2018) trains a physically
smaller copy of the server's model. :func:`extract_submodel` makes it with
sb_prune's own surgery (:func:`sb_prune.core.surgery.apply_plan` on a copy:
FFN hidden units, attention units, whole layers...), and records where
each of its weights comes from: the same plan is applied to a twin whose
parameters hold their own positions in the full model, so every pruner,
present or future, yields its index map for free.

:func:`merge_submodels` scatters the clients' trained weights back: an
element of the full model becomes the weighted mean of the clients that
held it (weights: e.g. their numbers of examples), and an element that no
client held keeps its value.

With ``compensate=True`` a sub-model is scaled as inverted dropout scales
a network at training time: the layer that reads a thinned group's
activations (its spec's ``consumer``: an FFN's down projection, the
attention's output projection) has its weights multiplied by
``units / kept units``, so that the sub-model's output keeps the full
model's scale; :meth:`SubModel.unscaled` undoes it on the trained weights
before they are merged.

Authors
 * sb_prune developers
"""

import copy

import torch

from sb_prune.core.registry import spec_of
from sb_prune.core.structure import describe
from sb_prune.core.surgery import apply_plan


def flat_parameters(model):
    """Concatenate a model's parameters into one vector.

    Arguments
    ---------
    model : torch.nn.Module
        Any model.

    Returns
    -------
    torch.Tensor
        The parameters in ``named_parameters`` order, flattened.

    Example
    -------
    >>> flat_parameters(torch.nn.Linear(2, 1)).shape
    torch.Size([3])
    """
    return torch.cat([p.detach().reshape(-1) for p in model.parameters()])


def _position_twin(model):
    """A float64 copy of ``model`` whose parameters hold their positions."""
    twin = copy.deepcopy(model).to(device="cpu", dtype=torch.float64)
    offset = 0
    with torch.no_grad():
        for param in twin.parameters():
            count = param.numel()
            param.copy_(
                torch.arange(
                    offset, offset + count, dtype=torch.float64
                ).reshape(param.shape)
            )
            offset += count
    if offset >= 2**53:
        raise ValueError("The model is too large for float64 index maps")
    return twin


class SubModel:
    """A client's sub-model and where its weights sit in the full model.

    Arguments
    ---------
    module : torch.nn.Module
        The physically smaller model.
    positions : dict
        ``{parameter name: LongTensor}`` of the same shapes, holding each
        element's position in the full model's flat parameter vector.
    plan : dict
        The surgery plan that made it.
    scales : dict, optional
        ``{parameter name: factor}``: the compensated weights and the
        factor they were multiplied by (see :func:`extract_submodel`).
    """

    def __init__(self, module, positions, plan, scales=None):
        self.module = module
        self.positions = positions
        self.plan = plan
        self.scales = scales or {}

    @property
    def structure(self):
        """The sub-model's structure record (:mod:`sb_prune.core.structure`)."""
        return describe(self.module)

    @property
    def num_parameters(self):
        """The number of (trainable) parameters of the sub-model."""
        return sum(p.numel() for p in self.module.parameters())

    def parameters_dict(self):
        """Return ``{name: tensor}`` of the sub-model's parameters."""
        return {
            name: param.detach().clone()
            for name, param in self.module.named_parameters()
        }

    def unscaled(self, params):
        """Undo the compensation on a client's trained parameters.

        Arguments
        ---------
        params : dict
            ``{name: tensor}`` of this sub-model's shapes.

        Returns
        -------
        dict
            The same, compensated weights divided by their factor, so
            that they read as the full model's weights.
        """
        return {
            name: value / self.scales[name] if name in self.scales else value
            for name, value in params.items()
        }


def _compensate(model, module, plan):
    """Scale the consumers of thinned groups; return ``{name: factor}``."""
    names = {id(param): name for name, param in module.named_parameters()}
    scales = {}
    for path in plan:
        thinned = module.get_submodule(path)
        spec = spec_of(thinned)
        if spec is None or spec.consumer is None:
            continue
        full = spec.consumer(model.get_submodule(path)).in_features
        consumer = spec.consumer(thinned)
        if consumer.in_features == full:
            continue
        factor = full / consumer.in_features
        with torch.no_grad():
            consumer.weight.mul_(factor)
        scales[names[id(consumer.weight)]] = factor
    return scales


def extract_submodel(model, plan, compensate=False):
    """Make a sub-model of ``model`` with the surgery ``plan``.

    Arguments
    ---------
    model : torch.nn.Module
        The full model (left unchanged).
    plan : dict
        ``{module path: {group: kept indices}}``, see
        :func:`sb_prune.core.surgery.apply_plan`; an empty plan gives a copy.
    compensate : bool
        Scale the layers that read thinned units by ``units / kept units``
        (inverted dropout; see the module docstring).

    Returns
    -------
    SubModel
        The sub-model and its index map.

    Example
    -------
    >>> from speechbrain.nnet.attention import PositionalwiseFeedForward
    >>> ffn = PositionalwiseFeedForward(d_ffn=6, input_size=4)
    >>> sub = extract_submodel(ffn, {"": {"hidden": torch.tensor([1, 4])}})
    >>> sub.module.ffn[0].weight.shape, sub.num_parameters
    (torch.Size([2, 4]), 22)
    >>> sub.positions["ffn.0.bias"].tolist()  # after the 6 x 4 weight
    [25, 28]
    >>> scaled = extract_submodel(ffn, sub.plan, compensate=True)
    >>> scaled.scales
    {'ffn.3.weight': 3.0}
    >>> torch.equal(scaled.module.ffn[3].weight, 3 * sub.module.ffn[3].weight)
    True
    """
    module = copy.deepcopy(model)
    apply_plan(module, plan)
    twin = _position_twin(model)
    apply_plan(twin, plan)
    positions = {
        name: param.detach().round().long()
        for name, param in twin.named_parameters()
    }
    sub_names = [name for name, _ in module.named_parameters()]
    if list(positions) != sub_names:
        raise RuntimeError("The index twin and the sub-model disagree")
    scales = _compensate(model, module, plan) if compensate else {}
    return SubModel(module, positions, plan, scales)


def merge_submodels(model, updates):
    """Write the weighted mean of the clients' weights into ``model``.

    Every element of the full model that at least one client trained
    becomes ``sum_k w_k theta_k / sum_k w_k`` over the clients ``k`` whose
    sub-model held it; the other elements keep their values.

    Arguments
    ---------
    model : torch.nn.Module
        The full model, updated in place.
    updates : list of tuple
        ``(positions, parameters, weight)`` per client: the index map of
        its :class:`SubModel`, its trained parameters by name, and its
        weight (> 0).

    Returns
    -------
    torch.Tensor
        The coverage: the summed weight of each element (0 where no client
        held it), in the order of :func:`flat_parameters`.

    Example
    -------
    >>> full = torch.nn.Linear(3, 1, bias=False)
    >>> with torch.no_grad():
    ...     _ = full.weight.fill_(0.0)
    >>> first = {"weight": torch.tensor([[0, 1]])}
    >>> second = {"weight": torch.tensor([[1]])}
    >>> coverage = merge_submodels(full, [
    ...     (first, {"weight": torch.tensor([[3.0, 6.0]])}, 1.0),
    ...     (second, {"weight": torch.tensor([[9.0]])}, 2.0),
    ... ])
    >>> full.weight.tolist(), coverage.tolist()
    ([[3.0, 8.0, 0.0]], [1.0, 3.0, 0.0])
    """
    current = flat_parameters(model).double().cpu()
    sums = torch.zeros_like(current)
    coverage = torch.zeros_like(current)
    for positions, params, weight in updates:
        if weight <= 0:
            raise ValueError(f"Client weights must be > 0, got {weight}")
        for name, index in positions.items():
            if name not in params:
                raise ValueError(f"The client's reply lacks the weights {name}")
            values = torch.as_tensor(params[name]).double().cpu().reshape(-1)
            flat_index = index.reshape(-1)
            if values.numel() != flat_index.numel():
                raise ValueError(
                    f"The client's {name} has {values.numel()} values, its "
                    f"sub-model {flat_index.numel()}"
                )
            sums.index_add_(0, flat_index, values * weight)
            coverage.index_add_(0, flat_index, torch.full_like(values, weight))
    covered = coverage > 0
    current[covered] = sums[covered] / coverage[covered]
    offset = 0
    with torch.no_grad():
        for param in model.parameters():
            count = param.numel()
            param.copy_(current[offset : offset + count].reshape(param.shape))
            offset += count
    return coverage
