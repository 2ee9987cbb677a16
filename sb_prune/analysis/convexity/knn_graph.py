"""Euclidean k-nearest-neighbour graphs for graph convexity.

The graph follows Tětková et al.'s convexity code: every point links to its
``k`` nearest *other* points, exact duplicates (distance 0) get no edge, and
the graph is symmetrised with ``max`` (an edge exists when either point is
among the other's neighbours).  Edges are weighted by Euclidean distance.

Neighbours are ranked with chunked ``torch.cdist`` + ``topk`` (on CUDA when
asked or available), so memory stays bounded for any number of points; the
kept edges are then re-measured as ``||x_i - x_j||``, so that exact duplicates
are recognised and the weights carry no cancellation error.

Authors
 * sb_prune developers
"""

import numpy as np
import scipy.sparse
import torch

# Working memory of one chunk of the distance matrix.
CHUNK_BYTES = 64 * 2**20


def resolve_device(device=None):
    """Return the torch device to compute distances on.

    Arguments
    ---------
    device : str or torch.device, optional
        Where to compute. ``None`` picks CUDA when available, else the CPU.

    Returns
    -------
    torch.device
        The device.

    Example
    -------
    >>> resolve_device("cpu")
    device(type='cpu')
    """
    if device is None:
        device = "cuda" if torch.cuda.is_available() else "cpu"
    return torch.device(device)


def knn_graph(embeddings, n_neighbors, device=None):
    """Build the symmetric, distance-weighted k-NN graph of some points.

    Arguments
    ---------
    embeddings : torch.Tensor
        Finite points, shape ``[N, D]``. Distances are computed in float64
        for float64 input and in float32 otherwise.
    n_neighbors : int
        Number of nearest other points each point links to, in ``[1, N-1]``.
    device : str or torch.device, optional
        Device for the distance computation (default: CUDA if available).

    Returns
    -------
    scipy.sparse.csr_array
        ``[N, N]`` symmetric adjacency matrix whose stored values are the
        Euclidean lengths (all > 0) of the edges.

    Example
    -------
    >>> points = torch.tensor([[0.0], [1.0], [1.0], [5.0]])
    >>> graph = knn_graph(points, n_neighbors=2, device="cpu")
    >>> graph.toarray()  # the duplicates 1 and 2 are not linked
    array([[0., 1., 1., 0.],
           [1., 0., 0., 4.],
           [1., 0., 0., 4.],
           [0., 4., 4., 0.]])
    """
    n_points = embeddings.shape[0]
    if not 1 <= n_neighbors < n_points:
        raise ValueError(
            f"n_neighbors must be in [1, {n_points - 1}] (fewer than the "
            f"number of points), got {n_neighbors}"
        )
    device = resolve_device(device)
    double = embeddings.dtype == torch.float64
    dtype = torch.float64 if double else torch.float32
    # Centring is exact for the edge lengths and keeps cdist's
    # |x|^2 + |y|^2 - 2 x.y form accurate.
    points = embeddings.to(device=device, dtype=dtype)
    points = points - points.mean(dim=0)
    row_bytes = points.element_size() * max(
        n_points, n_neighbors * points.shape[1]
    )
    chunk = max(1, CHUNK_BYTES // row_bytes)
    neighbours, lengths = [], []
    for start in range(0, n_points, chunk):
        block = points[start : start + chunk]
        dist = torch.cdist(block, points)
        rows = torch.arange(len(block), device=device)
        dist[rows, rows + start] = float("inf")
        idx = dist.topk(n_neighbors, dim=1, largest=False).indices
        # Re-measure the kept edges directly: exact zeros for duplicates.
        diff = block[:, None, :] - points[idx]
        neighbours.append(idx.cpu())
        lengths.append(torch.linalg.vector_norm(diff, dim=-1).cpu())
    cols = torch.cat(neighbours).numpy().ravel()
    dists = torch.cat(lengths).double().numpy().ravel()
    rows = np.repeat(np.arange(n_points), n_neighbors)
    keep = dists > 0
    directed = scipy.sparse.csr_array(
        (dists[keep], (rows[keep], cols[keep])), shape=(n_points, n_points)
    )
    return directed.maximum(directed.T).tocsr()
