"""sb_prune.analysis.

Analyses of representations: graph and Euclidean convexity of class regions
(for convexity-based layer pruning) and the pooling they rely on; the
hidden-state extraction behind the ``ConvexityScoring`` hook (imported on
first use, so the convexity functions stay light). Layer importance
(ambient and critical layers, weight change): ``LayerImportance`` and
``BrainEvaluator`` (also imported on first use).

Hooks have one public namespace, :mod:`sb_prune.hooks`
(``!new:sb_prune.hooks.ConvexityScoring``, ``LayerCut``,
``WeightChangeTracker``); their names here, and ``GateRecorder``,
``choose_layers``, ``find_layer_stack`` and ``register_layer_stack``, are
aliases kept so that older hparams files keep loading.

Authors
 * sb_prune developers
"""

import importlib

from sb_prune.analysis.convexity.euclidean import euclidean_convexity
from sb_prune.analysis.convexity.graph import ConvexityResult, graph_convexity
from sb_prune.analysis.convexity.knn_graph import knn_graph
from sb_prune.analysis.convexity.layers import (
    frame_convexity,
    layerwise_convexity,
)
from sb_prune.analysis.convexity.pooling import masked_mean_pool

_LAZY = {
    "BrainEvaluator": "sb_prune.analysis.importance.tracking",
    "LayerImportance": "sb_prune.analysis.importance.units",
    "WeightChangeTracker": "sb_prune.analysis.importance.tracking",
    "ConvexityScoring": "sb_prune.analysis.convexity.hooks",
    "GateRecorder": "sb_prune.methods.i3d.gates",
    "LayerCut": "sb_prune.methods.layer_cut.hook",
    "LayerStates": "sb_prune.analysis.convexity.hidden_states",
    "choose_layers": "sb_prune.methods.layer_cut.rules",
    "find_layer_stack": "sb_prune.core.encoders",
    "pooled_layer_states": "sb_prune.analysis.convexity.hidden_states",
    "register_layer_stack": "sb_prune.core.registry",
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
    "register_layer_stack",
]


def __getattr__(name):
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
