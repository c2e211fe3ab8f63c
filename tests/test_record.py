"""The evaluation record: exact counts, per-image outcomes (their encoding checked by hand), old records read under
the current labels, and the one-image tolerance of the sanity flags at, below and above it."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from torch import nn

from dard.attacks import create_attack
from dard.config import config_identity, parse_config
from dard.errors import DardError
from dard.evaluation.labels import QUICK_SUITE
from dard.evaluation.outcomes import decode_outcomes, encode_outcomes
from dard.evaluation.record import AttackResult, Count, EvalRecord, check_counts
from dard.evaluation.sanity import sanity_flags
from dard.evaluation.suite import build_suite, evaluate
from dard.run_dir import EvalFile
from dard.run_dir.files import read_json_file


def test_outcomes_encoding_by_hand():
    bits = [True, False, True, True, False, False, False, False, True]
    # little bit order: byte 0 = 0b00001101 = 13, byte 1 = 0b00000001; base64 of b"\x0d\x01"
    assert encode_outcomes(bits) == "DQE="
    assert decode_outcomes("DQE=", 9).tolist() == bits
    assert encode_outcomes(torch.tensor(bits)) == "DQE="
    assert encode_outcomes([]) == "" and decode_outcomes("", 0).size == 0
    assert len(encode_outcomes(np.ones(10_000, dtype=bool))) == 1668  # 1,250 bytes


@pytest.mark.parametrize("text, n", [("DQE=", 17), ("DQE=", 8), ("DQ!=", 9), ("é", 1), ("DQM=", 9)])
def test_damaged_outcomes_are_one_error(text: str, n: int):
    # "DQM=" is b"\x0d\x03": image 9's bit, a padding bit of 9 images, is set (outcomes of 10 images read as 9)
    with pytest.raises(DardError) as e:
        decode_outcomes(text, n)
    assert "\n" not in str(e.value)


def test_a_non_bool_array_is_refused():
    with pytest.raises(ValueError):
        encode_outcomes(np.array([1, 0]))


class Threshold(nn.Module):
    """Class 1 when the mean pixel is above 0.5: a movable model, so attacks change some points and not others."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        m = 8.0 * (x.flatten(1).mean(dim=1) - 0.5)
        return torch.stack([-m, m], dim=1)


def test_the_record_holds_exact_counts_and_which_images():
    gen = torch.Generator().manual_seed(0)
    x = torch.rand((30, 1, 4, 4), generator=gen)
    y = (torch.arange(30) % 2).long()  # about half wrong clean
    rec = evaluate(Threshold(), x, y, build_suite(["fgsm", "pgd-ll", "tpgd-kl"], eps=0.05), progress=False)
    clean = rec.clean.outcome_array()
    assert clean.tolist() == (Threshold()(x).argmax(1) == y).tolist() and rec.clean.correct == clean.sum()
    for res in rec.attacks.values():
        robust = res.count.outcome_array()
        assert robust.sum() == res.correct and not (robust & ~clean).any()  # robust only where correct clean
    worst = rec.worst_case.outcome_array()
    assert worst.tolist() == np.logical_and.reduce([r.count.outcome_array() for r in rec.attacks.values()]).tolist()
    raw = json.dumps(rec.to_dict())
    assert '"accuracy"' not in raw  # percentages are derived, not stored
    assert EvalRecord.from_dict(json.loads(raw)) == rec


def test_an_old_record_reads_under_the_current_labels():
    old = {
        "model": {},
        "data": {"name": "cifar10", "split": "test", "n": 360},
        "threat_model": {"norm": "linf", "eps": 8 / 255},
        "clean": {"accuracy": 0.5, "correct": 180, "total": 360},
        "attacks": {
            label: {
                "config": {"name": label},
                "accuracy": 0.20999999344348907,
                "correct": 75,
                "total": 360,
                "max_perturbation": 0.03,
                "seconds": 1.0,
                "warnings": [],
            }
            for label in ("tpgd", "cw")
        },  # fmt: skip
        "worst_case": {"accuracy": 0.2, "correct": 72, "total": 360},
        "flags": [],
        "seed": 0,
        "environment": {},
        "seconds": 1.0,
        "eps_sweep": {"attack": "pgd20", "accuracy": {"0.031373": 0.25, "0.062745": 0.1}},
    }
    rec = EvalFile.from_dict(old)
    assert list(rec.attacks) == ["pgd-ll", "cw-linf"] and rec.attacks["pgd-ll"].accuracy == 75 / 360
    assert rec.clean == Count(180, 360) and rec.first_n == 360 and rec.clean.outcome_array() is None
    # a float-only sweep becomes counts of the record's 360 images
    assert rec.eps_sweep.correct == {"0.031373": 90, "0.062745": 36} and rec.eps_sweep.total == 360
    # floats that are no count of the images stay as they are
    inexact = EvalFile.from_dict({**old, "eps_sweep": {"attack": "pgd20", "accuracy": {"0.031373": 1 / 7}}})
    assert inexact.eps_sweep.correct is None and inexact.eps_sweep.accuracies() == {"0.031373": 1 / 7}


