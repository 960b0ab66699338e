"""The speed options: mixed precision, torch.compile, channels-last, DataLoader options, fused optimizers.

Each is checked for what it promises (autocast really runs, weights stay float32, gradients reach the
hooks unscaled, tensors really are channels-last...) and for training correctly: finite, decreasing
losses, and the same result as without it where the arithmetic is the same.
"""

from __future__ import annotations

import math
from typing import Any

import pytest
import torch
from tiny import Recorder, TinyTrainer, make_item, run, tiny_config
from torch import nn
from torch.nn import functional as F

from train import ModelConfig, ModelFactory, OptimizerConfig, Optimizers, TrainingConfig
from train.config import ConfigError


# -- a small convolutional model on 8x8 images, so memory order and autocast matter -------------------
class ConvNet(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(1, 4, kernel_size=3, padding=1)
        self.mix = nn.Conv2d(4, 4, kernel_size=3, padding=1)
        self.head = nn.Linear(4 * 8 * 8, 1)

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        hidden = self.mix(F.silu(self.conv(image)))
        channels_last = hidden.is_contiguous(memory_format=torch.channels_last)
        self.hidden_channels_last = channels_last and not hidden.is_contiguous()
        return self.head(F.silu(hidden).flatten(1))


def image_of(index: int) -> torch.Tensor:
    """An 8x8 image made from the tiny dataset's item ``index`` (a function of the index only)."""
    a, b, c = make_item(index).x[0].tolist()
    ramp = torch.linspace(-1, 1, 8)
    return (a * ramp[:, None] + b * ramp[None, :] + c).reshape(1, 1, 8, 8)


class Observed:
    """What compute_loss saw: autocast state, output dtypes, the memory order of the model's activations."""

    def __init__(self) -> None:
        self.autocast_dtypes: list[torch.dtype | None] = []
        self.output_dtypes: list[torch.dtype] = []
        self.channels_last: list[bool] = []


def conv_loss(observed: Observed) -> Any:
    def loss(trainer: TinyTrainer, batch: Any) -> torch.Tensor:
        images = torch.cat([image_of(int(i)) for i in batch.index])
        enabled = torch.is_autocast_enabled("cpu")
        observed.autocast_dtypes.append(torch.get_autocast_dtype("cpu") if enabled else None)
        model = trainer.models["conv"]
        prediction = model(images)
        observed.channels_last.append(bool(getattr(model, "hidden_channels_last", False)))
        observed.output_dtypes.append(prediction.dtype)
        target = images[:, :, 0, 0] - images[:, :, 7, 7]  # a function of the image the model can learn
        return F.mse_loss(prediction.float(), target)

    return loss


def conv_run(*, fused: bool | None = None, **training: Any) -> tuple[TinyTrainer, Recorder, Observed]:
    """Train ConvNet (AdamW at 1e-2, ``fused`` as given) with the ``training`` options; 6 epochs of 4 steps."""
    observed = Observed()
    training.setdefault("duration", "6:epoch")
    config = tiny_config(
        net=ModelConfig(requires_grad=False),
        optimizer=OptimizerConfig(optimizer=Optimizers.AdamW, learning_rate=1e-2, fused=fused),
        **training,
    )
    trainer, recorder = run(
        config, models={"conv": ModelFactory(ModelConfig(), ConvNet)}, loss_fn=conv_loss(observed), n_items=8
    )
    return trainer, recorder, observed


def epoch_means(recorder: Recorder, steps_per_epoch: int = 4) -> list[float]:
    losses = recorder.losses
    return [sum(losses[i : i + steps_per_epoch]) / steps_per_epoch for i in range(0, len(losses), steps_per_epoch)]


def assert_trains(recorder: Recorder) -> None:
    means = epoch_means(recorder)
    assert all(torch.isfinite(torch.tensor(recorder.losses)))
    assert means[-1] < 0.7 * means[0], means


# -- mixed precision --------------------------------------------------------------------------------
def test_bf16_autocast_runs_the_forward_in_bfloat16_and_keeps_float32_weights() -> None:
    trainer, recorder, observed = conv_run(amp="bf16")
    assert set(observed.autocast_dtypes) == {torch.bfloat16}
    assert set(observed.output_dtypes) == {torch.bfloat16}  # the linear head ran in bfloat16
    assert {p.dtype for p in trainer.models["conv"].parameters()} == {torch.float32}
    assert trainer.precision.scaler is None  # bfloat16 needs no loss scaling
    assert_trains(recorder)


def test_without_amp_nothing_is_autocast() -> None:
    _, recorder, observed = conv_run()
    assert set(observed.autocast_dtypes) == {None}
    assert set(observed.output_dtypes) == {torch.float32}
    assert_trains(recorder)


def test_fp16_scales_the_loss_but_hooks_see_true_gradients() -> None:
    _, reference, _ = conv_run(gradient_clipping_max_norm=1e6)
    trainer, recorder, observed = conv_run(amp="fp16", gradient_clipping_max_norm=1e6)
    assert set(observed.autocast_dtypes) == {torch.float16}
    assert trainer.precision.scaler is not None
    assert trainer.precision.scaler.get_scale() > 1.0  # the loss really was scaled up for backward
    # The gradients the clipping and the hooks see are unscaled: the size they have in float32, not x65536.
    # (The first updates overflow while the scaler finds its scale: those are skipped, their norm infinite.)
    finite = [norm for norm, _ in recorder.grad_norms if math.isfinite(norm)]
    assert len(recorder.grad_norms) - len(finite) <= 4
    assert max(finite) <= 2 * max(norm for norm, _ in reference.grad_norms)
    assert [clipped for _, clipped in recorder.grad_norms[-len(finite) :]] == pytest.approx(finite[-len(finite) :])
    assert_trains(recorder)
    # The skipped first updates shift the path a little; the result is float32's within noise.
    assert epoch_means(recorder)[-1] <= 1.5 * epoch_means(reference)[-1]


def test_fp16_scaler_state_is_part_of_the_restart_state() -> None:
    trainer, _, _ = conv_run(amp="fp16", duration="2:step")
    state = trainer.state_dict()
    assert state["grad_scaler"]["scale"] == trainer.precision.scaler.get_scale()  # pyright: ignore[reportOptionalMemberAccess]
    fresh, _, _ = conv_run(amp="fp16", duration="1:step")
    fresh.precision.load_state_dict({**state["grad_scaler"], "scale": 1024.0})
    assert fresh.precision.scaler is not None and fresh.precision.scaler.get_scale() == 1024.0


def test_fp16_skips_an_update_whose_gradients_overflow() -> None:
    trainer, _, _ = conv_run(amp="fp16", duration="1:step")
    scaler = trainer.precision.scaler
    assert scaler is not None
    scale_before = scaler.get_scale()
    weights = [p.detach().clone() for p in trainer.models["conv"].parameters()]
    for p in trainer.models["conv"].parameters():
        p.grad = torch.full_like(p, float("inf"))
    trainer.precision.unscale(trainer.optimizer)
    trainer.precision.step(trainer.optimizer)
    assert all(
        torch.equal(before, after) for before, after in zip(weights, trainer.models["conv"].parameters(), strict=True)
    )
    assert scaler.get_scale() < scale_before


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"amp": "fp8"}, "TrainingConfig.amp='fp8' is invalid: expected 'bf16', 'fp16' or null"),
        ({"amp": "bf16", "dtype": "bfloat16"}, "expected null with dtype='bfloat16'"),
        ({"prefetch_factor": 4}, "TrainingConfig.prefetch_factor=4 is invalid: expected null with num_workers=0"),
        ({"persistent_workers": True}, "persistent_workers=True is invalid: expected false with num_workers=0"),
        ({"num_workers": 1, "prefetch_factor": 0}, "prefetch_factor=0 is invalid: expected an integer >= 1"),
        ({"channels_last": "yes"}, "channels_last='yes' is invalid: expected true or false"),
        ({"compile": 1}, "compile=1 is invalid: expected true or false"),
        ({"pin_memory": "auto"}, "pin_memory='auto' is invalid: expected true, false or null"),
    ],
)
def test_bad_speed_options_are_one_line_config_errors(options: dict[str, Any], message: str) -> None:
    with pytest.raises(ConfigError, match=message.replace("(", r"\(").replace(")", r"\)")) as error:
        TrainingConfig(**options)
    assert "\n" not in str(error.value)


