"""The PyTorch family: ``torch.nn.TransformerEncoder`` and its layers.

A family outside SpeechBrain, in one module:

* ``torch.nn.TransformerEncoder``: a layer stack (its ``num_layers``
  follows a cut);
* ``torch.nn.TransformerEncoderLayer``: its feed-forward block
  (``linear1`` up, ``linear2`` down) is group ``hidden``; modules
  ``attention`` and ``ffn`` for importance analysis and federated dropout.

Refused by name: its attention heads and the low rank of its attention
(``torch.nn.MultiheadAttention`` ties the head width to ``embed_dim`` and
projects with its packed ``in_proj_weight``, so neither can change without
replacing the module), adaptive dropout (the fused inference path of
``TransformerEncoderLayer`` reads ``linear2``'s weight directly and would
skip the masks) and I3D gates.

Authors
 * sb_prune developers
"""

from sb_prune.core.registry import Family, layer_stack_spec
from sb_prune.families.common import feed_forward_spec

FAMILY = Family("PyTorch nn.TransformerEncoder")
#: Why its attention keeps its heads and its dense projections.
FIXED_ATTENTION = (
    "torch.nn.MultiheadAttention ties its head width to embed_dim and "
    "projects with its packed in_proj_weight, so its heads cannot be "
    "removed nor its projections factorised in place"
)


def _sync_num_layers(encoder):
    encoder.num_layers = len(encoder.layers)


FAMILY.register(
    "torch.nn.modules.transformer.TransformerEncoder",
    layer_stack_spec(
        after_cut=_sync_num_layers,
        refusals={
            "dynamic_depth": "no gated torch encoder: I3D gates SpeechBrain "
            "Conformer layers only"
        },
    ),
)
FAMILY.register(
    "torch.nn.modules.transformer.TransformerEncoderLayer",
    feed_forward_spec(
        lambda layer: (layer, "linear1", "linear2"),
        layer_modules={
            "attention": ["norm1", "self_attn"],
            "ffn": ["norm2", "linear1", "linear2"],
        },
        refusals={
            "adaptive_dropout": "torch's fused encoder-layer inference path "
            "reads linear2's weight directly and would skip the masks",
            "prunable_attention": FIXED_ATTENTION,
            "heads": FIXED_ATTENTION,
            "low_rank": FIXED_ATTENTION,
        },
    ),
)
