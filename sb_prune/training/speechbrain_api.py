"""The one place where sb_prune uses SpeechBrain's private API.

SpeechBrain 1.1 has no public way to do five things sb_prune needs:

* run code between the training and the validation part of an epoch
  (pruning must happen before validation, so the checkpoint saved after
  validation holds the pruned model and its score): :class:`PruningBrain`
  overrides ``Brain._fit_train`` (:data:`TRAIN_EPOCH_METHOD`);
* re-wrap modules in DDP after their parameters changed shape
  (:func:`rewrap_distributed`, ``Brain._wrap_distributed``);
* load the structure record before every other recoverable (the Checkpointer
  loads in insertion order, kept in ``Checkpointer.recoverables``):
  :func:`load_first`;
* write a checkpoint's meta file ``CKPT.yaml`` last: the Checkpointer
  writes it first, then the recoverables, and takes any folder holding it
  for a checkpoint, so a process killed while saving left one that the
  next run recovered and failed on (missing or truncated files):
  :func:`write_meta_last` redirects ``Checkpointer._save_checkpoint_metafile``
  to a scratch file renamed into place when the save is done;
* copy ``InputNormalization`` statistics between models and save them as a
  file (:func:`copy_normalizer_statistics`, :func:`save_normalizer`: its
  saver and statistics accessors are private).

:func:`check_private_api` verifies that each of them is still there with
the expected signature; the test suite runs it, so a SpeechBrain release
that changes them fails loudly (and ``setup.py`` pins the tested range).

Authors
 * sb_prune developers
"""

import inspect
import os

import speechbrain as sb
from speechbrain.processing.features import InputNormalization
from speechbrain.utils.checkpoints import Checkpointer

from sb_prune.core.atomic import scratch_path

#: The Brain method PruningBrain overrides to run hooks after the training
#: part of each epoch, before validation.
TRAIN_EPOCH_METHOD = "_fit_train"

#: Private members used, with the arguments each must take.
_EXPECTED = {
    (sb.Brain, "_fit_train"): ["self", "train_set", "epoch", "enable"],
    (sb.Brain, "_wrap_distributed"): ["self"],
    (InputNormalization, "_save"): ["self", "path"],
    (InputNormalization, "_statistics_dict"): ["self"],
    (InputNormalization, "_load_statistics_dict"): ["self", "state"],
    (Checkpointer, "_save_checkpoint_metafile"): [
        "self",
        "fpath",
        "meta_to_include",
        "end_of_epoch",
    ],
}


def check_private_api():
    """Raise if a private SpeechBrain member sb_prune uses has changed.

    Checks the methods and arguments listed in ``_EXPECTED``, that
    ``Brain.fit`` still trains through ``_fit_train`` and that
    ``Checkpointer.recoverables`` is still the ordered dict it loads from.

    Example
    -------
    >>> check_private_api()
    """
    problems = []
    for (owner, name), arguments in _EXPECTED.items():
        member = getattr(owner, name, None)
        if member is None:
            problems.append(f"{owner.__name__}.{name} is gone")
            continue
        found = list(inspect.signature(member).parameters)[: len(arguments)]
        if found != arguments:
            problems.append(
                f"{owner.__name__}.{name} takes {found}, expected {arguments}"
            )
    if f"self.{TRAIN_EPOCH_METHOD}(" not in inspect.getsource(sb.Brain.fit):
        problems.append(f"Brain.fit no longer calls {TRAIN_EPOCH_METHOD}")
    saving = inspect.getsource(Checkpointer.save_checkpoint)
    if "self._save_checkpoint_metafile(" not in saving:
        problems.append(
            "Checkpointer.save_checkpoint no longer calls "
            "_save_checkpoint_metafile"
        )
    checkpointer = Checkpointer("unused")
    if not isinstance(getattr(checkpointer, "recoverables", None), dict):
        problems.append("Checkpointer.recoverables is no longer a dict")
    if problems:
        raise RuntimeError(
            f"SpeechBrain {sb.__version__} changed private API that sb_prune "
            f"uses: {'; '.join(problems)} (see sb_prune.training."
            "speechbrain_api)"
        )


def rewrap_distributed(brain):
    """Wrap the Brain's modules in DDP again (after surgery).

    Arguments
    ---------
    brain : speechbrain.Brain
        A Brain whose modules were unwrapped.
    """
    brain._wrap_distributed()


def load_first(checkpointer, name):
    """Make the recoverable ``name`` the first one a checkpoint loads.

    Arguments
    ---------
    checkpointer : speechbrain.utils.checkpoints.Checkpointer
        The Checkpointer holding the recoverable.
    name : str
        Its name.

    Example
    -------
    >>> import torch
    >>> checkpointer = Checkpointer("unused")
    >>> checkpointer.add_recoverable("model", torch.nn.Linear(1, 1))
    >>> checkpointer.add_recoverable("structure", torch.nn.Linear(1, 1))
    >>> load_first(checkpointer, "structure")
    >>> list(checkpointer.recoverables)
    ['structure', 'model']
    """
    recoverables = checkpointer.recoverables
    first = recoverables.pop(name)
    checkpointer.recoverables = {name: first, **recoverables}


def write_meta_last(checkpointer):
    """Make a Checkpointer write each checkpoint's ``CKPT.yaml`` last.

    A checkpoint folder is then complete or not a checkpoint at all: a
    save interrupted before its end leaves a folder without ``CKPT.yaml``,
    which the Checkpointer never lists (so never recovers nor deletes).
    The instance's ``save_checkpoint`` and ``_save_checkpoint_metafile``
    are wrapped; the class is not touched.

    Arguments
    ---------
    checkpointer : speechbrain.utils.checkpoints.Checkpointer
        The Checkpointer.

    Example
    -------
    >>> import torch
    >>> checkpointer = Checkpointer(getfixture("tmp_path"))
    >>> checkpointer.add_recoverable("model", torch.nn.Linear(1, 1))
    >>> write_meta_last(checkpointer)
    >>> def crash(obj, path):
    ...     raise OSError("killed")
    >>> checkpointer.custom_save_hooks["model"] = crash
    >>> checkpointer.save_checkpoint()
    Traceback (most recent call last):
    ...
    OSError: killed
    >>> checkpointer.list_checkpoints()
    []
    """
    save_meta = checkpointer._save_checkpoint_metafile
    save = checkpointer.save_checkpoint
    pending = []

    def save_meta_aside(fpath, *args, **kwargs):
        scratch = scratch_path(fpath)
        pending.append((scratch, fpath))
        return save_meta(scratch, *args, **kwargs)

    def save_checkpoint(*args, **kwargs):
        pending.clear()
        checkpoint = save(*args, **kwargs)
        for scratch, fpath in pending:
            os.replace(scratch, fpath)
        pending.clear()
        return checkpoint

    checkpointer._save_checkpoint_metafile = save_meta_aside
    checkpointer.save_checkpoint = save_checkpoint


def copy_normalizer_statistics(source, target):
    """Copy the running statistics of one InputNormalization to another.

    Arguments
    ---------
    source, target : speechbrain.processing.features.InputNormalization
        Normalisers of the same feature size.
    """
    target._load_statistics_dict(source._statistics_dict())


def save_normalizer(normalizer, path):
    """Write an InputNormalization's statistics where SpeechBrain reads them.

    Arguments
    ---------
    normalizer : speechbrain.processing.features.InputNormalization
        The normaliser.
    path : str or pathlib.Path
        The file (``normalizer.ckpt`` in a pretrained-model folder).
    """
    normalizer._save(path)
