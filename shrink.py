"""Surgery: remove dead channels physically, so that a pruned model is smaller and faster.

Masking (what the pruning methods do) leaves a model as large and slow as before.
:func:`shrink` traces the model (``graph_tracing``), finds the channels that are exactly zero
for every input, and cuts them out of every module that produces or reads them: the
convolution rows and columns, BatchNorm entries, biases, MS-D dense-block layers. The result
computes the same outputs (checked on the example input) with fewer parameters and MACs.

A channel is zero when all its incoming convolutions from non-zero channels are zero and its
bias / BatchNorm maps 0 to 0 (redundancy pruning arranges exactly that). Channels tied by a
residual addition are removed only together, when they are zero in every branch; model
inputs and outputs and the inputs of operations that end the traced graph (Linear, softmax,
...) keep their shape. Pruning masks of the kept weights are kept (sliced), so a shrunk
model fine-tunes like the masked one. BatchNorm is taken in eval mode (running statistics).
"""
import copy
from dataclasses import dataclass

import numpy as np
import torch
from prettytable import PrettyTable
from scipy.sparse import coo_matrix
from scipy.sparse.csgraph import connected_components

import graph_tracing
from pruning_utils import masked_weight


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
    """Trainable-shape parameters (a pruned weight counts once, as its ``_orig``)."""
    return sum(parameter.numel() for parameter in model.parameters())


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
    kernels, offsets = [], []
    for traced in network.layers:
        weight = masked_weight(traced.layer.module, traced.layer.name)
        kernels.append(weight.reshape(weight.shape[0], weight.shape[1], -1).ne(0).any(dim=2).cpu().numpy())
        offsets.append(_channel_offsets(traced) != 0)
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
    # channels joined by residual additions form one slot: removed together or not at all
    n = network.num_nodes
    edges = network.skip_edges
    links = coo_matrix((np.ones(len(edges)), (edges[:, 0], edges[:, 1])), shape=(n, n))
    _, group = connected_components(links, directed=False)
    keep = ~removable
    while True:
        group_kept = np.zeros(group.max() + 1, dtype=bool)
        np.logical_or.at(group_kept, group, keep)
        keep = group_kept[group]
        before = keep.copy()
        for record in network.records:
            record.rule.restrict(record.data, keep)
        if np.array_equal(before, keep):
            return keep


@torch.no_grad()
def _outputs(model, inputs):
    training = {module: module.training for module in model.modules()}
    model.eval()
    try:
        return graph_tracing.tensors_in(model(*inputs))
    finally:
        for module, mode in training.items():
            module.train(mode)


def shrink(model, example_input, check=True, rtol=1e-4, atol=1e-5):
    """A copy of ``model`` without its dead channels, and a :class:`ShrinkReport`.

    ``example_input``: a tensor (or a tuple of the forward's tensors) to trace with; MACs are
    counted for it. ``check``: compare the outputs of both models on it and raise ValueError
    if they differ beyond the tolerances (e.g. a module that hard-codes a channel count).
    """
    inputs = graph_tracing.as_inputs(example_input)
    shrunk = copy.deepcopy(model)
    network = graph_tracing.trace(shrunk, inputs)
    keep = channels_to_keep(network)
    params_before = count_parameters(shrunk)
    for record in network.records:
        record.rule.shrink(record.module, record.data, keep)
    after = graph_tracing.trace(shrunk, inputs)
    produced = np.concatenate([t.layer.out_nodes for t in network.layers]) if network.layers else np.zeros(0, int)
    report = ShrinkReport(params_before, count_parameters(shrunk), network.conv_macs, after.conv_macs,
                          len(produced), int(keep[produced].sum()))
    if check:
        for expected, got in zip(_outputs(model, inputs), _outputs(shrunk, inputs)):
            if expected.shape != got.shape or not torch.allclose(expected, got, rtol=rtol, atol=atol):
                raise ValueError("shrink: the shrunk model's outputs differ from the original's "
                                 "on the example input (does a module hard-code a channel count?)")
    return shrunk, report
