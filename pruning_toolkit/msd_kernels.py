"""Compiled (numba) CPU kernels of one pruned MS-D layer that reads a few live channels.

The buffer is msd.py's channel-major, pre-padded (C, B, H + 2p, W + 2p) array. A layer that
reads ``n`` channels with a dilated 3x3 kernel costs 9 n multiply-adds per output pixel; the
matrix-product formulation of msd.py spends 9 full-image passes on its nine taps whatever n
is, which dominates once n is a few channels. These kernels read the listed channels straight
from the buffer (no copy) and work row by row on 1-D rows that stay in cache, forward and
backward. Every parallel loop is over independent output rows, so ``prange`` needs no locks.
Taps are taken as slices of a row and indexed from 0: indexing ``row[left + x]`` makes numba
check for negative indices on every element, which keeps LLVM from vectorising the loop (about
10x slower).
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
        out = buffer[first + o, b, pad + y, pad:pad + width_px]  # not read by this layer
        for x in range(width_px):
            out[x] = bias[o]
        for i in range(n):
            for a in range(3):
                source = buffer[read[i], b, pad + y + (a - 1) * dilation]
                west = source[pad - dilation:pad - dilation + width_px]
                centre = source[pad:pad + width_px]
                east = source[pad + dilation:pad + dilation + width_px]
                w0, w1, w2 = weight[o, i, a, 0], weight[o, i, a, 1], weight[o, i, a, 2]
                for x in range(width_px):
                    out[x] += w0 * west[x] + w1 * centre[x] + w2 * east[x]
        zero = out[0] * 0
        for x in range(width_px):
            out[x] = max(out[x], zero)


ROWS_PER_JOB = 32   # image rows whose weight-gradient products one parallel job sums


@njit(parallel=True, fastmath=True, cache=True)
def weight_gradient(buffer, read, grad_out, pad, dilation):
    """grad[o, i, a, c] = sum over pixels of grad_out[o] * the tap (a, c) of buffer[read[i]].

    Each job sums the products of a band of rows pixel by pixel into nine rows of partial sums
    (vector adds) and reduces them once at the end, instead of once per image row."""
    outputs, batch, height, width_px = grad_out.shape
    n = read.shape[0]
    bands = (height + ROWS_PER_JOB - 1) // ROWS_PER_JOB
    partial = np.zeros((batch * bands, outputs, n, 3, 3), dtype=buffer.dtype)
    for job in prange(batch * bands):
        b, band = _split(job, bands)
        sums = np.empty((9, width_px), dtype=buffer.dtype)
        for o in range(outputs):
            for i in range(n):
                sums[:] = 0
                for y in range(band * ROWS_PER_JOB, min(height, (band + 1) * ROWS_PER_JOB)):
                    gradient = grad_out[o, b, y]
                    for a in range(3):
                        source = buffer[read[i], b, pad + y + (a - 1) * dilation]
                        west = source[pad - dilation:pad - dilation + width_px]
                        centre = source[pad:pad + width_px]
                        east = source[pad + dilation:pad + dilation + width_px]
                        sum_west, sum_centre, sum_east = sums[3 * a], sums[3 * a + 1], sums[3 * a + 2]
                        for x in range(width_px):
                            sum_west[x] += gradient[x] * west[x]
                            sum_centre[x] += gradient[x] * centre[x]
                            sum_east[x] += gradient[x] * east[x]
                for a in range(3):
                    for c in range(3):
                        partial[job, o, i, a, c] = sums[3 * a + c].sum()
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
        target = grad_padded[read[i], b, target_row]
        for a in range(3):
            y = target_row - pad - (a - 1) * dilation
            if y < 0 or y >= height:
                continue
            for o in range(outputs):
                gradient = grad_out[o, b, y]
                for c in range(3):
                    w = weight[o, i, a, c]
                    left = pad + (c - 1) * dilation
                    tap = target[left:left + width_px]
                    for x in range(width_px):
                        tap[x] += w * gradient[x]
