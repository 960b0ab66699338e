"""A user's own experiment, outside the package: its Trainer on PYTHONPATH, its config in ``--config-dir``.

The files below are the recipe the README documents: a Trainer subclass with its config class, and an
``experiment`` option that replaces the default model group and names the trainer, metric and task values.
"""

from __future__ import annotations

import math
from pathlib import Path

from app_support import EVERY_STEP_ROWS, read_json, read_jsonl, read_mapping, run_to_end, single_run_dir

MY_EXPERIMENT = '''\
"""My experiment: a linear regression on 4 features, with a model built by Hydra from torch.nn.Linear."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn
from torch.nn import functional as F

from train import BaseConfig, Trainer


class MyConfig(BaseConfig):
    n_items: int = 32


@dataclass
class MyBatch:
    x: torch.Tensor
    y: torch.Tensor


def make_item(index: int) -> MyBatch:
    x = torch.randn(1, 4, generator=torch.Generator().manual_seed(index))
    return MyBatch(x=x, y=x.sum(dim=1, keepdim=True))


class MyTrainer(Trainer[MyConfig, MyBatch]):
    @property
    def net(self) -> nn.Linear:  # the model registered as `net` (model.net in the config)
        return self.get_model("net", nn.Linear)

    def get_item(self, index: int) -> MyBatch:
        return make_item(index)

    def collate_fn(self, batch: list[MyBatch]) -> MyBatch:
        return MyBatch(x=torch.cat([item.x for item in batch]), y=torch.cat([item.y for item in batch]))

    @property
    def dataset_length(self) -> int:
        return self.config.n_items

    def compute_loss(self, batch: MyBatch) -> torch.Tensor:
        prediction = self.net(batch.x.to(self.device, self.dtype))
        return F.mse_loss(prediction, batch.y.to(self.device, self.dtype))

    def compute_evaluation(self) -> dict[str, float]:
        batch = self.collate_fn([make_item(index) for index in range(self.config.n_items)])
        return {"mse": self.compute_loss(batch).item()}
'''

MINE_YAML = """\
# @package _global_
defaults:
  - override /model: null     # drop the default autoencoder model

experiment:
  name: mine
  trainer: my_experiment.MyTrainer
  metric: mse
  mode: min

model:
  net:
    _target_: torch.nn.Linear
    in_features: 4
    out_features: 1

task:
  n_items: 32
"""


def write_experiment(root: Path) -> None:
    (root / "myexp" / "conf" / "experiment").mkdir(parents=True)
    (root / "myexp" / "my_experiment.py").write_text(MY_EXPERIMENT, encoding="utf-8")
    (root / "myexp" / "conf" / "experiment" / "mine.yaml").write_text(MINE_YAML, encoding="utf-8")


def test_external_experiment_runs_from_its_own_folder(tmp_path: Path) -> None:
    write_experiment(tmp_path)
    run = run_to_end(
        [
            "--config-dir",
            "myexp/conf",
            "experiment=mine",
            "training.duration=3:step",
            "training.batch_size=32",
            EVERY_STEP_ROWS,
        ],
        tmp_path,
        env={"PYTHONPATH": "myexp"},
    )
    assert run.returncode == 0, run.describe()
    run_dir = single_run_dir(tmp_path, "mine")
    result = read_json(run_dir / "result.json")
    assert result["status"] == "completed"
    assert result["steps"] == 3
    assert result["objective"] == "mse"
    mse = result["metrics"]["mse"]
    assert isinstance(mse, float) and math.isfinite(mse) and mse > 0
    assert result["objective_value"] == mse
    resolved = read_mapping(run_dir / "resolved_config.yaml")
    assert list(resolved["model"]) == ["net"]
    assert resolved["task"] == {"n_items": 32}
    assert resolved["experiment"]["trainer"] == "my_experiment.MyTrainer"
    rows = read_jsonl(run_dir / "metrics.jsonl")
    assert [row["step"] for row in rows if row["kind"] == "step"] == [1, 2, 3]
    evaluations = [row["mse"] for row in rows if row["kind"] == "evaluation"]
    assert len(evaluations) == 3  # 32 items, batch_size 32: one step an epoch, one evaluation an epoch
    assert evaluations[-1] == mse
    assert evaluations == sorted(evaluations, reverse=True) and evaluations[-1] < evaluations[0], "it did not learn"
