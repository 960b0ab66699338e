from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from train.utils import image_to_tensor, tensor_to_image


def random_image(mode: str, height: int = 5, width: int = 7, seed: int = 0) -> Image.Image:
    channels = {"L": 1, "RGB": 3, "RGBA": 4}[mode]
    rng = np.random.default_rng(seed)
    array = rng.integers(0, 256, size=(height, width, channels), dtype=np.uint8)
    image = Image.fromarray(array[:, :, 0] if channels == 1 else array)
    assert image.mode == mode
    return image


# --- image_to_tensor ---------------------------------------------------------------------


@pytest.mark.parametrize(("mode", "channels"), [("L", 1), ("RGB", 3), ("RGBA", 4)])
def test_image_to_tensor_shape_dtype_and_range(mode: str, channels: int) -> None:
    image = random_image(mode)
    tensor = image_to_tensor(image)
    assert tensor.shape == (1, channels, 5, 7)
    assert tensor.dtype == torch.float32
    assert tensor.device.type == "cpu"
    assert float(tensor.min()) >= 0.0 and float(tensor.max()) <= 1.0
    expected = torch.from_numpy(np.array(image, dtype=np.float32)).reshape(5, 7, channels) / 255
    torch.testing.assert_close(tensor[0].permute(1, 2, 0), expected)


def test_image_to_tensor_known_pixel_values() -> None:
    image = Image.new("RGB", (4, 3), color=(0, 0, 0))
    image.putpixel((2, 1), (255, 51, 102))  # (x, y) in PIL, i.e. row 1, column 2
    tensor = image_to_tensor(image)
    assert tensor.shape == (1, 3, 3, 4)
    torch.testing.assert_close(tensor[0, :, 1, 2], torch.tensor([1.0, 0.2, 0.4]))
    assert float(tensor.sum()) == pytest.approx(1.0 + 0.2 + 0.4, abs=1e-6)

    gray = Image.new("L", (2, 2), color=128)
    torch.testing.assert_close(image_to_tensor(gray), torch.full((1, 1, 2, 2), 128 / 255))

    rgba = Image.new("RGBA", (1, 1), color=(10, 20, 30, 0))
    torch.testing.assert_close(image_to_tensor(rgba).flatten(), torch.tensor([10.0, 20.0, 30.0, 0.0]) / 255)


def test_image_to_tensor_dtype_and_device() -> None:
    image = Image.new("L", (3, 2), color=255)
    tensor = image_to_tensor(image, device="cpu", dtype=torch.float64)
    assert tensor.dtype == torch.float64
    assert torch.equal(tensor, torch.ones(1, 1, 2, 3, dtype=torch.float64))
    bf16 = image_to_tensor(Image.new("L", (1, 1), color=51), device=torch.device("cpu"), dtype=torch.bfloat16)
    assert bf16.dtype == torch.bfloat16
    # The value is pixel / 255 rounded once to bfloat16.
    assert bf16.item() == torch.tensor(0.2).to(torch.bfloat16).item()


def test_image_to_tensor_rejects_integer_dtype() -> None:
    with pytest.raises(ValueError, match="floating-point"):
        image_to_tensor(Image.new("L", (1, 1)), dtype=torch.uint8)


def test_image_to_tensor_converts_bilevel_to_grayscale() -> None:
    image = Image.new("1", (3, 1), color=0)
    image.putpixel((1, 0), 1)
    tensor = image_to_tensor(image)
    assert tensor.shape == (1, 1, 1, 3)
    assert tensor.flatten().tolist() == [0.0, 1.0, 0.0]


def test_image_to_tensor_expands_palette() -> None:
    image = Image.new("P", (2, 1))
    image.putpalette([0, 0, 0, 255, 128, 0] + [0] * (256 * 3 - 6))
    image.putpixel((1, 0), 1)
    tensor = image_to_tensor(image)
    assert tensor.shape == (1, 3, 1, 2)
    torch.testing.assert_close(tensor[0, :, 0, 1], torch.tensor([255.0, 128.0, 0.0]) / 255)
    torch.testing.assert_close(tensor[0, :, 0, 0], torch.zeros(3))

    # A palette with a transparent index keeps the transparency as an alpha channel.
    image.info["transparency"] = 0
    with_alpha = image_to_tensor(image)
    assert with_alpha.shape == (1, 4, 1, 2)
    torch.testing.assert_close(with_alpha[0, 3, 0], torch.tensor([0.0, 1.0]))


