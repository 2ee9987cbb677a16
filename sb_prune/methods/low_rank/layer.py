"""Low-rank Linear layers whose rank can be lowered step by step.

:class:`LowRankLinear` replaces a ``Linear`` ``y = W x + b`` (``W`` of shape
``out x in``) by two thin factors ``y = U (V x) + b``, with ``U`` of shape
``out x R`` and ``V`` of shape ``R x in``. It is built from a truncated SVD
``W ~ (P_R S_R^1/2) (S_R^1/2 Q_R^T)``, so the directions are ordered by
singular value: the first ``r`` of them give the best rank-``r``
approximation, and one trained module can run at any rank ``r <= R``
(:meth:`LowRankLinear.set_rank`) or be cut physically to rank ``r``
(:meth:`LowRankLinear.truncate_`).

Training moves the factors away from that order; :meth:`reorder_`
re-factorises the product ``U V`` (exactly, by an SVD of an ``R x R``
matrix) so the order holds again. Incremental compression (Emili et al.,
2023) alternates ``reorder_`` + truncation with fine-tuning: see
:class:`sb_prune.hooks.LowRankCompression`.

A rank-``R`` factorisation of an ``out x in`` matrix has ``R (in + out)``
weights: it is smaller than the dense matrix only below the break-even
rank ``in * out / (in + out)``. :func:`rank_for_compression` turns a target
fraction of removed weights into a rank.

Fewer weights are not always less time: a thin product runs two matrix
products instead of one. A layer whose factorisation would not be faster
can hold its product as one dense matrix again
(:meth:`LowRankLinear.densify_`, rank None); see
:mod:`sb_prune.methods.low_rank.speed`.

The rank is part of the structure record (``{"rank": R}``, None when
dense), so pruned checkpoints load into a freshly converted model.

Authors
 * sb_prune developers
"""

import math

import torch
import torch.nn.functional as F
from torch import nn

from sb_prune.core.inplace import resize_linear_, select_linear_
from sb_prune.core.validation import check_int, check_number


def check_rank(rank, in_features, out_features, key="rank"):
    """Raise a ValueError naming ``key`` unless ``rank`` fits a Linear.

    Arguments
    ---------
    rank : int
        The rank to check.
    in_features, out_features : int
        The shape of the Linear it factorises.
    key : str
        The YAML key or argument, for the message.

    Example
    -------
    >>> check_rank(4, 6, 4)
    >>> check_rank(5, 6, 4)
    Traceback (most recent call last):
    ...
    ValueError: rank must be in [1, min(in_features, out_features) = 4], got 5
    >>> check_rank("4", 6, 4)
    Traceback (most recent call last):
    ...
    ValueError: rank must be an integer, got '4'
    """
    limit = min(in_features, out_features)
    check_int(key, rank)
    if not 1 <= rank <= limit:
        raise ValueError(
            f"{key} must be in [1, min(in_features, out_features) = {limit}]"
            f", got {rank}"
        )


def rank_for_compression(in_features, out_features, compression):
    """Return the rank that removes ``compression`` of a Linear's weights.

    Arguments
    ---------
    in_features : int
        Inputs of the dense Linear.
    out_features : int
        Outputs of the dense Linear.
    compression : float
        Fraction of the dense weight matrix's entries to remove, in [0, 1).
        0 gives the break-even rank (as many weights as the dense matrix).

    Returns
    -------
    int
        ``floor((1 - compression) * in * out / (in + out))``, at least 1.

    Example
    -------
    >>> rank_for_compression(144, 576, 0.0), rank_for_compression(144, 576, 0.5)
    (115, 57)
    >>> rank_for_compression(144, 576, "0.5")
    Traceback (most recent call last):
    ...
    ValueError: compression must be a number in [0, 1), got '0.5'
    """
    check_number("compression", compression, 0, 1, open_high=True)
    dense = in_features * out_features
    return max(
        1, math.floor((1 - compression) * dense / (in_features + out_features))
    )


