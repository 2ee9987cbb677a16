"""Graph convexity of class regions in a representation space.

Graph convexity (Tětková et al.; used by Dorszewski et al. 2024 to choose
how many layers of a speech SSL model to keep) measures how much of the
shortest path between two points of a class, in a k-nearest-neighbour graph
of all points, stays inside that class.  The semantics follow the authors'
code and the ``nnconvexity`` package:

1. Euclidean k-NN graph, every point linked to its ``k`` nearest other
   points (exact duplicates get no edge), symmetrised with ``max`` and
   weighted by distance (see :mod:`sb_prune.analysis.convexity.knn_graph`);
2. per class, up to ``max_pairs`` *ordered* same-class pairs drawn uniformly
   without replacement;
3. one weighted shortest path per pair, scored 0 when there is no path, 1
   for a direct edge, else the fraction of interior vertices in the class.

Class convexity is 100 times the mean path score.  ``score`` averages the
classes (the authors' repository) and ``pooled`` averages all paths of all
classes (the ``nnconvexity`` package); they differ when classes have
different numbers of pairs.  Shortest paths come from SciPy's Dijkstra, run
once per distinct source vertex, in memory-bounded chunks.

Authors
 * sb_prune developers
"""

from dataclasses import dataclass

import numpy as np
import torch
from scipy.sparse.csgraph import dijkstra
from tqdm import tqdm

from sb_prune.analysis.convexity.knn_graph import knn_graph

# Working memory of one Dijkstra chunk: float64 distances + int32 parents.
DIJKSTRA_BYTES = 128 * 2**20


@dataclass
class ConvexityResult:
    """Convexity of the class regions of one representation.

    Arguments
    ---------
    score : float
        Mean over classes of the class convexity, in % (the authors'
        repository convention).
    pooled : float
        Mean over all sampled pairs of all classes, in % (the ``nnconvexity``
        package convention).
    per_class : dict
        Original label -> class convexity in %.
    n_pairs : dict
        Original label -> number of sampled pairs (one path each).

    Example
    -------
    >>> result = ConvexityResult(75.0, 70.0, {"a": 50.0, "b": 100.0},
    ...                          {"a": 6, "b": 2})
    >>> result.score - result.pooled
    5.0
    """

    score: float
    pooled: float
    per_class: dict
    n_pairs: dict


def check_embeddings(embeddings, min_dims=2, max_dims=2):
    """Return finite embeddings as a floating-point tensor.

    Arguments
    ---------
    embeddings : torch.Tensor or numpy.ndarray or array-like
        Points, one per row.
    min_dims, max_dims : int
        Accepted number of dimensions of the array.

    Returns
    -------
    torch.Tensor
        The embeddings, floating point, on their original device.

    Example
    -------
    >>> check_embeddings([[0, 1], [2, 3]]).dtype
    torch.float32
    """
    if not torch.is_tensor(embeddings):
        embeddings = torch.as_tensor(np.asarray(embeddings))
    embeddings = embeddings.detach()
    if not embeddings.is_floating_point():
        embeddings = embeddings.float()
    if not min_dims <= embeddings.dim() <= max_dims:
        wanted = "[N, D]" if max_dims == 2 else "[N, ...]"
        raise ValueError(
            f"embeddings must be {wanted}, got shape {tuple(embeddings.shape)}"
        )
    if not torch.isfinite(embeddings).all():
        raise ValueError("embeddings contains NaN or inf values")
    return embeddings


