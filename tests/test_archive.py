"""dard export / dard import: deterministic archives, safe extraction of hostile ones, merging into a runs folder
and into an experiment's report without retraining."""

from __future__ import annotations

import base64
import errno
import fcntl
import hashlib
import io
import json
import os
import random
import shutil
import tarfile
import time
from functools import partial
from pathlib import Path

import pytest
from tests.conftest import tiny_config

from dard.config import parse_config
from dard.errors import DardError
from dard.io import MAX_TAR_HEADER_BYTES
from dard.run_dir import RunDir
from dard.run_dir.archive import MANIFEST, ExportOptions, archived_runs, export_runs
from dard.run_dir.carried import allowed
from dard.run_dir.merge import import_runs
from dard.training import train
from dard.training.deadline import TrainingStopped


@pytest.fixture(scope="module")
def finished(tmp_path_factory) -> Path:
    run = tmp_path_factory.mktemp("archive") / "runs" / "run-s0"
    train(parse_config(tiny_config(name="run-s0", eval={"checkpoints": ["best"]})), run)
    return run


def _files(folder: Path) -> dict[str, bytes]:
    return {p.relative_to(folder).as_posix(): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


@pytest.mark.slow
def test_export_is_deterministic_and_leaves_out_what_it_must(finished, tmp_path):
    a = export_runs([finished], tmp_path / "a.tar.gz")
    time.sleep(1.1)  # a later export (another second of mtime) gives the same bytes
    b = export_runs([finished], tmp_path / "b.tar.gz")
    assert a.read_bytes() == b.read_bytes()
    records = export_runs([finished], tmp_path / "r.tar.gz", ExportOptions(weights="none"))
    with tarfile.open(records) as tar:
        names = tar.getnames()
        manifest = json.load(tar.extractfile(MANIFEST))
    assert names[0] == MANIFEST and "run-s0/best.safetensors" not in names and "run-s0/eval/best.json" in names
    assert not any("state-" in n or "resume" in n for n in names)  # a finished run travels without its resume state
    run = manifest["runs"][0]
    assert run["finished"] and "best.safetensors (--weights none)" in run["left_out"]
    small = export_runs([finished], tmp_path / "s.tar.gz", ExportOptions(max_weights_mib=0.001))
    with tarfile.open(small) as tar:
        assert "run-s0/best.safetensors" not in tar.getnames()  # over the limit
    with pytest.raises(DardError, match="not a dard run folder"):
        export_runs([tmp_path], tmp_path / "x.tar.gz")


@pytest.mark.slow
def test_import_round_trips_then_merges_weights_and_refuses_another_run(finished, tmp_path):
    records = export_runs([finished], tmp_path / "r.tar.gz", ExportOptions(weights="none"))
    full = export_runs([finished], tmp_path / "f.tar.gz", ExportOptions(weights="all"))
    root = tmp_path / "runs"
    assert [r.action for r in import_runs(records, root)] == ["added"]
    got = _files(root / "run-s0")
    assert got == {k: v for k, v in _files(finished).items() if k in got} and "best.safetensors" not in got
    assert [r.action for r in import_runs(records, root)] == ["unchanged"]
    assert [r.action for r in import_runs(full, root)] == ["merged"]  # the weights it lacked
    assert (root / "run-s0" / "best.safetensors").read_bytes() == (finished / "best.safetensors").read_bytes()
    other = tmp_path / "other" / "run-s0"
    shutil.copytree(finished, other)
    (other / "config.yaml").write_text((other / "config.yaml").read_text().replace("seed: 0", "seed: 5"))
    with pytest.raises(DardError, match="run-s0/config.yaml was changed after dard wrote it"):
        import_runs(other, root)  # not the config its records were made with
    sha = hashlib.sha256((other / "config.yaml").read_bytes()).hexdigest()
    (other / "run.json").write_text(json.dumps({**json.loads((other / "run.json").read_text()), "config_sha256": sha}))
    before = _files(root)
    with pytest.raises(DardError, match="holds another run .*seed"):
        import_runs(other, root)  # a run folder as the source
    assert _files(root) == before and [p.name for p in root.iterdir()] == ["run-s0"]  # no staging left behind


@pytest.mark.slow
def test_an_unfinished_run_travels_with_its_resume_state_and_replaces_an_older_copy(tmp_path):
    cfg = parse_config(tiny_config(name="part", eval={"checkpoints": ["best"]}))
    with pytest.raises(TrainingStopped):
        train(cfg, tmp_path / "a" / "part", stop_at=0.0)
    early = export_runs([tmp_path / "a" / "part"], tmp_path / "early.tar.gz")
    with pytest.raises(DardError, match="not finished and its resume state cannot travel"):
        export_runs([tmp_path / "a" / "part"], tmp_path / "no.tar.gz", ExportOptions(weights="none"))
    root = tmp_path / "runs"
    import_runs(early, root)
    train(cfg, root / "part", resume=True)  # continues from the imported snapshot
    assert RunDir(root / "part").is_evaluated()
    train(cfg, tmp_path / "a" / "part", resume=True)
    assert [r.action for r in import_runs(early, tmp_path / "a")] == ["kept"]  # behind what is there
    later = export_runs([root / "part"], tmp_path / "later.tar.gz")
    fresh = tmp_path / "fresh"
    import_runs(early, fresh)
    assert [r.action for r in import_runs(later, fresh)] == ["replaced"]
    assert RunDir(fresh / "part").is_evaluated() and not RunDir(fresh / "part").has_snapshot()


@pytest.mark.slow
def test_an_unfinished_evaluation_travels_and_the_copy_with_more_attacks_kept_wins(tmp_path, monkeypatch):
    import dard.training.final_eval as final_eval

    cfg = parse_config(tiny_config(name="part", eval={"checkpoints": ["best"]}))  # fgsm, pgd20
    train(cfg, tmp_path / "a" / "part", final_eval=False)
    shutil.copytree(tmp_path / "a", tmp_path / "b")  # trained, nothing evaluated
    asked: list[str] = []

    def after_one_attack(attack, n) -> bool:  # the deadline allows the first attack only
        asked.append(attack.name)
        return len(asked) > 1

    monkeypatch.setattr(final_eval, "_deadline", lambda *a: after_one_attack)
    with pytest.raises(TrainingStopped):
        train(cfg, tmp_path / "a" / "part", resume=True, stop_at=time.time() + 3600)  # fgsm only
    monkeypatch.undo()
    archive = export_runs([tmp_path / "a" / "part"], tmp_path / "part.tar.gz")
    assert [r.action for r in import_runs(archive, tmp_path / "b")] == ["replaced"]  # one attack further
    kept = RunDir(tmp_path / "b" / "part").read_eval_progress("best")
    assert kept is not None and list(kept.suite.attacks) == ["fgsm"]
    train(cfg, tmp_path / "b" / "part", resume=True)  # the evaluation continues with pgd20
    record = RunDir(tmp_path / "b" / "part").read_eval("best")
    assert record.attacks["fgsm"] == kept.suite.attacks["fgsm"] and list(record.attacks) == ["fgsm", "pgd20"]


def _tar(path: Path, members: list[tuple[tarfile.TarInfo, bytes | None]]) -> Path:
    with tarfile.open(path, "w:gz") as tar:
        for info, data in members:
            tar.addfile(info, io.BytesIO(data) if data is not None else None)
    return path


def _file(name: str, data: bytes) -> tuple[tarfile.TarInfo, bytes]:
    info = tarfile.TarInfo(name)
    info.size = len(data)
    return info, data


def _manifest(files: dict[str, bytes], run: str = "evil", sizes: dict | None = None) -> tuple[tarfile.TarInfo, bytes]:
    """A manifest of a finished run: ``files`` and the rest of what one carries (placeholders), so that an archive
    is refused for what its case is about, not for lacking them."""
    files = {**dict.fromkeys(["run.json", "metrics.jsonl", "best.json", "eval/best.json"], b"{}"), **files}
    rows = [{"path": k, "bytes": len(v), "sha256": hashlib.sha256(v).hexdigest()} for k, v in files.items()]
    for row in rows:
        row["bytes"] = (sizes or {}).get(row["path"], row["bytes"])
    body = {"format": "dard-runs", "version": 1, "runs": [{"name": run, "finished": True, "files": rows}]}
    return _file(MANIFEST, json.dumps(body).encode())


CFG = b"name: evil\n"


def _link(name: str, target: str, kind: bytes = tarfile.SYMTYPE) -> tuple[tarfile.TarInfo, None]:
    info = tarfile.TarInfo(name)
    info.type, info.linkname = kind, target
    return info, None


HOSTILE = {
    "absolute path": ([_manifest({"config.yaml": CFG}), _file("/etc/evil/config.yaml", CFG)], "unsafe member name"),
    "dot-dot": ([_manifest({"config.yaml": CFG}), _file("evil/../../config.yaml", CFG)], "unsafe member name"),
    "symlink": ([_manifest({"config.yaml": CFG}), _link("evil/config.yaml", "/etc/passwd")], "not a regular file"),
    "hard link": (
        [_manifest({"config.yaml": CFG}), _link("evil/config.yaml", "evil/run.json", tarfile.LNKTYPE)],
        "not a regular file",
    ),
    "unknown file": (
        [_manifest({"config.yaml": CFG}), _file("evil/config.yaml", CFG), _file("evil/x.sh", b"rm")],
        "not a file of a dard run folder",
    ),
    "size differs": ([_manifest({"config.yaml": CFG}), _file("evil/config.yaml", CFG + b"more: 1\n")], "this size"),
    "checksum differs": ([_manifest({"config.yaml": CFG}), _file("evil/config.yaml", CFG.upper())], "checksum"),
    "no manifest": ([_file("evil/config.yaml", CFG)], "not a dard export"),
    "negative size": (  # the other files' sizes were summed past the 4 GiB limit (extracted, then refused)
        [_manifest({"config.yaml": CFG, "best.safetensors": b"x"}, sizes={"best.safetensors": -(5 << 30)})],
        "gives evil/best.safetensors -5368709120 bytes",
    ),
    "missing file": ([_manifest({"config.yaml": CFG}), _file("evil/config.yaml", CFG)], "are missing"),
    "bad run name": (
        [_manifest({"config.yaml": CFG}, run="../up"), _file("../up/config.yaml", CFG)],
        "not distinct plain folder names",
    ),
    "bad record": (
        [_manifest({"config.yaml": b"[1, 2]\n"}), _file("evil/config.yaml", b"[1, 2]\n")]
        + [_file(f"evil/{name}", b"{}") for name in ("run.json", "metrics.jsonl", "best.json", "eval/best.json")],
        "config.yaml",
    ),
}


@pytest.mark.parametrize("case", sorted(HOSTILE))
def test_hostile_archives_are_refused_and_nothing_is_written(case, tmp_path):
    members, needle = HOSTILE[case]
    archive = _tar(tmp_path / "evil.tar.gz", members)
    root = tmp_path / "runs"
    with pytest.raises(DardError, match=needle) as err:
        import_runs(archive, root)
    assert "\n" not in str(err.value) and str(archive) in str(err.value)
    assert list(root.iterdir()) == []  # the staging folder is gone too
    assert not (tmp_path / "etc").exists() and not (tmp_path / "config.yaml").exists()


def test_a_damaged_gzip_stream_is_one_line_wherever_it_is_damaged(tmp_path):
    # a byte flipped inside the deflate data raised zlib.error, which neither the import nor export's look at an
    # existing --out caught: an internal error (exit 1) for a file that is not a readable archive
    big = CFG + b"# " + base64.b64encode(random.Random(0).randbytes(6000)) + b"\n"  # deflate data to damage
    members = [_manifest({"config.yaml": big}), _file("evil/config.yaml", big)]
    good = _tar(tmp_path / "good.tar.gz", members).read_bytes()
    seen = set()
    for at in range(10, len(good) - 8, 7):  # past the gzip header, before its CRC and size
        damaged = tmp_path / f"d{at}.tar.gz"
        damaged.write_bytes(good[:at] + bytes([good[at] ^ 0x55]) + good[at + 1 :])
        with pytest.raises(DardError) as err:
            import_runs(damaged, tmp_path / "runs")
        assert "\n" not in str(err.value) and list((tmp_path / "runs").iterdir()) == []
        seen.add(str(err.value).split(" (", 1)[-1].split(":", 1)[0])
        if archived_runs(damaged) is None:
            with pytest.raises(DardError, match="not a dard export archive"):
                export_runs([tmp_path / "nowhere"], damaged)
    assert "error" in seen  # zlib's own error was among them


def test_an_oversized_extended_header_is_refused_before_it_is_read(tmp_path):
    # tarfile read a pax header whole into memory and parsed it slowly: a 200 KB archive of a gzipped 200 MB header
    # held 440 MB and a core for minutes in `dard import` (and in `dard export --out`'s look at an existing file)
    info, data = _manifest({"config.yaml": CFG})
    info.pax_headers = {"comment": "x" * MAX_TAR_HEADER_BYTES}
    archive = _tar(tmp_path / "evil.tar.gz", [(info, data), _file("evil/config.yaml", CFG)])
    with pytest.raises(DardError, match="extended header") as err:
        import_runs(archive, tmp_path / "runs")
    assert "\n" not in str(err.value) and list((tmp_path / "runs").iterdir()) == []
    assert archived_runs(archive) is None


def _rebuild(archive: Path, out: Path, edit) -> Path:
    """``archive`` written again after ``edit(run, files)`` (its manifest's run entry, member bytes by path), with
    the manifest's sizes and hashes made to fit: an archive that is well formed and claims what ``edit`` left."""
    with tarfile.open(archive) as tar:
        manifest = json.load(tar.extractfile(MANIFEST))
        run = manifest["runs"][0]
        files = {m.name.split("/", 1)[1]: tar.extractfile(m).read() for m in tar.getmembers()[1:]}
    edit(run, files)
    run["files"] = [{"path": k, "bytes": len(v), "sha256": hashlib.sha256(v).hexdigest()} for k, v in files.items()]
    members = [_file(MANIFEST, json.dumps(manifest).encode())]
    return _tar(out, members + [_file(f"{run['name']}/{k}", v) for k, v in files.items()])


def _only(*keep: str):
    return lambda run, files: [files.pop(k) for k in list(files) if k not in keep]


def _unfinished(drop: str = ""):
    def edit(run, files):  # the finished run's snapshot, claimed as an unfinished run's
        files.pop("eval/best.json")
        run["finished"] = False
        files.pop(next(k for k in files if k.startswith("state-") and k.endswith(drop)), None) if drop else None

    return edit


def _points_elsewhere(run, files):
    _unfinished()(run, files)
    files["resume.json"] = b'{"snapshot": "state-000000001"}\n'


CLAIMS = {
    "finished, config.yaml alone": (_only("config.yaml"), "finished but lacks run.json, metrics.jsonl, best.json, "),
    "finished without its evaluation": (lambda run, files: files.pop("eval/best.json"), "finished but lacks eval/best"),
    "unfinished with an evaluation": (
        lambda run, files: run.update(finished=False),
        "is not finished by its manifest but has eval/best.json",
    ),
    "unfinished without optimizer state": (_unfinished("optim.pt"), "unfinished but lacks a whole resume snapshot"),
    "unfinished without snapshot weights": (
        _unfinished("student.safetensors"),
        "unfinished but lacks a whole resume snapshot",
    ),
    "unfinished without a resume pointer": (
        lambda run, files: (_unfinished()(run, files), files.pop("resume.json")),
        "unfinished but lacks resume.json",
    ),
    "a pointer at a snapshot it does not carry": (_points_elsewhere, "resume progress not found"),
}


@pytest.mark.slow
@pytest.mark.parametrize("case", sorted(CLAIMS))
def test_an_archive_carries_what_its_manifest_claims(case, finished, tmp_path):
    # an archive whose manifest called the run finished but that held only its config.yaml was placed, and the
    # report refused the run later; an unfinished one without its snapshot's weights replaced a resumable copy
    edit, needle = CLAIMS[case]
    full = tmp_path / "full"
    shutil.copytree(finished, full / "run-s0")
    assert RunDir(full / "run-s0").has_snapshot()  # a finished run keeps its last snapshot: material for the cases
    archive = export_runs([full / "run-s0"], tmp_path / "all.tar.gz", ExportOptions(weights="all"))
    with tarfile.open(archive) as tar:  # export leaves a finished run's snapshot behind: put it in by hand
        names = set(tar.getnames())
    extra = [p for p in (full / "run-s0").rglob("*") if p.is_file() and f"run-s0/{p.relative_to(full / 'run-s0')}"
             not in names and allowed(p.relative_to(full / "run-s0").as_posix())]  # fmt: skip

    def with_snapshot(run, files):
        files.update({p.relative_to(full / "run-s0").as_posix(): p.read_bytes() for p in extra})
        edit(run, files)

    hostile = _rebuild(archive, tmp_path / "claims.tar.gz", with_snapshot)
    root = tmp_path / "runs"
    with pytest.raises(DardError, match=needle) as err:
        import_runs(hostile, root)
    assert "\n" not in str(err.value) and str(hostile) in str(err.value)
    assert list(root.iterdir()) == []


@pytest.mark.slow
def test_only_whole_runs_are_exported_or_imported_from_folders(finished, tmp_path):
    # an unfinished run whose snapshot weights were over --max-weights-mib travelled with state-N/progress.json
    # alone (no weights, no optimizer state): the import judged it further along and set the resumable copy aside
    part = tmp_path / "part" / "run-s0"
    shutil.copytree(finished, part)
    (part / "eval" / "best.json").unlink()  # trained, its snapshot kept, not evaluated
    with pytest.raises(DardError, match="not finished and its resume state cannot travel .*MiB"):
        export_runs([part], tmp_path / "p.tar.gz", ExportOptions(max_weights_mib=0.001))
    assert not (tmp_path / "p.tar.gz").exists()
    bare = tmp_path / "bare" / "run-s0"  # a folder holding a config alone, as a source
    bare.mkdir(parents=True)
    shutil.copy(finished / "config.yaml", bare)
    with pytest.raises(DardError, match="unfinished but lacks run.json, resume.json, a whole resume snapshot"):
        import_runs(bare, tmp_path / "runs")
    assert list((tmp_path / "runs").iterdir()) == []


def _link_to(target: Path):
    def make(path: Path) -> None:
        shutil.rmtree(path) if path.is_dir() else path.unlink()
        path.symlink_to(target)

    return make


@pytest.mark.slow
@pytest.mark.parametrize(
    "where, make, needle",
    [
        ("run.json", _link_to(Path("/etc/hostname")), "run.json: it is a symbolic link"),
        ("best.safetensors", _link_to(Path("/etc/hostname")), "best.safetensors: it is a symbolic link"),
        ("eval", lambda p: _link_to(p.parent.parent / "other" / "eval")(p), "eval is a symbolic link, not a folder"),
        ("metrics.jsonl", lambda p: (p.unlink(), os.mkfifo(p)), "metrics.jsonl: it is a FIFO"),
    ],
)
def test_export_never_reads_through_a_link_in_the_run(where, make, needle, finished, tmp_path):
    # a run.json linked to another file, or an eval/ folder linked to another run's, was exported as this run's
    # records (the import then placed them as its own)
    run, other = tmp_path / "runs" / "run-s0", tmp_path / "runs" / "other"
    shutil.copytree(finished, run)
    shutil.copytree(finished, other)
    make(run / where)
    with pytest.raises(DardError, match=f"cannot export .*{needle}") as err:
        export_runs([run], tmp_path / "out.tar.gz")
    assert "\n" not in str(err.value) and not (tmp_path / "out.tar.gz").exists()


@pytest.mark.slow
def test_import_never_places_a_run_through_a_link(finished, tmp_path):
    # runs/run-s0 as a link to an empty folder elsewhere: the import "added" the run there (and merged into a run
    # folder elsewhere), through the link
    archive = export_runs([finished], tmp_path / "a.tar.gz")
    elsewhere, root = tmp_path / "elsewhere", tmp_path / "runs"
    elsewhere.mkdir()
    root.mkdir()
    (root / "run-s0").symlink_to(elsewhere)
    with pytest.raises(DardError, match="run-s0 is a symbolic link; dard import never writes through links"):
        import_runs(archive, root)
    assert list(elsewhere.iterdir()) == [] and [p.name for p in root.iterdir()] == ["run-s0"]


def test_a_merge_is_checked_whole_before_any_file_is_placed(finished, tmp_path):
    # the local copy lacks best.safetensors and keeps last.safetensors as a link: the merge added best.safetensors,
    # then refused the link, so the error came after a file was placed (and after any other run of the archive)
    archive = export_runs([finished], tmp_path / "a.tar.gz", ExportOptions(weights="all"))
    root, elsewhere = tmp_path / "runs", tmp_path / "last.safetensors"
    local = Path(shutil.copytree(finished, root / "run-s0"))
    (local / "best.safetensors").unlink()
    (local / "last.safetensors").rename(elsewhere)
    (local / "last.safetensors").symlink_to(elsewhere)
    before = sorted(p.name for p in local.iterdir())
    with pytest.raises(DardError, match="last.safetensors: it is a symbolic link"):
        import_runs(archive, root)
    assert sorted(p.name for p in local.iterdir()) == before and [p.name for p in root.iterdir()] == ["run-s0"]


def test_a_run_in_use_is_neither_exported_nor_imported_from_its_folder(finished, tmp_path):
    # a training replaces checkpoints and snapshots while they are read: the manifest's sizes and SHA-256 were taken
    # before the members were copied, so the export said it had written an archive no import could read
    run = Path(shutil.copytree(finished, tmp_path / "src" / "run-s0"))
    fd = os.open(run / ".dard.lock", os.O_RDWR | os.O_CREAT)
    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)  # another open file: refused as another process would be
    try:
        with pytest.raises(DardError, match=f"cannot export {run}: it is in use by another process"):
            export_runs([run], tmp_path / "a.tar.gz")
        with pytest.raises(DardError, match=f"cannot import {run}: it is in use by another process"):
            import_runs(run, tmp_path / "runs")
    finally:
        os.close(fd)
    assert not (tmp_path / "a.tar.gz").exists() and not any((tmp_path / "runs").iterdir())
    assert [r.action for r in import_runs(run, tmp_path / "runs")] == ["added"]  # once the lock is free