class LowRankLinear(nn.Module):
    """A Linear layer stored as two factors of ordered rank.

    It also takes the constructor arguments of SpeechBrain's
    ``speechbrain.nnet.linear.Linear`` (``n_neurons``, ``input_size`` or
    ``input_shape``, ``bias``), so an hparams file can swap one class for
    the other and add a rank::

        ctc_lin: !new:sb_prune.nn.LowRankLinear   # was ...nnet.linear.Linear
            input_size: !ref <d_model>
            n_neurons: !ref <output_neurons>
            compression: 0.5                      # or rank: 16

    Arguments
    ---------
    in_features : int
        Input size (SpeechBrain: ``input_size``, or the last entry of
        ``input_shape``).
    out_features : int
        Output size (SpeechBrain: ``n_neurons``).
    rank : int
        Number of directions, in ``[1, min(in_features, out_features)]``.
    bias : bool
        Whether the layer has an output bias.
    n_neurons, input_size, input_shape : optional
        SpeechBrain's names for the sizes.
    compression : float, optional
        Instead of ``rank``: the fraction of the dense matrix's weights the
        factors save (see :func:`rank_for_compression`).

    Example
    -------
    >>> dense = torch.nn.Linear(6, 4)
    >>> low = LowRankLinear.from_linear(dense)  # full rank: exact
    >>> x = torch.rand(3, 6)
    >>> bool((low(x) - dense(x)).abs().max() < 1e-5)
    True
    >>> low.set_rank(2)  # run at rank 2 without changing the parameters
    >>> low.truncate_(2)  # or cut the factors to rank 2
    >>> low.rank, low.up.weight.shape
    (2, torch.Size([4, 2]))
    >>> LowRankLinear(input_size=8, n_neurons=4, compression=0.5).rank
    1
    >>> LowRankLinear(input_size=8, n_neurons=4)
    Traceback (most recent call last):
    ...
    ValueError: LowRankLinear: give rank or compression (exactly one), got ...
    """

    def __init__(
        self,
        in_features=None,
        out_features=None,
        rank=None,
        bias=True,
        n_neurons=None,
        input_size=None,
        input_shape=None,
        compression=None,
    ):
        super().__init__()
        in_features = _one_size(
            "in_features",
            in_features=in_features,
            input_size=input_size,
            input_shape=None if input_shape is None else input_shape[-1],
        )
        out_features = _one_size(
            "out_features", out_features=out_features, n_neurons=n_neurons
        )
        if (rank is None) == (compression is None):
            raise ValueError(
                "LowRankLinear: give rank or compression (exactly one), got "
                f"rank={rank!r}, compression={compression!r}"
            )
        if compression is not None:
            rank = rank_for_compression(in_features, out_features, compression)
        check_rank(rank, in_features, out_features)
        self.in_features = in_features
        self.out_features = out_features
        self.down = nn.Linear(in_features, rank, bias=False)
        self.up = nn.Linear(rank, out_features, bias=bias)
        self.active_rank = None

    @classmethod
    def from_linear(cls, linear, rank=None):
        """Factorise a Linear by truncated SVD.

        Arguments
        ---------
        linear : torch.nn.Linear
            The layer to replace (left unchanged).
        rank : int, optional
            The rank to keep (default: ``min(in, out)``, which is exact).

        Returns
        -------
        LowRankLinear
            On the same device and with the same dtype as ``linear``.
        """
        weight = linear.weight.detach()
        out_features, in_features = weight.shape
        rank = min(in_features, out_features) if rank is None else rank
        check_rank(rank, in_features, out_features)
        new = cls(in_features, out_features, rank, bias=linear.bias is not None)
        new.to(device=weight.device, dtype=weight.dtype)
        up, down = _balanced_factors(weight.double(), rank)
        with torch.no_grad():
            new.up.weight.copy_(up)
            new.down.weight.copy_(down)
            if linear.bias is not None:
                new.up.bias.copy_(linear.bias)
        return new

    @property
    def rank(self):
        """The number of directions the module stores (None when dense)."""
        if isinstance(self.down, nn.Identity):
            return None
        return self.down.out_features

    @torch.no_grad()
    def densify_(self):
        """Hold the product ``U V`` as one dense matrix, in place.

        The output is unchanged; ``rank`` becomes None. Selecting ranks
        later factorises the matrix again.
        """
        if self.rank is None:
            return
        dense = nn.Linear(
            self.in_features, self.out_features, bias=self.bias is not None
        ).to(device=self.up.weight.device, dtype=self.up.weight.dtype)
        dense.weight.copy_(self.weight)
        if self.bias is not None:
            dense.bias.copy_(self.bias)
        self.down, self.up, self.active_rank = nn.Identity(), dense, None

    @torch.no_grad()
    def _factorise_(self):
        """A dense layer becomes factors of full, ordered rank (exact)."""
        factors = LowRankLinear.from_linear(self.up)
        self.down, self.up = factors.down, factors.up

    @property
    def bias(self):
        """The output bias (None if the layer has none)."""
        return self.up.bias

    @property
    def weight(self):
        """The dense ``out x in`` matrix ``U V`` (at the active rank).

        For code that reads ``.weight`` directly; it is a new tensor on
        every access, use the module's forward where possible.
        """
        if self.rank is None:
            return self.up.weight
        rank = self.active_rank or self.rank
        return self.up.weight[:, :rank] @ self.down.weight[:rank]

    def forward(self, x):
        """Compute ``U (V x) + b`` at the active rank.

        Arguments
        ---------
        x : torch.Tensor
            ``[..., in_features]``.

        Returns
        -------
        torch.Tensor
            ``[..., out_features]``.
        """
        rank = self.active_rank
        if rank is None or rank == self.rank:
            return self.up(self.down(x))
        hidden = F.linear(x, self.down.weight[:rank])
        return F.linear(hidden, self.up.weight[:, :rank], self.up.bias)

    def set_rank(self, rank=None):
        """Run with only the first ``rank`` directions (None: all).

        The parameters are unchanged; call :meth:`reorder_` after training
        so that the first directions are the most important ones.

        Arguments
        ---------
        rank : int, optional
            In ``[1, self.rank]``.
        """
        if rank is not None:
            check_rank(rank, self.rank, self.rank)
        self.active_rank = rank

    @torch.no_grad()
    def reorder_(self):
        """Re-factorise ``U V`` so its directions are ordered again.

        The product (hence the output) is unchanged up to rounding; the
        Parameter objects are kept. Directions beyond the numerical rank
        of the product get zero weights.

        Returns
        -------
        torch.Tensor
            The singular values of ``U V``, in decreasing order (None for
            a dense layer, which has no directions to order).

        Example
        -------
        >>> low = LowRankLinear(5, 4, rank=3)
        >>> before = low.weight
        >>> values = low.reorder_()
        >>> bool(torch.all(values[:-1] >= values[1:]))
        True
        >>> bool(torch.allclose(low.weight, before, atol=1e-6))
        True
        """
        if self.rank is None:
            return None
        up, down = self.up.weight, self.down.weight
        q_up, r_up = torch.linalg.qr(up.double())
        q_down, r_down = torch.linalg.qr(down.double().T)
        left, values, right_t = torch.linalg.svd(r_up @ r_down.T)
        root = values.sqrt()
        up.copy_((q_up @ left) * root)
        down.copy_(root[:, None] * (right_t @ q_down.T))
        return values.to(up.dtype)

    def select_ranks(self, rank):
        """Keep the directions ``rank`` (indices), in place.

        Arguments
        ---------
        rank : torch.LongTensor
            Indices of the directions to keep, in order (a dense layer is
            factorised first, its directions ordered).
        """
        if self.rank is None:
            self._factorise_()
        select_linear_(self.down, rows=rank)
        select_linear_(self.up, cols=rank)
        self.active_rank = None

    def truncate_(self, rank):
        """Reorder, then keep the ``rank`` strongest directions, in place.

        Arguments
        ---------
        rank : int
            In ``[1, self.rank]``.
        """
        if self.rank is None:
            self._factorise_()
        check_rank(rank, self.rank, self.rank)
        self.reorder_()
        self.select_ranks(torch.arange(rank))

    def get_structure(self):
        """Return the stored rank (the module's structure record)."""
        return {"rank": self.rank}

    def set_structure(self, spec):
        """Resize to the recorded rank (placeholder values).

        Arguments
        ---------
        spec : dict
            ``{"rank": R}`` as returned by :meth:`get_structure` (None:
            dense).
        """
        rank = spec["rank"]
        if (rank is None) != (self.rank is None):
            if rank is None:
                self.densify_()
            else:
                self._factorise_()
        if rank is None:
            resize_linear_(self.up, self.out_features, self.in_features)
        else:
            resize_linear_(self.down, rank, self.in_features)
            resize_linear_(self.up, self.out_features, rank)
        self.active_rank = None

    def extra_repr(self):
        return (
            f"in_features={self.in_features}, "
            f"out_features={self.out_features}, rank={self.rank}, "
            f"bias={self.up.bias is not None}"
        )


