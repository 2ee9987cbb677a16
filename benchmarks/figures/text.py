"""How the README's figure blocks write numbers, tables and checked claims.

One rounding per kind of figure, so that a figure reads the same in every
block: WER, CER, accuracy and perplexity with 2 decimals (3 where a
perplexity stands next to its standard deviation), ratios with 2, shares
of parameters removed with 1 (as a percentage), counts with thousands
separators. A figure computed from others (a gap, an interpolation) is
computed from the JSON's unrounded values, then rounded.

Authors
 * sb_prune developers
"""

import textwrap

WIDTH = 75


class ClaimError(ValueError):
    """A sentence of a README block no longer follows from its JSON."""


def holds(condition, claim):
    """Check that the JSON still supports a claim a block writes.

    Arguments
    ---------
    condition : bool
        What the claim needs, computed from the JSON.
    claim : str
        The claim, as the README states it (for the error message).

    Returns
    -------
    str
        ``claim``, to write it where it was checked.

    Example
    -------
    >>> holds(6.4 < 7.0, "beats")
    'beats'
    """
    if not condition:
        raise ClaimError(
            f"the README says {claim!r}, which the JSON no longer supports"
        )
    return claim


def num(value, digits=2):
    """``value`` with ``digits`` decimals (WER, ratios...): ``6.07``."""
    return f"{value:.{digits}f}"


def signed(value, digits=2):
    """A difference, sign always written: ``+0.39``."""
    return f"{value:+.{digits}f}"


def count(value):
    """A count with thousands separators: ``2,016,288``."""
    return f"{value:,}"


def millions(value):
    """A parameter count in millions: ``14.6M``."""
    return f"{value / 1e6:.1f}M"


def percent(fraction, digits=1):
    """A fraction as a percentage: ``0.577 -> 57.7%``."""
    return f"{100 * fraction:.{digits}f}%"


def sci(value):
    """A small setting such as a weight or a learning rate: ``3e-6``."""
    mantissa, exponent = f"{float(value):.0e}".split("e")
    return f"{mantissa}e{int(exponent)}"


def mean_sd(spread, digits=2):
    """A ``spread`` dict (``mean``, ``sd``) as ``6.45 ± 0.48``."""
    return f"{spread['mean']:.{digits}f} ± {spread['sd']:.{digits}f}"


def span(values, digits=2):
    """The range of ``values``: ``1.03-1.46``, or one value if they agree."""
    low, high = (f"{v:.{digits}f}" for v in (min(values), max(values)))
    return low if low == high else f"{low}-{high}"


def seeds(values, digits=2):
    """One value per seed: ``7.00 / 6.08 / 6.28``."""
    return " / ".join(f"{v:.{digits}f}" for v in values)


def table(header, rows):
    """A markdown table; cells are written as given (``None``: empty)."""
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for row in rows:
        cells = ["" if cell is None else str(cell) for cell in row]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def paragraph(*parts):
    """Join ``parts`` into one paragraph wrapped at 75 columns."""
    return textwrap.fill(
        "".join(parts),
        WIDTH,
        break_long_words=False,
        break_on_hyphens=False,
    )


def blocks(*parts):
    """Paragraphs and tables, separated by blank lines."""
    return "\n\n".join(parts) + "\n"
