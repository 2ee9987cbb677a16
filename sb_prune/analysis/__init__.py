"""sb_prune.analysis.

Analyses of representations: graph and Euclidean convexity of class regions
(for convexity-based layer pruning) and the pooling they rely on; the
``ConvexityScoring`` and ``LayerCut`` hooks, the layer-cut rules and the
hidden-state extraction behind them (imported on first use, so the
convexity functions stay light). Layer importance (ambient and critical
layers, weight change): ``LayerImportance``, the ``WeightChangeTracker``
hook and ``BrainEvaluator`` (also imported on first use).

Authors
 * sb_prune developers
"""

import importlib

from sb_prune.analysis.convexity import ConvexityResult, graph_convexity
from sb_prune.analysis.euclidean_convexity import euclidean_convexity
from sb_prune.analysis.knn_graph import knn_graph
from sb_prune.analysis.layer_convexity import (
    frame_convexity,
    layerwise_convexity,
)
from sb_prune.analysis.pooling import masked_mean_pool

_LAZY = {
    "BrainEvaluator": "sb_prune.analysis.importance_tracking",
    "LayerImportance": "sb_prune.analysis.importance",
    "WeightChangeTracker": "sb_prune.analysis.importance_tracking",
    "ConvexityScoring": "sb_prune.analysis.convexity_hooks",
    "GateRecorder": "sb_prune.analysis.gates",
    "LayerCut": "sb_prune.analysis.convexity_hooks",
    "LayerStates": "sb_prune.analysis.hidden_states",
    "choose_layers": "sb_prune.analysis.layer_cut",
    "find_layer_stack": "sb_prune.analysis.hidden_states",
    "pooled_layer_states": "sb_prune.analysis.hidden_states",
    "register_huggingface_encoders": "sb_prune.analysis.layer_cut",
    "register_layer_stack": "sb_prune.analysis.layer_cut",
}

__all__ = [
    "BrainEvaluator",
    "LayerImportance",
    "WeightChangeTracker",
    "ConvexityResult",
    "ConvexityScoring",
    "GateRecorder",
    "LayerCut",
    "LayerStates",
    "choose_layers",
    "euclidean_convexity",
    "find_layer_stack",
    "frame_convexity",
    "graph_convexity",
    "knn_graph",
    "layerwise_convexity",
    "masked_mean_pool",
    "pooled_layer_states",
    "register_huggingface_encoders",
    "register_layer_stack",
]


def __getattr__(name):
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
