#!/usr/bin/env python3
"""Write every figure of the READMEs from the committed results files.

The figures of README.md and of the recipe READMEs
(``recipes/LibriSpeech/*/README.md``) sit in blocks between
``<!-- figures:NAME -->`` and ``<!-- /figures:NAME -->``; this script
renders each block from ``benchmarks/results/*.json`` (see
``benchmarks/figures``) and writes it in place. With ``--check`` it writes
nothing, prints the difference and exits with 1 where a README differs
from what the JSON renders (tests/test_readme_results.py runs it).

Usage:
    python benchmarks/readme_results.py            # rewrite the READMEs
    python benchmarks/readme_results.py --check    # diff, exit 1 if stale

Authors
 * sb_prune developers
"""

import argparse
import difflib
import re
import sys
from pathlib import Path

from figures import BLOCKS, load_results

REPO = Path(__file__).resolve().parents[1]
BLOCK = re.compile(
    r"(<!-- figures:(\w+) -->\n)(.*?)(<!-- /figures:\2 -->)", re.DOTALL
)
OPENING = re.compile(r"<!-- figures:(\w+) -->")


def readmes(root):
    """The READMEs that hold figure blocks, relative to ``root``."""
    recipes = sorted((root / "recipes" / "LibriSpeech").glob("*/README.md"))
    return [Path("README.md")] + [path.relative_to(root) for path in recipes]


def render(text, results, name="README"):
    """``text`` with every figure block rendered from ``results``.

    Arguments
    ---------
    text : str
        A README.
    results : dict
        Every results file by name (``figures.load_results()``).
    name : str
        The README's name, for error messages.

    Returns
    -------
    str
        The README as the JSON renders it.
    """
    opened = OPENING.findall(text)
    closed = [match.group(2) for match in BLOCK.finditer(text)]
    if opened != closed:
        raise ValueError(
            f"{name}: figure blocks {opened} opened, {closed} closed"
        )
    unknown = sorted(set(opened) - set(BLOCKS))
    if unknown:
        raise ValueError(f"{name}: no renderer for figure blocks {unknown}")

    def replace(match):
        body = BLOCKS[match.group(2)](results)
        return match.group(1) + body + match.group(4)

    return BLOCK.sub(replace, text)


def stale(root, results):
    """``{README: unified diff}`` for each README the JSON renders
    differently."""
    diffs = {}
    for relative in readmes(root):
        text = (root / relative).read_text()
        new = render(text, results, str(relative))
        if new != text:
            diffs[relative] = "".join(
                difflib.unified_diff(
                    text.splitlines(keepends=True),
                    new.splitlines(keepends=True),
                    f"{relative} (committed)",
                    f"{relative} (rendered from benchmarks/results)",
                )
            )
    return diffs


def main(argv=None):
    """Rewrite the READMEs' figure blocks, or with --check report stale
    ones."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument(
        "--check",
        action="store_true",
        help="write nothing; print the diff and exit 1 if a README is stale",
    )
    parser.add_argument(
        "--root", type=Path, default=REPO, help="the repository (tests)"
    )
    args = parser.parse_args(argv)
    results = load_results(args.root / "benchmarks" / "results")
    diffs = stale(args.root, results)
    for relative, diff in diffs.items():
        if args.check:
            print(diff)
        else:
            text = (args.root / relative).read_text()
            (args.root / relative).write_text(render(text, results))
            print(f"rewrote {relative}")
    if args.check and diffs:
        print(
            "READMEs differ from benchmarks/results: run "
            "python benchmarks/readme_results.py",
            file=sys.stderr,
        )
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
