"""The report over finished run folders: grouping by seed, mean ± std, results.json, plots, flags, errors."""

from __future__ import annotations

import json
import statistics
from pathlib import Path

import pytest

from dard.errors import DardError
from dard.evaluation.report import build_report, load_run

EPS = 8 / 255
ATTACKS = ["fgsm", "pgd20", "tpgd", "bim", "cw", "dpgd"]


def _acc(acc: float, n: int) -> dict:
    return {"accuracy": acc, "correct": round(acc * n), "total": n}


def _record(
    which: str,
    epoch: int,
    clean: float,
    robust: dict[str, float],
    worst: float,
    aa: float | None,
    flags: list[str],
    sweep: dict[float, float] | None,
    n: int = 100,
    seed: int = 0,
) -> dict:
    attacks = {
        label: {
            "config": {"name": label, "eps": EPS},
            **_acc(acc, n),
            "max_perturbation": EPS,
            "seconds": 0.1,
            "warnings": [],
        }
        for label, acc in robust.items()
    }
    rec = {
        "model": {"arch": "resnet18", "num_classes": 10, "checkpoint": which, "epoch": epoch},
        "data": {"name": "cifar10", "split": "test", "n": n},
        "threat_model": {"norm": "linf", "eps": EPS},
        "clean": _acc(clean, n),
        "attacks": attacks,
        "worst_case": _acc(worst, n),
        "flags": flags,
        "seed": seed,
        "environment": {"torch": "x"},
        "seconds": 1.0,
    }
    if aa is not None:
        k = 20
        rec["autoattack_subset"] = {
            **{key: rec[key] for key in ("model", "threat_model", "seed", "environment", "seconds")},
            "data": {"name": "cifar10", "split": "test", "n": k},
            "clean": _acc(clean, k),
            "attacks": {
                "autoattack": {
                    "config": {"name": "autoattack"},
                    **_acc(aa, k),
                    "max_perturbation": EPS,
                    "seconds": 1.0,
                    "warnings": [],
                }
            },
            "worst_case": _acc(aa, k),
            "flags": [],
        }
    if sweep is not None:
        rec["eps_sweep"] = {"attack": "pgd20", "accuracy": {f"{e:.6f}": a for e, a in sweep.items()}}
    return rec


