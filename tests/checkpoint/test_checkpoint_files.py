"""Checkpoint files: what they hold, a kill mid-write, keep-last-K and best, refusals, NaN losses, fine-tuning.

The in-process tests use the tiny trainers of ``tests/tiny.py`` and come first; the subprocess scenario here (a
run killed while writing a checkpoint, then resumed) starts with the session's other runs (see conftest.py).
"""

from __future__ import annotations

import json
import math
import shutil
import signal
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import safetensors
import torch
from checkpoint_helpers import (
    MODEL_FILE,
    SHRUNK,
    Finished,
    Scenarios,
    assert_same_state,
    assert_same_tensors,
    compose_experiment,
    evaluations,
    load_tensors,
    load_trainer_state,
    read_json,
    run_train,
    scenario,
    single_run_dir,
    tiny,
)
from safetensors.torch import load_file, save_file
from tiny import Batch, TinyConfig, TinyTrainer, linear_factory, mse_loss, tiny_config
from torch import nn

from train import (
    Callback,
    ConfigError,
    LRSchedulerConfig,
    LRSchedulerType,
    ModelConfig,
    ModelFactory,
    TrainingConfig,
    load_weights,
    save_weights,
)
from train.callbacks.checkpoint import Checkpointing
from train.checkpointing import (
    META_FILE,
    STATE_FILE,
    CheckpointMismatch,
    checkpoint_name,
    latest_checkpoint,
    list_checkpoints,
    load_checkpoint,
    read_meta,
    save_checkpoint,
)
from train.trainer import NonFiniteLossError

KILL_STEP = 10  # the checkpoint of step 10 is being written when the process dies


# -- what a checkpoint holds, in process --------------------------------------------------------------------
def _cpu_weights(model: nn.Module) -> dict[str, torch.Tensor]:
    return {key: value.detach().clone() for key, value in model.state_dict().items()}


def _tiny_trainer(config: TinyConfig, run_dir: Path, **kwargs: Any) -> TinyTrainer:
    trainer = TinyTrainer(config, **kwargs)
    trainer.run_dir = run_dir
    return trainer


def test_checkpoint_holds_weights_state_and_meta(tmp_path: Path) -> None:
    trainer = _tiny_trainer(tiny_config(duration="3:step"), tmp_path, models={"extra": linear_factory()})
    trainer.train()
    path = save_checkpoint(trainer, tmp_path / "checkpoints")
    assert path is not None and path == tmp_path / "checkpoints" / checkpoint_name(3)
    assert sorted(p.name for p in path.iterdir()) == ["extra.safetensors", META_FILE, "net.safetensors", STATE_FILE]
    assert save_checkpoint(trainer, tmp_path / "checkpoints") is None  # one per step
    for name in ("net", "extra"):
        assert_same_tensors(load_file(str(path / f"{name}.safetensors")), _cpu_weights(trainer.models[name]), name)
    meta = json.loads((path / META_FILE).read_text(encoding="utf-8"))
    assert meta["trainer"] == "tiny.TinyTrainer" and meta["step"] == 3
    assert meta["models"] == {"net": {"weight": [1, 3], "bias": [1]}, "extra": {"weight": [1, 3], "bias": [1]}}
    assert meta["config"]["training"]["duration"] == "3:step"
    state = torch.load(path / STATE_FILE, map_location="cpu", weights_only=True)
    expected = ["callbacks", "clock", "evaluation_metrics", "grad_scaler", "lr_scheduler", "optimizer", "rng"]
    assert sorted(state) == expected
    assert state["clock"]["step"] == 3


SCHEDULES = {
    "warmup_cosine": LRSchedulerConfig(type=LRSchedulerType.COSINE_ANNEALING_LR, warmup="3:iteration"),
    "linear": LRSchedulerConfig(type=LRSchedulerType.LINEAR_LR, start_factor=0.25),
    "one_cycle": LRSchedulerConfig(type=LRSchedulerType.ONE_CYCLE_LR),
    "step_per_epoch": LRSchedulerConfig(type=LRSchedulerType.STEP_LR, step_size=1, update_interval="1:epoch"),
}


