"""Config validation: unknown keys and bad values are one-line errors naming the key."""

from __future__ import annotations

import pytest
import yaml
from tests.cli_checks import config_file, fails_cleanly
from tests.conftest import assert_one_line_error, run_cli, tiny_run_config

from dard.config import dump_config, load_config, parse_config, read_assignments
from dard.errors import DardError
from dard.methods import create_method


def test_defaults_round_trip():
    cfg = parse_config({})
    again = parse_config(yaml.safe_load(dump_config(cfg)))
    assert again == cfg
    assert cfg.eps == pytest.approx(8 / 255)
    assert cfg.optim.milestones == [6, 8]  # the default [30, 40] scaled to the default 10 epochs


@pytest.mark.parametrize(
    "data, needle",
    [
        ({"optim": {"lr": -1}}, "optim.lr"),
        ({"optim": {"lrr": 0.1}}, "optim.lrr: unknown key"),
        ({"bogus": 1}, "bogus: unknown key"),
        ({"eps": 2}, "eps"),
        ({"eps": "8/0"}, "8/0"),
        # 0 in float32: an attack, and the training against it, that did nothing while the run recorded its eps
        ({"eps": 1e-300}, "eps: an eps above 0 is at least 1e-06 (a float32 pixel moves by less than its rounding)"),
        ({"eval": {"eps_sweep": [0, 1e-9]}}, "eval.eps_sweep.1: an eps above 0 is at least 1e-06"),
        (
            {"val": {"attack": {"name": "pgd", "step_ratio": 1e-300}}},
            "val.attack: pgd: step_size must be 0 or in [1e-06",
        ),
        (
            {"method": {"params": {"attack": {"eps": 1e-300}}}},
            "attack: dpgd: eps must be 0 or in [1e-06, 1], got 1e-300",
        ),
        ({"optim": {"schedule": "linear"}}, "optim.schedule"),
        # a rate that rounds every update away trained nothing, in silence; a decay of lr x weight_decay >= 1, NaN
        ({"optim": {"lr": 1e-300}}, "optim.lr: Input should be greater than or equal to"),
        ({"optim": {"gamma": 1e-300}}, "optim.gamma: Input should be greater than or equal to 0.001"),
        (
            {"optim": {"weight_decay": 1000}},
            "optim: lr x weight_decay is 100: each step would take all of every weight",
        ),
        ({"teacher": {"weights": "x.pt"}}, "weights needs arch"),
        # a second entry ran the same evaluation again (hours at the small scale) and the record kept one
        ({"eval": {"attacks": ["pgd20", "fgsm", "pgd20"]}}, "eval.attacks: pgd20 is listed twice"),
        ({"eval": {"attacks": ["cw", "cw-linf"]}}, "cw-linf is listed twice"),  # the old label and the new one
        ({"eval": {"eps_sweep": [0.01, 0.02, 0.01]}}, "eval.eps_sweep: 0.01 is listed twice"),
        ({"eval": {"checkpoints": ["best", "best"]}}, "eval.checkpoints: best is listed twice"),
        # an evaluation of no attack of the threat model: a record, and a report row, without robust accuracy
        ({"eval": {"attacks": []}}, "eval.attacks: no attack of the threat model is listed"),
        ({"eval": {"attacks": ["pgd-large"]}}, "no attack of the threat model is listed"),
        # a count of 1.5 held out one image, in silence (a fraction lies below 1)
        ({"data": {"val_size": 1.5}}, "data.val_size: a count of images (1 or more) is a whole number"),
        # no validation image: found out only after the data had loaded, under the run folder's lock
        ({"data": {"val_size": 0}}, "data.val_size: Input should be greater than 0"),
        # 8/255 is an Linf budget: an L2 run without eps trained and was evaluated at a radius of 0.03
        ({"norm": "l2"}, "norm l2 needs eps: the default 8/255 is the Linf budget"),
        # a milestone given twice multiplied the learning rate by gamma twice there (gamma ** milestones passed)
        ({"optim": {"milestones": [3, 5, 3]}}, "optim.milestones: 3 is listed twice"),
    ],
)
def test_bad_values_name_the_key(data, needle):
    with pytest.raises(DardError) as e:
        parse_config(data)
    msg = str(e.value)
    assert needle in msg and "\n" not in msg


