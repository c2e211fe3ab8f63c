"""Ctrl-C on the command line is one line, "dard: interrupted", and exit status 130, whenever it comes after dard's
code has started: while PyTorch imports (the start-up handler of dard.interrupts), and after an interrupt the
interpreter itself noticed (Python then re-kills itself with SIGINT at exit unless dard leaves at once)."""

from __future__ import annotations

import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from dard.cli import main

LINE = "dard: interrupted"
PROC = Path("/proc")


def _interrupt_during_torch_import(command: list[str], cwd: Path) -> subprocess.CompletedProcess:
    """Start ``command`` (`dard list`), send SIGINT once PyTorch's library is being loaded into it (which happens
    only inside the command line's own imports), and return how it ended."""
    proc = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=cwd)
    maps = PROC / str(proc.pid) / "maps"
    try:
        while proc.poll() is None:
            try:
                if "libtorch" in maps.read_text():
                    break
            except OSError:  # the process is being set up or has just ended
                pass
            time.sleep(0.002)
        assert proc.poll() is None, "the command ended before PyTorch was imported"
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=120)
    finally:
        proc.kill()
    return subprocess.CompletedProcess(command, proc.returncode, out, err)


@pytest.mark.slow
@pytest.mark.skipif(not (PROC / "self" / "maps").exists(), reason="needs /proc/<pid>/maps (Linux)")
@pytest.mark.parametrize("how", ["python -m dard", "the dard script"])
def test_ctrl_c_while_torch_imports_is_one_line_and_status_130(how, tmp_path):
    script = Path(sys.executable).parent / "dard"
    if how == "the dard script" and not script.exists():
        pytest.fail(f"{script} is missing: the package is not installed in this environment")
    command = [sys.executable, "-m", "dard", "list"] if how == "python -m dard" else [str(script), "list"]
    done = _interrupt_during_torch_import(command, tmp_path)
    assert (done.returncode, done.stderr) == (130, LINE + "\n")
    assert done.stdout == ""


@pytest.mark.slow
def test_interrupt_the_interpreter_marked_still_exits_130(tmp_path):
    # A KeyboardInterrupt out of code run through PyRun_String (as pybind11's exec runs code during torch's import)
    # marks the interpreter; under `python -m` it then kills itself with SIGINT at exit (status -2) although
    # main() handled the interrupt. Run as `python -m <module>`, the way `python -m dard` runs.
    (tmp_path / "interrupted_cli.py").write_text(
        textwrap.dedent(
            """
            import ctypes, sys
            from dard.cli import app

            def interrupted_in_pyrun_string(args):
                run = ctypes.pythonapi.PyRun_String
                run.argtypes = [ctypes.c_char_p, ctypes.c_int, ctypes.py_object, ctypes.py_object]
                run.restype = ctypes.py_object
                run(b"raise KeyboardInterrupt", 257, {}, {})  # 257: Py_file_input

            app.COMMANDS["list"] = interrupted_in_pyrun_string
            through_entry = sys.argv[1] == "entry"
            sys.argv = ["dard", "list"]
            if not through_entry:
                raise SystemExit(app.main())
            from dard.__main__ import entry
            raise SystemExit(entry())
            """
        )
    )
    run = [sys.executable, "-m", "interrupted_cli"]
    bare = subprocess.run([*run, "main"], capture_output=True, text=True, cwd=tmp_path, timeout=120)
    assert (bare.returncode, bare.stderr) == (-signal.SIGINT, LINE + "\n")  # what entry() is there to prevent
    done = subprocess.run([*run, "entry"], capture_output=True, text=True, cwd=tmp_path, timeout=120)
    assert (done.returncode, done.stderr) == (130, LINE + "\n")


def test_main_in_process_leaves_the_callers_sigint_handler_alone(monkeypatch, capsys):
    def own(signum, frame):
        raise AssertionError("not called")

    previous = signal.signal(signal.SIGINT, own)
    try:
        assert main(["list"]) == 0
        assert signal.getsignal(signal.SIGINT) is own
    finally:
        signal.signal(signal.SIGINT, previous)
