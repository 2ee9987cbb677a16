"""Drop-in modules of sb_prune, each usable from hyperpyyaml.

Authors
 * sb_prune developers
"""

from sb_prune.nn.adaptive_dropout import AdaptiveDropout
from sb_prune.nn.attention import PrunableRelPosMHA
from sb_prune.nn.gated import (
    GatedConformerEncoder,
    GatedConformerLayer,
    GatePredictor,
)
from sb_prune.nn.low_rank import LowRankLinear
from sb_prune.nn.mha import PrunableMHA

__all__ = [
    "AdaptiveDropout",
    "GatePredictor",
    "GatedConformerEncoder",
    "GatedConformerLayer",
    "LowRankLinear",
    "PrunableMHA",
    "PrunableRelPosMHA",
]
