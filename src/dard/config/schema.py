"""Run configuration: YAML validated into typed objects; unknown keys and bad values are one-line errors."""

from __future__ import annotations

from typing import Annotated, Any, Literal

import yaml
from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    field_validator,
    model_serializer,
    model_validator,
)

from dard.errors import DardError
from dard.evaluation.labels import QUICK_SUITE
from dard.evaluation.record import SANITY, canonical_label
from dard.evaluation.suite import quick_suite
from dard.models import check_model_kwargs
from dard.names import check_label
from dard.runtime import MAX_THREADS
from dard.validate import MIN_BUDGET, check_budget, check_plain_data, distinct, without_empty_sections

#: seeds are within what every RNG dard seeds accepts (NumPy's legacy seeding takes 32 bits)
SEED_MAX = 2**32 - 1
# Upper bounds of counts: far above any real run, low enough that a typo (or 2**70) is an error, not an overflow.
BIG = 10**9
EPOCHS_MAX = 100_000
#: the least learning rate: an SGD update below float32's spacing of weights of size 0.1 (7e-9) is rounded away, so
#: `optim.lr: 1e-300` (or a step schedule's gamma of 1e-300) trained nothing, in silence, for the whole run
LR_MIN = 1e-8


#: a free-form mapping of a config (model.kwargs, method.params, val.attack): plain data only (check_plain_data)
PlainMapping = Annotated[dict[str, Any], AfterValidator(lambda v: _as_value_error(check_plain_data, v))]


def _as_value_error(check: Any, value: Any) -> Any:
    """``check(value)``, its DardError as pydantic's ValueError (whose message then names the key)."""
    try:
        return check(value)
    except DardError as e:
        raise ValueError(str(e)) from None


def _budget(value: float) -> float:
    """An eps on [0, 1] images: 0 or at least :data:`dard.validate.MIN_BUDGET` (as an attack's own eps)."""
    try:
        return check_budget("eps", value, owner="eps")
    except DardError:
        raise ValueError(
            f"an eps above 0 is at least {MIN_BUDGET:g} (a float32 pixel moves by less than its rounding)"
        ) from None


class _Strict(BaseModel):
    # allow_inf_nan=False: `optim.lr: .inf` or `eps: .nan` is a config error, not a run that diverges later;
    # strict: `optim.epochs: true` or `seed: 1.5` is an error, not 1 (an int still passes where a float is asked)
    model_config = ConfigDict(extra="forbid", validate_assignment=True, allow_inf_nan=False, strict=True)

    @model_validator(mode="before")
    @classmethod
    def _empty_sections(cls, data: Any) -> Any:  # `optim:` with its keys commented out is YAML's null
        return without_empty_sections(cls, data)


class DataConfig(_Strict):
    name: str = "digits"
    dir: str | None = None
    download: bool = False
    val_size: float = Field(  # > 0: no validation image was found out only after the data had loaded
        0.1, gt=0.0, le=BIG, description="fraction (<1) or count (>=1) held out from train for selection"
    )
    train_subset: int | None = Field(
        None, ge=1, le=BIG, description="use only the first N training images (after the split)"
    )
    test_subset: int | None = Field(None, ge=1, le=BIG, description="final test evaluation on the first N test images")
    augment: bool = True

    @field_validator("val_size", mode="after")
    @classmethod
    def _whole_count(cls, v: float) -> float:
        if v >= 1 and v != int(v):  # 1.5 held out 1 image, 100.5 held out 100, in silence
            raise ValueError(f"a count of images (1 or more) is a whole number; a fraction lies below 1 (got {v})")
        return v


#: a factory's keyword arguments (model.kwargs, teacher.kwargs): plain data, without the keys dard sets itself
#: (check_model_kwargs; a TypeError from create_model otherwise)
FactoryKwargs = Annotated[PlainMapping, AfterValidator(lambda v: _as_value_error(check_model_kwargs, v))]


