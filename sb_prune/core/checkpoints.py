"""Checkpoint selection that follows the structure record.

A pruning run saves checkpoints of several structures: the dense model of
the first epochs, then smaller and smaller ones. Recipes choose the
checkpoints to test in their own ways, and none of them knows that:
SpeechBrain's default ``on_evaluate_start`` recovers the best checkpoint by
the recipe's key (often one saved before pruning), and SpeechBrain's
LibriSpeech recipes find the best N checkpoints, average their ``model``
tensors and load the average with ``strict=True`` (which fails on tensors
of different sizes). :class:`StructureGuard` makes every such recipe test
the final pruned model, without changing its code:

* while the Brain evaluates, :meth:`Checkpointer.find_checkpoints` (which
  ``recover_if_possible`` and the recipes' averaging both use) only
  returns checkpoints whose structure record equals that of the newest
  checkpoint (the final structure); for a model with low-rank factors, it
  returns only the best one, because averaging factors is not averaging
  the weights they multiply out to (``mean(U) mean(V) != mean(UV)``);
* :meth:`Checkpointer.delete_checkpoints` (which ``save_and_keep_only``
  calls) never deletes the checkpoints of the newest structure that the
  same call would keep if they were the only ones, so better-scoring
  larger checkpoints cannot push all the final ones out.

Authors
 * sb_prune developers
"""

import contextlib
import logging

from speechbrain.utils.checkpoints import ckpt_recency
from speechbrain.utils.distributed import ddp_broadcast, if_main_process

from sb_prune.core.registry import spec_of
from sb_prune.core.structure import read_record

logger = logging.getLogger(__name__)

#: The recoverable name of the structure record in checkpoints.
STRUCTURE_KEY = "sb_prune_structure"


def read_structure(checkpoint):
    """Return the structure record saved in a checkpoint, or None.

    Arguments
    ---------
    checkpoint : speechbrain.utils.checkpoints.Checkpoint
        A checkpoint found by the Checkpointer.

    Returns
    -------
    dict or None
        The record, or None for a checkpoint saved without sb_prune.
    """
    path = checkpoint.paramfiles.get(STRUCTURE_KEY)
    if path is None:
        return None
    return read_record(path)


def has_low_rank(root):
    """Whether a model holds low-rank factors (a type with group ``rank``).

    Arguments
    ---------
    root : torch.nn.Module
        The model or the Brain's modules.

    Returns
    -------
    bool
        True if some module's spec has the ``rank`` group.

    Example
    -------
    >>> import torch
    >>> from sb_prune.nn import LowRankLinear
    >>> has_low_rank(torch.nn.Linear(2, 2))
    False
    >>> has_low_rank(torch.nn.Sequential(LowRankLinear(2, 2, rank=1)))
    True
    """
    specs = (spec_of(module) for module in root.modules())
    return any(spec is not None and "rank" in spec.groups for spec in specs)


