"""Adaptive dropout: dropout with a learnt retention probability per unit.

Kubo, Cai and Bacchiani, "Adaptive Dropout for Pruning Conformers" (2024).
Each unit ``d`` has a logit ``beta_d``; its retention probability is
``r_d = sigmoid(beta_d)``. In training the unit is multiplied by a relaxed
Bernoulli (binary concrete, or Gumbel-sigmoid) sample with temperature
``tau``, so gradients reach ``beta``. In evaluation the mask is
deterministic: a unit is kept when ``r_d > threshold`` (and the
``min_units`` most retained units are always kept). Units that evaluation
drops can therefore be removed physically without changing the outputs.

The uncentred L2 regulariser ``weight * sum_d (beta_d - target)^2`` pulls
the logits towards a target that :class:`sb_prune.hooks.AdaptiveDropoutPruning`
lowers during training; it enters the gradient through
:func:`sb_prune.training.auxiliary.attach_auxiliary_loss`.

Authors
 * sb_prune developers
"""

import math

import torch
from torch import nn

from sb_prune.core.inplace import resize_, select_
from sb_prune.core.validation import check_int, check_number
from sb_prune.training.auxiliary import attach_auxiliary_loss


class AdaptiveDropout(nn.Module):
    """Unit-wise learnt dropout whose dropped units can be pruned.

    Arguments
    ---------
    n_units : int
        Number of units (size of ``dim`` in the input).
    dim : int
        The axis of the input that holds the units.
    init_retention : float
        Initial retention probability of every unit, in (0, 1).
    temperature : float
        Temperature ``tau`` of the relaxed Bernoulli mask, > 0.
    threshold : float
        Units with retention at or below it are dropped in evaluation and
        pruned, in (0, 1).
    min_units : int
        The number of units evaluation (and pruning) always keeps, >= 1.
    hard : bool
        If True, training uses straight-through hard 0/1 masks.
    logit_scale : float
        The logits are stored divided by this factor, which multiplies
        their learning rate: with Adam a parameter moves about ``lr`` per
        step, too slowly for logits that must travel several units while
        the recipe's learning rate suits the weights.
    gathers_input : bool
        If True the input keeps all ``n_units`` positions even after
        pruning (it is a residual-width tensor); the layer stores the
        indices of its surviving units and gathers them first.

    Example
    -------
    >>> adl = AdaptiveDropout(4, init_retention=0.9)
    >>> adl.retention()
    tensor([0.9000, 0.9000, 0.9000, 0.9000], grad_fn=<SigmoidBackward0>)
    >>> _ = adl.eval()
    >>> adl(torch.ones(2, 4))
    tensor([[1., 1., 1., 1.],
            [1., 1., 1., 1.]])
    >>> AdaptiveDropout(4, temperature="0.5")
    Traceback (most recent call last):
    ...
    ValueError: temperature must be a number > 0, got '0.5'
    """

    def __init__(
        self,
        n_units,
        dim=-1,
        init_retention=0.95,
        temperature=0.5,
        threshold=0.5,
        min_units=1,
        hard=False,
        logit_scale=10.0,
        gathers_input=False,
    ):
        super().__init__()
        check_int("n_units", n_units, minimum=1)
        check_int("dim", dim)
        check_number("init_retention", init_retention, 0, 1, True, True)
        check_number("threshold", threshold, 0, 1, True, True)
        check_number("logit_scale", logit_scale, low=0, open_low=True)
        check_number("temperature", temperature, low=0, open_low=True)
        check_int("min_units", min_units, minimum=1)
        if min_units > n_units:
            raise ValueError(
                f"min_units must be <= {n_units} (the number of units), "
                f"got {min_units}"
            )
        self.dim = dim
        self.temperature = temperature
        self.threshold = threshold
        self.min_units = min_units
        self.hard = hard
        self.initial_units = n_units
        self.logit_scale = logit_scale
        logit = math.log(init_retention / (1.0 - init_retention))
        self.scaled_logits = nn.Parameter(
            torch.full((n_units,), logit / logit_scale)
        )
        if gathers_input:
            self.register_buffer("index", torch.arange(n_units))
        else:
            self.index = None
        # Set by the pruning hook: weight and target of the regulariser.
        self.regularization_weight = 0.0
        self.regularization_target = 0.0

    @property
    def n_units(self):
        """The number of units the layer currently has."""
        return self.scaled_logits.numel()

    @property
    def logits(self):
        """The retention logits ``beta`` (``retention = sigmoid(beta)``)."""
        return self.scaled_logits * self.logit_scale

    def set_logits(self, logits):
        """Overwrite the retention logits.

        Arguments
        ---------
        logits : torch.Tensor
            New values of ``beta``, shape ``[n_units]``.
        """
        with torch.no_grad():
            self.scaled_logits.copy_(logits / self.logit_scale)

    def retention(self):
        """Return the retention probability of every unit.

        Returns
        -------
        torch.Tensor
            ``sigmoid(logits)``, shape ``[n_units]``.
        """
        return torch.sigmoid(self.logits)

    def keep_mask(self):
        """Return the deterministic mask used in evaluation.

        Returns
        -------
        torch.Tensor
            Boolean ``[n_units]``: retention above the threshold, plus the
            ``min_units`` most retained units.

        Example
        -------
        >>> adl = AdaptiveDropout(3, min_units=2)
        >>> adl.set_logits(torch.tensor([-5.0, -1.0, 4.0]))
        >>> adl.keep_mask()
        tensor([False,  True,  True])
        """
        with torch.no_grad():
            retention = self.retention()
            keep = retention > self.threshold
            if int(keep.sum()) < self.min_units:
                keep[retention.topk(self.min_units).indices] = True
        return keep

    def regularization_loss(self):
        """Return ``weight * sum((logits - target)^2)``.

        Returns
        -------
        torch.Tensor
            The scalar penalty (zero when the weight is zero).
        """
        diff = self.logits - self.regularization_target
        return self.regularization_weight * diff.pow(2).sum()

    def _mask(self):
        if not self.training:
            return self.keep_mask().to(self.scaled_logits.dtype)
        logits = self.logits
        # Logistic noise: logit(u) = log(u) - log(1 - u), u ~ U(0, 1).
        noise = torch.logit(torch.rand_like(logits), eps=1e-6)
        mask = torch.sigmoid((logits + noise) / self.temperature)
        if self.hard:
            mask = (mask > 0.5).to(mask.dtype) + mask - mask.detach()
        return mask

    def forward(self, x):
        """Gather the surviving units if needed, then mask them.

        Arguments
        ---------
        x : torch.Tensor
            Input with the units on axis ``dim``.

        Returns
        -------
        torch.Tensor
            The masked units.
        """
        dim = self.dim % x.dim()
        if self.index is not None and self.index.numel() != x.shape[dim]:
            x = x.index_select(dim, self.index)
        shape = [1] * x.dim()
        shape[dim] = self.n_units
        out = x * self._mask().view(shape)
        if self.training and self.regularization_weight > 0:
            out = attach_auxiliary_loss(out, self.regularization_loss())
        return out

    def select_units(self, keep):
        """Keep only the units at ``keep`` (indices into current units).

        Arguments
        ---------
        keep : torch.LongTensor
            Sorted indices of the units to keep.
        """
        select_(self, "scaled_logits", keep, 0)
        if self.index is not None:
            select_(self, "index", keep, 0)
        self.min_units = min(self.min_units, keep.numel())

    def get_structure(self):
        """Return the number of units (the layer's structure record)."""
        return {"units": self.n_units}

    def set_structure(self, spec):
        """Resize to ``spec["units"]`` units (placeholder values).

        Arguments
        ---------
        spec : dict
            ``{"units": n}`` as returned by :meth:`get_structure`.
        """
        units = spec["units"]
        resize_(self, "scaled_logits", (units,))
        if self.index is not None:
            resize_(self, "index", (units,))
        self.min_units = min(self.min_units, units)

    def extra_repr(self):
        return (
            f"n_units={self.n_units}, dim={self.dim}, "
            f"temperature={self.temperature}, threshold={self.threshold}"
        )


