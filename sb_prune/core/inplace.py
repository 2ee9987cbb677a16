"""Resize parameters and buffers in place, keeping optimiser state aligned.

Pruning keeps every surviving ``torch.nn.Parameter`` object and only
replaces its data, so optimisers, schedulers and user references stay
valid. Each selection along an axis is written to the active
:class:`ResizeJournal`, which later slices the optimiser state (Adam
moments and the like) with the same indices.

Authors
 * sb_prune developers
"""

import torch

_JOURNALS = []


class ResizeJournal:
    """Records ``(parameter, old_shape, dim, index)`` for each selection.

    Example
    -------
    >>> lin = torch.nn.Linear(3, 4)
    >>> opt = torch.optim.Adam(lin.parameters())
    >>> lin(torch.ones(1, 3)).sum().backward()
    >>> opt.step()
    >>> with ResizeJournal() as journal:
    ...     select_(lin, "weight", torch.tensor([0, 2]), 0)
    >>> journal.slice_optimizer_state(opt)
    >>> opt.state[lin.weight]["exp_avg"].shape
    torch.Size([2, 3])
    """

    def __init__(self):
        self.entries = []

    def __enter__(self):
        _JOURNALS.append(self)
        return self

    def __exit__(self, *exc):
        _JOURNALS.remove(self)

    def record(self, param, old_shape, dim, index):
        """Remember that ``param`` was selected along ``dim``."""
        self.entries.append((param, old_shape, dim, index))

    def slice_optimizer_state(self, optimizer):
        """Select the same entries of every per-parameter state tensor.

        Arguments
        ---------
        optimizer : torch.optim.Optimizer
            Optimiser whose state is sliced in place.
        """
        for param, old_shape, dim, index in self.entries:
            state = optimizer.state.get(param)
            if not state:
                continue
            for key, value in state.items():
                if torch.is_tensor(value) and value.shape == old_shape:
                    state[key] = value.index_select(dim, index.to(value.device))


def _set_tensor(owner, name, data):
    tensor = getattr(owner, name)
    if isinstance(tensor, torch.nn.Parameter):
        tensor.data = data
        tensor.grad = None
    else:
        setattr(owner, name, data)


def select_(owner, name, index, dim):
    """Keep the entries ``index`` of ``owner.name`` along ``dim``, in place.

    Arguments
    ---------
    owner : torch.nn.Module
        The module holding the parameter or buffer.
    name : str
        Attribute name of the parameter or buffer.
    index : torch.LongTensor
        Entries to keep, in the order to keep them.
    dim : int
        The axis to select along.

    Example
    -------
    >>> lin = torch.nn.Linear(2, 3, bias=False)
    >>> weight = lin.weight
    >>> select_(lin, "weight", torch.tensor([2]), 0)
    >>> lin.weight is weight, tuple(lin.weight.shape)
    (True, (1, 2))
    """
    tensor = getattr(owner, name)
    index = index.to(tensor.device)
    old_shape = tensor.shape
    _set_tensor(owner, name, tensor.data.index_select(dim, index).clone())
    if isinstance(tensor, torch.nn.Parameter):
        for journal in _JOURNALS:
            journal.record(tensor, old_shape, dim, index)


def resize_(owner, name, shape):
    """Give ``owner.name`` a new shape, filled with zeros, in place.

    Used to rebuild a module at a recorded structure before its checkpoint
    is loaded: the values are placeholders that the load overwrites.

    Arguments
    ---------
    owner : torch.nn.Module
        The module holding the parameter or buffer.
    name : str
        Attribute name of the parameter or buffer.
    shape : tuple of int
        The new shape.

    Example
    -------
    >>> lin = torch.nn.Linear(2, 3)
    >>> resize_(lin, "bias", (5,))
    >>> lin.bias.shape
    torch.Size([5])
    """
    tensor = getattr(owner, name)
    if tuple(tensor.shape) == tuple(shape):
        return
    data = torch.zeros(shape, dtype=tensor.dtype, device=tensor.device)
    _set_tensor(owner, name, data)


def select_linear_(linear, rows=None, cols=None):
    """Keep output ``rows`` and input ``cols`` of a Linear or Conv1d.

    Arguments
    ---------
    linear : torch.nn.Linear or torch.nn.Conv1d
        The layer to shrink in place (Conv1d must have ``groups == 1``).
    rows : torch.LongTensor, optional
        Output units to keep (also selects the bias).
    cols : torch.LongTensor, optional
        Input units to keep.

    Example
    -------
    >>> lin = torch.nn.Linear(4, 3)
    >>> select_linear_(lin, rows=torch.tensor([0, 1]), cols=torch.tensor([3]))
    >>> lin
    Linear(in_features=1, out_features=2, bias=True)
    """
    if rows is not None:
        select_(linear, "weight", rows, 0)
        if linear.bias is not None:
            select_(linear, "bias", rows, 0)
    if cols is not None:
        select_(linear, "weight", cols, 1)
    _sync_features(linear)


def resize_linear_(linear, out_features, in_features):
    """Give a Linear or Conv1d new sizes (zero placeholders).

    Arguments
    ---------
    linear : torch.nn.Linear or torch.nn.Conv1d
        The layer to resize in place (Conv1d must have ``groups == 1``).
    out_features : int
        New number of outputs.
    in_features : int
        New number of inputs.

    Example
    -------
    >>> lin = torch.nn.Linear(4, 3)
    >>> resize_linear_(lin, 5, 2)
    >>> lin
    Linear(in_features=2, out_features=5, bias=True)
    """
    shape = (out_features, in_features) + tuple(linear.weight.shape[2:])
    resize_(linear, "weight", shape)
    if linear.bias is not None:
        resize_(linear, "bias", (out_features,))
    _sync_features(linear)


def _sync_features(layer):
    out_features, in_features = layer.weight.shape[:2]
    if isinstance(layer, torch.nn.Linear):
        layer.out_features, layer.in_features = out_features, in_features
    else:
        layer.out_channels, layer.in_channels = out_features, in_features
