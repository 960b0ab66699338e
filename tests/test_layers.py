from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from train import layers as fl


class ConvBlock(fl.Chain):
    def __init__(self, in_channels: int, out_channels: int) -> None:
        super().__init__(
            fl.Conv2d(
                in_channels=in_channels,
                out_channels=out_channels,
                kernel_size=3,
                padding=1,
                groups=min(in_channels, out_channels),
            ),
            fl.LayerNorm2d(out_channels),
            fl.SiLU(),
            fl.Conv2d(in_channels=out_channels, out_channels=out_channels, kernel_size=1, padding=0),
            fl.LayerNorm2d(out_channels),
            fl.SiLU(),
        )


class ResidualBlock(fl.Sum):
    def __init__(self, in_channels: int, out_channels: int) -> None:
        super().__init__(
            ConvBlock(in_channels=in_channels, out_channels=out_channels),
            fl.Conv2d(in_channels=in_channels, out_channels=out_channels, kernel_size=3, padding=1),
        )


class Encoder(fl.Chain):
    def __init__(self) -> None:
        super().__init__(
            ResidualBlock(in_channels=1, out_channels=8),
            fl.Downsample(channels=8, scale_factor=2, register_shape=False),
            ResidualBlock(in_channels=8, out_channels=16),
            fl.Downsample(channels=16, scale_factor=2, register_shape=False),
            ResidualBlock(in_channels=16, out_channels=32),
            fl.Downsample(channels=32, scale_factor=2, register_shape=False),
            fl.Reshape(2048),
            fl.Linear(in_features=2048, out_features=256),
            fl.SiLU(),
            fl.Linear(in_features=256, out_features=256),
        )


class Decoder(fl.Chain):
    def __init__(self) -> None:
        super().__init__(
            fl.Linear(in_features=256, out_features=256),
            fl.SiLU(),
            fl.Linear(in_features=256, out_features=2048),
            fl.Reshape(32, 8, 8),
            ResidualBlock(32, 32),
            ResidualBlock(32, 32),
            fl.Upsample(channels=32, upsample_factor=2),
            ResidualBlock(32, 16),
            ResidualBlock(16, 16),
            fl.Upsample(channels=16, upsample_factor=2),
            ResidualBlock(16, 8),
            ResidualBlock(8, 8),
            fl.Upsample(channels=8, upsample_factor=2),
            ResidualBlock(8, 8),
            ResidualBlock(8, 1),
            fl.Sigmoid(),
        )


class Autoencoder(fl.Chain):
    def __init__(self) -> None:
        super().__init__(Encoder(), Decoder())

    @property
    def encoder(self) -> Encoder:
        return self.ensure_find(Encoder)

    @property
    def decoder(self) -> Decoder:
        return self.ensure_find(Decoder)


@pytest.fixture(autouse=True)
def _seed() -> None:  # pyright: ignore[reportUnusedFunction]
    torch.manual_seed(0)


def child_names(module: nn.Module) -> list[str]:
    return [name for name, _ in module.named_children()]


# --- Chain -------------------------------------------------------------------------------


def test_chain_runs_children_in_order() -> None:
    first = fl.Linear(in_features=4, out_features=3)
    second = fl.SiLU()
    third = fl.Linear(in_features=3, out_features=2)
    chain = fl.Chain(first, second, third)
    x = torch.randn(5, 4)
    torch.testing.assert_close(chain(x), third(second(first(x))))
    # A different order gives a different function, so order really matters.
    swapped = fl.Chain(second, first)
    torch.testing.assert_close(swapped(x), first(second(x)))


def test_empty_chain_is_identity() -> None:
    x = torch.randn(2, 3)
    assert torch.equal(fl.Chain()(x), x)
    assert len(fl.Chain()) == 0


def test_repeated_children_get_numbered_names() -> None:
    chain = fl.Chain(
        fl.Conv2d(in_channels=1, out_channels=1, kernel_size=1),
        fl.SiLU(),
        fl.Conv2d(in_channels=1, out_channels=1, kernel_size=1),
        fl.SiLU(),
        fl.Conv2d(in_channels=1, out_channels=1, kernel_size=1),
    )
    assert child_names(chain) == ["Conv2d", "SiLU", "Conv2d_1", "SiLU_1", "Conv2d_2"]
    assert "Conv2d_2.weight" in chain.state_dict()