def test_a_full_disk_or_a_read_only_runs_folder_is_one_line_naming_it(finished, tmp_path, monkeypatch):
    # staging a run is writing: a full disk while extracting said the archive was "not a readable .tar.gz", and
    # while copying a run folder, or a runs folder where no staging folder can be made, was an internal error
    import dard.run_dir.archive as archive
    import dard.run_dir.merge as merge

    source, root = export_runs([finished], tmp_path / "a.tar.gz"), tmp_path / "runs"

    def full(*_, code=errno.ENOSPC, **__):
        raise OSError(code, os.strerror(code))

    class Full(io.BytesIO):
        write = full

    real_open = open
    monkeypatch.setattr(archive, "open", lambda p, mode="r": Full() if mode == "xb" else real_open(p, mode), False)
    with pytest.raises(DardError, match=r"cannot write .*runs/\.import-.*: No space left on device"):
        import_runs(source, root)
    monkeypatch.setattr(merge.shutil, "copyfile", full)
    with pytest.raises(DardError, match=f"cannot copy {finished}/.* into {root}: No space left on device"):
        import_runs(finished, root)

    monkeypatch.setattr(merge.tempfile, "mkdtemp", partial(full, code=errno.EROFS))
    with pytest.raises(DardError, match=f"cannot import into {root}: Read-only file system"):
        import_runs(source, root)
    assert list(root.iterdir()) == []


