"""Operator norms of convolutions: the edge weights of LEAN's graph and the baselines' scores.

Every function works on the tensor's own device and builds no autograd graph.
"""
import functools
import math

import numpy as np
import torch

from pruning_toolkit.masks import masked_weight
from pruning_toolkit.norm_graph import batchnorm_scale
from pruning_toolkit.runtime import one_cpu_thread

#
# A k x k kernel acting on an n x n image with periodic boundary is a doubly-block-circulant
# operator whose singular values are the magnitudes of the 2-D DFT of the kernel zero-padded
# to n x n (Sedghi, Gupta & Long, "The Singular Values of Convolutional Layers"). That DFT is
# F[:, :k] K F[:, :k]^T, i.e. one small real matrix product per kernel, batched over a layer.
# Real kernels have conjugate-symmetric spectra, so only the frequency rows 0..n//2 are formed;
# rows 1..ceil(n/2)-1 stand for their mirror rows too and count twice in sums.

FOURIER_ORDERS = ("max", "nuc", "fro")
_CHUNK_BYTES = 2**19  # spectra of one chunk of kernels stay in the CPU's L2 cache


@functools.lru_cache(maxsize=32)  # MS-D: one basis for all layers (~1 ms each to build)
def _half_spectrum_basis(kernel_shape, n, dtype, device):
    """Real DFT basis ``(prod(kernel_shape), 2 R)`` ([cos | sin] parts) for the R frequencies
    of the half spectrum, and the multiplicity of each frequency in the full spectrum."""
    rows = torch.arange(n // 2 + 1, dtype=torch.float64)
    multiplicity_1d = torch.where((rows == 0) | (2 * rows == n), 1.0, 2.0)
    if len(kernel_shape) == 1:
        (k,) = kernel_shape
        angle = torch.outer(torch.arange(k, dtype=torch.float64), rows)
        multiplicity = multiplicity_1d
    else:
        kh, kw = kernel_shape
        cols = torch.arange(n, dtype=torch.float64)
        phase_h = torch.outer(torch.arange(kh, dtype=torch.float64), rows)  # (kh, R_h)
        phase_w = torch.outer(torch.arange(kw, dtype=torch.float64), cols)  # (kw, n)
        angle = (phase_h[:, None, :, None] + phase_w[None, :, None, :]).reshape(kh * kw, -1)
        multiplicity = multiplicity_1d.repeat_interleave(n)
    angle = angle * (2 * math.pi / n)
    basis = torch.cat([torch.cos(angle), torch.sin(angle)], dim=1)
    return basis.to(device=device, dtype=dtype), multiplicity.to(device=device, dtype=dtype)


def _kernels_of(weight, name):
    """(kernels as rows, kernel shape, (out, in)) of a Conv1d/Conv2d weight."""
    if not isinstance(weight, torch.Tensor):
        raise ValueError(f"{name} expects a torch.Tensor weight, got {type(weight).__name__}")
    if weight.dim() not in (3, 4):
        raise ValueError(f"{name} expects a Conv2d weight (out, in, kh, kw) or a Conv1d weight "
                         f"(out, in, k), got shape {tuple(weight.shape)}")
    if not weight.is_floating_point():
        raise ValueError(f"{name} expects a floating-point weight, got {weight.dtype}")
    dtype = torch.float64 if weight.dtype == torch.float64 else torch.float32
    out_channels, in_channels = weight.shape[:2]
    kernels = weight.detach().reshape(out_channels * in_channels, -1).to(dtype)
    return kernels, tuple(weight.shape[2:]), (out_channels, in_channels)


@torch.no_grad()
def compute_FourierSVD_norms(weight, n, order):
    """Operator norm of every convolution ``weight[o, i]`` on a periodic n x n (mock) input.

    ``order``: 'max' (spectral norm), 'nuc' (nuclear) or 'fro' (Frobenius). Returns a tensor
    of shape (out, in) on the weight's device (float32, or float64 for float64 weights).
    Conv1d weights (out, in, k) are 1-D convolutions of length n; 1x1 kernels are treated as
    1x1 images, so all three norms equal ``|w|``.
    """
    if order not in FOURIER_ORDERS:
        raise ValueError(f"unknown norm order {order!r}, expected one of {FOURIER_ORDERS}")
    if isinstance(n, bool) or not isinstance(n, (int, np.integer)) or n < 1:
        raise ValueError(f"the mock image size n must be a positive integer, got {n!r}")
    kernels, kernel_shape, out_in = _kernels_of(weight, "compute_FourierSVD_norms")
    if math.prod(kernel_shape) == 1:
        return kernels.abs().reshape(out_in)
    norms = torch.empty(kernels.shape[0], dtype=kernels.dtype, device=kernels.device)
    with one_cpu_thread(kernels.device):
        basis, multiplicity = _half_spectrum_basis(kernel_shape, n, kernels.dtype, kernels.device)
        chunk = max(1, _CHUNK_BYTES // (basis.shape[1] * kernels.element_size()))
        _fourier_norms_by_chunk(kernels, basis, multiplicity, order, chunk, norms)
    return norms.reshape(out_in)


def _fourier_norms_by_chunk(kernels, basis, multiplicity, order, chunk, norms):
    """Fill ``norms`` with the Fourier operator norms of ``kernels``, ``chunk`` kernels at a time."""
    n_freq = multiplicity.numel()
    for start in range(0, kernels.shape[0], chunk):
        spectrum = kernels[start:start + chunk] @ basis
        power = spectrum.square_().view(-1, 2, n_freq).sum(dim=1)
        if order == "max":
            norms[start:start + chunk] = power.amax(dim=1).sqrt_()
        elif order == "nuc":
            norms[start:start + chunk] = power.sqrt_() @ multiplicity
        else:
            norms[start:start + chunk] = (power @ multiplicity).sqrt_()


@torch.no_grad()
def compute_Ln_norms_conv(weight, p):
    """Norm of every kernel ``weight[o, i]`` taken as a vector (p = 1: the IndivL1 baseline).

    ``p``: a number (vector p-norm, ``inf`` allowed), 'fro' (= 2) or 'nuc' (nuclear norm of the
    kernel as a matrix). Returns a tensor of shape (out, in) on the weight's device.
    """
    kernels, kernel_shape, out_in = _kernels_of(weight, "compute_Ln_norms_conv")
    if p == "nuc":
        matrices = kernels.reshape(-1, *(kernel_shape if len(kernel_shape) == 2 else (1, kernel_shape[0])))
        return torch.linalg.matrix_norm(matrices, ord="nuc").reshape(out_in)
    if p == "fro":
        p = 2
    if isinstance(p, bool) or not isinstance(p, (int, float)):
        raise ValueError(f"unknown norm order {p!r}, expected a number, 'fro' or 'nuc'")
    return torch.linalg.vector_norm(kernels, ord=p, dim=1).reshape(out_in)



# ============================================================================================
# The norms of a channel graph's convolutions
# ============================================================================================

def spectral_norms(weight, fourier_size):
    """Spectral norm of every convolution on an n x n periodic image, n = ``fourier_size``."""
    return compute_FourierSVD_norms(weight, fourier_size, "max")


def l1_norms(weight, fourier_size):
    """L1 norm of every kernel (``fourier_size`` unused: the kernel is taken as a vector)."""
    return compute_Ln_norms_conv(weight, 1)


LAYER_NORMS = {"sv": spectral_norms, "l1": l1_norms}


def layer_norms(graph, norm="sv", fourier_size=64):
    """Per-layer (out, in) float64 arrays: the norm named ``norm`` (see ``LAYER_NORMS``) of each
    masked convolution, times the BatchNorm scale of its output channel where a BatchNorm follows."""
    if norm not in LAYER_NORMS:
        raise ValueError(f"unknown norm {norm!r}, expected one of {sorted(LAYER_NORMS)}")
    norms = []
    for layer in graph.layers:
        values = LAYER_NORMS[norm](masked_weight(layer.module, layer.name), fourier_size)
        values = values.double().cpu().numpy()
        if not np.isfinite(values).all():
            raise ValueError(f"convolution {layer.name} of {type(layer.module).__name__} has NaN or infinite weights")
        if layer.batchnorm is not None:
            values = values * batchnorm_scale(layer.batchnorm)[:, None]
        norms.append(values)
    return norms
