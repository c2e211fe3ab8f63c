"""A run's final evaluation: checkpoints holding the same weights are evaluated once, under both names."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file, save_file
from tests.cli_checks import rehash_checkpoint

import dard.training.final_eval as final_eval
from dard.checkpoint import FORMAT, weights_digest
from dard.config import parse_config
from dard.errors import DardError
from dard.evaluation.table import format_evaluations
from dard.experiment.reuse import run_status
from dard.run_dir import RunDir
from dard.training.cost import DataSizes, run_cost
from dard.training.deadline import TrainingStopped
from dard.training.setup import prepare_data


def _evaluate_again(run: Path, monkeypatch) -> list[str]:
    """Remove the run's evaluations and evaluate it again; returns the checkpoints the suite ran on."""
    shutil.rmtree(run / "eval")
    (run / "eval").mkdir()
    calls: list[str] = []
    real = final_eval.evaluate

    def counting(*args, **kwargs):
        calls.append(kwargs["model_info"]["checkpoint"])
        return real(*args, **kwargs)

    monkeypatch.setattr(final_eval, "evaluate", counting)
    cfg = parse_config(RunDir(run).read_config())
    final_eval.final_evaluation(cfg, run, prepare_data(cfg), torch.device("cpu"))
    return calls


def test_the_same_weights_are_evaluated_once(finished_run: Path, tmp_path: Path, monkeypatch):
    run = tmp_path / "run"
    shutil.copytree(finished_run, run)
    folder = RunDir(run)
    assert weights_digest(folder.weights("best")) == weights_digest(folder.weights("last"))  # 1 epoch: best is last
    assert _evaluate_again(run, monkeypatch) == ["best"]
    best, last = folder.read_eval("best"), folder.read_eval("last")
    assert best == last and best.model["checkpoints"] == ["best", "last"]
    assert best.model["weights_digest"] == weights_digest(folder.weights("best"))
    text = format_evaluations(folder.read_evals())  # what the end of `dard train` prints: one table
    assert text.count("attack ") == 1 and "last checkpoint: the same weights as best, evaluated once" in text


def test_different_weights_are_evaluated_each(finished_run: Path, tmp_path: Path, monkeypatch):
    run = tmp_path / "run"
    shutil.copytree(finished_run, run)
    folder = RunDir(run)
    tensors = load_file(folder.weights("last"))
    first = next(k for k, v in tensors.items() if v.is_floating_point())
    tensors[first] = tensors[first] + 0.01  # last now differs from best
    save_file(tensors, folder.weights("last"), metadata={"format": FORMAT, "arch": "small_cnn"})
    rehash_checkpoint(folder.weights("last"))
    assert _evaluate_again(run, monkeypatch) == ["best", "last"]
    assert "checkpoints" not in folder.read_eval("last").model


# ------------------------------------------------------------------------------------------------ part-way, then on

ATTACKS = ["fgsm", "pgd20", "bim", "pgd-large"]


def _cfg_with(run: Path, attacks: list[str]):
    cfg = parse_config(RunDir(run).read_config())
    cfg.eval.attacks = attacks
    return cfg


def _stop_after(monkeypatch, k: int) -> list[str]:
    """Make the deadline allow ``k`` attacks to start; returns the labels asked about (by the attack's name)."""
    asked: list[str] = []

    def stopper(attack, n):
        asked.append(attack.name)
        return len(asked) > k

    monkeypatch.setattr(final_eval, "_deadline", lambda *a: stopper)
    return asked


def test_an_evaluation_stopped_between_attacks_continues_to_the_uninterrupted_record(
    finished_run: Path, tmp_path: Path, monkeypatch
):
    straight, stopped = tmp_path / "straight", tmp_path / "stopped"
    for run in (straight, stopped):
        shutil.copytree(finished_run, run)
        shutil.rmtree(run / "eval")
    cfg, data, cpu = _cfg_with(straight, ATTACKS), prepare_data(_cfg_with(straight, ATTACKS)), torch.device("cpu")
    final_eval.final_evaluation(cfg, straight, data, cpu)
    folder = RunDir(stopped)
    for k in (1, 3):  # two attacks more each time: fgsm; then pgd20, bim
        _stop_after(monkeypatch, 1 if k == 1 else 2)
        with pytest.raises(TrainingStopped) as stop:
            final_eval.final_evaluation(cfg, stopped, data, cpu, stop_at=0.0)
        assert stop.value.evaluation_pending and not folder.eval_file("best").exists()
        assert list(folder.read_eval_progress("best").suite.attacks) == ATTACKS[:k]
        assert run_status(stopped, 1) == f"trained; test evaluation pending ({k} attack(s) of it done)"
    sizes, kept = DataSizes.of(data), folder.eval_progress_file("best")  # what is kept is not counted again
    with_progress = run_cost(cfg, sizes, None, folder).eval_macs
    kept.rename(tmp_path / "aside.json")
    without = run_cost(cfg, sizes, None, folder).eval_macs
    (tmp_path / "aside.json").rename(kept)
    assert 0 < with_progress < without
    monkeypatch.undo()
    calls: list[str] = []
    real = final_eval.evaluate
    monkeypatch.setattr(final_eval, "evaluate", lambda *a, **k: calls.append(k["resume"]) or real(*a, **k))
    final_eval.final_evaluation(cfg, stopped, data, cpu)
    assert list(calls[0].done) == ATTACKS[:3]  # reused, not run again
    assert not folder.eval_progress_file("best").exists()  # its content is in the record now
    a, b = folder.read_eval("best"), RunDir(straight).read_eval("best")
    assert a.clean == b.clean and a.worst_case == b.worst_case and list(a.attacks) == ATTACKS
    for label in ATTACKS:  # every count and per-image outcome, as if never stopped
        assert a.attacks[label].count == b.attacks[label].count, label
        assert a.attacks[label].config == b.attacks[label].config