def test_import_refuses_a_run_named_like_one_there_but_for_case(finished, tmp_path):
    # runs/RUN-S0 beside an imported run-s0: one folder on macOS and Windows, where the import merged into (or set
    # aside) another run, and two folders here that cannot be carried there
    archive = export_runs([finished], tmp_path / "a.tar.gz")
    root = tmp_path / "runs"
    (root / "RUN-S0").mkdir(parents=True)
    with pytest.raises(DardError, match="runs run-s0 and RUN-S0 differ only in case"):
        import_runs(archive, root)
    assert [p.name for p in root.iterdir()] == ["RUN-S0"]
    (root / "RUN-S0").rmdir()
    assert [r.action for r in import_runs(archive, root)] == ["added"]
    assert [r.action for r in import_runs(archive, root)] == ["unchanged"]  # the same name again: compared


@pytest.mark.slow
def test_not_an_archive_and_the_cli(finished, tmp_path, capsys):
    from dard.cli import main

    junk = tmp_path / "junk.tar.gz"
    junk.write_bytes(b"\x1f\x8b not really gzip")
    assert main(["import", str(junk), "--runs", str(tmp_path / "runs")]) == 2
    assert "not a readable .tar.gz" in capsys.readouterr().err
    assert main(["export", str(finished), "--out", str(tmp_path / "e.tar.gz")]) == 0
    assert "exported 1 run(s)" in capsys.readouterr().out
    assert main(["import", str(tmp_path / "e.tar.gz"), "--runs", str(tmp_path / "runs")]) == 0
    assert "run-s0: added" in capsys.readouterr().out


