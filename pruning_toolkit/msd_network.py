"""Mixed-scale dense (MS-D) networks in plain PyTorch, with msd_pytorch's public surface.

msd_pytorch (Hendriksen & Pelt) needs CUDA and is not on PyPI; this module rebuilds its
segmentation model, ``MSDSegmentationModel(c_in, num_labels, depth, width, dilations=...)`` with
``set_normalization``, ``forward``/``learn``, ``train``, ``validate``, ``save``, ``load``, so that
the LEAN examples port line by line and checkpoints written by msd_pytorch 0.9/0.10 load and
predict the same (the root module ``msd`` adds its ``ImageDataset`` and ``get_global_accuracy``).

The hidden layers run as one autograd function over a preallocated, pre-padded channel
buffer (each channel is padded once, when it is written), so a layer is one matrix product
plus nine shifted additions on CPU and GPU alike. Padding is numpy's 'symmetric' mode (the
edge pixel repeats: index -1 reads 0), as msd_pytorch's kernels do; for a dilation larger
than the image, where msd_pytorch reads out of bounds, the mirroring simply continues
(numpy's periodic even extension).
"""
import errno
import functools
import os
import re
from pathlib import Path

import numpy as np
import torch
from torch import nn
from torch.autograd.function import once_differentiable

from pruning_toolkit import files, masks
from pruning_toolkit.layer_rules import LayerRule, register_layer_rule
from pruning_toolkit.masks import masked_weight, nonzero_kernels
from pruning_toolkit.runtime import resolve_device

DEFAULT_DILATIONS = (1, 2, 3, 4, 5, 6, 7, 8, 9, 10)
# A pruned layer reads the list of its live inputs (a copy) instead of all earlier channels (a
# view) when fewer than this fraction of them are live, and only while the whole block reads
# less than DENSE_BLOCK_ABOVE of what the dense block reads; measured with benchmarks/bench_msd.py.
SPARSE_READ_BELOW = 0.25
DENSE_BLOCK_ABOVE = 0.6
# On the CPU, a layer reading at most this many channels runs the compiled kernels of
# pruning_toolkit.msd_kernels (9 n multiply-adds per pixel, no per-tap image passes), measured
# with benchmarks/bench_msd.py --compiled-reads; None: the environment variable
# PRUNING_TOOLKIT_COMPILED_READS (0: never), else 8.
COMPILED_READS_UP_TO = None
COMPILED_READ_FRACTION = 0.7   # ... and any layer reading at most this fraction of its inputs
COMPILED_READS_ENV = "PRUNING_TOOLKIT_COMPILED_READS"
USE_COMPILED_KERNELS = True

__all__ = [
    "MSDBlock2d",
    "SparseMSDBlock2d",
    "MSDFinalLayer",
    "MSDModule2d",
    "MSDSegmentationModel",
    "symmetric_index",
    "resolve_device",
]


# --------------------------------------------------------------------------- helpers
def symmetric_index(n, pad, device=None):
    """Source index of every position of a length-``n`` axis padded by ``pad`` on each side
    in numpy's 'symmetric' mode (-1 -> 0, -2 -> 1, n -> n-1; continues for pad > n)."""
    positions = torch.arange(-pad, n + pad, device=device)
    folded = torch.remainder(positions, 2 * n)
    return torch.where(folded >= n, 2 * n - 1 - folded, folded)


def _fill_border(padded, pad, rows, cols):
    """Fill the border of ``padded`` (..., H + 2p, W + 2p), whose interior is written,
    by symmetric padding (``rows``/``cols``: source index of each padded position)."""
    height, width = padded.shape[-2] - 2 * pad, padded.shape[-1] - 2 * pad
    inner = padded[..., pad:pad + height, pad:pad + width]
    padded[..., :pad, pad:pad + width] = inner.index_select(-2, rows[:pad])
    padded[..., pad + height:, pad:pad + width] = inner.index_select(-2, rows[pad + height:])
    columns = padded[..., pad:pad + width]
    padded[..., :pad] = columns.index_select(-1, cols[:pad])
    padded[..., pad + width:] = columns.index_select(-1, cols[pad + width:])


def _fold_border(grad_padded, pad, rows, cols):
    """Adjoint of padding followed by ``_fill_border``: the gradient of the interior, each
    border position's gradient added to its source pixel."""
    height, width = grad_padded.shape[-2] - 2 * pad, grad_padded.shape[-1] - 2 * pad
    by_columns = grad_padded[..., pad:pad + width].clone()
    by_columns.index_add_(-1, cols[:pad], grad_padded[..., :pad])
    by_columns.index_add_(-1, cols[pad + width:], grad_padded[..., pad + width:])
    folded = by_columns[..., pad:pad + height, :].clone()
    folded.index_add_(-2, rows[:pad], by_columns[..., :pad, :])
    folded.index_add_(-2, rows[pad + height:], by_columns[..., pad + height:, :])
    return folded


def _tap_offsets(pad, dilation):
    """Top-left corners, in padded coordinates, of the nine taps of a dilated 3x3 kernel."""
    return [(a, b, pad + (a - 1) * dilation, pad + (b - 1) * dilation)
            for a in range(3) for b in range(3)]


