"""`dard experiment NAME`: train, evaluate and report every run of an experiment file
(``experiments/<NAME>/<SCALE>.yaml``; its format is in docs/results.md, "Experiments"). :mod:`.catalog` finds and
loads it (:mod:`.spec`: its schema), :mod:`.plan` makes its runs (:class:`PlannedRun`), :mod:`.runner` trains them
(reusing and resuming run folders; :mod:`.budget` within a time budget), :mod:`.extras` adds the per-run extras and
:mod:`.report` writes the report."""

from dard.experiment.catalog import experiments_root, list_experiments, load_experiment
from dard.experiment.extras import compare_attacks, label_gap
from dard.experiment.gap_section import label_gap_table
from dard.experiment.plan import PlannedRun, plan_experiment, plan_runs
from dard.experiment.report import attack_comparison, write_experiment_report
from dard.experiment.reuse import RUN_DONE, check_reusable, run_status
from dard.experiment.runner import run_experiment
from dard.experiment.spec import Experiment, ExperimentSpec, deep_merge

__all__ = [
    "Experiment",
    "ExperimentSpec",
    "PlannedRun",
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
    "plan_runs",
    "run_experiment",
    "run_status",
    "write_experiment_report",
]