@pytest.mark.slow
def test_experiment_counts_imported_runs_as_done_and_needs_teacher_weights(tmp_path):
    from tests.test_budget import _experiment

    from dard.experiment import run_experiment

    exp, home = _experiment(tmp_path, runs=("dard",)), tmp_path / "home"
    run_experiment(exp, home, tmp_path / "r0", device="cpu", jobs=1)  # "another machine"
    names = ["teacher-s0", "dard-s0"]
    records = export_runs([home / n for n in names], tmp_path / "all.tar.gz", ExportOptions(weights="none"))
    root = tmp_path / "runs"
    import_runs(records, root)
    report = run_experiment(exp, root, tmp_path / "results", device="cpu", jobs=1)
    assert not any((root / n / "best.safetensors").exists() for n in names)  # reused, not retrained
    text = report.read_text()
    assert all(f"| {n} |" in text for n in ("teacher", "dard"))
    shutil.rmtree(root / "dard-s0")  # a student still to train, whose teacher came without weights
    with pytest.raises(DardError, match="dard-s0 cannot be trained: its teacher .*holds no weights"):
        run_experiment(exp, root, tmp_path / "results", device="cpu", jobs=1)


def _another_save(run: Path, which: str = "best", describe: bool = False) -> None:
    """``run``'s ``which`` weights replaced by other ones (a tensor changed), and its JSON made to describe them too
    where ``describe``: a whole pair of another save, else half of one."""
    from safetensors.torch import load_file, save_file

    weights = run / f"{which}.safetensors"
    tensors = load_file(weights)
    first = next(iter(tensors))
    tensors[first] = tensors[first] + 1
    save_file(tensors, weights)
    if describe:
        meta = json.loads((run / f"{which}.json").read_text())
        meta["weights_sha256"] = hashlib.sha256(weights.read_bytes()).hexdigest()
        (run / f"{which}.json").write_text(json.dumps(meta))


