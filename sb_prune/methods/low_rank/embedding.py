"""Token embeddings whose table is a product of two thin factors.

A decoder that reads its token embedding table ``E`` (vocabulary x width)
twice, to embed its input tokens and, transposed, to score every token of
the vocabulary at each step (Whisper ties the two), spends most of its
parameters and much of its per-token time on ``E``: 20 million of Whisper
tiny.en's 38 million parameters, and a 20 million multiply-accumulate
product per decoded token. :class:`LowRankEmbedding` holds ``E ~ C B``
(``C``: vocabulary x ``R`` codes, ``B``: ``R`` x width basis), so both
uses cost ``R`` / width of the dense ones: embedding ``C[ids] B`` and
scores ``(h B^T) C^T`` (:meth:`logits`).

The factors come from a truncated SVD (:meth:`~LowRankEmbedding.
from_embedding`): of the table itself, which keeps the directions of
largest weight whatever the decoder reads and writes (on Whisper tiny.en
at rank 256 of 384 the decoder then loops), or, calibrated, of the table
weighted on both sides by what the model does with it: each token's row by
how often the decoder reads that token (:class:`~sb_prune.methods.low_rank.
token_table.TokenStatistics`), its columns by the second moment ``M`` of
the decoder states that score it. Then the factors minimise
``sum_t w_t ||(E_t - C_t B) M^1/2||^2``: the score error where the decoder
states lie, on the tokens that occur.

The rank is part of the structure record (``{"rank": R}``) and can be
lowered like a :class:`~sb_prune.nn.LowRankLinear`'s; a structure record
builds one in place of a dense ``nn.Embedding``.

Authors
 * sb_prune developers
"""

import torch
import torch.nn.functional as F
from torch import nn

from sb_prune.core.validation import check_int


