"""The `callbacks` config group composes as documented, builds real callbacks, and importing them stays light."""

from __future__ import annotations

import subprocess
import sys
from typing import Any

import pytest
from hydra import compose, initialize_config_dir
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf

from train.app.main import CONFIG_DIR
from train.callbacks import Curves, EarlyStopping, MetricsFile, MLflowLogger, ProgressBar, TensorBoardLogger

HEAVY = ("matplotlib", "tensorboard", "mlflow", "rich")


def compose_callbacks(*overrides: str) -> DictConfig:
    with initialize_config_dir(config_dir=str(CONFIG_DIR), version_base="1.3", job_name="test_callbacks"):
        cfg = compose(config_name="train", overrides=list(overrides))
    return cfg.callbacks


def default_names() -> list[str]:
    return list(compose_callbacks())


def test_default_gives_metrics_progress_and_curves() -> None:
    callbacks = compose_callbacks()
    assert {"metrics", "progress", "curves"} <= set(callbacks)
    assert callbacks.progress.mode == "auto"
    assert OmegaConf.to_container(callbacks.progress, resolve=False)["sweep_job"] == "${hydra:job.num}"  # type: ignore[index]


@pytest.mark.parametrize(
    ("option", "extra"), [("tensorboard", "tensorboard"), ("mlflow", "mlflow"), ("early_stopping", "early_stopping")]
)
def test_each_option_is_the_default_plus_its_callback(option: str, extra: str) -> None:
    assert list(compose_callbacks(f"callbacks={option}")) == [*default_names(), extra]


def test_options_combine_and_none_removes_all() -> None:
    names = list(compose_callbacks("callbacks=[tensorboard,mlflow,early_stopping]"))
    assert names == [*default_names(), "tensorboard", "mlflow", "early_stopping"]
    assert list(compose_callbacks("callbacks=none")) == []


def test_interpolations_follow_the_experiment_and_outputs() -> None:
    callbacks = compose_callbacks("callbacks=[mlflow,early_stopping]", "experiment.mode=min", "outputs=elsewhere")
    assert (callbacks.early_stopping.monitor, callbacks.early_stopping.mode) == ("iou", "min")
    assert callbacks.mlflow.store_dir == "elsewhere/mlruns"
    assert callbacks.mlflow.experiment_name == "autoencoder"
    assert callbacks.mlflow.tracking_uri is None


def test_every_callback_of_the_group_files_is_built_from_its_yaml() -> None:
    callbacks = compose_callbacks("callbacks=[tensorboard,mlflow,early_stopping]", "callbacks.progress.sweep_job=null")
    built: dict[str, Any] = {str(name): instantiate(entry) for name, entry in callbacks.items() if name != "checkpoint"}
    expected = {
        "metrics": MetricsFile,
        "progress": ProgressBar,
        "curves": Curves,
        "tensorboard": TensorBoardLogger,
        "mlflow": MLflowLogger,
        "early_stopping": EarlyStopping,
    }
    assert {name: type(callback) for name, callback in built.items()} == expected
    assert built["mlflow"].artifacts == ["metrics.jsonl", "curves.png", "resolved_config.yaml", "evaluations", ".hydra"]


def test_importing_train_and_its_callbacks_loads_no_plotting_or_tracking_package() -> None:
    code = (
        "import sys, train, train.callbacks, train.plots\n"
        f"print(sorted(name for name in {HEAVY!r} if name in sys.modules))"
    )
    completed = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=True)
    assert completed.stdout.strip() == "[]", completed.stdout + completed.stderr