def _spread_over_taps(planes, grad, pad, dilation):
    """Fill ``planes`` (3, 3, ..., H + 2p, W + 2p) with ``grad`` (..., H, W) placed at each tap's
    window and zeros elsewhere (the layout in which one matrix product gives the gradients of all
    nine taps); only the border around each window is zeroed, so the planes can be reused."""
    height, width = grad.shape[-2:]
    for a, b, top, left in _tap_offsets(pad, dilation):
        plane = planes[a, b]
        plane[..., :top, :] = 0
        plane[..., top + height:, :] = 0
        rows = plane[..., top:top + height, :]
        rows[..., :left] = 0
        rows[..., left + width:] = 0
        rows[..., left:left + width] = grad
    return planes


def _compiled_limit(device):
    """``compiled_reads_up_to()`` for layers on ``device``; 0 where the kernels cannot run."""
    if not USE_COMPILED_KERNELS or device.type != "cpu" or _msd_kernels_module() is None:
        return 0
    return compiled_reads_up_to()


def _on_compiled_kernels(count, channels, limit):
    """Whether a layer reading ``count`` of its ``channels`` earlier channels runs the compiled
    kernels: a few channels, or a small enough part of them (limit 0: never)."""
    return limit > 0 and (count <= limit or count <= COMPILED_READ_FRACTION * channels)


def _choose_reads(live_inputs, compiled_limit, device):
    """What each layer reads (None: every earlier channel, else the list of live ones), from
    the bool vectors ``live_inputs``: the list wherever the compiled kernels run; on matrix
    products, the list only where a layer reads few of its inputs and the block as a whole is
    pruned enough for the copies to pay (``SPARSE_READ_BELOW``, ``DENSE_BLOCK_ABOVE``)."""
    counts = [int(live.sum()) for live in live_inputs]
    compiled = [_on_compiled_kernels(count, live.numel(), compiled_limit) for live, count in zip(live_inputs, counts)]
    on_matrices = [k for k, on_kernels in enumerate(compiled) if not on_kernels]
    live_total = sum(counts[k] for k in on_matrices)
    dense_total = sum(live_inputs[k].numel() for k in on_matrices)
    block_dense = live_total >= DENSE_BLOCK_ABOVE * dense_total
    reads = []
    for live, count, on_kernels in zip(live_inputs, counts, compiled):
        listed = on_kernels or (not block_dense and count < SPARSE_READ_BELOW * live.numel())
        reads.append(live.nonzero().flatten().to(device) if listed else None)
    return reads


def _compiled_kernels(tensor, read, channels):
    """pruning_toolkit.msd_kernels when a layer reading ``read`` of its ``channels`` earlier
    channels should use them (:func:`_on_compiled_kernels`), else None."""
    if read is None or not _on_compiled_kernels(read.numel(), channels, _compiled_limit(tensor.device)):
        return None
    return _msd_kernels_module()


def compiled_reads_up_to():
    """The most listed channels a layer may read and still run the compiled kernels."""
    return _compiled_reads_from_environment() if COMPILED_READS_UP_TO is None else COMPILED_READS_UP_TO


@functools.lru_cache(maxsize=None)
def _compiled_reads_from_environment(default=8):
    text = os.environ.get(COMPILED_READS_ENV, "").strip()
    if not text:
        return default
    if not text.isdigit():
        raise ValueError(f"{COMPILED_READS_ENV}={text!r}: expected a whole number of channels (0: never)")
    return int(text)


@functools.lru_cache(maxsize=None)
def _msd_kernels_module():
    """pruning_toolkit.msd_kernels, imported once (numba loads slowly), or None without numba."""
    try:
        from pruning_toolkit import msd_kernels
    except ImportError:  # numba missing: the matrix-product path computes the same
        return None
    return msd_kernels


def _layer_source(buffer, c, read):
    """The channels layer reads, as a matrix (channels, B * padded pixels): the first ``c``
    channels of the buffer (``read`` None, no copy) or those listed in ``read``."""
    if read is None:
        return buffer[:c].reshape(c, -1)
    return buffer.index_select(0, read).reshape(read.numel(), -1)


def _products_summed_over_pixels(left, right, chunk=4096):
    """``left @ right.T`` for row-major (rows, pixels) matrices: a layer's weight gradient. On the
    CPU the long sum over pixels runs as one small product per chunk of pixels, then a sum (a
    single product with a tiny output uses the cores poorly; bench_msd.py measures it)."""
    pixels = left.shape[1]
    chunks = pixels // chunk
    if left.device.type != "cpu" or chunks < 2 or left.stride(1) != 1 or right.stride(1) != 1:
        return torch.mm(left, right.t())
    left_chunks = left.as_strided((chunks, left.shape[0], chunk), (chunk, left.stride(0), 1))
    right_chunks = right.as_strided((chunks, chunk, right.shape[0]), (chunk, 1, right.stride(0)))
    total = torch.bmm(left_chunks, right_chunks).sum(0)
    if chunks * chunk < pixels:
        total += torch.mm(left[:, chunks * chunk:], right[:, chunks * chunk:].t())
    return total


