"""The Trainer: registries, optimizer, schedule, data, and the training loop, which reads top to bottom."""

from __future__ import annotations

import functools
import math
from abc import ABC, abstractmethod
from collections.abc import Callable, Generator, Mapping
from contextlib import ExitStack, contextmanager
from functools import cached_property
from pathlib import Path
from typing import Any, Generic, TypeVar

import torch
from loguru import logger
from torch import nn
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DataLoader

from train import distributed
from train.callback import HOOKS, Callback
from train.checkpointing import load_weights
from train.clock import TrainingClock
from train.config import BaseConfig, LRSchedulerType, ModelConfig
from train.data import EpochSampler, ItemDataset, epoch_seed, seed_worker
from train.device import move_to_device, resolve_device, resolve_dtype
from train.distributed import DistributedContext
from train.duration import StepPlan, TimeUnit, TimeValue
from train.optim import LRSchedule, build_optimizer, parameter_groups
from train.precision import MixedPrecision
from train.registry import CallbackFactory, ModelFactory, plan_registrations
from train.seeding import get_rng_states, scoped_seed, seed_everything, set_rng_states

ConfigT = TypeVar("ConfigT", bound=BaseConfig)
BatchT = TypeVar("BatchT")
ModuleT = TypeVar("ModuleT", bound=nn.Module)

Metrics = Mapping[str, float | int | torch.Tensor]


class NonFiniteLossError(RuntimeError):
    """The loss became NaN or infinite and ``training.on_nonfinite_loss`` is "stop"."""


