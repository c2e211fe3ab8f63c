"""The teachers committed in teachers/ (issue 19, item 4): each is a run folder dard reads as any other, holds the
evaluation record its README row quotes, and its weights still give that record's clean outcomes image for image."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from tests.conftest import REPO

from dard.checkpoint import load_checkpoint, weights_digest
from dard.data import load_dataset
from dard.run_dir import RunDir

TEACHERS = REPO / "teachers"
SMALL_TEACHER = "cifar10-resnet20-sat-s0"  # the `small` scale's teacher, trained by the CPU campaign
CHECKED = 500  # test images run again: the first ones, exact pixels in every copy (the development copy's README)


def test_the_small_scale_teacher_is_committed_with_its_whole_evaluation():
    run = RunDir(TEACHERS / SMALL_TEACHER)
    run.check_files()
    record, info = run.read_eval("best"), run.read_info()
    assert info.name == SMALL_TEACHER and info.method["name"] == "sat" and info.student["arch"] == "resnet20"
    assert record.clean.total == 10_000 and record.first_n == 10_000  # the suite on all the test images
    assert {"pgd20", "autoattack"} <= set(record.attacks) | set(record.autoattack_subset.attacks)
    assert record.autoattack_subset.clean.total == 1000
    assert record.model["weights_digest"] == weights_digest(run.weights("best"))
    # the floor for a teacher worth distilling from: 55% clean, 28% AutoAttack
    assert record.clean.accuracy >= 0.55 and record.autoattack_subset.attacks["autoattack"].accuracy >= 0.28


@pytest.mark.parametrize("name", sorted(p.name for p in TEACHERS.iterdir() if p.is_dir()))
def test_a_committed_teacher_gives_its_recorded_clean_outcomes(name, cifar10):
    model, meta = load_checkpoint(TEACHERS / name, arch=None)
    record = RunDir(TEACHERS / name).read_eval("best")
    assert meta["epoch"] == record.model["epoch"]
    bundle = load_dataset(record.data["name"], data_dir=cifar10.root)
    x = bundle.test.x[:CHECKED].float().div(255)
    with torch.no_grad():
        correct = (model(x).argmax(1) == bundle.test.y[:CHECKED]).numpy()
    if cifar10.real:  # the synthetic stand-in has other images: loading and running is all it can check
        np.testing.assert_array_equal(correct, record.clean.outcome_array()[:CHECKED])
