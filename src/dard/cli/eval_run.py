"""`dard eval`: load a model, run the suite on the first N test images, print a table, write a JSON record."""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from dard.checkpoint import checkpoint_meta, load_model
from dard.cli.eval_request import EvalRequest
from dard.cli.eval_settings import EvalSettings, eval_settings
from dard.cli.output import EvalOutput
from dard.data import DatasetBundle, load_dataset
from dard.data.fingerprint import data_provenance
from dard.errors import DardError
from dard.evaluation.record import EvalRecord, test_data_info
from dard.evaluation.suite import build_suite, evaluate, quick_suite
from dard.evaluation.table import format_table, threat_text
from dard.model_fit import check_fits, check_stated_normalization
from dard.models import check_factory_kwargs, library_prefix, model_factory
from dard.models.robustbench import THREAT_MODELS, weight_paths
from dard.runtime import configure_threads, environment, resolve_device, seed_everything
from dard.user_code import release_warnings
from dard.weights import read_state_dict

__all__ = ["run_eval"]


def _load_model_and_data(
    request: EvalRequest, settings: EvalSettings, device: torch.device, kwargs: dict[str, Any]
) -> tuple[nn.Module, dict, DatasetBundle]:
    """The model to evaluate, its provenance for the record, and the dataset; the checkpoint or weights file is
    checked before the (possibly large) data is loaded."""
    state = None
    if request.checkpoint:
        checkpoint_meta(request.checkpoint, request.model)
    elif not request.model:
        raise DardError("--weights needs --model ARCH (see `dard list`)")
    if request.model:
        model_factory(request.model)  # a registered name, or user code module:function (imported here)
        if request.weights:  # --model-arg names the factory takes (a misspelt one was found after the data loaded)
            check_factory_kwargs(request.model, kwargs)
    if request.weights:
        stated = f"--normalization {request.normalization}"
        check_stated_normalization(
            request.weights, request.normalization == "dataset", stated, f"dard eval {request.weights}", request.model
        )
        state = read_state_dict(request.weights)
    threat = THREAT_MODELS[settings.norm]  # a zoo model of the evaluation's threat model: it took the Linf table's
    if _is_zoo_model(request):  # the zoo lists it for the dataset: an unknown name was found after the data loaded
        weight_paths(str(request.model).split(":", 1)[1], settings.data, threat, request.model_dir)
    # the weights load and fit the model and the dataset (another model's tensors, NaN, another class count): found
    # after the data had loaded
    try:
        check_fits(
            settings.data,
            settings.data_dir,
            checkpoint=request.checkpoint or None,
            arch=request.model,
            weights=state,
            kwargs=kwargs,
            source=request.weights,
        )
    except DardError as e:  # a dataset nobody named: "model takes 1 channels but dataset 'cifar10' has 3" said no why
        if not (settings.data_defaulted and f"dataset '{settings.data}'" in str(e)):
            raise
        raise DardError(f"{e} (no --data given and no run config names one: dard eval took {settings.data})") from None
    bundle = load_dataset(settings.data, settings.data_dir, download=request.download)
    loaded = load_model(
        bundle,
        device,
        checkpoint=request.checkpoint or None,
        arch=request.model,
        weights=state,
        normalize=None if request.normalization is None else request.normalization == "dataset",
        model_dir=request.model_dir,
        threat_model=threat,
        kwargs=kwargs,
        source=request.weights,
    )
    if _is_zoo_model(request):
        return loaded.model, loaded.info, bundle
    if request.checkpoint:
        info = {**loaded.info, "epoch": loaded.epoch}
        if settings.checkpoint:
            info["checkpoint"] = settings.checkpoint
    else:
        info = {
            "source": str(request.weights),
            "arch": request.model,
            "num_classes": bundle.num_classes,
            "normalization": request.normalization,
            **({"kwargs": kwargs} if kwargs else {}),
        }
    return loaded.model, info, bundle


def _is_zoo_model(request: EvalRequest) -> bool:
    """`--model robustbench:<name>` alone: a trained zoo model whose weights robustbench's loader finds."""
    return library_prefix(request.model) == "robustbench:" and not request.checkpoint and not request.weights


def run_eval(request: EvalRequest) -> EvalRecord:
    """Carry out `dard eval`: check the request, evaluate, print the table, write the record if asked."""
    if request.n is not None and request.n < 1:
        raise DardError("--n must be at least 1")
    if request.batch_size < 1:
        raise DardError("--batch-size must be at least 1")
    if bool(request.checkpoint) == bool(request.weights) and not _is_zoo_model(request):
        raise DardError("give either a dard checkpoint, --model ARCH --weights FILE, or --model robustbench:NAME")
    if _is_zoo_model(request) and request.normalization:
        raise DardError("--normalization is for --weights: a RobustBench model normalises its inputs itself")
    kwargs = request.model_kwargs()  # a malformed --model-arg is said before any work
    out = EvalOutput.check(request.out, request.checkpoint) if request.out else None
    settings = eval_settings(request)
    eps = settings.eps
    device = resolve_device(request.device)
    if device.type == "cpu":
        configure_threads(None)
    seed_everything(request.seed)
    # Validate the attack names before loading anything large.
    given = request.attacks if request.attacks is not None else ",".join(quick_suite(settings.norm))
    labels = [a.strip() for a in given.split(",") if a.strip()]
    attacks = build_suite(labels, eps, seed=request.seed, norm=settings.norm)

    model, info, bundle = _load_model_and_data(request, settings, device, kwargs)
    release_warnings()  # the model is loaded and checked: its code's warnings may be shown now
    test = bundle.test
    n = len(test) if request.n is None else min(request.n, len(test))
    notes = list(settings.notes)
    if request.n is not None and request.n > n:  # the header's "first N" said the cut, nothing said why
        notes.append(f"--n {request.n} is more than the {n} test images of {bundle.name}: all {n} are evaluated")
    x = test.x[:n].float().div(255)
    y = test.y[:n]
    record = evaluate(
        model,
        x,
        y,
        attacks,
        batch_size=request.batch_size,
        device=device,
        progress=request.progress,
        model_info=info,
        data_info=test_data_info(bundle.name, n, data_provenance(bundle)),
        seed=request.seed,
        environment=environment(device),
        threat_model=(settings.norm, eps),
    )
    for note in notes:
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
        kept = out.write(record)
        if kept is not None:
            print(f"note: {out.path} held the record of another evaluation; it is kept as {kept}")
        print(f"record written: {out.path}")
    return record
