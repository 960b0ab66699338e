"""Seeding: reproducible runs from one seed, and scoped seeds that restore every generator afterwards."""

from __future__ import annotations

import random

import numpy as np
import torch
from tiny import run, tiny_config

from train import scoped_seed, seed_everything
from train.seeding import get_rng_states, set_rng_states

Draws = tuple[float, float, list[float]]


def draws() -> Draws:
    """One draw from each global generator: Python, NumPy, torch."""
    return random.random(), float(np.random.rand()), torch.rand(3).tolist()


def losses_and_weights(seed: int) -> tuple[list[float], torch.Tensor, list[int]]:
    config = tiny_config(duration="2:epoch", seed=seed, shuffle=True)
    trainer, recorder = run(config, n_items=8)
    return recorder.losses, trainer.net.weight.detach().clone(), trainer.sampler.order()


def test_same_seed_gives_identical_runs() -> None:
    # Disturb the global generators between the runs: the trainer must not depend on them.
    first_losses, first_weights, first_order = losses_and_weights(seed=3)
    seed_everything(12345)
    _ = draws()
    second_losses, second_weights, second_order = losses_and_weights(seed=3)
    assert len(first_losses) == 8
    assert first_losses == second_losses  # bit-identical floats
    assert torch.equal(first_weights, second_weights)
    assert first_order == second_order


def test_different_seed_gives_different_runs() -> None:
    losses_a, weights_a, order_a = losses_and_weights(seed=3)
    losses_b, weights_b, order_b = losses_and_weights(seed=4)
    assert losses_a[0] != losses_b[0]  # different initial weights
    assert not torch.equal(weights_a, weights_b)
    assert sorted(order_a) == sorted(order_b) == list(range(8))
    assert order_a != order_b  # different shuffles


def test_seed_everything_seeds_all_generators() -> None:
    seed_everything(5)
    first = draws()
    seed_everything(5)
    assert draws() == first
    random.seed(5)
    np.random.seed(5)
    torch.manual_seed(5)
    assert draws() == first


def test_scoped_seed_as_context_manager_restores_states() -> None:
    seed_everything(1)
    expected_after = draws()

    seed_everything(1)
    with scoped_seed(99) as scope:
        inside = draws()
    assert isinstance(scope, scoped_seed)
    assert draws() == expected_after

    seed_everything(99)
    assert inside == draws()  # the scope was seeded with 99


def test_scoped_seed_as_decorator_restores_states() -> None:
    seed_everything(2)
    expected_after = draws()

    @scoped_seed(7)
    def sample() -> Draws:
        return draws()

    seed_everything(2)
    first = sample()
    second = sample()
    assert draws() == expected_after
    assert first == second  # reseeded at every call


def test_scoped_seed_restores_after_an_exception() -> None:
    seed_everything(3)
    expected_after = draws()
    seed_everything(3)
    try:
        with scoped_seed(4):
            _ = draws()
            raise RuntimeError("boom")
    except RuntimeError:
        pass
    assert draws() == expected_after


def test_scoped_seed_none_does_not_seed_but_restores() -> None:
    seed_everything(6)
    expected_inside = draws()
    expected_after = draws()
    seed_everything(6)
    with scoped_seed(None):
        assert draws() == expected_inside  # continues the current stream
    assert draws() == expected_inside  # ...which is rewound on exit
    assert draws() == expected_after


def test_scoped_seed_instance_is_reentrant() -> None:
    scope = scoped_seed(8)
    seed_everything(0)
    expected_after = draws()
    seed_everything(0)
    with scope:
        outer = draws()
        with scope:
            assert draws() == outer
        assert draws() != outer  # the outer scope's stream resumed
    assert draws() == expected_after


def test_rng_states_round_trip() -> None:
    states = get_rng_states()
    first = draws()
    set_rng_states(states)
    assert draws() == first
