"""A run's final evaluation: its selected checkpoints on the test split with the suite, written to ``eval/``."""

from __future__ import annotations

import functools
import json
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import torch
from torch import nn

from dard.attacks import Attack
from dard.checkpoint import load_checkpoint, weights_digest
from dard.config import RunConfig
from dard.data.fingerprint import data_provenance
from dard.evaluation.labels import AUTOATTACK_SUBSET_SUITE
from dard.evaluation.record import AttackResult, Count, test_data_info
from dard.evaluation.resume import EvalResume, EvaluationStopped
from dard.evaluation.suite import EvalRecord, build_suite, evaluate
from dard.run_dir import EpsSweep, EvalFile, EvalPart, EvalProgress, RunDir
from dard.runtime import environment
from dard.training.cost import DataSizes, arch_macs, attack_passes, evaluation_rate
from dard.training.deadline import TrainingStopped, stop_requested, watching_stop_event
from dard.training.setup import Data, at_key, float_tensors

SWEEP_ATTACK = "pgd20"
#: asked before each attack of an evaluation: whether it would end past the deadline (attack, images)
StopBefore = Callable[[Attack, int], bool]


@dataclass
class EvalAttacks:
    """The final evaluation's attacks, built once (when the run's config is checked) and reused for each checkpoint:
    they are seeded, so every call is the same attack."""

    suite: dict[str, Attack]  # eval.attacks, by label
    autoattack_subset: dict[str, Attack] | None  # for eval.autoattack_subset; None when not configured
    eps_sweep: list[tuple[float, Attack]]  # PGD-20 at each eps of eval.eps_sweep


def eval_attacks(cfg: RunConfig) -> EvalAttacks:
    """Build the final evaluation's attacks; a bad one is a one-line DardError prefixed with its config key."""
    suite = at_key("eval.attacks", lambda: build_suite(cfg.eval.attacks, cfg.eps, seed=cfg.seed, norm=cfg.norm))
    subset = None
    if cfg.eval.autoattack_subset:
        subset = at_key(
            "eval.autoattack_subset",
            lambda: build_suite(AUTOATTACK_SUBSET_SUITE, cfg.eps, seed=cfg.seed, norm=cfg.norm),
        )
    sweep = [(eps, at_key("eval.eps_sweep", functools.partial(_sweep_attack, cfg, eps))) for eps in cfg.eval.eps_sweep]
    return EvalAttacks(suite=suite, autoattack_subset=subset, eps_sweep=sweep)


def _sweep_attack(cfg: RunConfig, eps: float) -> Attack:
    return build_suite([SWEEP_ATTACK], eps, seed=cfg.seed, norm=cfg.norm)[SWEEP_ATTACK]


def final_evaluation(
    cfg: RunConfig,
    run_dir: Path,
    data: Data,
    device: torch.device,
    attacks: EvalAttacks | None = None,
    stop_at: float | None = None,
) -> None:
    """Evaluate the configured checkpoints on the test split; writes ``eval/<checkpoint>.json``.

    The expensive extras (AutoAttack on a subset, the eps sweep) run for the first listed checkpoint only (best).
    A checkpoint whose evaluation is already written (a resumed run) is skipped. Checkpoints holding the same
    weights (:func:`~dard.checkpoint.weights_digest`: ``best`` is ``last`` when the last epoch was the best) are
    evaluated once; the record names them all (``model.checkpoints``) and is written under each name.
    ``attacks``: those :func:`eval_attacks` built for ``cfg`` (built here when not given).

    Each attack's result is kept in ``eval/progress-<checkpoint>.json`` as it finishes, and a later call continues
    from there (a killed evaluation loses one attack at most). ``stop_at`` (a ``time.time()`` deadline): an attack
    starts only if its estimate fits before it; otherwise :class:`TrainingStopped` with ``evaluation_pending``.
    """
    attacks = attacks if attacks is not None else eval_attacks(cfg)
    folder = RunDir(run_dir)
    x, y = float_tensors(data.test, device)
    env = environment(device)
    data_info = test_data_info(data.bundle.name, int(x.shape[0]), data_provenance(data.bundle))
    digests = {w: weights_digest(folder.weights(w)) for w in cfg.eval.checkpoints}
    stop_before = _deadline(cfg, folder, DataSizes.of(data), device, stop_at)
    for which in cfg.eval.checkpoints:
        if folder.eval_file(which).exists():
            continue
        twins = [w for w in cfg.eval.checkpoints if digests[w] == digests[which]]
        done = next((w for w in twins if w != which and folder.eval_file(w).exists()), None)
        if done is not None:
            folder.write_eval(which, folder.read_eval(done))
            continue
        model, meta = load_checkpoint(folder.weights(which), device, arch=cfg.model.arch)
        info = {**meta["model"], "checkpoint": f"{which}", "epoch": meta.get("epoch"), "weights_digest": digests[which]}
        if len(twins) > 1:
            info["checkpoints"] = twins
        kept = _KeptProgress.load(folder, which, EvalProgress(digests[which], data_info, cfg.seed))
        first = which == cfg.eval.checkpoints[0]
        try:
            record = evaluate(
                model,
                x,
                y,
                attacks.suite,
                batch_size=cfg.eval.batch_size,
                device=device,
                progress=cfg.progress,
                model_info=info,
                data_info=data_info,
                seed=cfg.seed,
                environment=env,
                resume=kept.resume("suite", stop_before),
                threat_model=(cfg.norm, cfg.eps),
            )
            subset = None
            if first:
                resume = kept.resume("autoattack_subset", stop_before)
                subset = _autoattack_subset(cfg, attacks, model, (x, y), record.clean, info, data_info, env, resume)
        except EvaluationStopped:
            raise TrainingStopped(folder.path, cfg.optim.epochs, 0, evaluation_pending=True) from None
        sweep = _eps_sweep(cfg, attacks, model, x, y) if first else None
        folder.write_eval(which, EvalFile.of(record, autoattack_subset=subset, eps_sweep=sweep))
        folder.remove_eval_progress(which)