def test_config_aliases_give_the_same_identity():
    old = parse_config({"eval": {"attacks": ["fgsm", "pgd20", "tpgd", "bim", "cw", "dpgd", "pgd-large"]}})
    assert old.eval.attacks == QUICK_SUITE == ["fgsm", "pgd20", "pgd-ll", "bim", "cw-linf", "dpgd", "pgd-large"]
    assert config_identity({"eval": {"attacks": ["tpgd", "cw"]}}) == config_identity(
        {"eval": {"attacks": ["pgd-ll", "cw-linf"]}}
    )
    assert list(build_suite(["tpgd", "cw"], eps=0.1)) == ["pgd-ll", "cw-linf"]


def _with(fgsm: int, pgd: int, n: int = 360, *, clean: int | None = None, corrected: int = 0) -> EvalRecord:
    def res(name: str, correct: int, corrected: int = 0) -> AttackResult:
        return AttackResult({"name": name, "eps": 0.03}, correct, n, 0.03, 1.0, corrected=corrected)

    clean = 180 if clean is None else clean
    attacks = {"fgsm": res("fgsm", fgsm), "pgd20": res("pgd", pgd, corrected)}
    return EvalRecord({}, {"n": n}, {}, Count(clean, n), attacks, None, [], 0, {}, 1.0)


@pytest.mark.parametrize("pgd, flagged", [(89, False), (90, False), (91, True), (92, True)])
def test_the_one_image_tolerance_holds_exactly(pgd: int, flagged: bool):
    flags = sanity_flags(_with(fgsm=89, pgd=pgd))
    assert bool(flags) == flagged, flags
    if flagged:
        assert flags == [
            f"pgd20 ({pgd / 360:.2%}, {pgd}/360) is weaker than FGSM (24.72%, 89/360) by more than one image: "
            "possible gradient masking"
        ]


@pytest.mark.parametrize("corrected, flagged", [(0, False), (2, False), (3, True)])
def test_an_attack_repairing_points_is_flagged_beyond_one_image(corrected: int, flagged: bool):
    # 100 robust + corrected against 101 clean-correct: the raw count exceeds clean by corrected - 1
    flags = sanity_flags(_with(fgsm=100, pgd=100, clean=101, corrected=corrected))
    assert any("a broken attack" in f for f in flags) == flagged, flags


def test_tpgd_kl_is_the_kl_attack_against_the_models_own_clean_prediction():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Flatten(), nn.Linear(16, 3))
    x = torch.rand((6, 1, 4, 4))
    attack = build_suite(["tpgd-kl"], eps=0.1, seed=3)["tpgd-kl"]
    got = attack(model, x, torch.zeros(6, dtype=torch.long))
    assert torch.equal(got, attack(model, x, torch.ones(6, dtype=torch.long)))  # untargeted: labels unused
    probs = torch.softmax(model(x), dim=1).detach()
    want = create_attack("kl_pgd", eps=0.1, step_size=0.025, steps=10, seed=3)(model, x, probs)
    assert torch.equal(got, want) and (got - x).abs().max() > 0.05


def _suite_record() -> EvalRecord:
    """A real record (the suite's) with images of every kind: wrong clean, fooled by one attack, surviving all."""
    gen = torch.Generator().manual_seed(0)
    x, y = torch.rand((40, 1, 4, 4), generator=gen), (torch.arange(40) % 2).long()
    return evaluate(Threshold(), x, y, build_suite(["fgsm", "pgd20", "pgd-large"], eps=0.05), progress=False)


def _set(count: Count | AttackResult, bits: np.ndarray) -> None:
    count.correct, count.outcomes = int(bits.sum()), encode_outcomes(bits)


def _marks_a_fooled_image(rec: EvalRecord) -> None:  # correct in the worst case although fgsm fooled it (count kept)
    worst, fgsm = rec.worst_case.outcome_array(), rec.attacks["fgsm"].count.outcome_array()
    worst[int(worst.argmax())] = False
    worst[int((rec.clean.outcome_array() & ~fgsm).argmax())] = True
    _set(rec.worst_case, worst)


def _misses_a_survivor(rec: EvalRecord) -> None:  # wrong in the worst case although correct under every attack
    worst = rec.worst_case.outcome_array()
    worst[int(worst.argmax())] = False
    _set(rec.worst_case, worst)


def _over_the_sanity_attack(rec: EvalRecord) -> None:  # the worst case taken over pgd-large too (none survive it)
    _set(rec.worst_case, rec.attacks["pgd-large"].count.outcome_array())


def _robust_but_wrong_clean(rec: EvalRecord) -> None:
    pgd = rec.attacks["pgd20"].count.outcome_array()
    pgd[int((~rec.clean.outcome_array()).argmax())] = True
    _set(rec.attacks["pgd20"], pgd)


def _counts_above_an_attack(rec: EvalRecord) -> None:  # an older record without outcomes: its counts still say
    for c in (rec.clean, rec.worst_case, *rec.attacks.values()):
        c.outcomes = None
    rec.worst_case.correct = rec.attacks["fgsm"].correct + 1


