"""The method table names every method's parts, and they are all there."""

import re
from pathlib import Path

import pytest
import torch

import sb_prune.hooks
import sb_prune.nn
from sb_prune.core.names import resolve
from sb_prune.methods.table import METHODS, compressions
from sb_prune.training.hooks import PruningHook

ROOT = Path(__file__).resolve().parents[1]
RECIPES = ROOT / "recipes" / "LibriSpeech"
#: Where users and recipes write sb_prune.hooks.X and sb_prune.nn.X.
NAMING_FILES = [
    *sorted(ROOT.glob("hparams/*.yaml")),
    *sorted(RECIPES.glob("*/hparams/*.yaml")),
    *sorted(RECIPES.glob("*/README.md")),
    ROOT / "README.md",
]


@pytest.mark.parametrize("name", sorted(METHODS))
def test_every_named_part_exists(name):
    method = METHODS[name]
    if method.convert:
        assert callable(resolve(method.converter))
        fragment = (ROOT / "hparams" / method.fragment).read_text()
        assert f"    {method.convert}:" in fragment
    for path in method.hooks:
        assert issubclass(resolve(path), PruningHook)
    for path in method.modules:
        assert issubclass(resolve(path), torch.nn.Module)
    assert (ROOT / "hparams" / method.fragment).is_file()
    for recipe in method.recipes:
        assert (RECIPES / recipe).is_file(), recipe
    for compression in method.compress.values():
        assert (RECIPES / "ASR" / "hparams" / compression.recipe).is_file()


def test_every_asr_method_recipe_is_a_compress_method():
    named = {c.recipe for c in compressions().values()}
    variants = {
        p.name
        for p in (RECIPES / "ASR" / "hparams").glob("conformer_ctc_*.yaml")
    }
    # LM rescoring re-tests a dense run: not a compression.
    assert variants - named == {"conformer_ctc_lm_rescoring.yaml"}


@pytest.mark.parametrize(
    "namespace", [sb_prune.hooks, sb_prune.nn], ids=lambda n: n.__name__
)
def test_every_class_the_docs_and_yaml_files_name_is_exported(namespace):
    pattern = re.compile(re.escape(namespace.__name__) + r"\.(\w+)")
    used = {
        match
        for path in NAMING_FILES
        for match in pattern.findall(path.read_text())
    }
    assert used and used <= set(namespace.__all__)
    for name in namespace.__all__:
        assert getattr(namespace, name).__name__ == name
