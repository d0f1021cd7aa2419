"""Surgery: remove dead channels physically, so that a pruned model is smaller and faster.

Masking (what the pruning methods do) leaves a model as large and slow as before.
:func:`shrink` traces the model (``graph_tracing``), finds the channels that are exactly zero
for every input, and cuts them out of every module that produces or reads them: convolution
rows and columns, BatchNorm entries, biases (each module by the ``cut`` of its layer rule).
MS-D's dense block becomes a ``SparseMSDBlock2d`` that keeps only live layers and, for each, only the inputs whose
convolution is not pruned (LEAN leaves a few per layer, so this is where MS-D gets faster).
The result computes the same outputs (checked on the example input) with fewer parameters
and MACs.

A channel is zero when all its incoming convolutions from non-zero channels are zero and its
bias / BatchNorm maps 0 to 0 (redundancy pruning arranges exactly that). Channels tied by a
residual addition are removed only together, when they are zero in every branch; model
inputs and outputs and the inputs of operations that end the traced graph (Linear, softmax,
...) keep their shape. Pruning masks of kept weights are kept (sliced), so a shrunk model
fine-tunes like the masked one. BatchNorm is taken in eval mode (running statistics).
"""
from dataclasses import dataclass

import numpy as np
import torch
from prettytable import PrettyTable
from scipy.sparse import coo_matrix
from scipy.sparse.csgraph import connected_components
from torch.nn.utils import prune

from pruning_toolkit import graph_tracing, runtime
from pruning_toolkit.masks import copy_model, masked_weight, nonzero_kernels

# ============================================================================================
# Which channels go
# ============================================================================================


def _channel_offsets(traced):
    """Value of each output channel of a layer when all its inputs are zero (eval mode)."""
    layer = traced.layer
    offset = torch.zeros(len(layer.out_nodes), dtype=torch.float64)
    if traced.bias is not None:
        module, name, entries = traced.bias
        offset = masked_weight(module, name).double().cpu()[torch.from_numpy(entries)]
    bn = layer.batchnorm
    if bn is not None:
        if bn.running_mean is not None:
            offset = (offset - bn.running_mean.double().cpu()) / torch.sqrt(bn.running_var.double().cpu() + bn.eps)
        if bn.affine:
            offset = offset * masked_weight(bn, "weight").double().cpu() + masked_weight(bn, "bias").double().cpu()
    return offset.numpy()


def zero_channels(network):
    """Bool over the traced nodes: which channels are exactly zero whatever the input."""
    live = np.zeros(network.num_nodes, dtype=bool)
    live[network.input_nodes] = True
    kernels = [nonzero_kernels(traced.layer) for traced in network.layers]
    offsets = [_channel_offsets(traced) != 0 for traced in network.layers]
    into, source = network.skip_edges[:, 0], network.skip_edges[:, 1]
    while True:
        before = live.copy()
        for traced, nonzero, offset in zip(network.layers, kernels, offsets):
            layer = traced.layer
            live[layer.out_nodes] |= offset | (nonzero & live[layer.in_nodes][None, :]).any(axis=1)
        np.logical_or.at(live, into, live[source])
        if np.array_equal(before, live):
            return ~live


def channels_to_keep(network):
    """Bool over nodes: the channels the shrunk model keeps (see the module docstring)."""
    removable = zero_channels(network) & ~network.protected
    n, edges = network.num_nodes, network.skip_edges
    links = coo_matrix((np.ones(len(edges)), (edges[:, 0], edges[:, 1])), shape=(n, n))
    _, slot = connected_components(links, directed=False)   # channels joined by residual sums
    keep = ~removable
    while True:
        slot_kept = np.zeros(slot.max() + 1, dtype=bool)
        np.logical_or.at(slot_kept, slot, keep)
        keep = slot_kept[slot]
        before = keep.copy()
        for record in network.records:
            record.rule.restrict(record, keep)
        if np.array_equal(before, keep):
            return keep


# ============================================================================================
# Shrinking a model
# ============================================================================================


@dataclass
class ShrinkReport:
    """Size of the model before and after shrinking (MACs: all convolutions, on the example input)."""

    params_before: int
    params_after: int
    macs_before: int
    macs_after: int
    channels_before: int
    channels_after: int

    def __str__(self):
        table = PrettyTable(["", "before", "after", "after / before"])
        for label, before, after in (("parameters", self.params_before, self.params_after),
                                     ("conv MACs", self.macs_before, self.macs_after),
                                     ("conv output channels", self.channels_before, self.channels_after)):
            table.add_row([label, f"{before:,}", f"{after:,}", f"{after / max(before, 1):.4f}"])
        table.align = "r"
        return table.get_string()


def count_parameters(model):
    """Parameter count (a pruned weight counts once, as its ``_orig``)."""
    return sum(parameter.numel() for parameter in model.parameters())


def _replace_module(root, path, new):
    if not path:
        return new
    parent_path, _, name = path.rpartition(".")
    setattr(root.get_submodule(parent_path) if parent_path else root, name, new)
    return root


@torch.no_grad()
def _outputs(model, inputs):
    with runtime.eval_mode(model):
        return graph_tracing.tensors_in(model(*inputs))


def shrink(model, example_input, check=True, rtol=1e-4, atol=1e-5, keep_masks=True, rules=None):
    """A copy of ``model`` without its dead channels, and a :class:`ShrinkReport`.

    ``example_input``: a tensor (or a tuple of the forward's tensors) to trace with; MACs are
    counted for it. ``check``: compare the outputs of both models on it and raise ValueError
    if they differ beyond the tolerances (e.g. a module that hard-codes a channel count).
    ``keep_masks``: keep the pruning masks of the remaining weights (fine-tuning keeps pruned
    kernels at zero); False bakes them into plain weights, which is faster for inference.
    ``rules``: layer rules of this call (``{type: LayerRule}``), before the registered ones.
    """
    inputs = graph_tracing.as_inputs(example_input)
    shrunk = copy_model(model)
    network = graph_tracing.trace(shrunk, inputs, rules)
    keep = channels_to_keep(network)
    params_before = count_parameters(shrunk)
    for record in network.records:
        replacement = record.rule.cut(record, keep)
        if replacement is not record.module:
            shrunk = _replace_module(shrunk, record.path, replacement)
    if not keep_masks:
        remove_masks(shrunk)
    after = graph_tracing.trace(shrunk, inputs, rules)
    produced = np.concatenate([t.layer.out_nodes for t in network.layers] + [np.zeros(0, dtype=np.int64)])
    report = ShrinkReport(params_before, count_parameters(shrunk), network.conv_macs, after.conv_macs,
                          len(produced), int(keep[produced].sum()))
    if check:
        for expected, got in zip(_outputs(model, inputs), _outputs(shrunk, inputs)):
            # float32 sums in another order differ by rtol relative to the output's scale
            scale = float(expected.abs().max()) if expected.numel() else 0.0
            if expected.shape != got.shape or not torch.allclose(expected, got, rtol=rtol, atol=atol + rtol * scale):
                raise ValueError("shrink: the shrunk model's outputs differ from the original's "
                                 "on the example input (does a module hard-code a channel count?)")
    return shrunk, report


def remove_masks(model):
    """Make every torch.nn.utils.prune mask of ``model`` permanent (plain, zeroed weights)."""
    for module in model.modules():
        for name in [k[:-len("_mask")] for k, _ in module.named_buffers(recurse=False) if k.endswith("_mask")]:
            prune.remove(module, name)
    return model