def _no_attack_to_be_worst_over(rec: EvalRecord) -> None:
    rec.attacks = {"pgd-large": rec.attacks["pgd-large"]}


@pytest.mark.parametrize(
    "damage, needle",
    [
        (_marks_a_fooled_image, "worst_case marks image .* correct, but fgsm marks it wrong"),
        (_misses_a_survivor, "worst_case marks image .* wrong, but it is correct clean and under every attack .*"
         r"\(fgsm, pgd20\)"),
        (_over_the_sanity_attack, "worst_case marks image .* wrong, but it is correct clean"),
        (_robust_but_wrong_clean, "pgd20 marks image .* correct, but clean marks it wrong"),
        (_counts_above_an_attack, "worst_case counts .* more than fgsm"),
        (_no_attack_to_be_worst_over, "worst_case is recorded but the record has no attack"),
    ],
)  # fmt: skip
def test_the_worst_case_is_what_its_attacks_outcomes_say(damage, needle, tmp_path):
    # the worst case's outcomes were checked against its own count only: one marking an image fgsm fooled (or
    # missing one that survived every attack) was printed and paired image by image as if measured
    rec = _suite_record()
    counts = {k: c.correct for k, c in rec.counts().items()}
    assert 0 < counts["worst_case"] and counts["fgsm"] < counts["clean"] < 40  # images of every kind
    check_counts(rec, "best.json")
    damage(rec)
    with pytest.raises(DardError, match=f"best.json: {needle}"):
        check_counts(rec, "best.json")
    path = tmp_path / "best.json"
    path.write_text(json.dumps(EvalFile.of(rec).to_dict()))
    with pytest.raises(DardError, match=needle):
        read_json_file(path, EvalFile, "evaluation record")  # where records are read


def test_the_worst_case_is_checked_on_its_own_images_only():
    # the AutoAttack subset is a record of its own images (its worst case over pgd20 and autoattack); an attack of
    # another image count in an older record is left out of the worst case's comparison, not refused
    rec = _suite_record()
    subset = _suite_record()
    for c in (subset.clean, subset.worst_case, *subset.attacks.values()):
        c.total, c.outcomes = 20, None
    subset.data = {"n": 20}
    check_counts(EvalFile.of(rec, autoattack_subset=subset), "best.json")
    rec.attacks["fgsm"].total, rec.attacks["fgsm"].outcomes, rec.data = 400, None, {}
    check_counts(rec, "best.json")


def _subset_record(rec: EvalRecord, k: int = 20) -> EvalRecord:
    """The record of the first ``k`` images of ``_suite_record``'s, as the final evaluation makes an AutoAttack
    subset: its own attack, the main pass's clean outcomes."""
    gen = torch.Generator().manual_seed(0)
    x, y = torch.rand((40, 1, 4, 4), generator=gen), (torch.arange(40) % 2).long()
    clean = torch.from_numpy(rec.clean.outcome_array()[:k])
    return evaluate(
        Threshold(), x[:k], y[:k], build_suite(["pgd20"], eps=0.05), progress=False,
        data_info={**rec.data, "n": k, "first_n": k}, clean_outcomes=clean,
    )  # fmt: skip


def _flips_a_clean_image(rec: EvalRecord, sub: EvalRecord) -> None:  # one wrong image marked correct in the subset
    bits = sub.clean.outcome_array()
    bits[int((~bits).argmax())] = True
    _set(sub.clean, bits)


def _more_images_than_the_record(rec: EvalRecord, sub: EvalRecord) -> None:
    sub.data = {**sub.data, "first_n": 41}
    for c in (sub.clean, sub.worst_case, *sub.attacks.values()):
        c.total, c.outcomes = 41, None


def _other_data(rec: EvalRecord, sub: EvalRecord) -> None:
    sub.data = {**sub.data, "name": "cifar100"}


@pytest.mark.parametrize(
    "damage, needle",
    [
        (_flips_a_clean_image, r"autoattack_subset.clean marks image \d+ correct, but the record's clean marks it"),
        (_more_images_than_the_record, "autoattack_subset.data counts 41 images, more than the record's 40"),
        (_other_data, "autoattack_subset.data differs from the record's in name"),
    ],
)  # fmt: skip
def test_the_autoattack_subset_is_the_records_first_images(damage, needle, tmp_path):
    # the subset's numbers stand beside the record's in every report: a damaged or hand-made subset of other
    # images (or other clean outcomes on them) was read as the same model's on the same images
    rec = _suite_record()
    rec.data = {"name": "digits", "split": "test", "n": 40, "first_n": 40}
    sub = _subset_record(rec)
    assert 0 < sub.clean.correct < 20
    EvalFile.of(rec, autoattack_subset=sub).check_values("best.json")
    damage(rec, sub)
    with pytest.raises(DardError, match=f"best.json: {needle}"):
        EvalFile.of(rec, autoattack_subset=sub).check_values("best.json")
    path = tmp_path / "best.json"
    path.write_text(json.dumps(EvalFile.of(rec, autoattack_subset=sub).to_dict()))
    with pytest.raises(DardError, match=needle):
        read_json_file(path, EvalFile, "evaluation record")
