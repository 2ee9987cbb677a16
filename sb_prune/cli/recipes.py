"""The recipes the demo runs, found in one place.

``sb-prune demo`` runs the repository's recipes (``recipes/LibriSpeech``)
in subprocesses, and they are not part of an installed wheel: it works
from a checkout installed with ``pip install -e .`` and says so when the
folder is missing. (``sb-prune compress`` needs no checkout: the hparams
files it runs ship with the wheel.)

Authors
 * sb_prune developers
"""

from pathlib import Path

#: The LibriSpeech recipes of a repository checkout.
RECIPES = Path(__file__).resolve().parents[2] / "recipes" / "LibriSpeech"


def recipes_folder(command, folder=RECIPES):
    """Return the recipes folder, or raise saying what ``command`` needs.

    Arguments
    ---------
    command : str
        The sub-command, for the message.
    folder : pathlib.Path
        Where the recipes should be.

    Returns
    -------
    pathlib.Path
        The folder.

    Example
    -------
    >>> recipes_folder("demo", Path("/nonexistent"))
    Traceback (most recent call last):
    ...
    FileNotFoundError: sb-prune demo runs the repository's recipes, ...
    """
    if not Path(folder).is_dir():
        raise FileNotFoundError(
            f"sb-prune {command} runs the repository's recipes, and "
            f"{folder} is missing (an installed wheel has no recipes): "
            "clone the sb_prune repository and pip install -e . there"
        )
    return Path(folder)