def test_child_names_are_deterministic_and_nested() -> None:
    keys_a = list(ResidualBlock(2, 4).state_dict().keys())
    keys_b = list(ResidualBlock(2, 4).state_dict().keys())
    assert keys_a == keys_b
    assert keys_a == [
        "ConvBlock.Conv2d.weight",
        "ConvBlock.Conv2d.bias",
        "ConvBlock.LayerNorm2d.weight",
        "ConvBlock.LayerNorm2d.bias",
        "ConvBlock.Conv2d_1.weight",
        "ConvBlock.Conv2d_1.bias",
        "ConvBlock.LayerNorm2d_1.weight",
        "ConvBlock.LayerNorm2d_1.bias",
        "Conv2d.weight",
        "Conv2d.bias",
    ]


def test_name_clash_with_literal_suffixed_class_is_skipped() -> None:
    # The odd class name is the point: it collides with the suffix scheme.
    class Conv2d_1(nn.Identity):
        pass

    chain = fl.Chain(Conv2d_1(), fl.Conv2d(in_channels=1, out_channels=1, kernel_size=1), fl.SiLU())
    chain2 = fl.Chain(
        fl.Conv2d(in_channels=1, out_channels=1, kernel_size=1),
        Conv2d_1(),
        fl.Conv2d(in_channels=1, out_channels=1, kernel_size=1),
    )
    assert child_names(chain) == ["Conv2d_1", "Conv2d", "SiLU"]
    assert child_names(chain2) == ["Conv2d", "Conv2d_1", "Conv2d_2"]


def test_chain_rejects_non_modules() -> None:
    with pytest.raises(TypeError, match=r"nn\.Module"):
        fl.Chain(torch.relu)  # pyright: ignore[reportArgumentType]


def test_find_returns_first_match_depth_first() -> None:
    inner_conv = fl.Conv2d(in_channels=1, out_channels=1, kernel_size=1)
    outer_conv = fl.Conv2d(in_channels=1, out_channels=1, kernel_size=1)
    norm = fl.LayerNorm2d(1)
    chain = fl.Chain(fl.Chain(fl.SiLU(), inner_conv), outer_conv, norm)
    # The nested conv comes first in pre-order even though outer_conv is a direct child.
    assert chain.find(fl.Conv2d) is inner_conv
    assert chain.find(fl.LayerNorm2d) is norm
    assert chain.find(fl.Sigmoid) is None
    assert chain.ensure_find(fl.LayerNorm2d) is norm


def test_find_does_not_return_self() -> None:
    chain = fl.Chain(fl.SiLU())
    assert chain.find(fl.Chain) is None
    outer = fl.Chain(chain)
    assert outer.find(fl.Chain) is chain


def test_ensure_find_missing_raises_lookup_error() -> None:
    model = Autoencoder()
    with pytest.raises(LookupError, match=r"Upsample.*Encoder"):
        model.encoder.ensure_find(fl.Upsample)
    with pytest.raises(LookupError, match=r"Sum.*Chain"):
        fl.Chain(fl.SiLU()).ensure_find(fl.Sum)


def test_iteration_len_and_indexing() -> None:
    a, b, c = fl.SiLU(), fl.Sigmoid(), fl.Reshape(4)
    chain = fl.Chain(a, b, c)
    assert len(chain) == 3
    assert list(chain) == [a, b, c]
    assert chain[0] is a
    assert chain[2] is c
    assert chain[-1] is c
    assert chain[-3] is a
    with pytest.raises(IndexError):
        chain[3]


def test_slicing_returns_chain_sharing_modules() -> None:
    first = fl.Linear(in_features=3, out_features=3)
    second = fl.SiLU()
    third = fl.Linear(in_features=3, out_features=3)
    chain = fl.Chain(first, second, third)
    head = chain[:2]
    assert type(head) is fl.Chain
    assert list(head) == [first, second]
    assert head[0] is first
    assert list(chain[::-1]) == [third, second, first]
    assert list(chain[-1:]) == [third]
    # Same objects, so parameters are shared: editing the original shows through the slice.
    assert head.state_dict()["Linear.weight"].data_ptr() == first.weight.data_ptr()
    with torch.no_grad():
        first.weight.fill_(0.5)
    assert torch.all(head.state_dict()["Linear.weight"] == 0.5)
    x = torch.randn(2, 3)
    torch.testing.assert_close(head(x), second(first(x)))