# -- memory order -------------------------------------------------------------------------------------
def test_channels_last_converts_the_models_and_the_batches_and_changes_no_result() -> None:
    trainer, recorder, observed = conv_run(channels_last=True)
    weight = trainer.models["conv"].mix.weight  # pyright: ignore[reportAttributeAccessIssue]
    assert isinstance(weight, torch.Tensor)
    assert weight.is_contiguous(memory_format=torch.channels_last) and not weight.is_contiguous()
    assert all(observed.channels_last)
    _, reference, plain = conv_run()
    assert not any(plain.channels_last)
    assert recorder.losses == pytest.approx(reference.losses, rel=1e-4, abs=1e-6)


def test_the_loop_moves_4d_batch_tensors_to_channels_last() -> None:
    from train.device import move_to_device

    images, labels = torch.rand(2, 3, 4, 4), torch.rand(2, 3)
    moved = move_to_device({"images": images, "labels": labels}, torch.device("cpu"), channels_last=True)
    assert moved["images"].is_contiguous(memory_format=torch.channels_last)
    assert torch.equal(moved["images"], images)
    assert moved["labels"] is labels  # only 4-D floating-point tensors change order
    assert move_to_device(images, torch.device("cpu")) is images


# -- torch.compile ------------------------------------------------------------------------------------
def test_compile_compiles_every_registered_model_in_place(monkeypatch: pytest.MonkeyPatch) -> None:
    compiled: list[Any] = []

    def fake_compile(target: Any, **kwargs: Any) -> Any:
        compiled.append(target)
        return target  # the eager function: this test checks the wiring, the slow test the compiled result

    monkeypatch.setattr(torch, "compile", fake_compile)
    trainer, recorder, _ = conv_run(compile=True, duration="2:step")
    owners = {getattr(target, "__self__", None) for target in compiled}
    assert owners == {trainer.models["net"], trainer.models["conv"]}
    keys = {f"{layer}.{kind}" for layer in ("conv", "mix", "head") for kind in ("weight", "bias")}
    assert set(trainer.models["conv"].state_dict()) == keys  # compiled in place: no "_orig_mod." prefix
    assert len(recorder.losses) == 2


