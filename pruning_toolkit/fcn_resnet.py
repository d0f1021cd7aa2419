"""FCN-ResNet50 for semantic segmentation, laid out like torchvision's ``fcn_resnet50``.

The state_dict keys, module attribute paths and computations match torchvision's model
(ResNet-50 backbone with dilated layer3/layer4, FCN head), so torchvision checkpoints load
into it and code that walks ``model.backbone.layer1[0].conv1`` works unchanged; unlike
torchvision it takes any number of input channels and needs no torchvision install.
"""
from collections import OrderedDict

import torch.nn.functional as F
from torch import nn

BOTTLENECK_EXPANSION = 4
RESNET50_BLOCKS_PER_LAYER = (3, 4, 6, 3)
RESNET50_LAYER_WIDTHS = (64, 128, 256, 512)
# layer2 halves the resolution; layer3/layer4 keep it and dilate instead (output stride 8).
RESNET50_LAYER_DILATES = (False, False, True, True)
STEM_CHANNELS = 64
DEFAULT_NUM_CLASSES = 21


class Bottleneck(nn.Module):
    """ResNet bottleneck block: 1x1 reduce, 3x3 (carrying stride and dilation), 1x1 expand, skip."""

    def __init__(self, in_channels, width, stride=1, dilation=1, downsample=None):
        super().__init__()
        out_channels = width * BOTTLENECK_EXPANSION
        self.conv1 = nn.Conv2d(in_channels, width, kernel_size=1, bias=False)
        self.bn1 = nn.BatchNorm2d(width)
        self.conv2 = nn.Conv2d(width, width, kernel_size=3, stride=stride, padding=dilation,
                               dilation=dilation, bias=False)
        self.bn2 = nn.BatchNorm2d(width)
        self.conv3 = nn.Conv2d(width, out_channels, kernel_size=1, bias=False)
        self.bn3 = nn.BatchNorm2d(out_channels)
        self.relu = nn.ReLU(inplace=True)
        self.downsample = downsample

    def forward(self, x):
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        # the skip path runs after the main branch, as in torchvision (traced node order)
        identity = x if self.downsample is None else self.downsample(x)
        return self.relu(out + identity)


def _projection_shortcut(in_channels, out_channels, stride):
    """The 1x1 conv + BN that matches the skip path to a block's output shape."""
    return nn.Sequential(
        nn.Conv2d(in_channels, out_channels, kernel_size=1, stride=stride, bias=False),
        nn.BatchNorm2d(out_channels),
    )


