"""Every class and function a YAML file of the repository names exists.

hyperpyyaml resolves ``!new:``, ``!name:`` and ``!apply:`` targets only
when a file is loaded, which most recipes do only with data present; this
test resolves every sb_prune target of every YAML file (recipes, hparams
fragments, test material) without loading them, and the aliases that
older hparams files use.
"""

import importlib
import pathlib
import re

import pytest

REPO = pathlib.Path(__file__).resolve().parents[1]
TARGET = re.compile(r"!(?:new|name|apply):(sb_prune(?:\.\w+)+)")
#: Paths of older hparams files, kept as aliases of the public ones.
ALIASES = [
    "sb_prune.analysis.ConvexityScoring",
    "sb_prune.analysis.LayerCut",
    "sb_prune.analysis.WeightChangeTracker",
    "sb_prune.analysis.register_layer_stack",
    "sb_prune.importers.ctranslate2.hugging_face_whisper",
    "sb_prune.deploy.whisper.rebuild_encoder",
]


def yaml_targets():
    found = set()
    for path in REPO.rglob("*.yaml"):
        if ".venv" in path.parts or "results" in path.parts:
            continue
        found.update(TARGET.findall(path.read_text()))
    return sorted(found)


def resolve(dotted):
    module, _, name = dotted.rpartition(".")
    return getattr(importlib.import_module(module), name)


def test_the_repository_names_yaml_targets():
    assert "sb_prune.convert" in yaml_targets()
    assert "sb_prune.hooks.LayerCut" in yaml_targets()


@pytest.mark.parametrize("dotted", yaml_targets() + ALIASES)
def test_a_yaml_target_resolves(dotted):
    assert resolve(dotted) is not None


def test_an_unknown_target_does_not_resolve():
    with pytest.raises((AttributeError, ModuleNotFoundError)):
        resolve("sb_prune.hooks.NoSuchHook")