@pytest.mark.parametrize("mode", ["I;16", "F", "CMYK", "LA"])
def test_image_to_tensor_rejects_other_modes(mode: str) -> None:
    with pytest.raises(ValueError, match=rf"'{mode}'.*L, RGB, RGBA"):
        image_to_tensor(Image.new(mode, (2, 2)))


# --- tensor_to_image ---------------------------------------------------------------------


@pytest.mark.parametrize("mode", ["L", "RGB", "RGBA"])
def test_round_trip_is_exact(mode: str) -> None:
    image = random_image(mode, height=6, width=9, seed=1)
    back = tensor_to_image(image_to_tensor(image))
    assert back.mode == mode
    assert back.size == image.size
    assert np.array_equal(np.array(back), np.array(image))


@pytest.mark.parametrize(("channels", "mode"), [(1, "L"), (3, "RGB"), (4, "RGBA")])
def test_tensor_to_image_round_trip_within_one_level(channels: int, mode: str) -> None:
    tensor = torch.rand(1, channels, 4, 6)
    image = tensor_to_image(tensor)
    assert image.mode == mode
    assert image.size == (6, 4)  # PIL reports (width, height)
    back = image_to_tensor(image)
    # Rounding to the nearest level is off by at most half a level.
    assert float((back - tensor).abs().max()) <= 0.5 / 255 + 1e-6


def test_tensor_to_image_accepts_unbatched_and_known_pixel() -> None:
    tensor = torch.zeros(3, 2, 2)
    tensor[:, 0, 1] = torch.tensor([1.0, 0.5, 0.2])
    image = tensor_to_image(tensor)
    assert image.mode == "RGB"
    # 0.5 * 255 = 127.5 rounds half to even -> 128; 0.2 * 255 = 51.
    assert image.getpixel((1, 0)) == (255, 128, 51)
    assert image.getpixel((0, 0)) == (0, 0, 0)


def test_tensor_to_image_clamps_out_of_range_values() -> None:
    tensor = torch.tensor([[-3.0, -0.01, 0.0], [1.0, 1.01, 42.0]]).view(1, 1, 2, 3)
    image = tensor_to_image(tensor)
    assert image.mode == "L"
    assert np.array(image).tolist() == [[0, 0, 0], [255, 255, 255]]


def test_tensor_to_image_maps_nan_to_zero() -> None:
    image = tensor_to_image(torch.tensor([float("nan"), 1.0]).view(1, 1, 1, 2))
    assert np.array(image).tolist() == [[0, 255]]


def test_tensor_to_image_bfloat16_and_grad() -> None:
    tensor = torch.tensor([0.0, 0.25, 0.5, 1.0], dtype=torch.bfloat16).view(1, 1, 2, 2).requires_grad_()
    image = tensor_to_image(tensor)
    assert image.mode == "L"
    # 0.25 * 255 = 63.75 -> 64; 0.5 * 255 = 127.5 -> 128 (all exact in bfloat16).
    assert np.array(image).tolist() == [[0, 64], [128, 255]]


def test_tensor_to_image_float64_and_float16() -> None:
    for dtype in (torch.float64, torch.float16):
        image = tensor_to_image(torch.full((1, 4, 1, 1), 0.2, dtype=dtype))
        assert image.mode == "RGBA"
        assert image.getpixel((0, 0)) == (51, 51, 51, 51)


@pytest.mark.parametrize(
    ("shape", "message"),
    [
        ((2, 3, 4, 4), r"batch of one.*\[2, 3, 4, 4\]"),
        ((1, 5, 4, 4), r"1, 3 or 4 channels.*\[1, 5, 4, 4\]"),
        ((2, 4, 4), r"1, 3 or 4 channels.*\[2, 4, 4\]"),
        ((4, 4), r"\[1, C, H, W\] or \[C, H, W\].*\[4, 4\]"),
        ((1, 1, 1, 4, 4), r"\[1, C, H, W\] or \[C, H, W\].*\[1, 1, 1, 4, 4\]"),
    ],
)
def test_tensor_to_image_rejects_bad_shapes(shape: tuple[int, ...], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        tensor_to_image(torch.zeros(shape))


def test_tensor_to_image_rejects_integer_tensor() -> None:
    with pytest.raises(ValueError, match="floating-point"):
        tensor_to_image(torch.zeros(1, 1, 2, 2, dtype=torch.uint8))