# --- Sum ---------------------------------------------------------------------------------


def test_sum_adds_branch_outputs() -> None:
    a = fl.Linear(in_features=4, out_features=2)
    b = fl.Linear(in_features=4, out_features=2)
    c = fl.Chain(fl.Linear(in_features=4, out_features=2), fl.Sigmoid())
    x = torch.randn(3, 4)
    torch.testing.assert_close(fl.Sum(a, b, c)(x), a(x) + b(x) + c(x))
    torch.testing.assert_close(fl.Sum(a)(x), a(x))


def test_sum_of_identity_does_not_mutate_input() -> None:
    x = torch.randn(2, 3)
    original = x.clone()
    out = fl.Sum(nn.Identity(), nn.Identity())(x)
    torch.testing.assert_close(out, 2 * original)
    assert torch.equal(x, original)


def test_empty_sum_raises() -> None:
    with pytest.raises(ValueError, match="no branches"):
        fl.Sum()(torch.zeros(1))


# --- leaf layers -------------------------------------------------------------------------


def test_conv2d_keyword_arguments() -> None:
    conv = fl.Conv2d(in_channels=4, out_channels=8, kernel_size=3, stride=2, padding=1, groups=4, bias=False)
    assert isinstance(conv, nn.Conv2d)
    assert conv.weight.shape == (8, 1, 3, 3)
    assert conv.bias is None
    assert conv.stride == (2, 2)
    assert conv(torch.randn(1, 4, 10, 10)).shape == (1, 8, 5, 5)
    conv64 = fl.Conv2d(in_channels=1, out_channels=1, kernel_size=1, dtype=torch.float64)
    assert conv64.weight.dtype == torch.float64


def test_linear_and_activations() -> None:
    linear = fl.Linear(in_features=3, out_features=2, bias=False)
    assert linear.weight.shape == (2, 3)
    assert linear.bias is None
    x = torch.tensor([-2.0, 0.0, 1.0])
    torch.testing.assert_close(fl.SiLU()(x), x * torch.sigmoid(x))
    torch.testing.assert_close(fl.Sigmoid()(x), 1 / (1 + torch.exp(-x)))


def test_layernorm2d_normalises_each_pixel_over_channels() -> None:
    norm = fl.LayerNorm2d(5)
    assert torch.equal(norm.weight, torch.ones(5))
    assert torch.equal(norm.bias, torch.zeros(5))
    # Different scale and offset per pixel: normalising per pixel must remove both.
    x = torch.randn(2, 5, 4, 3) * torch.rand(2, 1, 4, 3) * 10 + torch.randn(2, 1, 4, 3) * 5
    y = norm(x)
    assert y.shape == x.shape
    torch.testing.assert_close(y.mean(dim=1), torch.zeros(2, 4, 3), atol=1e-5, rtol=0)
    torch.testing.assert_close(y.var(dim=1, unbiased=False), torch.ones(2, 4, 3), atol=1e-3, rtol=0)


def test_layernorm2d_matches_manual_computation_with_affine() -> None:
    norm = fl.LayerNorm2d(3, eps=1e-5)
    with torch.no_grad():
        norm.weight.copy_(torch.tensor([1.0, 2.0, -0.5]))
        norm.bias.copy_(torch.tensor([0.0, 1.0, 3.0]))
    x = torch.randn(2, 3, 4, 4)
    mean = x.mean(dim=1, keepdim=True)
    var = ((x - mean) ** 2).mean(dim=1, keepdim=True)
    expected = (x - mean) / torch.sqrt(var + 1e-5) * norm.weight.view(1, 3, 1, 1) + norm.bias.view(1, 3, 1, 1)
    torch.testing.assert_close(norm(x), expected)
    # Same as the built-in layer norm applied over the channel axis moved last.
    reference = F.layer_norm(x.permute(0, 2, 3, 1), (3,), norm.weight, norm.bias, 1e-5).permute(0, 3, 1, 2)
    torch.testing.assert_close(norm(x), reference)


