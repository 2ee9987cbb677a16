"""sb_prune's own modules: what the methods build into a model.

Prunable attention (:class:`~sb_prune.nn.PrunableRelPosMHA`,
:class:`~sb_prune.nn.PrunableMHA`: groups ``qk`` and ``v``, per-unit query
/ key and value dimensions; criterion members are heads), low-rank layers
(:class:`~sb_prune.nn.LowRankLinear`: group ``rank``), and the modules that
record their own structure (adaptive dropout, the unit gather it leaves,
the group norm of ``conv_norm``).

Authors
 * sb_prune developers
"""

import torch

from sb_prune.core.registry import Family, ModuleSpec
from sb_prune.methods.adaptive_dropout.layer import AdaptiveDropout, UnitSelect
from sb_prune.methods.attention.heads import PrunableHeads
from sb_prune.methods.attention.relpos import PrunableRelPosMHA
from sb_prune.methods.conv_norm.group_norm import ConvGroupNorm
from sb_prune.methods.criteria.criteria import OWN_PROJECTIONS
from sb_prune.methods.low_rank.embedding import LowRankEmbedding
from sb_prune.methods.low_rank.layer import LowRankLinear

FAMILY = Family("sb_prune")


def _own_structure(module_type, groups=(), prune=None, **more):
    """A spec for a module that records its own structure."""
    return ModuleSpec(
        groups=groups,
        prune=prune,
        get_structure=module_type.get_structure,
        set_structure=module_type.set_structure,
        **more,
    )


def _head_units(dims, heads):
    starts = torch.tensor([0] + list(dims)).cumsum(0)
    return torch.cat(
        [torch.arange(starts[h], starts[h + 1]) for h in heads.tolist()]
    )


def _per_head(values, dims):
    index = torch.repeat_interleave(torch.tensor(dims)).to(values.device)
    return values.new_zeros(len(dims)).index_add_(0, index, values)


def _prune_attention(mha, qk=None, v=None):
    if qk is None:
        qk = torch.arange(sum(mha.qk_dims))
    if v is None:
        v = torch.arange(sum(mha.v_dims))
    mha.select_units(qk, v)


def _unit_magnitudes(mha):
    """Squared norms of the weights of each query/key and value unit."""
    n_qk = sum(mha.qk_dims)
    rows = mha.in_proj.weight.pow(2).sum(1)
    if mha.in_proj.bias is not None:
        rows = rows + mha.in_proj.bias.pow(2)
    qk = rows[:n_qk] + rows[n_qk : 2 * n_qk]
    v = rows[2 * n_qk :] + mha.out_proj.weight.pow(2).sum(0)
    return qk, v


def _head_magnitude(mha, extra_qk=None):
    """The L2 norm of every parameter that belongs to each head."""
    with torch.no_grad():
        qk, v = _unit_magnitudes(mha)
        if extra_qk is not None:
            qk = qk + extra_qk(mha)
        return (_per_head(qk, mha.qk_dims) + _per_head(v, mha.v_dims)).sqrt()


def _positional_magnitude(mha):
    """The relative-position weights and biases of each query/key unit."""
    return (
        mha.linear_pos.weight.pow(2).sum(1)
        + mha.pos_bias_u.pow(2)
        + mha.pos_bias_v.pow(2)
    )


def _attention_spec(magnitude, **more):
    return _own_structure(
        PrunableHeads,
        groups=("qk", "v"),
        prune=_prune_attention,
        criterion_group="heads",
        count=lambda mha: mha.num_heads,
        member_plan=lambda mha, kept: {
            "qk": _head_units(mha.qk_dims, kept),
            "v": _head_units(mha.v_dims, kept),
        },
        consumer=lambda mha: mha.out_proj,
        per_member=lambda mha, values: _per_head(values, mha.v_dims),
        magnitude=magnitude,
        group_size=lambda mha, group: sum(
            mha.qk_dims if group == "qk" else mha.v_dims
        ),
        dropouts=lambda mha: {
            "qk": getattr(mha, "query_dropout", None),
            "v": getattr(mha, "value_dropout", None),
        },
        linears=lambda mha: [(mha, "in_proj"), (mha, "out_proj")],
        low_rank_point="attention",
        **more,
    )


FAMILY.register(PrunableHeads, _attention_spec(_head_magnitude))
FAMILY.register(
    PrunableRelPosMHA,
    _attention_spec(
        lambda mha: _head_magnitude(mha, _positional_magnitude),
        # Its projections run functionally on packed, masked weights.
        answers={OWN_PROJECTIONS: True},
    ),
)


def _prune_rank(module, rank):
    if rank is None:
        module.densify_()
    else:
        module.select_ranks(torch.as_tensor(rank, dtype=torch.long))


def _low_rank_in_place_of(linear, record):
    if type(linear) is not torch.nn.Linear:
        return None
    return LowRankLinear(
        linear.in_features,
        linear.out_features,
        record["rank"] or 1,  # a dense record: set_structure densifies
        bias=linear.bias is not None,
    ).to(device=linear.weight.device, dtype=linear.weight.dtype)


FAMILY.register(
    LowRankLinear,
    _own_structure(
        LowRankLinear,
        groups=("rank",),
        prune=_prune_rank,
        group_size=lambda module, group: (
            module.rank or min(module.in_features, module.out_features)
        ),
        replaces=_low_rank_in_place_of,
    ),
)


def _low_rank_embedding_in_place_of(embedding, record):
    if type(embedding) is not torch.nn.Embedding:
        return None
    return LowRankEmbedding(
        embedding.num_embeddings,
        embedding.embedding_dim,
        record["rank"],
        padding_idx=embedding.padding_idx,
    ).to(device=embedding.weight.device, dtype=embedding.weight.dtype)


FAMILY.register(
    LowRankEmbedding,
    _own_structure(
        LowRankEmbedding,
        groups=("rank",),
        prune=lambda module, rank: module.select_ranks(rank),
        group_size=lambda module, group: module.rank,
        replaces=_low_rank_embedding_in_place_of,
    ),
)
for _type in (AdaptiveDropout, UnitSelect, ConvGroupNorm):
    FAMILY.register(_type, _own_structure(_type))