class StructureGuard:
    """Keep a Checkpointer's selections to checkpoints of the final structure.

    Installed by :class:`sb_prune.PruningBrain` on its Checkpointer (the
    ``find_checkpoints`` and ``delete_checkpoints`` of that one instance
    are wrapped; the class is not touched).

    Arguments
    ---------
    checkpointer : speechbrain.utils.checkpoints.Checkpointer
        The recipe's Checkpointer.
    is_low_rank : callable
        ``() -> bool``: whether the model has low-rank factors now.

    Example
    -------
    >>> import torch
    >>> from speechbrain.utils.checkpoints import Checkpointer
    >>> folder = getfixture("tmp_path")
    >>> checkpointer = Checkpointer(folder, {"model": torch.nn.Linear(1, 1)})
    >>> guard = StructureGuard(checkpointer, lambda: False)
    >>> _ = checkpointer.save_checkpoint(meta={"WER": 3.0})
    >>> with guard.evaluating():
    ...     len(checkpointer.find_checkpoints(min_key="WER"))
    1
    """

    def __init__(self, checkpointer, is_low_rank):
        self.checkpointer = checkpointer
        self.is_low_rank = is_low_rank
        self.active = False
        self._find = checkpointer.find_checkpoints
        self._delete = checkpointer.delete_checkpoints
        checkpointer.find_checkpoints = self.find_checkpoints
        checkpointer.delete_checkpoints = self.delete_checkpoints

    @contextlib.contextmanager
    def evaluating(self):
        """Within this context, selections follow the final structure.

        Yields
        ------
        StructureGuard
            The guard, :attr:`active` until the context exits.
        """
        self.active = True
        try:
            yield self
        finally:
            self.active = False

    def newest_structure(self):
        """Return the structure record of the newest checkpoint, or None.

        Returns
        -------
        dict or None
            None when there is no checkpoint or it has no record.
        """
        newest = self._find(max_num_checkpoints=1)
        return read_structure(newest[0]) if newest else None

    def _same_structure(self):
        final = self.newest_structure()
        return lambda checkpoint: read_structure(checkpoint) == final

    def find_checkpoints(
        self,
        importance_key=None,
        max_key=None,
        min_key=None,
        ckpt_predicate=None,
        max_num_checkpoints=None,
    ):
        """``Checkpointer.find_checkpoints``, restricted while evaluating.

        Arguments
        ---------
        importance_key, max_key, min_key, ckpt_predicate : optional
            As for ``Checkpointer.find_checkpoints``.
        max_num_checkpoints : int, optional
            As for ``Checkpointer.find_checkpoints``.

        Returns
        -------
        list
            The checkpoints, best first.
        """
        if self.active:
            ckpt_predicate = _both(self._same_structure(), ckpt_predicate)
        found = self._find(
            importance_key=importance_key,
            max_key=max_key,
            min_key=min_key,
            ckpt_predicate=ckpt_predicate,
            max_num_checkpoints=max_num_checkpoints,
        )
        if self.active and len(found) > 1 and self.is_low_rank():
            logger.warning(
                "sb_prune: the model has low-rank factors; averaging "
                "checkpoints would average the factors, not the weights "
                f"they make, so only the best of {len(found)} checkpoints "
                f"of the final structure is used ({found[0].path})"
            )
            found = found[:1]
        return found

    def _protected(self, kwargs):
        """Paths of the final-structure checkpoints a deletion must keep."""
        same = self._same_structure()
        keep = kwargs.get("num_to_keep", 1)
        keys = [{"min_key": key} for key in kwargs.get("min_keys") or []]
        keys += [{"max_key": key} for key in kwargs.get("max_keys") or []]
        keys += [
            {"importance_key": key}
            for key in kwargs.get("importance_keys", [ckpt_recency])
        ]
        protected = set()
        for key in keys:
            found = self._find(
                ckpt_predicate=same, max_num_checkpoints=keep, **key
            )
            protected.update(str(checkpoint.path) for checkpoint in found)
        return sorted(protected)

    def delete_checkpoints(self, **kwargs):
        """``Checkpointer.delete_checkpoints``, keeping final-structure ones.

        Arguments
        ---------
        **kwargs
            As for ``Checkpointer.delete_checkpoints`` (keyword-only).
        """
        protected = None
        if if_main_process():
            # Only the main process reads the records (the others could see
            # one the main process is still writing); every process must
            # then make the same deletion calls (they synchronise).
            protected = self._protected(kwargs)
        protected = set(ddp_broadcast(protected))
        kwargs["ckpt_predicate"] = _both(
            lambda checkpoint: str(checkpoint.path) not in protected,
            kwargs.get("ckpt_predicate"),
        )
        return self._delete(**kwargs)


def _both(predicate, user_predicate):
    """A checkpoint predicate that also applies the caller's, if any."""
    if user_predicate is None:
        return predicate
    return lambda checkpoint: (
        predicate(checkpoint) and user_predicate(checkpoint)
    )
