"""MLflowLogger: the run read back through MLflow's client, from a local store (no server)."""

from __future__ import annotations

from pathlib import Path

import pytest
from callbacks_support import TinyTrainer, save_grid, tiny_config, train_in

from train.callbacks import EarlyStopping, MetricsFile, MLflowLogger

pytest.importorskip("mlflow")

from mlflow.tracking import MlflowClient


@pytest.fixture(autouse=True)
def _local_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    """No tracking server from the environment; the logger's own file-store opt-in is undone afterwards."""
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.delenv("MLFLOW_ALLOW_FILE_STORE", raising=False)


def evaluate_and_save(trainer: TinyTrainer) -> dict[str, float]:
    save_grid(trainer)
    return {"score": float(trainer.clock.step)}


def test_params_metrics_and_artifacts_are_in_the_local_store(tmp_path: Path) -> None:
    store = tmp_path / "outputs" / "mlruns"
    run_dir = tmp_path / "outputs" / "tiny" / "run_1"
    tracker = MLflowLogger(
        store_dir=str(store), experiment_name="tiny", every_n_steps=1, artifacts=["metrics.jsonl", "evaluations"]
    )
    config = tiny_config(duration="2:epoch", gradient_accumulation="2:step", evaluation_interval="1:epoch")
    _, recorder = train_in(run_dir, config, [MetricsFile(), tracker], evaluation_fn=evaluate_and_save)

    assert tracker.run_id is not None
    assert tracker.tracking_uri_in_use() == store.resolve().as_uri()
    client = MlflowClient(tracking_uri=store.resolve().as_uri())
    experiment = client.get_experiment_by_name("tiny")
    assert experiment is not None
    (run,) = client.search_runs([experiment.experiment_id])
    assert run.info.run_id == tracker.run_id
    assert run.info.status == "FINISHED"
    assert run.info.run_name == "run_1"
    assert run.data.tags["run_dir"] == str(run_dir.resolve())

    params = run.data.params
    assert params["training.batch_size"] == "2"
    assert params["training.duration"] == "2:epoch"
    assert params["optimizer.learning_rate"] == "0.1"

    loss = client.get_metric_history(run.info.run_id, "train/loss")
    assert [metric.step for metric in loss] == list(range(1, 9))
    assert [metric.value for metric in loss] == pytest.approx(recorder.losses)
    assert [m.step for m in client.get_metric_history(run.info.run_id, "train/grad_norm")] == [2, 4, 6, 8]
    score = client.get_metric_history(run.info.run_id, "evaluation/score")
    assert [(metric.step, metric.value) for metric in score] == [(4, 4.0), (8, 8.0)]
    assert {"train/lr", "train/samples_per_second", "train/epoch"} <= set(run.data.metrics)

    artifacts = {artifact.path for artifact in client.list_artifacts(run.info.run_id)}
    assert artifacts == {"metrics.jsonl", "evaluations"}
    images = {artifact.path for artifact in client.list_artifacts(run.info.run_id, "evaluations")}
    assert images == {"evaluations/step_0000004.png", "evaluations/step_0000008.png"}


def test_every_n_steps_and_the_stop_reason_tag(tmp_path: Path) -> None:
    store = tmp_path / "mlruns"
    tracker = MLflowLogger(store_dir=str(store), experiment_name="tiny", every_n_steps=2, artifacts=[])
    stopper = EarlyStopping(monitor="score", mode="max", stop_at=3.0)
    config = tiny_config(duration="5:epoch", evaluation_interval="1:step")
    train_in(tmp_path / "run", config, [stopper, tracker], evaluation_fn=lambda t: {"score": float(t.clock.step)})

    client = MlflowClient(tracking_uri=store.resolve().as_uri())
    assert tracker.run_id is not None
    run = client.get_run(tracker.run_id)
    assert [metric.step for metric in client.get_metric_history(run.info.run_id, "train/loss")] == [
        2
    ]  # stopped at 3, before the last planned step
    assert "reached stop_at" in run.data.tags["stop_reason"]


def test_a_resumed_run_logs_into_the_same_mlflow_run(tmp_path: Path) -> None:
    store = tmp_path / "mlruns"
    first = MLflowLogger(store_dir=str(store), experiment_name="tiny", artifacts=[], every_n_steps=1)
    train_in(tmp_path / "run", tiny_config(duration="2:step"), [first])

    second = MLflowLogger(store_dir=str(store), experiment_name="tiny", artifacts=[], every_n_steps=1)
    second.load_state_dict(first.state_dict())

    def resume_at_step_two(trainer: TinyTrainer) -> None:
        trainer.clock.step = trainer.clock.step_in_epoch = trainer.clock.iteration = 2

    train_in(tmp_path / "run", tiny_config(duration="4:step"), [second], prepare=resume_at_step_two)
    run_id = first.run_id
    assert run_id is not None and second.run_id == run_id
    client = MlflowClient(tracking_uri=store.resolve().as_uri())
    assert [metric.step for metric in client.get_metric_history(run_id, "train/loss")] == [1, 2, 3, 4]
    assert client.get_run(run_id).info.status == "FINISHED"
