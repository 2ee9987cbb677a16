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

Heads of different widths cost what their units cost (see
:mod:`sb_prune.methods.attention.heads` for the layout and why).

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
from sb_prune.methods.attention.heads import PrunableHeads


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

    def _projections(self, query, key, value, pos_embs):
        """Queries, keys, values, positions and biases, masks applied.

        The adaptive-dropout masks (training) scale the rows of the packed
        weights, which is cheaper than scaling the activations; without
        masks the projections run as modules (which may be low rank).
        """
        n_qk, n_v = sum(self.qk_dims), sum(self.v_dims)
        bias_u, bias_v = self.pos_bias_u, self.pos_bias_v
        masked = (
            self.query_dropout is not None or self.value_dropout is not None
        )
        if not masked and query is key and key is value:
            q, k, v = self.in_proj(query).split([n_qk, n_qk, n_v], dim=-1)
            return q, k, v, self.linear_pos(pos_embs), bias_u, bias_v
        w_q, w_k, w_v = self.in_proj.weight.split([n_qk, n_qk, n_v])
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
        if query is key and key is value:
            q, k, v = F.linear(query, torch.cat([w_q, w_k, w_v])).split(
                [n_qk, n_qk, n_v], dim=-1
            )
        else:
            q, k, v = (
                F.linear(x, w)
                for x, w in ((query, w_q), (key, w_k), (value, w_v))
            )
        return q, k, v, self.linear_pos(pos_embs), bias_u, bias_v

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
        q, k, v, p, bias_u, bias_v = self._projections(
            query, key, value, pos_embs
        )
        split = self._split_heads
        scores = self._scores(split((q + bias_u) * self.scale), split(k))
        positional = self._scores(split((q + bias_v) * self.scale), split(p))
        scores = scores + self.rel_shift(positional)
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
        x = self._weigh_values(attn.to(v.dtype), split(v, values=True))
        out = self.out_proj(x)
        return (out, attn) if return_attn_weights else out

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
