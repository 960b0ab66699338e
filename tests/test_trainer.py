"""The Trainer end to end: batches and devices, the data pipeline with and without workers, learning, resuming."""

from __future__ import annotations

import dataclasses
from collections import OrderedDict
from typing import NamedTuple

import pytest
import torch
from tiny import Batch, Recorder, TinyTrainer, collate, make_item, mse_loss, run, tiny_config

from train import Callback, OptimizerConfig, Optimizers
from train.device import move_to_device, resolve_device, resolve_dtype

CPU = torch.device("cpu")
META = torch.device("meta")  # a second device that exists everywhere: tensors moved there really move


# -- batches reach compute_loss on the trainer's device --------------------------------------------------------


def test_batches_arrive_as_dataclasses_on_the_trainer_device() -> None:
    seen: list[tuple[type, str, str, tuple[int, ...]]] = []

    def loss(trainer: TinyTrainer, batch: Batch) -> torch.Tensor:
        seen.append((type(batch), batch.x.device.type, batch.index.device.type, tuple(batch.x.shape)))
        return mse_loss(trainer, batch)

    trainer, _ = run(tiny_config(duration="1:epoch", batch_size=4), n_items=10, loss_fn=loss)
    assert trainer.device == CPU
    assert seen == [(Batch, "cpu", "cpu", (4, 3)), (Batch, "cpu", "cpu", (4, 3)), (Batch, "cpu", "cpu", (2, 3))]


def test_batches_are_moved_to_the_trainer_device() -> None:
    """The loop moves each batch to ``trainer.device``: pointed at the meta device, batches arrive there."""
    seen: list[tuple[str, str, str]] = []

    def loss(trainer: TinyTrainer, batch: Batch) -> torch.Tensor:
        seen.append((batch.x.device.type, batch.y.device.type, batch.index.device.type))
        return trainer.net(torch.ones(1, 3)).sum()  # meta tensors hold no values: compute on the CPU model

    trainer = TinyTrainer(tiny_config(duration="2:step"), loss_fn=loss)
    trainer.device = META
    trainer.train()
    assert seen == [("meta", "meta", "meta")] * 2


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_batches_arrive_on_cuda() -> None:
    seen: list[tuple[str, str]] = []

    def loss(trainer: TinyTrainer, batch: Batch) -> torch.Tensor:
        seen.append((batch.x.device.type, trainer.net.weight.device.type))
        return mse_loss(trainer, batch)

    trainer, recorder = run(tiny_config(duration="2:step", device="cuda"), loss_fn=loss)
    assert trainer.device.type == "cuda"
    assert seen == [("cuda", "cuda")] * 2
    assert len(recorder.losses) == 2


class Pair(NamedTuple):
    left: torch.Tensor
    right: torch.Tensor


@dataclasses.dataclass
class Tagged:
    values: torch.Tensor
    label: str
    derived: int = dataclasses.field(init=False, default=0)


def test_move_to_device_keeps_tensors_already_there() -> None:
    a, b, c = torch.ones(2), torch.zeros(3), torch.arange(4)
    batch = Batch(x=a, y=b, index=c)
    moved = move_to_device(batch, CPU)
    assert isinstance(moved, Batch)
    assert (moved.x is a, moved.y is b, moved.index is c) == (True, True, True)

    mapping = move_to_device({"a": a, "nested": [b, (c, "text", 3)]}, CPU)
    assert mapping["a"] is a
    assert mapping["nested"][0] is b
    assert mapping["nested"][1][0] is c
    assert mapping["nested"][1][1:] == ("text", 3)
    assert type(mapping["nested"]) is list and type(mapping["nested"][1]) is tuple

    pair = move_to_device(Pair(left=a, right=b), CPU)
    assert type(pair) is Pair
    assert pair.left is a and pair.right is b

    assert move_to_device(a, CPU) is a
    assert move_to_device([a, b], CPU)[1] is b
    assert move_to_device((a,), CPU)[0] is a


def test_move_to_device_moves_every_container() -> None:
    a, b = torch.ones(2), torch.zeros(3)
    batch = Batch(x=a, y=b, index=torch.arange(2))
    moved = move_to_device(batch, META)
    assert isinstance(moved, Batch) and moved is not batch
    assert [t.device.type for t in (moved.x, moved.y, moved.index)] == ["meta", "meta", "meta"]
    assert (moved.x.shape, moved.index.dtype) == (torch.Size([2]), torch.int64)
    assert batch.x.device.type == "cpu"  # the original is untouched

    ordered = move_to_device(OrderedDict(first=a, second=[b, 5]), META)
    assert type(ordered) is OrderedDict
    assert list(ordered) == ["first", "second"]
    first, second = ordered["first"], ordered["second"]
    assert isinstance(first, torch.Tensor) and first.device.type == "meta"
    assert isinstance(second, list) and isinstance(second[0], torch.Tensor)
    assert second[0].device.type == "meta" and second[1] == 5

    pair = move_to_device(Pair(left=a, right=b), META)
    assert type(pair) is Pair
    assert (pair.left.device.type, pair.right.device.type) == ("meta", "meta")

    as_tuple = move_to_device((a, [b]), META)
    assert type(as_tuple) is tuple and type(as_tuple[1]) is list
    assert (as_tuple[0].device.type, as_tuple[1][0].device.type) == ("meta", "meta")

    tagged = Tagged(values=a, label="x")
    tagged.derived = 7
    moved_tagged = move_to_device(tagged, META)
    assert (moved_tagged.values.device.type, moved_tagged.label) == ("meta", "x")


