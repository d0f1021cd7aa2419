"""Synthetic LEAN norm graphs with the layer structure of MS-D networks and FCN-ResNet50.

The graphs follow the spec's norm-graph rules (nodes = the c_in input channels, then every
output channel of every convolution in network order) and are returned as edge lists in the
orientation of ``graph_algorithms`` (the norm matrix ``A[o, i]``): ``src`` = output-side channel
``o``, ``dst`` = input-side channel ``i``. Norms are random (lognormal), skip edges have weight 1.
"""
from dataclasses import dataclass, field

import numpy as np


@dataclass
class LayeredGraphBuilder:
    """Collects fully connected layers and identity skip edges as edge arrays."""

    rng: np.random.Generator
    log_mean: float = 0.0
    log_sigma: float = 1.0
    dtype: type = np.float32
    n_nodes: int = 0
    parts: list = field(default_factory=list)

    def add_nodes(self, count):
        nodes = np.arange(self.n_nodes, self.n_nodes + count)
        self.n_nodes += count
        return nodes

    def conv(self, in_nodes, out_channels):
        """A convolution from ``in_nodes`` to ``out_channels`` new nodes; returns the new nodes."""
        out_nodes = self.add_nodes(out_channels)
        src = np.repeat(out_nodes, in_nodes.size)
        dst = np.tile(in_nodes, out_nodes.size)
        weight = self.rng.lognormal(self.log_mean, self.log_sigma, src.size).astype(self.dtype)
        self.parts.append((src, dst, weight, np.zeros(src.size, dtype=bool)))
        return out_nodes

    def identity_skip(self, branch_nodes, main_nodes):
        """Unprunable weight-1 edges from channel c of the main branch to channel c of the skip branch."""
        ones = np.ones(main_nodes.size, dtype=self.dtype)
        self.parts.append((main_nodes.copy(), branch_nodes.copy(), ones, np.ones(main_nodes.size, dtype=bool)))

    def edges(self):
        """(n_nodes, src, dst, weight, skip) with all parts concatenated."""
        src, dst, weight, skip = (np.concatenate(column) for column in zip(*self.parts))
        return self.n_nodes, src, dst, weight, skip


def msd_graph(depth, c_in=1, c_out=1, rng=None, log_mean=0.0, log_sigma=1.0):
    """MS-D norm graph: layer k reads all c_in + k earlier channels; the final 1x1 layer reads all."""
    builder = LayeredGraphBuilder(rng if rng is not None else np.random.default_rng(0), log_mean, log_sigma)
    channels = builder.add_nodes(c_in)
    for _ in range(depth):
        channels = np.concatenate([channels, builder.conv(channels, 1)])
    builder.conv(channels, c_out)
    return builder.edges()


RESNET50_BLOCKS = (3, 4, 6, 3)
RESNET50_WIDTHS = (64, 128, 256, 512)


def resnet_graph(c_in=3, stem_width=64, blocks=RESNET50_BLOCKS, widths=RESNET50_WIDTHS, expansion=4,
                 head_width=512, num_classes=21, rng=None, log_mean=0.0, log_sigma=1.0):
    """FCN-ResNet50-like norm graph: stem conv, bottleneck stages with identity skips
    (downsample conv in the first block of each stage), FCN head. The defaults give the
    FCN-ResNet50 sizes (~27k nodes, ~14.4M edges)."""
    builder = LayeredGraphBuilder(rng if rng is not None else np.random.default_rng(0), log_mean, log_sigma)
    channels = builder.conv(builder.add_nodes(c_in), stem_width)
    for n_blocks, width in zip(blocks, widths):
        for block in range(n_blocks):
            hidden = builder.conv(builder.conv(channels, width), width)
            main = builder.conv(hidden, width * expansion)
            shortcut = builder.conv(channels, width * expansion) if block == 0 else channels
            builder.identity_skip(shortcut, main)
            channels = main
    builder.conv(builder.conv(channels, head_width), num_classes)
    return builder.edges()
