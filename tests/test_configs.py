"""The config tree: each group composes against its schema, every default is written
once, every option composes and builds, and bad values are refused by name."""

from __future__ import annotations

from dataclasses import fields, is_dataclass
from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir
from hydra.errors import ConfigCompositionException
from omegaconf import OmegaConf

from tiedharness.cli import CONF_DIR
from tiedharness.cli.params import vocab_from_cfg
from tiedharness.config import GROUP_SCHEMAS, JobConfig
from tiedharness.model.config import Arch, ModelConfig
from tiedharness.model.names import STRATEGY_NAMES
from tiedharness.model.params import param_report
from tiedharness.model.sharing import STRATEGIES
from tiedharness.tasks import TASKS, task_schema


def options(group: str) -> list[str]:
    return sorted(p.stem for p in (Path(CONF_DIR) / group).glob("*.yaml"))


def compose_app(app: str, *overrides: str, hydra: bool = False):
    with initialize_config_dir(config_dir=CONF_DIR, version_base="1.3"):
        return compose(app, overrides=list(overrides), return_hydra_config=hydra)


def test_every_strategy_is_registered_named_and_has_one_yaml():
    assert list(STRATEGIES) == list(STRATEGY_NAMES)
    assert options("sharing") == sorted(STRATEGY_NAMES)
    for name in STRATEGY_NAMES:
        sharing = OmegaConf.to_object(compose_app("params", f"sharing={name}").sharing)
        assert sharing.strategies == ([] if name == "none" else [name])


@pytest.mark.parametrize("model", options("model"))
@pytest.mark.parametrize("sharing", options("sharing"))
def test_every_model_and_sharing_option_composes_and_builds(model, sharing):
    cfg = compose_app("params", f"model={model}", f"sharing={sharing}")
    model_cfg = OmegaConf.to_object(cfg.model).resolved(Arch.encdec)
    report = param_report(model_cfg, vocab_from_cfg(cfg), OmegaConf.to_object(cfg.sharing))
    assert 0 < report.total <= report.untied_total
    assert (report.total < report.untied_total) == (sharing != "none")


def test_presets_have_the_documented_dimensions():
    def preset(name: str) -> ModelConfig:
        return OmegaConf.to_object(compose_app("params", f"model={name}").model)

    shape = lambda m: (m.d_model, m.d_ff, m.n_heads, m.enc_layers, m.dec_layers, m.max_len)  # noqa: E731
    assert shape(preset("tiny")) == (32, 64, 4, 2, 2, 64)
    assert shape(preset("small")) == (256, 1024, 4, 3, 3, 256)
    assert shape(preset("base")) == (512, 2048, 8, 6, 6, 512)
    assert shape(preset("big")) == (1024, 4096, 16, 6, 6, 512)
    assert preset("big").dropout == 0.3 and preset("base").dropout == 0.1
    assert preset("small").positions == "learned"  # so every strategy of the grid applies


# ---------------------------------------------------------------------------- one definition


def schema_of(group: str, option: str):
    """The schema object a group option starts from (a task's carries its name)."""
    if group == "task":
        return task_schema(
            OmegaConf.load(Path(CONF_DIR) / "task" / f"{option}.yaml").defaults[0][7:]
        )
    return GROUP_SCHEMAS[group]()


def repeated_defaults(values: dict, schema, prefix: str) -> list[str]:
    """Keys of `values` whose value equals the schema's default (recursively)."""
    found = []
    for key, value in values.items():
        default = getattr(schema, key)
        if is_dataclass(default) and isinstance(value, dict):
            found += repeated_defaults(value, default, f"{prefix}{key}.")
        elif (
            OmegaConf.to_container(OmegaConf.create({"v": default}), enum_to_str=True)["v"] == value
        ):
            found.append(f"{prefix}{key}")
    return found


@pytest.mark.parametrize("group", ["task", *GROUP_SCHEMAS])
def test_group_options_start_from_their_schema_and_repeat_no_default(group):
    for option in options(group):
        raw = OmegaConf.to_container(OmegaConf.load(Path(CONF_DIR) / group / f"{option}.yaml"))
        expected = f"schema_{option}" if group == "task" else "schema"
        assert raw.pop("defaults") == [expected, "_self_"], f"{group}/{option}"
        schema = schema_of(group, option)
        assert repeated_defaults(raw, schema, f"{group}.") == [], f"{group}/{option}"


def test_every_registered_task_has_a_yaml_and_composes_to_its_schema():
    assert options("task") == sorted(TASKS)
    for name in TASKS:
        task = OmegaConf.to_object(compose_app("data", f"task={name}").task)
        assert type(task) is TASKS[name].Config
        assert task == task_schema(name)


# ---------------------------------------------------------------------------- bad values


