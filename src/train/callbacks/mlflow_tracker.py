"""Log a run to MLflow: its config as params, its metrics as they come, its files as artifacts at the end."""

from __future__ import annotations

import dataclasses
import math
import os
import sys
import time
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import urlparse

from loguru import logger

from train.callbacks.step_logger import StepLogger, StepRow, require, run_label

if TYPE_CHECKING:
    from mlflow.tracking import MlflowClient

DEFAULT_ARTIFACTS = ("metrics.jsonl", "curves.png", "resolved_config.yaml", "evaluations", ".hydra")
MAX_PARAM_LENGTH = 6000  # MLflow's limit on a param's value
PARAMS_PER_BATCH = 100  # and on the params of one log_batch call


def flatten(value: object, prefix: str = "") -> Iterator[tuple[str, str]]:
    """("training.batch_size", "32") pairs of a nested config; lists stay whole, as their text."""
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        value = {field.name: getattr(value, field.name) for field in dataclasses.fields(value)}
    if isinstance(value, Mapping):
        for key, item in value.items():  # pyright: ignore[reportUnknownVariableType]
            yield from flatten(item, f"{prefix}{key}.")
        return
    yield prefix.rstrip("."), str(value)[:MAX_PARAM_LENGTH]


def is_local_store(uri: str) -> bool:
    return urlparse(uri).scheme in ("", "file")


class MLflowLogger(StepLogger):
    """Logs the run to MLflow, through ``MlflowClient`` (no global active run, so runs in one process are apart).

    Where: ``tracking_uri`` (a server such as ``http://host:5000``, ``sqlite:///mlflow.db``...), else the
    ``MLFLOW_TRACKING_URI`` environment variable, else a local file store in ``store_dir`` (``outputs/mlruns``
    in the Hydra app: ``mlflow ui --backend-store-uri outputs/mlruns`` shows it, no server needed).

    What: the trainer's config as params; ``train/*`` every ``every_n_steps`` steps and ``evaluation/<metric>``
    at each evaluation as metrics; at the end the ``artifacts`` that exist in the run directory (files or
    folders), then the run is marked finished (killed if a signal interrupted it), with the stop reason as a
    tag. The MLflow run id is in :meth:`state_dict`, so a resumed run goes on logging into the same run.
    """

    def __init__(
        self,
        tracking_uri: str | None = None,
        store_dir: str = "outputs/mlruns",
        experiment_name: str = "train",
        run_name: str | None = None,
        every_n_steps: int = 10,
        grad_norm: bool = True,
        artifacts: Sequence[str] = DEFAULT_ARTIFACTS,
        tags: Mapping[str, str] | None = None,
    ) -> None:
        super().__init__(every_n_steps=every_n_steps, grad_norm=grad_norm)
        require("mlflow", type(self).__name__)
        self.tracking_uri = tracking_uri
        self.store_dir = store_dir
        self.experiment_name = experiment_name
        self.run_name = run_name
        self.artifacts = [str(artifact) for artifact in artifacts]
        self.tags = {str(key): str(value) for key, value in (tags or {}).items()}
        self.run_id: str | None = None
        self.client: MlflowClient | None = None

    def tracking_uri_in_use(self) -> str:
        uri = self.tracking_uri or os.environ.get("MLFLOW_TRACKING_URI")
        return uri or Path(self.store_dir).resolve().as_uri()

    def _experiment_id(self, client: MlflowClient) -> str:
        from mlflow.exceptions import MlflowException

        experiment = client.get_experiment_by_name(self.experiment_name)
        if experiment is not None:
            return experiment.experiment_id
        try:
            return client.create_experiment(self.experiment_name)
        except MlflowException:  # a parallel sweep job created it first
            experiment = client.get_experiment_by_name(self.experiment_name)
            if experiment is None:
                raise
            return experiment.experiment_id

    def open(self, trainer: Any) -> None:
        from mlflow.entities import Param
        from mlflow.tracking import MlflowClient

        uri = self.tracking_uri_in_use()
        if is_local_store(uri):
            # MLflow 3 refuses its file store unless asked for it; a local folder needs no server or database.
            os.environ.setdefault("MLFLOW_ALLOW_FILE_STORE", "true")
        self.client = client = MlflowClient(tracking_uri=uri)
        if self.run_id is not None:  # restored by load_state_dict: a resumed run
            client.update_run(self.run_id, status="RUNNING")
            logger.info(f"MLflow: continuing run {self.run_id} at {uri}")
            return
        run_dir = Path(trainer.run_dir)
        run = client.create_run(
            self._experiment_id(client),
            run_name=self.run_name or run_label(run_dir),
            tags={"run_dir": str(run_dir.resolve()), **self.tags},
        )
        self.run_id = run.info.run_id
        params = [Param(key, value) for key, value in flatten(trainer.config)]
        for start in range(0, len(params), PARAMS_PER_BATCH):
            client.log_batch(self.run_id, params=params[start : start + PARAMS_PER_BATCH])
        logger.info(f"MLflow: run {self.run_id} in experiment {self.experiment_name!r} at {uri}")

    def _log_metrics(self, values: Mapping[str, float], step: int) -> None:
        from mlflow.entities import Metric

        if self.client is None or self.run_id is None or not values:
            return
        timestamp = int(time.time() * 1000)
        metrics = [Metric(key, value, timestamp, step) for key, value in values.items()]
        self.client.log_batch(self.run_id, metrics=metrics)

    def write_step(self, trainer: Any, row: StepRow) -> None:
        self._log_metrics(row.scalars(), row.step)

    def write_evaluation(self, trainer: Any, metrics: dict[str, float]) -> None:
        finite = {f"evaluation/{name}": value for name, value in metrics.items() if math.isfinite(value)}
        self._log_metrics(finite, trainer.clock.step)

    def close(self, trainer: Any) -> None:
        client, run_id = self.client, self.run_id
        if client is None or run_id is None:
            return
        run_dir = Path(trainer.run_dir)
        try:
            for name in self.artifacts:
                path = run_dir / name
                if path.is_dir():
                    client.log_artifacts(run_id, str(path), artifact_path=name)
                elif path.is_file():
                    client.log_artifact(run_id, str(path))
        except Exception as error:  # the run itself is complete and on disk: an upload failure does not undo it
            logger.warning(f"MLflow: could not log the artifacts of run {run_id}: {error}")
        clock = trainer.clock
        if clock.stop_reason:
            client.set_tag(run_id, "stop_reason", clock.stop_reason)
        interrupted = getattr(clock, "interrupted_by", None) is not None
        failed = sys.exc_info()[0] is not None  # closed from on_exception
        client.set_terminated(run_id, status="FAILED" if failed else "KILLED" if interrupted else "FINISHED")
        self.client = None

    def state_dict(self) -> dict[str, Any]:
        return {"run_id": self.run_id}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.run_id = state.get("run_id")
