import pytest
import torch

from brainseg_utils.models.unet import UNet, count_parameters


def test_parameter_count_at_defaults():
    # The classic U-Net (64..1024, transposed-conv upsampling, BatchNorm): 31,036,481 parameters.
    assert count_parameters(UNet())["total"] == 31_036_481
    bilinear = count_parameters(UNet(bilinear=True))["total"]
    assert 28e6 < bilinear < 31e6  # 1x1 convs replace the 2x2 transposed convs


@pytest.mark.parametrize("size", [(64, 64), (65, 63), (48, 80)])
def test_output_shape_any_size(size):
    m = UNet(in_channels=4, base_channels=4).eval()
    out = m(torch.randn(2, 4, *size))
    assert out.shape == (2, 1, *size)


def test_width_scales_with_base_channels():
    small, big = count_parameters(UNet(base_channels=8))["total"], count_parameters(UNet(base_channels=16))["total"]
    assert 3.5 < big / small < 4.1  # conv weights scale with width squared


def test_initial_prediction_is_mostly_background():
    m = UNet(base_channels=4).eval()
    p = torch.sigmoid(m(torch.rand(2, 1, 64, 64)))
    assert p.mean() < 0.1


@pytest.mark.parametrize("kwargs", [{"in_channels": 0}, {"base_channels": 0}, {"dropout": 1.0}])
def test_bad_arguments(kwargs):
    with pytest.raises(ValueError):
        UNet(**kwargs)