class _MSDBlockFunction(torch.autograd.Function):
    """All hidden layers of an MS-D network: x_k = relu(conv_{d_k}(inputs of k) + b_k).

    ``reads[k]`` is None when layer k reads every earlier channel (the dense MS-D layer; its
    weight has them all), or a 1-D index tensor of the earlier channels it reads (its weight
    has only those columns): the live channels of a pruned or shrunk network, so a layer costs
    what it reads. A layer that reads nothing outputs relu(bias).

    The buffer is channel-major (C, B, H + 2p, W + 2p), p = max dilation, so the channels seen
    by a layer form one matrix (c, B * padded pixels): one matrix product for the nine taps,
    then nine shifted additions, on CPU and GPU alike."""

    @staticmethod
    def forward(ctx, input, dilations, reads, bias, *weights):
        batch, c_in, height, width_px = input.shape
        layer_width = bias.shape[0] // len(weights)
        pad = max(dilations)
        rows = symmetric_index(height, pad, input.device)
        cols = symmetric_index(width_px, pad, input.device)
        c_total = c_in + layer_width * len(weights)
        buffer = input.new_empty(c_total, batch, height + 2 * pad, width_px + 2 * pad)
        interior = buffer[:, :, pad:pad + height, pad:pad + width_px]
        interior[:c_in] = input.transpose(0, 1)
        _fill_border(buffer[:c_in], pad, rows, cols)

        for k, (weight, dilation, read) in enumerate(zip(weights, dilations, reads)):
            c = c_in + k * layer_width
            layer_bias = bias[k * layer_width:(k + 1) * layer_width].view(-1, 1, 1, 1)
            if weight.shape[1] == 0:
                buffer[c:c + layer_width] = layer_bias.relu()
                continue
            kernels = _compiled_kernels(buffer, read, c)
            if kernels is not None:
                kernels.layer_forward(buffer.numpy(), read.numpy(), weight.detach().contiguous().numpy(),
                                      layer_bias.detach().reshape(-1).numpy(), c, pad, dilation, height, width_px)
                _fill_border(buffer[c:c + layer_width], pad, rows, cols)
                continue
            taps = weight.permute(2, 3, 0, 1).reshape(9 * layer_width, weight.shape[1])
            responses = torch.mm(taps, _layer_source(buffer, c, read))
            responses = responses.view(3, 3, layer_width, *buffer.shape[1:])
            layer_out = interior[c:c + layer_width]
            for tap, (a, b, top, left) in enumerate(_tap_offsets(pad, dilation)):
                window = responses[a, b, :, :, top:top + height, left:left + width_px]
                if tap == 0:
                    torch.add(window, layer_bias, out=layer_out)
                else:
                    layer_out += window
            layer_out.relu_()
            _fill_border(buffer[c:c + layer_width], pad, rows, cols)

        ctx.save_for_backward(buffer, bias, *weights)
        ctx.reads = reads
        ctx.geometry = (c_in, layer_width, pad, height, width_px, tuple(dilations))
        return interior.transpose(0, 1).contiguous()

    @staticmethod
    @once_differentiable
    def backward(ctx, grad_output):
        buffer, bias, *weights = ctx.saved_tensors
        reads = ctx.reads
        c_in, layer_width, pad, height, width_px, dilations = ctx.geometry
        need_input_grad = ctx.needs_input_grad[0]
        rows = symmetric_index(height, pad, buffer.device)
        cols = symmetric_index(width_px, pad, buffer.device)
        grad_channels = grad_output.transpose(0, 1)
        grad_padded = torch.zeros_like(buffer)
        grad_bias = buffer.new_zeros(layer_width * len(weights))
        grad_weights = [None] * len(weights)
        first_channel = 0 if need_input_grad else c_in
        spread_planes = None

        for k in reversed(range(len(weights))):
            c, read, weight = c_in + k * layer_width, reads[k], weights[k]
            layer_bias = bias[k * layer_width:(k + 1) * layer_width]
            if weight.shape[1] == 0:
                if ctx.needs_input_grad[4 + k]:
                    grad_weights[k] = torch.zeros_like(weight)
                if not (layer_bias > 0).any():
                    continue          # a constant zero channel: no gradient reaches its bias
            grad_out_k = _fold_border(grad_padded[c:c + layer_width], pad, rows, cols)
            grad_out_k += grad_channels[c:c + layer_width]
            activation = buffer[c:c + layer_width, :, pad:pad + height, pad:pad + width_px]
            grad_out_k.mul_(activation > 0)
            grad_bias[k * layer_width:(k + 1) * layer_width] = grad_out_k.sum((1, 2, 3))
            if weight.shape[1] == 0 or (k == 0 and not need_input_grad and not ctx.needs_input_grad[4]):
                continue
            kernels = _compiled_kernels(buffer, read, c)
            if kernels is not None:
                if ctx.needs_input_grad[4 + k]:
                    grad_weights[k] = torch.from_numpy(kernels.weight_gradient(
                        buffer.numpy(), read.numpy(), grad_out_k.numpy(), pad, dilations[k]))
                kernels.input_gradient(grad_padded.numpy(), read.numpy(), weight.contiguous().numpy(),
                                       grad_out_k.numpy(), pad, dilations[k], first_channel)
                continue
            if spread_planes is None:
                spread_planes = buffer.new_empty(3, 3, layer_width, *buffer.shape[1:])
            spread = _spread_over_taps(spread_planes, grad_out_k, pad, dilations[k]).view(9 * layer_width, -1)
            if ctx.needs_input_grad[4 + k]:
                grad_taps = _products_summed_over_pixels(spread, _layer_source(buffer, c, read))
                grad_weights[k] = grad_taps.view(3, 3, layer_width, -1).permute(2, 3, 0, 1)
            taps = weight.permute(2, 3, 0, 1).reshape(9 * layer_width, weight.shape[1])
            if read is None:
                if c > first_channel:
                    grad_padded[first_channel:c].view(c - first_channel, -1).addmm_(
                        taps[:, first_channel:].t(), spread)
            else:
                wanted = read >= first_channel
                if bool(wanted.all()):
                    grad_padded.index_add_(0, read, torch.mm(taps.t(), spread).view(-1, *buffer.shape[1:]))
                elif bool(wanted.any()):
                    grad_padded.index_add_(0, read[wanted], torch.mm(taps[:, wanted].t(), spread)
                                           .view(-1, *buffer.shape[1:]))

        grad_input = None
        if need_input_grad:
            grad_input = _fold_border(grad_padded[:c_in], pad, rows, cols)
            grad_input = (grad_input + grad_channels[:c_in]).transpose(0, 1)
        if not ctx.needs_input_grad[3]:
            grad_bias = None
        return (grad_input, None, None, grad_bias, *grad_weights)


