"""Standard multi-head attention whose heads can be pruned.

:class:`PrunableMHA` computes exactly what SpeechBrain's ``regularMHA``
(``speechbrain.nnet.attention.MultiheadAttention``, a wrapper of
``torch.nn.MultiheadAttention``) computes, with the same call signature,
but stores its projections as two ``Linear`` layers laid out per unit:

* ``in_proj`` rows: the query units of every head, then the key units,
  then the value units (head-major, as torch lays them out);
* ``out_proj`` columns: the value units.

Each head may keep its own number of query/key and value dimensions, so
heads (or single dimensions) can be removed physically; the scale stays
``1/sqrt(original head_dim)``, so the kept dimensions compute what they
computed before. A head without value dimensions is removed. It is the
counterpart, for Transformer encoders and language models, of
:class:`~sb_prune.nn.PrunableRelPosMHA`.

Authors
 * sb_prune developers
"""

import math

import torch
import torch.nn.functional as F

from sb_prune.methods.attention.heads import PrunableHeads


class PrunableMHA(PrunableHeads):
    """Multi-head attention with prunable heads (``regularMHA`` layout).

    Arguments
    ---------
    embed_dim : int
        Model dimension.
    num_heads : int
        Number of heads before pruning.
    dropout : float
        Dropout on the attention weights.
    bias : bool
        Whether the projections have biases.
    qk_dims : list of int, optional
        Query/key dimensions of each head (default ``embed_dim/num_heads``).
    v_dims : list of int, optional
        Value dimensions of each head (default ``embed_dim/num_heads``).

    Example
    -------
    >>> from speechbrain.nnet.attention import MultiheadAttention
    >>> reference = MultiheadAttention(nhead=4, d_model=16).eval()
    >>> mha = PrunableMHA.from_multihead(reference).eval()
    >>> x = torch.rand(2, 5, 16)
    >>> out, attn = mha(x, x, x)
    >>> bool((out - reference(x, x, x)[0]).abs().max() < 1e-5)
    True
    >>> keep = torch.arange(4, 16)  # remove head 0
    >>> mha.select_units(keep, keep)
    >>> mha.num_heads, mha(x, x, x)[0].shape
    (3, torch.Size([2, 5, 16]))
    """

    def __init__(
        self,
        embed_dim,
        num_heads,
        dropout=0.0,
        bias=True,
        qk_dims=None,
        v_dims=None,
    ):
        super().__init__(
            embed_dim, num_heads, dropout, qk_dims, v_dims, bias, bias
        )
        self.scale = 1.0 / math.sqrt(embed_dim // num_heads)

    @classmethod
    def from_multihead(cls, mha):
        """Build an equivalent module from a SpeechBrain ``regularMHA``.

        Arguments
        ---------
        mha : speechbrain.nnet.attention.MultiheadAttention
            The module to convert (``kdim == vdim == d_model``, no
            ``add_bias_kv``, no ``add_zero_attn``).

        Returns
        -------
        PrunableMHA
            A module with the same parameters, device and dtype.
        """
        att = mha.att
        if (
            not att._qkv_same_embed_dim
            or att.bias_k is not None
            or att.add_zero_attn
        ):
            raise ValueError(
                "PrunableMHA converts MultiheadAttention with kdim == vdim "
                "== d_model, add_bias_kv=False and add_zero_attn=False only"
            )
        new = cls(
            att.embed_dim,
            att.num_heads,
            dropout=att.dropout,
            bias=att.in_proj_bias is not None,
        )
        weight = att.in_proj_weight
        new.to(device=weight.device, dtype=weight.dtype)
        with torch.no_grad():
            new.in_proj.weight.copy_(weight)
            new.out_proj.weight.copy_(att.out_proj.weight)
            if att.in_proj_bias is not None:
                new.in_proj.bias.copy_(att.in_proj_bias)
                new.out_proj.bias.copy_(att.out_proj.bias)
        return new

    def _project(self, query, key, value):
        n_qk, n_v = sum(self.qk_dims), sum(self.v_dims)
        if query is key and key is value:
            return self.in_proj(query).split([n_qk, n_qk, n_v], dim=-1)
        weight, bias = self.in_proj.weight, self.in_proj.bias
        bounds = [(0, n_qk), (n_qk, 2 * n_qk), (2 * n_qk, 2 * n_qk + n_v)]
        return [
            F.linear(x, weight[a:b], None if bias is None else bias[a:b])
            for x, (a, b) in zip((query, key, value), bounds)
        ]

    def forward(
        self,
        query,
        key,
        value,
        attn_mask=None,
        key_padding_mask=None,
        return_attn_weights=True,
        pos_embs=None,
    ):
        """Compute multi-head attention (torch semantics for the masks).

        Arguments
        ---------
        query : torch.Tensor
            ``[B, L, embed_dim]``.
        key : torch.Tensor
            ``[B, S, embed_dim]``.
        value : torch.Tensor
            ``[B, S, embed_dim]``.
        attn_mask : torch.Tensor, optional
            ``[L, S]`` or ``[B*H, L, S]``; boolean (True = masked) or
            additive.
        key_padding_mask : torch.Tensor, optional
            ``[B, S]``; boolean (True = padded) or additive.
        return_attn_weights : bool
            Whether to also return the head-averaged attention weights.
        pos_embs : torch.Tensor, optional
            Added to the attention scores, as SpeechBrain does.

        Returns
        -------
        out : torch.Tensor
            ``[B, L, embed_dim]``.
        attn : torch.Tensor
            ``[B, L, S]`` attention weights averaged over heads (if
            requested).
        """
        batch, qlen, klen = query.shape[0], query.shape[1], key.shape[1]
        if pos_embs is not None:
            attn_mask = pos_embs if attn_mask is None else attn_mask + pos_embs
        q, k, v = self._project(query, key, value)
        scores = self._scores(
            self._split_heads(q * self.scale), self._split_heads(k)
        )
        if attn_mask is not None:
            if attn_mask.ndim == 3:
                attn_mask = attn_mask.view(batch, -1, qlen, klen)
            scores = _add_mask(scores, attn_mask)
        if key_padding_mask is not None:
            mask = key_padding_mask.view(batch, 1, 1, klen)
            scores = _add_mask(scores, mask)
        attn = self.dropout_att(F.softmax(scores, dim=-1))
        x = self._weigh_values(attn, self._split_heads(v, values=True))
        out = self.out_proj(x)
        if return_attn_weights:
            return out, attn.mean(dim=1)
        return out


def _add_mask(scores, mask):
    if mask.dtype == torch.bool:
        return scores.masked_fill(mask, float("-inf"))
    return scores + mask
