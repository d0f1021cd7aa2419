"""FCN-ResNet50: torchvision's state_dict layout, any input channels, forward shapes."""
import math
from pathlib import Path

import pytest
import torch
from torch import nn

from fcn_resnet import fcn_resnet50

TESTS_DIR = Path(__file__).resolve().parent
BUNDLED_KEYS = TESTS_DIR / "data" / "torchvision_fcn_resnet50_keys.txt"
SHARED_KEYS_NAME = Path("shared", "reference", "torchvision_fcn_resnet50_keys.txt")
REFERENCE_CLASSES = 5


def key_shapes(model):
    """The state_dict as {name: shape tuple}, in state_dict order."""
    return {name: tuple(tensor.shape) for name, tensor in model.state_dict().items()}


def key_shape_lines(model):
    """The state_dict as 'name (shape)' lines, the format of the reference key lists."""
    return [f"{name} {shape}" for name, shape in key_shapes(model).items()]


def find_shared_key_list():
    """``../shared`` next to the repo root (CI), or next to any folder above it (worktrees)."""
    for folder in TESTS_DIR.parents[1:]:
        if (folder / SHARED_KEYS_NAME).is_file():
            return folder / SHARED_KEYS_NAME
    return None


def read_key_list(path):
    return [line.strip() for line in path.read_text().splitlines() if line.strip()]


@pytest.fixture(scope="module")
def reference_model():
    torch.manual_seed(0)
    return fcn_resnet50(num_classes=REFERENCE_CLASSES).eval()


def test_keys_and_shapes_equal_bundled_torchvision_list(reference_model):
    assert key_shape_lines(reference_model) == read_key_list(BUNDLED_KEYS)


def test_keys_and_shapes_equal_shared_torchvision_list(reference_model):
    shared_keys = find_shared_key_list()
    if shared_keys is None:
        pytest.skip(f"../{SHARED_KEYS_NAME} not present")
    assert key_shape_lines(reference_model) == read_key_list(shared_keys)


@pytest.mark.parametrize("in_channels", [1, 4])
def test_in_channels_changes_only_the_stem_conv(reference_model, in_channels):
    model = fcn_resnet50(num_classes=REFERENCE_CLASSES, in_channels=in_channels)
    expected = key_shapes(reference_model)
    expected["backbone.conv1.weight"] = (64, in_channels, 7, 7)
    shapes = key_shapes(model)
    assert list(shapes) == list(expected)
    assert shapes == expected


def test_default_num_classes_is_21_and_changes_only_the_last_head_conv():
    model = fcn_resnet50()  # torchvision's default: 21 classes (Pascal VOC)
    shapes = key_shapes(model)
    expected = dict(line.split(" ", 1) for line in read_key_list(BUNDLED_KEYS))
    changed = {name for name, shape in shapes.items() if str(shape) != expected[name]}
    assert changed == {"classifier.4.weight", "classifier.4.bias"}
    assert shapes["classifier.4.weight"] == (21, 512, 1, 1)


def test_forward_returns_logits_at_input_size():
    torch.manual_seed(0)
    model = fcn_resnet50(num_classes=REFERENCE_CLASSES, in_channels=1).eval()
    with torch.no_grad():
        result = model(torch.randn(1, 1, 64, 64))
        odd = model(torch.randn(1, 1, 36, 44))  # not a multiple of the output stride
    assert list(result) == ["out"]
    assert result["out"].shape == (1, REFERENCE_CLASSES, 64, 64)
    assert odd["out"].shape == (1, REFERENCE_CLASSES, 36, 44)
    assert torch.isfinite(result["out"]).all()


def test_backbone_has_output_stride_8_and_upsampling_is_bilinear(reference_model):
    image = torch.randn(1, 3, 32, 32)
    with torch.no_grad():
        features = reference_model.backbone(image)["out"]
        coarse = reference_model.classifier(features)
        out = reference_model(image)["out"]
    assert features.shape == (1, 2048, 4, 4)
    # Bilinear with align_corners=False, scale 8: the output pixel at (4, 4) sits exactly at coarse coordinate 0.0625 -> weights 15/16, 1/16.
    row_weights = torch.tensor([15 / 16, 1 / 16])
    expected = row_weights @ coarse[0, :, 0:2, 0:2] @ row_weights
    assert torch.allclose(out[0, :, 4, 4], expected, atol=1e-5)
    assert torch.allclose(out[0, :, 0, 0], coarse[0, :, 0, 0], atol=1e-6)