# --------------------------------------------------------------------------- modules
class MSDBlock2d(nn.Module):
    """The hidden layers of an MS-D network; output: the input and all layer outputs,
    ``in_channels + width * len(dilations)`` channels.

    Parameters ``bias`` (depth * width,) and ``weight{k}`` (width, in_channels + width*k, 3, 3)
    are read with getattr at forward time, so torch.nn.utils.prune masks take effect. Once
    pruned, a layer computes only with its live inputs (see :meth:`live_reads`): the same
    outputs and gradients as the dense masked layer, at the cost of what is alive."""

    def __init__(self, in_channels, dilations, width=1):
        super().__init__()
        self.in_channels = in_channels
        self.dilations = list(dilations)
        self.width = width
        self.depth = len(self.dilations)
        self.bias = nn.Parameter(torch.empty(self.depth * width))
        for k in range(self.depth):
            shape = (width, in_channels + width * k, 3, 3)
            self.register_parameter(f"weight{k}", nn.Parameter(torch.empty(shape)))
        self._reads_cache = None
        self.reset_parameters()

    def reset_parameters(self):
        for k in range(self.depth):
            nn.init.kaiming_uniform_(self._parameter_or_original(f"weight{k}"), a=np.sqrt(5))
        bound = 1 / np.sqrt(9 * self.in_channels)
        nn.init.uniform_(self._parameter_or_original("bias"), -bound, bound)

    def _parameter_or_original(self, name):
        """The trainable tensor behind ``name`` (``name_orig`` once pruned)."""
        original = getattr(self, name + "_orig", None)
        return getattr(self, name) if original is None else original

    def live_reads(self):
        """Per layer: None (read every earlier channel) or the index tensor of the earlier
        channels it must read, from the pruning masks alone (so training keeps it exact).

        A channel is constant zero when its bias is pruned and every unpruned kernel into it
        reads a constant-zero channel; kernels from such channels contribute nothing and get
        zero gradients, so they are not read. Layers reading few channels get their list on the
        CPU's compiled kernels even when unpruned; the others read a list only when the block
        is pruned enough for the copy to pay. Cached until a mask or a setting changes."""
        masks = [getattr(self, f"weight{k}_mask", None) for k in range(self.depth)]
        masks.append(getattr(self, "bias_mask", None))
        device = self.bias.device
        compiled_limit = _compiled_limit(device)
        settings = (SPARSE_READ_BELOW, DENSE_BLOCK_ABOVE, COMPILED_READ_FRACTION, compiled_limit, device)
        key = [(mask, mask._version) for mask in masks if mask is not None]
        cached = self._reads_cache
        if cached is not None and cached[0] == settings and len(cached[1]) == len(key) and all(
                a is b and va == vb for (a, va), (b, vb) in zip(cached[1], key)):
            return cached[2]
        with torch.inference_mode(False):   # the lists index weights in later autograd passes too
            reads = _choose_reads(self._live_inputs(masks), compiled_limit, device)
        self._reads_cache = (settings, key, reads)
        return reads

    def _live_inputs(self, masks):
        """Per layer, a bool vector over its earlier channels: read through a live kernel."""
        *weight_masks, bias_mask = masks
        bias_live = None if bias_mask is None else bias_mask.detach().ne(0).cpu()
        constant_zero = torch.zeros(self.in_channels + self.width * self.depth, dtype=torch.bool)
        inputs = []
        for k, mask in enumerate(weight_masks):
            c = self.in_channels + self.width * k
            live = (torch.ones(self.width, c, dtype=torch.bool) if mask is None
                    else mask.detach().reshape(self.width, c, -1).ne(0).any(2).cpu())
            live &= ~constant_zero[:c]
            if bias_live is not None:
                constant_zero[c:c + self.width] = ~live.any(1) & ~bias_live[k * self.width:(k + 1) * self.width]
            inputs.append(live.any(0))
        return inputs

    def forward(self, input):
        if input.dim() != 4 or input.shape[1] != self.in_channels:
            raise ValueError(f"MS-D block expects input (batch, {self.in_channels}, H, W), "
                             f"got {tuple(input.shape)}")
        reads = self.live_reads()
        weights = [getattr(self, f"weight{k}") for k in range(self.depth)]
        weights = [weight if read is None else weight.index_select(1, read)
                   for weight, read in zip(weights, reads)]
        return _MSDBlockFunction.apply(input, tuple(self.dilations), reads, self.bias, *weights)


