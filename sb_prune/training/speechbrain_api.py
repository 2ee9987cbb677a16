"""The one place where sb_prune uses SpeechBrain's private API.

SpeechBrain 1.1 has no public way to do four things sb_prune needs:

* run code between the training and the validation part of an epoch
  (pruning must happen before validation, so the checkpoint saved after
  validation holds the pruned model and its score): :class:`PruningBrain`
  overrides ``Brain._fit_train`` (:data:`TRAIN_EPOCH_METHOD`);
* re-wrap modules in DDP after their parameters changed shape
  (:func:`rewrap_distributed`, ``Brain._wrap_distributed``);
* load the structure record before every other recoverable (the Checkpointer
  loads in insertion order, kept in ``Checkpointer.recoverables``):
  :func:`load_first`;
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

import speechbrain as sb
from speechbrain.processing.features import InputNormalization
from speechbrain.utils.checkpoints import Checkpointer

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