def _one_size(name, **given):
    """The one size given under one of several names (SpeechBrain's too)."""
    found = {key: value for key, value in given.items() if value is not None}
    if len(found) != 1:
        raise ValueError(
            f"LowRankLinear: give its {name} as exactly one of "
            f"{sorted(given)}, got {found or 'none'}"
        )
    ((key, value),) = found.items()
    return check_int(key, value, minimum=1)


def _balanced_factors(weight, rank):
    """``weight ~ up @ down`` with ``sqrt(S)`` on both sides."""
    left, values, right_t = torch.linalg.svd(weight, full_matrices=False)
    root = values[:rank].sqrt()
    return left[:, :rank] * root, root[:, None] * right_t[:rank]


def set_compression(model, compression, physical=False):
    """Run every LowRankLinear of ``model`` at a compression level.

    Each factorised layer (dense ones are left as they are) is reordered
    (:meth:`LowRankLinear.reorder_`, output
    unchanged), then runs with the rank that removes ``compression`` of its
    dense weights (never more than the rank it has). One trained model thus
    delivers several sizes: ``physical=False`` only selects the directions
    at inference (and can go back up), ``physical=True`` cuts the factors,
    so :func:`sb_prune.core.saved_model.export_model` writes a smaller
    checkpoint.

    Arguments
    ---------
    model : torch.nn.Module
        A model converted with ``low_rank``.
    compression : float
        In [0, 1); see :func:`rank_for_compression`.
    physical : bool
        Cut the factors instead of selecting directions.

    Returns
    -------
    list of int
        The rank of each LowRankLinear, in module order.

    Example
    -------
    >>> model = torch.nn.Sequential(LowRankLinear(8, 8, rank=8))
    >>> set_compression(model, 0.5)
    [2]
    >>> set_compression(model, 0.0, physical=True)
    [4]
    >>> model[0].rank
    4
    """
    ranks = []
    for layer in model.modules():
        if not isinstance(layer, LowRankLinear) or layer.rank is None:
            continue
        rank = min(
            layer.rank,
            rank_for_compression(
                layer.in_features, layer.out_features, compression
            ),
        )
        if physical:
            layer.truncate_(rank)
        else:
            layer.reorder_()
            layer.set_rank(rank)
        ranks.append(rank)
    return ranks