def _make_run(
    root: Path,
    name: str,
    seed: int,
    method: str,
    clean: float,
    pgd: float,
    *,
    teacher: str | None,
    aa: float,
    flags: list[str] = (),
    last_clean: float = 0.5,
    sweep: bool = True,
    train_seconds: float | None = None,
    snapshot_seconds: float | None = None,
) -> Path:
    d = root / name
    (d / "eval").mkdir(parents=True)
    (d / "config.yaml").write_text(
        f"name: {name}\nseed: {seed}\nmethod:\n  name: {method}\nmodel:\n  arch: resnet18\neps: {EPS}\n"
    )
    (d / "run.json").write_text(
        json.dumps(
            {
                "name": name,
                "seed": seed,
                "method": {"name": method, "beta": 6.0},
                "student": {"arch": "resnet18", "num_classes": 10, "in_channels": 3, "mean": None, "std": None},
                "teacher": None if teacher is None else {"source": "t.safetensors", "arch": teacher, "num_classes": 10},
                "environment": {},
                "data": {"name": "cifar10", "train": 900, "val": 100, "test": 100},
            }
        )
    )
    rows = [
        {
            "epoch": e,
            "lr": 0.1,
            "train_loss": 1.0,
            "train_acc": 0.5,
            "images_per_s": 100.0,
            "val_clean": clean - 0.1 + 0.05 * e,
            "val_robust": pgd - 0.1 + 0.05 * e,
        }
        for e in (1, 2)
    ]
    rows.append({"epoch": 3, "lr": 0.01, "train_loss": 0.9, "train_acc": 0.6, "images_per_s": 100.0})
    if train_seconds is not None:  # cumulative, as the training loop writes it
        for i, r in enumerate(rows, start=1):
            r["train_seconds"] = train_seconds * i / len(rows)
    if snapshot_seconds is not None:  # an older run: training time only in its final resume snapshot
        (d / "state-000000042").mkdir()
        (d / "state-000000042" / "progress.json").write_text(json.dumps({"train_seconds": snapshot_seconds}))
        (d / "resume.json").write_text(json.dumps({"snapshot": "state-000000042"}))
    (d / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    robust = {label: pgd + 0.01 * i for i, label in enumerate(ATTACKS)}
    robust["pgd20"] = pgd
    sw = {0.0: clean, EPS: pgd, 16 / 255: pgd / 2} if sweep else None
    best = _record("best", 2, clean, robust, pgd - 0.05, aa, list(flags), sw, seed=seed)
    last = _record(
        "last", 3, last_clean, {k: v - 0.1 for k, v in robust.items()}, pgd - 0.15, aa - 0.1, [], sw, seed=seed
    )
    (d / "eval" / "best.json").write_text(json.dumps(best))
    (d / "eval" / "last.json").write_text(json.dumps(last))
    return d


def _row(md: str, name: str) -> list[str]:
    for line in md.splitlines():
        if line.startswith(f"| {name} |"):
            return [c.strip() for c in line.strip().strip("|").split("|")]
    raise AssertionError(f"no row for {name} in\n{md}")


@pytest.fixture
def runs(tmp_path: Path) -> list[Path]:
    return [
        _make_run(
            tmp_path,
            "dard-s0",
            0,
            "dard",
            0.80,
            0.50,
            teacher="wrn34_10",
            aa=0.45,
            flags=["cw (40.00%) is weaker than FGSM (50.00%): possible gradient masking"],
            last_clean=0.70,
            train_seconds=120.0,
        ),
        _make_run(
            tmp_path,
            "dard-s1",
            1,
            "dard",
            0.90,
            0.54,
            teacher="wrn34_10",
            aa=0.50,
            last_clean=0.74,
            train_seconds=180.0,
        ),
        _make_run(
            tmp_path,
            "sat-s0",
            0,
            "sat",
            0.85,
            0.40,
            teacher=None,
            aa=0.35,
            last_clean=0.80,
            sweep=False,
            snapshot_seconds=60.0,
        ),
    ]


def test_report_table_results_and_plots(runs: list[Path], tmp_path: Path) -> None:
    out = tmp_path / "report"
    md_path = build_report(runs, out, title="my report")
    assert md_path == out / "report.md"
    md = md_path.read_text(encoding="utf-8")
    assert md.startswith("# my report")

    header = next(line for line in md.splitlines() if line.startswith("| Run |"))
    cols = [c.strip() for c in header.strip("|").split("|")]
    assert cols == [
        "Run",
        "Method",
        "Student",
        "Teacher",
        "Seeds (n)",
        "Clean",
        *ATTACKS,
        "AutoAttack (subset 20)",
        "Worst-case",
    ]

    dard = dict(zip(cols, _row(md, "dard")))
    assert dard["Method"] == "dard" and dard["Student"] == "resnet18" and dard["Teacher"] == "wrn34_10"
    assert dard["Seeds (n)"] == "2"
    assert dard["Clean"] == "85.00 ± 7.07"  # mean(80, 90), sample std sqrt(50)
    assert dard["pgd20"] == "52.00 ± 2.83"  # mean(50, 54), sample std sqrt(8)
    assert dard["AutoAttack (subset 20)"] == "47.50 ± 3.54"
    assert dard["Worst-case"] == "47.00 ± 2.83"
    assert dard["fgsm"] == f"{52.0:.2f} ± {statistics.stdev([50, 54]):.2f}"

    sat = dict(zip(cols, _row(md, "sat")))
    assert sat["Teacher"] == "—" and sat["Seeds (n)"] == "1"
    assert sat["Clean"] == "85.00" and sat["pgd20"] == "40.00" and sat["AutoAttack (subset 20)"] == "35.00"
    assert "±" not in " ".join(sat.values())

    # best-vs-last table: the last checkpoint's numbers
    assert "## `last` checkpoint" in md
    last_part = md.split("## `last` checkpoint", 1)[1]
    last_header = next(line for line in last_part.splitlines() if line.startswith("| Run |"))
    last_cols = [c.strip() for c in last_header.strip("|").split("|")]
    assert last_cols[-3:] == ["Clean", "pgd20", "AutoAttack (subset 20)"]
    dard_last = dict(zip(last_cols, _row(last_part, "dard")))
    assert dard_last["Clean"] == "72.00 ± 2.83"
    assert dard_last["pgd20"] == "42.00 ± 2.83"
    assert dard_last["Epoch (best / last)"] == "2, 2 / 3, 3"
    assert dict(zip(last_cols, _row(last_part, "sat")))["Clean"] == "80.00"

    # training cost: cumulative train_seconds of the last metrics row (dard) or the resume snapshot (sat)
    cost_part = md.split("## Training cost", 1)[1]
    cost_header = next(line for line in cost_part.splitlines() if line.startswith("| Run |"))
    cost_cols = [c.strip() for c in cost_header.strip("|").split("|")]
    dard_cost = dict(zip(cost_cols, _row(cost_part, "dard")))
    assert dard_cost["Train time (min)"] == "2.5 ± 0.7"  # 2 and 3 min, sample std sqrt(0.5)
    assert dard_cost["Train images/s"] == "19 ± 5"  # 900 images x 3 epochs / 120 s and / 180 s: 22.5, 15
    assert dard_cost["Seeds (n)"] == "2"
    sat_cost = dict(zip(cost_cols, _row(cost_part, "sat")))
    assert sat_cost["Train time (min)"] == "1.0" and sat_cost["Train images/s"] == "45"

    # flags, setup notes, plot links
    assert "gradient masking" in md and "dard-s0 (seed 0, best)" in md
    assert "validation split" in md
    assert "8/255" in md and "linf" in md and "cifar10" in md and "n = 100" in md
    assert "(curves.png)" in md and "(eps_curve.png)" in md

    res = json.loads((out / "results.json").read_text())
    by_name = {r["name"]: r for r in res["runs"]}
    assert set(by_name) == {"dard-s0", "dard-s1", "sat-s0"}
    assert by_name["dard-s1"]["seed"] == 1 and by_name["dard-s1"]["method"]["name"] == "dard"
    assert by_name["dard-s0"]["best"]["clean"] == pytest.approx(0.80)
    assert by_name["dard-s0"]["last"]["clean"] == pytest.approx(0.70)
    assert by_name["sat-s0"]["best"]["pgd20"] == pytest.approx(0.40)
    assert by_name["sat-s0"]["best"]["autoattack_subset"] == pytest.approx(0.35)
    groups = {g["name"]: g for g in res["groups"]}
    assert groups["dard"]["n"] == 2 and groups["dard"]["seeds"] == [0, 1]
    assert groups["dard"]["best"]["clean"]["mean"] == pytest.approx(0.85)
    assert groups["dard"]["best"]["clean"]["std"] == pytest.approx(statistics.stdev([0.8, 0.9]))
    assert groups["dard"]["best"]["clean"]["n"] == 2
    assert groups["sat"]["best"]["clean"]["std"] is None
    assert groups["sat"]["last"]["pgd20"]["mean"] == pytest.approx(0.30)
    assert groups["dard"]["train_minutes"]["values"] == pytest.approx([2.0, 3.0])
    assert by_name["sat-s0"]["train_seconds"] == pytest.approx(60.0)
    assert by_name["dard-s1"]["train_images_per_s"] == pytest.approx(15.0)

    for name in ("curves.png", "eps_curve.png"):
        data = (out / name).read_bytes()
        assert data.startswith(b"\x89PNG\r\n\x1a\n") and len(data) > 1000
    assert not [p for p in out.iterdir() if p.name.startswith(".")]  # no temp files left behind


def test_no_flags_and_no_sweep(tmp_path: Path) -> None:
    run = _make_run(tmp_path, "sat_seed3", 3, "sat", 0.85, 0.40, teacher=None, aa=0.35, sweep=False)
    md = build_report([run], tmp_path / "r").read_text()
    assert "## Flags\n\nnone" in md
    assert "## Training cost" not in md  # no training time recorded: no cost table of dashes
    assert _row(md, "sat")[5] == "85.00"
    assert not (tmp_path / "r" / "eps_curve.png").exists()
    assert (tmp_path / "r" / "curves.png").read_bytes().startswith(b"\x89PNG")


def test_load_run_and_errors(runs: list[Path], tmp_path: Path) -> None:
    run = load_run(runs[0])
    assert run["name"] == "dard-s0" and run["seed"] == 0 and run["teacher"]["arch"] == "wrn34_10"
    assert set(run["evals"]) == {"best", "last"} and len(run["metrics"]) == 3

    bare = tmp_path / "unfinished"
    bare.mkdir()
    (bare / "run.json").write_text("{}")
    assert run["train_seconds"] == pytest.approx(120.0)
    plain = _make_run(tmp_path, "plain-s0", 0, "sat", 0.8, 0.4, teacher=None, aa=0.3)
    assert load_run(plain)["train_seconds"] is None  # recorded neither in metrics.jsonl nor in a snapshot
    (plain / "resume.json").write_text(json.dumps({"snapshot": "state-gone"}))
    assert load_run(plain)["train_seconds"] is None  # a dangling pointer is "not recorded", not a crash
    with pytest.raises(DardError, match="not a finished dard run .no eval/best.json"):
        load_run(bare)
    with pytest.raises(DardError, match="not a finished dard run"):
        build_report([runs[0], bare], tmp_path / "r")
    with pytest.raises(DardError, match="not a finished dard run"):
        load_run(tmp_path / "does-not-exist")
    with pytest.raises(DardError):
        build_report([], tmp_path / "r")