def test_eps_fraction_and_overrides(tmp_path):
    p = tmp_path / "c.yaml"
    p.write_text("eps: 8/255\noptim: {epochs: 3}\n")
    cfg = load_config(p, ["optim.epochs=5", "method.params.lam=0.25", "data.name=cifar10"])
    assert cfg.eps == pytest.approx(8 / 255)
    assert cfg.optim.epochs == 5 and cfg.method.params == {"lam": 0.25} and cfg.data.name == "cifar10"


def test_numbers_with_an_exponent_are_numbers(tmp_path):
    # PyYAML reads YAML 1.1, where 1e-3 (no dot) and 1.0e3 (no sign) are text: `lr: 1e-3` was "Input should be a
    # valid number (got '1e-3')", in a file, a method's parameters and --set alike
    p = tmp_path / "c.yaml"
    p.write_text("optim: {lr: 1e-3, weight_decay: 5E-4, gamma: 1.0e-1}\nmethod: {params: {tau: 2e0}}\nname: '1e5'\n")
    cfg = load_config(p, ["optim.momentum=9e-1", "eps=3.1e-2", "val.attack={name: pgd, step_size: .5e-2}"])
    assert (cfg.optim.lr, cfg.optim.weight_decay, cfg.optim.gamma, cfg.optim.momentum) == (1e-3, 5e-4, 0.1, 0.9)
    assert cfg.method.params == {"tau": 2.0} and cfg.eps == 3.1e-2 and cfg.val.attack["step_size"] == 0.005
    assert cfg.name == "1e5"  # quoted: text
    assert yaml.safe_load("x: 1e-3") == {"x": "1e-3"}  # PyYAML's own loader is left as it is


@pytest.mark.parametrize("text", ["1:10", "010", "1:30.5", "-007"])
def test_base_60_and_octal_numbers_are_refused_not_misread(text, tmp_path):
    # PyYAML's YAML 1.1 read `val_size: 1:10` as 70 (base 60) and `seed: 010` as 8 (octal), in silence; YAML 1.2 and
    # every other reader of the file read text and 10
    p = tmp_path / "c.yaml"
    p.write_text(f"data: {{val_size: {text}}}\n")
    with pytest.raises(DardError, match=f"c.yaml: '{text}' \\(line 1\\) is a YAML 1.1 base-60 or octal number") as e:
        load_config(p)
    assert "\n" not in str(e.value)
    with pytest.raises(DardError, match=f"--set seed: '{text}'"):
        load_config(None, [f"seed={text}"])
    p.write_text("seed: 10\nname: '010'\ndata: {val_size: 0.05}\noptim: {lr: 0x1}\n")  # quoted text and the rest
    cfg = load_config(p)
    assert (cfg.seed, cfg.name, cfg.data.val_size, cfg.optim.lr) == (10, "010", 0.05, 1)


def test_a_section_with_its_keys_commented_out_takes_its_defaults(tmp_path):
    # YAML reads `optim:` alone on its line as null; it was "Input should be a valid dictionary (got None)"
    p = tmp_path / "c.yaml"
    p.write_text("optim:\n  # lr: 0.2\nmethod:\n  name: dard\n  params:\n    # lam: 0.25\nmodel:\n  kwargs:\neval:\n")
    cfg = load_config(p)
    defaults = parse_config({"method": {"name": "dard"}})
    assert cfg == defaults and cfg.method.params == {} and cfg.optim == defaults.optim
    # a null where a value belongs stays a value: an error where the key takes none, a value where it does
    with pytest.raises(DardError, match="optim.lr"):
        parse_config({"optim": {"lr": None}})
    assert parse_config({"data": {"dir": None}}).data.dir is None


