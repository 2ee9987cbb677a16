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

Authors
 * sb_prune developers
"""

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
        self._handle = linear.register_forward_hook(self._observe)

    def _observe(self, module, inputs, output):
        if not module.training:
            return
        flat = output.detach().reshape(-1, output.shape[-1]).double()
        self.sum += flat.sum(0)
        self.second += flat.T @ flat
        self.count += flat.shape[0]

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
    if stats.count == 0:
        raise ValueError(
            "activation low rank: no calibration output was observed for a "
            f"Linear({in_features}, {out_features}); run training batches "
            "before the conversion"
        )
    mean = stats.sum / stats.count
    moment = stats.second / stats.count
    if linear.bias is not None:
        moment = moment - torch.outer(mean, mean)
    _, vectors = torch.linalg.eigh(moment)
    basis = vectors[:, -rank:].flip(-1)  # out x rank, strongest first
    low = LowRankLinear(
        in_features, out_features, rank, bias=linear.bias is not None
    ).to(device=weight.device, dtype=weight.dtype)
    with torch.no_grad():
        low.up.weight.copy_(basis)
        low.down.weight.copy_(basis.T @ weight.double())
        if linear.bias is not None:
            bias = linear.bias.detach().double()
            projected = basis @ (basis.T @ (bias - mean))
            low.up.bias.copy_(projected + mean)
    return low
