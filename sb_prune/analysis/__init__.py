"""sb_prune.analysis.

Analyses of representations: graph and Euclidean convexity of class regions
(for convexity-based layer pruning) and the pooling they rely on.

Authors
 * sb_prune developers
"""

from sb_prune.analysis.convexity import ConvexityResult, graph_convexity
from sb_prune.analysis.euclidean_convexity import euclidean_convexity
from sb_prune.analysis.knn_graph import knn_graph
from sb_prune.analysis.layer_convexity import (
    frame_convexity,
    layerwise_convexity,
)
from sb_prune.analysis.pooling import masked_mean_pool

__all__ = [
    "ConvexityResult",
    "euclidean_convexity",
    "frame_convexity",
    "graph_convexity",
    "knn_graph",
    "layerwise_convexity",
    "masked_mean_pool",
]