class SparseMSDBlock2d(nn.Module):
    """MS-D hidden layers with explicit connectivity: layer k reads only the channels
    ``layer_inputs[k]`` (indices into the list [inputs, layer 0, layer 1, ...]) with a dilated
    3x3 convolution on symmetric padding, bias and ReLU, as :class:`MSDBlock2d`, whose kernels
    it shares. Output: the inputs and all layer outputs. What a pruned MS-D block becomes after
    ``shrink``: it trains and infers at the cost of what it keeps."""

    def __init__(self, in_channels, dilations, layer_inputs, width=1):
        super().__init__()
        if len(layer_inputs) != len(dilations):
            raise ValueError(f"SparseMSDBlock2d: {len(dilations)} dilations but {len(layer_inputs)} input lists")
        self.in_channels, self.width = in_channels, width
        self.dilations = [int(d) for d in dilations]
        self.depth = len(self.dilations)
        self.layer_inputs = [[int(i) for i in inputs] for inputs in layer_inputs]
        for k, inputs in enumerate(self.layer_inputs):
            if any(not 0 <= i < in_channels + width * k for i in inputs):
                raise ValueError(f"SparseMSDBlock2d: layer {k} reads a channel that is not an earlier one")
            self.register_parameter(f"weight{k}", nn.Parameter(torch.zeros(width, len(inputs), 3, 3)))
        self.bias = nn.Parameter(torch.zeros(self.depth * width))
        self._read_index = {}

    def extra_repr(self):
        return (f"in_channels={self.in_channels}, depth={self.depth}, width={self.width}, "
                f"inputs per layer={[len(i) for i in self.layer_inputs]}")

    def _reads(self, device):
        if device not in self._read_index:
            self._read_index[device] = [torch.tensor(inputs, dtype=torch.long, device=device)
                                        for inputs in self.layer_inputs]
        return self._read_index[device]

    def forward(self, input):
        if input.dim() != 4 or input.shape[1] != self.in_channels:
            raise ValueError(f"SparseMSDBlock2d expects input (batch, {self.in_channels}, H, W), "
                             f"got {tuple(input.shape)}")
        if self.depth == 0:
            return input
        weights = [getattr(self, f"weight{k}") for k in range(self.depth)]
        return _MSDBlockFunction.apply(input, tuple(self.dilations), self._reads(input.device), self.bias, *weights)


# --------------------------------------------------------------------------- layer rule
class DenseBlockRule(LayerRule):
    """A densely connected block such as MS-D's ``MSDBlock2d``.

    The block's channel list is its ``in_channels`` inputs, then ``width`` channels per layer.
    Layer k (k < ``module.depth``) convolves the earlier channels of that list with parameter
    ``weight{k}`` and adds ``bias[k * width:(k + 1) * width]`` (then a ReLU); the output is the
    whole list. Layer k reads all earlier channels, or only ``module.layer_inputs[k]`` (indices
    into the list) when the module has that attribute (:class:`SparseMSDBlock2d`). Shrinking
    makes the block a :class:`SparseMSDBlock2d` of its live layers, each reading only its live
    inputs with a nonzero convolution."""

    def trace(self, tracer, module, path, inputs, output):
        source = tracer.single_input(inputs, module, path)
        width, sparse = module.width, getattr(module, "layer_inputs", None)
        tracer.read(source, f"{type(module).__name__} '{path}'")
        nodes, layers = source.nodes, []
        for k in range(module.depth):
            bias = (module, "bias", np.arange(k * width, (k + 1) * width))
            read = nodes if sparse is None else nodes[np.asarray(sparse[k], dtype=np.int64)]
            layer_input = tracer.new_value(read, source.depth + k)
            traced = tracer.add_layer(module, f"weight{k}", layer_input, f"{path}.weight{k}", output,
                                      bias=bias, channel_params=[bias])
            layers.append(traced)
            nodes = np.concatenate([nodes, traced.layer.out_nodes])
        tracer.record(self, module, path, (source.nodes, layers))
        return tracer.new_value(nodes, source.depth + module.depth)

    def explain(self, explainer, module, inputs, output):
        """The block's layers one by one in plain torch ops (symmetric padding by gathering, a
        dilated convolution, ReLU), each weighted layer through ``explainer.weighted`` (LRP)."""
        x = inputs[0]
        sparse, width = getattr(module, "layer_inputs", None), module.width
        bias = masked_weight(module, "bias")
        channels = x
        for k, dilation in enumerate(module.dilations):
            read = channels if sparse is None else channels[:, torch.as_tensor(sparse[k], dtype=torch.long)]
            rows = symmetric_index(x.shape[2], dilation, x.device)
            cols = symmetric_index(x.shape[3], dilation, x.device)
            padded = read.index_select(2, rows).index_select(3, cols)
            layer_output = explainer.weighted(module, f"weight{k}", padded, functools.partial(_dilated, dilation=dilation),
                                              bias=bias[k * width:(k + 1) * width])
            channels = torch.cat([channels, layer_output.relu()], 1)
        return channels

    def restrict(self, record, keep):
        for traced in record.data[1]:
            out_nodes = traced.layer.out_nodes
            if keep[out_nodes].any():
                keep[out_nodes] = True               # a layer's width channels go together

    def cut(self, record, keep):
        module, (input_nodes, layers) = record.module, record.data
        position = {}                              # node -> index in the new channel list
        for node in input_nodes[keep[input_nodes]].tolist():
            position[node] = len(position)
        kept_layers, layer_inputs, weights = [], [], []
        for k, traced in enumerate(layers):
            if not keep[traced.layer.out_nodes].all():
                continue
            weight = masked_weight(module, f"weight{k}")
            reads = nonzero_kernels(traced.layer).any(axis=0) & keep[traced.layer.in_nodes]
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


