"""Small CNNs for the graph-tracing and shrinking tests, with their channel graphs built by hand."""
import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from pruning_toolkit import norm_graph


class BasicBlock(nn.Module):
    """torchvision's ResNet-18 block: two 3x3 conv + BN, projection shortcut when the shape changes."""

    def __init__(self, in_channels, channels, stride=1, identity_first=False):
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, channels, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(channels)
        self.conv2 = nn.Conv2d(channels, channels, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(channels)
        self.relu = nn.ReLU(inplace=True)
        self.downsample = None
        if stride != 1 or in_channels != channels:
            self.downsample = nn.Sequential(nn.Conv2d(in_channels, channels, 1, stride, bias=False),
                                            nn.BatchNorm2d(channels))
        self.identity_first = identity_first

    def forward(self, x):
        identity = x
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        if self.downsample is not None:
            identity = self.downsample(x)
        if self.identity_first:
            return self.relu(identity + out)
        out += identity
        return self.relu(out)


class ResNet18Like(nn.Module):
    """torchvision's ResNet-18 layout (stem, 4 stages of 2 blocks, avgpool, flatten, fc), narrow."""

    def __init__(self, in_channels=1, widths=(4, 6, 8, 10), num_classes=5, identity_first=False):
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, widths[0], 7, 2, 3, bias=False)
        self.bn1 = nn.BatchNorm2d(widths[0])
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool2d(3, 2, 1)
        channels = widths[0]
        for index, width in enumerate(widths):
            stride = 1 if index == 0 else 2
            blocks = [BasicBlock(channels, width, stride, identity_first),
                      BasicBlock(width, width, 1, identity_first)]
            setattr(self, f"layer{index + 1}", nn.Sequential(*blocks))
            channels = width
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(channels, num_classes)

    def forward(self, x):
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
        return self.fc(torch.flatten(self.avgpool(x), 1))


def resnet18_like_graph(model):
    """The spec's graph of ResNet18Like, written out: BN-scaled convs, identity/projection skips."""
    builder = norm_graph._GraphBuilder(model.conv1.in_channels)
    nodes = builder.conv(model.conv1, builder.input_nodes, model.bn1)
    for stage in (model.layer1, model.layer2, model.layer3, model.layer4):
        for block in stage:
            block_input = nodes
            nodes = builder.conv(block.conv1, block_input, block.bn1)
            nodes = builder.conv(block.conv2, nodes, block.bn2)
            skip_from = block_input
            if block.downsample is not None:
                skip_from = builder.conv(block.downsample[0], block_input, block.downsample[1])
            builder.skip(nodes, skip_from)
    return builder.graph()


def double_conv(in_channels, channels):
    return nn.Sequential(nn.Conv2d(in_channels, channels, 3, padding=1, bias=False), nn.BatchNorm2d(channels),
                         nn.ReLU(inplace=True), nn.Conv2d(channels, channels, 3, padding=1, bias=False),
                         nn.BatchNorm2d(channels), nn.ReLU(inplace=True))


class SmallUNet(nn.Module):
    """A two-level U-Net: max-pool down, bilinear up, skip features concatenated after the upsampled ones."""

    def __init__(self, in_channels=1, widths=(4, 6, 8), num_classes=3):
        super().__init__()
        w1, w2, w3 = widths
        self.enc1, self.enc2, self.bottom = double_conv(in_channels, w1), double_conv(w1, w2), double_conv(w2, w3)
        self.dec2, self.dec1 = double_conv(w3 + w2, w2), double_conv(w2 + w1, w1)
        self.final = nn.Conv2d(w1, num_classes, 1)

    def forward(self, x):
        e1 = self.enc1(x)
        e2 = self.enc2(F.max_pool2d(e1, 2))
        bottom = self.bottom(F.max_pool2d(e2, 2))
        up2 = F.interpolate(bottom, scale_factor=2, mode="bilinear", align_corners=False)
        d2 = self.dec2(torch.cat([up2, e2], dim=1))
        up1 = F.interpolate(d2, scale_factor=2, mode="bilinear", align_corners=False)
        d1 = self.dec1(torch.cat([up1, e1], dim=1))
        return self.final(d1)


def small_unet_graph(model):
    """The spec's graph of SmallUNet, written out: a concatenation joins the channel lists."""
    builder = norm_graph._GraphBuilder(model.enc1[0].in_channels)

    def block(convs, nodes):
        nodes = builder.conv(convs[0], nodes, convs[1])
        return builder.conv(convs[3], nodes, convs[4])

    e1 = block(model.enc1, builder.input_nodes)
    e2 = block(model.enc2, e1)
    bottom = block(model.bottom, e2)
    d2 = block(model.dec2, np.concatenate([bottom, e2]))
    d1 = block(model.dec1, np.concatenate([d2, e1]))
    builder.conv(model.final, d1)
    return builder.graph()


def assert_same_graph(expected, got):
    assert got.num_nodes == expected.num_nodes
    assert len(got.layers) == len(expected.layers)
    for want, have in zip(expected.layers, got.layers):
        assert have.module is want.module and have.name == want.name, (want.label, have.label)
        assert have.batchnorm is want.batchnorm, want.label
        np.testing.assert_array_equal(have.in_nodes, want.in_nodes, err_msg=want.label)
        np.testing.assert_array_equal(have.out_nodes, want.out_nodes, err_msg=want.label)
        assert len(have.channel_params) == len(want.channel_params)
        for (m1, n1, e1), (m2, n2, e2) in zip(want.channel_params, have.channel_params):
            assert m1 is m2 and n1 == n2
            np.testing.assert_array_equal(e1, e2)
    np.testing.assert_array_equal(got.skip_edges, expected.skip_edges)


def kept_kernels(graph):
    """(out, in) bool per layer: which convolutions still have a nonzero mask."""
    from pruning_utils import kernel_alive
    return [kernel_alive(layer) for layer in graph.layers]
