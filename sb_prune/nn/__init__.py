"""Drop-in modules of sb_prune, each usable from hyperpyyaml.

Authors
 * sb_prune developers
"""

from sb_prune.nn.adaptive_dropout import AdaptiveDropout
from sb_prune.nn.attention import PrunableRelPosMHA

__all__ = ["AdaptiveDropout", "PrunableRelPosMHA"]
