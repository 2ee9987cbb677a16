"""Relative-position self-attention whose heads can be pruned unit by unit.

:class:`PrunableRelPosMHA` computes exactly what SpeechBrain's
``RelPosMHAXL`` computes for self-attention (Transformer-XL relative
positions with the ``u``/``v`` biases, scale ``1/sqrt(embed_dim)``), but it
stores the query/key, positional and value projections per unit, so that
each head may keep its own number of query/key dimensions and of value
dimensions:

* removing query dimension ``j`` of a head removes row ``j`` of the query,
  key and positional projections and entry ``j`` of both positional
  biases (the adaptive-dropout mask scales the biased queries ``q + u`` and
  ``q + v``, so a dropped dimension contributes nothing to the scores);
* removing value dimension ``j`` removes row ``j`` of the value projection
  and column ``j`` of the output projection;
* a head without value dimensions contributes nothing and is removed.

Heads of different widths are computed as if zero-padded to the widest
head: the forward pass scatters the (physically smaller) projection
weights into a padded layout, which costs a few weight-sized copies per
call instead of activation-sized gathers.

Authors
 * sb_prune developers
"""

import math

import torch
import torch.nn.functional as F
from torch import nn

from sb_prune.core.inplace import (
    resize_,
    resize_linear_,
    select_,
    select_linear_,
)


def _slots(dims, device):
    """Positions of head-major units in a layout padded to the widest head.

    Returns None when every head has the same width (no padding needed).
    """
    if len(set(dims)) <= 1:
        return None
    width = max(dims)
    slots = [torch.arange(dim) + head * width for head, dim in enumerate(dims)]
    return torch.cat(slots).to(device)


def _pad_index(dims, device):
    """Index that scatters head-major units into ``[H, max(dims)]`` slots.

    Missing slots point to the extra zero column at position ``sum(dims)``.
    Returns None when every head has the same width (no padding needed).
    """
    if len(set(dims)) <= 1:
        return None
    width, total = max(dims), sum(dims)
    index = torch.full((len(dims), width), total, dtype=torch.long)
    start = 0
    for head, dim in enumerate(dims):
        index[head, :dim] = torch.arange(start, start + dim)
        start += dim
    return index.flatten().to(device)


def _pad(tensor, slots, size, dim=0):
    """Scatter ``tensor``'s units into ``size`` zero-initialised slots."""
    if slots is None:
        return tensor
    shape = list(tensor.shape)
    shape[dim] = size
    return tensor.new_zeros(shape).index_copy(dim, slots, tensor)


