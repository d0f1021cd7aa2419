"""Surgery: remove dead channels physically, so that a pruned model is smaller and faster.

Masking (what the pruning methods do) leaves a model as large and slow as before.
:func:`shrink` traces the model (``graph_tracing``), finds the channels that are exactly zero
for every input, and cuts them out of every module that produces or reads them: convolution
rows and columns, BatchNorm entries, biases. MS-D's dense block becomes a
:class:`msd.SparseMSDBlock2d` that keeps only live layers and, for each, only the inputs whose
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
import copy
from dataclasses import dataclass

import numpy as np
import torch
from prettytable import PrettyTable
from scipy.sparse import coo_matrix
from scipy.sparse.csgraph import connected_components
from torch import nn
from torch.nn.utils import prune

from pruning_toolkit import graph_tracing, runtime
from msd import SparseMSDBlock2d
from pruning_toolkit.masks import masked_weight

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


def live_kernels(traced):
    """(out, in) bool: which convolutions of a traced layer are not all zero."""
    weight = masked_weight(traced.layer.module, traced.layer.name)
    return weight.reshape(weight.shape[0], weight.shape[1], -1).ne(0).any(dim=2).cpu().numpy()


def zero_channels(network):
    """Bool over the traced nodes: which channels are exactly zero whatever the input."""
    live = np.zeros(network.num_nodes, dtype=bool)
    live[network.input_nodes] = True
    kernels = [live_kernels(traced) for traced in network.layers]
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
            surgery_of(record.module).restrict(record, keep)
        if np.array_equal(before, keep):
            return keep


# ============================================================================================
# Surgery on one module (a small registry, like the channel rules of graph_tracing)
# ============================================================================================


class Surgery:
    """How to cut channels out of one kind of leaf module; see :func:`register_surgery`.

    ``restrict`` may force more channels to stay (``keep`` is a bool array over graph nodes);
    ``apply`` cuts the module of a :class:`graph_tracing.ModuleRecord` down to the kept channels
    and returns it, or a replacement module."""

    def restrict(self, record, keep):
        pass

    def apply(self, record, keep):
        raise NotImplementedError


SURGERIES = {}


def register_surgery(module_type, surgery):
    """Use ``surgery`` for modules of ``module_type`` (class or "module.QualName") and subclasses."""
    SURGERIES[module_type] = surgery


def surgery_of(module):
    surgery = graph_tracing.registered_for(SURGERIES, module)
    if surgery is not None:
        return surgery
    raise ValueError(f"shrink: no surgery is registered for {type(module).__name__}; "
                     f"register one with shrink.register_surgery")


def _slice_tensor(module, name, keep_per_dim, new_name=None):
    """Replace parameter or buffer ``name`` by its entries kept along each (dim, bool mask);
    a torch.nn.utils.prune mask is sliced the same way and re-applied."""
    def cut(tensor):
        for dim, keep in keep_per_dim:
            tensor = tensor.index_select(dim, torch.from_numpy(np.flatnonzero(keep)).to(tensor.device))
        return tensor

    new_name = new_name or name
    if name in module._buffers:
        module._buffers[new_name] = cut(module._buffers.pop(name))
        return
    mask = getattr(module, name + "_mask", None)
    if mask is not None:
        prune.remove(module, name)
        mask = cut(mask)
    parameter = module._parameters.pop(name)
    module.register_parameter(new_name, nn.Parameter(cut(parameter.detach()).clone(),
                                                     requires_grad=parameter.requires_grad))
    if mask is not None:
        prune.custom_from_mask(module, new_name, mask)


class ConvSurgery(Surgery):
    def restrict(self, record, keep):
        out_nodes = record.data.layer.out_nodes
        if not keep[out_nodes].any():
            keep[out_nodes[0]] = True            # torch has no zero-channel convolution

    def apply(self, record, keep):
        module, layer = record.module, record.data.layer
        out_keep, in_keep = keep[layer.out_nodes], keep[layer.in_nodes]
        _slice_tensor(module, "weight", [(0, out_keep), (1, in_keep)])
        if getattr(module, "bias", None) is not None:
            _slice_tensor(module, "bias", [(0, out_keep)])
        module.out_channels, module.in_channels = int(out_keep.sum()), int(in_keep.sum())
        return module


class BatchNormSurgery(Surgery):
    def apply(self, record, keep):
        module = record.module
        out_keep = keep[record.data.layer.out_nodes]
        names = ["weight", "bias"] if module.affine else []
        names += ["running_mean", "running_var"] if module.running_mean is not None else []
        for name in names:
            _slice_tensor(module, name, [(0, out_keep)])
        module.num_features = int(out_keep.sum())
        return module


class DenseBlockSurgery(Surgery):
    """An MS-D block (dense or sparse) becomes a :class:`SparseMSDBlock2d` of its live layers,
    each reading only its live inputs with a nonzero convolution."""

    def restrict(self, record, keep):
        for traced in record.data[1]:
            out_nodes = traced.layer.out_nodes
            if keep[out_nodes].any():
                keep[out_nodes] = True               # a layer's width channels go together

    def apply(self, record, keep):
        module, (input_nodes, layers) = record.module, record.data
        position = {}                              # node -> index in the new channel list
        for node in input_nodes[keep[input_nodes]].tolist():
            position[node] = len(position)
        kept_layers, layer_inputs, weights = [], [], []
        for k, traced in enumerate(layers):
            if not keep[traced.layer.out_nodes].all():
                continue
            weight = masked_weight(module, f"weight{k}")
            reads = live_kernels(traced).any(axis=0) & keep[traced.layer.in_nodes]
            layer_inputs.append([position[n] for n in traced.layer.in_nodes[reads].tolist()])
            weights.append(weight[:, torch.from_numpy(np.flatnonzero(reads)).to(weight.device)])
            kept_layers.append(k)
            for node in traced.layer.out_nodes.tolist():
                position[node] = len(position)
        block = SparseMSDBlock2d(int(keep[input_nodes].sum()), [module.dilations[k] for k in kept_layers],
                                 layer_inputs, module.width)
        bias = masked_weight(module, "bias").reshape(-1, module.width)[kept_layers].reshape(-1)
        reference = masked_weight(module, "bias")
        block = block.to(device=reference.device, dtype=reference.dtype)
        with torch.no_grad():
            block.bias.copy_(bias)
            for j, weight in enumerate(weights):
                getattr(block, f"weight{j}").copy_(weight)
        return block.train(module.training)


register_surgery(nn.Conv1d, ConvSurgery())
register_surgery(nn.Conv2d, ConvSurgery())
register_surgery(nn.modules.batchnorm._BatchNorm, BatchNormSurgery())
register_surgery("msd.MSDBlock2d", DenseBlockSurgery())
register_surgery(SparseMSDBlock2d, DenseBlockSurgery())


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


def shrink(model, example_input, check=True, rtol=1e-4, atol=1e-5, keep_masks=True):
    """A copy of ``model`` without its dead channels, and a :class:`ShrinkReport`.

    ``example_input``: a tensor (or a tuple of the forward's tensors) to trace with; MACs are
    counted for it. ``check``: compare the outputs of both models on it and raise ValueError
    if they differ beyond the tolerances (e.g. a module that hard-codes a channel count).
    ``keep_masks``: keep the pruning masks of the remaining weights (fine-tuning keeps pruned
    kernels at zero); False bakes them into plain weights, which is faster for inference.
    """
    inputs = graph_tracing.as_inputs(example_input)
    shrunk = copy.deepcopy(model)
    network = graph_tracing.trace(shrunk, inputs)
    keep = channels_to_keep(network)
    params_before = count_parameters(shrunk)
    for record in network.records:
        replacement = surgery_of(record.module).apply(record, keep)
        if replacement is not record.module:
            shrunk = _replace_module(shrunk, record.path, replacement)
    if not keep_masks:
        remove_masks(shrunk)
    after = graph_tracing.trace(shrunk, inputs)
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
