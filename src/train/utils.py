"""Conversions between PIL images and ``[1, C, H, W]`` float tensors in ``[0, 1]``."""

from __future__ import annotations

import numpy as np
import torch
from PIL import Image

__all__ = ["image_to_tensor", "tensor_to_image"]

# Modes mapped one-to-one onto channels.
_DIRECT_MODES = ("L", "RGB", "RGBA")
# Modes converted first: bilevel becomes 0/255 grayscale; palette is expanded to RGB, or RGBA
# when the palette carries transparency so that information is not silently dropped.
_CONVERTED_MODES = ("1", "P")
_CHANNELS_TO_MODE = {1: "L", 3: "RGB", 4: "RGBA"}


def image_to_tensor(
    image: Image.Image,
    device: torch.device | str | None = None,
    dtype: torch.dtype | None = None,
) -> torch.Tensor:
    """Convert a PIL image into a ``[1, C, H, W]`` tensor with values ``pixel / 255``.

    Accepted modes: ``L`` (C=1), ``RGB`` (C=3), ``RGBA`` (C=4); also ``1`` (read as ``L``)
    and ``P`` (read as ``RGB``, or ``RGBA`` if the palette has transparency). Any other mode
    (``I;16``, ``F``, ``CMYK``, ``LA``...) raises ``ValueError`` rather than guessing a scale.
    ``dtype`` defaults to ``float32`` and must be a floating-point type.
    """
    dtype = torch.float32 if dtype is None else dtype
    if not dtype.is_floating_point:
        raise ValueError(f"dtype must be a floating-point type, got {dtype}")
    if image.mode == "1":
        image = image.convert("L")
    elif image.mode == "P":
        image = image.convert("RGBA" if "transparency" in image.info else "RGB")
    elif image.mode not in _DIRECT_MODES:
        accepted = ", ".join(_DIRECT_MODES + _CONVERTED_MODES)
        raise ValueError(f"unsupported image mode {image.mode!r}; accepted modes: {accepted}")

    # np.array (not asarray) gives a writable copy, which torch.from_numpy wants.
    array = np.array(image, dtype=np.uint8)
    if array.ndim == 2:
        array = array[:, :, None]
    pixels = torch.from_numpy(array).permute(2, 0, 1).unsqueeze(0)
    # Move as uint8 (4x less to transfer), then divide in at least float32 so low-precision
    # targets such as bfloat16 get the correctly rounded value of pixel / 255.
    pixels = pixels.to(device=device)
    compute_dtype = torch.float64 if dtype == torch.float64 else torch.float32
    return (pixels.to(compute_dtype) / 255.0).to(dtype).contiguous()


def tensor_to_image(tensor: torch.Tensor) -> Image.Image:
    """Convert a ``[1, C, H, W]`` or ``[C, H, W]`` float tensor into a PIL image.

    ``C`` must be 1 (mode ``L``), 3 (``RGB``) or 4 (``RGBA``). Any floating dtype and device is
    accepted; values are clamped to ``[0, 1]`` (NaN becomes 0) and then scaled to ``0..255``
    with rounding to the nearest integer.
    """
    shape = list(tensor.shape)
    if tensor.dim() == 4:
        if tensor.shape[0] != 1:
            raise ValueError(f"expected a batch of one image [1, C, H, W], got shape {shape}")
        tensor = tensor[0]
    elif tensor.dim() != 3:
        raise ValueError(f"expected shape [1, C, H, W] or [C, H, W], got shape {shape}")
    channels = int(tensor.shape[0])
    mode = _CHANNELS_TO_MODE.get(channels)
    if mode is None:
        raise ValueError(f"expected 1, 3 or 4 channels (L, RGB, RGBA), got {channels} in shape {shape}")
    if not tensor.dtype.is_floating_point:
        raise ValueError(f"expected a floating-point tensor, got {tensor.dtype}")

    # float32 on CPU: numpy has no bfloat16 and the rounding below should not depend on dtype.
    values = tensor.detach().to(device="cpu", dtype=torch.float32)
    values = torch.nan_to_num(values, nan=0.0).clamp(0.0, 1.0)
    pixels = (values * 255.0).round().to(torch.uint8).permute(1, 2, 0).contiguous().numpy()
    if channels == 1:
        pixels = pixels[:, :, 0]
    image = Image.fromarray(pixels)
    # fromarray infers the mode from the array layout; make sure it is the one we promise.
    return image if image.mode == mode else image.convert(mode)
