"""Mixed precision (``training.amp``): autocast for the forward passes, a gradient scaler for float16.

The weights, gradients and optimizer state stay float32; autocast runs the eligible operations (matrix
multiplies, convolutions) in the lower precision. float16's narrow range needs the loss scaled up before
backward, and the gradients scaled back down before they are clipped, logged or applied: that is the
GradScaler's job, and it skips an update whose gradients overflowed (lowering the scale). bfloat16 has
float32's range and needs no scaler.
"""

from __future__ import annotations

import contextlib
from typing import Any

import torch

AMP_DTYPES: dict[str, torch.dtype] = {"bf16": torch.bfloat16, "fp16": torch.float16}
_NO_AUTOCAST = contextlib.nullcontext()  # reusable: the loop enters it at every step


class MixedPrecision:
    """What the loop does differently under ``training.amp``; with ``amp=None`` every method is a plain pass."""

    def __init__(self, amp: str | None, device: torch.device) -> None:
        if amp is not None and amp not in AMP_DTYPES:
            raise ValueError(f"training.amp={amp!r} is invalid: expected one of {', '.join(AMP_DTYPES)} or null")
        self.dtype = AMP_DTYPES[amp] if amp is not None else None
        self.device_type = device.type
        self.scaler = torch.amp.GradScaler(device.type) if amp == "fp16" else None

    def autocast(self) -> contextlib.AbstractContextManager[Any]:
        """The context to run forward passes in: autocast to the amp dtype, or nothing."""
        if self.dtype is None:
            return _NO_AUTOCAST
        return torch.autocast(device_type=self.device_type, dtype=self.dtype)

    def backward(self, loss: torch.Tensor) -> None:
        (self.scaler.scale(loss) if self.scaler is not None else loss).backward()

    def unscale(self, optimizer: torch.optim.Optimizer) -> None:
        """Bring the gradients back to their true size (before clipping or measuring them)."""
        if self.scaler is not None:
            self.scaler.unscale_(optimizer)

    def step(self, optimizer: torch.optim.Optimizer) -> None:
        """Apply the update; under float16 the scaler skips it if the gradients overflowed, then adapts."""
        if self.scaler is None:
            optimizer.step()
            return
        self.scaler.step(optimizer)
        self.scaler.update()

    def state_dict(self) -> dict[str, Any]:
        return self.scaler.state_dict() if self.scaler is not None else {}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if self.scaler is not None and state:
            self.scaler.load_state_dict(state)
