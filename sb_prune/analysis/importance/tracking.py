"""Keep theta_0 and track weight change during training; evaluate a Brain.

:class:`WeightChangeTracker` is a :class:`~sb_prune.hooks.PruningHook`
(declare it under ``prune_hooks``) that saves the initial weights theta_0
when training starts from scratch, measures each unit's relative weight
change ``||theta_t - theta_0|| / ||theta_0||`` after every training epoch
and keeps snapshots theta_t for the re-initialisation heat map.

The weights live in files next to the checkpoints (``<checkpoints
dir>/sb_prune_weights/epoch<t>.pt``); the hook's state (saved with every
checkpoint) names them, so a resumed run keeps the true theta_0 instead
of taking the weights it resumed from.

Authors
 * sb_prune developers
"""

import logging
import os

import speechbrain as sb
import torch
from speechbrain.utils.distributed import ddp_barrier, if_main_process

from sb_prune.analysis.importance.units import (
    check_unit_options,
    find_units,
    snapshot,
    weight_change,
)
from sb_prune.core.validation import check_int, check_number, check_string
from sb_prune.training.hooks import PruningHook

logger = logging.getLogger(__name__)

WEIGHTS_FOLDER = "sb_prune_weights"


class WeightChangeTracker(PruningHook):
    """Save theta_0 and per-epoch snapshots; track relative weight change.

    Arguments
    ---------
    granularity, layers, modules, units
        The units to track, see
        :func:`sb_prune.analysis.importance.units.find_units`.
    snapshot_every : int
        Save the tracked weights every that many epochs (for the heat map
        of re-initialisation to theta_t); 0 keeps theta_0 only.
    folder : str, optional
        Where the weight files go (default: ``sb_prune_weights`` inside
        the Brain's checkpoint folder).

    name : str, optional
        The key of the hook's state in checkpoints (default: the class
        name); needed when ``prune_hooks`` has two hooks of this class.

    Example
    -------
    >>> tracker = WeightChangeTracker(granularity="layer", snapshot_every=2)
    >>> tracker.state_dict()
    {'files': {}, 'history': []}
    >>> WeightChangeTracker(snapshot_every="2")
    Traceback (most recent call last):
    ...
    ValueError: snapshot_every must be a number >= 0, got '2'
    """

    def __init__(
        self,
        granularity="both",
        layers=None,
        modules=None,
        units=None,
        snapshot_every=1,
        folder=None,
        name=None,
    ):
        super().__init__(name)
        # A negative value reads "snapshot_every must be >= 0"; a
        # fraction is then refused as not an integer.
        check_number("snapshot_every", snapshot_every, low=0)
        check_int("snapshot_every", snapshot_every, minimum=0)
        self.unit_options = check_unit_options(
            granularity, layers, modules, units
        )
        self.snapshot_every = snapshot_every
        self.folder = check_string("folder", folder, optional=True)
        self.files = {}
        self.history = []
        self.initial = None
        self.units = None

    def resolve_folder(self, brain):
        """Return the folder of the weight files for ``brain``."""
        if self.folder is not None:
            return self.folder
        if brain.checkpointer is None:
            raise ValueError(
                "WeightChangeTracker needs a folder (key: folder) when the "
                "Brain has no checkpointer"
            )
        return os.path.join(brain.checkpointer.checkpoints_dir, WEIGHTS_FOLDER)

    def _save(self, brain, label, state):
        folder = self.resolve_folder(brain)
        name = f"{label}.pt"
        if if_main_process():
            os.makedirs(folder, exist_ok=True)
            torch.save(state, os.path.join(folder, name))
        ddp_barrier()
        self.files[label] = name

    def load(self, brain, label="epoch0"):
        """Load a saved snapshot (``epoch0`` is theta_0).

        Arguments
        ---------
        brain : speechbrain.Brain
            The Brain the tracker belongs to (for the folder).
        label : str
            ``epoch<t>``, see :attr:`files`.

        Returns
        -------
        dict
            The snapshot (parameter name -> tensor).
        """
        if label not in self.files:
            raise ValueError(
                f"No saved weights {label!r}; saved: {sorted(self.files)}"
            )
        path = os.path.join(self.resolve_folder(brain), self.files[label])
        if not os.path.isfile(path):
            raise FileNotFoundError(
                f"The weight file {path} named by the checkpoint is missing"
            )
        return torch.load(path, map_location="cpu", weights_only=True)

    def on_fit_start(self, brain):
        """Save theta_0 on a fresh start; reload it after a resume."""
        root = brain.unwrapped_modules()
        self.units = find_units(root, **self.unit_options)
        if "epoch0" in self.files:
            self.initial = self.load(brain)
            return
        counter = getattr(brain.hparams, "epoch_counter", None)
        if getattr(counter, "current", 0):
            logger.warning(
                "WeightChangeTracker: training resumes at epoch %s without "
                "saved initial weights; weight changes are measured from "
                "the resumed weights, not theta_0",
                counter.current,
            )
        self.initial = snapshot(root, self.units)
        self._save(brain, "epoch0", self.initial)

    def on_train_epoch_end(self, brain, epoch):
        """Record each unit's weight change; snapshot if due."""
        root = brain.unwrapped_modules()
        changes = weight_change(root, self.initial, self.units)
        self.history.append({"epoch": epoch, "change": changes})
        if self.snapshot_every and epoch % self.snapshot_every == 0:
            self._save(brain, f"epoch{epoch}", snapshot(root, self.units))
        top = max(changes, key=lambda unit: changes[unit])
        logger.info(
            "epoch %s: largest relative weight change %s %.3f",
            epoch,
            top,
            changes[top],
        )
        return False

    def state_dict(self):
        """Return the weight files and the weight-change history."""
        return {"files": dict(self.files), "history": list(self.history)}

    def load_state_dict(self, state):
        """Restore the weight files and the history."""
        self.files = dict(state["files"])
        self.history = list(state["history"])