@pytest.mark.parametrize(
    ("override", "named"),
    [
        ("trainer.lr_rate=1", "trainer.lr_rate"),
        ("trainer.max_steps=abc", "trainer.max_steps"),
        ("model.norm=middle", "model.norm"),
        ("task.overlap=x", "task.overlap"),
        ("sharing.cross_layer.plan=zigzag", "sharing.cross_layer.plan"),
        ("logger.wandb.mode=sometimes", "logger.wandb.mode"),
    ],
)
def test_composition_refuses_unknown_keys_wrong_types_and_choices(override, named):
    with pytest.raises(ConfigCompositionException) as err:
        compose_app("train", override)
    assert named in f"{err.value} {err.value.__cause__}"


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("model.d_model=0", "model.d_model=0: must be > 0"),
        ("model.n_heads=3", "must be divisible by model.n_heads=3"),
        ("model.dropout=1.5", "model.dropout=1.5: must lie in [0, 1]"),
        ("trainer.lr=-1", "trainer.lr=-1.0: must be > 0"),
        ("trainer.max_steps=null", "the training budget is unbounded"),
        ("task.overlap=2", "task.overlap=2.0: must lie in [0, 1]"),
        ("sharing.strategies=[qkvz]", "unknown strategy 'qkvz'"),
    ],
)
def test_impossible_values_are_refused_when_the_job_builds_its_config(override, message):
    with pytest.raises(ValueError) as err:
        JobConfig.from_config(compose_app("train", override))
    assert message in str(err.value)


def test_an_explicit_arch_that_contradicts_the_task_is_an_error_not_replaced():
    from tiedharness.tasks import make_task

    job = JobConfig.from_config(compose_app("train", "task=bible_lm", "model.arch=encdec"))
    with pytest.raises(ValueError, match=r"model\.arch=encdec does not fit this task"):
        job.model_for(make_task(job.task))
    auto = JobConfig.from_config(compose_app("train", "task=bible_lm"))
    assert auto.model_for(make_task(auto.task)).arch == "lm"


# ---------------------------------------------------------------------------- studies, launchers

TRAIN_GROUPS = [
    "task",
    "model",
    "sharing",
    "trainer",
    "logger",
    "task_variant",
    "scale",
    "cell",
    "experiment",
]
LAUNCHERS = {
    "basic": "BasicLauncher",
    "joblib": "JoblibLauncher",
    "submitit_local": "LocalLauncher",
    "submitit_slurm": "SlurmLauncher",
}


@pytest.mark.parametrize(("group", "option"), [(g, o) for g in TRAIN_GROUPS for o in options(g)])
def test_every_option_of_every_training_group_builds_its_objects(group, option):
    job = JobConfig.from_config(compose_app("train", f"{group}={option}"))
    if group not in ("task", *GROUP_SCHEMAS):  # a global option: a study, a cell, a variant
        return
    written = OmegaConf.to_container(OmegaConf.load(Path(CONF_DIR) / group / f"{option}.yaml"))
    written.pop("defaults", None)
    if group == "task":
        written["name"] = option
    built = as_plain(getattr(job, group))
    for key, value in written.items():  # what the option file says is what the job gets
        if isinstance(value, dict):
            assert {k: built[key][k] for k in value} == value, key
        else:
            assert built[key] == value, key


def as_plain(obj):
    """A built schema object as YAML would write it (enums as their values)."""
    if is_dataclass(obj):
        return {f.name: as_plain(getattr(obj, f.name)) for f in fields(obj)}
    if isinstance(obj, list):
        return [as_plain(v) for v in obj]
    return getattr(obj, "value", obj)


@pytest.mark.parametrize("experiment", options("experiment"))
def test_every_study_cell_composes(experiment):
    cfg = compose_app("train", f"experiment={experiment}", hydra=True)
    assert cfg.experiment_name == experiment
    params = cfg.hydra.sweeper.params
    assert params, f"{experiment} sweeps nothing"
    # every value of every swept key composes (with the others at their first value)
    first = {key: str(values).split(",")[0] for key, values in params.items()}
    for key, values in params.items():
        for value in str(values).split(","):
            overrides = [f"{k}={value if k == key else v}" for k, v in first.items()]
            JobConfig.from_config(compose_app("train", f"experiment={experiment}", *overrides))