@pytest.mark.parametrize("schedule", list(SCHEDULES))
def test_in_process_resume_is_exact_for_every_schedule(schedule: str, tmp_path: Path) -> None:
    """Train 3 epochs, checkpointing at step 6; a new trainer loaded from it ends with the same weights.

    Building a schedule sets the learning rates (warmup, a first step): the loaded ones must win.
    """
    config = tiny_config(duration="3:epoch", gradient_accumulation="2:step", lr_scheduler=SCHEDULES[schedule])
    checkpointing = Checkpointing(interval="5:step", keep_last=10, save_on_signal=False)
    uninterrupted = _tiny_trainer(config, tmp_path, callbacks=[checkpointing])
    uninterrupted.train()
    checkpoint = tmp_path / "checkpoints" / checkpoint_name(6)  # 5 steps elapsed: saved at the next update
    assert checkpoint.is_dir()

    resumed = _tiny_trainer(config, tmp_path / "resumed")
    load_checkpoint(resumed, checkpoint)
    assert resumed.clock.step == 6
    saved = load_trainer_state(checkpoint)
    assert [group["lr"] for group in resumed.optimizer.param_groups] == [
        group["lr"] for group in saved["optimizer"]["param_groups"]
    ]
    resumed.train()
    assert_same_tensors(_cpu_weights(resumed.net), _cpu_weights(uninterrupted.net), "final weights")
    assert_same_state(resumed.optimizer.state_dict(), uninterrupted.optimizer.state_dict(), "optimizer")
    assert resumed.lr_scheduler.get_last_lr() == uninterrupted.lr_scheduler.get_last_lr()


# -- 4. a checkpoint that does not fit is refused -----------------------------------------------------------
def _wide_factory() -> ModelFactory:
    return ModelFactory(ModelConfig(), lambda: nn.Linear(3, 2))


class OtherTinyTrainer(TinyTrainer):
    """The same models and config, another Trainer class."""


def test_checkpoint_with_other_shapes_is_refused(tmp_path: Path) -> None:
    saved = _tiny_trainer(tiny_config(), tmp_path, models={"extra": linear_factory()})
    path = save_checkpoint(saved, tmp_path / "checkpoints")
    assert path is not None
    other = _tiny_trainer(tiny_config(), tmp_path, models={"extra": _wide_factory()})
    before = _cpu_weights(other.models["extra"])
    with pytest.raises(CheckpointMismatch) as raised:
        load_checkpoint(other, path)
    message = str(raised.value)
    # The first differing key (in sorted order), with both shapes; the weight differs too.
    assert "does not fit model 'extra': bias is [1] in the checkpoint but [2] in the model (and 1 more)" in message
    assert_same_tensors(_cpu_weights(other.models["extra"]), before, "weights after a refused load")
    assert other.clock.step == 0

    missing = _tiny_trainer(tiny_config(), tmp_path)  # no "extra" model
    with pytest.raises(CheckpointMismatch, match=r"holds models \['extra', 'net'\], the config registers \['net'\]"):
        load_checkpoint(missing, path)


def test_checkpoint_of_another_trainer_class_is_refused(tmp_path: Path) -> None:
    path = save_checkpoint(_tiny_trainer(tiny_config(), tmp_path), tmp_path / "checkpoints")
    assert path is not None
    other = OtherTinyTrainer(tiny_config())
    with pytest.raises(CheckpointMismatch) as raised:
        load_checkpoint(other, path)
    assert f"written by tiny.TinyTrainer, not {__name__}.OtherTinyTrainer" in str(raised.value)


# -- 5. non-finite losses -----------------------------------------------------------------------------------
NAN_STEP = 6  # the second step of epoch 1 (4 steps of 2 items an epoch)


def _nan_at(step: int) -> Any:
    def loss(trainer: TinyTrainer, batch: Batch) -> torch.Tensor:
        value = mse_loss(trainer, batch)
        return value * math.nan if trainer.clock.step + 1 == step else value

    return loss


class WeightsAfterEachStep(Callback[Any]):
    def __init__(self) -> None:
        self.weights: dict[int, dict[str, torch.Tensor]] = {}

    def on_batch_end(self, trainer: Any) -> None:
        self.weights[trainer.clock.step] = _cpu_weights(trainer.models["net"])


