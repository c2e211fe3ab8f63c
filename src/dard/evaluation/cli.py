"""`dard eval`: load a model, run the suite on the first N test images, print a table, write a JSON record."""

from __future__ import annotations

import argparse

import torch
from torch import nn

from dard.checkpoint import checkpoint_meta, load_model
from dard.data import DatasetBundle, load_dataset
from dard.data.fingerprint import data_provenance
from dard.errors import DardError
from dard.evaluation.eval_settings import EvalSettings, eval_settings
from dard.evaluation.output import EvalOutput
from dard.evaluation.record import test_data_info
from dard.evaluation.suite import EvalRecord, build_suite, evaluate, quick_suite
from dard.evaluation.table import format_table, threat_text
from dard.models import library_prefix, model_factory
from dard.runtime import configure_threads, environment, resolve_device, seed_everything
from dard.weights import read_state_dict

__all__ = ["format_table", "run_eval"]


def _load_model_and_data(
    args: argparse.Namespace, settings: EvalSettings, device: torch.device
) -> tuple[nn.Module, dict, DatasetBundle]:
    """The model to evaluate, its provenance for the record, and the dataset; the checkpoint or weights file is
    checked before the (possibly large) data is loaded."""
    state = None
    if args.checkpoint:
        checkpoint_meta(args.checkpoint, args.model)
    elif not args.model:
        raise DardError("--weights needs --model ARCH (see `dard list`)")
    if args.model:
        model_factory(args.model)  # a registered name, or user code module:function (imported here)
    if args.weights:
        state = read_state_dict(args.weights)
    bundle = load_dataset(settings.data, settings.data_dir, download=args.download)
    loaded = load_model(
        bundle,
        device,
        checkpoint=args.checkpoint or None,
        arch=args.model,
        weights=state,
        normalize=args.normalization == "dataset",
        model_dir=getattr(args, "model_dir", None),
    )
    if _is_zoo_model(args):
        return loaded.model, loaded.info, bundle
    if args.checkpoint:
        info = {**loaded.info, "epoch": loaded.epoch}
        if settings.checkpoint:
            info["checkpoint"] = settings.checkpoint
    else:
        info = {
            "source": str(args.weights),
            "arch": args.model,
            "num_classes": bundle.num_classes,
            "normalization": args.normalization,
        }
    return loaded.model, info, bundle


def _is_zoo_model(args: argparse.Namespace) -> bool:
    """`--model robustbench:<name>` alone: a trained zoo model whose weights robustbench's loader finds."""
    return library_prefix(args.model) == "robustbench:" and not args.checkpoint and not args.weights


def run_eval(args: argparse.Namespace) -> EvalRecord:
    """Carry out `dard eval` from parsed arguments."""
    if args.n is not None and args.n < 1:
        raise DardError("--n must be at least 1")
    if args.batch_size < 1:
        raise DardError("--batch-size must be at least 1")
    if bool(args.checkpoint) == bool(args.weights) and not _is_zoo_model(args):
        raise DardError("give either a dard checkpoint, --model ARCH --weights FILE, or --model robustbench:NAME")
    if _is_zoo_model(args) and args.normalization:
        raise DardError("--normalization is for --weights: a RobustBench model normalises its inputs itself")
    out = EvalOutput.check(args.out, args.checkpoint) if args.out else None
    settings = eval_settings(args)
    eps = settings.eps
    device = resolve_device(args.device)
    if device.type == "cpu":
        configure_threads(None)
    seed_everything(args.seed)
    # Validate the attack names before loading anything large.
    given = args.attacks if args.attacks is not None else ",".join(quick_suite(settings.norm))
    labels = [a.strip() for a in given.split(",") if a.strip()]
    attacks = build_suite(labels, eps, seed=args.seed, norm=settings.norm)

    model, info, bundle = _load_model_and_data(args, settings, device)
    test = bundle.test
    n = len(test) if args.n is None else min(args.n, len(test))
    x = test.x[:n].float().div(255)
    y = test.y[:n]
    record = evaluate(
        model,
        x,
        y,
        attacks,
        batch_size=args.batch_size,
        device=device,
        progress=not args.no_progress,
        model_info=info,
        data_info=test_data_info(bundle.name, n, data_provenance(bundle)),
        seed=args.seed,
        environment=environment(device),
    )
    for note in settings.notes:
        print(f"note: {note}")
    which = f"; {settings.checkpoint} checkpoint, epoch {info.get('epoch')}" if settings.checkpoint else ""
    print(
        f"model: {info.get('arch')} ({info['source']}{which})  data: {bundle.name} test, first {n}  "
        f"threat: {threat_text(settings.norm, eps)}"
    )
    print(format_table(record))
    for flag in record.flags:
        print(f"WARNING: {flag}")
    if out is not None:
        out.write(record)
        print(f"record written: {out.path}")
    return record
