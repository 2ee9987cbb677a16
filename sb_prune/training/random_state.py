"""The random generators' state, saved in every checkpoint.

Adaptive-dropout masks, layer drop and data augmentation draw from the
global generators (torch, CUDA, NumPy, Python's ``random``). SpeechBrain
checkpoints do not hold their state, so a run resumed after a crash drew
other numbers than the run that was not interrupted, and ended with other
weights and often another structure. :class:`RandomState` is registered
by :class:`sb_prune.PruningBrain` as a recoverable: a resumed run continues
with the numbers the uninterrupted one would have drawn. Under DDP each
process gets its own state back (the main process writes all of them).

Authors
 * sb_prune developers
"""

import functools
import random

import numpy as np
import torch
from speechbrain.utils.checkpoints import (
    mark_as_loader,
    mark_as_saver,
    register_checkpoint_hooks,
)
from speechbrain.utils.distributed import if_main_process


def get_state():
    """Return the process's generator states, as tensors and plain values.

    Returns
    -------
    dict
        ``torch``, ``numpy``, ``python`` and, with CUDA, ``cuda`` states
        (loadable by ``torch.load(..., weights_only=True)``).

    Example
    -------
    >>> state = get_state()
    >>> first = torch.rand(3), np.random.rand(), random.random()
    >>> set_state(state)
    >>> second = torch.rand(3), np.random.rand(), random.random()
    >>> torch.equal(first[0], second[0]) and first[1:] == second[1:]
    True
    """
    version, internal, gauss = random.getstate()
    kind, keys, pos, has_gauss, cached = np.random.get_state()
    state = {
        "torch": torch.get_rng_state(),
        "python": [version, torch.tensor(internal), gauss],
        "numpy": [kind, torch.from_numpy(keys.astype(np.int64)), pos],
        "numpy_gauss": [has_gauss, cached],
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_state(state):
    """Restore the generator states :func:`get_state` returned.

    Arguments
    ---------
    state : dict
        From :func:`get_state` (a ``cuda`` entry is used where CUDA is).
    """
    torch.set_rng_state(state["torch"])
    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal.tolist()), gauss))
    kind, keys, pos = state["numpy"]
    has_gauss, cached = state["numpy_gauss"]
    keys = keys.numpy().astype(np.uint32)
    np.random.set_state((kind, keys, pos, has_gauss, cached))
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def _rank_and_count():
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        return torch.distributed.get_rank(), torch.distributed.get_world_size()
    return 0, 1


# Saved on every process: each sends its state to the main one, which writes.
@functools.partial(register_checkpoint_hooks, save_on_main_only=False)
class RandomState:
    """A recoverable for every process's generator states.

    Example
    -------
    >>> from speechbrain.utils.checkpoints import Checkpointer
    >>> checkpointer = Checkpointer(
    ...     getfixture("tmp_path"), {"rng": RandomState()}
    ... )
    >>> _ = checkpointer.save_checkpoint()
    >>> drawn = torch.rand(2)
    >>> _ = checkpointer.recover_if_possible()
    >>> torch.equal(torch.rand(2), drawn)
    True
    """

    @mark_as_saver
    def _save(self, path):
        rank, count = _rank_and_count()
        states = [get_state()]
        if count > 1:
            states = [None] * count
            torch.distributed.all_gather_object(states, get_state())
        if if_main_process():
            torch.save(states, path)

    @mark_as_loader
    def _load(self, path, end_of_epoch):
        del end_of_epoch
        states = torch.load(path, weights_only=True)
        rank, _ = _rank_and_count()
        set_state(states[rank] if rank < len(states) else states[0])