def test_nan_loss_stops_with_the_step_and_the_last_good_checkpoint(tmp_path: Path) -> None:
    checkpointing = Checkpointing(interval="1:step", keep_last=2, save_on_signal=False)
    config = tiny_config(duration="2:epoch", on_nonfinite_loss="stop")
    trainer = _tiny_trainer(config, tmp_path, callbacks=[checkpointing], loss_fn=_nan_at(NAN_STEP))
    with pytest.raises(NonFiniteLossError) as raised:
        trainer.train()
    message = str(raised.value)
    assert f"loss is nan at step {NAN_STEP} " in message and "on_nonfinite_loss=stop" in message
    assert trainer.clock.step == NAN_STEP - 1

    latest = latest_checkpoint(tmp_path / "checkpoints")
    assert latest is not None and latest == tmp_path / "checkpoints" / checkpoint_name(NAN_STEP - 1)
    restored = _tiny_trainer(config, tmp_path / "restored")
    load_checkpoint(restored, latest)
    assert restored.clock.step == NAN_STEP - 1
    weights = _cpu_weights(restored.net)
    assert all(bool(torch.isfinite(value).all()) for value in weights.values())
    assert_same_tensors(weights, _cpu_weights(trainer.net), "weights of the last checkpoint")


def test_nan_loss_skipped_leaves_the_weights_unchanged(tmp_path: Path) -> None:
    recorder = WeightsAfterEachStep()
    config = tiny_config(duration="2:epoch", on_nonfinite_loss="skip")
    trainer = _tiny_trainer(config, tmp_path, callbacks=[recorder], loss_fn=_nan_at(NAN_STEP))
    trainer.train()
    assert trainer.clock.step == 8
    assert all(bool(torch.isfinite(value).all()) for value in _cpu_weights(trainer.net).values())
    # The skipped step's update changed nothing; the steps around it did change the weights.
    assert_same_tensors(recorder.weights[NAN_STEP], recorder.weights[NAN_STEP - 1], "weights of the skipped step")
    for step in (NAN_STEP - 1, NAN_STEP + 1):
        assert not torch.equal(recorder.weights[step]["weight"], recorder.weights[step - 1]["weight"])


def test_signal_handlers_are_restored_when_training_raises(tmp_path: Path) -> None:
    before = {number: signal.getsignal(number) for number in (signal.SIGINT, signal.SIGTERM)}
    try:
        checkpointing = Checkpointing(interval="1:step", save_on_signal=True)
        config = tiny_config(duration="2:epoch", on_nonfinite_loss="stop")
        trainer = _tiny_trainer(config, tmp_path, callbacks=[checkpointing], loss_fn=_nan_at(NAN_STEP))
        with pytest.raises(NonFiniteLossError):
            trainer.train()
        assert {number: signal.getsignal(number) for number in before} == before
    finally:
        for number, handler in before.items():
            signal.signal(number, handler)


def test_invalid_nonfinite_policy_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match=r"TrainingConfig.on_nonfinite_loss='bad' is invalid: expected 'stop' or"):
        TrainingConfig(on_nonfinite_loss="bad")


# -- 6. fine-tuning from a run's final weights, which load without this library ---------------------------
def test_fine_tuning_starts_from_the_weights_file(reference: Path, tmp_path: Path) -> None:
    weights_file = reference / MODEL_FILE
    fresh = compose_experiment([*SHRUNK, "callbacks=none"]).build_trainer(str(tmp_path / "fresh"))
    tuned = compose_experiment([*SHRUNK, "callbacks=none", f"model.autoencoder.checkpoint={weights_file}"])
    trainer = tuned.build_trainer(str(tmp_path / "tuned"))
    expected = load_file(str(weights_file))
    assert_same_tensors(_cpu_weights(trainer.models["autoencoder"]), expected, "weights after construction")
    # Not the seed's initial weights by chance: a trainer without the checkpoint starts elsewhere.
    assert not torch.equal(fresh.models["autoencoder"].state_dict()["Decoder.Linear.weight"],
                           expected["Decoder.Linear.weight"])  # fmt: skip