class UnitSelect(nn.Module):
    """Select units along an axis.

    What an input-gathering AdaptiveDropout leaves behind for inference.

    Arguments
    ---------
    index : torch.LongTensor
        The positions to keep.
    dim : int
        The axis.

    Example
    -------
    >>> UnitSelect(torch.tensor([2, 0]), dim=-1)(torch.tensor([[1, 2, 3]]))
    tensor([[3, 1]])
    """

    def __init__(self, index, dim=-1):
        super().__init__()
        self.dim = dim
        self.register_buffer("index", index.clone())

    def forward(self, x):
        """Return the kept units of ``x``."""
        return x.index_select(self.dim, self.index)

    def get_structure(self):
        """Return the number of kept units."""
        return {"units": self.index.numel()}

    def set_structure(self, spec):
        """Resize to ``spec["units"]`` units (placeholder values)."""
        resize_(self, "index", (spec["units"],))


class InputMaskedLinear(nn.Linear):
    """A Linear whose input units adaptive dropout masks, via its weights.

    ``F.linear(m * x, W, b) == F.linear(x, W diag(m), b)``: scaling the
    columns of the weight (a weight-sized product) instead of the input
    (an activation-sized product, forward and backward) is what keeps an
    adaptive-dropout step close to a dense one where the masked units feed
    a Linear, as the hidden units of a feed-forward block do.

    Arguments
    ---------
    in_features, out_features, bias
        Those of ``torch.nn.Linear``.
    mask : AdaptiveDropout
        The mask of the ``in_features`` input units.

    Example
    -------
    >>> linear = torch.nn.Linear(4, 2)
    >>> masked = InputMaskedLinear.from_linear(linear, AdaptiveDropout(4))
    >>> masked.mask.set_logits(torch.tensor([5.0, -5.0, 5.0, 5.0]))
    >>> x = torch.rand(3, 4)
    >>> expected = linear(x * torch.tensor([1.0, 0.0, 1.0, 1.0]))
    >>> bool(torch.allclose(masked.eval()(x), expected))
    True
    """

    def __init__(self, in_features, out_features, mask, bias=True):
        super().__init__(in_features, out_features, bias=bias)
        self.mask = mask

    @classmethod
    def from_linear(cls, linear, mask):
        """Wrap ``linear``'s parameters (shared, not copied) with a mask.

        Arguments
        ---------
        linear : torch.nn.Linear
            The Linear fed by the masked units.
        mask : AdaptiveDropout
            Their mask.

        Returns
        -------
        InputMaskedLinear
            A module on ``linear``'s device, in its train/eval mode.
        """
        new = cls(
            linear.in_features,
            linear.out_features,
            mask.to(linear.weight.device),
            bias=linear.bias is not None,
        )
        new.weight, new.bias = linear.weight, linear.bias
        return new.train(linear.training)

    def forward(self, x):
        """``F.linear(x, W * mask, b)``."""
        weight = self.weight
        mask = self.mask(weight.new_ones(self.in_features))
        return nn.functional.linear(x, weight * mask, self.bias)

    def to_linear(self):
        """A plain ``torch.nn.Linear`` with the same parameters (no mask)."""
        linear = nn.Linear(
            self.in_features, self.out_features, bias=self.bias is not None
        )
        linear.weight, linear.bias = self.weight, self.bias
        return linear.train(self.training)
