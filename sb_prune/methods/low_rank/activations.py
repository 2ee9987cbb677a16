"""Low rank from the principal components of each layer's outputs.

The LiteASR recipe (Kamahori et al. 2025), written from its description:
run calibration audio through the model, and for every Linear ``y = W x +
b`` to factorise, find the principal directions ``V`` (``out x r``) of its
outputs. Then ``y ~ mu + V V^T (y - mu)``, which is the low-rank layer

    up = V,  down = V^T W,  bias = V V^T b + (I - V V^T) mu,

exact where the outputs stay in the span of the ``r`` directions (truncated
SVD of ``W`` instead keeps the directions of largest weight, whatever the
inputs are). A Linear without a bias (Whisper's key projection) uses the
uncentred second moment, so it needs no bias: ``y ~ V V^T y``.

LiteASR picks each layer's rank from the spectrum of its outputs
(:func:`explained_variance_rank`): the smallest multiple of 16 whose
directions explain a threshold of the output variance, and no
factorisation where that rank would not save weights.

Authors
 * sb_prune developers
"""

import math

import torch
from speechbrain.utils.distributed import ddp_all_reduce

from sb_prune.methods.low_rank.layer import LowRankLinear, check_rank


class OutputStatistics:
    """Sums of a Linear's outputs and their outer products, in float64.

    Attach it as a forward hook; it adds only while the layer is training
    (calibration batches), never in evaluation.

    Arguments
    ---------
    linear : torch.nn.Linear
        The layer to observe.

    Example
    -------
    >>> lin = torch.nn.Linear(3, 2)
    >>> stats = OutputStatistics(lin)
    >>> _ = lin(torch.randn(5, 4, 3))
    >>> stats.count, stats.second.shape
    (20, torch.Size([2, 2]))
    >>> stats.remove()
    """

    def __init__(self, linear):
        n = linear.out_features
        device = linear.weight.device
        self.sum = torch.zeros(n, dtype=torch.float64, device=device)
        self.second = torch.zeros(n, n, dtype=torch.float64, device=device)
        self.count = 0
        self._shape = f"Linear({linear.in_features}, {n})"
        self._components = {}
        self._handle = linear.register_forward_hook(self._observe)

    def _observe(self, module, inputs, output):
        if not module.training:
            return
        flat = output.detach().reshape(-1, output.shape[-1]).double()
        self.sum += flat.sum(0)
        self.second += flat.T @ flat
        self.count += flat.shape[0]
        self._components = {}

    def mean(self):
        """The mean output (float64)."""
        return self.sum / self.count

    def principal_components(self, centred=True):
        """The directions of the outputs and their variances, strongest first.

        Computed once (an eigendecomposition) until more outputs come.

        Arguments
        ---------
        centred : bool
            Variances about the mean output; False: second moments about
            zero (for a Linear without a bias, which cannot hold a mean).

        Returns
        -------
        variances : torch.Tensor
            ``[out]``, float64, non-negative, in decreasing order.
        directions : torch.Tensor
            ``[out, out]``: column ``k`` is the direction of variance ``k``.

        Example
        -------
        >>> lin = torch.nn.Linear(2, 2, bias=False)
        >>> with torch.no_grad():
        ...     _ = lin.weight.copy_(torch.eye(2))
        >>> stats = OutputStatistics(lin)
        >>> _ = lin(torch.tensor([[1.0, 0.0], [-1.0, 0.0], [0.0, 2.0]]))
        >>> stats.principal_components(centred=False)[0]
        tensor([1.3333, 0.6667], dtype=torch.float64)
        """
        if self.count == 0:
            raise ValueError(
                "activation low rank: no calibration output was observed for "
                f"a {self._shape}; run training batches before the conversion"
            )
        if centred not in self._components:
            moment = self.second / self.count
            if centred:
                moment = moment - torch.outer(self.mean(), self.mean())
            values, vectors = torch.linalg.eigh(moment)
            self._components[centred] = (
                values.flip(0).clamp_min(0.0),
                vectors.flip(-1),
            )
        return self._components[centred]

    def all_reduce(self):
        """Sum the statistics over DDP processes (no-op without DDP)."""
        self.sum = ddp_all_reduce(self.sum, torch.distributed.ReduceOp.SUM)
        self.second = ddp_all_reduce(
            self.second, torch.distributed.ReduceOp.SUM
        )
        count = torch.tensor(float(self.count), device=self.sum.device)
        self.count = int(
            ddp_all_reduce(count, torch.distributed.ReduceOp.SUM).item()
        )
        self._components = {}

    def remove(self):
        """Stop observing the layer."""
        self._handle.remove()


