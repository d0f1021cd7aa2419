"""The channel graph that LEAN prunes: nodes are channels, edges the convolutions between them.

A :class:`ChannelGraph` says, for every prunable convolution layer, which graph node each of
its input and output channels is, which BatchNorm scales its outputs, which per-channel
parameters (bias, BatchNorm weight and bias) die with an output channel, and which identity
skip edges (value 1, never pruned) residual additions add. Node numbering follows the spec:
the input channels first, then the output channels of every layer in network order.
This module holds the hand-written graphs of MS-D and FCN-ResNet50 and the reference's helpers
over them (``get_convs_MSD``, ``fraction_pruned_convs_ResNet50``, ...); it knows no pruning method.
"""
from dataclasses import dataclass, field

import numpy as np
import torch
from torch import nn

from pruning_toolkit.masks import get_mask, is_pruned, pruned_counts


@dataclass
class ConvLayer:
    """One prunable layer: ``weight[o, i]`` is the convolution from node ``in_nodes[i]`` to ``out_nodes[o]``."""

    module: nn.Module
    name: str
    in_nodes: np.ndarray
    out_nodes: np.ndarray
    batchnorm: nn.Module = None
    # (module, parameter name, entry of each output channel): pruned when the channel dies
    channel_params: list = field(default_factory=list)

    @property
    def label(self):
        return f"{type(self.module).__name__}.{self.name}"


@dataclass
class ChannelGraph:
    num_nodes: int
    input_nodes: np.ndarray
    layers: list
    # (to_node, from_node) pairs in norm-matrix orientation: row = the block's output channel
    skip_edges: np.ndarray = field(default_factory=lambda: np.zeros((0, 2), dtype=np.int64))

    def __post_init__(self):
        self.skip_edges = np.asarray(self.skip_edges, dtype=np.int64).reshape(-1, 2)

    @property
    def num_convolutions(self):
        return sum(len(layer.out_nodes) * len(layer.in_nodes) for layer in self.layers)


def batchnorm_scale(batchnorm):
    """``|gamma| / sqrt(running_var + eps)`` per channel: the factor BatchNorm puts on a channel's operator norm."""
    weight = batchnorm.weight if batchnorm.weight is not None else torch.ones_like(batchnorm.running_var)
    return (weight.detach().abs() / torch.sqrt(batchnorm.running_var + batchnorm.eps)).cpu().double().numpy()


def _nodes(start, count):
    return np.arange(start, start + count, dtype=np.int64)


def msd_channel_graph(model, include_final_layer=True):
    """The graph of an ``msd.MSDSegmentationModel`` (width 1): layer k reads every earlier channel."""
    block = model.msd.msd_block
    c_in, depth = model.c_in, model.depth
    layers = [
        ConvLayer(block, f"weight{k}", _nodes(0, c_in + k), _nodes(c_in + k, 1),
                  channel_params=[(block, "bias", np.array([k]))])
        for k in range(depth)
    ]
    num_nodes = c_in + depth
    if include_final_layer:
        final = model.msd.final_layer.linear
        c_out = final.weight.shape[0] if not hasattr(final, "weight_orig") else final.weight_orig.shape[0]
        params = [(final, "bias", np.arange(c_out))] if final.bias is not None or hasattr(final, "bias_orig") else []
        layers.append(ConvLayer(final, "weight", _nodes(0, c_in + depth), _nodes(num_nodes, c_out),
                                channel_params=params))
        num_nodes += c_out
    return ChannelGraph(num_nodes, _nodes(0, c_in), layers)


