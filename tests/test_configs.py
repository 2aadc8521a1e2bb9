"""The config tree: every option of every group composes and builds."""

from __future__ import annotations

from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf

from tiedharness.cli import CONF_DIR, sharing_options, vocab_from_cfg
from tiedharness.model import ModelConfig
from tiedharness.params import param_report
from tiedharness.sharing import STRATEGIES, SharingConfig


def options(group: str) -> list[str]:
    return sorted(p.stem for p in (Path(CONF_DIR) / group).glob("*.yaml"))


def test_every_strategy_has_one_yaml_and_every_yaml_one_strategy():
    assert options("sharing") == sorted(STRATEGIES)
    for name, sharing in sharing_options().items():
        assert sharing.strategies == ([] if name == "none" else [name])


@pytest.mark.parametrize("model", options("model"))
@pytest.mark.parametrize("sharing", options("sharing"))
def test_every_model_and_sharing_option_composes_and_builds(model, sharing):
    with initialize_config_dir(config_dir=CONF_DIR, version_base="1.3"):
        cfg = compose("params", overrides=[f"model={model}", f"sharing={sharing}"])
    plain = OmegaConf.to_container(cfg, resolve=True)
    report = param_report(
        ModelConfig.from_dict(plain["model"]),
        vocab_from_cfg(cfg),
        SharingConfig.from_dict(plain["sharing"]),
    )
    assert 0 < report.total <= report.untied_total
    assert (report.total < report.untied_total) == (sharing != "none")


def test_presets_have_the_documented_dimensions():
    def load(name: str) -> ModelConfig:
        return ModelConfig.from_dict(
            OmegaConf.to_container(OmegaConf.load(f"{CONF_DIR}/model/{name}.yaml"))
        )

    base, big = load("base"), load("big")
    assert (base.d_model, base.d_ff, base.n_heads, base.enc_layers, base.dec_layers) == (
        512,
        2048,
        8,
        6,
        6,
    )
    assert (big.d_model, big.d_ff, big.n_heads, big.enc_layers, big.dec_layers) == (
        1024,
        4096,
        16,
        6,
        6,
    )
    assert load("small").positions == "learned"  # so every strategy of the grid applies


TRAIN_GROUPS = ["task", "model", "sharing", "trainer", "logger", "task_variant", "experiment"]
LAUNCHERS = {
    "basic": "BasicLauncher",
    "joblib": "JoblibLauncher",
    "submitit_local": "LocalLauncher",
    "submitit_slurm": "SlurmLauncher",
}


def compose_train(*overrides: str, hydra: bool = False):
    with initialize_config_dir(config_dir=CONF_DIR, version_base="1.3"):
        return compose("train", overrides=list(overrides), return_hydra_config=hydra)


def check_train_config(cfg) -> None:
    """Every part of a composed training config parses into the objects the harness uses."""
    from tiedharness.tasks import make_task
    from tiedharness.train import TrainerConfig

    plain = OmegaConf.to_container(cfg, resolve=True)
    make_task(plain["task"])
    ModelConfig.from_dict(plain["model"])
    SharingConfig.from_dict(plain["sharing"])
    TrainerConfig.from_dict(plain["trainer"])
    assert set(plain["logger"]) == {"wandb"}


@pytest.mark.parametrize(("group", "option"), [(g, o) for g in TRAIN_GROUPS for o in options(g)])
def test_every_option_of_every_training_group_composes(group, option):
    check_train_config(compose_train(f"{group}={option}"))


@pytest.mark.parametrize("experiment", options("experiment"))
def test_every_study_cell_composes(experiment):
    cfg = compose_train(f"experiment={experiment}", hydra=True)
    assert cfg.experiment_name == experiment
    params = cfg.hydra.sweeper.params
    assert params, f"{experiment} sweeps nothing"
    # every value of every swept key composes (with the others at their first value)
    first = {key: str(values).split(",")[0] for key, values in params.items()}
    for key, values in params.items():
        for value in str(values).split(","):
            overrides = [f"{k}={value if k == key else v}" for k, v in first.items()]
            check_train_config(compose_train(f"experiment={experiment}", *overrides))


@pytest.mark.parametrize(("launcher", "target"), list(LAUNCHERS.items()))
def test_every_launcher_composes(launcher, target):
    cfg = compose_train(f"hydra/launcher={launcher}", hydra=True)
    assert cfg.hydra.launcher._target_.endswith(target)
