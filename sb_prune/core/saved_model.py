"""Save a pruned model as its own smaller checkpoint, and load it back.

An exported folder holds ``model.ckpt`` (the state dict, physically
smaller tensors) and ``structure.json`` (the structure record). To load
it, build the model as for training (same ``sb_prune.convert`` options),
then :func:`load_exported` reshapes it to the record and loads the
tensors.

Authors
 * sb_prune developers
"""

import json
import os

import torch

from sb_prune.core.atomic import complete_or_absent
from sb_prune.core.structure import describe, read_record, restore

MODEL_FILE = "model.ckpt"
STRUCTURE_FILE = "structure.json"


def export_model(model, folder):
    """Write ``model``'s tensors and structure record to ``folder``.

    Arguments
    ---------
    model : torch.nn.Module
        The (pruned) model.
    folder : str
        Written whole or not at all (an existing folder is replaced:
        see :func:`sb_prune.core.atomic.complete_or_absent`).

    Returns
    -------
    str
        The folder.

    Example
    -------
    >>> from speechbrain.nnet.attention import PositionalwiseFeedForward
    >>> from sb_prune.core.surgery import apply_plan
    >>> ffn = PositionalwiseFeedForward(d_ffn=8, input_size=4)
    >>> apply_plan(ffn, {"": {"hidden": torch.tensor([1, 5])}})
    >>> folder = export_model(ffn, getfixture("tmp_path"))
    >>> fresh = load_exported(
    ...     PositionalwiseFeedForward(d_ffn=8, input_size=4), folder
    ... )
    >>> fresh.ffn[0].out_features
    2
    """
    with complete_or_absent(folder) as scratch:
        torch.save(model.state_dict(), scratch / MODEL_FILE)
        with open(scratch / STRUCTURE_FILE, "w") as handle:
            json.dump(describe(model), handle, indent=1)
    return folder


def load_exported(model, folder):
    """Reshape ``model`` to an exported structure and load its tensors.

    Usable from hyperpyyaml:
    ``!apply:sb_prune.core.saved_model.load_exported``.

    Arguments
    ---------
    model : torch.nn.Module
        Built as the exported model was before pruning.
    folder : str
        A folder written by :func:`export_model`.

    Returns
    -------
    torch.nn.Module
        ``model``, reshaped and loaded in place.

    Raises
    ------
    ValueError
        Naming the file, if the record or the tensors do not fit the model
        (see :func:`sb_prune.core.structure.restore`).
    """
    structure = os.path.join(folder, STRUCTURE_FILE)
    record = read_record(structure)
    try:
        restore(model, record)
    except ValueError as error:
        raise ValueError(f"{structure}: {error}") from error
    device = next(model.parameters()).device
    path = os.path.join(folder, MODEL_FILE)
    state = torch.load(path, map_location=device, weights_only=True)
    try:
        model.load_state_dict(state)
    except RuntimeError as error:
        raise ValueError(f"{path} does not fit {structure}: {error}") from None
    return model
