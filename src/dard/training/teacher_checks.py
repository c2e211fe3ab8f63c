"""The teacher a config names, checked before the data loads (:func:`dard.training.preflight.check_config` and
:func:`check_teacher`): a method that distils has one and a method that does not has none, no key is given that
would do nothing, external weights state their normalisation and fit their architecture and the dataset, a dard
checkpoint is the one meant and not in a run that is training, and a zoo model is listed for the dataset and norm.
Each was found after the data had loaded, or not at all."""

from __future__ import annotations

from pathlib import Path

from dard.attacks.threat import NORM_NAMES
from dard.checkpoint import TEACHER_RAW_HINT, check_not_training, checkpoint_meta, teacher_checkpoint
from dard.config import RunConfig
from dard.errors import DardError, shown
from dard.model_fit import check_fits, check_stated_normalization
from dard.models import check_factory_kwargs, library_prefix, model_factory
from dard.run_dir import RunDir
from dard.training.setup import at_key
from dard.weights import check_weights_file

TEACHER_HINT = (
    "pass --teacher RUN (a dard run folder or checkpoint, or robustbench:NAME), or set teacher.arch + "
    "teacher.weights (and teacher.normalize) for external weights"
)
TEACHER_NORMALIZE = (
    "true if the teacher was trained on inputs normalised with the dataset's mean/std (dard then normalises inside "
    "it), false if on raw [0, 1] pixels (--set teacher.normalize=true|false)"
)


def check_teacher_config(cfg: RunConfig, needs_teacher: bool) -> None:
    """The teacher keys against the method (``needs_teacher``) and each other; external weights against their
    architecture and the dataset."""
    check_teacher_keys(cfg)
    if needs_teacher and not cfg.teacher.given:
        raise DardError(f"method '{cfg.method.name}' needs a teacher: {TEACHER_HINT}")
    if cfg.teacher.given and not needs_teacher:
        given = cfg.teacher.checkpoint or cfg.teacher.weights
        raise DardError(
            f"method '{cfg.method.name}' takes no teacher, but one is given ({given}); drop --teacher / teacher.*"
        )
    if cfg.teacher.weights and "normalize" not in cfg.teacher.model_fields_set:
        # external weights do not say how their inputs were normalised, and either default is wrong for some
        # teachers: normalised twice, or not at all, a teacher falls far below its accuracy without an error (dard eval
        # --weights asks the same)
        raise DardError(f"teacher.weights needs teacher.normalize: {TEACHER_NORMALIZE}")
    if cfg.teacher.weights and cfg.teacher.arch:  # before the data loads: a typo there cost a data load, a student
        at_key("teacher.arch", lambda: model_factory(str(cfg.teacher.arch)))
        at_key("teacher.kwargs", lambda: check_factory_kwargs(str(cfg.teacher.arch), cfg.teacher.kwargs))
        at_key("teacher.weights", lambda: check_weights_file(str(cfg.teacher.weights)))
        check_not_training(cfg.teacher.weights, Path(cfg.teacher.weights))
        # the weights fit the architecture and the dataset: another model's were found after the data had loaded
        t = cfg.teacher
        stated = f"teacher.normalize: {str(t.normalize).lower()}"
        check_stated_normalization(str(t.weights), t.normalize, stated, f"--teacher {t.weights}", t.arch)
        at_key(
            "teacher.weights",
            lambda: check_fits(
                cfg.data.name, cfg.data.dir, arch=t.arch, weights=t.weights, kwargs=t.kwargs, what="teacher"
            ),
        )


def check_teacher_keys(cfg: RunConfig) -> None:
    """No teacher key that would do nothing: each was taken in silence, the run trained as if it were not there (a
    dard checkpoint or zoo model brings its own normalisation; an architecture alone names no teacher). Here, not
    in the schema: a recorded config is read as it was written."""
    teacher = cfg.teacher
    if not teacher.normalize and not teacher.weights:
        raise DardError(
            "teacher.normalize: false is for teacher.arch + teacher.weights (a dard checkpoint or zoo model "
            "records its own normalisation)"
        )
    if teacher.arch and not teacher.given:
        raise DardError(
            f"teacher.arch {shown(teacher.arch)} names no teacher alone: give teacher.weights with it (or "
            "teacher.checkpoint / --teacher, whose architecture it checks)"
        )


def check_teacher(cfg: RunConfig, *, in_use_ok: bool = False, student: RunDir | None = None) -> None:
    """A teacher given as a dard checkpoint is the one meant, there, with metadata that reads, and not in a run
    that is training (:func:`dard.checkpoint.teacher_checkpoint`; ``in_use_ok``: the caller's own teacher), nor in
    the ``student``'s own folder, before the data loads: it was first looked at after the data had loaded."""
    named = cfg.teacher.checkpoint
    if named and library_prefix(named) == "robustbench:":
        from dard.models.robustbench import weight_paths

        # the zoo lists it for the dataset (an unknown name, or a dataset it has none for, was found after the data
        # had loaded), in the table of the run's norm, as load_teacher reads it
        weight_paths(named.split(":", 1)[1], cfg.data.name, NORM_NAMES[cfg.norm])
    elif named and library_prefix(named) == "timm:":  # timm's models are untrained: it was "checkpoint not found"
        raise DardError(
            f"teacher {named}: a timm model by name has no trained weights; give teacher.arch={named} with "
            "teacher.weights=FILE and teacher.normalize (and its teacher.kwargs)"
        )
    if named and library_prefix(named) is None:
        weights = teacher_checkpoint(named, in_use_ok=in_use_ok)
        if student is not None and weights.resolve().parent == student.path.resolve():
            # `--resume S --set teacher.checkpoint=S`: a student distilling from its own best, which it replaces
            raise DardError(f"teacher {named} is a checkpoint of the run being trained ({student.path}), not a teacher")
        checkpoint_meta(weights, cfg.teacher.arch, TEACHER_RAW_HINT)
        # its weights load and fit the dataset (NaN, another model's tensors, another class count): found after the
        # data had loaded
        data = cfg.data
        check_fits(
            data.name, data.dir, checkpoint=weights, arch=cfg.teacher.arch, what="teacher", raw_hint=TEACHER_RAW_HINT
        )
