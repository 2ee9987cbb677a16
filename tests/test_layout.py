"""The package's layout rules, read from the source with ``ast``.

* no import cycle between modules, and packages import only their own
  layer or the layers below (core -> data and training -> methods and
  families -> analysis and federated -> deploy and reporting -> the
  packaged ASR recipe -> the public namespaces and the command line;
  inside a layer, one direction only),
  importlib strings included;
* the classes of a model family are named only in its family module
  (``sb_prune/families/``), docstrings and messages aside.

Reading the source checks every module, including the ones a test run
does not load.
"""

import ast
import pathlib
import re

from sb_prune.core.registry import families

PACKAGE = pathlib.Path(__file__).resolve().parents[1] / "sb_prune"

#: Each package's layer: it may import its own layer and those below.
LAYERS = {
    "core": 0,
    "data": 1,
    "training": 1,
    "methods": 2,
    "families": 2,
    "analysis": 3,
    "federated": 3,
    "deploy": 4,
    "reporting": 4,
    "asr": 5,
}
#: The public namespaces (``sb_prune``, ``sb_prune.hooks``, ``sb_prune.nn``,
#: ``sb_prune.schedules``, ``sb_prune.importers``...) and the command line.
TOP = 6
#: Same-layer packages and the direction allowed between them.
SAME_LAYER = {
    ("families", "methods"),
    ("federated", "analysis"),
    ("reporting", "deploy"),
}
#: Classes of the Hugging Face Whisper family that its module alone uses
#: besides the registered module types.
FAMILY_WRAPPERS = {
    "WhisperConfig",
    "WhisperFeatureExtractor",
    "WhisperForConditionalGeneration",
    "WhisperModel",
    "WhisperTokenizer",
}


def module_name(path):
    parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def sources():
    return {module_name(p): p for p in sorted(PACKAGE.rglob("*.py"))}


def imported_modules(path, known):
    """sb_prune modules a file imports (lazy ones and importlib strings)."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module:
            names = [node.module]
            names += [f"{node.module}.{alias.name}" for alias in node.names]
        elif isinstance(node, ast.Constant) and isinstance(node.value, str):
            names = [node.value] if "." in node.value else []
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


def package_of(module):
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else "sb_prune"


def layer_violations(graph):
    found = set()
    for source, targets in graph.items():
        for target in targets:
            a, b = package_of(source), package_of(target)
            if a == b:
                continue
            low, high = LAYERS.get(a, TOP), LAYERS.get(b, TOP)
            if high > low or (high == low and (a, b) not in SAME_LAYER):
                found.add((a, b, source, target))
    return sorted(found)


def test_packages_import_only_their_layer_and_below():
    assert layer_violations(import_graph()) == []


def test_the_layer_check_finds_an_upward_import():
    graph = {
        "sb_prune.core.a": {"sb_prune.methods.b"},
        "sb_prune.methods.b": {"sb_prune.families.c"},
        "sb_prune.families.c": {"sb_prune.methods.b"},
        "sb_prune.cli.d": {"sb_prune.core.a"},
    }
    assert [v[:2] for v in layer_violations(graph)] == [
        ("core", "methods"),
        ("methods", "families"),
    ]


def family_class_names():
    names = set(FAMILY_WRAPPERS)
    for name, family in families().items():
        if name != "sb_prune":
            names.update(key.rsplit(".", 1)[-1] for key in family.types)
    return names


def docstrings(tree):
    found = set()
    for node in ast.walk(tree):
        body = getattr(node, "body", None)
        if isinstance(body, list) and body:
            first = body[0]
            if isinstance(first, ast.Expr) and isinstance(
                first.value, ast.Constant
            ):
                found.add(id(first.value))
    return found


def named_classes(path, names):
    """Family class names a file uses in code: identifiers, or strings
    that are a class name or a qualified name (not docstrings, not
    messages)."""
    tree = ast.parse(path.read_text())
    skip = docstrings(tree)
    used = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Name):
            used.add(node.id)
        elif isinstance(node, ast.Attribute):
            used.add(node.attr)
        elif isinstance(node, ast.ImportFrom):
            used.update(alias.name for alias in node.names)
        elif (
            isinstance(node, ast.Constant)
            and isinstance(node.value, str)
            and id(node) not in skip
            and re.fullmatch(r"[\w.]+", node.value)
        ):
            used.add(node.value.rsplit(".", 1)[-1])
    return used & names


def test_family_classes_are_named_only_in_their_family_module():
    names = family_class_names()
    assert {"ConformerEncoderLayer", "WhisperDecoderLayer"} <= names
    offenders = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        relative = path.relative_to(PACKAGE).as_posix()
        if relative.startswith("families/"):
            continue
        found = named_classes(path, names)
        if found:
            offenders[relative] = sorted(found)
    assert offenders == {}
