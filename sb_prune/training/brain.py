"""PruningBrain: a SpeechBrain Brain that prunes between epochs.

Make a recipe prune-aware with one line, the base class of its Brain::

    class ASR(sb_prune.PruningBrain):   # was: class ASR(sb.Brain)

and list the hooks in the hparams file under ``prune_hooks``. The Brain

* runs the hooks at fixed points of training (see :mod:`sb_prune.hooks`):
  before each batch, before and after each optimizer step, at the end of
  each training epoch (before validation, so the checkpoint saved after
  validation holds the pruned model and its validation score), and at the
  end of ``fit``;
* after any structural change, re-wraps DDP modules and rebuilds the
  optimizer, keeping the state of the surviving parameters (sliced like the
  parameters);
* saves the structure record with every checkpoint, and reshapes the model
  to the record before the checkpoint's tensors are loaded, so resuming,
  ``--test_only`` and loading a best checkpoint all work after pruning;
* passes SpeechBrain's loss scaling to the auxiliary losses of sb_prune
  modules (see :mod:`sb_prune.training.auxiliary`).

The hooks run on every process; decisions are broadcast from the main
process, so all processes prune identically.

Authors
 * sb_prune developers
"""

import json
import logging
import os

import speechbrain as sb
import torch
from speechbrain.utils.checkpoints import (
    mark_as_loader,
    mark_as_saver,
    register_checkpoint_hooks,
)
from speechbrain.utils.distributed import if_main_process

from sb_prune.core.atomic import write_file
from sb_prune.core.checkpoints import (
    STRUCTURE_KEY,
    StructureGuard,
    has_low_rank,
    read_structure,
)
from sb_prune.core.inplace import ResizeJournal
from sb_prune.core.structure import describe, read_record, restore
from sb_prune.training.auxiliary import auxiliary_loss_scale
from sb_prune.training.hooks import PruningHook
from sb_prune.training.random_state import RandomState
from sb_prune.training.speechbrain_api import (
    load_first,
    rewrap_distributed,
    write_meta_last,
)

logger = logging.getLogger(__name__)


def unwrap(module):
    """Return the module inside DDP, DataParallel or torch.compile wrappers.

    Arguments
    ---------
    module : torch.nn.Module
        A module, possibly wrapped.

    Returns
    -------
    torch.nn.Module
        The wrapped module itself.

    Example
    -------
    >>> lin = torch.nn.Linear(2, 2)
    >>> unwrap(torch.nn.DataParallel(lin)) is lin
    True
    """
    while True:
        inner = getattr(module, "module", None) or getattr(
            module, "_orig_mod", None
        )
        if not isinstance(inner, torch.nn.Module):
            return module
        module = inner


#: The recoverable name of the random generators' state in checkpoints.
RANDOM_STATE_KEY = "sb_prune_random_state"


@register_checkpoint_hooks
class _StructureRecoverable:
    """Saves the structure record; on load, reshapes the model first."""

    def __init__(self, brain):
        self.brain = brain

    @mark_as_saver
    def _save(self, path):
        if if_main_process():
            record = describe(self.brain.unwrapped_modules())
            write_file(path, lambda tmp: tmp.write_text(json.dumps(record)))

    @mark_as_loader
    def _load(self, path, end_of_epoch):
        del end_of_epoch
        changed = self.brain.restore_structure(read_record(path))
        if changed:
            self.brain.check_hook_states(os.path.dirname(path))


@register_checkpoint_hooks
class _HookRecoverable:
    """Saves a hook's ``state_dict()`` as JSON."""

    def __init__(self, hook):
        self.hook = hook

    @mark_as_saver
    def _save(self, path):
        if if_main_process():
            with open(path, "w", encoding="utf-8") as handle:
                json.dump(self.hook.state_dict(), handle)

    @mark_as_loader
    def _load(self, path, end_of_epoch):
        del end_of_epoch
        with open(path, encoding="utf-8") as handle:
            self.hook.load_state_dict(json.load(handle))


