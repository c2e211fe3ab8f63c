"""A run's final evaluation: checkpoints holding the same weights are evaluated once, under both names."""

from __future__ import annotations

import shutil
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

import dard.training.final_eval as final_eval
from dard.checkpoint import FORMAT, weights_digest
from dard.config import parse_config
from dard.evaluation.table import format_evaluations
from dard.run_dir import RunDir
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
    assert _evaluate_again(run, monkeypatch) == ["best", "last"]
    assert "checkpoints" not in folder.read_eval("last").model
