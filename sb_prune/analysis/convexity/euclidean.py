"""Euclidean convexity of class regions, judged by a classifier.

For unordered pairs of points of a class (Tětková et al.), points are placed
on the segment between them, ``z_i = λ_i x1 + (1 - λ_i) x2`` with
``λ_i = i / (n_sampled + 1)``, and handed to a classifier (typically the
rest of the network plus its head).  A pair scores the fraction of its
points predicted as the class; class convexity is 100 times the mean pair
score.  Unlike graph convexity this needs a trained head.

Authors
 * sb_prune developers
"""

import numpy as np
import torch

from sb_prune.analysis.convexity.graph import (
    check_embeddings,
    encode_labels,
    group_classes,
    sample_pairs,
    summarise,
)


def euclidean_convexity(
    embeddings,
    labels,
    predict_fn,
    n_pairs=5000,
    n_sampled=10,
    seed=0,
    batch_size=1024,
):
    """Compute the Euclidean convexity of the class regions of some points.

    Arguments
    ---------
    embeddings : torch.Tensor or numpy.ndarray
        Points ``[N, ...]`` (e.g. pooled ``[N, D]`` or ``[N, T, D]``).
    labels : sequence, numpy.ndarray or torch.Tensor
        ``N`` hashable class labels.
    predict_fn : callable
        Maps a ``[B, ...]`` float tensor of interpolated points to ``B``
        predicted labels (same label values as ``labels``; a list, array or
        tensor).
    n_pairs : int
        Maximum number of unordered pairs per class.
    n_sampled : int
        Points placed on each segment.
    seed : int
        Seed of the pair sampling.
    batch_size : int
        Maximum number of points per ``predict_fn`` call.

    Returns
    -------
    ConvexityResult
        ``score`` (mean over classes, %), ``pooled`` (mean over all pairs,
        %), ``per_class`` and ``n_pairs``.

    Example
    -------
    >>> points = torch.tensor([[-3.0], [-1.0], [1.0], [2.0]])
    >>> labels = ["neg", "neg", "pos", "pos"]
    >>> def predict_fn(batch):
    ...     return ["pos" if x > 0 else "neg" for x in batch[:, 0]]
    >>> euclidean_convexity(points, labels, predict_fn).per_class
    {'neg': 100.0, 'pos': 100.0}
    >>> def threshold_at_1(batch):
    ...     return ["pos" if x > 1.5 else "neg" for x in batch[:, 0]]
    >>> euclidean_convexity(points, labels, threshold_at_1).per_class
    {'neg': 100.0, 'pos': 50.0}
    """
    for name, value in [
        ("n_pairs", n_pairs),
        ("n_sampled", n_sampled),
        ("batch_size", batch_size),
    ]:
        if value < 1:
            raise ValueError(f"{name} must be >= 1, got {value}")
    points = check_embeddings(embeddings, max_dims=16)
    codes, classes = encode_labels(labels, points.shape[0])
    members = group_classes(codes, classes)
    lookup = {label: code for code, label in enumerate(classes)}
    weights = torch.arange(1, n_sampled + 1, device=points.device)
    weights = (weights / (n_sampled + 1)).to(points.dtype)
    weights = weights.reshape(1, n_sampled, *[1] * (points.dim() - 1))
    per_batch = max(1, batch_size // n_sampled)
    streams = np.random.SeedSequence(seed).spawn(len(classes))
    scores, pair_codes = [], []
    for code, (indices, stream) in enumerate(zip(members, streams)):
        rng = np.random.default_rng(stream)
        first, second = sample_pairs(len(indices), n_pairs, rng, ordered=False)
        ends = [
            torch.as_tensor(indices[end], device=points.device)
            for end in (first, second)
        ]
        for start in range(0, len(first), per_batch):
            x1, x2 = (points[end[start : start + per_batch]] for end in ends)
            segment = weights * x1[:, None] + (1 - weights) * x2[:, None]
            predicted = _predicted_codes(
                predict_fn(segment.flatten(0, 1)), segment.shape[:2], lookup
            )
            scores.append((predicted == code).mean(axis=1))
        pair_codes.append(np.full(len(first), code))
    return summarise(
        np.concatenate(scores), np.concatenate(pair_codes), classes
    )


def _predicted_codes(predictions, shape, lookup):
    """Map predicted labels to class codes (-1 for unknown labels)."""
    if torch.is_tensor(predictions):
        predictions = predictions.detach().cpu().numpy()
    if isinstance(predictions, np.ndarray):
        predictions = predictions.reshape(-1).tolist()
    predictions = list(predictions)
    if len(predictions) != shape[0] * shape[1]:
        raise ValueError(
            f"predict_fn returned {len(predictions)} predictions for "
            f"{shape[0] * shape[1]} points"
        )
    codes = np.asarray([lookup.get(label, -1) for label in predictions])
    return codes.reshape(shape)
