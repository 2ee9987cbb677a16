"""The SpeechBrain Branchformer family.

``speechbrain.lobes.models.transformer.Branchformer``: the encoder is a
layer stack (layer cuts, criteria on layers); each layer's attention is
SpeechBrain's (``RelPosMHAXL`` or ``MultiheadAttention``, made prunable
by the SpeechBrain Transformer family: heads, low rank); modules
``attention``, ``cgmlp`` and ``merge`` for importance analysis.

Refused by name: adaptive dropout, pruning and low rank of the cgMLP
branch's units (its gating unit normalises over all of them with a
LayerNorm, so removing some changes the others; it is no feed-forward
block), I3D gates.

Authors
 * sb_prune developers
"""

from speechbrain.lobes.models.transformer.Branchformer import (
    BranchformerEncoder,
    BranchformerEncoderLayer,
)

from sb_prune.core.registry import Family, ModuleSpec, layer_stack_spec

FAMILY = Family("SpeechBrain Branchformer")
#: Why the units of the cgMLP branch stay.
CGMLP_UNITS = (
    "the cgMLP branch normalises over all its units (a LayerNorm in its "
    "gating unit), so no unit can be masked or removed exactly, and it is "
    "no feed-forward block; prune its attention heads instead"
)

FAMILY.register(
    BranchformerEncoder,
    layer_stack_spec(
        refusals={
            "dynamic_depth": "no gated Branchformer encoder: I3D gates "
            "SpeechBrain Conformer layers only"
        }
    ),
)
FAMILY.register(
    BranchformerEncoderLayer,
    ModuleSpec(
        groups=(),
        layer_modules={
            "attention": ["norm_mhsa", "mha_layer"],
            "cgmlp": ["norm_conv", "convolution_branch"],
            "merge": ["merge_proj"],
        },
        refusals={
            "adaptive_dropout": CGMLP_UNITS,
            "ffn": CGMLP_UNITS,
            "low_rank": CGMLP_UNITS,
        },
    ),
)