class _WithKwargs(_Strict):
    """A section with a factory's ``kwargs`` (each declares its own, in its place among its keys)."""

    @model_serializer(mode="wrap")
    def _without_empty_kwargs(self, handler: Any) -> Any:
        # an empty kwargs is left out of dumps: configs, identities and records of models without it stay as before
        data = handler(self)
        if isinstance(data, dict) and not data.get("kwargs"):
            data.pop("kwargs", None)
        return data


class ModelConfig(_WithKwargs):
    arch: str = "small_cnn"
    normalize: bool = True
    kwargs: FactoryKwargs = Field(
        default_factory=dict,
        description="keyword arguments for the model's factory, e.g. {img_size: 32, patch_size: 4} for a timm ViT",
    )


class TeacherConfig(_WithKwargs):
    checkpoint: str | None = Field(None, description="dard checkpoint (.safetensors + .json) or run folder")
    arch: str | None = Field(None, description="with `weights`: architecture of an external state dict")
    weights: str | None = None
    normalize: bool = True
    kwargs: FactoryKwargs = Field(
        default_factory=dict, description="with `weights`: keyword arguments for the architecture's factory"
    )

    @model_validator(mode="after")
    def _one_source(self) -> TeacherConfig:
        if self.checkpoint and self.weights:
            raise ValueError("give either checkpoint or arch + weights, not both")
        if self.weights and not self.arch:
            raise ValueError("weights needs arch")
        if self.kwargs and not self.weights:  # a checkpoint records its own; without weights they reach nothing
            raise ValueError("kwargs is for arch + weights (a dard checkpoint records its own)")
        return self

    @property
    def given(self) -> bool:
        return bool(self.checkpoint or self.weights)


class MethodConfig(_Strict):
    name: str = "dard"
    params: PlainMapping = Field(default_factory=dict)


class OptimConfig(_Strict):
    epochs: int = Field(10, ge=1, le=EPOCHS_MAX)
    batch_size: int = Field(128, ge=1, le=BIG)
    lr: float = Field(0.1, ge=LR_MIN, le=1000)
    momentum: float = Field(0.9, ge=0, lt=1)
    weight_decay: float = Field(5e-4, ge=0, le=1000)
    nesterov: bool = False
    schedule: Literal["step", "cosine", "constant", "onecycle"] = Field(
        "step", description="onecycle: linear decay to 0 after the warm-up (with warmup_epochs: one-cycle)"
    )
    milestones: list[Annotated[int, Field(ge=0, le=EPOCHS_MAX)]] = Field(
        default_factory=lambda: [30, 40],
        description="epochs where step multiplies lr by gamma; unset, in a run of 40 epochs or fewer: 60% and 80%",
    )
    gamma: float = Field(0.1, ge=1e-3, le=1)  # 0.1 in use; below 1/1000 the rate drops to ~0 at its milestone
    warmup_epochs: int = Field(0, ge=0, le=EPOCHS_MAX)

    @field_validator("milestones", mode="after")
    @classmethod
    def _distinct_milestones(cls, v: list[int]) -> list[int]:
        return distinct(v)  # the rate is multiplied by gamma once per milestone passed: [3, 3] twice at epoch 3

    @model_validator(mode="after")
    def _consistent(self) -> OptimConfig:
        # torch's SGD refuses Nesterov without momentum, but only when the optimizer is built, after the checks
        if self.nesterov and self.momentum == 0:
            raise ValueError("nesterov needs a momentum above 0 (optim.momentum)")
        if self.lr * self.weight_decay >= 1:  # SGD's decay takes lr x weight_decay of every weight each step
            raise ValueError(
                f"lr x weight_decay is {self.lr * self.weight_decay:g}: each step would take all of every weight "
                "away, or more (the weights grow and flip sign until the loss is NaN); keep it below 1 (0.1 x 5e-4)"
            )
        # the default milestones, the field's 60% and 80% of 50 epochs, never came in a shorter run, which kept its
        # learning rate throughout in silence: unset, they scale to its epochs (set: preflight.check_milestones)
        if self.schedule == "step" and "milestones" not in self.model_fields_set and self.milestones[-1] >= self.epochs:
            self.milestones = sorted(
                {m for m in (round(0.6 * self.epochs), round(0.8 * self.epochs)) if m < self.epochs}
            )
        return self


