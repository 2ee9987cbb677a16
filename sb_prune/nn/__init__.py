"""Drop-in modules of sb_prune, each usable from hyperpyyaml.

Authors
 * sb_prune developers
"""

from sb_prune.families.conformer_gated import (
    GatedConformerEncoder,
    GatedConformerLayer,
)
from sb_prune.methods.adaptive_dropout.layer import AdaptiveDropout
from sb_prune.methods.attention.mha import PrunableMHA
from sb_prune.methods.attention.relpos import PrunableRelPosMHA
from sb_prune.methods.i3d.gating import GatePredictor
from sb_prune.methods.low_rank.layer import LowRankLinear

__all__ = [
    "AdaptiveDropout",
    "GatePredictor",
    "GatedConformerEncoder",
    "GatedConformerLayer",
    "LowRankLinear",
    "PrunableMHA",
    "PrunableRelPosMHA",
]