def test_layernorm2d_single_pixel_known_values() -> None:
    norm = fl.LayerNorm2d(2, eps=0.0)
    x = torch.tensor([1.0, 3.0]).view(1, 2, 1, 1)
    torch.testing.assert_close(norm(x).flatten(), torch.tensor([-1.0, 1.0]))


def test_layernorm2d_rejects_wrong_channels() -> None:
    with pytest.raises(ValueError, match=r"\[N, 4, H, W\]"):
        fl.LayerNorm2d(4)(torch.zeros(1, 3, 2, 2))


def test_reshape_keeps_batch_dimension() -> None:
    x = torch.arange(2 * 32 * 8 * 8, dtype=torch.float32).reshape(2, 2048)
    y = fl.Reshape(32, 8, 8)(x)
    assert y.shape == (2, 32, 8, 8)
    assert torch.equal(y.flatten(1), x)
    assert fl.Reshape(6)(torch.zeros(3, 2, 3)).shape == (3, 6)


@pytest.mark.parametrize(("factor", "expected"), [(2, 32), (4, 16)])
def test_downsample_output_size(factor: int, expected: int) -> None:
    down = fl.Downsample(channels=3, scale_factor=factor)
    assert down(torch.randn(2, 3, 64, 64)).shape == (2, 3, expected, expected)
    assert down.conv.stride == (factor, factor)
    assert down.conv.kernel_size == (3, 3)


def test_downsample_register_shape() -> None:
    down = fl.Downsample(channels=2, scale_factor=2)
    assert down.last_input_size is None
    down(torch.randn(1, 2, 64, 48))
    assert down.last_input_size == (64, 48)
    down(torch.randn(1, 2, 9, 7))
    assert down.last_input_size == (9, 7)

    silent = fl.Downsample(channels=2, scale_factor=2, register_shape=False)
    silent(torch.randn(1, 2, 64, 48))
    assert silent.last_input_size is None


def test_downsample_is_the_strided_conv() -> None:
    down = fl.Downsample(channels=2, scale_factor=2, padding=0)
    x = torch.randn(1, 2, 9, 9)
    expected = F.conv2d(x, down.conv.weight, down.conv.bias, stride=2, padding=0)
    torch.testing.assert_close(down(x), expected)
    assert down(x).shape == (1, 2, 4, 4)


def test_upsample_doubles_size_and_is_conv_of_nearest() -> None:
    up = fl.Upsample(channels=4, upsample_factor=2)
    x = torch.randn(2, 4, 8, 8)
    y = up(x)
    assert y.shape == (2, 4, 16, 16)
    # Nearest neighbour by 2 is repeating each pixel in a 2x2 block.
    nearest = x.repeat_interleave(2, dim=2).repeat_interleave(2, dim=3)
    expected = F.conv2d(nearest, up.conv.weight, up.conv.bias, padding=1)
    torch.testing.assert_close(y, expected)


def test_upsample_factor_three() -> None:
    up = fl.Upsample(channels=1, upsample_factor=3)
    assert up(torch.randn(1, 1, 5, 4)).shape == (1, 1, 15, 12)


# --- the documented example --------------------------------------------------------------


def test_autoencoder_shapes_and_range() -> None:
    model = Autoencoder()
    x = torch.rand(2, 1, 64, 64)
    with torch.no_grad():
        z = model.encoder(x)
        y = model.decoder(z)
        full = model(x)
    assert z.shape == (2, 256)
    assert y.shape == (2, 1, 64, 64)
    assert torch.all((y > 0) & (y < 1))
    torch.testing.assert_close(full, y)


def test_autoencoder_properties_return_children() -> None:
    model = Autoencoder()
    assert model.encoder is model[0]
    assert model.decoder is model[1]
    assert isinstance(model.encoder, Encoder)
    assert isinstance(model.decoder, Decoder)
    assert child_names(model) == ["Encoder", "Decoder"]
    assert child_names(model.encoder)[:4] == [
        "ResidualBlock",
        "Downsample",
        "ResidualBlock_1",
        "Downsample_1",
    ]


def test_autoencoder_backward_reaches_first_layer() -> None:
    model = Autoencoder()
    x = torch.rand(1, 1, 64, 64)
    loss = F.mse_loss(model(x), x)
    loss.backward()
    first_conv = model.ensure_find(fl.Conv2d)
    assert first_conv.weight.grad is not None
    assert first_conv.weight.grad.abs().sum() > 0