class ValConfig(_Strict):
    """Validation: ``attack`` picks the best checkpoint at every validation. An attack that costs more than 1,000
    passes per image at its settings (AutoAttack's cascade, ~4,500; Square's 5,000 queries; APGD-T, FAB-T; PGD
    with many restarts: hours per epoch) is refused there, in one line when the config is read
    (:func:`dard.config.read.build_val_attack`), not warned about; ``apgd-ce`` (200) is accepted."""

    every: int = Field(1, ge=1, le=EPOCHS_MAX, description="validate every N epochs (and always at the last)")
    attack: PlainMapping = Field(default_factory=lambda: {"name": "pgd", "steps": 10, "step_ratio": 0.25})
    select_by: Literal["robust", "clean", "sum"] = "robust"
    batch_size: int = Field(256, ge=1, le=BIG)


def _both_checkpoints() -> list[Literal["best", "last"]]:  # a lambda's list[str] would not type-check
    return ["best", "last"]


class EvalConfig(_Strict):
    attacks: list[str] = Field(default_factory=lambda: list(QUICK_SUITE))
    autoattack_subset: int | None = Field(
        None,
        ge=1,
        le=BIG,
        description="run AutoAttack on the first N test images of the first listed checkpoint (None: skip)",
    )
    eps_sweep: list[Annotated[float, Field(ge=0, le=1), AfterValidator(_budget)]] = Field(
        default_factory=list, description="eps values for the PGD-20 robustness curve (first listed checkpoint)"
    )
    batch_size: int = Field(256, ge=1, le=BIG)
    # at least one: the run's result is its record (an empty list failed in the cost estimate, as an IndexError)
    checkpoints: list[Literal["best", "last"]] = Field(default_factory=_both_checkpoints, min_length=1)

    @field_validator("attacks", mode="after")
    @classmethod
    def _current_labels(cls, v: list[str]) -> list[str]:
        # old labels (tpgd, cw) under their current names, so a config written with them has the same identity
        labels = distinct([canonical_label(label) for label in v])
        if all(label in SANITY for label in labels):  # [] or [pgd-large]: a record and report without robust accuracy
            raise ValueError(
                "no attack of the threat model is listed, so the run's result would have no robust accuracy (pgd-large "
                f"is a sanity check outside it); list one or more, e.g. [{', '.join(QUICK_SUITE[:2])}]"
            )
        return labels

    @field_validator("eps_sweep", "checkpoints", mode="after")
    @classmethod
    def _distinct_entries(cls, v: list[Any]) -> list[Any]:
        return distinct(v)


class SpeedConfig(_Strict):
    """Speed switches; each leaves the maths unchanged up to rounding (tests/test_speed.py checks losses and
    gradients against the plain fp32 path). ``amp: bf16`` autocasts attacks, teacher and student (weights and
    BatchNorm statistics stay fp32; on a CPU without native bf16 the products run on fp32 kernels with bf16
    operands and results: dard.training.precision); ``channels_last`` is the NHWC layout fast convolutions prefer;
    ``compile`` wraps student and teacher in ``torch.compile``; ``sync_bn`` makes BatchNorm statistics global
    in multi-GPU runs (CUDA only)."""

    amp: Literal["none", "bf16"] = "none"
    channels_last: bool = Field(True, description="NHWC layout: 1.4-1.5x faster DARD steps on CPU (benchmarks/)")
    compile: bool = False
    compile_backend: str = Field("inductor", description="torch.compile backend (inductor; aot_eager to debug)")
    compile_mode: Literal["default", "reduce-overhead", "max-autotune", "max-autotune-no-cudagraphs"] = Field(
        "default", description="torch.compile mode; reduce-overhead replays CUDA graphs (inductor only)"
    )
    sync_every: int = Field(
        50, ge=1, le=BIG, description="read the loss back to the host every N steps (each read waits for the GPU)"
    )
    cudnn_benchmark: bool = True
    sync_bn: bool = True
    threads: int | None = Field(None, ge=1, le=MAX_THREADS)


