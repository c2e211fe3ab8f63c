"""Robustness evaluation: the attack suite, the JSON record, sanity checks and reports."""

from dard.evaluation.suite import (
    DEFAULT_SUITE,
    EvalRecord,
    build_suite,
    evaluate,
    parse_eps,
)

__all__ = ["DEFAULT_SUITE", "EvalRecord", "build_suite", "evaluate", "parse_eps"]