class ResNetBackbone(nn.Module):
    """ResNet-50 without avgpool/fc, returning ``{"out": layer4}`` (plus ``"aux": layer3``).

    Mirrors torchvision's ``IntermediateLayerGetter(resnet50(replace_stride_with_dilation=
    [False, True, True]), ...)``: a dilated layer's first block keeps the previous dilation.
    ``blocks_per_layer``, ``layer_widths`` and ``stem_channels`` default to ResNet-50's; smaller
    values give a narrow network of the same layout (for tests and quick runs).
    """

    def __init__(self, in_channels=3, return_aux=False, blocks_per_layer=RESNET50_BLOCKS_PER_LAYER,
                 layer_widths=RESNET50_LAYER_WIDTHS, stem_channels=STEM_CHANNELS):
        super().__init__()
        self.return_aux = return_aux
        self.conv1 = nn.Conv2d(in_channels, stem_channels, kernel_size=7, stride=2, padding=3,
                               bias=False)
        self.bn1 = nn.BatchNorm2d(stem_channels)
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool2d(kernel_size=3, stride=2, padding=1)

        channels, dilation = stem_channels, 1
        for index, (blocks, width, dilate) in enumerate(zip(
                blocks_per_layer, layer_widths, RESNET50_LAYER_DILATES)):
            stride = 1 if index == 0 else 2
            layer, channels, dilation = self._make_layer(channels, width, blocks, stride,
                                                         dilation, dilate)
            setattr(self, f"layer{index + 1}", layer)
        self.out_channels = channels
        self._init_weights()

    @staticmethod
    def _make_layer(in_channels, width, blocks, stride, dilation, dilate):
        """One stage of bottlenecks; returns (stage, its output channels, the dilation after it)."""
        first_dilation = dilation
        if dilate:
            dilation *= stride
            stride = 1
        out_channels = width * BOTTLENECK_EXPANSION
        downsample = None
        if stride != 1 or in_channels != out_channels:
            downsample = _projection_shortcut(in_channels, out_channels, stride)
        layers = [Bottleneck(in_channels, width, stride, first_dilation, downsample)]
        layers += [Bottleneck(out_channels, width, dilation=dilation) for _ in range(blocks - 1)]
        return nn.Sequential(*layers), out_channels, dilation

    def _init_weights(self):
        """torchvision's ResNet init: Kaiming-normal (fan_out) convs, BatchNorm weight 1, bias 0."""
        for module in self.modules():
            if isinstance(module, nn.Conv2d):
                nn.init.kaiming_normal_(module.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(module, nn.BatchNorm2d):
                nn.init.ones_(module.weight)
                nn.init.zeros_(module.bias)

    def forward(self, x):
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        x = self.layer2(self.layer1(x))
        layer3_features = self.layer3(x)
        features = OrderedDict()
        if self.return_aux:
            features["aux"] = layer3_features
        features["out"] = self.layer4(layer3_features)
        return features


class FCNHead(nn.Sequential):
    """FCN head: 3x3 conv to in_channels // 4, BN, ReLU, Dropout(0.1), 1x1 conv to the classes."""

    def __init__(self, in_channels, num_classes):
        hidden_channels = in_channels // 4
        super().__init__(
            nn.Conv2d(in_channels, hidden_channels, kernel_size=3, padding=1, bias=False),
            nn.BatchNorm2d(hidden_channels),
            nn.ReLU(),
            nn.Dropout(0.1),
            nn.Conv2d(hidden_channels, num_classes, kernel_size=1),
        )


class FCN(nn.Module):
    """Backbone + head; logits upsampled bilinearly to the input size, returned as ``{"out": ...}``."""

    def __init__(self, backbone, classifier, aux_classifier=None):
        super().__init__()
        self.backbone = backbone
        self.classifier = classifier
        self.aux_classifier = aux_classifier

    def forward(self, x):
        input_size = x.shape[-2:]
        features = self.backbone(x)
        result = OrderedDict()
        result["out"] = _upsample(self.classifier(features["out"]), input_size)
        if self.aux_classifier is not None:
            result["aux"] = _upsample(self.aux_classifier(features["aux"]), input_size)
        return result


def _upsample(logits, size):
    return F.interpolate(logits, size=size, mode="bilinear", align_corners=False)


def _check_positive_int(name, value):
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"fcn_resnet50: {name} must be a positive integer, got {value!r}")


def fcn_resnet50(num_classes=DEFAULT_NUM_CLASSES, in_channels=3, *, aux_loss=False,
                 weights=None, weights_backbone=None, progress=True, **backbone_shape):
    """Build an untrained FCN-ResNet50 with torchvision's state_dict keys for ``in_channels``.

    Takes torchvision's keyword names so its call sites port unchanged; ``aux_loss=True`` adds
    torchvision's auxiliary head on layer3. Pretrained weights are never downloaded: pass
    ``weights=None`` and load a saved state_dict instead. ``progress`` is accepted and ignored.
    ``backbone_shape`` (``blocks_per_layer``, ``layer_widths``, ``stem_channels``) builds a
    narrower network of the same layout.
    """
    if weights is not None or weights_backbone is not None:
        raise ValueError(
            "fcn_resnet50: pretrained weights are not downloaded; build with weights=None, "
            "weights_backbone=None and load a state_dict, e.g. "
            "model.load_state_dict(torch.load(path, weights_only=True))")
    if num_classes is None:
        num_classes = DEFAULT_NUM_CLASSES
    _check_positive_int("num_classes", num_classes)
    _check_positive_int("in_channels", in_channels)
    aux_loss = bool(aux_loss)
    backbone = ResNetBackbone(in_channels, return_aux=aux_loss, **backbone_shape)
    classifier = FCNHead(backbone.out_channels, num_classes)
    aux_classifier = FCNHead(backbone.out_channels // 2, num_classes) if aux_loss else None
    return FCN(backbone, classifier, aux_classifier)