class RunConfig(_Strict):
    """A whole training run."""

    name: Annotated[str, AfterValidator(lambda v: _as_value_error(lambda n: check_label(n, "run name"), v))] = "run"
    seed: int = Field(0, ge=0, le=SEED_MAX)
    device: str = "auto"
    eps: float = Field(8 / 255, ge=0, le=1, description="threat model for training attacks and evaluation")
    norm: Literal["linf", "l2"] = Field(
        "linf", description="threat-model norm of the training attack, validation, the test suite and AutoAttack"
    )
    data: DataConfig = Field(default_factory=DataConfig)
    model: ModelConfig = Field(default_factory=ModelConfig)
    teacher: TeacherConfig = Field(default_factory=TeacherConfig)
    method: MethodConfig = Field(default_factory=MethodConfig)
    optim: OptimConfig = Field(default_factory=OptimConfig)
    val: ValConfig = Field(default_factory=ValConfig)
    eval: EvalConfig = Field(default_factory=EvalConfig)
    speed: SpeedConfig = Field(default_factory=SpeedConfig)
    checkpoint_every_steps: int = Field(
        0, ge=0, le=BIG, description="also checkpoint every N steps inside an epoch (0: epoch ends only)"
    )
    keep_epochs: list[Annotated[int, Field(ge=1)]] = Field(
        default_factory=list,
        description="also keep the checkpoint of these epochs as epoch-E (e.g. teachers of a teacher-quality study)",
    )
    progress: bool = True

    @field_validator("norm", mode="before")
    @classmethod
    def _norm_lower(cls, v: Any) -> Any:
        return v.lower() if isinstance(v, str) else v  # Linf / L2, as AutoAttack writes them

    @model_validator(mode="after")
    def _select_a_non_robust_method_by_clean(self) -> RunConfig:
        # a naturally trained model's validation robust accuracy is about 0 at every epoch: selected by it, the best
        # checkpoint was an early epoch's (31% clean where the last had 79%); an explicit robust is refused when
        # the run starts (dard.training.preflight.check_config)
        from dard.methods import METHODS

        known = self.method.name in METHODS  # (an unknown name is refused, naming the valid ones, when checked)
        if known and not METHODS.get(self.method.name).robust and "select_by" not in self.val.model_fields_set:
            self.val.select_by = "clean"
        return self

    @model_validator(mode="after")
    def _suite_of_the_norm(self) -> RunConfig:
        # an L2 run's default suite leaves out the Linf-only attacks; one given explicitly is checked by parse_config
        if self.norm != "linf" and "attacks" not in self.eval.model_fields_set:
            self.eval.attacks = quick_suite(self.norm)
        # 8/255 is an Linf budget: an L2 run without eps trained and was evaluated at a radius of 0.03, in silence
        if self.norm != "linf" and "eps" not in self.model_fields_set:
            raise ValueError(
                f"norm {self.norm} needs eps: the default 8/255 is the Linf budget (L2 runs take e.g. 0.5)"
            )
        return self

    @field_validator("eps", mode="before")
    @classmethod
    def _eps_fraction(cls, v: Any) -> Any:
        if isinstance(v, str):
            from dard.evaluation.suite import parse_eps

            if len(v) > 40:
                raise ValueError("too long for a number or fraction in [0, 1]")
            try:
                return parse_eps(v)
            except (OverflowError, ZeroDivisionError, ValueError) as e:  # "1/0", a 400-digit fraction
                raise ValueError(f"not a number or fraction in [0, 1] ({type(e).__name__})") from None
        return v

    @field_validator("eps", mode="after")
    @classmethod
    def _eps_budget(cls, v: float) -> float:
        return _budget(v)

    @model_validator(mode="after")
    def _kept_epochs_exist(self) -> RunConfig:
        late = [e for e in self.keep_epochs if e > self.optim.epochs]
        if late:
            raise ValueError(f"keep_epochs {late} are past optim.epochs ({self.optim.epochs})")
        return self


def dump_config(cfg: RunConfig) -> str:
    """The resolved config as YAML (what a run folder records)."""
    return yaml.safe_dump(cfg.model_dump(mode="json"), sort_keys=False)