def test_a_checkpoint_of_two_saves_is_neither_exported_nor_imported(finished, tmp_path):
    # best.json beside weights of another save (a training killed between the two writes) was exported and imported
    # as a pair, though every other reader refuses it (dard.run_dir.pair.check_pair)
    run = Path(shutil.copytree(finished, tmp_path / "src" / "run-s0"))
    _another_save(run)
    with pytest.raises(DardError, match=f"cannot export {run}: .*best.json does not describe best.safetensors"):
        export_runs([run], tmp_path / "a.tar.gz")
    with pytest.raises(DardError, match=f"cannot import {run}: .*best.json does not describe best.safetensors"):
        import_runs(run, tmp_path / "copy")
    assert not (tmp_path / "a.tar.gz").exists() and not any((tmp_path / "copy").iterdir())
    shutil.rmtree(run / "eval")  # unfinished: its resume sets the pair aside and writes it again, so it stays behind
    with tarfile.open(export_runs([run], tmp_path / "u.tar.gz")) as tar:
        names, left_out = tar.getnames(), json.load(tar.extractfile(MANIFEST))["runs"][0]["left_out"]
    assert "run-s0/best.json" not in names and "best.json (of two saves: a resume writes it again)" in left_out
    assert [r.action for r in import_runs(run, tmp_path / "copy")] == ["added"]  # from the folder: the same
    assert not any((tmp_path / "copy" / "run-s0").glob("best.*"))
    good = export_runs([finished], tmp_path / "g.tar.gz", ExportOptions(weights="all"))
    swapped = _rebuild(good, tmp_path / "s.tar.gz", lambda r, files: files.update({"best.safetensors": b"x" * 9}))
    with pytest.raises(DardError, match="best.json does not describe best.safetensors beside it"):
        import_runs(swapped, tmp_path / "runs")
    assert not any((tmp_path / "runs").iterdir())
    # a merge adds the imported weights beside the local metadata: two copies of one run trained apart
    other = Path(shutil.copytree(finished, tmp_path / "other" / "run-s0"))
    _another_save(other, describe=True)
    local = Path(shutil.copytree(finished, tmp_path / "runs" / "run-s0"))
    (local / "best.safetensors").unlink()
    before = _files(local)
    with pytest.raises(DardError, match="the imported best.safetensors and the local best.json are of different"):
        import_runs(export_runs([other], tmp_path / "o.tar.gz", ExportOptions(weights="all")), tmp_path / "runs")
    assert _files(local) == before


