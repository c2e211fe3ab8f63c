"""One run on every CPU thread, or one run per thread side by side? The question `dard experiment --jobs` answers
on a CPU (:func:`dard.experiment.pool.jobs_for`: two one-thread runs at a time on two cores), measured in one
invocation on the same machine.

Runs benchmarks/bench.py first once on all N threads, then as N processes of one thread each at the same time,
and writes each timed loop's images/s (median of its rounds; the DARD training step per variant and batch, and
PGD-20) for the one process beside the sum over the N, with their ratio, to ``<out>/cpu-processes.{json,md}``.
The N processes start together; their warm-ups and rounds overlap but are not synchronised, so the sum is a
little optimistic when one finishes first (each process's own numbers are kept). Arguments after ``--`` go to
bench.py unchanged (not ``--threads`` or ``--out``).

Example (the ``small`` scale's ResNet-8 student with a ResNet-20 teacher and 10-step DPGD, bf16, batch 128)::

    python benchmarks/bench_processes.py -- --student resnet8 --teacher resnet20 --variants bf16 \\
        --no-reference --batch-sizes 128 --steps 16 --rounds 3 --aa-n 0 --eval-n 128 --attack-steps 10
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from dard.io import write_json, write_text
from dard.runtime import environment, resolve_device

BENCH = Path(__file__).resolve().parent / "bench.py"


def run_bench(bench_args: list[str], copies: int, threads: int, work: Path) -> list[dict]:
    """``copies`` bench.py processes at once with ``threads`` threads each; their result records."""
    env = {**os.environ, "OMP_NUM_THREADS": str(threads), "MKL_NUM_THREADS": str(threads)}
    outs = [work / f"{copies}x{threads}-{i}" for i in range(copies)]
    procs = [
        subprocess.Popen(
            [sys.executable, str(BENCH), *bench_args, "--threads", str(threads), "--out", str(out)],
            env=env,
            stdout=subprocess.DEVNULL,
        )
        for out in outs
    ]
    if any(p.wait() != 0 for p in procs):
        raise SystemExit(f"bench.py failed ({copies} x {threads} thread(s)); run it alone to see why")
    return [json.loads(next(out.glob("*.json")).read_text()) for out in outs]


def loop_rates(record: dict) -> dict[str, float]:
    """Median images/s of each timed loop of one bench.py record: ``train <variant>@<batch>`` and ``pgd20``."""
    rates = {f"train {k}": row["images_per_s"]["median"] for k, row in record["train"].items() if row.get("rounds")}
    pgd = record.get("pgd20_eval") or {}
    if pgd.get("images_per_s"):
        rates["pgd20"] = pgd["images_per_s"]["dard"]["median"]
    return rates


def compare(single: dict, side_by_side: list[dict]) -> dict[str, dict]:
    """Per loop: the one process's images/s, each side-by-side process's, their sum and sum / one."""
    one = loop_rates(single)
    each = [loop_rates(r) for r in side_by_side]
    rows = {}
    for loop, rate in one.items():
        parts = [e[loop] for e in each if loop in e]
        if len(parts) == len(each):
            rows[loop] = {"one_process": rate, "processes": parts, "sum": sum(parts), "ratio": sum(parts) / rate}
    return rows


def markdown(result: dict) -> str:
    n = result["threads"]
    lines = [
        f"# One process on {n} threads vs {n} processes of one thread ({result['device']}, {result['date']})",
        "",
        f"`{result['command']}`",
        "",
        f"| loop | 1 process x {n} threads (images/s) | {n} processes x 1 thread, each | sum | sum / one |",
        "|---|---:|---|---:|---:|",
    ]
    for loop, row in result["loops"].items():
        each = " + ".join(f"{p:.1f}" for p in row["processes"])
        lines.append(f"| {loop} | {row['one_process']:.1f} | {each} | {row['sum']:.1f} | {row['ratio']:.2f} |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    own, bench_args = (argv[: argv.index("--")], argv[argv.index("--") + 1 :]) if "--" in argv else (argv, [])
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--processes", type=int, default=os.cpu_count() or 1, help="N (default: the cores)")
    p.add_argument("--out", default=str(Path(__file__).resolve().parent / "results"))
    args = p.parse_args(own)
    if args.processes < 2 or {"--threads", "--out", "--device"} & set(bench_args):
        p.error("--processes must be 2 or more, and --threads, --out and --device are this script's to set")
    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        single = run_bench([*bench_args, "--device", "cpu"], 1, args.processes, Path(tmp))[0]
        side = run_bench([*bench_args, "--device", "cpu"], args.processes, 1, Path(tmp))
    result = {
        "device": single["device"].replace(f"{args.processes} threads", "all threads"),
        "environment": environment(resolve_device("cpu")),
        "date": time.strftime("%Y-%m-%d"),
        "command": "python benchmarks/bench_processes.py " + " ".join(argv),
        "threads": args.processes,
        "loops": compare(single, side),
        "records": {"one_process": single, "processes": side},
        "seconds": round(time.perf_counter() - t0, 1),
    }
    out = Path(args.out) / "cpu-processes"
    write_json(out.with_suffix(".json"), result)
    write_text(out.with_suffix(".md"), markdown(result))
    print(markdown(result))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
