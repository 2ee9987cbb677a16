"""Read a recipe's run folder: its hparams, checkpoints and tokenizer.

What every exporter of a run shares (:mod:`sb_prune.deploy.pretrained`,
:mod:`sb_prune.deploy.whisper_run`).

Authors
 * sb_prune developers
"""

import logging
from pathlib import Path

import torch
from hyperpyyaml import load_hyperpyyaml
from speechbrain.utils.checkpoints import average_checkpoints

from sb_prune.core.checkpoints import (
    StructureGuard,
    has_low_rank,
    read_structure,
)
from sb_prune.core.structure import restore

logger = logging.getLogger(__name__)


def load_evaluated_checkpoints(hparams, min_key="WER"):
    """Load the checkpoints a recipe run evaluated into its modules.

    As :class:`sb_prune.PruningBrain` lets a recipe do: the best
    checkpoints of the final structure (the newest checkpoint's), up to
    ``avg_checkpoints`` of them averaged (only the best for low-rank
    models).

    Arguments
    ---------
    hparams : dict
        The run's ``hyperparams.yaml``, loaded.
    min_key : str
        The checkpoint metric the recipe selected on.

    Returns
    -------
    int
        How many checkpoints were averaged.
    """
    modules = torch.nn.ModuleDict(hparams["modules"])
    checkpointer = hparams["checkpointer"]
    if checkpointer.find_checkpoint() is None:
        raise FileNotFoundError(
            f"No checkpoint in {checkpointer.checkpoints_dir}: train first"
        )
    guard = StructureGuard(checkpointer, lambda: has_low_rank(modules))
    with guard.evaluating():
        best = checkpointer.find_checkpoint(min_key=min_key)
        if best is None:
            raise FileNotFoundError(
                f"No checkpoint in {checkpointer.checkpoints_dir} records "
                f"{min_key}: not an ASR run"
            )
        record = read_structure(best)
        if record is not None:
            restore(modules, record)
        checkpointer.load_checkpoint(best)
        same = checkpointer.find_checkpoints(
            min_key=min_key,
            max_num_checkpoints=hparams.get("avg_checkpoints", 1),
        )
    if len(same) > 1 and "model" not in hparams:
        logger.warning(
            "The run has no 'model' recoverable to average: the best "
            f"checkpoint alone is loaded ({best.path})"
        )
        return 1
    if len(same) > 1:
        state = average_checkpoints(same, recoverable_name="model")
        hparams["model"].load_state_dict(state, strict=True)
    return len(same)


def read_hparams(folder, argument):
    """Load ``hyperparams.yaml`` of a run folder or an exported folder.

    Arguments
    ---------
    folder : pathlib.Path
        The folder.
    argument : str
        What the user called it (named in the error).

    Returns
    -------
    dict
        The loaded hparams (modules built, no weights loaded).

    Raises
    ------
    FileNotFoundError
        Naming ``argument`` when the folder has no ``hyperparams.yaml``.
    """
    hparams_file = Path(folder) / "hyperparams.yaml"
    if not hparams_file.is_file():
        raise FileNotFoundError(
            f"{argument} {folder} is not a recipe run folder or exported "
            f"model: {hparams_file} is missing"
        )
    with open(hparams_file, encoding="utf-8") as handle:
        return load_hyperpyyaml(handle)


def tokenizer_file(source):
    """Return the SentencePiece model of a run folder or exported folder.

    Arguments
    ---------
    source : str
        See :func:`load_model`.

    Returns
    -------
    pathlib.Path
        The tokenizer model file.
    """
    source = Path(source)
    exported = source / "tokenizer.ckpt"
    if exported.is_file():
        return exported
    found = sorted((source / "save").glob("*.model"))
    if not found:
        raise FileNotFoundError(f"No tokenizer model in {source}")
    return found[0]
