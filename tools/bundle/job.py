"""Run a job on an offline GPU node from the bundle: setup, then steps, every output packed into $OUT as it ends.

    bash .bundle/run.sh [options] [--] COMMAND...        # setup, then COMMAND
    bash .bundle/gpu_job.sh [options] [--] [COMMAND...]  # setup, CUDA tests, benchmark, then COMMAND (optional)
    bash .bundle/run.sh --experiment attacks,main         # setup, then those gpu-scale experiments in the budget

COMMAND is one shell string (``bash -c``) or an argv. It runs in the bundle's copy of the project with the scratch
venv first on PATH (``python``, ``dard``), ``DARD_DATA_DIR`` set to the rebuilt CIFAR-10 and ``STEP_OUT`` set to
its own output folder: what it writes there comes back. Standard library only.

What comes back from ``--out`` (default ``$OUT``): ``log.txt`` (everything printed, capped), ``job.json`` (each
step's status, exit code, time, files; rewritten after every step) and one ``<k>-<step>.tar.gz`` per step that wrote
files, split into ``.000``, ``.001``, ... parts if larger than one file may be. At most ``--max-files`` files of
``--max-file-mib`` each. The whole job keeps within ``--budget`` seconds: a step that would overrun is stopped
(SIGTERM to its process group, SIGKILL after a grace period) and its folder is still packed; so is the running
step's when the job itself gets SIGTERM/SIGINT.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import signal
import subprocess
import sys
import threading
import time
from dataclasses import asdict, astuple, dataclass, field
from pathlib import Path

# A script beside pack.py (in tools/bundle/ and in the bundle), run as `python job.py`: its folder is on sys.path.
from pack import MIB, Limits, pack_folder

HERE = Path(__file__).resolve().parent

LOG_CAP = 2 * MIB  # log.txt stops growing here; each step's full output is in its own archive
JSON_RESERVE = MIB  # bytes kept back for job.json
GRACE_S = 5.0  # SIGTERM -> SIGKILL
PACK_RESERVE_S = 10.0  # kept back from a step's time for packing it
MIN_STEP_S = 10.0  # a step with less of the budget left is skipped
NO_LIMIT_S = 10**9  # the {budget} of a step without a time limit


@dataclass
class Step:
    """One command of the job. In a ``template`` argv, ``{out}`` becomes the step's output folder and
    ``{budget}`` its time limit less 20 s (for a command that can wind down by itself)."""

    name: str
    argv: list[str]
    limit: float | None = None  # the step's own cap in seconds (None: what the budget leaves)
    essential: bool = False  # the job stops when it fails (setup)
    template: bool = False


@dataclass
class StepRecord:
    name: str
    command: list[str]
    status: str = "pending"  # ok | failed | timed-out | stopped | skipped
    reason: str = ""
    rc: int | None = None
    limit_s: float | None = None
    seconds: float = 0.0
    files: list[str] = field(default_factory=list)
    bytes: int = 0
    dropped: list[str] = field(default_factory=list)


class Job:
    """Runs steps in order under one deadline; logs to stdout and ``out/log.txt``; packs after each step."""

    def __init__(
        self,
        out: Path,
        budget: float | None,
        limits: Limits,
        env: dict[str, str],
        workdir: Path,
        node_facts: Path | None,
    ) -> None:
        self.out, self.limits, self.env, self.workdir, self.node_facts = out, limits, env, workdir, node_facts
        self.deadline = time.monotonic() + (math.inf if budget is None else budget)
        self.t0 = time.monotonic()
        out.mkdir(parents=True, exist_ok=True)
        self.log = open(out / "log.txt", "ab")  # noqa: SIM115 - open for the job's lifetime
        self.logged = self.log.tell()
        self.files_used, self.bytes_used = 2, 0  # log.txt and job.json
        self.record: dict = {"budget_s": budget, "limits": asdict(limits), "steps": [], "finished": False}
        self.stop_signal: int | None = None
        self.halted = ""  # why the remaining steps are skipped
        self.proc: subprocess.Popen | None = None
        self.term_at: float | None = None
        self.lock = threading.Lock()

    # -- output ---------------------------------------------------------------------------------------------

    def say(self, text: str) -> None:
        data = text.encode(errors="replace")
        with self.lock:
            sys.stdout.buffer.write(data)
            sys.stdout.flush()
            self._log(data)

    def _log(self, data: bytes) -> None:
        if self.logged < LOG_CAP:
            if self.logged + len(data) >= LOG_CAP:
                data = data[: LOG_CAP - self.logged] + b"\n[log.txt capped; full step output in its archive]\n"
            self.log.write(data)
            self.log.flush()
            self.logged += len(data)

    def write_record(self) -> None:
        self.record["seconds"] = round(time.monotonic() - self.t0, 1)
        if "node" not in self.record and self.node_facts is not None and self.node_facts.is_file():
            self.record["node"] = json.loads(self.node_facts.read_text())
        tmp = self.out / ".job.json.tmp"
        tmp.write_text(json.dumps(self.record, indent=1) + "\n")
        os.replace(tmp, self.out / "job.json")

    # -- processes ------------------------------------------------------------------------------------------

    def on_signal(self, signum: int, _frame: object) -> None:
        self.stop_signal = signum
        self._terminate()

    def _terminate(self) -> None:
        if self.proc is not None and self.proc.poll() is None and self.term_at is None:
            self.term_at = time.monotonic()
            _killpg(self.proc, signal.SIGTERM)

    def _wait(self, limit: float) -> bool:
        """Wait for the running step; stop it at ``limit`` seconds. True if it was stopped for time."""
        assert self.proc is not None
        end, timed_out = time.monotonic() + limit, False
        while self.proc.poll() is None:
            now = time.monotonic()
            if now >= end and self.term_at is None:
                timed_out = True
                self._terminate()
            if self.term_at is not None and now - self.term_at >= GRACE_S:
                _killpg(self.proc, signal.SIGKILL)
            time.sleep(0.1)
        _killpg(self.proc, signal.SIGKILL)  # anything the step left running in its group
        return timed_out

    def _pump(self, stream, sink: Path) -> None:
        with open(sink, "ab") as fh:
            for line in iter(stream.readline, b""):
                fh.write(line)
                fh.flush()
                self.say(line.decode(errors="replace"))

    # -- steps ----------------------------------------------------------------------------------------------

    def run(self, steps: list[Step]) -> int:
        for k, step in enumerate(steps):
            rec = StepRecord(step.name, step.argv)
            self.record["steps"].append(rec)
            if self.halted:
                rec.status, rec.reason = "skipped", self.halted
            else:
                self.run_step(k, step, rec, remaining=len(steps) - k - 1)
            self.record["steps"][-1] = asdict(rec)
            self.write_record()
            if self.stop_signal is not None:
                self.halted = f"job stopped by signal {self.stop_signal}"
            elif step.essential and rec.status != "ok":
                self.halted = f"step {step.name} did not succeed"
        self.record["finished"] = True
        self.write_record()
        self.say(f"== job done in {time.monotonic() - self.t0:.0f} s: " + summary(self.record["steps"]) + "\n")
        if self.stop_signal:
            return 128 + self.stop_signal
        return 0 if all(s["status"] == "ok" for s in self.record["steps"]) else 1

    def run_step(self, k: int, step: Step, rec: StepRecord, remaining: int) -> None:
        left = self.deadline - time.monotonic() - PACK_RESERVE_S - GRACE_S
        if left < MIN_STEP_S:  # the budget's remainder; a step's own limit (an option) may be shorter
            rec.status, rec.reason = "skipped", f"only {max(left, 0):.0f} s of the budget left"
            self.say(f"== step {step.name}: skipped ({rec.reason})\n")
            return
        limit = left if step.limit is None else min(step.limit, left)
        folder = self.out / f"{k}-{step.name}"
        folder.mkdir(parents=True, exist_ok=True)
        if step.template:
            # without a limit the scripts still take a number: one no job reaches
            budget = str(NO_LIMIT_S if math.isinf(limit) else max(int(limit) - 20, 10))
            rec.command = [a.replace("{budget}", budget).replace("{out}", str(folder)) for a in step.argv]
        rec.limit_s = None if math.isinf(limit) else round(limit, 1)
        shown = "no limit" if rec.limit_s is None else f"limit {limit:.0f} s"
        self.say(f"== step {step.name} ({shown}): {' '.join(rec.command)}\n")
        env = {**self.env, "STEP_OUT": str(folder)}
        start = time.monotonic()
        self.term_at = None
        try:
            self.proc = subprocess.Popen(
                rec.command, cwd=self.workdir, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL, start_new_session=True,
            )  # fmt: skip
        except OSError as exc:
            rec.status, rec.reason = "failed", f"cannot start: {exc}"
            self.say(f"== step {step.name}: {rec.reason}\n")
            return
        pump = threading.Thread(target=self._pump, args=(self.proc.stdout, folder / "output.txt"), daemon=True)
        pump.start()
        timed_out = self._wait(limit)
        pump.join(timeout=5)
        rec.rc, rec.seconds = self.proc.returncode, round(time.monotonic() - start, 1)
        self.proc = None
        if self.stop_signal is not None:
            rec.status, rec.reason = "stopped", f"job stopped by signal {self.stop_signal}"
        elif timed_out:
            rec.status, rec.reason = "timed-out", f"stopped at its {limit:.0f} s limit"
        else:
            rec.status = "ok" if rec.rc == 0 else "failed"
        self.pack(folder, rec, remaining)
        files = ", ".join(rec.files) or "no files"
        self.say(f"== step {step.name}: {rec.status} (exit {rec.rc}, {rec.seconds:.0f} s) -> {files}\n")

    def pack(self, folder: Path, rec: StepRecord, remaining: int) -> None:
        files, part, total = (math.inf if v is None else v for v in astuple(self.limits))  # None: no limit
        slots = files - self.files_used - remaining  # one file kept for each later step
        space = total - self.bytes_used - LOG_CAP - JSON_RESERVE - remaining * MIB
        try:
            packed = pack_folder(folder, self.out, folder.name, slots=slots, space=space, part=part)
        except OSError as exc:  # a full disk, say: record it and go on with the next step
            rec.reason = f"{rec.reason}; packing failed: {exc}".lstrip("; ")
            self.say(f"   packing {folder.name} failed: {exc}\n")
            return
        rec.files, rec.bytes, rec.dropped = packed.files, packed.bytes, packed.dropped
        self.files_used += len(packed.files)
        self.bytes_used += packed.bytes
        if packed.dropped:
            self.say(f"   left out to fit the output limits: {', '.join(packed.dropped)}\n")


def _killpg(proc: subprocess.Popen, sig: int) -> None:
    try:
        os.killpg(proc.pid, sig)
    except (ProcessLookupError, PermissionError):
        pass


def summary(steps: list[dict]) -> str:
    return ", ".join(f"{s['name']} {s['status']}" for s in steps)


def build_steps(args: argparse.Namespace, python: str) -> list[Step]:
    """setup (unless --no-setup), then with --gpu-job the CUDA tests and the benchmark, then with --experiment the
    experiments, then COMMAND."""
    steps = []
    if not args.no_setup:
        setup = [sys.executable, str(HERE / "setup_env.py"), "--bundle", str(HERE), "--scratch", str(args.scratch)]
        steps.append(Step("setup", setup, args.setup_limit, essential=True))
    if args.gpu_job:
        # -v: each result is printed as it ends, so a step stopped at its limit still shows how far it got
        tests = [python, "-m", "pytest", "-m", "cuda", "-v", "--durations=10", "-p", "no:cacheprovider"]
        tests += ["tests/test_cuda.py"]
        steps.append(Step("cuda-tests", [*tests, "--junitxml", "{out}/junit.xml"], args.tests_limit, template=True))
        bench = [python, "benchmarks/bench.py", "--device", "auto", "--smoke-if-cpu", "--budget", "{budget}"]
        steps.append(Step("bench", [*bench, "--out", "{out}"], args.bench_limit, template=True))
    if args.experiment:
        # experiment_step.sh: import the runs of earlier jobs, then `dard experiment --time-budget` for each
        names = [e for e in args.experiment.split(",") if e]
        step = ["bash", str(HERE / "experiment_step.sh"), python, "{budget}", str(args.scratch / "runs"), args.scale]
        steps.append(Step("experiment", [*step, "{out}", *names], args.experiment_limit, template=True))
    if args.command:
        cmd = ["bash", "-c", args.command[0]] if len(args.command) == 1 else list(args.command)
        steps.append(Step("command", cmd, args.command_limit))
    return steps


def bundle_job_defaults() -> dict:
    """The job defaults the bundle was made with (MANIFEST.json's ``job_defaults``); none outside a bundle."""
    manifest = HERE / "MANIFEST.json"
    return json.loads(manifest.read_text()).get("job_defaults", {}) if manifest.is_file() else {}


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        prog="run.sh", description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--out", type=Path, default=Path(os.environ.get("OUT") or "out"), help="default: $OUT, else ./out")
    # The job system's limits: none unless given here or by the bundle (make_bundle --budget/--max-*: MANIFEST.json)
    defaults = bundle_job_defaults()
    p.add_argument("--budget", type=float, default=defaults.get("budget"), help="seconds for the whole job")
    p.add_argument("--scratch", type=Path, default=Path(os.environ.get("TMPDIR") or "/tmp") / "dard-job")
    p.add_argument("--gpu-job", action="store_true", help="run the CUDA tests and the benchmark before COMMAND")
    p.add_argument("--no-setup", action="store_true", help="use this Python as it is (no venv, no data)")
    p.add_argument("--setup-limit", type=float, default=150.0)
    p.add_argument("--tests-limit", type=float, default=120.0)
    p.add_argument("--bench-limit", type=float, default=270.0)
    p.add_argument("--command-limit", type=float, help="seconds for COMMAND (default: what the budget leaves)")
    p.add_argument(
        "--experiment",
        metavar="NAME[,NAME...]",
        help="run these experiments (dard experiment --time-budget) after the other steps, in what the budget leaves",
    )
    p.add_argument("--scale", default="gpu", help="the experiments' scale (default gpu)")
    p.add_argument("--experiment-limit", type=float, help="seconds for the experiment step (default: what is left)")
    p.add_argument("--max-files", type=int, default=defaults.get("max_files"), help="files $OUT may hold")
    p.add_argument("--max-file-mib", type=float, default=defaults.get("max_file_mib"), help="MiB per file in $OUT")
    p.add_argument("--max-total-mib", type=float, default=defaults.get("max_total_mib"), help="MiB in $OUT in all")
    p.add_argument("command", nargs=argparse.REMAINDER, help="one shell string, or an argv")
    args = p.parse_args(argv)
    if args.command and args.command[0] == "--":
        args.command = args.command[1:]
    if not args.gpu_job and not args.command and not args.experiment:
        p.error("give a COMMAND (or --gpu-job, --experiment)")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    args.out, args.scratch = args.out.resolve(), args.scratch.resolve()
    limits = Limits(
        args.max_files,
        None if args.max_file_mib is None else int(args.max_file_mib * MIB),
        None if args.max_total_mib is None else int(args.max_total_mib * MIB),
    )
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "MPLBACKEND": "Agg", "BUNDLE": str(HERE), "OUT": str(args.out)}
    python = sys.executable
    if not args.no_setup:
        python = str(args.scratch / "venv" / "bin" / "python")
        env["PATH"] = f"{args.scratch / 'venv' / 'bin'}{os.pathsep}{env.get('PATH', '')}"
        env["DARD_DATA_DIR"] = str(args.scratch / "data")
    workdir = HERE / "project" if (HERE / "project").is_dir() else Path.cwd()
    if args.out.exists() and any(args.out.iterdir()):
        print(f"run.sh: error: output folder {args.out} is not empty", file=sys.stderr)
        return 2
    job = Job(args.out, args.budget, limits, env, workdir, None if args.no_setup else args.scratch / "env.json")
    for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
        signal.signal(sig, job.on_signal)
    manifest = HERE / "MANIFEST.json"
    if manifest.is_file():
        m = json.loads(manifest.read_text())
        job.record["bundle"] = {k: m.get(k) for k in ("id", "created", "git_commit", "python", "data")}
    return job.run(build_steps(args, python))


if __name__ == "__main__":
    sys.exit(main())