def test_a_run_whose_config_was_edited_after_dard_wrote_it_is_neither_exported_nor_imported(finished, tmp_path):
    # run.json records the SHA-256 of the config.yaml dard wrote; a config edited since (another seed) was exported
    # and imported as the run's, its records made with another config, and a resume of the copy refused it
    run = Path(shutil.copytree(finished, tmp_path / "src" / "run-s0"))
    archive = export_runs([run], tmp_path / "a.tar.gz")
    (run / "config.yaml").write_text((run / "config.yaml").read_text().replace("seed: 0", "seed: 5"))
    with pytest.raises(DardError, match=f"cannot export {run}: .*config.yaml was changed after dard wrote it"):
        export_runs([run], tmp_path / "b.tar.gz")
    with pytest.raises(DardError, match="run-s0/config.yaml was changed after dard wrote it"):
        import_runs(run, tmp_path / "runs")
    edited = _rebuild(archive, tmp_path / "e.tar.gz", lambda r, files: files.update({"config.yaml": b"seed: 5\n"}))
    with pytest.raises(DardError, match="run-s0/config.yaml was changed after dard wrote it"):
        import_runs(edited, tmp_path / "runs")
    assert not (tmp_path / "b.tar.gz").exists() and not any((tmp_path / "runs").iterdir())


