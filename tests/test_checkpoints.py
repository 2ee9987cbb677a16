"""StructureGuard: checkpoint selection follows the final structure."""

import json

import pytest
from speechbrain.utils.checkpoints import (
    Checkpointer,
    mark_as_loader,
    mark_as_saver,
    register_checkpoint_hooks,
)

from sb_prune.core.checkpoints import (
    STRUCTURE_KEY,
    StructureGuard,
    read_structure,
)

BIG = {"enc": {"type": "Stack", "layers": 4}}
SMALL = {"enc": {"type": "Stack", "layers": 2}}


@register_checkpoint_hooks
class Record:
    """Saves whatever structure record it is given (a stand-in)."""

    def __init__(self):
        self.record = None

    @mark_as_saver
    def save(self, path):
        with open(path, "w") as handle:
            json.dump(self.record, handle)

    @mark_as_loader
    def load(self, path, end_of_epoch):
        del end_of_epoch


def checkpointer_with(tmp_path, saves, low_rank=False):
    """A Checkpointer holding one checkpoint per ``(record, WER)``."""
    record = Record()
    checkpointer = Checkpointer(tmp_path, {STRUCTURE_KEY: record})
    guard = StructureGuard(checkpointer, lambda: low_rank)
    for structure, wer in saves:
        record.record = structure
        checkpointer.save_checkpoint(meta={"WER": wer})
    return checkpointer, guard, record


def records(checkpoints):
    return [(read_structure(c), c.meta["WER"]) for c in checkpoints]


def test_evaluation_only_sees_the_final_structure(tmp_path):
    saves = [(BIG, 1.0), (SMALL, 5.0), (SMALL, 6.0)]
    checkpointer, guard, _ = checkpointer_with(tmp_path, saves)
    assert len(checkpointer.find_checkpoints(min_key="WER")) == 3
    with guard.evaluating():
        found = checkpointer.find_checkpoints(min_key="WER")
        best = checkpointer.find_checkpoint(min_key="WER")
    assert records(found) == [(SMALL, 5.0), (SMALL, 6.0)]
    assert records([best]) == [(SMALL, 5.0)]
    assert not guard.active


def test_low_rank_factors_are_not_averaged(tmp_path):
    saves = [(SMALL, 5.0), (SMALL, 4.0)]
    checkpointer, guard, _ = checkpointer_with(tmp_path, saves, low_rank=True)
    with guard.evaluating():
        found = checkpointer.find_checkpoints(min_key="WER")
    assert records(found) == [(SMALL, 4.0)]


def test_better_larger_checkpoints_do_not_delete_every_final_one(tmp_path):
    saves = [(BIG, 1.0), (BIG, 2.0), (SMALL, 5.0)]
    checkpointer, _, record = checkpointer_with(tmp_path, saves)
    record.record = SMALL
    # importance_keys given: SpeechBrain appends to its default list.
    checkpointer.save_and_keep_only(
        meta={"WER": 6.0},
        min_keys=["WER"],
        num_to_keep=1,
        keep_recent=False,
        importance_keys=[],
    )
    kept = records(checkpointer.find_checkpoints(min_key="WER"))
    # The best of each: the best overall (large) and the best final one.
    assert kept == [(BIG, 1.0), (SMALL, 5.0)]


def test_the_guard_leaves_the_checkpointer_class_alone(tmp_path):
    find = Checkpointer.find_checkpoints
    delete = Checkpointer.delete_checkpoints
    checkpointer, _, _ = checkpointer_with(tmp_path, [(SMALL, 1.0)])
    assert "find_checkpoints" in vars(checkpointer)
    assert Checkpointer.find_checkpoints is find
    assert Checkpointer.delete_checkpoints is delete
    assert "find_checkpoints" not in vars(Checkpointer(tmp_path / "other"))
    with pytest.raises(AttributeError):
        StructureGuard(object(), lambda: False)