DENSE_BLOCK_RULE = DenseBlockRule()
register_layer_rule(MSDBlock2d, DENSE_BLOCK_RULE)
register_layer_rule(SparseMSDBlock2d, DENSE_BLOCK_RULE)


def _dilated(input, weight, bias, dilation):
    return nn.functional.conv2d(input, weight, bias, dilation=dilation)


def _pointwise(weight, bias, input):
    """1x1 convolution of ``input`` (B, C, N) as one batched matrix product (no copies)."""
    output = torch.bmm(weight.expand(input.shape[0], -1, -1), input)
    return output if bias is None else output.add_(bias[:, None])


class _PointwiseConv1d(nn.Conv1d):
    """A kernel-size-1 Conv1d computed as a batched matrix product (avoids torch's
    unfold-and-copy CPU path); same parameters, pruning hooks and state_dict."""

    def forward(self, input):
        return _pointwise(self.weight[:, :, 0], self.bias, input)


class _PointwiseConv2d(nn.Conv2d):
    """A 1x1 Conv2d computed as a batched matrix product over the flattened pixels."""

    def forward(self, input):
        batch, channels, *size = input.shape
        output = _pointwise(self.weight[:, :, 0, 0], self.bias,
                            input.reshape(batch, channels, -1))
        return output.view(batch, self.out_channels, *size)


class MSDFinalLayer(nn.Module):
    """The final 1x1 layer over all channels, stored as msd_pytorch does: a Conv1d
    (``linear``, weight (c_out, c_in, 1)) over the flattened pixels; zero-initialised."""

    def __init__(self, c_in, c_out):
        super().__init__()
        self.c_in, self.c_out = c_in, c_out
        self.linear = _PointwiseConv1d(c_in, c_out, 1)
        self.reset_parameters()

    def reset_parameters(self):
        nn.init.zeros_(self.linear.weight)
        nn.init.zeros_(self.linear.bias)

    def forward(self, input):
        batch, channels, *size = input.shape
        output = self.linear(input.reshape(batch, channels, -1))
        return output.view(batch, self.c_out, *size)


class MSDModule2d(nn.Module):
    """An MS-D network: ``msd_block`` (hidden layers) followed by ``final_layer``.

    Dilations repeat when ``depth`` exceeds their number; hidden weights are drawn from
    N(0, 2 / (9 * (c_in + width * (depth - 1)) + c_out)) (Pelt & Sethian), biases and the
    final layer start at zero, as in msd_pytorch."""

    def __init__(self, c_in, c_out, depth, width, dilations=DEFAULT_DILATIONS):
        super().__init__()
        _check_architecture(c_in, c_out, depth, width, dilations)
        self.c_in, self.c_out = c_in, c_out
        self.depth, self.width = depth, width
        self.dilations = [dilations[k % len(dilations)] for k in range(depth)]
        self.msd_block = MSDBlock2d(c_in, self.dilations, width)
        self.final_layer = MSDFinalLayer(c_in + width * depth, c_out)
        self.reset_parameters()

    def reset_parameters(self):
        fan_in = 9 * (self.c_in + self.width * (self.depth - 1)) + self.c_out
        with torch.no_grad():
            for k in range(self.depth):
                self.msd_block._parameter_or_original(f"weight{k}").normal_(0, np.sqrt(2 / fan_in))
            self.msd_block._parameter_or_original("bias").zero_()
        self.final_layer.reset_parameters()

    def forward(self, input):
        return self.final_layer(self.msd_block(input))


def _check_architecture(c_in, c_out, depth, width, dilations):
    for name, value in (("c_in", c_in), ("num_labels/c_out", c_out), ("depth", depth),
                        ("width", width)):
        if not isinstance(value, (int, np.integer)) or value < 1:
            raise ValueError(f"MS-D {name} must be a positive integer, got {value!r}")
    if len(dilations) == 0 or any(int(d) != d or d < 1 for d in dilations):
        raise ValueError(f"MS-D dilations must be positive integers, got {list(dilations)}")


def _scaling_module(c_in):
    """Fixed 1x1 input scaling (not trained, saved with the network); starts as identity.

    msd_pytorch fills the whole (c_in, c_in) matrix, which mixes channels when c_in > 1;
    we keep it diagonal. For c_in = 1 the two agree, and loaded weights are used as stored."""
    scale = _PointwiseConv2d(c_in, c_in, 1)
    with torch.no_grad():
        scale.weight.copy_(torch.eye(c_in).view(c_in, c_in, 1, 1))
        scale.bias.zero_()
    scale.weight.requires_grad_(False)
    scale.bias.requires_grad_(False)
    return scale


