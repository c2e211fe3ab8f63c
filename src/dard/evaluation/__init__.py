"""Robustness evaluation, the measuring core: the attack suite, the JSON record (EvalRecord), sanity checks, soft
labels, intervals and the text table. The reports are :mod:`dard.report`; `dard eval` is :mod:`dard.cli.eval`."""

from dard.evaluation.suite import (
    DEFAULT_SUITE,
    EvalRecord,
    build_suite,
    evaluate,
    parse_eps,
)

__all__ = ["DEFAULT_SUITE", "EvalRecord", "build_suite", "evaluate", "parse_eps"]
