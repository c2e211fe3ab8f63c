"""`dard experiment NAME`: train, evaluate and report every run of an experiment file
(``experiments/<NAME>/<SCALE>.yaml``; its format is in docs/results.md, "Experiments"). :mod:`.spec` reads and plans
it, :mod:`.runner` trains (reusing and resuming run folders) and adds the per-run extras, :mod:`.report` writes
the report."""

from dard.experiment.report import attack_comparison, label_gap_table, write_experiment_report
from dard.experiment.runner import (
    RUN_DONE,
    check_reusable,
    compare_attacks,
    label_gap,
    plan_experiment,
    run_experiment,
    run_status,
)
from dard.experiment.spec import (
    Experiment,
    ExperimentSpec,
    deep_merge,
    experiments_root,
    list_experiments,
    load_experiment,
    planned_runs,
    teacher_runs,
)

__all__ = [
    "Experiment",
    "ExperimentSpec",
    "RUN_DONE",
    "attack_comparison",
    "check_reusable",
    "compare_attacks",
    "deep_merge",
    "experiments_root",
    "label_gap",
    "label_gap_table",
    "list_experiments",
    "load_experiment",
    "plan_experiment",
    "planned_runs",
    "run_experiment",
    "run_status",
    "teacher_runs",
    "write_experiment_report",
]
