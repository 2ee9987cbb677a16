"""The ``sb-prune`` command line.

Each verb has its module in this package (``synth``, ``demo``, ``export``,
``compress``, ``cost-table``, ``report``: its ``add_arguments(parser)``
and ``main(args)``); ``recipes`` finds the repository recipes that
``demo`` runs. This file only parses arguments and dispatches, importing
the chosen verb's module only.

Authors
 * sb_prune developers
"""

import argparse
import importlib
import sys

#: (command, module defining add_arguments(parser) and main(args), help)
SUBCOMMANDS = [
    (
        "synth",
        "sb_prune.cli.synth",
        "write an offline LibriSpeech-format corpus",
    ),
    (
        "demo",
        "sb_prune.cli.demo",
        "run the recipes on the synthetic corpus, print a table",
    ),
    (
        "export",
        "sb_prune.cli.export",
        "write a recipe run as a SpeechBrain pretrained-model folder",
    ),
    (
        "compress",
        "sb_prune.cli.compress",
        "prune a trained dense model with a method, export the result",
    ),
    (
        "cost-table",
        "sb_prune.cli.cost_table",
        "time matrix shapes dense and factorised (low rank's cost_table)",
    ),
    (
        "report",
        "sb_prune.cli.report",
        "render a folder of recipe runs as REPORT.md with plots",
    ),
]


def build_parser(command=None):
    """Build the ``sb-prune`` argument parser.

    Only the module of ``command`` is imported (the others may be heavy).

    Arguments
    ---------
    command : str, optional
        The sub-command whose arguments to declare.

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
    for name, module_name, help_text in SUBCOMMANDS:
        subparser = subparsers.add_parser(name, help=help_text)
        if name == command:
            module = importlib.import_module(module_name)
            module.add_arguments(subparser)
            subparser.set_defaults(func=module.main)
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
    argv = sys.argv[1:] if argv is None else argv
    parser = build_parser(argv[0] if argv else None)
    args = parser.parse_args(argv)
    try:
        return args.func(args) or 0
    except (FileNotFoundError, ValueError) as error:
        parser.exit(2, f"sb-prune {args.command}: error: {error}\n")


if __name__ == "__main__":
    sys.exit(main())
