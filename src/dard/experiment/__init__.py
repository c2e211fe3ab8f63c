"""`dard experiment NAME`: run every training run of an experiment, evaluate them and write a results report.

An experiment is a YAML file, ``experiments/<NAME>/<SCALE>.yaml`` (README "Experiments")::

    title: Main comparison
    base: ../_scales/cpu.yaml         # run config shared by all runs (path relative to this file)
    seeds: [0, 1, 2]
    teacher: {name: teacher-sat-resnet20, seed: 0, config: {model: {arch: resnet20}, method: {name: sat}}}
    runs:                             # run name -> overrides of the base config
      sat: {method: {name: sat}}
      dard: {method: {name: dard}}
    compare_attacks: {n: 300, attacks: {pgd-10: {name: pgd, steps: 10, step_ratio: 0.25}}}   # optional
    plot_param: {param: lam, label: lambda}                                                     # optional
    label_gap: {n: 500}                      # optional: how far the teacher's soft labels move under attack

The teacher is trained first (once; ``seed: null`` trains one per seed) and every student that needs one gets
its best checkpoint. Run folders live in ``<runs>/<name>-s<seed>``; experiments of one scale share that folder, so
a run with the same name and config (the DARD student of the main comparison is the lambda = 0.5 point of the
sweep) is trained once and reused. A folder whose recorded config differs is an error, never silently reused.
Interrupted runs resume. The report (``report.md``, ``results.json``, plots) goes to ``<results>``.
"""

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