@pytest.mark.slow
def test_compiled_training_matches_eager() -> None:
    _, reference, _ = conv_run(duration="3:step")
    _, recorder, _ = conv_run(compile=True, duration="3:step")
    assert recorder.losses == pytest.approx(reference.losses, rel=1e-4, abs=1e-6)


# -- data loading --------------------------------------------------------------------------------------
def test_dataloader_options_reach_the_loader() -> None:
    default = TinyTrainer(tiny_config())
    assert not default.dataloader.pin_memory  # automatic: only when training on CUDA
    assert not default.dataloader.persistent_workers
    tuned = TinyTrainer(tiny_config(num_workers=1, prefetch_factor=3, persistent_workers=True, pin_memory=False))
    loader = tuned.dataloader
    assert (loader.num_workers, loader.prefetch_factor, loader.persistent_workers) == (1, 3, True)


def test_persistent_workers_give_the_batches_of_the_main_process() -> None:
    _, in_process = run(tiny_config(duration="2:epoch"), n_items=6)
    _, workers = run(tiny_config(duration="2:epoch", num_workers=2, persistent_workers=True), n_items=6)
    assert workers.losses == pytest.approx(in_process.losses, rel=1e-6)


# -- the optimizer update ---------------------------------------------------------------------------
def test_adamw_is_fused_by_default_and_gives_the_unfused_result() -> None:
    fused, fused_recorder, _ = conv_run()
    assert fused.optimizer.defaults["fused"] is True
    plain, plain_recorder, _ = conv_run(fused=False)
    assert not plain.optimizer.defaults["fused"]
    assert fused_recorder.losses == pytest.approx(plain_recorder.losses, rel=1e-4, abs=1e-6)


def test_gradients_are_cleared_to_none_as_each_accumulation_window_begins() -> None:
    class GradientsAtBackward(Recorder):
        def __init__(self) -> None:
            super().__init__()
            self.cleared: list[bool] = []  # at each backward: were the gradients None (not zeros)?

        def on_backward_begin(self, trainer: Any) -> None:
            self.cleared.append(all(p.grad is None for p in trainer.trained_parameters))

    watcher = GradientsAtBackward()
    # 8 items in batches of 2: 4 steps an epoch, windows of 2 steps; 2 epochs.
    run(tiny_config(duration="2:epoch", gradient_accumulation="2:step"), callbacks=[watcher])
    assert watcher.cleared == [True, False] * 4