def test_an_override_into_an_empty_section_or_of_a_whole_section_keeps_the_files_other_keys(tmp_path):
    # `--epochs 1` on a config whose `optim:` had its keys commented out was "'optim' is not a section"
    p = tmp_path / "c.yaml"
    p.write_text("optim:\n  # lr: 0.2\nmethod: {name: sat, params: {attack: {steps: 3}}}\n")
    assert load_config(p, ["optim.epochs=1"]).optim.epochs == 1
    # a section given as a mapping replaced the file's section whole: its other keys fell back to the defaults in
    # silence (`optim={lr: 0.01}` trained cifar10/dard_resnet18 for 10 epochs, not 50); now key by key, as its keys
    cfg = load_config("cifar10/dard_resnet18", ["optim={lr: 0.01}", "eval={batch_size: 64}"])
    assert (cfg.optim.lr, cfg.optim.epochs, cfg.optim.milestones) == (0.01, 50, [30, 40])
    assert cfg.eval.batch_size == 64 and cfg.eval.autoattack_subset == 1000
    cfg = load_config(p, ["method={params: {attack: {name: fgsm}}}", "val={attack: {name: fgsm}}"])
    assert cfg.method.name == "sat"  # kept: method is a section
    assert cfg.method.params == {"attack": {"name": "fgsm"}} and cfg.val.attack == {"name": "fgsm"}  # one value each
    assert load_config(p, ["optim=null"]).optim == parse_config({}).optim  # null: the empty section, its defaults
    with pytest.raises(DardError, match="optim.nope: unknown key"):
        load_config(p, ["optim={nope: 1}"])


@pytest.mark.parametrize("override", ["=5", ".lr=1", "optim..lr=1", "optim.=1", " =1"])
def test_an_override_with_an_empty_key_part_names_the_override(override):
    # `--set =5` was "config: unknown key" and `--set .lr=1` "config..lr: ...", naming no override
    with pytest.raises(DardError, match="must look like key.sub=value") as e:
        load_config(None, [override])
    assert "\n" not in str(e.value)


def test_set_and_model_arg_are_read_by_one_reader():
    # `--set seed=1 --set seed=2` ran with seed 2 in silence while `--model-arg` refused a key given twice: two
    # readers of KEY=VALUE (dard.config.options.read_assignments is now the one)
    with pytest.raises(DardError, match="--set 'seed' is given twice"):
        load_config(None, ["seed=1", "seed=2"])
    with pytest.raises(DardError, match="--model-arg 'hidden' is given twice"):
        read_assignments(["hidden=1", "hidden=2"], "--model-arg", dotted=False)
    for dotted in (True, False):
        for item in ("nokey", "=5"):
            with pytest.raises(DardError, match=f"{item!r} must look like"):
                read_assignments([item], "--x", dotted=dotted)
    # values as a config file's (1e-3 a number), raw text where the YAML is broken
    assert read_assignments(["lr=1e-3", "name=a: b: c", "d={x: 1}"], "--set", dotted=True) == {
        "lr": 1e-3,
        "name": "a: b: c",
        "d": {"x": 1},
    }


@pytest.mark.parametrize(
    "data, dumped, identity",
    [
        ({}, "d428610daf66b846", "904912541ac1"),
        ({"teacher": {"arch": "small_cnn", "weights": "t.pt", "normalize": False}}, "8244f00eb1589cf1", "2df0a98eca4a"),
        (
            {"teacher": {"checkpoint": "runs/t"}, "model": {"arch": "timm:vit_tiny_patch16_224", "kwargs": {"a": 3}}},
            "c49c28690003b04e",
            "9072c9510fa6",
        ),
    ],
)
def test_a_config_without_teacher_kwargs_dumps_and_hashes_as_before(data, dumped, identity):
    # runs already trained are known by their dumped config.yaml and its identity: teacher.kwargs (like an empty
    # model.kwargs) stays out of both unless set. The values are those of dard before teacher.kwargs existed.
    import hashlib

    from dard.config import config_identity, identity_hash

    # optim.milestones as a recorded config.yaml writes it (unset, the default now scales to the default 10 epochs)
    data = {"method": {"name": "dard"}, "optim": {"milestones": [30, 40]}, **data}
    assert hashlib.sha256(dump_config(parse_config(data)).encode()).hexdigest()[:16] == dumped
    assert identity_hash(config_identity(data)) == identity