def pca_low_rank(linear, stats, rank):
    """Factorise a Linear on the principal directions of its outputs.

    Arguments
    ---------
    linear : torch.nn.Linear
        The dense layer (left unchanged).
    stats : OutputStatistics
        Its outputs on calibration data.
    rank : int
        Directions to keep, in ``[1, min(in, out)]``.

    Returns
    -------
    LowRankLinear
        On the layer's device and dtype; at full rank equal to the layer.

    Example
    -------
    >>> _ = torch.manual_seed(0)
    >>> lin = torch.nn.Linear(6, 4)
    >>> stats = OutputStatistics(lin)
    >>> x = torch.randn(50, 2) @ torch.randn(2, 6)  # inputs of rank 2
    >>> _ = lin(x)
    >>> low = pca_low_rank(lin, stats, rank=2)
    >>> bool(torch.allclose(low(x), lin(x), atol=1e-5))
    True
    """
    weight = linear.weight.detach()
    out_features, in_features = weight.shape
    check_rank(rank, in_features, out_features)
    centred = linear.bias is not None
    _, directions = stats.principal_components(centred)
    basis = directions[:, :rank]  # out x rank, strongest first
    low = LowRankLinear(in_features, out_features, rank, bias=centred).to(
        device=weight.device, dtype=weight.dtype
    )
    with torch.no_grad():
        low.up.weight.copy_(basis)
        low.down.weight.copy_(basis.T @ weight.double())
        if centred:
            mean = stats.mean()
            bias = linear.bias.detach().double()
            projected = basis @ (basis.T @ (bias - mean))
            low.up.bias.copy_(projected + mean)
    return low


def explained_variance_rank(linear, stats, threshold, multiple=16):
    """LiteASR's rank for a Linear: enough directions to explain its outputs.

    The rank is the smallest multiple of ``multiple`` whose principal
    directions (:meth:`OutputStatistics.principal_components`, centred when
    the Linear has a bias) explain at least ``threshold`` of the outputs'
    total variance, at most ``min(in, out)``. A rank-``r`` factorisation
    stores ``r * (in + out)`` weights; when that is not fewer than the
    dense ``in * out``, the layer is better left dense: None.

    Arguments
    ---------
    linear : torch.nn.Linear
        The dense layer.
    stats : OutputStatistics
        Its outputs on calibration data.
    threshold : float
        The fraction of variance to explain, in (0, 1).
    multiple : int
        Ranks are multiples of this (LiteASR: 16, for fast kernels).

    Returns
    -------
    int or None
        The rank, or None to keep the layer dense.

    Example
    -------
    >>> lin = torch.nn.Linear(4, 4, bias=False)
    >>> with torch.no_grad():
    ...     _ = lin.weight.copy_(torch.eye(4))
    >>> stats = OutputStatistics(lin)
    >>> _ = lin(torch.diag(torch.tensor([3.0, 2.0, 1.0, 0.0])))  # 9:4:1:0
    >>> explained_variance_rank(lin, stats, 0.6, multiple=1)
    1
    >>> print(explained_variance_rank(lin, stats, 0.7, multiple=1))  # 2: dense
    None
    """
    variances, _ = stats.principal_components(linear.bias is not None)
    explained = variances.cumsum(0) / variances.sum()
    needed = int((explained < threshold).sum()) + 1
    in_features, out_features = linear.in_features, linear.out_features
    rank = min(
        multiple * math.ceil(needed / multiple),
        in_features,
        out_features,
    )
    if rank * (in_features + out_features) >= in_features * out_features:
        return None
    return rank