def encode_labels(labels, n_points):
    """Map any hashable labels to class codes 0..C-1.

    Codes follow the order of first appearance, so any renaming of the
    labels gives the same codes (and hence the same sampled pairs).

    Arguments
    ---------
    labels : sequence, numpy.ndarray or torch.Tensor
        One hashable label per point (1-D).
    n_points : int
        Number of embeddings the labels belong to.

    Returns
    -------
    codes : numpy.ndarray
        Class code of every point, int64.
    classes : list
        The original label of every code.

    Example
    -------
    >>> codes, classes = encode_labels(["b", "a", "b"], 3)
    >>> codes.tolist(), classes
    ([0, 1, 0], ['b', 'a'])
    """
    if torch.is_tensor(labels):
        labels = labels.detach().cpu().numpy()
    if isinstance(labels, np.ndarray):
        if labels.ndim != 1:
            raise ValueError(f"labels must be 1-D, got shape {labels.shape}")
        labels = labels.tolist()
    labels = list(labels)
    if len(labels) != n_points:
        raise ValueError(
            f"labels has {len(labels)} entries but embeddings has "
            f"{n_points} rows"
        )
    index = {}
    try:
        codes = [index.setdefault(label, len(index)) for label in labels]
    except TypeError as error:
        raise ValueError(f"labels must be hashable: {error}") from None
    return np.asarray(codes, dtype=np.int64), list(index)


def group_classes(codes, classes):
    """Return the point indices of every class, checking the class sizes.

    Arguments
    ---------
    codes : numpy.ndarray
        Class code of every point (from :func:`encode_labels`).
    classes : list
        Original label of every code.

    Returns
    -------
    list of numpy.ndarray
        Increasing point indices of each class, in code order.

    Example
    -------
    >>> group_classes(np.array([1, 0, 1, 0]), ["x", "y"])
    [array([1, 3]), array([0, 2])]
    """
    if len(classes) < 2:
        raise ValueError(
            f"labels must contain at least 2 classes, got {len(classes)}"
        )
    counts = np.bincount(codes, minlength=len(classes))
    small = np.flatnonzero(counts < 2)
    if small.size:
        raise ValueError(
            "every class in labels needs at least 2 points; class "
            f"{classes[small[0]]!r} has {counts[small[0]]}"
        )
    return split_by_class(codes, len(classes))


def split_by_class(codes, n_classes):
    """Return the increasing point indices of every class code.

    Arguments
    ---------
    codes : numpy.ndarray
        Class code (0..n_classes-1) of every point.
    n_classes : int
        Number of classes.

    Returns
    -------
    list of numpy.ndarray
        One index array per code, possibly empty.

    Example
    -------
    >>> split_by_class(np.array([2, 0, 2]), 3)
    [array([1]), array([], dtype=int64), array([0, 2])]
    """
    counts = np.bincount(codes, minlength=n_classes)
    order = np.argsort(codes, kind="stable")
    return np.split(order, np.cumsum(counts)[:-1])