def test_attribute_paths_strides_and_dilations_match_torchvision_layout(reference_model):
    backbone = reference_model.backbone
    assert [len(getattr(backbone, f"layer{i}")) for i in range(1, 5)] == [3, 4, 6, 3]
    assert not hasattr(backbone, "fc") and not hasattr(backbone, "avgpool")
    assert backbone.layer1[0].conv1.kernel_size == (1, 1)
    assert backbone.layer1[0].downsample[0].stride == (1, 1)
    assert backbone.layer2[0].conv2.stride == (2, 2)
    assert backbone.layer2[0].downsample[0].stride == (2, 2)
    # replace_stride_with_dilation=[False, True, True]: the first block keeps the old dilation.
    dilations = {name: [block.conv2.dilation[0] for block in getattr(backbone, name)]
                 for name in ("layer3", "layer4")}
    assert dilations == {"layer3": [1, 2, 2, 2, 2, 2], "layer4": [2, 4, 4]}
    for name in ("layer3", "layer4"):
        layer = getattr(backbone, name)
        assert layer[0].conv2.stride == (1, 1)
        assert layer[0].downsample[0].stride == (1, 1)
        assert all(block.conv2.padding == block.conv2.dilation for block in layer)
    head = reference_model.classifier
    assert [type(m) for m in head] == [nn.Conv2d, nn.BatchNorm2d, nn.ReLU, nn.Dropout, nn.Conv2d]
    assert head[0].kernel_size == (3, 3) and head[0].padding == (1, 1) and head[0].bias is None
    assert head[3].p == 0.1
    assert reference_model.aux_classifier is None


def test_initialisation_follows_torchvision(reference_model):
    backbone = reference_model.backbone
    conv = backbone.layer3[0].conv2  # 256 x 256 x 3 x 3: plenty of samples
    fan_out = conv.out_channels * conv.kernel_size[0] * conv.kernel_size[1]
    expected_std = math.sqrt(2.0 / fan_out)
    assert abs(conv.weight.std().item() / expected_std - 1) < 0.02
    assert abs(conv.weight.mean().item()) < 0.05 * expected_std
    for module in reference_model.modules():
        if isinstance(module, nn.BatchNorm2d):
            assert torch.equal(module.weight, torch.ones_like(module.weight))
            assert torch.equal(module.bias, torch.zeros_like(module.bias))


def test_aux_loss_adds_torchvision_aux_head():
    model = fcn_resnet50(num_classes=REFERENCE_CLASSES, aux_loss=True).eval()
    shapes = key_shapes(model)
    assert shapes["aux_classifier.0.weight"] == (256, 1024, 3, 3)
    assert shapes["aux_classifier.4.weight"] == (REFERENCE_CLASSES, 256, 1, 1)
    with torch.no_grad():
        result = model(torch.randn(1, 3, 24, 40))
    assert list(result) == ["out", "aux"]
    assert result["aux"].shape == (1, REFERENCE_CLASSES, 24, 40)


@pytest.mark.parametrize("kwargs, message", [
    ({"num_classes": 0}, "num_classes"),
    ({"in_channels": 0}, "in_channels"),
    ({"in_channels": 2.5}, "in_channels"),
    ({"weights": "DEFAULT"}, "weights"),
    ({"weights_backbone": "IMAGENET1K_V1"}, "weights"),
])
def test_bad_arguments_raise_clear_value_errors(kwargs, message):
    with pytest.raises(ValueError, match=message):
        fcn_resnet50(**kwargs)


def _randomise_batchnorm_statistics(model, generator):
    """Non-trivial running stats and affine parameters, so the comparison exercises BN too."""
    for module in model.modules():
        if isinstance(module, nn.BatchNorm2d):
            size = module.num_features
            module.running_mean.copy_(0.1 * torch.randn(size, generator=generator))
            module.running_var.copy_(0.5 + torch.rand(size, generator=generator))
            module.weight.data.copy_(0.5 + torch.rand(size, generator=generator))
            module.bias.data.copy_(0.1 * torch.randn(size, generator=generator))


@pytest.mark.parametrize("aux_loss", [False, True])
def test_matches_torchvision_model(aux_loss):
    segmentation = pytest.importorskip("torchvision.models.segmentation")
    torchvision_model = segmentation.fcn_resnet50(
        weights=None, weights_backbone=None, num_classes=REFERENCE_CLASSES, aux_loss=aux_loss)
    model = fcn_resnet50(num_classes=REFERENCE_CLASSES, aux_loss=aux_loss)
    assert key_shape_lines(model) == key_shape_lines(torchvision_model)

    generator = torch.Generator().manual_seed(1)
    with torch.no_grad():
        _randomise_batchnorm_statistics(torchvision_model, generator)
    model.load_state_dict(torchvision_model.state_dict(), strict=True)
    model.eval()
    torchvision_model.eval()
    image = torch.randn(1, 3, 40, 48, generator=generator)
    with torch.no_grad():
        ours, theirs = model(image), torchvision_model(image)
    assert list(ours) == list(theirs)
    for name in theirs:
        assert torch.allclose(ours[name], theirs[name], rtol=1e-4, atol=1e-5), name