def test_a_file_or_fifo_where_an_imported_run_goes_is_named_as_such(finished, tmp_path):
    # a FIFO or a file at runs/<name> was "cannot create run folder runs/run-s0: File exists", naming neither
    archive = export_runs([finished], tmp_path / "a.tar.gz", ExportOptions(weights="none"))
    root = tmp_path / "runs"
    root.mkdir()
    os.mkfifo(root / "run-s0")
    with pytest.raises(DardError, match=f"{root / 'run-s0'} is a FIFO, not a run folder; move it away"):
        import_runs(archive, root)
    (root / "run-s0").unlink()
    (root / "run-s0").write_text("mine\n")
    with pytest.raises(DardError, match=f"{root / 'run-s0'} is a file, not a run folder"):
        import_runs(archive, root)
    assert sorted(p.name for p in root.iterdir()) == ["run-s0"] and (root / "run-s0").read_text() == "mine\n"


def _keep(run: Path, epoch: int, *suffixes: str) -> None:
    """A copy of ``run``'s best checkpoint files as the checkpoint keep_epochs kept at ``epoch`` (one save's)."""
    for suffix in suffixes:
        shutil.copyfile(run / f"best{suffix}", run / f"epoch-{epoch:03d}{suffix}")


def test_kept_checkpoints_travel_whole_or_are_named_as_left_out(finished, tmp_path):
    # keep_epochs' epoch-005 pairs (a teacher-quality ladder's teachers) stayed behind in silence: export and import
    # from a folder took best/last only, and left_out did not name them
    run = Path(shutil.copytree(finished, tmp_path / "src" / "run-s0"))
    _keep(run, 1, ".safetensors", ".json")
    _keep(run, 3, ".safetensors")  # its metadata never written (killed between the two): no use without it
    archive = export_runs([run], tmp_path / "a.tar.gz")
    with tarfile.open(archive) as tar:
        names, left_out = tar.getnames(), json.load(tar.extractfile(MANIFEST))["runs"][0]["left_out"]
    assert {"run-s0/epoch-001.safetensors", "run-s0/epoch-001.json"} <= set(names)
    assert not any("epoch-003" in n for n in names) and "epoch-003 (epoch-003.json is missing)" in left_out
    import_runs(archive, tmp_path / "runs")
    for name in ("epoch-001.safetensors", "epoch-001.json"):
        assert (tmp_path / "runs" / "run-s0" / name).read_bytes() == (run / name).read_bytes()
    with tarfile.open(export_runs([run], tmp_path / "b.tar.gz", ExportOptions(weights="best"))) as tar:
        names, left_out = tar.getnames(), json.load(tar.extractfile(MANIFEST))["runs"][0]["left_out"]
    assert not any("epoch-" in n for n in names) and "epoch-001.safetensors (--weights best)" in left_out
    # unfinished at epoch 1: a kept epoch 3 is past its snapshot, and a resume would set it aside
    shutil.rmtree(run / "eval")
    _keep(run, 3, ".json")
    with tarfile.open(export_runs([run], tmp_path / "u.tar.gz")) as tar:
        names, left_out = tar.getnames(), json.load(tar.extractfile(MANIFEST))["runs"][0]["left_out"]
    assert "run-s0/epoch-001.json" in names and not any("epoch-003" in n for n in names)
    assert any(n.startswith("epoch-003 (past epoch 1") for n in left_out)
    import_runs(run, tmp_path / "folder")  # from the folder: the same choice
    assert sorted(p.name for p in (tmp_path / "folder" / "run-s0").glob("epoch-*")) == [
        "epoch-001.json",
        "epoch-001.safetensors",
    ]
    half = _rebuild(archive, tmp_path / "h.tar.gz", lambda r, files: files.pop("epoch-001.json"))
    with pytest.raises(DardError, match="carries one file of kept checkpoint epoch-001"):
        import_runs(half, tmp_path / "other")
    past = _rebuild(
        archive, tmp_path / "p.tar.gz", lambda r, files: files.update({"epoch-009.json": files["epoch-001.json"]})
    )
    with pytest.raises(DardError, match="carries one file of kept checkpoint epoch-009"):
        import_runs(past, tmp_path / "other")
    whole = {f"epoch-003{s}": (run / f"epoch-001{s}").read_bytes() for s in (".safetensors", ".json")}
    ahead = _rebuild(tmp_path / "u.tar.gz", tmp_path / "w.tar.gz", lambda r, files: files.update(whole))
    with pytest.raises(DardError, match="kept checkpoint epoch-003 cannot travel: past epoch 1"):
        import_runs(ahead, tmp_path / "other")  # an unfinished run's, past its snapshot: a resume sets it aside
    assert not (tmp_path / "other").exists() or not any((tmp_path / "other").iterdir())


