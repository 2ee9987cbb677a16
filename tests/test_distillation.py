"""Distillation from a frozen dense teacher while the student is pruned."""

import copy

import torch
from helpers import random_batch, tiny_conformer
from toy_brain import build_brain, fit

from sb_prune.hooks import CriterionPruning, Distillation
from sb_prune.training.distillation import normalised_distance
from sb_prune.training.schedules import OneShot


def distance(student, teacher):
    x, lens = random_batch()
    with torch.no_grad():
        return float(
            normalised_distance(
                student.eval().encode(x, lens), teacher.eval().encode(x, lens)
            )
        )


def test_the_student_moves_towards_the_teacher(tmp_path):
    """With only the distillation gradient (a head that learns nothing
    useful), training brings the student's hidden states to a teacher it
    started far from; without it they do not move closer."""
    teacher = tiny_conformer(layers=2, seed=1)
    results = {}
    for weight in (0.0, 1.0):
        student = tiny_conformer(layers=2, seed=0).train()
        before = distance(copy.deepcopy(student), teacher)
        hook = Distillation(
            copy.deepcopy(teacher), student="model", hidden_weight=weight
        )
        brain = build_brain(tmp_path / str(weight), student, [hook], 3)
        fit(brain, n_train=16)
        results[weight] = distance(brain.modules.model, teacher) / before
    assert results[1.0] < 0.7 * results[0.0]


def test_layers_keep_their_teacher_after_a_cut_and_a_resume(tmp_path):
    """A layer cut after epoch 1 keeps student layers paired with the
    teacher layers they started as; the pairing survives a resume."""
    teacher = tiny_conformer(layers=3, seed=0)

    def hooks():
        return [
            Distillation(copy.deepcopy(teacher), student="model"),
            CriterionPruning("magnitude", OneShot(0.34), groups=["layers"]),
        ]

    student = copy.deepcopy(teacher).train()
    layers = list(student.encoder.layers)
    first = build_brain(tmp_path, student, hooks(), 1)
    fit(first, n_train=16)
    # The cut keeps layer objects: their first positions are the pairing.
    kept = [layers.index(layer) for layer in student.encoder.layers]
    assert len(kept) == 2
    assert first.prune_hooks[0].state_dict() == {"pairing": {"encoder": kept}}
    resumed = build_brain(tmp_path, copy.deepcopy(teacher).train(), hooks(), 2)
    fit(resumed, n_train=16)
    assert resumed.prune_hooks[0].pairing == {"encoder": kept}
    assert len(resumed.modules.model.encoder.layers) == 2