def test_progress_of_other_weights_or_attacks_is_not_reused(finished_run: Path, tmp_path: Path, monkeypatch):
    run = tmp_path / "run"
    shutil.copytree(finished_run, run)
    shutil.rmtree(run / "eval")
    folder = RunDir(run)
    cfg = _cfg_with(run, ATTACKS[:2])
    data, cpu = prepare_data(cfg), torch.device("cpu")
    _stop_after(monkeypatch, 1)
    with pytest.raises(TrainingStopped):
        final_eval.final_evaluation(cfg, run, data, cpu, stop_at=0.0)
    kept = folder.read_eval_progress("best")
    monkeypatch.undo()
    asked = _stop_after(monkeypatch, 99)
    # another attack under a kept label: its config differs, so it runs again
    cfg.eval.attacks = ["fgsm", "pgd20"]
    changed = kept.suite.attacks["fgsm"]
    changed.config = {**changed.config, "eps": 0.05}
    folder.write_eval_progress("best", kept)
    final_eval.final_evaluation(cfg, run, data, cpu, stop_at=0.0)
    assert asked == ["fgsm", "pgd"]
    # other weights: the whole progress is left aside
    kept.suite.attacks["fgsm"].config = folder.read_eval("best").attacks["fgsm"].config
    for which in ("best", "last"):  # (last: the same weights, whose record would be copied)
        folder.eval_file(which).unlink()
    kept.weights_digest = "0" * 64
    folder.write_eval_progress("best", kept)
    asked.clear()
    final_eval.final_evaluation(cfg, run, data, cpu, stop_at=0.0)
    assert asked == ["fgsm", "pgd"]


@pytest.mark.parametrize(
    "damage, says",
    [
        (
            lambda d: d["suite"]["attacks"]["fgsm"].update(correct=d["suite"]["attacks"]["fgsm"]["correct"] + 1),
            "suite.fgsm counts",
        ),
        (lambda d: d["suite"]["clean"].update(outcomes="***"), "not valid base64"),
        (lambda d: d["suite"]["clean"].update(correct=-1), "not a count"),
        (lambda d: d["suite"]["attacks"]["fgsm"].update(outcomes=None), "no per-image outcomes"),
        (lambda d: d.update(seed="0"), "seed"),
    ],
)
def test_a_damaged_progress_file_is_one_line_naming_it(finished_run: Path, tmp_path: Path, monkeypatch, damage, says):
    run = tmp_path / "run"
    shutil.copytree(finished_run, run)
    shutil.rmtree(run / "eval")
    folder = RunDir(run)
    cfg = _cfg_with(run, ATTACKS[:2])
    _stop_after(monkeypatch, 1)
    with pytest.raises(TrainingStopped):
        final_eval.final_evaluation(cfg, run, prepare_data(cfg), torch.device("cpu"), stop_at=0.0)
    path = folder.eval_progress_file("best")
    raw = json.loads(path.read_text())
    damage(raw)
    path.write_text(json.dumps(raw))
    with pytest.raises(DardError, match=says) as err:
        folder.read_eval_progress("best")
    assert str(path) in str(err.value) and "\n" not in str(err.value)


class _OtherKernelsFor(torch.nn.Module):
    """A model whose answers change for batches of ``size`` images: what other kernels (a GPU's, for a last batch
    of another shape) may do to an image on the decision boundary, made certain."""

    def __init__(self, model: torch.nn.Module, size: int) -> None:
        super().__init__()
        self.model, self.size = model, size

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        logits = self.model(x)
        return logits.roll(1, dims=1) if x.shape[0] == self.size else logits


def test_the_autoattack_subset_takes_its_clean_outcomes_from_the_main_pass(
    finished_run: Path, tmp_path: Path, monkeypatch
):
    run = tmp_path / "run"
    shutil.copytree(finished_run, run)
    main_clean = RunDir(run).read_eval("best").clean.outcome_array()
    shutil.rmtree(run / "eval")
    # the first image the model gets right whose subset ends a batch of its own size (16 per batch; main: 16, 16)
    k = next(i + 1 for i in range(len(main_clean)) if main_clean[i] and (i + 1) % 16)
    cfg = _cfg_with(run, ["fgsm"])
    cfg.eval.batch_size, cfg.eval.autoattack_subset, cfg.eval.checkpoints = 16, k, ["best"]
    real = final_eval.load_checkpoint
    monkeypatch.setattr(
        final_eval, "load_checkpoint", lambda *a, **kw: (_OtherKernelsFor(real(*a, **kw)[0], k % 16), real(*a, **kw)[1])
    )
    final_eval.final_evaluation(cfg, run, prepare_data(cfg), torch.device("cpu"))
    saved = RunDir(run).read_eval("best")
    assert np.array_equal(saved.clean.outcome_array(), main_clean)  # batches of 16: the model unchanged
    subset = saved.autoattack_subset
    assert subset.clean.total == k and np.array_equal(subset.clean.outcome_array(), main_clean[:k])
    for label, result in subset.attacks.items():  # robust only where correct clean, in the main pass's outcomes
        assert not (result.count.outcome_array() & ~main_clean[:k]).any(), label