def test_resolve_device_and_dtype() -> None:
    assert resolve_device("cpu") == CPU
    assert resolve_dtype("bfloat16") is torch.bfloat16
    with pytest.raises(ValueError, match=r"training\.dtype='float8' is invalid: expected one of float32, bfloat16"):
        resolve_dtype("float8")


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the error on machines without CUDA")
def test_unavailable_cuda_device_is_refused() -> None:
    with pytest.raises(ValueError, match=r"training\.device='cuda:1' is unavailable: CUDA is not available"):
        TinyTrainer(tiny_config(device="cuda:1"))


# -- the data pipeline -------------------------------------------------------------------------------------------


class IndexRecorder(Callback[TinyTrainer]):
    """The dataset indices of each epoch, read from the batches (so it works with worker processes too)."""

    def __init__(self) -> None:
        self.epochs: list[list[int]] = []

    def on_epoch_begin(self, trainer: TinyTrainer) -> None:
        self.epochs.append([])


def epoch_orders(num_workers: int, *, shuffle: bool = True, epochs: int = 3, n_items: int = 10) -> list[list[int]]:
    recorder = IndexRecorder()
    mismatched: list[int] = []

    def loss(trainer: TinyTrainer, batch: Batch) -> torch.Tensor:
        indices = [int(i) for i in batch.index]
        recorder.epochs[-1].extend(indices)
        expected = [make_item(i).x for i in indices]
        if not torch.equal(batch.x, torch.cat(expected)):
            mismatched.extend(indices)
        return mse_loss(trainer, batch)

    config = tiny_config(duration=f"{epochs}:epoch", batch_size=3, num_workers=num_workers, shuffle=shuffle, seed=11)
    run(config, n_items=n_items, loss_fn=loss, callbacks=[recorder])
    assert mismatched == []  # each batch holds the items of its indices
    return recorder.epochs


def test_shuffled_epochs_are_distinct_permutations() -> None:
    orders = epoch_orders(num_workers=0)
    assert len(orders) == 3
    for order in orders:
        assert sorted(order) == list(range(10))
    assert len({tuple(order) for order in orders}) == 3
    assert orders[0] != list(range(10))


def test_workers_see_the_same_epochs_as_the_main_process() -> None:
    in_process = epoch_orders(num_workers=0, epochs=2)
    with_workers = epoch_orders(num_workers=2, epochs=2)
    assert [sorted(order) for order in with_workers] == [list(range(10))] * 2
    assert with_workers == in_process
    assert with_workers[0] != with_workers[1]


def test_no_shuffle_keeps_dataset_order() -> None:
    assert epoch_orders(num_workers=0, shuffle=False, epochs=2) == [list(range(10))] * 2


def test_empty_dataset_is_refused() -> None:
    trainer = TinyTrainer(tiny_config(), n_items=0)
    with pytest.raises(ValueError, match=r"TinyTrainer\.dataset_length is 0: expected at least one item"):
        trainer.train()


# -- learning and resuming ---------------------------------------------------------------------------------------


def test_training_fits_a_linear_target() -> None:
    """SGD on a target the model can represent exactly: the loss falls by orders of magnitude."""
    true_weight, true_bias = torch.tensor([[1.0], [-2.0], [0.5]]), 0.3

    def loss(trainer: TinyTrainer, batch: Batch) -> torch.Tensor:
        return torch.nn.functional.mse_loss(trainer.net(batch.x), batch.x @ true_weight + true_bias)

    optimizer = OptimizerConfig(optimizer=Optimizers.SGD, learning_rate=0.1, momentum=0.9)
    trainer, recorder = run(tiny_config(duration="100:epoch", batch_size=8, optimizer=optimizer), loss_fn=loss)
    assert len(recorder.losses) == 100
    assert recorder.losses[0] > 0.1
    assert recorder.losses[-1] < 1e-3 * recorder.losses[0]
    batch = collate([make_item(i) for i in range(8)])
    with torch.no_grad():
        torch.testing.assert_close(trainer.net(batch.x), batch.x @ true_weight + true_bias, atol=0.02, rtol=0)


class StopAtStep(Callback[TinyTrainer]):
    def __init__(self, step: int) -> None:
        self.step = step

    def on_batch_end(self, trainer: TinyTrainer) -> None:
        if trainer.clock.step == self.step:
            trainer.clock.request_stop("interrupted")


def test_resume_mid_epoch_continues_exactly() -> None:
    """Stop after step 4 (mid epoch 2), restore weights and state in a new trainer: the rest is unchanged."""
    config = tiny_config(duration="3:epoch", batch_size=3, gradient_accumulation="1:step")
    _, uninterrupted = run(config, n_items=9)

    first, first_recorder = run(config, n_items=9, callbacks=[StopAtStep(4)])
    assert first.clock.step == 4
    state = first.state_dict()
    weights = {name: model.state_dict() for name, model in first.models.items()}

    second_recorder = Recorder()
    second = TinyTrainer(config, n_items=9, callbacks=[second_recorder])
    for name, model in second.models.items():
        model.load_state_dict(weights[name])
    second.load_state_dict(state)
    second.train()
    assert first_recorder.losses + second_recorder.losses == uninterrupted.losses
    assert (second.clock.step, second.clock.iteration, second.clock.epoch) == (9, 9, 3)
    assert second_recorder.hooks("on_epoch_begin")[0][1:] == (4, 4, 1)  # resumed inside epoch 2