class PruningBrain(sb.Brain):
    """A Brain that runs sb_prune hooks and keeps checkpoints loadable.

    Arguments are those of ``speechbrain.Brain``. The hooks are read from
    ``hparams["prune_hooks"]`` (a list of :class:`sb_prune.hooks.PruningHook`,
    possibly empty).

    Example
    -------
    >>> from sb_prune.hooks import PruningHook
    >>> brain = PruningBrain(
    ...     modules={"lin": torch.nn.Linear(2, 2)},
    ...     hparams={"prune_hooks": [PruningHook()]},
    ... )
    >>> [type(hook).__name__ for hook in brain.prune_hooks]
    ['PruningHook']
    """

    def __init__(
        self,
        modules=None,
        opt_class=None,
        hparams=None,
        run_opts=None,
        checkpointer=None,
    ):
        super().__init__(modules, opt_class, hparams, run_opts, checkpointer)
        hooks = (hparams or {}).get("prune_hooks") or []
        for index, hook in enumerate(hooks):
            if not isinstance(hook, PruningHook):
                raise ValueError(
                    f"prune_hooks[{index}] must be an sb_prune.hooks "
                    f"PruningHook, got {type(hook).__name__}"
                )
        if hooks and (self.jit or self.compile):
            raise ValueError(
                "prune_hooks change the model's shapes, which --jit and "
                "--compile do not support: compile the exported model"
            )
        self.prune_hooks = list(hooks)
        self._check_hook_names()
        self._epoch = None
        self._steps_per_epoch = None
        self.structure_guard = None
        if self.checkpointer is not None:
            self._register_recoverables()
            self.structure_guard = StructureGuard(
                self.checkpointer,
                lambda: has_low_rank(self.unwrapped_modules()),
            )

    def _check_hook_names(self):
        seen = {}
        for hook in self.prune_hooks:
            key = hook.checkpoint_name
            if key in seen:
                raise ValueError(
                    f"prune_hooks: two hooks are named {hook.hook_name!r} "
                    f"({type(seen[key]).__name__} and "
                    f"{type(hook).__name__}); give each a distinct name: "
                    "argument, which keys its state in checkpoints"
                )
            seen[key] = hook

    def check_hook_states(self, checkpoint_folder):
        """Refuse a pruned checkpoint that holds no state for a hook.

        Such a hook would start from step 0 and prune the already pruned
        model again.

        Arguments
        ---------
        checkpoint_folder : str
            The folder of the checkpoint being loaded.
        """
        missing = [
            hook.hook_name
            for hook in self.prune_hooks
            if not os.path.exists(
                os.path.join(checkpoint_folder, f"{hook.checkpoint_name}.ckpt")
            )
        ]
        if missing:
            raise ValueError(
                f"The checkpoint {checkpoint_folder} holds a pruned model "
                f"but no state for the prune_hooks {missing}: it was saved "
                "with other hooks or other hook names. Resume it with the "
                "same prune_hooks, or start a new run (init_from)"
            )

    def evaluate(self, test_set, max_key=None, min_key=None, **kwargs):
        """Evaluate as ``Brain.evaluate``, on the final pruned structure.

        Whatever the recipe's ``on_evaluate_start`` does (SpeechBrain's
        default, or averaging the best checkpoints), it only finds
        checkpoints of the final structure
        (:class:`sb_prune.core.checkpoints.StructureGuard`).

        Arguments
        ---------
        test_set : Dataset or DataLoader
            As for ``Brain.evaluate``.
        max_key, min_key : str, optional
            As for ``Brain.evaluate``.
        **kwargs
            The other arguments of ``Brain.evaluate``.

        Returns
        -------
        float
            The average test loss.
        """
        if self.structure_guard is None:
            return super().evaluate(test_set, max_key, min_key, **kwargs)
        with self.structure_guard.evaluating():
            return super().evaluate(test_set, max_key, min_key, **kwargs)

    def _register_recoverables(self):
        self.checkpointer.add_recoverable(
            STRUCTURE_KEY, _StructureRecoverable(self), optional_load=True
        )
        # The structure must be restored before anything else is loaded.
        load_first(self.checkpointer, STRUCTURE_KEY)
        # A save cut short must leave no folder taken for a checkpoint.
        write_meta_last(self.checkpointer)
        # A resumed run draws the numbers the uninterrupted one would have.
        self.checkpointer.add_recoverable(
            RANDOM_STATE_KEY, RandomState(), optional_load=True
        )
        for hook in self.prune_hooks:
            self.checkpointer.add_recoverable(
                hook.checkpoint_name, _HookRecoverable(hook), optional_load=True
            )

    def unwrapped_modules(self):
        """Return the Brain's modules without DDP/compile wrappers.

        Returns
        -------
        torch.nn.ModuleDict
            Same names as ``self.modules``; paths in structure records and
            pruning plans are relative to it.
        """
        return torch.nn.ModuleDict(
            {name: unwrap(module) for name, module in self.modules.items()}
        )

    @property
    def epoch_progress(self):
        """Training progress in epochs, or None outside training.

        For example 2.5 means half-way through the third epoch.
        """
        if self._epoch is None:
            return None
        fraction = 0.0
        if self._steps_per_epoch:
            fraction = min(max(self.step - 1, 0) / self._steps_per_epoch, 1)
        return self._epoch - 1 + fraction

    @property
    def total_optimizer_steps(self):
        """Optimizer steps of the whole run, once training has started.

        The epochs of the recipe's ``epoch_counter`` (or
        ``number_of_epochs``) times the batches of an epoch divided by the
        gradient accumulation factor; None before the first training epoch
        or for a data loader without a length.
        """
        if not self._steps_per_epoch:
            return None
        counter = getattr(self.hparams, "epoch_counter", None)
        epochs = getattr(counter, "limit", None) or getattr(
            self.hparams, "number_of_epochs", None
        )
        if epochs is None:
            return None
        per_epoch = -(-self._steps_per_epoch // self.grad_accumulation_factor)
        return epochs * per_epoch

    def restore_structure(self, record):
        """Reshape the model to a structure record (before a load).

        Arguments
        ---------
        record : dict
            A record from :func:`sb_prune.core.structure.describe`.

        Returns
        -------
        bool
            Whether the model changed.
        """
        with ResizeJournal() as journal:
            changed = restore(self.unwrapped_modules(), record)
        if changed:
            self.modules.to(self.device)
            self._after_structure_change(journal)
        return changed

    def has_current_structure(self, checkpoint):
        """Whether a checkpoint holds the model's current structure.

        Evaluation needs no predicate (see :meth:`evaluate`); this is for
        other selections of checkpoints in a recipe.

        Arguments
        ---------
        checkpoint : speechbrain.utils.checkpoints.Checkpoint
            A checkpoint found by the Checkpointer.

        Returns
        -------
        bool
            True if its record equals the current structure.
        """
        return read_structure(checkpoint) == describe(self.unwrapped_modules())

    def _run_hooks(self, event, *args):
        with ResizeJournal() as journal:
            changed = [
                getattr(hook, event)(self, *args) for hook in self.prune_hooks
            ]
        if any(changed):
            self._after_structure_change(journal)
        return any(changed)

    def _after_structure_change(self, journal):
        """Re-wrap DDP modules and rebuild the optimizer after surgery."""
        wrapped = [
            name
            for name, module in self.modules.items()
            if unwrap(module) is not module
        ]
        for name in wrapped:
            self.modules[name] = unwrap(self.modules[name])
        if wrapped:
            rewrap_distributed(self)
        olds = self._optimizers()
        if not olds:
            return
        for optimizer in olds.values():
            journal.slice_optimizer_state(optimizer)
        self.init_optimizers()
        _carry_optimizer_state(olds, self._optimizers())
        n_params = sum(p.numel() for p in self.modules.parameters())
        logger.info(f"sb_prune: model restructured, {n_params} parameters")

    def _optimizers(self):
        """Every optimizer of the Brain, by name (``optimizers_dict``)."""
        optimizers = getattr(self, "optimizers_dict", None)
        if optimizers:
            return dict(optimizers)
        optimizer = getattr(self, "optimizer", None)
        return {} if optimizer is None else {"optimizer": optimizer}

    def on_fit_start(self):
        """Wrap, build the optimizer, recover, then start the hooks."""
        super().on_fit_start()
        self._run_hooks("on_fit_start")

    def fit(self, epoch_counter, *args, **kwargs):
        """Train as ``Brain.fit``, then run the hooks' ``on_fit_end``.

        If they prune (adaptive dropout removes what its masks already
        drop: the outputs do not change), the pruned model is saved as a
        checkpoint with the metrics of the last one, so that evaluation,
        which loads checkpoints, tests it.
        """
        super().fit(epoch_counter, *args, **kwargs)
        self._epoch = None
        if not self.test_only and self._run_hooks("on_fit_end"):
            self._checkpoint_final_structure()

    def _checkpoint_final_structure(self):
        if self.checkpointer is None:
            return
        latest = self.checkpointer.find_checkpoint()
        meta = {} if latest is None else dict(latest.meta)
        meta.pop("unixtime", None)
        meta.pop("end-of-epoch", None)
        self.checkpointer.save_checkpoint(meta=meta, end_of_epoch=True)

    def _fit_train(self, train_set, epoch, enable):
        # The one private Brain method overridden (TRAIN_EPOCH_METHOD, see
        # sb_prune.training.speechbrain_api): hooks run before validation.
        self._epoch = epoch
        try:
            self._steps_per_epoch = len(train_set)
        except TypeError:
            self._steps_per_epoch = None
        super()._fit_train(train_set, epoch, enable)
        self._run_hooks("on_train_epoch_end", epoch)

    def fit_batch(self, batch):
        """Run ``Brain.fit_batch`` with hooks and auxiliary-loss scaling."""
        for hook in self.prune_hooks:
            hook.on_batch_start(self)
        scale = self.scaler.get_scale() / self.grad_accumulation_factor
        with auxiliary_loss_scale(scale):
            return super().fit_batch(batch)

    def optimizers_step(self):
        """Step the optimizers between the hooks' gradient and step events."""
        for hook in self.prune_hooks:
            hook.on_gradients(self)
        super().optimizers_step()
        self._run_hooks("on_optimizer_step")


def _carry_optimizer_state(olds, news):
    """Give rebuilt optimizers the (sliced) state of the surviving weights.

    Arguments
    ---------
    olds, news : dict
        Optimizers by name, before and after ``init_optimizers``; every
        optimizer of a Brain with several (``optimizers_dict``) is rebuilt.
    """
    states = {}
    for optimizer in olds.values():
        states.update(optimizer.state)
    for name, new in news.items():
        for group in new.param_groups:
            for param in group["params"]:
                state = states.get(param)
                if state and all(
                    value.shape == param.shape
                    for value in state.values()
                    if torch.is_tensor(value) and value.dim() > 0
                ):
                    new.state[param] = state
        old = olds.get(name)
        if old is not None and len(old.param_groups) == len(new.param_groups):
            for old_group, new_group in zip(old.param_groups, new.param_groups):
                new_group["lr"] = old_group["lr"]