def find_tracker(brain):
    """Return the Brain's :class:`WeightChangeTracker`, or None.

    Arguments
    ---------
    brain : sb_prune.PruningBrain
        A Brain with ``prune_hooks``.

    Returns
    -------
    WeightChangeTracker or None
        The first tracker among the hooks.
    """
    for hook in getattr(brain, "prune_hooks", []):
        if isinstance(hook, WeightChangeTracker):
            return hook
    return None


class BrainEvaluator:
    """Evaluate a Brain on a dataset: mean loss and error rates.

    Batches are loaded once and kept in memory, so repeated evaluations
    (one per tamper test) only pay for the forward passes. It runs
    ``compute_forward``/``compute_objectives`` in the ``VALID`` stage,
    like ``Brain.evaluate`` but without loading a checkpoint or calling
    ``on_stage_end`` (which would save checkpoints and logs).

    Arguments
    ---------
    brain : speechbrain.Brain
        The Brain whose modules are evaluated.
    dataset : Dataset or DataLoader
        The evaluation data (e.g. the validation set).
    loader_kwargs : dict, optional
        Options of ``brain.make_dataloader``.
    metrics : dict, optional
        ``{name: Brain attribute}`` of ``ErrorRateStats`` filled by
        ``compute_objectives`` (default ``{"WER": "wer_metric", "CER":
        "cer_metric"}``; missing attributes are skipped).
    max_batches : int, optional
        Evaluate on the first batches only.
    """

    def __init__(
        self,
        brain,
        dataset,
        loader_kwargs=None,
        metrics=None,
        max_batches=None,
    ):
        if max_batches is not None:
            check_int("max_batches", max_batches, minimum=1)
        self.brain = brain
        self.metrics = metrics or {"WER": "wer_metric", "CER": "cer_metric"}
        if not isinstance(dataset, torch.utils.data.DataLoader):
            dataset = brain.make_dataloader(
                dataset, stage=sb.Stage.VALID, **(loader_kwargs or {})
            )
        self.batches = []
        for batch in dataset:
            if max_batches is not None and len(self.batches) >= max_batches:
                break
            self.batches.append(batch)
        if not self.batches:
            raise ValueError("BrainEvaluator: the evaluation set is empty")

    def __call__(self):
        """Return ``{"loss": ..., "WER": ..., ...}`` for the current model."""
        brain = self.brain
        brain.on_stage_start(sb.Stage.VALID, None)
        brain.modules.eval()
        total = 0.0
        with torch.no_grad():
            for batch in self.batches:
                total += float(brain.evaluate_batch(batch, sb.Stage.VALID))
        result = {"loss": total / len(self.batches)}
        for name, attribute in self.metrics.items():
            stats = getattr(brain, attribute, None)
            if stats is not None:
                result[name] = float(stats.summarize("error_rate"))
        return result
