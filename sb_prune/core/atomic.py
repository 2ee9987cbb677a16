"""Write files and folders so that they are complete or absent.

A process killed while it writes an exported model, a converted Whisper
folder or a checkpoint must not leave something that a later run takes
for the finished output. Every sb_prune writer therefore writes into a
hidden sibling (``.<name>.partial-<pid>``) and renames it into place last:
a rename within one folder is atomic, so readers see either no output or
the whole of it, and the code paths that reuse an existing folder as a
cache can trust its presence.

Authors
 * sb_prune developers
"""

import contextlib
import os
import shutil
from pathlib import Path


def scratch_path(path):
    """The hidden sibling that :func:`complete_or_absent` writes ``path`` in.

    Arguments
    ---------
    path : str or pathlib.Path
        The file or folder to write.

    Returns
    -------
    pathlib.Path
        ``.<name>.partial-<pid>`` in the same folder (one per process, so
        concurrent writers of the same output do not meet).

    Example
    -------
    >>> scratch_path("out/model").name.startswith(".model.partial-")
    True
    """
    path = Path(path)
    return path.parent / f".{path.name}.partial-{os.getpid()}"


@contextlib.contextmanager
def complete_or_absent(folder, replace=True):
    """Yield a scratch folder that becomes ``folder`` when the block ends.

    Arguments
    ---------
    folder : str or pathlib.Path
        The folder to write. Its parent is created if missing.
    replace : bool
        What to do when ``folder`` exists at the end: replace it whole
        (True: a previous export's files do not linger), or keep it and
        discard this copy (False: for caches that several processes may
        fill at once; the first complete copy wins).

    Yields
    ------
    pathlib.Path
        The empty scratch folder to write into. If the block raises (or
        the process dies), ``folder`` is left as it was and the scratch is
        deleted (or left hidden, under its ``.partial`` name).

    Example
    -------
    >>> import tempfile
    >>> out = Path(tempfile.mkdtemp()) / "exported"
    >>> with complete_or_absent(out) as scratch:
    ...     _ = (scratch / "model.ckpt").write_text("weights")
    ...     out.exists()
    False
    >>> sorted(p.name for p in out.iterdir())
    ['model.ckpt']
    >>> with complete_or_absent(out) as scratch:
    ...     raise OSError("disk full")
    Traceback (most recent call last):
    ...
    OSError: disk full
    >>> sorted(p.name for p in out.parent.iterdir())
    ['exported']
    >>> shutil.rmtree(out.parent)
    """
    folder = Path(folder)
    scratch = scratch_path(folder)
    if scratch.exists():  # left by a killed process of the same id
        shutil.rmtree(scratch)
    scratch.mkdir(parents=True)
    try:
        yield scratch
    except BaseException:
        shutil.rmtree(scratch, ignore_errors=True)
        raise
    _install(scratch, folder, replace)


def _install(scratch, folder, replace):
    """Rename ``scratch`` to ``folder``, replacing or keeping one there."""
    if folder.exists() and not replace:
        shutil.rmtree(scratch)
        return
    if folder.exists() and any(folder.iterdir()):
        old = folder.parent / f".{folder.name}.replaced-{os.getpid()}"
        os.rename(folder, old)
        os.rename(scratch, folder)
        shutil.rmtree(old)
        return
    try:
        os.rename(scratch, folder)  # onto an empty folder too
    except OSError:
        if replace or not folder.exists():
            raise
        shutil.rmtree(scratch)  # another process renamed its copy first


def write_file(path, write):
    """Write a file through a scratch name, renamed into place last.

    Arguments
    ---------
    path : str or pathlib.Path
        The file.
    write : callable
        ``write(scratch_path)`` writes the contents.

    Returns
    -------
    pathlib.Path
        The file.

    Example
    -------
    >>> import tempfile
    >>> path = Path(tempfile.mkdtemp()) / "structure.json"
    >>> _ = write_file(path, lambda tmp: tmp.write_text("{}"))
    >>> path.read_text()
    '{}'
    >>> shutil.rmtree(path.parent)
    """
    path = Path(path)
    scratch = scratch_path(path)
    try:
        write(scratch)
    except BaseException:
        scratch.unlink(missing_ok=True)
        raise
    os.replace(scratch, path)
    return path
