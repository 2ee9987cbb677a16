"""Convexity of the layers of a model, per utterance or per frame.

``layerwise_convexity`` scores pooled utterance vectors layer by layer (the
peak picks where to cut the stack, as in Dorszewski et al. 2024), and
``frame_convexity`` scores frame-level classes such as CTC-aligned tokens,
after subsampling the frames of every class.

Authors
 * sb_prune developers
"""

import logging

import numpy as np
import torch
from tqdm import tqdm

from sb_prune.analysis.convexity.graph import (
    check_embeddings,
    encode_labels,
    graph_convexity,
    split_by_class,
)

logger = logging.getLogger(__name__)


def layerwise_convexity(hidden_states_per_layer, labels, **kwargs):
    """Compute :func:`graph_convexity` for every layer of a model.

    The same seed draws the same pairs for every layer, so the layer scores
    are directly comparable (the convexity peak picks the pruning layer).

    Arguments
    ---------
    hidden_states_per_layer : sequence or torch.Tensor
        One ``[N, D]`` array per layer (or a ``[L, N, D]`` tensor), already
        pooled over frames, e.g. with
        :func:`sb_prune.analysis.masked_mean_pool`.
    labels : sequence, numpy.ndarray or torch.Tensor
        ``N`` hashable class labels shared by all layers.
    **kwargs
        Passed to :func:`graph_convexity` (``n_neighbors``, ``max_pairs``,
        ``seed``, ``device``).

    Returns
    -------
    list of ConvexityResult
        One result per layer, in layer order.

    Example
    -------
    >>> generator = torch.Generator().manual_seed(0)
    >>> layers = torch.randn(3, 30, 4, generator=generator)
    >>> layers[2, 15:] += 20.0  # only the last layer separates the classes
    >>> results = layerwise_convexity(layers, [0] * 15 + [1] * 15,
    ...                               n_neighbors=4)
    >>> len(results), results[-1].score
    (3, 100.0)
    """
    if len(hidden_states_per_layer) == 0:
        raise ValueError("hidden_states_per_layer is empty")
    return [
        graph_convexity(hidden, labels, **kwargs)
        for hidden in tqdm(
            hidden_states_per_layer,
            desc="convexity per layer",
            disable=len(hidden_states_per_layer) < 4,
        )
    ]


def frame_convexity(
    frames,
    frame_labels,
    max_points_per_class=200,
    min_points_per_class=2,
    ignore_label=None,
    seed=0,
    **kwargs,
):
    """Graph convexity of frame-level classes (e.g. CTC-aligned tokens).

    Frames are subsampled uniformly per class, so frequent tokens do not
    swamp the k-NN graph, then scored with :func:`graph_convexity`.

    Arguments
    ---------
    frames : torch.Tensor or numpy.ndarray
        Frame vectors ``[..., D]`` (e.g. ``[M, D]`` or ``[B, T, D]``).
    frame_labels : sequence, numpy.ndarray or torch.Tensor
        One hashable label per frame, shaped like ``frames[..., 0]``.
    max_points_per_class : int
        Frames kept per class at most.
    min_points_per_class : int
        Classes with fewer frames are left out (logged), at least 2.
    ignore_label : hashable, optional
        Label of frames to leave out (padding, CTC blank, ...).
    seed : int
        Seed of the frame subsampling and of the pair sampling.
    **kwargs
        Passed to :func:`graph_convexity` (``n_neighbors``, ``max_pairs``,
        ``device``).

    Returns
    -------
    ConvexityResult
        Convexity of the kept classes.

    Example
    -------
    >>> generator = torch.Generator().manual_seed(0)
    >>> frames = torch.randn(2, 50, 3, generator=generator)
    >>> frames[:, 25:] += 10.0
    >>> tokens = torch.tensor([[1] * 25 + [2] * 25, [1] * 25 + [-100] * 25])
    >>> result = frame_convexity(frames, tokens, max_points_per_class=30,
    ...                          ignore_label=-100, n_neighbors=5)
    >>> result.score, result.n_pairs
    (100.0, {1: 870, 2: 600})
    """
    if max_points_per_class < 2:
        raise ValueError(
            f"max_points_per_class must be >= 2, got {max_points_per_class}"
        )
    if min_points_per_class < 2:
        raise ValueError(
            f"min_points_per_class must be >= 2, got {min_points_per_class}"
        )
    frames = check_embeddings(frames, max_dims=16)
    frames = frames.reshape(-1, frames.shape[-1])
    if torch.is_tensor(frame_labels) or isinstance(frame_labels, np.ndarray):
        frame_labels = frame_labels.reshape(-1)
    codes, classes = encode_labels(frame_labels, frames.shape[0])
    rng = np.random.default_rng(seed)
    kept = []
    for code, members in enumerate(split_by_class(codes, len(classes))):
        if ignore_label is not None and classes[code] == ignore_label:
            continue
        if len(members) < min_points_per_class:
            logger.info(
                "frame_convexity: leaving out class %r (%d frames)",
                classes[code],
                len(members),
            )
            continue
        if len(members) > max_points_per_class:
            members = rng.choice(members, max_points_per_class, replace=False)
        kept.append(members)
    kept = np.sort(np.concatenate(kept)) if kept else np.zeros(0, int)
    return graph_convexity(
        frames[torch.as_tensor(kept, device=frames.device)],
        [classes[code] for code in codes[kept]],
        seed=seed,
        **kwargs,
    )
