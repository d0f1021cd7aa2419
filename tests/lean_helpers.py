"""Independent slow references shared by the LEAN pruning tests (written from the spec)."""
import numpy as np
import torch
from torch import nn

import fcn_resnet
import msd
from graph_algorithms import longest_path_prune_reference


def random_msd(seed, c_in=2, c_out=3, depth=12, dilations=(1, 2, 3)):
    """An MS-D network with all weights drawn from N(0, 1) (msd_pytorch zero-inits the final layer)."""
    torch.manual_seed(seed)
    model = msd.MSDSegmentationModel(c_in, c_out, depth, 1, dilations=list(dilations), device="cpu")
    with torch.no_grad():
        for parameter in model.msd.parameters():
            parameter.normal_()
    return model


NARROW = dict(blocks_per_layer=(2, 2, 2, 1), layer_widths=(4, 6, 8, 8), stem_channels=6)


def narrow_fcn(seed, in_channels=1, num_classes=3):
    """A small FCN-ResNet50 (same structure, few channels) with random BatchNorm statistics, in eval mode."""
    torch.manual_seed(seed)
    model = fcn_resnet.fcn_resnet50(num_classes, in_channels, **NARROW)
    randomize_batchnorms(model, seed)
    return model.eval()


def randomize_batchnorms(model, seed):
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, torch.nn.BatchNorm2d):
                module.weight.copy_(torch.randn(module.weight.shape, generator=generator))
                module.bias.copy_(torch.randn(module.bias.shape, generator=generator))
                module.running_var.copy_(torch.rand(module.running_var.shape, generator=generator) + 0.5)


def fft_spectral_norms(weight, n):
    """max |FFT2(kernel zero-padded to n x n)| per kernel; 1x1 and Conv1d kernels as 1x1 images."""
    weight = weight.detach().double()
    if weight.dim() == 3 or weight.shape[-1] * weight.shape[-2] == 1:
        return weight.reshape(weight.shape[0], weight.shape[1]).abs().numpy()
    return torch.fft.fft2(weight, s=(n, n)).abs().amax(dim=(-2, -1)).numpy()


def effective_weight(module, name):
    orig = getattr(module, name + "_orig", None)
    return getattr(module, name) if orig is None else orig * getattr(module, name + "_mask")


def dense_lean_selection(graph, prune_fraction, n):
    """LEAN's choice through the dense matrix of the spec and the straightforward extraction."""
    matrix = np.zeros((graph.num_nodes, graph.num_nodes))
    skips = np.zeros_like(matrix, dtype=bool)
    for layer in graph.layers:
        norms = fft_spectral_norms(effective_weight(layer.module, layer.name), n)
        if layer.batchnorm is not None:
            bn = layer.batchnorm
            scale = (bn.weight.detach().abs() / torch.sqrt(bn.running_var + bn.eps)).double().numpy()
            norms = norms * scale[:, None]
        matrix[np.ix_(layer.out_nodes, layer.in_nodes)] = norms
    for into, source in graph.skip_edges:
        matrix[into, source] = 1.0
        skips[into, source] = True
    to_prune = longest_path_prune_reference(matrix, prune_fraction, skips)
    return [to_prune[np.ix_(layer.out_nodes, layer.in_nodes)] for layer in graph.layers]


def kernel_kept(module, name):
    """(out, in) bool: convolutions whose mask is not all zero."""
    mask = getattr(module, name + "_mask", None)
    if mask is None:
        mask = torch.ones_like(getattr(module, name))
    return mask.reshape(mask.shape[0], mask.shape[1], -1).ne(0).any(dim=2).numpy()


def conv_macs_by_hooks(model, x):
    """MACs of every Conv1d/Conv2d, counted from the shapes seen by forward hooks."""
    total = []

    def hook(module, args, output):
        total.append(module.weight.numel() * output.shape[0] * int(np.prod(output.shape[2:])))

    handles = [m.register_forward_hook(hook) for m in model.modules() if isinstance(m, (nn.Conv1d, nn.Conv2d))]
    with torch.no_grad():
        model.eval()(x)
    for handle in handles:
        handle.remove()
    return sum(total)
