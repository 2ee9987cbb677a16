"""The package's layout rules: no import cycle, one place per model family.

Both read the source with ``ast`` (no import needed), so they check every
module, including the ones a test run does not load.
"""

import ast
import pathlib

PACKAGE = pathlib.Path(__file__).resolve().parents[1] / "sb_prune"

#: SpeechBrain model classes whose knowledge belongs to the registry.
SPEECHBRAIN_LAYERS = {
    "ConformerEncoder",
    "ConformerEncoderLayer",
    "ConvolutionModule",
    "MultiheadAttention",
    "PositionalwiseFeedForward",
    "RelPosMHAXL",
    "TransformerDecoder",
    "TransformerDecoderLayer",
    "TransformerEncoder",
    "TransformerEncoderLayer",
}
#: The registry and the converters (which build sb_prune modules from
#: SpeechBrain ones) may name them.
MAY_NAME_LAYERS = {
    "core/specs.py",
    "methods/adaptive_dropout/convert.py",
    "methods/attention/convert.py",
    "methods/conv_norm/group_norm.py",
    "methods/i3d/gated.py",
}


def module_name(path):
    parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def sources():
    return {module_name(p): p for p in sorted(PACKAGE.rglob("*.py"))}


def imported_modules(path, known):
    """sb_prune modules a file imports, anywhere in it (lazy ones too)."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module:
            names = [node.module]
            names += [f"{node.module}.{alias.name}" for alias in node.names]
        else:
            continue
        found.update(name for name in names if name in known)
    return found


def import_graph():
    modules = sources()
    return {
        name: imported_modules(path, modules) for name, path in modules.items()
    }


def find_cycle(graph):
    state = {}

    def visit(node, stack):
        state[node] = "open"
        for target in sorted(graph[node]):
            if state.get(target) == "open":
                return stack[stack.index(target) :] + [target]
            if target not in state:
                cycle = visit(target, stack + [target])
                if cycle:
                    return cycle
        state[node] = "done"
        return None

    for node in sorted(graph):
        if node not in state:
            cycle = visit(node, [node])
            if cycle:
                return cycle
    return None


def test_no_import_cycle_inside_sb_prune():
    assert find_cycle(import_graph()) is None


def test_the_cycle_finder_finds_a_cycle():
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": set()}
    assert find_cycle(graph) == ["a", "b", "c", "a"]


def named_layers(path):
    names = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Name):
            names.add(node.id)
        elif isinstance(node, ast.Attribute):
            names.add(node.attr)
        elif isinstance(node, ast.ImportFrom):
            names.update(alias.name for alias in node.names)
    return names & SPEECHBRAIN_LAYERS


def test_only_the_registry_and_converters_name_speechbrain_layers():
    offenders = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        relative = path.relative_to(PACKAGE).as_posix()
        if relative in MAY_NAME_LAYERS:
            continue
        names = named_layers(path)
        if names:
            offenders[relative] = sorted(names)
    assert offenders == {}
