"""Attention heads that each keep their own query/key and value units.

:class:`PrunableHeads` is what :class:`~sb_prune.nn.PrunableRelPosMHA` and
:class:`~sb_prune.nn.PrunableMHA` share: per-head widths, projections
stored unit by unit, and the layout that computes heads of different
widths at the cost of their units.

Layout of ragged heads: the projections run on the packed (physically
pruned) weights, so they cost what the kept units cost, and the attention
itself runs once per *group* of consecutive heads with equal widths (a
model whose heads are all alike is one group: plain batched attention).
The alternative, scattering the weights into a layout zero-padded to the
widest head, was measured with torch.profiler on an 18-layer, 256-wide
Conformer with 10 s inputs and adaptive-dropout-pruned heads (batch 1):
the zero fills and scatters of the weights took about 7% of the encoder's
time on every call, and the score products ran at the widest head's width
(more time in ``bmm`` than the dense model). Per group, the few extra
small matrix products cost less than that. Padding the activations instead
(one product for all heads, then unpadding) measured the same at batch 1
and slower at batch 8.

Authors
 * sb_prune developers
"""

import torch
from torch import nn

from sb_prune.core.inplace import resize_linear_, select_linear_


def head_groups(qk_dims, v_dims):
    """Runs of consecutive heads with equal query/key and value widths.

    Arguments
    ---------
    qk_dims, v_dims : list of int
        Query/key and value widths of each head.

    Returns
    -------
    list of tuple
        ``(heads, qk_width, v_width)`` per run, in head order.

    Example
    -------
    >>> head_groups([4, 4, 3, 4], [4, 4, 4, 4])
    [(2, 4, 4), (1, 3, 4), (1, 4, 4)]
    """
    groups = []
    for widths in zip(qk_dims, v_dims):
        if groups and groups[-1][1:] == widths:
            groups[-1] = (groups[-1][0] + 1, *widths)
        else:
            groups.append((1, *widths))
    return groups