class Trainer(Generic[ConfigT, BatchT], ABC):
    """Subclass it with your config and batch types, implement the data and loss methods, call ``train()``.

    Required: ``get_item(index)``, ``collate_fn(items)``, ``dataset_length`` and ``compute_loss(batch)``.
    Optional: ``compute_evaluation()``, returning a mapping of metric names to numbers (or ``None``).
    Models and callbacks come from ``@register_model()`` / ``@register_callback()`` methods paired with
    config fields of the same name, or from factories passed here.

    Under ``torchrun`` (or as SLURM tasks) each process trains one shard of every batch: see
    :mod:`train.distributed`. ``training.batch_size`` is the global batch, split evenly across the ranks.
    """

    def __init__(
        self,
        config: ConfigT,
        *,
        model_factories: Mapping[str, ModelFactory] | None = None,
        callback_factories: Mapping[str, CallbackFactory] | None = None,
        run_dir: str | Path = ".",
    ) -> None:
        self.config = config
        self.run_dir = Path(run_dir)
        """Where this run's files go (the Hydra app sets it to the run directory)."""
        self.distributed = DistributedContext.from_environment()
        """This process's rank among the run's processes (a world size of 1 without torchrun or SLURM tasks)."""
        self._distributed = self.distributed.is_distributed
        self._rank_batch_size = rank_batch_size(config.training.batch_size, self.distributed.world_size)
        self.distributed.initialize()
        self.device = self.distributed.device(resolve_device(config.training.device))
        self.dtype = resolve_dtype(config.training.dtype)
        self.precision = MixedPrecision(config.training.amp, self.device)
        """Autocast and, for ``amp=fp16``, the gradient scaler (``training.amp``)."""
        self.models: dict[str, nn.Module] = {}
        self.model_configs: dict[str, ModelConfig] = {}
        self.callbacks: dict[str, Callback[Any]] = {}
        self.loss = torch.tensor(math.nan)
        self.grad_norm: torch.Tensor | None = None
        self.evaluation_metrics: dict[str, float] = {}
        self._hook_table: dict[str, list[Callable[[Any], None]]] = {}
        self._ddp_models: dict[str, DistributedDataParallel] = {}
        self._ddp_synchronized: set[str] = set()  # models whose DDP forward will all-reduce this update's gradients
        plan = plan_registrations(self, config, model_factories or {}, callback_factories or {})

        seed_everything(config.training.seed)  # before any model is built, so initial weights are reproducible
        self.clock = TrainingClock(verbose=config.clock.verbose)
        self.callbacks["clock"] = self.clock
        for entry in plan.callbacks:
            callback = entry.build()
            if not isinstance(callback, Callback):  # pyright: ignore[reportUnnecessaryIsInstance]
                raise TypeError(f"callback {entry.name!r} was built as {type(callback).__name__}, not a Callback")
            self._expose(entry.name, callback)
            self.callbacks[entry.name] = callback

        self._run_hooks("on_init_begin")
        for entry in plan.models:
            self._add_model(entry.name, entry.config, entry.build())
        self._run_hooks("on_init_end")

    # -- what a subclass provides ----------------------------------------------------------------------
    @abstractmethod
    def get_item(self, index: int) -> BatchT: ...

    @abstractmethod
    def collate_fn(self, batch: list[BatchT]) -> BatchT: ...

    @property
    @abstractmethod
    def dataset_length(self) -> int: ...

    @abstractmethod
    def compute_loss(self, batch: BatchT) -> torch.Tensor: ...

    def compute_evaluation(self) -> Metrics | None:
        """Evaluate the models; runs under ``torch.no_grad()``, in eval mode, with a fixed seed.

        In distributed training every rank runs it and the returned metrics are averaged over the ranks;
        write files (images, predictions) only ``if self.is_main_process``.
        """
        return None

    # -- registries ------------------------------------------------------------------------------------
    def _expose(self, name: str, value: object) -> None:
        """Make a factory-built object reachable as ``self.<name>`` (decorated ones already are)."""
        if not hasattr(type(self), name):
            setattr(self, name, value)

    def _add_model(self, name: str, config: ModelConfig, model: nn.Module) -> None:
        if not isinstance(model, nn.Module):  # pyright: ignore[reportUnnecessaryIsInstance]
            raise TypeError(f"model {name!r} was built as {type(model).__name__}, not a torch.nn.Module")
        if config.checkpoint is not None:
            load_weights(model, config.checkpoint)
            logger.info(f"Loaded weights of model {name!r} from {config.checkpoint}")
        model.requires_grad_(config.requires_grad)
        # Frozen models stay in eval mode, so that e.g. batch-norm statistics do not drift either.
        model.train(config.requires_grad)
        model.to(device=self.device, dtype=self.dtype)
        if self.config.training.channels_last:
            model.to(memory_format=torch.channels_last)  # pyright: ignore[reportCallIssue] - torch's stubs lack it
        if self.config.training.compile:
            model.compile()  # in place: calling the model runs the compiled forward; state-dict keys unchanged
        self.models[name] = model
        self.model_configs[name] = config
        self._expose(name, model)

    def get_model(self, name: str, model_type: type[ModuleT]) -> ModuleT:
        """A registered model, checked to be a ``model_type``: a typed accessor for factory-built models."""
        model = self.models.get(name)
        if model is None:
            raise KeyError(f"no model named {name!r} is registered; registered: {sorted(self.models) or 'none'}")
        if not isinstance(model, model_type):
            raise TypeError(f"model {name!r} is a {type(model).__name__}, expected a {model_type.__name__}")
        return model

    @property
    def learnable_parameters(self) -> list[nn.Parameter]:
        return [p for model in self.models.values() for p in model.parameters() if p.requires_grad]

    @cached_property
    def trained_parameters(self) -> list[torch.Tensor]:
        """The optimizer's parameters, listed once: what is clipped and what the gradient norm covers."""
        return [p for group in self.optimizer.param_groups for p in group["params"]]

    # -- distributed training ----------------------------------------------------------------------------
    @property
    def is_main_process(self) -> bool:
        """True on rank 0 (and in a single process): guard code that writes files with it."""
        return self.distributed.is_main

    def ddp(self, name: str) -> nn.Module:
        """Model ``name`` to call for DistributedDataParallel's forward (the model itself in one process).

        Calling ``self.<name>(x)`` or its submodules is always correct: the gradients are then averaged over
        the ranks at each optimizer update. Calling ``self.ddp(name)(x)`` instead lets DDP overlap that
        all-reduce with the backward pass; every trainable parameter of the model must then get a gradient.
        """
        wrapped = self._ddp_models.get(name)
        return wrapped if wrapped is not None else self.models[name]

    def _wrap_models(self) -> None:
        """Wrap each model with trainable parameters in DistributedDataParallel (which aligns their weights)."""
        for name, model in self.models.items():
            if name in self._ddp_models or not any(p.requires_grad for p in model.parameters()):
                continue
            device_ids = [self.device.index] if self.device.type == "cuda" else None
            wrapped = DistributedDataParallel(model, device_ids=device_ids)
            wrapped.register_forward_pre_hook(functools.partial(self._note_ddp_forward, name))
            self._ddp_models[name] = wrapped

    def _note_ddp_forward(self, name: str, module: nn.Module, args: Any) -> None:
        del args
        if torch.is_grad_enabled() and getattr(module, "require_backward_grad_sync", False):
            self._ddp_synchronized.add(name)

    def _synchronize_gradients(self) -> None:
        """Average the gradients over the ranks, except those DDP's own forward and backward already did."""
        for name in self._ddp_models:
            if name not in self._ddp_synchronized:
                distributed.average_gradients(self.models[name].parameters())
        self._ddp_synchronized.clear()

    def _synchronize_buffers(self) -> None:
        """Give every rank rank 0's buffers (e.g. batch-norm statistics), as DDP does before each forward."""
        for name in self._ddp_models:
            model = self.models[name]
            if next(model.buffers(), None) is not None:
                distributed.broadcast_buffers(model)

    def _agree_on_stop(self) -> None:
        """At an update boundary, stop every rank if any rank was asked to stop (a signal, early stopping).

        The ranks then end at the same step with the same reason, and none waits forever in a collective.
        """
        clock = self.clock
        flags = [int(clock.stop_reason is not None), clock.interrupted_by or 0]
        requested, signal_number = distributed.max_over_ranks(flags)
        if not requested:
            return
        reasons = [reason for reason in distributed.all_gather_object(clock.stop_reason) if reason is not None]
        clock.request_stop(reasons[0], signal_number=signal_number or None)

    # -- built lazily, on first use, so subclasses may prepare what they need after __init__ -----------
    @cached_property
    def step_plan(self) -> StepPlan:
        length = self.dataset_length
        if length < 1:
            raise ValueError(f"{type(self).__name__}.dataset_length is {length}: expected at least one item")
        return StepPlan(
            steps_per_epoch=math.ceil(length / self.config.training.batch_size),
            accumulation=TimeValue.parse(self.config.training.gradient_accumulation).number,
        )

    @cached_property
    def total_steps(self) -> int:
        return self.step_plan.to_steps(TimeValue.parse(self.config.training.duration))

    @cached_property
    def optimizer(self) -> torch.optim.Optimizer:
        models = {name: (model, self.model_configs[name]) for name, model in self.models.items()}
        return build_optimizer(self.config.optimizer, parameter_groups(self.config.optimizer, models))

    @cached_property
    def lr_scheduler(self) -> LRSchedule:
        return LRSchedule(self.optimizer, self.config.lr_scheduler, self.step_plan, self.total_steps)

    @cached_property
    def sampler(self) -> EpochSampler:
        training, context = self.config.training, self.distributed
        return EpochSampler(
            self.dataset_length,
            seed=training.seed,
            shuffle=training.shuffle,
            rank=context.rank,
            world_size=context.world_size,
        )

    @cached_property
    def dataloader(self) -> DataLoader[BatchT]:
        training = self.config.training
        return DataLoader(
            ItemDataset(self.get_item, self.dataset_length),
            batch_size=self._rank_batch_size,
            sampler=self.sampler,
            num_workers=training.num_workers,
            collate_fn=self.collate_fn,
            worker_init_fn=seed_worker if training.num_workers else None,
            generator=torch.Generator(),  # reseeded every epoch: see _train_epoch
            pin_memory=self.device.type == "cuda" if training.pin_memory is None else training.pin_memory,
            persistent_workers=training.persistent_workers,
            prefetch_factor=training.prefetch_factor,
        )

    # -- the loop ----------------------------------------------------------------------------------------
    def train(self) -> None:
        """Train until ``training.duration`` has elapsed (or a callback asks the clock to stop)."""
        self.clock.start(self.step_plan, self.total_steps)
        self._freeze_hooks()
        self.lr_scheduler  # noqa: B018 - build the optimizer and schedule before the first hook sees them
        if self._distributed:
            self._wrap_models()
        try:
            self._run_hooks("on_train_begin")
            while not self.clock.done:
                self._train_epoch()
            if not self.clock.evaluated_at_current_step and self.clock.interrupted_by is None:
                self.evaluate()
            self.clock.stop_timer()
            self._run_hooks("on_train_end")
            if self._distributed:
                distributed.barrier()  # rank 0's last checkpoint and files are written when any rank returns
        except BaseException:
            # Callbacks release what they hold (signal handlers, open files, tracker runs); the error goes on.
            self.clock.stop_timer()
            self._run_hooks("on_exception")
            raise

    def _train_epoch(self) -> None:
        clock, training = self.clock, self.config.training
        # Resuming mid-epoch skips the batches already trained, without loading them.
        self.sampler.set_epoch(clock.epoch, start=clock.step_in_epoch * self._rank_batch_size)
        if self.dataloader.generator is not None:  # worker seeds depend on (seed, epoch) only (and the rank)
            ranked = (self.distributed.rank,) if self._distributed else ()
            self.dataloader.generator.manual_seed(epoch_seed(training.seed + 1, clock.epoch, *ranked))
        self._run_hooks("on_epoch_begin")
        channels_last = training.channels_last
        for batch in self.dataloader:
            self._train_step(move_to_device(batch, self.device, channels_last=channels_last))
            if clock.done:
                break
        if clock.step_in_epoch < self.step_plan.steps_per_epoch:
            return  # training ended inside this epoch
        clock.advance_epoch()
        if self.lr_scheduler.due_after_epoch(clock.epoch, clock.iteration):
            self._step_lr_scheduler()
        if clock.is_due(self._evaluation_interval, TimeUnit.EPOCH):
            self.evaluate()
        self._run_hooks("on_epoch_end")
        if self._distributed:
            self._agree_on_stop()

    def _train_step(self, batch: BatchT) -> None:
        clock = self.clock
        window_size, window_end = clock.accumulation_window()
        self._run_hooks("on_batch_begin")

        window_begins = clock.step == window_end - window_size
        if self._ddp_models and clock.step + 1 < window_end:
            with ExitStack() as stack:  # inside an accumulation window, DDP keeps the gradients local
                for wrapped in self._ddp_models.values():
                    stack.enter_context(wrapped.no_sync())
                self._forward_backward(batch, window_size, window_begins)
        else:
            self._forward_backward(batch, window_size, window_begins)
        clock.advance_step()

        updated = clock.step == window_end
        if updated:
            self._optimizer_step()
        interval = self._evaluation_interval
        if clock.is_due(interval, TimeUnit.STEP) or (updated and clock.is_due(interval, TimeUnit.ITERATION)):
            self.evaluate()
        self._run_hooks("on_batch_end")
        if self._distributed and clock.at_update_boundary:
            self._agree_on_stop()

    def _forward_backward(self, batch: BatchT, window_size: int, window_begins: bool) -> None:
        self._run_hooks("on_compute_loss_begin")
        with self.precision.autocast():
            self.loss = self.compute_loss(batch)
        self._run_hooks("on_compute_loss_end")
        if window_begins:
            # The last update's gradients go now, after the forward pass, as in a hand-written loop: freed
            # before it, their memory went back to the system and came back page by page (7% of the example's
            # step on CPU). set_to_none: no memset, and the backward pass assigns rather than adds.
            self.optimizer.zero_grad(set_to_none=True)

        if not self._distributed:
            if self._loss_is_usable(self.loss):
                self._run_hooks("on_backward_begin")
                # Each step of a window contributes 1/size of the update: the update averages the window's losses.
                self.precision.backward(self.loss / window_size if window_size > 1 else self.loss)
                self._run_hooks("on_backward_end")
            return
        # Each rank backpropagates its own loss; what the hooks from on_backward_end on see is the mean over
        # the ranks (the loss of the global batch), which also decides, identically everywhere, if it is usable.
        mean_loss = distributed.all_reduce_mean(self.loss.detach())
        if self._loss_is_usable(mean_loss):
            self._run_hooks("on_backward_begin")
            self.precision.backward(self.loss / window_size if window_size > 1 else self.loss)
            self.loss = mean_loss
            self._run_hooks("on_backward_end")
        else:
            self.loss = mean_loss
            self._ddp_synchronized.clear()  # no backward: DDP synchronised nothing

    def _loss_is_usable(self, loss: torch.Tensor) -> bool:
        """False for a non-finite loss under the "skip" policy; raises under "stop" (the default)."""
        # One number to the host (as cheap as a check gets on CPU; one sync on a GPU, as the check needs anyway).
        if math.isfinite(loss.item()) if loss.numel() == 1 else bool(torch.isfinite(loss.detach()).all()):
            return True
        clock, policy = self.clock, self.config.training.on_nonfinite_loss
        where = f"at step {clock.step + 1} (epoch {clock.epoch}, iteration {clock.iteration})"
        if self._distributed:
            where += " (the mean over the ranks)"
        if policy == "stop":
            value = loss.detach().float().cpu().tolist()
            raise NonFiniteLossError(f"loss is {value} {where}; stopping (training.on_nonfinite_loss=stop)")
        logger.warning(f"Skipping the backward pass of a non-finite loss {where} (training.on_nonfinite_loss=skip)")
        return False

    def _optimizer_step(self) -> None:
        if self._distributed:
            self._synchronize_gradients()
        self.precision.unscale(self.optimizer)  # clipping, hooks and logs see the true gradients
        max_norm = self.config.training.gradient_clipping_max_norm
        if max_norm is not None:
            self.grad_norm = torch.nn.utils.clip_grad_norm_(self.trained_parameters, max_norm)
        self._run_hooks("on_optimizer_step_begin")
        self.precision.step(self.optimizer)
        if self._distributed:
            self._synchronize_buffers()
        self.clock.advance_iteration()
        self._run_hooks("on_optimizer_step_end")
        if self.lr_scheduler.due_after_update(self.clock.iteration):
            self._step_lr_scheduler()

    def _step_lr_scheduler(self, metric: float | None = None) -> None:
        self._run_hooks("on_lr_scheduler_step_begin")
        self.lr_scheduler.step(self.clock.iteration, metric)
        self._run_hooks("on_lr_scheduler_step_end")

    @cached_property
    def _evaluation_interval(self) -> TimeValue:
        return TimeValue.parse(self.config.training.evaluation_interval)

    # -- evaluation --------------------------------------------------------------------------------------
    def evaluate(self) -> dict[str, float]:
        """Run ``compute_evaluation`` without gradients, in eval mode and under the evaluation seed."""
        self._run_hooks("on_evaluate_begin")
        seed = self.config.training.evaluation_seed
        with torch.no_grad(), scoped_seed(seed), self._eval_mode(), self.precision.autocast():
            result = self.compute_evaluation()
        self.evaluation_metrics = _as_floats(result)
        if self._distributed:  # every rank gets the mean over the ranks (the same on all of them)
            self.evaluation_metrics = distributed.average_metrics(self.evaluation_metrics)
        self.clock.mark_evaluated()
        self._run_hooks("on_evaluate_end")
        if self.lr_scheduler.due_after_evaluation(self.clock.iteration):
            self._step_lr_scheduler(self._monitored_metric())
        return self.evaluation_metrics

    @contextmanager
    def _eval_mode(self) -> Generator[None, None, None]:
        modes = {name: model.training for name, model in self.models.items()}
        for model in self.models.values():
            model.eval()
        try:
            yield
        finally:
            for name, model in self.models.items():
                model.train(modes[name])

    def _monitored_metric(self) -> float:
        metrics, monitor = self.evaluation_metrics, self.config.lr_scheduler.monitor
        if monitor is None and len(metrics) == 1:
            return next(iter(metrics.values()))
        if monitor is None or monitor not in metrics:
            raise ValueError(
                f"lr_scheduler.monitor={monitor!r} does not name an evaluation metric: "
                f"{LRSchedulerType.REDUCE_LR_ON_PLATEAU.name} needs one of {sorted(metrics) or 'none (no metric)'}"
            )
        return metrics[monitor]

    # -- callbacks and state -----------------------------------------------------------------------------
    def _run_hooks(self, hook: str) -> None:
        methods = self._hook_table.get(hook)
        for method in self._overriding(hook) if methods is None else methods:
            method(self)

    def _overriding(self, hook: str) -> list[Callable[[Any], None]]:
        """Bound ``hook`` methods of the callbacks that override it: the no-op defaults are never called.

        On ranks other than 0, callbacks marked ``main_process_only`` (those writing files) get no hook.
        """
        default = getattr(Callback, hook)
        main = self.is_main_process
        return [
            getattr(cb, hook)
            for cb in self.callbacks.values()
            if getattr(type(cb), hook, default) is not default and (main or not cb.main_process_only)
        ]

    def _freeze_hooks(self) -> None:
        """Resolve every hook once when training starts: the loop calls ~12 hooks a step, this keeps that cheap."""
        self._hook_table = {hook: self._overriding(hook) for hook in HOOKS}

    def state_dict(self) -> dict[str, Any]:
        """Everything besides model weights that a restart needs to continue exactly (tensors and plain data)."""
        return {
            "clock": self.clock.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "lr_scheduler": self.lr_scheduler.state_dict(),
            "callbacks": {name: cb.state_dict() for name, cb in self.callbacks.items() if name != "clock"},
            "evaluation_metrics": dict(self.evaluation_metrics),
            "rng": get_rng_states(),
            "grad_scaler": self.precision.state_dict(),
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.clock.load_state_dict(state["clock"])
        # Built before the optimizer's state is loaded: building a schedule sets the rates (warmup, a first step),
        # which would overwrite the loaded ones.
        schedule = self.lr_scheduler
        self.optimizer.load_state_dict(state["optimizer"])
        schedule.load_state_dict(state["lr_scheduler"])
        for name, callback_state in state["callbacks"].items():
            if name in self.callbacks:
                self.callbacks[name].load_state_dict(callback_state)
        self.evaluation_metrics = dict(state["evaluation_metrics"])
        self.precision.load_state_dict(state.get("grad_scaler", {}))
        set_rng_states(state["rng"])  # last: building the optimizer above must not shift the streams


def rank_batch_size(batch_size: int, world_size: int) -> int:
    """Each rank's share of the global ``training.batch_size``; it must divide exactly."""
    if batch_size % world_size:
        raise ValueError(
            f"training.batch_size={batch_size} cannot be split across {world_size} ranks: expected a multiple of "
            f"{world_size} (batch_size is the global batch; each rank trains on batch_size / world_size items)"
        )
    return batch_size // world_size


def _as_floats(result: Metrics | None) -> dict[str, float]:
    if result is None:
        return {}
    metrics: dict[str, float] = {}
    for name, value in result.items():
        try:
            metrics[str(name)] = float(value)
        except (TypeError, ValueError, RuntimeError):
            raise TypeError(
                f"compute_evaluation returned {type(value).__name__} for metric {name!r}: expected a number"
            ) from None
    return metrics