def sample_pairs(n_members, max_pairs, rng, ordered=True):
    """Draw distinct pairs of class members uniformly without replacement.

    All pairs are taken when there are at most ``max_pairs`` of them.
    Otherwise pair numbers are drawn and decoded, so the pairs of a large
    class are never listed.

    Arguments
    ---------
    n_members : int
        Number of points in the class (at least 2).
    max_pairs : int
        Maximum number of pairs.
    rng : numpy.random.Generator
        Source of randomness.
    ordered : bool
        Whether (a, b) and (b, a) are different pairs (graph convexity) or
        not (Euclidean convexity, where then ``first < second``).

    Returns
    -------
    first, second : numpy.ndarray
        Member positions (0..n_members-1) of the two ends of each pair.

    Example
    -------
    >>> first, second = sample_pairs(3, 10, np.random.default_rng(0))
    >>> list(zip(first.tolist(), second.tolist()))
    [(0, 1), (0, 2), (1, 0), (1, 2), (2, 0), (2, 1)]
    """
    n = n_members
    total = n * (n - 1) if ordered else n * (n - 1) // 2
    if total <= max_pairs:
        flat = np.arange(total, dtype=np.int64)
    else:
        flat = np.sort(rng.choice(total, size=max_pairs, replace=False))
    if ordered:
        first, rest = np.divmod(flat, n - 1)
        return first, rest + (rest >= first)
    span = 2 * n - 1
    first = ((span - np.sqrt(span * span - 8.0 * flat)) // 2).astype(np.int64)
    # Undo floating-point rounding at row boundaries.
    first -= triangle_row_start(first, n) > flat
    first += triangle_row_start(first + 1, n) <= flat
    return first, flat - triangle_row_start(first, n) + first + 1


def triangle_row_start(row, n):
    """Return the number of the first unordered pair ``(row, row + 1)``.

    Pairs ``(i, j)`` with ``i < j < n`` are numbered row by row.

    Arguments
    ---------
    row : numpy.ndarray or int
        First element of the pair.
    n : int
        Number of elements.

    Returns
    -------
    numpy.ndarray or int
        ``row * (2n - row - 1) / 2``.

    Example
    -------
    >>> [triangle_row_start(row, 4) for row in range(4)]
    [0, 3, 5, 6]
    """
    return row * (2 * n - row - 1) // 2


def summarise(pair_scores, pair_codes, classes):
    """Turn path (or pair) scores into a :class:`ConvexityResult`.

    Arguments
    ---------
    pair_scores : numpy.ndarray
        Score in [0, 1] of every sampled pair.
    pair_codes : numpy.ndarray
        Class code of every sampled pair.
    classes : list
        Original label of every code; every class has at least one pair.

    Returns
    -------
    ConvexityResult
        Per-class and overall convexity in %.

    Example
    -------
    >>> result = summarise(np.array([1.0, 0.0, 1.0]), np.array([0, 0, 1]),
    ...                    classes=[7, 3])
    >>> result.score, round(result.pooled, 2)
    (75.0, 66.67)
    >>> result.per_class, result.n_pairs
    ({3: 100.0, 7: 50.0}, {3: 1, 7: 2})
    """
    counts = np.bincount(pair_codes, minlength=len(classes))
    sums = np.bincount(pair_codes, weights=pair_scores, minlength=len(classes))
    class_scores = 100.0 * sums / counts
    try:
        order = sorted(range(len(classes)), key=classes.__getitem__)
    except TypeError:
        order = range(len(classes))
    return ConvexityResult(
        score=float(class_scores.mean()),
        pooled=float(100.0 * pair_scores.mean()),
        per_class={classes[c]: float(class_scores[c]) for c in order},
        n_pairs={classes[c]: int(counts[c]) for c in order},
    )


def graph_convexity(
    embeddings, labels, n_neighbors=10, max_pairs=5000, seed=0, device=None
):
    """Compute the graph convexity of the class regions of some points.

    Arguments
    ---------
    embeddings : torch.Tensor or numpy.ndarray
        Points, shape ``[N, D]`` (for example mean-pooled hidden states of
        one layer, see :func:`sb_prune.analysis.masked_mean_pool`).
    labels : sequence, numpy.ndarray or torch.Tensor
        ``N`` hashable class labels (strings, any integers, ...).
    n_neighbors : int
        Neighbours per point in the k-NN graph, in ``[1, N-1]``.
    max_pairs : int
        Maximum number of ordered same-class pairs (paths) per class.
    seed : int
        Seed of the pair sampling; the result is deterministic for a seed.
    device : str or torch.device, optional
        Device of the k-NN search (default: CUDA if available, else CPU).
        Shortest paths always run on the CPU.

    Returns
    -------
    ConvexityResult
        ``score`` (mean over classes, %), ``pooled`` (mean over all paths,
        %), ``per_class`` (label -> %) and ``n_pairs`` (label -> paths).

    Example
    -------
    >>> generator = torch.Generator().manual_seed(0)
    >>> blobs = torch.randn(40, 8, generator=generator)
    >>> blobs[20:] += 10.0
    >>> labels = ["yes"] * 20 + ["no"] * 20
    >>> result = graph_convexity(blobs, labels, n_neighbors=5)
    >>> result.score, result.pooled
    (100.0, 100.0)
    >>> result.n_pairs
    {'no': 380, 'yes': 380}
    """
    if max_pairs < 1:
        raise ValueError(f"max_pairs must be >= 1, got {max_pairs}")
    points = check_embeddings(embeddings)
    codes, classes = encode_labels(labels, points.shape[0])
    members = group_classes(codes, classes)
    graph = knn_graph(points, n_neighbors, device=device)
    streams = np.random.SeedSequence(seed).spawn(len(classes))
    sources, targets = [], []
    for indices, stream in zip(members, streams):
        rng = np.random.default_rng(stream)
        first, second = sample_pairs(len(indices), max_pairs, rng)
        sources.append(indices[first])
        targets.append(indices[second])
    sources = np.concatenate(sources)
    targets = np.concatenate(targets)
    scores = shortest_path_scores(graph, sources, targets, codes)
    return summarise(scores, codes[sources], classes)


def shortest_path_scores(graph, sources, targets, codes):
    """Score one weighted shortest path per (source, target) pair.

    Dijkstra runs once per distinct source, in chunks of sources whose
    distance and predecessor rows fit in ``DIJKSTRA_BYTES``. The graph is
    undirected, so each path may be run from either end.

    Arguments
    ---------
    graph : scipy.sparse.csr_array
        Symmetric weighted adjacency matrix.
    sources, targets : numpy.ndarray
        Path ends (distinct vertices of the same class).
    codes : numpy.ndarray
        Class code of every vertex.

    Returns
    -------
    numpy.ndarray
        0 without a path, 1 for a direct edge, else the fraction of interior
        vertices whose class is the sources' class.

    Example
    -------
    >>> import scipy.sparse
    >>> line = scipy.sparse.csr_array(np.diag([1.0, 1.0, 1.0], k=1))
    >>> line = (line + line.T).tocsr()  # path graph 0 - 1 - 2 - 3
    >>> codes = np.array([0, 1, 0, 0])
    >>> shortest_path_scores(line, np.array([0, 0]), np.array([2, 3]), codes)
    array([0. , 0.5])
    """
    # A path scores the same both ways: run it from the end shared by more
    # pairs, which needs fewer Dijkstra sources.
    use = np.bincount(np.concatenate([sources, targets]))
    flip = use[targets] > use[sources]
    sources, targets = (
        np.where(flip, targets, sources),
        np.where(flip, sources, targets),
    )
    unique, rows = np.unique(sources, return_inverse=True)
    order = np.argsort(rows, kind="stable")
    sorted_rows = rows[order]
    per_chunk = max(1, DIJKSTRA_BYTES // (12 * graph.shape[0]))
    starts = range(0, len(unique), per_chunk)
    scores = np.empty(len(sources))
    for start in tqdm(starts, desc="shortest paths", disable=len(starts) < 4):
        chunk = unique[start : start + per_chunk]
        _, parents = dijkstra(
            graph, directed=True, indices=chunk, return_predecessors=True
        )
        lo, hi = np.searchsorted(sorted_rows, [start, start + len(chunk)])
        pairs = order[lo:hi]
        scores[pairs] = walk_paths(
            parents, rows[pairs] - start, sources[pairs], targets[pairs], codes
        )
    return scores


def walk_paths(parents, rows, sources, targets, codes):
    """Walk predecessor chains back from the targets, all paths at once.

    Arguments
    ---------
    parents : numpy.ndarray
        Dijkstra predecessors, one row per source (negative: unreachable).
    rows : numpy.ndarray
        Row of ``parents`` for every path.
    sources, targets : numpy.ndarray
        Path ends.
    codes : numpy.ndarray
        Class code of every vertex.

    Returns
    -------
    numpy.ndarray
        Path scores as in :func:`shortest_path_scores`.

    Example
    -------
    >>> parents = np.array([[-9999, 0, 1, 2]])  # 0 -> 1 -> 2 -> 3
    >>> walk_paths(parents, np.zeros(2, int), np.zeros(2, int),
    ...            np.array([1, 3]), np.array([0, 0, 1, 0]))
    array([1. , 0.5])
    """
    step = parents[rows, targets]
    reachable = step >= 0
    interior = np.zeros(len(rows), dtype=np.int64)
    inside = np.zeros(len(rows), dtype=np.int64)
    own = codes[sources]
    todo = np.flatnonzero(reachable & (step != sources))
    vertex = step[todo]
    while todo.size:
        interior[todo] += 1
        inside[todo] += codes[vertex] == own[todo]
        vertex = parents[rows[todo], vertex]
        more = vertex != sources[todo]
        todo, vertex = todo[more], vertex[more]
    scores = inside / np.maximum(interior, 1)
    scores[interior == 0] = 1.0
    scores[~reachable] = 0.0
    return scores