class LowRankEmbedding(nn.Module):
    """An embedding table ``codes @ basis`` of rank ``rank``.

    Arguments
    ---------
    num_embeddings, embedding_dim : int
        The table's size (as ``torch.nn.Embedding``).
    rank : int
        Inner width, in [1, min(num_embeddings, embedding_dim)].
    padding_idx : int, optional
        As ``torch.nn.Embedding``'s (its row gets no gradient).

    Example
    -------
    >>> dense = nn.Embedding(10, 6)
    >>> low = LowRankEmbedding.from_embedding(dense, rank=6)
    >>> ids = torch.tensor([[1, 4, 9]])
    >>> torch.allclose(low(ids), dense(ids), atol=1e-5)
    True
    >>> h = torch.rand(1, 3, 6)
    >>> torch.allclose(low.logits(h), h @ dense.weight.T, atol=1e-5)
    True
    >>> LowRankEmbedding.from_embedding(dense, rank=2).get_structure()
    {'rank': 2}
    """

    def __init__(self, num_embeddings, embedding_dim, rank, padding_idx=None):
        super().__init__()
        check_int("rank", rank, minimum=1)
        if rank > min(num_embeddings, embedding_dim):
            raise ValueError(
                f"rank must be at most min(num_embeddings, embedding_dim) = "
                f"{min(num_embeddings, embedding_dim)}, got {rank}"
            )
        self.num_embeddings = num_embeddings
        self.embedding_dim = embedding_dim
        self.padding_idx = padding_idx
        self.codes = nn.Parameter(torch.randn(num_embeddings, rank) * 0.02)
        self.basis = nn.Parameter(torch.eye(rank, embedding_dim))

    @classmethod
    def from_embedding(
        cls, embedding, rank, row_weights=None, state_moment=None
    ):
        """The best rank-``rank`` factorisation of a trained embedding.

        Best for the squared error of the table, or, given the statistics
        of a calibration, of the scores: ``sum_t w_t ||(E_t - E'_t)
        M^1/2||^2`` (row weights ``w``, state second moment ``M``).

        Arguments
        ---------
        embedding : torch.nn.Embedding
            The dense table.
        rank : int
            The inner width.
        row_weights : torch.Tensor, optional
            ``[num_embeddings]``, positive: how much each row's error
            counts (default: all alike).
        state_moment : torch.Tensor, optional
            ``[embedding_dim, embedding_dim]``: second moment of the states
            that score the table (default: the identity). Its eigenvalues
            below 1e-6 of the largest are raised to that.

        Returns
        -------
        LowRankEmbedding
            On the table's device and dtype; at full rank equal to it.

        Example
        -------
        >>> _ = torch.manual_seed(0)
        >>> dense = nn.Embedding(6, 4)
        >>> weights = torch.tensor([1e6, 1.0, 1.0, 1.0, 1.0, 1.0])
        >>> moment = torch.diag(torch.tensor([4.0, 1.0, 1.0, 0.1]))
        >>> low = LowRankEmbedding.from_embedding(dense, 1, weights, moment)
        >>> error = (low.weight - dense.weight)[0].abs().max()
        >>> plain = LowRankEmbedding.from_embedding(dense, 1)
        >>> bool(error < 1e-3 < (plain.weight - dense.weight)[0].abs().max())
        True
        """
        weight = embedding.weight.detach()
        low = cls(*weight.shape, rank, padding_idx=embedding.padding_idx)
        rows = torch.ones(weight.shape[0], 1, dtype=torch.float64)
        if row_weights is not None:
            row_weights = row_weights.detach().double().cpu()
            if row_weights.shape != (weight.shape[0],) or not bool(
                (row_weights > 0).all()
            ):
                raise ValueError(
                    f"row_weights must be {weight.shape[0]} positive "
                    f"numbers, got shape {tuple(row_weights.shape)}"
                )
            rows = row_weights.sqrt()[:, None]
        root, inverse_root = _roots(state_moment, weight.shape[1])
        target = rows * (weight.double().cpu() @ root)
        u, s, vh = torch.linalg.svd(target, full_matrices=False)
        half = s[:rank].sqrt()
        with torch.no_grad():
            low.codes.copy_(u[:, :rank] * half / rows)
            low.basis.copy_(half[:, None] * vh[:rank] @ inverse_root)
        return low.to(device=weight.device, dtype=weight.dtype)

    @property
    def rank(self):
        """The inner width."""
        return self.codes.shape[1]

    @property
    def weight(self):
        """The dense table ``codes @ basis``.

        For code that reads ``.weight``: computing it costs what the dense
        table would.
        """
        return self.codes @ self.basis

    def forward(self, ids):
        """Embed token ids: ``codes[ids] @ basis``."""
        return F.embedding(ids, self.codes, self.padding_idx) @ self.basis

    def logits(self, hidden):
        """Score every token: ``(hidden @ basis^T) @ codes^T``.

        Arguments
        ---------
        hidden : torch.Tensor
            ``[..., embedding_dim]``.

        Returns
        -------
        torch.Tensor
            ``[..., num_embeddings]``.
        """
        return (hidden @ self.basis.to(hidden.dtype).T) @ self.codes.to(
            hidden.dtype
        ).T

    def select_ranks(self, kept):
        """Keep the inner directions ``kept`` (sorted indices), in place.

        Arguments
        ---------
        kept : torch.LongTensor
            The directions to keep.
        """
        kept = torch.as_tensor(kept, dtype=torch.long)
        self.codes = nn.Parameter(self.codes.detach()[:, kept].clone())
        self.basis = nn.Parameter(self.basis.detach()[kept].clone())

    def get_structure(self):
        """Return the rank (the structure record)."""
        return {"rank": self.rank}

    def set_structure(self, spec):
        """Resize to a recorded rank (placeholder values)."""
        rank = int(spec["rank"])
        self.codes = nn.Parameter(
            self.codes.detach().new_zeros(self.num_embeddings, rank)
        )
        self.basis = nn.Parameter(
            self.basis.detach().new_zeros(rank, self.embedding_dim)
        )

    def extra_repr(self):
        return f"{self.num_embeddings}, {self.embedding_dim}, rank={self.rank}"


def _roots(moment, width):
    """``M^1/2`` and ``M^-1/2`` of a second moment (float64, CPU).

    The identity for None.
    """
    if moment is None:
        eye = torch.eye(width, dtype=torch.float64)
        return eye, eye
    moment = moment.detach().double().cpu()
    if moment.shape != (width, width):
        raise ValueError(
            f"state_moment must be {width} x {width}, got shape "
            f"{tuple(moment.shape)}"
        )
    values, vectors = torch.linalg.eigh((moment + moment.T) / 2)
    values = values.clamp_min(values.max().clamp_min(1e-300) * 1e-6).sqrt()
    return (vectors * values) @ vectors.T, (vectors / values) @ vectors.T