class PrunableHeads(nn.Module):
    """Attention heads that each keep their own query/key and value units.

    The part that :class:`PrunableRelPosMHA` and
    :class:`~sb_prune.nn.PrunableMHA` share: the per-head widths, and
    ``in_proj`` (rows: the query units of every head, then the key units,
    then the value units, head-major), ``out_proj`` (columns: the value
    units) and the dropout on the attention weights. Subclasses with other
    per-unit tensors build, prune and resize them in :meth:`_build_more`,
    :meth:`_select_more` and :meth:`_resize_more`.

    Arguments
    ---------
    embed_dim, num_heads, dropout, qk_dims, v_dims
        As for :class:`PrunableRelPosMHA`.
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


class PrunableRelPosMHA(PrunableHeads):
    """Relative-position multi-head self-attention with prunable units.

    Arguments
    ---------
    embed_dim : int
        Model dimension.
    num_heads : int
        Number of heads before pruning.
    dropout : float
        Dropout on the attention weights.
    mask_pos_future : bool
        Whether to mask future positional encodings (causal models).
    qk_dims : list of int, optional
        Query/key dimensions of each head (default ``embed_dim/num_heads``).
    v_dims : list of int, optional
        Value dimensions of each head (default ``embed_dim/num_heads``).

    Example
    -------
    >>> from speechbrain.nnet.attention import RelPosMHAXL
    >>> from speechbrain.nnet.attention import RelPosEncXL
    >>> x = torch.rand(2, 7, 16)
    >>> pos = RelPosEncXL(16)(x)
    >>> reference = RelPosMHAXL(16, 4).eval()
    >>> mha = PrunableRelPosMHA.from_relposmhaxl(reference).eval()
    >>> out, _ = mha(x, x, x, pos)
    >>> torch.allclose(out, reference(x, x, x, pos)[0], atol=1e-6)
    True
    """

    def __init__(
        self,
        embed_dim,
        num_heads,
        dropout=0.0,
        mask_pos_future=False,
        qk_dims=None,
        v_dims=None,
    ):
        super().__init__(
            embed_dim, num_heads, dropout, qk_dims, v_dims, in_bias=False
        )
        self.mask_pos_future = mask_pos_future
        self.scale = 1.0 / math.sqrt(embed_dim)

    def _build_more(self, n_qk):
        self.linear_pos = nn.Linear(self.embed_dim, n_qk, bias=False)
        self.pos_bias_u = nn.Parameter(torch.zeros(n_qk))
        self.pos_bias_v = nn.Parameter(torch.zeros(n_qk))
        self.query_dropout = None
        self.value_dropout = None

    @classmethod
    def from_relposmhaxl(cls, mha):
        """Build an equivalent module from a SpeechBrain ``RelPosMHAXL``.

        Arguments
        ---------
        mha : speechbrain.nnet.attention.RelPosMHAXL
            The module to convert (self-attention layout of its fused
            ``in_proj_weight``: rows ``[q_h; k_h; v_h]`` per head).

        Returns
        -------
        PrunableRelPosMHA
            A module with the same parameters, on the same device.
        """
        if not getattr(mha, "_qkv_same_embed_dim", True) or mha.vbias:
            raise ValueError(
                "PrunableRelPosMHA converts RelPosMHAXL with vdim == "
                "embed_dim and vbias=False only"
            )
        heads, head_dim = mha.num_heads, mha.head_dim
        new = cls(
            mha.embed_dim,
            heads,
            dropout=mha.dropout_att.p,
            mask_pos_future=mha.mask_pos_future,
        )
        new.to(device=mha.in_proj_weight.device, dtype=mha.in_proj_weight.dtype)
        fused = mha.in_proj_weight.detach().view(heads, 3, head_dim, -1)
        with torch.no_grad():
            new.in_proj.weight.copy_(
                fused.transpose(0, 1).reshape(-1, fused.shape[-1])
            )
            new.linear_pos.weight.copy_(mha.linear_pos.weight)
            # RelPosMHAXL reads its (head_dim, heads) biases as (heads, dim).
            new.pos_bias_u.copy_(mha.pos_bias_u.detach().reshape(-1))
            new.pos_bias_v.copy_(mha.pos_bias_v.detach().reshape(-1))
            new.out_proj.load_state_dict(mha.out_proj.state_dict())
        return new

    def _update_layout(self):
        device = self.pos_bias_u.device
        self._qk_slots = _slots(self.qk_dims, device)
        self._v_slots = _slots(self.v_dims, device)

    def _split_heads(self, x, width):
        """``[..., T, H * width]`` -> ``[..., H, T, width]``."""
        x = x.view(*x.shape[:-1], self.num_heads, width)
        return x.transpose(-2, -3)

    def _padded_weights(self):
        """Projection weights in the padded head layout, masks applied."""
        n_qk, n_v = sum(self.qk_dims), sum(self.v_dims)
        qk_size = self.num_heads * max(self.qk_dims)
        v_size = self.num_heads * max(self.v_dims)
        w_q, w_k, w_v = self.in_proj.weight.split([n_qk, n_qk, n_v])
        bias_u, bias_v = self.pos_bias_u, self.pos_bias_v
        if self.query_dropout is not None:
            # Scaling q, u and v by the mask scales q + u and q + v.
            mask = self.query_dropout(w_q.new_ones(n_qk))
            w_q, bias_u, bias_v = (
                mask[:, None] * w_q,
                mask * bias_u,
                mask * bias_v,
            )
        if self.value_dropout is not None:
            w_v = self.value_dropout(w_v.new_ones(n_v))[:, None] * w_v
        slots = self._qk_slots
        w_q, w_k, w_p, bias_u, bias_v = (
            _pad(t, slots, qk_size)
            for t in (w_q, w_k, self.linear_pos.weight, bias_u, bias_v)
        )
        w_v = _pad(w_v, self._v_slots, v_size)
        w_out = _pad(self.out_proj.weight, self._v_slots, v_size, dim=1)
        return w_q, w_k, w_v, w_p, bias_u, bias_v, w_out

    def rel_shift(self, x):
        """Align relative-position scores (Transformer-XL shift).

        Arguments
        ---------
        x : torch.Tensor
            Scores ``[B, H, T, 2T-1]`` against relative positions.

        Returns
        -------
        torch.Tensor
            Scores ``[B, H, T, T]`` against absolute key positions.
        """
        batch, heads, qlen, pos_len = x.shape
        x = F.pad(x, pad=(1, 0)).view(batch, heads, -1, qlen)
        x = x[:, :, 1:].view(batch, heads, qlen, pos_len)
        if self.mask_pos_future:
            ones = torch.ones((qlen, pos_len), device=x.device)
            x = x * torch.tril(ones, pos_len - qlen)[None, None]
        return x[..., : pos_len // 2 + 1]

    def forward(
        self,
        query,
        key,
        value,
        pos_embs,
        key_padding_mask=None,
        attn_mask=None,
        return_attn_weights=True,
    ):
        """Compute relative-position attention.

        Arguments
        ---------
        query, key, value : torch.Tensor
            ``[B, T, embed_dim]`` (self-attention: the same tensor).
        pos_embs : torch.Tensor
            Relative positional embeddings ``[1, 2T-1, embed_dim]``.
        key_padding_mask : torch.Tensor, optional
            ``[B, T]``, True at padded positions.
        attn_mask : torch.Tensor, optional
            ``[T, T]`` or ``[B*H, T, T]``; boolean (True = masked) or
            additive.
        return_attn_weights : bool
            Whether to also return the attention weights.

        Returns
        -------
        out : torch.Tensor
            ``[B, T, embed_dim]``.
        attn : torch.Tensor
            ``[B, H, T, T]`` attention weights (if requested).
        """
        if self._runs_modules(query, key, value):
            n_qk = sum(self.qk_dims)
            q, k, v = self.in_proj(query).split(
                [n_qk, n_qk, sum(self.v_dims)], dim=-1
            )
            p = self.linear_pos(pos_embs)
            bias_u, bias_v, project_out = (
                self.pos_bias_u,
                self.pos_bias_v,
                self.out_proj,
            )
        else:
            w_q, w_k, w_v, w_p, bias_u, bias_v, w_out = self._padded_weights()
            if query is key and key is value:
                q, k, v = F.linear(query, torch.cat([w_q, w_k, w_v])).split(
                    [w_q.shape[0], w_k.shape[0], w_v.shape[0]], dim=-1
                )
            else:
                q, k, v = (
                    F.linear(x, w)
                    for x, w in ((query, w_q), (key, w_k), (value, w_v))
                )
            p = F.linear(pos_embs, w_p)

            def project_out(x):
                return F.linear(x, w_out, self.out_proj.bias)

        qk_width, v_width = max(self.qk_dims), max(self.v_dims)
        q_u = self._split_heads((q + bias_u) * self.scale, qk_width)
        q_v = self._split_heads((q + bias_v) * self.scale, qk_width)
        k = self._split_heads(k, qk_width)
        v = self._split_heads(v, v_width)
        p = self._split_heads(p, qk_width)
        scores = q_u @ k.transpose(-1, -2)
        scores = scores + self.rel_shift(q_v @ p.transpose(-1, -2))
        batch, qlen, klen = query.shape[0], query.shape[1], key.shape[1]
        if attn_mask is not None:
            if attn_mask.ndim == 2:
                attn_mask = attn_mask.view(1, 1, qlen, klen)
            else:
                attn_mask = attn_mask.view(-1, self.num_heads, qlen, klen)
            if attn_mask.dtype == torch.bool:
                scores = scores.masked_fill(attn_mask, -float("inf"))
            else:
                scores = scores + attn_mask
        if key_padding_mask is not None:
            scores = scores.masked_fill(
                key_padding_mask.view(batch, 1, 1, klen), -float("inf")
            )
        attn = F.softmax(scores, dim=-1, dtype=torch.float32)
        attn = self.dropout_att(attn)
        # Rows that are fully masked are NaN after the softmax: zero them.
        if attn_mask is not None and attn_mask.dtype == torch.bool:
            attn = attn.masked_fill(attn_mask, 0.0)
        if key_padding_mask is not None:
            attn = attn.masked_fill(
                key_padding_mask.view(batch, 1, 1, klen), 0.0
            )
        x = (attn.to(v.dtype) @ v).transpose(1, 2).reshape(batch, qlen, -1)
        out = project_out(x)
        return (out, attn) if return_attn_weights else out

    def _runs_modules(self, query, key, value):
        """Whether the projections can run as modules (e.g. low rank).

        True for self-attention with heads of equal widths and no dropout
        masks; otherwise the projections use padded, masked weights.
        """
        return (
            query is key
            and key is value
            and self._qk_slots is None
            and self._v_slots is None
            and self.query_dropout is None
            and self.value_dropout is None
        )

    def _select_more(self, keep_qk, keep_v):
        select_linear_(self.linear_pos, rows=keep_qk)
        select_(self, "pos_bias_u", keep_qk, 0)
        select_(self, "pos_bias_v", keep_qk, 0)
        if self.query_dropout is not None:
            self.query_dropout.select_units(keep_qk)
        if self.value_dropout is not None:
            self.value_dropout.select_units(keep_v)

    def _resize_more(self, n_qk, n_v):
        resize_linear_(self.linear_pos, n_qk, self.embed_dim)
        resize_(self, "pos_bias_u", (n_qk,))
        resize_(self, "pos_bias_v", (n_qk,))
