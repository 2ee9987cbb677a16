"""A check shared by the converters of :func:`sb_prune.convert`.

Authors
 * sb_prune developers
"""


def check_keys(section, options, allowed):
    """Raise a ValueError if ``options`` has a key outside ``allowed``.

    Arguments
    ---------
    section : str
        The converter's name, for the message.
    options : dict
        The options given to it.
    allowed : iterable of str
        Its valid keys.

    Example
    -------
    >>> check_keys("low_rank", {"rank": 2}, ["rank", "points"])
    >>> check_keys("low_rank", {"rnak": 2}, ["rank", "points"])
    Traceback (most recent call last):
    ...
    ValueError: low_rank: unknown key(s) ['rnak']; valid keys are [...]
    """
    unknown = sorted(set(options) - set(allowed))
    if unknown:
        raise ValueError(
            f"{section}: unknown key(s) {unknown}; valid keys are "
            f"{sorted(allowed)}"
        )