# --------------------------------------------------------------------------- model
class MSDSegmentationModel:
    """An MS-D network for segmentation with msd_pytorch's interface.

    ``net`` = Sequential(scale_in, Sequential(msd, LogSoftmax)); loss NLLLoss; Adam on
    everything but scale_in. ``device``: None/"auto" (CUDA when available), "cpu", "cuda"."""

    def __init__(self, c_in, num_labels, depth, width, *, dilations=DEFAULT_DILATIONS,
                 parallel=False, device=None):
        self.device = resolve_device(device)
        self.c_in, self.c_out = c_in, num_labels
        self.num_labels = num_labels
        self.depth, self.width = depth, width
        self.dilations = list(dilations)
        self.scale_in = _scaling_module(c_in)
        self.msd = MSDModule2d(c_in, num_labels, depth, width, self.dilations)
        self.criterion = nn.NLLLoss()
        net_trained = nn.Sequential(self.msd, nn.LogSoftmax(dim=1))
        self.net = nn.Sequential(self.scale_in, net_trained).to(self.device)
        self._plain_net = self.net
        if parallel and self.device.type == "cuda" and torch.cuda.device_count() > 1:
            self.net = nn.DataParallel(self.net)
        self.optimizer = torch.optim.Adam(net_trained.parameters())
        self.input = self.target = self.output = self.loss = None

    # ---- data
    def set_normalization(self, dataloader):
        """Make scale_in map the training inputs to mean 0, std 1 (mean over batches of each
        batch's mean and mean square, as msd_pytorch)."""
        batch_means, batch_squares = [], []
        for data_in, _ in dataloader:
            data_in = data_in.double()
            batch_means.append(data_in.mean().item())
            batch_squares.append(data_in.pow(2).mean().item())
        if not batch_means:
            raise ValueError("set_normalization: the dataloader yielded no data")
        mean = float(np.mean(batch_means))
        std = float(np.sqrt(max(np.mean(batch_squares) - mean ** 2, 0.0)))
        if not std > 0:
            raise ValueError("set_normalization: the training inputs are constant (std 0)")
        with torch.no_grad():
            self.scale_in.weight.copy_(torch.eye(self.c_in).view(self.c_in, self.c_in, 1, 1)
                                       / std)
            self.scale_in.bias.fill_(-mean / std)

    def set_input(self, data):
        if data.dim() != 4 or data.shape[1] != self.c_in:
            raise ValueError(f"input must be (batch, {self.c_in}, H, W), got {tuple(data.shape)}")
        self.input = data.to(self.device, self.scale_in.weight.dtype)

    def set_target(self, data):
        target = data.to(self.device).long()
        if target.dim() == 4:
            if target.shape[1] != 1:
                raise ValueError(f"segmentation target must have one channel, got "
                                 f"{tuple(data.shape)}")
            target = target.squeeze(1)
        low, high = int(target.min()), int(target.max())
        if low < 0 or high >= self.num_labels:
            raise ValueError(f"target labels must lie in [0, {self.num_labels - 1}], got "
                             f"[{low}, {high}]")
        self.target = target

    # ---- training
    def forward(self, input=None, target=None):
        """Compute output and loss for one batch (earlier input/target reused when None);
        returns the loss as a float."""
        if input is not None:
            self.set_input(input)
        if target is not None:
            self.set_target(target)
        self.output = self.net(self.input)
        self.loss = self.criterion(self.output, self.target)
        return self.loss.item()

    def learn(self, input=None, target=None):
        """One Adam step on one batch; returns the loss before the step."""
        loss = self.forward(input, target)
        self.optimizer.zero_grad()
        self.loss.backward()
        self.optimizer.step()
        return loss

    def train(self, dataloader, num_epochs):
        """Train for ``num_epochs`` passes over ``dataloader`` (a progress bar on a terminal)."""
        from tqdm import tqdm
        for epoch in range(1, num_epochs + 1):
            batches = tqdm(dataloader, desc=f"epoch {epoch}/{num_epochs}", leave=False, disable=None)
            for input, target in batches:
                batches.set_postfix(loss=f"{self.learn(input, target):.4f}", refresh=False)

    def validate(self, dataloader):
        """Mean loss per batch over ``dataloader``."""
        if len(dataloader) == 0:
            raise ValueError("validate: the dataloader is empty")
        total = 0.0
        with torch.no_grad():
            for input, target in dataloader:
                total += self.forward(input, target)
        return total / len(dataloader)

    def get_loss(self):
        return None if self.loss is None else self.loss.mean().item()

    def get_output(self):
        return self.output

    def print(self):
        print(self.net)

    # ---- checkpoints
    def save(self, path, epoch, **extra):
        """Write ``{"epoch", "state_dict", "optimizer"}`` (msd_pytorch's layout) atomically;
        ``extra`` entries (plain values, e.g. a training run's resume state) are stored beside."""
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        state = {
            **extra,
            "dilations": list(self.dilations),
            "epoch": int(epoch),
            "state_dict": self._plain_net.state_dict(),
            "optimizer": self.optimizer.state_dict(),
        }
        save_checkpoint(state, path)

    def load(self, path):
        """Load a checkpoint saved by msd_pytorch 0.9/0.10 or by ``save`` (pruned ones
        re-create their torch.nn.utils.prune masks); returns the stored epoch."""
        state = read_checkpoint(path, self.device)
        state_dict = _strip_prefix(state["state_dict"], "module.")
        self._check_compatible(path, state_dict)
        recorded = state.get("dilations")
        if recorded is not None and [int(d) for d in recorded] != [int(d) for d in self.dilations]:
            raise ValueError(f"{path}: the network was trained with dilations {list(recorded)}, "
                             f"this model has {list(self.dilations)} (pass --dilations to match)")
        masks.match_pruning(self._plain_net, state_dict)
        try:
            self._plain_net.load_state_dict(state_dict)
        except RuntimeError as error:
            raise ValueError(f"{path}: state_dict does not fit this model: {error}")
        if state.get("optimizer") is not None:
            try:
                self.optimizer.load_state_dict(state["optimizer"])
            except (ValueError, KeyError, TypeError, AttributeError, IndexError) as error:
                raise ValueError(f"{path}: optimizer state does not fit this model: {error}")
        return int(state["epoch"])

    def _check_compatible(self, path, state_dict):
        found = _architecture_of(path, state_dict)
        expected = {"c_in": self.c_in, "num_labels": self.c_out, "depth": self.depth,
                    "width": self.width}
        if found != expected:
            describe = lambda arch: ", ".join(f"{k}={v}" for k, v in arch.items())
            raise ValueError(f"{path}: checkpoint holds an MS-D network with {describe(found)}; "
                             f"this model expects {describe(expected)}")
        expected_keys = set(self._plain_net.state_dict())
        unpruned_keys = {_unpruned_name(k) for k in state_dict if not k.endswith("_mask")}
        expected_unpruned = {_unpruned_name(k) for k in expected_keys if not k.endswith("_mask")}
        if unpruned_keys != expected_unpruned:
            missing = sorted(expected_unpruned - unpruned_keys)[:5]
            unexpected = sorted(unpruned_keys - expected_unpruned)[:5]
            raise ValueError(f"{path}: state_dict keys do not match msd_pytorch's layout "
                             f"(missing {missing}, unexpected {unexpected})")


