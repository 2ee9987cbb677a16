"""Every hook :class:`sb_prune.PruningBrain` runs, under one public name.

Hparams files list them under ``prune_hooks``, for example
``!new:sb_prune.hooks.CriterionPruning``. Each hook lives with its method
(``sb_prune.methods.<method>.hook``) or analysis; this module only gathers
their public names.

Authors
 * sb_prune developers
"""

from sb_prune.analysis.convexity.hooks import ConvexityScoring
from sb_prune.analysis.importance.tracking import WeightChangeTracker
from sb_prune.methods.adaptive_dropout.hook import AdaptiveDropoutPruning
from sb_prune.methods.criteria.hook import CriterionPruning
from sb_prune.methods.layer_cut.hook import LayerCut
from sb_prune.methods.low_rank.hook import (
    ActivationLowRank,
    LowRankCompression,
)
from sb_prune.training.distillation import Distillation
from sb_prune.training.hooks import PruningHook, prune_by_plan

__all__ = [
    "ActivationLowRank",
    "AdaptiveDropoutPruning",
    "ConvexityScoring",
    "CriterionPruning",
    "Distillation",
    "LayerCut",
    "LowRankCompression",
    "PruningHook",
    "WeightChangeTracker",
    "prune_by_plan",
]
