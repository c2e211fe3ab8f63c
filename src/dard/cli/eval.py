"""`dard eval`: its options, and the handler that turns them into an :class:`EvalRequest` and carries it out
(:mod:`dard.cli.eval_run`)."""

from __future__ import annotations

import argparse

__all__ = ["HELP", "add_arguments", "run"]

HELP = "evaluate a model's robustness with the attack suite"


def add_arguments(p: argparse.ArgumentParser) -> None:
    """`dard eval`'s options."""
    p.add_argument("checkpoint", nargs="?", help="dard checkpoint (.safetensors with its .json) or a run folder")
    p.add_argument(
        "--model",
        help="architecture (a `dard list` name, timm:NAME or user code module:function) of the --weights, or of a "
        "checkpoint built from user code; robustbench:NAME alone evaluates that RobustBench model",
    )
    p.add_argument("--weights", help="external weights file (.pt/.pth/.safetensors state dict), loaded weights-only")
    p.add_argument(
        "--model-arg",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="keyword argument of the --model factory for --weights (a value read as YAML; repeatable), e.g. "
        "img_size=32 for a timm ViT: as a config's model.kwargs",
    )
    p.add_argument(
        "--model-dir",
        help="RobustBench's model folder for --model robustbench:NAME (default $DARD_MODEL_DIR, else "
        "~/.cache/dard/robustbench); offline, put <dataset>/<threat>/<NAME>.pt there",
    )
    p.add_argument(
        "--normalization",
        choices=["dataset", "none"],
        help="required with --weights: 'dataset' (trained on inputs normalised with the dataset mean/std) or "
        "'none' (trained on raw [0, 1] pixels); a dard checkpoint records its own",
    )
    p.add_argument("--data", help="dataset name (default: a run's own dataset, else cifar10)")
    p.add_argument("--data-dir", help="data folder (official CIFAR layout, or an image folder)")
    p.add_argument("--download", action="store_true", help="download the official archive if absent")
    p.add_argument("--n", type=int, help="evaluate the first N test images (default: all)")
    from dard.evaluation.labels import QUICK_SUITE  # plain data: the parser imports no torch

    p.add_argument(
        "--attacks",
        help=f"comma-separated suite labels (fgsm,pgd20,pgd-ll,tpgd-kl,bim,cw-linf,dpgd,pgd-large,autoattack) or "
        f"attack names (default: {','.join(QUICK_SUITE)}; under L2 without the Linf-only cw-linf)",
    )
    p.add_argument("--eps", help="budget, a number or fraction (default: a run's own eps, else 8/255)")
    p.add_argument(
        "--norm",
        type=str.lower,
        choices=["linf", "l2"],
        help="threat-model norm of every attack (default: a run's own norm, else linf)",
    )
    p.add_argument("--batch-size", type=int, default=256, help="images per attack batch (default 256)")
    p.add_argument("--seed", type=int, default=0, help="seed of the attacks' random starts (default 0)")
    p.add_argument("--device", default="auto", help="auto (CUDA if available), cpu, cuda or cuda:N")
    p.add_argument(
        "--out", help="write the JSON record here (never over a file that is not an eval record; in a run: eval/)"
    )
    p.add_argument("--no-progress", action="store_true", help="no progress bars")


def run(args: argparse.Namespace) -> int:
    """Carry out `dard eval` (the table on stdout, the record in --out)."""
    from dard.cli.eval_request import EvalRequest
    from dard.cli.eval_run import run_eval

    run_eval(EvalRequest.from_args(args))
    return 0