def test_the_teacher_measured_on_its_own_travels_and_is_read_strictly(finished, tmp_path):
    # eval/teacher.json (the teacher-quality extra's cache) was left out of an export: the report of the imported
    # copy measured the teacher again (PGD-20 on a GPU job's ResNet-18 teacher, on the CPU)
    from dard.run_dir.records import TeacherQualityFile

    run = RunDir(shutil.copytree(finished, tmp_path / "src" / "run-s0"))
    from dard.evaluation.record import EvalRecord

    raw = json.loads(run.eval_file("best").read_text())
    own = {k: v for k, v in raw.items() if k in EvalRecord.__dataclass_fields__}
    run.write_teacher_quality(TeacherQualityFile({"n": 4}, {"weights_digest": "ab"}, EvalRecord.from_dict(own)))
    out = export_runs([run.path], tmp_path / "r.tar.gz", ExportOptions(weights="none"))
    import_runs(out, tmp_path / "runs")
    assert RunDir(tmp_path / "runs" / "run-s0").read_teacher_quality() == run.read_teacher_quality()
    raw = json.loads(run.teacher_quality_file.read_text())
    raw["record"]["clean"]["correct"] = 10**6
    run.teacher_quality_file.write_text(json.dumps(raw))
    with pytest.raises(DardError, match="teacher.json"):
        import_runs(run.path, tmp_path / "other")