class PrunableHeads(nn.Module):
    """Attention heads that each keep their own query/key and value units.

    The part that :class:`~sb_prune.nn.PrunableRelPosMHA` and
    :class:`~sb_prune.nn.PrunableMHA` share: the per-head widths, and
    ``in_proj`` (rows: the query units of every head, then the key units,
    then the value units, head-major), ``out_proj`` (columns: the value
    units) and the dropout on the attention weights. Subclasses with other
    per-unit tensors build, prune and resize them in :meth:`_build_more`,
    :meth:`_select_more` and :meth:`_resize_more`.

    Arguments
    ---------
    embed_dim, num_heads, dropout, qk_dims, v_dims
        As for :class:`~sb_prune.nn.PrunableRelPosMHA`.
    in_bias : bool
        Whether ``in_proj`` has a bias.
    out_bias : bool
        Whether ``out_proj`` has a bias.
    """

    def __init__(
        self,
        embed_dim,
        num_heads,
        dropout=0.0,
        qk_dims=None,
        v_dims=None,
        in_bias=True,
        out_bias=True,
    ):
        super().__init__()
        if embed_dim % num_heads:
            raise ValueError(
                f"embed_dim ({embed_dim}) must be divisible by num_heads "
                f"({num_heads})"
            )
        head_dim = embed_dim // num_heads
        self.embed_dim = embed_dim
        self.qk_dims = list(qk_dims or [head_dim] * num_heads)
        self.v_dims = list(v_dims or [head_dim] * num_heads)
        n_qk, n_v = sum(self.qk_dims), sum(self.v_dims)
        self.in_proj = nn.Linear(embed_dim, 2 * n_qk + n_v, bias=in_bias)
        self._build_more(n_qk)
        self.out_proj = nn.Linear(n_v, embed_dim, bias=out_bias)
        self.dropout_att = nn.Dropout(dropout)
        self._update_layout()

    @property
    def num_heads(self):
        """The number of heads the module currently has."""
        return len(self.v_dims)

    def _update_layout(self):
        """Recompute what depends on the per-head widths."""
        self._groups = head_groups(self.qk_dims, self.v_dims)

    def _split_heads(self, x, values=False):
        """``[..., T, units]`` -> per group, views ``[..., heads, T, width]``.

        Arguments
        ---------
        x : torch.Tensor
            Query/key units (or value units if ``values``), head-major.
        values : bool
            Whether ``x`` holds value units.

        Returns
        -------
        list of torch.Tensor
            One tensor per group of :func:`head_groups`.
        """
        shapes = [(h, v if values else qk) for h, qk, v in self._groups]
        parts = x.split([h * w for h, w in shapes], dim=-1)
        return [
            part.unflatten(-1, (h, w)).transpose(-2, -3)
            if w
            # Heads left without query/key units: built, not reshaped
            # (ONNX cannot reshape an empty tensor).
            else x.new_zeros(*x.shape[:-2], h, x.shape[-2], 0)
            for part, (h, w) in zip(parts, shapes)
        ]

    @staticmethod
    def _heads_cat(parts, dim):
        """Concatenate per-group tensors (no copy for a single group)."""
        return parts[0] if len(parts) == 1 else torch.cat(parts, dim)

    def _scores(self, queries, keys):
        """``[B, H, T, S]`` products of per-group queries and keys."""
        return self._heads_cat(
            [
                q @ k.transpose(-1, -2)
                if q.shape[-1]
                else q.new_zeros(*q.shape[:-1], k.shape[-2])
                for q, k in zip(queries, keys)
            ],
            -3,
        )

    def _weigh_values(self, attn, values):
        """Attention-weighted values, merged to ``[B, T, value units]``."""
        heads = [h for h, _, _ in self._groups]
        return self._heads_cat(
            [
                (a @ v).transpose(1, 2).flatten(2)
                for a, v in zip(attn.split(heads, dim=1), values)
            ],
            -1,
        )

    def _build_more(self, n_qk):
        """Build the subclass's other per-unit layers (before ``out_proj``)."""

    def _select_more(self, keep_qk, keep_v):
        """Keep the same units of the subclass's other per-unit tensors."""

    def _resize_more(self, n_qk, n_v):
        """Resize the subclass's other per-unit tensors (placeholders)."""

    def select_units(self, keep_qk, keep_v):
        """Keep the given query/key and value units (head-major indices).

        Heads left without value units are removed with their query/key
        units. The other per-unit tensors of a subclass (positional
        projection and biases, adaptive dropout layers) are pruned alike.

        Arguments
        ---------
        keep_qk : torch.LongTensor
            Sorted indices into the current query/key units.
        keep_v : torch.LongTensor
            Sorted indices into the current value units.
        """
        keep_v = keep_v.to(keep_qk.device)
        qk_head = torch.repeat_interleave(torch.tensor(self.qk_dims))
        v_head = torch.repeat_interleave(torch.tensor(self.v_dims))
        live = torch.unique(v_head[keep_v.cpu()])
        keep_qk = keep_qk[
            torch.isin(qk_head[keep_qk.cpu()], live).to(keep_qk.device)
        ]
        n_qk = sum(self.qk_dims)
        rows = torch.cat([keep_qk, keep_qk + n_qk, keep_v + 2 * n_qk])
        select_linear_(self.in_proj, rows=rows)
        select_linear_(self.out_proj, cols=keep_v)
        self._select_more(keep_qk, keep_v)
        heads = len(self.v_dims)
        qk_counts = torch.bincount(qk_head[keep_qk.cpu()], minlength=heads)
        v_counts = torch.bincount(v_head[keep_v.cpu()], minlength=heads)
        self.qk_dims = qk_counts[live].tolist()
        self.v_dims = v_counts[live].tolist()
        self._update_layout()

    def get_structure(self):
        """Return the per-head widths (the module's structure record)."""
        return {"qk_dims": list(self.qk_dims), "v_dims": list(self.v_dims)}

    def set_structure(self, spec):
        """Resize to the per-head widths of ``spec`` (placeholder values).

        Arguments
        ---------
        spec : dict
            ``{"qk_dims": [...], "v_dims": [...]}`` as returned by
            :meth:`get_structure`.
        """
        self.qk_dims, self.v_dims = list(spec["qk_dims"]), list(spec["v_dims"])
        n_qk, n_v = sum(self.qk_dims), sum(self.v_dims)
        resize_linear_(self.in_proj, 2 * n_qk + n_v, self.embed_dim)
        resize_linear_(self.out_proj, self.embed_dim, n_v)
        self._resize_more(n_qk, n_v)
        self._update_layout()

    def extra_repr(self):
        return f"qk_dims={self.qk_dims}, v_dims={self.v_dims}"