def test_a_key_from_two_merged_mappings_is_refused_not_taken_from_either(tmp_path):
    # PyYAML tells merged keys apart by the identity of their text: `optim: {<<: [*fast, *paper]}` took the epochs of
    # *paper (the last), where YAML and a one-letter key take the first's, in silence
    anchors = "x-fast: &fast {epochs: 2, lr: 0.05}\nx-paper: &paper {epochs: 50, momentum: 0.9}\n"
    p = tmp_path / "exp.yaml"
    for optim in ["{<<: [*fast, *paper]}", "{<<: *fast, <<: *paper}"]:
        p.write_text(f"{anchors}optim: {optim}\n")
        with pytest.raises(DardError, match=r"exp.yaml: key 'epochs' comes from two of the mappings merged .*line 3"):
            load_config(p)
    # keys from one merged mapping each, a merged key set again beside them, one mapping merged twice: as YAML says
    p.write_text("optim: {<<: [{epochs: 2}, {lr: 0.05}], epochs: 3}\nval: {<<: [&v {every: 2}, *v]}\n")
    cfg = load_config(p)
    assert (cfg.optim.epochs, cfg.optim.lr, cfg.val.every) == (3, 0.05, 2)


def test_yaml_errors(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("optim: {epochs: [1,\n")
    with pytest.raises(DardError, match="not valid YAML"):
        load_config(bad)
    # the line says what PyYAML found: a tab where YAML takes spaces, a second document after `---`
    for text, found in [
        ("optim:\n\tlr: 0.1\n", "found character '\\t' that cannot start any token"),
        ("seed: 1\n---\nseed: 2\n", "expected a single document in the stream, but found another"),
    ]:
        bad.write_text(text)
        with pytest.raises(DardError, match="not valid YAML at line 2 ") as e:
            load_config(bad)
        assert found in str(e.value), str(e.value)
    listy = tmp_path / "list.yaml"
    listy.write_text("- 1\n- 2\n")
    with pytest.raises(DardError, match="mapping"):
        load_config(listy)
    with pytest.raises(DardError, match="not found"):
        load_config(tmp_path / "missing.yaml")


@pytest.mark.parametrize("section", ["model.kwargs", "method.params", "val.attack"])
@pytest.mark.parametrize(
    "value, needle",
    [
        ("2020-01-01", "got a date"),
        ("2001-12-14t21:59:43.10-05:00", "got a datetime"),
        ("!!set {a, b}", "got a set"),
        ("!!binary aGVsbG8=", "got a bytes"),
        ("[1, {y: .nan}]", "x[1].y: a number must be finite"),
        ("{1: 2}", "x: keys must be strings"),
        ("&a [1, *a]", "x[1]: a list or mapping inside itself"),  # json.dumps: "Circular reference detected"
    ],
)
def test_free_form_sections_hold_plain_data(section, value, needle, tmp_path):
    # YAML reads dates, sets and bytes; the run took them and failed when it wrote its records (an internal error)
    head, key = section.split(".")
    p = tmp_path / "c.yaml"
    p.write_text(f"{head}:\n  {key}:\n    x: {value}\n")
    with pytest.raises(DardError) as e:
        load_config(p)
    assert section in str(e.value) and needle in str(e.value)
    if section != "model.kwargs":  # an attack's or a method's parameters, checked as the config is read (below)
        return
    p.write_text(f"{head}:\n  {key}:\n    x: [1, 2.5, a, true, {{y: null}}]\n")  # plain data is taken as it is
    sub = getattr(load_config(p), head)
    assert getattr(sub, key)["x"] == [1, 2.5, "a", True, {"y": None}]


def test_cli_config_error_is_one_line(tmp_path):
    p = tmp_path / "c.yaml"
    p.write_text("optim: {epochs: 0}\n")
    proc = run_cli("train", "--config", str(p), "--out", str(tmp_path / "run"))
    assert_one_line_error(proc, "optim.epochs")
    assert not (tmp_path / "run").exists()


def test_shipped_configs_validate():
    from dard.packaged import CONFIGS_DIR, EXPERIMENTS_DIR

    files = sorted(CONFIGS_DIR.glob("**/*.yaml"))
    files += sorted((EXPERIMENTS_DIR / "_scales").glob("*.yaml"))  # experiment bases are run configs too
    assert len(files) > 10
    for f in files:
        load_config(f)


def test_an_evaluation_attack_may_name_its_own_seed():
    # `val.attack: {name: pgd, seed: 3}` passed seed twice to the attack: an internal error (TypeError) when the
    # run's checks built it; a compare_attacks entry the same (tests/test_experiment.py)
    from dard.training.preflight import check_config

    attack, sat = {"name": "pgd", "steps": 2, "seed": 3}, {"name": "sat"}
    assert check_config(parse_config({"seed": 7, "method": sat, "val": {"attack": attack}})).val_attack.seed == 3
    assert check_config(parse_config({"seed": 7, "method": sat})).val_attack.seed == 7  # the run's, as before
    with pytest.raises(DardError, match=r"val.attack: pgd: seed must be an integer .*got null"):
        check_config(parse_config({"method": sat, "val": {"attack": {**attack, "seed": None}}}))


@pytest.mark.parametrize(
    "method, teacher, needle",
    [
        # a dard checkpoint (or zoo model) brings its own normalisation: `normalize: false` beside it did nothing
        ("dard", {"checkpoint": "runs/t", "normalize": False}, "teacher.normalize: false is for teacher.arch + "),
        ("dard", {"checkpoint": "robustbench:Standard", "normalize": False}, "teacher.normalize: false is for"),
        ("sat", {"normalize": False}, "teacher.normalize: false is for"),
        # an architecture alone names no teacher: a run that takes none trained as if it were not there
        ("sat", {"arch": "resnet18"}, "teacher.arch 'resnet18' names no teacher alone: give teacher.weights"),
        ("dard", {"arch": "resnet18"}, "teacher.arch 'resnet18' names no teacher alone"),
    ],
)
def test_a_teacher_key_that_would_do_nothing_is_refused(method, teacher, needle):
    from dard.training.preflight import check_config

    with pytest.raises(DardError) as e:
        check_config(parse_config({"method": {"name": method}, "teacher": teacher}))
    assert needle in str(e.value)
    # with what it is for, each is taken (the files are looked at later, by check_teacher)
    check_config(parse_config({"method": {"name": "dard"}, "teacher": {"checkpoint": "runs/t", "arch": "resnet18"}}))


@pytest.mark.parametrize(
    "data, needle",
    [
        # each was taken and the run went on without it: a cosine schedule has no milestones, an uncompiled model no
        # compile mode
        ({"optim": {"schedule": "cosine", "milestones": [5, 8]}}, "optim.milestones applies to optim.schedule step"),
        ({"optim": {"schedule": "onecycle", "gamma": 0.5}}, "optim.gamma applies to optim.schedule step only"),
        ({"speed": {"compile_mode": "max-autotune"}}, "speed.compile_mode applies with speed.compile: true only"),
        ({"speed": {"compile_backend": "aot_eager"}}, "speed.compile_backend applies with speed.compile: true"),
    ],
)
def test_a_setting_that_another_switches_off_is_refused(data, needle):
    from dard.training.preflight import check_config

    with pytest.raises(DardError, match=needle):
        check_config(parse_config({"method": {"name": "sat"}, **data}))
    # at their defaults (as every recorded config writes them), or with what they are for, they are taken
    check_config(parse_config({"method": {"name": "sat"}, "optim": {"schedule": "cosine", "milestones": [30, 40]}}))
    check_config(parse_config({"method": {"name": "sat"}, "optim": {"schedule": "step", "milestones": [5, 8]}}))


def test_a_method_that_trains_on_no_attack_selects_its_best_checkpoint_by_clean_accuracy():
    """A natural run's validation robust accuracy is about 0 at every epoch: selected by it, the campaign's natural
    student kept epoch 1 (31.7% clean on the test set, where its last epoch had 78.6% on validation)."""
    from dard.training.preflight import check_config

    assert parse_config({"method": {"name": "natural"}}).val.select_by == "clean"
    assert parse_config({"method": {"name": "sat"}}).val.select_by == "robust"
    assert parse_config({"method": {"name": "natural"}, "val": {"select_by": "sum"}}).val.select_by == "sum"
    # asked for outright (a base config's robust under a natural run): one line, before any work
    with pytest.raises(DardError, match="val.select_by: robust picks method 'natural''s best checkpoint"):
        check_config(parse_config({"method": {"name": "natural"}, "val": {"select_by": "robust"}}))
    # a recorded config (every value written) reads as it was made
    recorded = parse_config({"method": {"name": "natural"}}).model_dump(mode="json")
    assert parse_config(recorded).val.select_by == "clean"


def test_a_warm_up_as_long_as_the_run_is_refused() -> None:
    """``optim.warmup_epochs`` of ``optim.epochs`` or more was taken: the learning rate rose to the last step (or
    never reached optim.lr) and the schedule never began. Checked on the epochs the run will have, so a resume that
    adds epochs past the warm-up is taken."""
    from dard.training.preflight import check_config

    def checked(**optim: object) -> None:
        check_config(parse_config({"method": {"name": "sat"}, "optim": optim}))

    with pytest.raises(DardError, match=r"optim.warmup_epochs 5 is not below optim.epochs 5: .* rise until the last"):
        checked(epochs=5, warmup_epochs=5)
    with pytest.raises(DardError, match=r"end at 2/5 of optim.lr, never reaching it, and the cosine schedule"):
        checked(epochs=2, warmup_epochs=5, schedule="cosine")
    checked(epochs=6, warmup_epochs=5)  # one epoch after the warm-up (a resume's --epochs 6 included)
    checked(epochs=1, warmup_epochs=0)


@pytest.mark.parametrize(
    "override, needle",
    [
        (
            "val.attack={name: pgd, stepz: 10}",
            "val.attack: attack 'pgd' has no parameter 'stepz' (did you mean 'steps'",
        ),
        ("val.attack={name: pgdd}", "val.attack: unknown attack 'pgdd' (did you mean 'pgd'"),
        ("eval.attacks=[fgsm, pgd21]", "eval.attacks: unknown attack 'pgd21' (did you mean 'pgd20'"),
        ("val.attack={name: cw, steps: -1}", "val.attack: cw: steps must be >= 1, got -1"),
        # a name that is a list or a mapping was looked up in the registry's dict: an internal error (unhashable)
        ("val.attack={name: [pgd]}", "val.attack: unknown attack ['pgd']; valid: apgd-ce,"),
        # the method and its training attack, built by dard train alone: now by every reader of a config
        ("method.params.lamb=0.3", "method: method 'dard' has no parameter 'lamb' (did you mean 'lam'?)"),
        (
            "method.params.attack={name: dpgd, stepz: 3}",
            "method: method 'dard': attack: attack 'dpgd' has no parameter 'stepz' (did you mean 'steps'",
        ),
        ("method={name: sat, params: {attack_mode: evall}}", "method: method 'sat': attack_mode must be one of"),
        ("method.params.attack={steps: 0}", "method: method 'dard': attack: dpgd: steps must be >= 1, got 0"),
        # AutoAttack and its parts train on clean points (the official code attacks only those classified right)
        ("method.params.attack={name: autoattack}", "method 'dard': attack 'autoattack' is for evaluation, not"),
        (
            "method={name: sat, params: {attack: {name: apgd-ce}}}",
            "method 'sat': attack 'apgd-ce' is for evaluation, not training: the official AutoAttack code attacks "
            "only the points the model classifies correctly (the others come back clean), always in eval mode; "
            "train with 'pgd' (the default) or bim, cw, dpgd, fgsm",
        ),
        # a seeded training attack reseeded its own stream at every batch: the same random start for the whole run
        (
            "method={name: sat, params: {attack: {seed: 3}}}",
            "method: method 'sat': attack: seed 3 would give every batch the same random start",
        ),
        # and its whole cascade validates for hours per epoch, and so did Square, APGD-T and FAB-T at their
        # defaults, or PGD with many restarts (refused by cost, not name); a cheaper part of it is taken
        ("val.attack={name: autoattack}", "val.attack: attack 'autoattack' costs 4,499 passes per image at every"),
        ("val.attack={name: square}", "val.attack: attack 'square' costs 5,000 passes per image at every validation"),
        ("val.attack={name: fab-t}", "val.attack: attack 'fab-t' costs 2,700 passes per image"),
        ("val.attack={name: pgd, steps: 100, restarts: 10}", "val.attack: attack 'pgd' costs 2,000 passes per image"),
    ],
)
def test_attack_specs_are_checked_when_the_config_is_read(override, needle, capsys):
    # a misspelt attack or method parameter was taken by any reader of the config (parse_config: a run folder's
    # record, an experiment file) and refused only when a run's checks built it; now wherever the config is parsed,
    # with the nearest names
    with pytest.raises(DardError) as e:
        load_config(None, [override])
    assert needle in str(e.value) and "\n" not in str(e.value)
    fails_cleanly(capsys, None, ["config", "show", "--set", override], needle)


def test_a_config_read_again_builds_its_method_and_attacks_without_inspecting_signatures(monkeypatch):
    # every config read builds the method and its attacks: inspect.signature over and over was ~20 ms a config,
    # seconds of `dard report` or `dard experiment --plan` over hundreds of runs (0.7 s for 312 configs now, 4 s before)
    import inspect

    cfg = {"method": {"name": "dard"}, "eval": {"attacks": ["fgsm", "pgd20", "cw-linf", "autoattack"]}}
    parse_config(cfg)
    calls: list[object] = []
    real = inspect.signature
    monkeypatch.setattr(inspect, "signature", lambda obj, *a, **k: calls.append(obj) or real(obj, *a, **k))
    parse_config(cfg)
    assert calls == []


def test_autoattacks_parts_validate_and_are_refused_as_a_training_attack_from_python_too():
    assert parse_config({"val": {"attack": {"name": "apgd-ce", "steps": 5}}}).val.attack["name"] == "apgd-ce"
    assert parse_config({"val": {"attack": {"name": "square", "queries": 1000}}}).val.attack["queries"] == 1000
    with pytest.raises(DardError, match=r"method 'trades': attack 'square' is for evaluation, not training"):
        create_method("trades", attack={"name": "square"})


def test_a_subset_larger_than_the_dataset_is_refused_not_cut(tmp_path, capsys, monkeypatch):
    """data.train_subset or data.test_subset past the images there are was cut to them in silence: refused in one
    line naming the size, before the data loads where it is known (digits), else once it has, before any step."""
    from dard.training import preflight
    from dard.training.setup import prepare_data

    argv = ["train", "--config", config_file(tmp_path), "--method", "sat", "--out", str(tmp_path / "run")]
    train = "data.train_subset 2000 exceeds the 1373 training images left after data.val_size 64 of dataset 'digits'"
    fails_cleanly(capsys, tmp_path, [*argv, "--set", "data.train_subset=2000"], train)
    fails_cleanly(capsys, tmp_path, [*argv, "--set", "data.test_subset=361"], "test_subset 361 exceeds the 360 test")
    monkeypatch.setattr(preflight, "known_split_sizes", lambda *a: None)  # a dataset whose size only its files say
    fails_cleanly(capsys, tmp_path, [*argv, "--set", "data.train_subset=2000"], train)
    cfg = parse_config(tiny_run_config(data={"train_subset": 2000}))
    assert len(prepare_data(cfg).train) == 1373  # a run's record, made when it was cut, reads as it was made
    with pytest.raises(DardError, match="^data.val_size 1437 leaves no training .* of 1437 of dataset 'digits'$"):
        prepare_data(parse_config(tiny_run_config(data={"val_size": 1437})))  # said "val_size", not the key
    # an image folder's sizes are its files, listed before any image is decoded (found once it had loaded)
    from tests.cli_checks import image_folder

    monkeypatch.undo()
    folder = {"name": "folder", "dir": str(image_folder(tmp_path / "imgs", side=8, classes=3)), "val_size": 3}
    with pytest.raises(DardError, match="data.train_subset 7 exceeds the 6 training images left after data.val_size 3"):
        preflight.check_config(parse_config({"data": {**folder, "train_subset": 7}, "method": {"name": "sat"}}))
    preflight.check_config(parse_config({"data": {**folder, "train_subset": 6}, "method": {"name": "sat"}}))
    # AutoAttack's subset past the test images evaluated was cut to them too (its record, fewer images than asked)
    aa = {"eval": {"autoattack_subset": 10}, "method": {"name": "sat"}}
    with pytest.raises(DardError, match=r"^eval.autoattack_subset 10 exceeds the 9 test images evaluated .*fewer$"):
        preflight.check_config(parse_config({"data": folder, **aa}))
    with pytest.raises(
        DardError, match=r"autoattack_subset 10 exceeds the 2 test images .*, or raise data.test_subset"
    ):
        preflight.check_config(parse_config({"data": {**folder, "test_subset": 2}, **aa}))


def test_step_milestones_lie_within_the_run(tmp_path, capsys):
    """The default milestones [30, 40] (60% and 80% of 50 epochs) never came in the default 10 epochs: the step
    schedule kept optim.lr throughout, in silence. Unset, they scale to the epochs; set past the end, a new run is
    refused before any work; a recorded config (every value written) reads as it was made."""
    from dard.training.preflight import check_milestones

    def milestones(**optim: object) -> list[int]:
        return parse_config({"optim": optim}).optim.milestones

    assert milestones() == [6, 8] and milestones(epochs=5) == [3, 4] and milestones(epochs=1) == []
    assert milestones(epochs=50) == [30, 40] and milestones(epochs=41) == [30, 40]
    assert milestones(epochs=10, milestones=[2]) == [2] and milestones(epochs=10, schedule="cosine") == [30, 40]
    recorded = parse_config({"optim": {"epochs": 50}}).model_dump(mode="json")
    recorded["optim"]["epochs"] = 10  # a run made before: [30, 40] written out, and resumable as it was
    assert parse_config(recorded).optim.milestones == [30, 40]
    with pytest.raises(DardError, match=r"optim.milestones \[30, 40\] are not before optim.epochs 10: .* \[6, 8\]"):
        check_milestones(parse_config(recorded))
    check_milestones(parse_config({"optim": {"epochs": 10, "milestones": [9]}}))
    out = tmp_path / "r"
    argv = ["train", "--config", "cifar10/sat_resnet18", "--epochs", "10", "--out", str(out), "--device", "cpu"]
    fails_cleanly(capsys, tmp_path, argv, "optim.milestones [30, 40] are not before optim.epochs 10")
    assert not out.exists()
