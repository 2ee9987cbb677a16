"""Tests of graph / Euclidean convexity and masked pooling."""

import tracemalloc
import warnings

import numpy as np
import pytest
import torch

from sb_prune.analysis import (
    euclidean_convexity,
    frame_convexity,
    graph_convexity,
    knn_graph,
    layerwise_convexity,
    masked_mean_pool,
)
from sb_prune.analysis.convexity.graph import sample_pairs


def blobs(n_per_class=30, dims=8, offset=20.0, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((2 * n_per_class, dims))
    x[n_per_class:] += offset
    y = np.repeat([0, 1], n_per_class)
    return x, y


def mixed(n=80, classes=3, seed=0):
    """Overlapping classes: a score strictly between 0 and 100."""
    rng = np.random.default_rng(seed)
    y = rng.integers(0, classes, n)
    return rng.standard_normal((n, 5)) + 0.8 * y[:, None], y


def same_result(a, b, mapping=None):
    mapping = mapping or {label: label for label in a.per_class}
    assert a.score == b.score and a.pooled == b.pooled
    for label, value in a.per_class.items():
        assert b.per_class[mapping[label]] == value
        assert b.n_pairs[mapping[label]] == a.n_pairs[label]


def test_separated_blobs_are_convex():
    x, y = blobs()
    result = graph_convexity(x, y, n_neighbors=5)
    assert result.score == pytest.approx(100.0)
    assert result.pooled == pytest.approx(100.0)
    assert result.n_pairs == {0: 30 * 29, 1: 30 * 29}


def test_interleaved_rings_are_not_convex():
    rng = np.random.default_rng(0)
    radius = np.repeat([1.0, 2.0, 3.0, 4.0], 60)
    angle = rng.uniform(0.0, 2.0 * np.pi, radius.size)
    x = np.c_[radius * np.cos(angle), radius * np.sin(angle)]
    x += 0.05 * rng.standard_normal(x.shape)
    y = radius.astype(int) % 2  # rings alternate between the classes
    assert graph_convexity(x, y).score < 75.0


def test_checkerboard_is_not_convex():
    rng = np.random.default_rng(0)
    x = rng.uniform(0.0, 4.0, (300, 2))
    y = (np.floor(x[:, 0]) + np.floor(x[:, 1])) % 2
    assert graph_convexity(x, y).score < 65.0


@pytest.mark.parametrize(
    "mapping", [{0: "b", 1: "a", 2: "c"}, {0: 42, 1: 7, 2: -3}]
)
def test_renaming_labels_changes_nothing(mapping):
    x, y = mixed()
    kwargs = dict(n_neighbors=6, max_pairs=50, seed=3)  # pairs are sampled
    reference = graph_convexity(x, y, **kwargs)
    renamed = graph_convexity(x, [mapping[v] for v in y.tolist()], **kwargs)
    same_result(reference, renamed, mapping)


def test_tensor_and_array_inputs_agree():
    x, y = mixed()
    from_numpy = graph_convexity(x, y, max_pairs=100)
    from_torch = graph_convexity(
        torch.from_numpy(x), torch.from_numpy(y), 10, 100
    )
    same_result(from_numpy, from_torch)


def test_seed_makes_it_deterministic():
    x, y = mixed(n=150)
    first = graph_convexity(x, y, max_pairs=40, seed=1)
    same_result(first, graph_convexity(x, y, max_pairs=40, seed=1))
    other = graph_convexity(x, y, max_pairs=40, seed=2)
    assert other.per_class != first.per_class
    assert other.n_pairs == first.n_pairs == {0: 40, 1: 40, 2: 40}


def test_disconnected_pairs_score_zero():
    # Two far-apart groups; class 0 has one point in each, joined by no path.
    x = np.array([[0.0], [1.0], [2.0], [100.0], [101.0], [102.0]])
    y = [0, 1, 1, 1, 1, 0]
    result = graph_convexity(x, y, n_neighbors=2)
    assert result.per_class[0] == 0.0
    assert result.per_class[1] == pytest.approx(100 * 4 / 12)


def reference_graph_convexity(x, y, n_neighbors):
    from nnconvexity.graph import compute_graph_convexity

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # "Couldn't reach some vertices"
        return compute_graph_convexity(
            x, y, n_neighbors=n_neighbors, max_n_paths=10**6
        )


@pytest.mark.parametrize(
    "n_neighbors, far_apart", [(3, False), (5, True), (10, False)]
)
def test_matches_nnconvexity(n_neighbors, far_apart):
    x, y = mixed(n=60, seed=n_neighbors)
    if far_apart:  # a disconnected graph: some pairs have no path
        x[:30] += 50.0
    pooled, per_class = reference_graph_convexity(x, y, n_neighbors)
    ours = graph_convexity(x, y, n_neighbors=n_neighbors, max_pairs=10**6)
    # The reference rounds to 2 decimals; all pairs are enumerated.
    assert ours.pooled == pytest.approx(pooled, abs=0.006)
    for label, value in per_class.items():
        assert ours.per_class[int(label)] == pytest.approx(value, abs=0.006)


def test_knn_graph_is_symmetric_and_skips_duplicates():
    x = torch.randn(50, 3, generator=torch.Generator().manual_seed(0))
    x[1] = x[0]
    graph = knn_graph(x, n_neighbors=4, device="cpu")
    dense = graph.toarray()
    assert (dense == dense.T).all()
    assert dense[0, 1] == 0.0
    assert ((dense > 0).sum(axis=1)[2:] >= 4).all()
    rows, cols = dense.nonzero()
    lengths = torch.linalg.vector_norm(x[rows] - x[cols], dim=1)
    np.testing.assert_allclose(dense[rows, cols], lengths.numpy(), rtol=1e-5)


@pytest.mark.parametrize("ordered", [True, False])
def test_pairs_are_enumerated_or_sampled_distinct(ordered):
    rng = np.random.default_rng(0)
    first, second = sample_pairs(7, 100, rng, ordered=ordered)
    pairs = set(zip(first.tolist(), second.tolist()))
    expected = {(a, b) for a in range(7) for b in range(7) if a != b}
    if not ordered:
        expected = {(a, b) for a, b in expected if a < b}
    assert len(pairs) == len(first) and pairs == expected
    first, second = sample_pairs(40, 300, rng, ordered=ordered)
    pairs = set(zip(first.tolist(), second.tolist()))
    assert len(pairs) == 300 and pairs <= {
        (a, b) for a in range(40) for b in range(40) if a != b
    }
    assert ordered or (first < second).all()


def test_large_class_pairs_are_not_listed():
    tracemalloc.start()
    first, second = sample_pairs(10**6, 5000, np.random.default_rng(0))
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    assert peak < 10 * 2**20  # all ~10^12 pairs would take terabytes
    assert len(set(zip(first.tolist(), second.tolist()))) == 5000
    assert (first != second).all() and second.max() < 10**6


GRID = np.arange(8.0).reshape(4, 2)
WITH_NAN = np.where(GRID == 3.0, np.nan, GRID)
WITH_INF = np.where(GRID == 3.0, np.inf, GRID)
TWO_CLASSES = [0, 0, 1, 1]


@pytest.mark.parametrize(
    "x, y, kwargs, message",
    [
        (GRID, [0, 0, 0, 0], {}, "at least 2 classes"),
        (GRID, [0, 0, 0, 1], {}, "class 1 has 1"),
        (GRID, TWO_CLASSES, {}, r"n_neighbors must be in \[1, 3\]"),
        (GRID, TWO_CLASSES, {"n_neighbors": 0}, "n_neighbors"),
        (GRID, [0, 0, 1], {"n_neighbors": 1}, "labels has 3 entries"),
        (GRID, TWO_CLASSES, {"max_pairs": 0}, "max_pairs"),
        (WITH_NAN, TWO_CLASSES, {"n_neighbors": 1}, "NaN"),
        (WITH_INF, TWO_CLASSES, {"n_neighbors": 1}, "inf"),
        (GRID.ravel(), TWO_CLASSES, {"n_neighbors": 1}, "embeddings must"),
    ],
)
def test_bad_input_raises(x, y, kwargs, message):
    with pytest.raises(ValueError, match=message):
        graph_convexity(x, y, **kwargs)


def test_layerwise_matches_per_layer_calls():
    x, y = mixed()
    layers = [x, 2.0 * x + 1.0, np.flip(x, axis=1).copy()]
    results = layerwise_convexity(layers, y, n_neighbors=5, max_pairs=30)
    for layer, result in zip(layers, results):
        same_result(result, graph_convexity(layer, y, 5, 30))
    # Distances scale uniformly: the same graph, the same paths.
    same_result(results[0], results[1])


def test_frame_convexity_subsamples_and_ignores():
    rng = np.random.default_rng(0)
    labels = np.repeat(["a", "b", "c", "<blank>"], [100, 29, 1, 50])
    frames = rng.standard_normal((labels.size, 4))
    frames[labels == "b"] += 25.0
    result = frame_convexity(
        torch.from_numpy(frames).reshape(2, 90, 4),
        labels.reshape(2, 90),
        max_points_per_class=40,
        ignore_label="<blank>",
        n_neighbors=5,
    )
    # "c" has a single frame and is left out; "a" is capped at 40 frames.
    assert result.n_pairs == {"a": 40 * 39, "b": 29 * 28}
    assert result.score == 100.0
    with pytest.raises(ValueError, match="max_points_per_class"):
        frame_convexity(frames, labels, max_points_per_class=1)


def test_euclidean_convexity_matches_nnconvexity():
    from nnconvexity.euclidean import compute_euclidean_convexity

    rng = np.random.default_rng(0)
    x = rng.uniform(-3.0, 3.0, (30, 2)).astype(np.float32)
    y = (np.abs(x[:, 0]) > 1.5).astype(int)  # class 1 lies on both sides

    def predict(points):
        return (points[:, 0].abs() > 1.5).long()

    pooled, per_class = compute_euclidean_convexity(
        x, y, lambda points, layer: predict(points), layer=0, n_pairs=10**6
    )
    ours = euclidean_convexity(x, y, predict, n_pairs=10**6, batch_size=64)
    assert ours.pooled == pytest.approx(pooled, abs=0.006)
    assert ours.per_class[0] == 100.0 and ours.per_class[1] < 80.0
    for label, value in per_class.items():
        assert ours.per_class[int(label)] == pytest.approx(value, abs=0.006)


def test_euclidean_convexity_checks_predictions():
    x, y = blobs(n_per_class=5)
    with pytest.raises(ValueError, match="predict_fn returned 1 predictions"):
        euclidean_convexity(x, y, lambda points: [0])
    with pytest.raises(ValueError, match="n_sampled"):
        euclidean_convexity(x, y, lambda points: points[:, 0], n_sampled=0)


def test_masked_pooling_ignores_padding_exactly():
    generator = torch.Generator().manual_seed(0)
    hidden = torch.randn(3, 10, 4, generator=generator)
    valid = torch.tensor([10, 6, 3])
    padding = torch.arange(10)[None, :] >= valid[:, None]
    pooled = masked_mean_pool(hidden, padding)
    garbage = hidden.masked_fill(padding[:, :, None], float("nan"))
    assert torch.equal(masked_mean_pool(garbage, padding), pooled)
    assert torch.equal(masked_mean_pool(hidden, valid / 10.0), pooled)
    for row, length in enumerate(valid.tolist()):
        expected = hidden[row, :length].mean(dim=0)
        torch.testing.assert_close(pooled[row], expected)


@pytest.mark.parametrize(
    "lengths_or_mask, message",
    [
        (torch.tensor([1.0, 1.5]), r"in \[0, 1\]"),
        (torch.tensor([1.0, 0.01]), "no frame for utterance 1"),
        (torch.tensor([5, 5]), "dtype"),
        (torch.ones(2, 3, dtype=torch.bool), "padding mask must be"),
    ],
)
def test_masked_pooling_bad_input(lengths_or_mask, message):
    with pytest.raises(ValueError, match=message):
        masked_mean_pool(torch.zeros(2, 5, 3), lengths_or_mask)
