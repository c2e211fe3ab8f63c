"""benchmarks/bench.py keeps going and keeps what it measured: a failing variant is recorded, the budget is obeyed.

Timings themselves are never asserted."""

from __future__ import annotations

import json
import sys

import pytest
from tests.conftest import REPO

sys.path.insert(0, str(REPO / "benchmarks"))
import bench  # noqa: E402
import bench_loops  # noqa: E402

# The smoke preset with the MLP as student and teacher: what these tests check is the bookkeeping, and each
# bench.py process spends about a tenth of its CPU on the smoke's ResNet-8s (the rest is PyTorch's start-up)
MODELS = ["--student", "mlp", "--teacher", "mlp"]
TINY = ["--smoke", *MODELS, "--no-reference", "--aa-n", "0", "--eval-n", "4", "--threads", "1"]


def _result(out) -> dict:
    (path,) = out.glob("*.json")
    return json.loads(path.read_text())


@pytest.mark.slow
def test_a_failing_variant_is_recorded_and_the_rest_is_measured(tmp_path, monkeypatch):
    real = bench_loops.dard_loop

    def flaky(variant, *args):
        if variant == "bf16":
            raise RuntimeError("no kernel for this\nsecond line")
        return real(variant, *args)

    monkeypatch.setattr(bench_loops, "dard_loop", flaky)
    assert bench.main([*TINY, "--variants", "plain,bf16", "--out", str(tmp_path)]) == 0
    r = _result(tmp_path)
    assert r["complete"] and r["train"]["bf16@8"]["status"] == "failed"
    assert r["train"]["bf16@8"]["error"] == "RuntimeError: no kernel for this"
    plain = r["train"]["plain@8"]
    assert plain["status"] == "ok" and plain["images_per_s"]["n"] == 2 == len(plain["rounds"])
    assert plain["images_per_s"]["min"] <= plain["images_per_s"]["median"] <= plain["images_per_s"]["max"]
    assert r["pgd20_eval"]["images_per_s"]["dard"]["n"] == 2
    md = next(tmp_path.glob("*.md")).read_text()
    assert "| dard-bf16 | 8 |" in md and "RuntimeError: no kernel for this" in md


def test_no_phase_starts_past_the_budget(tmp_path):
    assert bench.main([*TINY, "--budget", "0", "--out", str(tmp_path)]) == 0
    r = _result(tmp_path)
    assert r["complete"] and r["train"] == {} and r["pgd20_eval"] is None
    assert [s.split(" (")[0] for s in r["skipped"]] == ["train@8: plain,bf16", "pgd20"]


def test_unknown_variant_is_a_usage_error(capsys):
    with pytest.raises(SystemExit) as exc:
        bench.main(["--smoke", "--variants", "plain,fast"])
    assert exc.value.code == 2 and "unknown variant(s) fast" in capsys.readouterr().err


def test_eval_n_zero_leaves_out_the_pgd20_timing(tmp_path):
    args = [a if a != "4" else "0" for a in TINY]  # --eval-n 0
    assert bench.main([*args, "--budget", "0", "--out", str(tmp_path)]) == 0
    r = _result(tmp_path)
    assert r["complete"] and [s.split(" (")[0] for s in r["skipped"]] == ["train@8: plain,bf16"]
    assert "PGD-20" not in next(tmp_path.glob("*.md")).read_text()


def _record(train: dict[str, list[float]], pgd: list[float] | None) -> dict:
    rows = {k: {"rounds": r, "images_per_s": bench.stats(r)} for k, r in train.items()}
    return {"train": rows, "pgd20_eval": {"images_per_s": {"dard": bench.stats(pgd)}} if pgd else None}


def test_processes_side_by_side_are_summed_per_loop_against_the_one_process():
    import bench_processes

    one = _record({"bf16@128": [230.0, 237.0, 250.0]}, [400.0])
    side = [_record({"bf16@128": [130.0, 137.0, 140.0]}, [250.0]), _record({"bf16@128": [134.5]}, None)]
    rows = bench_processes.compare(one, side)
    assert list(rows) == ["train bf16@128"]  # PGD-20 only in one of the two: no sum to compare
    assert rows["train bf16@128"] == {
        "one_process": 237.0,
        "processes": [137.0, 134.5],
        "sum": 271.5,
        "ratio": pytest.approx(271.5 / 237.0),
    }


@pytest.mark.slow
def test_bench_processes_writes_both_settings_and_their_ratio(tmp_path):
    import bench_processes

    args = [*TINY[:-2], "--rounds", "1", "--variants", "plain"]  # bench_processes sets the threads
    assert bench_processes.main(["--processes", "2", "--out", str(tmp_path), "--", *args]) == 0
    r = json.loads((tmp_path / "cpu-processes.json").read_text())
    assert r["threads"] == 2 and len(r["records"]["processes"]) == 2
    assert set(r["loops"]) == {"train plain@8", "pgd20"}
    for row in r["loops"].values():
        assert row["ratio"] == pytest.approx(sum(row["processes"]) / row["one_process"])
    assert [x["environment"]["cpu_threads"] for x in (r["records"]["one_process"], *r["records"]["processes"])] == [
        2,
        1,
        1,
    ]
    assert "| train plain@8 |" in (tmp_path / "cpu-processes.md").read_text()
    with pytest.raises(SystemExit):
        bench_processes.main(["--processes", "2", "--", "--threads", "4"])
