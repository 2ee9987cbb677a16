"""Outputs are complete or absent: a crash while writing leaves nothing that
loads (checkpoints, exported and converted folders)."""

import pytest
import torch
from helpers import tiny_whisper, write_model_bin
from speechbrain.nnet.attention import PositionalwiseFeedForward
from test_ctranslate2 import ct2_variables
from test_faster_whisper import dense_folder
from toy_brain import build_brain

from sb_prune.core import saved_model
from sb_prune.core.atomic import complete_or_absent
from sb_prune.core.saved_model import export_model, load_exported
from sb_prune.core.surgery import apply_plan
from sb_prune.families.whisper import ctranslate2 as ct2_module
from sb_prune.families.whisper import faster_whisper, folders
from sb_prune.families.whisper.folders import (
    export_whisper,
    load_exported_whisper,
)
from sb_prune.importers.ctranslate2 import (
    convert_whisper,
    hugging_face_whisper,
)


class Crash(Exception):
    """The simulated kill."""


def crash(*args, **kwargs):
    raise Crash


def visible(folder):
    """Names in ``folder`` that a reader would look at (not hidden)."""
    return sorted(p.name for p in folder.iterdir() if p.name[0] != ".")


def test_a_crash_keeps_the_previous_folder_or_none(tmp_path):
    out = tmp_path / "out"
    with pytest.raises(Crash), complete_or_absent(out) as scratch:
        (scratch / "model.ckpt").write_text("half")
        crash()
    assert visible(tmp_path) == [] and list(tmp_path.iterdir()) == []
    with complete_or_absent(out) as scratch:
        (scratch / "model.ckpt").write_text("first")
    with pytest.raises(Crash), complete_or_absent(out) as scratch:
        (scratch / "model.ckpt").write_text("second, half")
        crash()
    assert (out / "model.ckpt").read_text() == "first"
    with complete_or_absent(out) as scratch:  # replaced whole
        (scratch / "other.ckpt").write_text("second")
    assert visible(out) == ["other.ckpt"]
    with complete_or_absent(out, replace=False) as scratch:
        (scratch / "model.ckpt").write_text("a cache filled twice")
    assert visible(out) == ["other.ckpt"]
    assert list(tmp_path.iterdir()) == [out]


def small_ffn():
    ffn = PositionalwiseFeedForward(d_ffn=8, input_size=4)
    apply_plan(ffn, {"": {"hidden": torch.tensor([1, 5])}})
    return ffn


def test_exported_model_killed_while_writing_does_not_load(
    tmp_path, monkeypatch
):
    out = tmp_path / "exported"
    monkeypatch.setattr(saved_model.json, "dump", crash)
    with pytest.raises(Crash):
        export_model(small_ffn(), out)
    assert visible(tmp_path) == []
    fresh = PositionalwiseFeedForward(d_ffn=8, input_size=4)
    with pytest.raises(FileNotFoundError, match="exported"):
        load_exported(fresh, out)
    monkeypatch.undo()
    export_model(small_ffn(), out)
    assert load_exported(fresh, out).ffn[0].out_features == 2


def ct2_folder(folder):
    """A CTranslate2 folder of the tiny Whisper with a tokenizer."""
    model = tiny_whisper()
    dense_folder(model, folder)
    write_model_bin(folder / "model.bin", ct2_variables(model))
    (folder / "config.json").write_text("{}")
    return folder


@pytest.mark.parametrize("step", ["_write_tokenizer", "whisper_asr_hparams"])
def test_conversion_killed_midway_is_not_taken_for_a_cache(
    tmp_path, monkeypatch, step
):
    source = ct2_folder(tmp_path / "ct2")
    cache = tmp_path / "cache"
    cache.mkdir()
    monkeypatch.setattr(ct2_module, step, crash)
    with pytest.raises(Crash):
        convert_whisper(source, tmp_path / "hf")
    with pytest.raises(Crash):
        hugging_face_whisper(source, cache)
    assert visible(tmp_path) == ["cache", "ct2"] and visible(cache) == []
    monkeypatch.undo()
    folder = hugging_face_whisper(source, cache)  # converts again
    assert load_exported_whisper(folder).config.d_model == 16


def test_whisper_export_killed_midway_leaves_the_last_complete_one(
    tmp_path, monkeypatch
):
    model = tiny_whisper()
    dense = dense_folder(model, tmp_path / "dense")
    out = tmp_path / "exported"
    export_whisper(model, dense, out)
    before = load_exported_whisper(out).state_dict()
    with torch.no_grad():
        model.model.encoder.layers[0].fc1.weight.add_(1.0)
    monkeypatch.setattr(folders, "whisper_asr_hparams", crash)
    with pytest.raises(Crash):
        export_whisper(model, dense, tmp_path / "new")
    with pytest.raises(Crash):
        export_whisper(model, dense, out)
    assert visible(tmp_path) == ["dense", "exported"]
    after = load_exported_whisper(out).state_dict()
    assert all(torch.equal(before[key], after[key]) for key in before)


def test_ctranslate2_export_killed_midway_leaves_no_folder(
    tmp_path, monkeypatch
):
    pytest.importorskip("ctranslate2")
    model = tiny_whisper()
    dense = dense_folder(model, tmp_path / "dense")

    class HalfWay:
        def convert(self, out, **kwargs):
            (tmp_path / out / "model.bin").write_bytes(b"half")
            crash()

    monkeypatch.setattr(faster_whisper, "_converter", lambda *a: HalfWay())
    with pytest.raises(Crash):
        faster_whisper.export_ctranslate2(dense, tmp_path / "ct2")
    assert visible(tmp_path) == ["dense"]


def test_checkpoint_killed_while_saving_is_never_recovered(tmp_path):
    from helpers import tiny_conformer

    brain = build_brain(tmp_path, tiny_conformer(), [], epochs=1)
    checkpointer = brain.checkpointer
    first = checkpointer.save_checkpoint(meta={"loss": 1.0})
    checkpointer.custom_save_hooks["model"] = crash
    with pytest.raises(Crash):
        checkpointer.save_checkpoint(meta={"loss": 0.5})
    found = checkpointer.list_checkpoints()
    assert [c.path for c in found] == [first.path]
    assert checkpointer.recover_if_possible().path == first.path