# The literature cells, each defined once (conf/cell/), and what each study's scale
# (conf/scale/) makes of them, written out here from the studies' numbers:
# (task, strategy, d_model, d_ff, vocab_size, train share or pairs, max_train_tokens, init).
LITERATURE_CELLS = [
    *(
        f"lm_{width}_{vocab}vocab_{strategy}"
        for width in ("narrow", "wide")
        for vocab in ("small", "large")
        for strategy in ("none", "embed_output")
    ),
    "lm_narrow_smallvocab_t5_none",
    "lm_narrow_smallvocab_t5_embed_output",
    "lm_wide_smallvocab_fewdata_none",
    "lm_wide_smallvocab_fewdata_embed_output",
    *(
        f"synth_overlap_{overlap}_{strategy}"
        for overlap in ("0", "50", "100")
        for strategy in ("none", "encdec_vocab", "three_way")
        + (("qkv", "qk", "qk_mask_self") if overlap == "50" else ())
    ),
    "mt_none",
    "mt_three_way",
]
# fmt: off
AT_SCALE = {  # a few cells, every kind: (scale, cell) → what the job is built with
    ("cpu", "lm_narrow_smallvocab_none"): ("bible_lm", "none", 64, 256, 1000, 0.5, 1_200_000),
    ("cpu", "lm_wide_largevocab_embed_output"): ("bible_lm", "embed_output", 128, 512, 8000, 0.5, 830_000),
    ("cpu", "lm_narrow_smallvocab_t5_embed_output"): ("bible_lm", "embed_output", 64, 256, 1000, 0.5, 1_200_000),
    ("cpu", "lm_wide_smallvocab_fewdata_none"): ("bible_lm", "none", 128, 512, 1000, 0.05, 1_350_000),
    ("cpu", "synth_overlap_50_qk_mask_self"): ("synth_translation", "qk", 64, 256, 1000, 4000, 750_000),
    ("cpu", "mt_three_way"): ("bible_mt", "three_way", 64, 256, 2000, 1.0, 1_500_000),
    ("gpu", "lm_narrow_largevocab_none"): ("bible_lm", "none", 256, 1024, 16_000, 1.0, 20_000_000),
    ("gpu", "lm_wide_smallvocab_fewdata_embed_output"): ("bible_lm", "embed_output", 512, 2048, 8000, 0.05, 4_000_000),
    ("gpu", "synth_overlap_100_three_way"): ("synth_translation", "three_way", 512, 2048, 1000, 20_000, 20_000_000),
    ("gpu", "mt_none"): ("bible_mt", "none", 512, 2048, 16_000, 1.0, 40_000_000),
}
# fmt: on


def test_each_literature_cell_is_one_option_that_both_studies_sweep():
    """Every cell option is the literature studies' but the demo's own (demo_*, swept by
    experiment=quick)."""
    demo = [c for c in options("cell") if c.startswith("demo_")]
    assert [c for c in options("cell") if c not in demo] == sorted(LITERATURE_CELLS)
    quick = compose_app("train", "experiment=quick", hydra=True)
    assert sorted(quick.hydra.sweeper.params.cell.split(",")) == demo
    assert options("scale") == ["cpu", "gpu"]
    for scale in ("cpu", "gpu"):
        cfg = compose_app("train", f"experiment=literature_{scale}", hydra=True)
        assert cfg.hydra.sweeper.params.cell.split(",") == LITERATURE_CELLS


@pytest.mark.parametrize(("scale", "cell"), list(AT_SCALE))
def test_a_literature_cell_takes_its_sizes_and_budget_from_its_studys_scale(scale, cell):
    overrides = (f"experiment=literature_{scale}", f"cell={cell}")
    assert compose_app("train", *overrides, hydra=True).hydra.runtime.choices.scale == scale
    job = JobConfig.from_config(compose_app("train", *overrides))
    data = job.task.train_examples if job.task.name == "synth_translation" else None
    built = (
        job.task.name,
        job.sharing.name,
        job.model.d_model,
        job.model.d_ff,
        job.task.vocab_size,
        data or job.task.train_fraction,
        job.trainer.max_train_tokens,
    )
    assert built == AT_SCALE[scale, cell]
    assert job.model.init.value == ("t5" if "_t5_" in cell else "fairseq")
    assert job.sharing.qk_mask_self == cell.endswith("mask_self")
    assert job.trainer.schedule.value == "wsd" and len(job.trainer.branch_at) >= 2


def test_the_scale_is_chosen_apart_from_the_cell():
    at_gpu = JobConfig.from_config(
        compose_app("train", "experiment=literature_cpu", "cell=mt_three_way", "scale=gpu")
    )
    assert (at_gpu.task.vocab_size, at_gpu.trainer.max_train_tokens) == (16000, 40_000_000)
    assert at_gpu.model.d_model == 64  # the model is the study's, not the scale's


@pytest.mark.parametrize(("launcher", "target"), list(LAUNCHERS.items()))
def test_every_launcher_composes(launcher, target):
    cfg = compose_app("train", f"hydra/launcher={launcher}", hydra=True)
    assert cfg.hydra.launcher._target_.endswith(target)


def test_help_names_the_command():
    for app, command in [("train", "tiedharness-train"), ("params", "tiedharness-params")]:
        cfg = compose_app(app, hydra=True)
        assert cfg.hydra.help.app_name == command
        assert "powered by Hydra" not in cfg.hydra.help.header
