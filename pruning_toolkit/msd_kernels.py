"""Compiled (numba) CPU kernels of one pruned MS-D layer that reads a few live channels.

The buffer is msd.py's channel-major, pre-padded (C, B, H + 2p, W + 2p) array. A layer that
reads ``n`` channels with a dilated 3x3 kernel costs 9 n multiply-adds per output pixel; the
matrix-product formulation of msd.py spends 9 full-image passes on its nine taps whatever n
is, which dominates once n is a few channels. These kernels read the listed channels straight
from the buffer (no copy) and work row by row on 1-D rows that stay in cache, forward and
backward. Every parallel loop is over independent output rows, so ``prange`` needs no locks.
"""
import numpy as np
from numba import njit, prange


@njit(inline="always")
def _split(index, size):
    """(index // size, index % size) as signed integers (prange indices are unsigned)."""
    index = np.int64(index)
    return index // size, index % size


@njit(parallel=True, fastmath=True, cache=True)
def layer_forward(buffer, read, weight, bias, first, pad, dilation, height, width_px):
    """buffer[first + o] interior = relu(bias[o] + sum_i conv_d(buffer[read[i]], weight[o, i]))."""
    batch = buffer.shape[1]
    outputs, n = weight.shape[0], weight.shape[1]
    for row in prange(outputs * batch * height):
        o, rest = _split(row, batch * height)
        b, y = _split(rest, height)
        acc = np.full(width_px, bias[o], dtype=buffer.dtype)
        for i in range(n):
            for a in range(3):
                source = buffer[read[i], b, pad + y + (a - 1) * dilation]
                for c in range(3):
                    w = weight[o, i, a, c]
                    left = pad + (c - 1) * dilation
                    for x in range(width_px):
                        acc[x] += w * source[left + x]
        out = buffer[first + o, b, pad + y]
        zero = acc[0] * 0
        for x in range(width_px):
            out[pad + x] = max(acc[x], zero)


@njit(parallel=True, fastmath=True, cache=True)
def weight_gradient(buffer, read, grad_out, pad, dilation):
    """grad[o, i, a, c] = sum over pixels of grad_out[o] * the tap (a, c) of buffer[read[i]]."""
    outputs, batch, height, width_px = grad_out.shape
    n = read.shape[0]
    partial = np.zeros((batch * height, outputs, n, 3, 3), dtype=buffer.dtype)
    for row in prange(batch * height):
        b, y = _split(row, height)
        for o in range(outputs):
            gradient = grad_out[o, b, y]
            for i in range(n):
                for a in range(3):
                    source = buffer[read[i], b, pad + y + (a - 1) * dilation]
                    for c in range(3):
                        left = pad + (c - 1) * dilation
                        total = gradient[0] * 0
                        for x in range(width_px):
                            total += gradient[x] * source[left + x]
                        partial[row, o, i, a, c] = total
    return partial.sum(axis=0)


@njit(parallel=True, fastmath=True, cache=True)
def input_gradient(grad_padded, read, weight, grad_out, pad, dilation, first_channel):
    """grad_padded[read[i]] += the adjoint of the layer's convolution applied to grad_out, for
    the read channels >= first_channel. Each padded row is written by one iteration."""
    outputs, batch, height, width_px = grad_out.shape
    n = read.shape[0]
    padded_height = grad_padded.shape[2]
    for row in prange(n * batch * padded_height):
        i, rest = _split(row, batch * padded_height)
        b, target_row = _split(rest, padded_height)
        if read[i] < first_channel:
            continue
        acc = np.zeros(grad_padded.shape[3], dtype=grad_padded.dtype)
        touched = False
        for a in range(3):
            y = target_row - pad - (a - 1) * dilation
            if y < 0 or y >= height:
                continue
            touched = True
            for o in range(outputs):
                gradient = grad_out[o, b, y]
                for c in range(3):
                    w = weight[o, i, a, c]
                    left = pad + (c - 1) * dilation
                    for x in range(width_px):
                        acc[left + x] += w * gradient[x]
        if touched:
            target = grad_padded[read[i], b, target_row]
            for x in range(acc.shape[0]):
                target[x] += acc[x]
