"""Objects named by their dotted path, imported on first use.

The method table (:mod:`sb_prune.methods.table`) names code by path; the
public namespaces (``sb_prune.hooks``, ``sb_prune.nn``) and
:func:`sb_prune.convert` import what they need of it with :func:`resolve`,
when it is first asked for.

Authors
 * sb_prune developers
"""

import importlib


def resolve(path):
    """Import ``package.module.name`` and return ``name``.

    Arguments
    ---------
    path : str
        A dotted path from the table.

    Returns
    -------
    object
        What it names.

    Example
    -------
    >>> resolve("sb_prune.core.names.resolve") is resolve
    True
    """
    module, _, name = path.rpartition(".")
    return getattr(importlib.import_module(module), name)


def lazy_namespace(module_name, names):
    """A module ``__getattr__`` that imports ``names`` on first use.

    Arguments
    ---------
    module_name : str
        The module's ``__name__``, for the error message.
    names : dict
        Public name -> dotted path.

    Returns
    -------
    callable
        ``__getattr__(name)`` for that module.

    Example
    -------
    >>> getter = lazy_namespace("demo", {"resolve": __name__ + ".resolve"})
    >>> getter("resolve") is resolve
    True
    >>> getter("nothing")
    Traceback (most recent call last):
    ...
    AttributeError: module 'demo' has no attribute 'nothing'
    """

    def __getattr__(name):
        if name in names:
            return resolve(names[name])
        raise AttributeError(
            f"module {module_name!r} has no attribute {name!r}"
        )

    return __getattr__
