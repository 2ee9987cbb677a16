"""The ``sb-prune`` command line.

Each sub-command lives in the module that implements it; this file only
parses arguments and dispatches, importing heavy modules lazily.

Authors
 * sb_prune developers
"""

import argparse
import sys


def _add_synth(subparsers):
    from sb_prune.data.synthesize import add_arguments, main

    parser = subparsers.add_parser(
        "synth", help="write an offline LibriSpeech-format corpus"
    )
    add_arguments(parser)
    parser.set_defaults(func=main)


def _add_demo(subparsers):
    from sb_prune.demo import add_arguments, main

    parser = subparsers.add_parser(
        "demo", help="run the recipes on the synthetic corpus, print a table"
    )
    add_arguments(parser)
    parser.set_defaults(func=main)


SUBCOMMANDS = [_add_synth, _add_demo]


def build_parser():
    """Build the ``sb-prune`` argument parser.

    Returns
    -------
    argparse.ArgumentParser
        The parser with one sub-parser per command.

    Example
    -------
    >>> parser = build_parser()
    >>> parser.prog
    'sb-prune'
    """
    parser = argparse.ArgumentParser(
        prog="sb-prune",
        description="Pruning and compression for SpeechBrain speech models.",
    )
    subparsers = parser.add_subparsers(dest="command", required=True)
    for add in SUBCOMMANDS:
        add(subparsers)
    return parser


def main(argv=None):
    """Run the ``sb-prune`` command.

    Arguments
    ---------
    argv : list of str, optional
        Arguments without the program name (default: ``sys.argv[1:]``).

    Returns
    -------
    int
        The exit status.
    """
    args = build_parser().parse_args(sys.argv[1:] if argv is None else argv)
    return args.func(args) or 0


if __name__ == "__main__":
    sys.exit(main())
