"""Validation of YAML values: one rule each, errors that name the key.

Every constructor a hparams file reaches checks its arguments here, so a
bad value gets the same kind of message everywhere: the YAML key, what it
must be, and the value received (``ratio must be in (0, 1), got 1.5``).

Authors
 * sb_prune developers
"""

import math
import numbers
import os


def check_keys(section, options, allowed):
    """Raise a ValueError if ``options`` has a key outside ``allowed``.

    Arguments
    ---------
    section : str
        The converter's or mapping's name, for the message.
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


def check_int(key, value, minimum=None, maximum=None):
    """Return ``value`` if it is an integer in ``[minimum, maximum]``.

    Arguments
    ---------
    key : str
        The YAML key, for the message.
    value : object
        What the YAML gave.
    minimum, maximum : int, optional
        Inclusive bounds.

    Returns
    -------
    int
        The value.

    Example
    -------
    >>> check_int("n_layers", 3, minimum=1)
    3
    >>> check_int("n_layers", "3", minimum=1)
    Traceback (most recent call last):
    ...
    ValueError: n_layers must be an integer >= 1, got '3'
    >>> check_int("n_layers", 2.0, minimum=1)
    Traceback (most recent call last):
    ...
    ValueError: n_layers must be an integer >= 1, got 2.0
    """
    bounds = _describe_bounds(minimum, maximum, False, False)
    ok = isinstance(value, numbers.Integral) and not isinstance(value, bool)
    if ok and minimum is not None and value < minimum:
        ok = False
    if ok and maximum is not None and value > maximum:
        ok = False
    if not ok:
        raise ValueError(f"{key} must be an integer{bounds}, got {value!r}")
    return int(value)


def _describe_bounds(low, high, low_open, high_open):
    if low is not None and high is not None:
        left = "(" if low_open else "["
        right = ")" if high_open else "]"
        return f" in {left}{low}, {high}{right}"
    if low is not None:
        return f" {'>' if low_open else '>='} {low}"
    if high is not None:
        return f" {'<' if high_open else '<='} {high}"
    return ""


def check_number(
    key, value, low=None, high=None, open_low=False, open_high=False
):
    """Return ``value`` as a float if it is a number inside the interval.

    Arguments
    ---------
    key : str
        The YAML key, for the message.
    value : object
        What the YAML gave.
    low, high : float, optional
        The interval's ends (None: unbounded).
    open_low, open_high : bool
        Whether the ends are excluded.

    Returns
    -------
    float
        The value.

    Example
    -------
    >>> check_number("threshold", 0.5, 0, 1, open_low=True, open_high=True)
    0.5
    >>> check_number("threshold", 1, 0, 1, open_low=True, open_high=True)
    Traceback (most recent call last):
    ...
    ValueError: threshold must be in (0, 1), got 1
    >>> check_number("weight", "1e-3", low=0)
    Traceback (most recent call last):
    ...
    ValueError: weight must be a number >= 0, got '1e-3'
    >>> check_number("ramp_epochs", float("inf"), low=0)
    Traceback (most recent call last):
    ...
    ValueError: ramp_epochs must be a finite number >= 0, got inf
    """
    bounds = _describe_bounds(low, high, open_low, open_high)
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise ValueError(f"{key} must be a number{bounds}, got {value!r}")
    if math.isinf(value):
        raise ValueError(
            f"{key} must be a finite number{bounds}, got {value!r}"
        )
    too_low = low is not None and (value <= low if open_low else value < low)
    too_high = high is not None and (
        value >= high if open_high else value > high
    )
    if too_low or too_high or value != value:
        raise ValueError(f"{key} must be{bounds}, got {value!r}")
    return float(value)


def check_choice(key, value, choices):
    """Return ``value`` if it is one of ``choices``.

    Arguments
    ---------
    key : str
        The YAML key, for the message.
    value : object
        What the YAML gave.
    choices : iterable
        The valid values.

    Returns
    -------
    object
        The value.

    Example
    -------
    >>> check_choice("rule", "peak", ["peak", "first"])
    'peak'
    >>> check_choice("rule", "top", ["peak", "first"])
    Traceback (most recent call last):
    ...
    ValueError: rule must be one of ['peak', 'first'], got 'top'
    """
    choices = list(choices)
    if value not in choices:
        raise ValueError(f"{key} must be one of {choices}, got {value!r}")
    return value


def check_choices(key, values, choices):
    """Return ``values`` as a list of choices; a single string is one.

    YAML users write ``groups: ffn`` as often as ``groups: [ffn]``; both
    mean ``["ffn"]``.

    Arguments
    ---------
    key : str
        The YAML key, for the message.
    values : str or iterable of str
        What the YAML gave.
    choices : iterable of str
        The valid values.

    Returns
    -------
    list
        The chosen values, in the given order.

    Example
    -------
    >>> check_choices("groups", "ffn", ["ffn", "heads"])
    ['ffn']
    >>> check_choices("groups", ["ffn", "rows"], ["ffn", "heads"])
    Traceback (most recent call last):
    ...
    ValueError: groups: unknown ['rows']; choose from ['ffn', 'heads']
    >>> check_choices("groups", [], ["ffn", "heads"])
    Traceback (most recent call last):
    ...
    ValueError: groups: empty; choose from ['ffn', 'heads']
    """
    choices = list(choices)
    if isinstance(values, str):
        values = [values]
    try:
        values = list(values)
    except TypeError:
        raise ValueError(
            f"{key} must be a list of {choices}, got {values!r}"
        ) from None
    if not values:
        raise ValueError(f"{key}: empty; choose from {choices}")
    unknown = [v for v in values if v not in choices]
    if unknown:
        raise ValueError(f"{key}: unknown {unknown}; choose from {choices}")
    return values


def check_strings(key, values):
    """Return ``values`` as a non-empty list of non-empty strings.

    A single string is a list of one.

    Arguments
    ---------
    key : str
        The YAML key, for the message.
    values : str or iterable of str
        What the YAML gave.

    Returns
    -------
    list of str
        The strings.

    Example
    -------
    >>> check_strings("scope", "whisper.model.encoder")
    ['whisper.model.encoder']
    >>> check_strings("scope", ["a", 3])
    Traceback (most recent call last):
    ...
    ValueError: scope must be a list of non-empty strings, got ['a', 3]
    >>> check_strings("modules", {"ffn1": 1})
    Traceback (most recent call last):
    ...
    ValueError: modules must be a list of non-empty strings, got {'ffn1': 1}
    """
    if isinstance(values, str):
        values = [values]
    strings = None
    if not isinstance(values, dict):
        try:
            strings = list(values)
        except TypeError:
            pass
    if not strings or not all(isinstance(v, str) and v for v in strings):
        raise ValueError(
            f"{key} must be a list of non-empty strings, got {values!r}"
        )
    return strings


def check_bool(key, value):
    """Return ``value`` if it is ``True`` or ``False``.

    Arguments
    ---------
    key : str
        The YAML key, for the message.
    value : object
        What the YAML gave.

    Returns
    -------
    bool
        The value.

    Example
    -------
    >>> check_bool("save_states", True)
    True
    >>> check_bool("save_states", "yes")
    Traceback (most recent call last):
    ...
    ValueError: save_states must be true or false, got 'yes'
    """
    if not isinstance(value, bool):
        raise ValueError(f"{key} must be true or false, got {value!r}")
    return value


def check_string(key, value, optional=False):
    """Return ``value`` if it is a non-empty string (a name or a path).

    Arguments
    ---------
    key : str
        The YAML key, for the message.
    value : object
        What the YAML gave; a ``pathlib.Path`` counts as a string.
    optional : bool
        Whether ``None`` (YAML's ``null``) is valid too.

    Returns
    -------
    str or os.PathLike or None
        The value.

    Example
    -------
    >>> check_string("student", "model")
    'model'
    >>> check_string("student", 3)
    Traceback (most recent call last):
    ...
    ValueError: student must be a non-empty string, got 3
    >>> check_string("encoder", None, optional=True)
    """
    if optional and value is None:
        return None
    if not isinstance(value, (str, os.PathLike)) or not str(value):
        raise ValueError(f"{key} must be a non-empty string, got {value!r}")
    return value