class _GraphBuilder:
    """Numbers channels in network order while a hand-written model walk adds its layers."""

    def __init__(self, in_channels):
        self.num_nodes = in_channels
        self.input_nodes = _nodes(0, in_channels)
        self.layers = []
        self.skip_edges = []

    def conv(self, conv, in_nodes, batchnorm=None):
        out_nodes = _nodes(self.num_nodes, conv.out_channels)
        self.num_nodes += conv.out_channels
        if batchnorm is not None:
            params = [(batchnorm, "weight", np.arange(conv.out_channels)),
                      (batchnorm, "bias", np.arange(conv.out_channels))]
        elif conv.bias is not None or hasattr(conv, "bias_orig"):
            params = [(conv, "bias", np.arange(conv.out_channels))]
        else:
            params = []
        self.layers.append(ConvLayer(conv, "weight", in_nodes, out_nodes, batchnorm, params))
        return out_nodes

    def skip(self, into_nodes, from_nodes):
        self.skip_edges.append(np.stack([into_nodes, from_nodes], axis=1))

    def graph(self):
        skips = np.concatenate(self.skip_edges) if self.skip_edges else np.zeros((0, 2), dtype=np.int64)
        return ChannelGraph(self.num_nodes, self.input_nodes, self.layers, skips)


def resnet50_channel_graph(model):
    """The graph of ``fcn_resnet.fcn_resnet50`` (or torchvision's): BN-scaled convs, identity skips.

    A block's output channels are its conv3 (after bn3) nodes; each channel of the skip path
    (the block input, or the downsample conv's nodes) gets a unit skip edge into them.
    """
    if getattr(model, "aux_classifier", None) is not None:
        raise ValueError("resnet50_channel_graph: models with an aux_classifier are not supported; "
                         "build the model with aux_loss=False")
    backbone = model.backbone
    builder = _GraphBuilder(backbone.conv1.in_channels)
    nodes = builder.conv(backbone.conv1, builder.input_nodes, backbone.bn1)
    for layer_name in ("layer1", "layer2", "layer3", "layer4"):
        for block in getattr(backbone, layer_name):
            block_input = nodes
            nodes = builder.conv(block.conv1, block_input, block.bn1)
            nodes = builder.conv(block.conv2, nodes, block.bn2)
            nodes = builder.conv(block.conv3, nodes, block.bn3)
            if block.downsample is not None:
                skip_from = builder.conv(block.downsample[0], block_input, block.downsample[1])
            else:
                skip_from = block_input
            builder.skip(nodes, skip_from)
    head = model.classifier
    nodes = builder.conv(head[0], nodes, head[1])
    builder.conv(head[4], nodes)
    return builder.graph()


# ============================================================================================
# The reference's helpers (pruning_utils' names) over these graphs
# ============================================================================================

def get_convs_MSD(model, include_final_layer=True):
    """The prunable convolution layers of an MS-D network as (module, parameter name) pairs."""
    graph = msd_channel_graph(model, include_final_layer)
    return [(layer.module, layer.name) for layer in graph.layers]


def get_conv_masks_MSD(model, include_final_layer=True):
    """The pruning mask of every MS-D convolution layer (all ones where never pruned)."""
    return [get_mask(module, name) for module, name in get_convs_MSD(model, include_final_layer)]


def fraction_pruned_convs_MSD(model):
    """(pruned, total, fraction) of the MS-D convolutions, final layer included, as the reference."""
    return pruned_counts(msd_channel_graph(model))


def fraction_pruned_convs_MSD3x3(model):
    """(pruned, total, fraction) of the MS-D 3x3 convolutions (the final 1x1 layer left out)."""
    return pruned_counts(msd_channel_graph(model, include_final_layer=False))


fraction_pruned_convs_MSD_3x3 = fraction_pruned_convs_MSD3x3  # the spelling of the *_MSD_3x3 methods


def pruned_before_MSD(model):
    return any(is_pruned(module, name) for module, name in get_convs_MSD(model))


def get_convs_ResNet50(model):
    """Every Conv2d of the FCN-ResNet50 backbone (downsample convs included) and both head
    convs, as (module, "weight") pairs in network order (the reference's form)."""
    return [(layer.module, layer.name) for layer in resnet50_channel_graph(model).layers]


def get_batchnorms_ResNet50(model):
    """The BatchNorm following each convolution of :func:`get_convs_ResNet50` (None for the last)."""
    return [layer.batchnorm for layer in resnet50_channel_graph(model).layers]


def fraction_pruned_convs_ResNet50(model):
    """(pruned, total, fraction) of the FCN-ResNet50 convolutions, as the reference."""
    return pruned_counts(resnet50_channel_graph(model))


def pruned_before_ResNet50(model):
    return any(is_pruned(module, name) for module, name in get_convs_ResNet50(model))