@dataclass
class _KeptProgress:
    """A checkpoint's evaluation progress (``eval/progress-<checkpoint>.json``), written as each attack finishes."""

    folder: RunDir
    which: str
    state: EvalProgress

    @classmethod
    def load(cls, folder: RunDir, which: str, fresh: EvalProgress) -> _KeptProgress:
        """The progress on disk if it is of the same weights, images and seed as ``fresh`` (else ``fresh``)."""
        old = folder.read_eval_progress(which)
        return cls(folder, which, old if old is not None and _identity(old) == _identity(fresh) else fresh)

    def resume(self, part: Literal["suite", "autoattack_subset"], stop_before: StopBefore | None) -> EvalResume:
        """How :func:`evaluate` continues ``part`` and keeps its progress."""
        earlier: EvalPart | None = getattr(self.state, part)

        def keep(clean: Count, results: dict[str, AttackResult]) -> None:
            setattr(self.state, part, EvalPart(clean, results))
            self.folder.write_eval_progress(self.which, self.state)

        done = earlier.attacks if earlier is not None else {}
        return EvalResume(earlier.clean if earlier else None, done, on_attack=keep, stop_before=stop_before)


def _identity(progress: EvalProgress) -> Any:
    """What an evaluation's progress holds for, as stored: the weights, the images (by name, count and files'
    fingerprint; not the folder they were read from, which another machine names otherwise) and the seed."""
    data = {k: v for k, v in progress.data.items() if k != "folder"}
    return json.loads(json.dumps([progress.weights_digest, data, progress.seed]))


def _deadline(
    cfg: RunConfig, folder: RunDir, sizes: DataSizes, device: torch.device, stop_at: float | None
) -> StopBefore | None:
    """Whether an attack on ``n`` images would not end before ``stop_at``, at the run's evaluation rate, or a stop
    is requested (:func:`dard.training.deadline.stop_requested`); None when neither can happen."""
    if stop_at is None:
        return (lambda attack, n: stop_requested()) if watching_stop_event() else None
    rate = evaluation_rate(cfg, folder, sizes, device.type)  # MACs/s
    macs = arch_macs(cfg.model.arch, sizes.classes, sizes.shape, cfg.model.kwargs)  # per image and pass
    return lambda attack, n: (
        stop_requested() or time.time() + n * attack_passes(attack.config()) * macs / rate > stop_at
    )


def _autoattack_subset(
    cfg: RunConfig,
    attacks: EvalAttacks,
    model: nn.Module,
    test: tuple[torch.Tensor, torch.Tensor],
    clean: Count,
    info: Mapping[str, Any],
    data_info: Mapping[str, Any],
    env: Mapping[str, Any],
    resume: EvalResume,
) -> EvalRecord | None:
    """AutoAttack on the first ``eval.autoattack_subset`` test images (None when not configured), with the clean
    and PGD-20 counts of the same images, so that every AutoAttack number stands beside the clean number it is
    bounded by. The clean outcomes are the main pass's (``clean``, of every test image) on those images: one image
    is never correct clean in one record of the run and wrong in the other."""
    x, y = test
    if attacks.autoattack_subset is None:
        return None
    assert cfg.eval.autoattack_subset is not None  # eval_attacks builds the subset's attacks only when it is set
    k = min(cfg.eval.autoattack_subset, x.shape[0])
    outcomes = clean.outcome_array()
    assert outcomes is not None  # evaluate() always records them
    return evaluate(
        model,
        x[:k],
        y[:k],
        attacks.autoattack_subset,
        batch_size=cfg.eval.batch_size,
        device=x.device,
        progress=cfg.progress,
        model_info=info,
        data_info={**data_info, "n": k, "first_n": k},
        seed=cfg.seed,
        environment=env,
        resume=resume,
        clean_outcomes=torch.from_numpy(outcomes[:k]),
    )


def _eps_sweep(
    cfg: RunConfig, attacks: EvalAttacks, model: nn.Module, x: torch.Tensor, y: torch.Tensor
) -> EpsSweep | None:
    """PGD-20 robust counts on the test images at each eps of ``eval.eps_sweep`` (None when not configured)."""
    if not attacks.eps_sweep:
        return None
    correct = {}
    for eps, attack in attacks.eps_sweep:
        suite = {SWEEP_ATTACK: attack}
        r = evaluate(model, x, y, suite, batch_size=cfg.eval.batch_size, device=x.device, progress=False)
        correct[f"{eps:.6f}"] = r.attacks[SWEEP_ATTACK].correct
    return EpsSweep(attack=SWEEP_ATTACK, correct=correct, total=int(x.shape[0]))