ISOLATED_LOADER = """
import json, sys
site_packages, weights, out = sys.argv[1:4]
def importable(name):
    try:
        __import__(name)
    except ImportError:
        return False
    return True
assert sys.flags.isolated and sys.flags.no_site, "not an isolated interpreter"
before = importable("train")
sys.path.append(site_packages)  # torch and safetensors, without processing .pth files (train's editable hook)
after = importable("train")
import torch
from safetensors.torch import load_file
tensors = load_file(weights)
torch.save(tensors, out)
print(json.dumps({"train_importable": [before, after], "modules": sorted(m for m in sys.modules if m == "train"),
                  "shapes": {k: [list(v.shape), str(v.dtype)] for k, v in tensors.items()}}))
"""


def test_final_weights_load_without_this_library(reference: Path, tmp_path: Path) -> None:
    weights_file = reference / MODEL_FILE
    site_packages = Path(safetensors.__file__).resolve().parents[1]
    assert Path(torch.__file__).resolve().parents[1] == site_packages
    out = tmp_path / "tensors.pt"
    process = subprocess.run(
        [sys.executable, "-I", "-S", "-c", ISOLATED_LOADER, str(site_packages), str(weights_file), str(out)],
        cwd="/",
        env={"PATH": "/usr/bin:/bin"},
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert process.returncode == 0, process.stderr
    report = json.loads(process.stdout.strip().splitlines()[-1])
    assert report["train_importable"] == [False, False] and report["modules"] == []
    expected = load_file(str(weights_file))
    assert report["shapes"] == {k: [list(v.shape), str(v.dtype)] for k, v in expected.items()}
    loaded: dict[str, torch.Tensor] = torch.load(out, weights_only=True)
    assert_same_tensors(loaded, expected, "weights read by the isolated interpreter")
    # They are the weights of the last checkpoint of the run (the final state), key for key.
    last = reference / "checkpoints" / checkpoint_name(24) / "autoencoder.safetensors"
    assert_same_tensors(loaded, load_file(str(last)), "final weights against the last checkpoint")


def test_weights_file_roundtrip_into_a_plain_module(tmp_path: Path) -> None:
    """A file written by save_weights is plain safetensors: torch's own load_state_dict takes it."""
    source = nn.Linear(3, 2)
    save_weights(source, tmp_path / "w.safetensors")
    target = nn.Linear(3, 2)
    target.load_state_dict(load_file(str(tmp_path / "w.safetensors")))
    assert_same_tensors(_cpu_weights(target), _cpu_weights(source), "roundtrip")
    save_file({"weight": torch.zeros(2, 3)}, str(tmp_path / "partial.safetensors"))
    with pytest.raises(ValueError, match="does not fit Linear"):
        load_weights(target, tmp_path / "partial.safetensors")


# -- a real run killed while it writes a checkpoint, then resumed -------------------------------------------
@dataclass(frozen=True)
class MidWrite:
    killed: Finished
    run_dir: Path
    left: Path
    """A copy of the run's checkpoints/ right after the kill (the resume prunes it)."""
    resumed: Finished


@scenario("mid_write")
def _kill_mid_write_then_resume(cwd: Path, runs: Scenarios) -> MidWrite:
    copy = cwd / "left" / "checkpoints"
    overrides = tiny(interval="2:step", keep_last=2, checkpointing="killer.CheckpointingKilledMidWrite")
    killed = run_train([*overrides, f"+callbacks.checkpoint.kill_step={KILL_STEP}"], cwd)
    run_dir = single_run_dir(cwd)
    shutil.copytree(run_dir / "checkpoints", copy)
    # Back to the plain callback, as a user would write it: replace the target, delete the added argument.
    resumed = run_train(
        [
            f"resume={run_dir}",
            "+callbacks.checkpoint._target_=train.callbacks.Checkpointing",
            "~callbacks.checkpoint.kill_step",
        ],
        cwd,
    )
    return MidWrite(killed, run_dir, copy, resumed)


@pytest.fixture(scope="module")
def mid_write(scenarios: Scenarios) -> MidWrite:
    return scenarios.result("mid_write")


def test_kill_mid_write_leaves_the_previous_checkpoint_complete(mid_write: MidWrite, reference: Path) -> None:
    assert mid_write.killed.returncode == -9, mid_write.killed.describe()
    entries = sorted(path.name for path in mid_write.left.iterdir() if path.is_dir())
    temporary = [name for name in entries if name.startswith(".tmp-")]
    assert entries == sorted([*temporary, checkpoint_name(6), checkpoint_name(8)])  # keep_last=2
    # The half-written checkpoint of step 10: one model file, no state, no meta, under a temporary name.
    assert len(temporary) == 1 and temporary[0].startswith(f".tmp-{checkpoint_name(KILL_STEP)}-")
    assert sorted(path.name for path in (mid_write.left / temporary[0]).iterdir()) == ["autoencoder.safetensors"]

    latest = latest_checkpoint(mid_write.left)
    assert latest is not None and latest == mid_write.left / checkpoint_name(8)
    assert list_checkpoints(mid_write.left) == [mid_write.left / checkpoint_name(6), latest]
    assert sorted(path.name for path in latest.iterdir()) == sorted(["autoencoder.safetensors", META_FILE, STATE_FILE])
    # It loads the safe ways: safetensors, and torch.load with weights_only (no code runs).
    weights = load_file(str(latest / "autoencoder.safetensors"))
    reference_weights = load_tensors(reference / MODEL_FILE)
    assert {k: v.shape for k, v in weights.items()} == {k: v.shape for k, v in reference_weights.items()}
    state = torch.load(latest / STATE_FILE, map_location="cpu", weights_only=True)
    assert state["clock"]["step"] == 8 and state["clock"]["iteration"] == 4
    assert read_meta(latest)["step"] == 8
    # The checkpoint before it is the uninterrupted run's, bit for bit (same training, another interval).
    previous = mid_write.left / checkpoint_name(6)
    assert_same_tensors(
        load_tensors(previous / "autoencoder.safetensors"),
        load_tensors(reference / "checkpoints" / checkpoint_name(6) / "autoencoder.safetensors"),
        "weights of step 6",
    )

    # And it loads into a trainer built from the same config.
    trainer = compose_experiment([*SHRUNK, "callbacks=none"]).build_trainer(str(mid_write.left.parent))
    load_checkpoint(trainer, latest)
    assert trainer.clock.step == 8 and trainer.clock.iteration == 4
    assert_same_tensors(_cpu_weights(trainer.models["autoencoder"]), weights, "loaded weights")


def test_resume_after_a_kill_mid_write(mid_write: MidWrite, reference: Path) -> None:
    resumed, run_dir = mid_write.resumed, mid_write.run_dir
    assert resumed.returncode == 0, resumed.describe()
    assert f"Resuming from {run_dir / 'checkpoints' / checkpoint_name(8)} " in resumed.stderr
    assert read_json(run_dir / "result.json")["status"] == "completed"
    assert not list((run_dir / "checkpoints").glob(".tmp-*"))  # the next save cleaned it up
    assert_same_tensors(load_tensors(run_dir / MODEL_FILE), load_tensors(reference / MODEL_FILE), "final weights")


# -- 8. keep the last K and the best ----------------------------------------------------------------------
def test_keep_last_two_plus_the_best(mid_write: MidWrite) -> None:
    """Checkpoints every 2 steps, keep_last=2: the newest two remain, and the best by IoU (best.json)."""
    assert mid_write.resumed.returncode == 0, mid_write.resumed.describe()
    directory = mid_write.run_dir / "checkpoints"
    best = read_json(directory / "best.json")
    assert best["metric"] == "iou"
    assert (directory / best["checkpoint"] / META_FILE).is_file()
    steps = [int(path.name.removeprefix("step_")) for path in list_checkpoints(directory)]
    newest = [22, 24]
    best_step = int(best["checkpoint"].removeprefix("step_"))
    assert steps == sorted({*newest, best_step})
    assert sorted(path.name for path in directory.iterdir() if path.is_dir()) == [checkpoint_name(s) for s in steps]

    # The best is the checkpoint whose evaluation scored the highest IoU, among the checkpointed steps.
    scores = {step: row["iou"] for step, row in evaluations(mid_write.run_dir).items() if step % 2 == 0}
    assert sorted(scores) == [8, 16, 24]  # one evaluation per epoch, each at a checkpointed step
    assert best["value"] == max(scores.values())
    assert scores[best_step] == best["value"]
    assert read_meta(directory / best["checkpoint"])["step"] == best_step
