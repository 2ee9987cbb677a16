"""Criterion pruning (Emili et al. 2023): criteria and their hook.

The criteria are usable from hyperpyyaml by their short path, e.g.
``criterion: !new:sb_prune.methods.criteria.Taylor``.

Authors
 * sb_prune developers
"""

from sb_prune.methods.criteria.criteria import (
    Activation,
    Criterion,
    Magnitude,
    Taylor,
    Wanda,
)

__all__ = ["Activation", "Criterion", "Magnitude", "Taylor", "Wanda"]
