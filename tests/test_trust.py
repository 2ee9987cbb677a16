"""Every ``torch.load`` in sb_prune passes ``weights_only=True``.

A pickle loaded without it can run any code it names; with it, torch
unpickles tensors and plain containers only, so a checkpoint or an exported
weight file is data (README, "Trust model"). Reading the source with
``ast`` checks every module, including the ones a test run does not load.
"""

import ast
import pathlib

PACKAGE = pathlib.Path(__file__).resolve().parents[1] / "sb_prune"


def unsafe_loads(source):
    """Line numbers of ``torch.load`` calls without ``weights_only=True``."""
    tree = ast.parse(source)
    aliases = {"torch.load"}
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module == "torch":
            aliases.update(
                alias.asname or alias.name
                for alias in node.names
                if alias.name == "load"
            )
    lines = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Call) and ast.unparse(node.func) in aliases:
            safe = any(
                keyword.arg == "weights_only"
                and isinstance(keyword.value, ast.Constant)
                and keyword.value.value is True
                for keyword in node.keywords
            )
            if not safe:
                lines.append(node.lineno)
    return lines


def test_the_checker_finds_unsafe_loads():
    source = "\n".join(
        [
            "import torch",
            "from torch import load as read",
            "torch.load('a', weights_only=True)",
            "torch.load('b')",
            "torch.load('c', weights_only=False)",
            "read('d')",
            "read('e', map_location='cpu', weights_only=True)",
            "torch.load('f', **options)",
        ]
    )
    assert unsafe_loads(source) == [4, 5, 6, 8]


def test_every_torch_load_is_weights_only():
    found = {
        str(path.relative_to(PACKAGE.parent)): lines
        for path in sorted(PACKAGE.rglob("*.py"))
        if (lines := unsafe_loads(path.read_text()))
    }
    assert not found, f"torch.load without weights_only=True: {found}"