def save_checkpoint(state, path):
    """torch.save ``state`` to ``path`` atomically; OSError naming the file when it cannot be
    written (a full disk surfaces from torch as a RuntimeError)."""
    def save(temporary):
        try:
            torch.save(state, temporary)
        except RuntimeError as error:
            raise OSError(errno.EIO, _first_line(error)) from None
    files.write_atomically(path, save)


def _first_line(error):
    lines = str(error).strip().splitlines()
    return lines[0][:200] if lines else type(error).__name__


def read_checkpoint(path, device):
    """A checkpoint in msd_pytorch's layout as a dict; clear errors for missing, corrupt,
    unsafe or malformed files (each naming the file)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint not found: {path}")
    if path.stat().st_size == 0:
        raise ValueError(f"{path}: empty file, not a torch checkpoint")
    try:
        state = torch.load(path, map_location=device, weights_only=True)
    except Exception as error:  # torch raises many types for corrupt or unsafe files
        if "weights_only" in str(error) or "Unsupported global" in str(error):
            raise ValueError(f"{path}: holds Python objects other than tensors and plain values; "
                             f"refused, such a checkpoint is never unpickled") from None
        raise ValueError(f"{path}: not a readable torch checkpoint "
                         f"({type(error).__name__}: {_first_line(error)})") from None
    if not isinstance(state, dict) or "state_dict" not in state or "epoch" not in state:
        found = sorted(state) if isinstance(state, dict) else type(state).__name__
        raise ValueError(f"{path}: expected a dict with keys 'epoch', 'state_dict', "
                         f"'optimizer' (msd_pytorch format), found {found}")
    state_dict = state["state_dict"]
    if not isinstance(state_dict, dict) or not all(isinstance(k, str) and isinstance(v, torch.Tensor)
                                                   for k, v in state_dict.items()):
        raise ValueError(f"{path}: 'state_dict' is not a mapping of names to tensors "
                         f"(found {type(state_dict).__name__})")
    if isinstance(state["epoch"], bool) or not isinstance(state["epoch"], int):
        raise ValueError(f"{path}: 'epoch' is not an integer (found {state['epoch']!r})")
    if state.get("optimizer") is not None and not isinstance(state["optimizer"], dict):
        raise ValueError(f"{path}: 'optimizer' is not an optimizer state (found {type(state['optimizer']).__name__})")
    for name, tensor in state_dict.items():
        if tensor.is_floating_point() and not bool(torch.isfinite(tensor).all()):
            raise ValueError(f"{path}: '{name}' holds NaN or infinite values")
    return state


def _strip_prefix(state_dict, prefix):
    if state_dict and all(k.startswith(prefix) for k in state_dict):
        return {k[len(prefix):]: v for k, v in state_dict.items()}
    return dict(state_dict)


def _unpruned_name(key):
    return key[:-len("_orig")] if key.endswith("_orig") else key


def _architecture_of(path, state_dict):
    """c_in, num_labels, depth and width of the MS-D network stored in ``state_dict``."""
    def tensor(name):
        for key in (name, name + "_orig"):
            if key in state_dict:
                return state_dict[key]
        raise ValueError(f"{path}: not an MS-D checkpoint, state_dict lacks '{name}'")

    depth = sum(1 for k in state_dict
                if re.fullmatch(r"1\.0\.msd_block\.weight\d+(_orig)?", k))
    first, final = tensor("1.0.msd_block.weight0"), tensor("1.0.final_layer.linear.weight")
    return {"c_in": int(first.shape[1]), "num_labels": int(final.shape[0]), "depth": depth,
            "width": int(first.shape[0])}


