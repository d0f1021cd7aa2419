"""Operator norms of convolutions: against FFTs, explicit operators and the power method."""
import numpy as np
import pytest
import scipy.sparse as sp
import scipy.sparse.linalg as spla
import torch

from pruning_utils import compute_FourierSVD_norms, compute_Ln_norms_conv


def fft_norms(weight, n, order):
    """Norms from torch.fft of the kernels zero-padded to n (x n), computed in float64."""
    w = weight.double()
    spectrum = (torch.fft.fft2(w, s=(n, n)) if w.dim() == 4 else torch.fft.fft(w, n=n)).abs()
    spectrum = spectrum.reshape(*w.shape[:2], -1)
    return {"max": spectrum.amax(-1), "nuc": spectrum.sum(-1), "fro": spectrum.square().sum(-1).sqrt()}[order]


def circular_convolution(kernel, image):
    """Periodic 2-D convolution written with shifts only (no FFT)."""
    out = np.zeros_like(image)
    for i in range(kernel.shape[0]):
        for j in range(kernel.shape[1]):
            out += kernel[i, j] * np.roll(image, (i, j), axis=(0, 1))
    return out


def circular_correlation(kernel, image):
    """The adjoint of ``circular_convolution``."""
    out = np.zeros_like(image)
    for i in range(kernel.shape[0]):
        for j in range(kernel.shape[1]):
            out += kernel[i, j] * np.roll(image, (-i, -j), axis=(0, 1))
    return out


def explicit_circulant(kernel, n):
    """The n^2 x n^2 matrix of ``circular_convolution`` (columns = images of the unit images)."""
    columns = []
    for index in range(n * n):
        unit = np.zeros(n * n)
        unit[index] = 1.0
        columns.append(circular_convolution(kernel, unit.reshape(n, n)).ravel())
    return np.stack(columns, axis=1)


def doubly_block_toeplitz(kernel, n):
    """Sparse matrix of the full (zero-padded) 2-D convolution of an n x n image."""
    k = kernel.shape[0]
    m = n + k - 1
    rows, cols, data = [], [], []
    pixel = np.arange(n * n)
    for i in range(k):
        for j in range(k):
            rows.append(((pixel // n + i) * m + pixel % n + j))
            cols.append(pixel)
            data.append(np.full(n * n, kernel[i, j]))
    return sp.csr_matrix((np.concatenate(data), (np.concatenate(rows), np.concatenate(cols))),
                         shape=(m * m, n * n))


@pytest.mark.parametrize("order", ["max", "nuc", "fro"])
@pytest.mark.parametrize("shape, n", [((40, 30, 3, 3), 7), ((5, 4, 3, 3), 8), ((3, 2, 3, 3), 32),
                                      ((4, 3, 7, 7), 7), ((3, 4, 3, 2), 6), ((3, 4, 4), 9), ((2, 3, 5), 5)])
def test_matches_fft_float32_and_float64(shape, n, order):
    generator = torch.Generator().manual_seed(0)
    weight = torch.randn(shape, generator=generator)
    expected = fft_norms(weight, n, order)
    got32 = compute_FourierSVD_norms(weight, n, order)
    assert got32.dtype == torch.float32 and got32.shape == shape[:2]
    torch.testing.assert_close(got32.double(), expected, rtol=2e-5, atol=1e-5)
    got64 = compute_FourierSVD_norms(weight.double(), n, order)
    assert got64.dtype == torch.float64
    torch.testing.assert_close(got64, expected, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("order", ["max", "nuc", "fro"])
def test_one_by_one_kernels_are_one_by_one_images(order):
    weight = torch.randn(6, 5, 1, 1)
    assert torch.equal(compute_FourierSVD_norms(weight, 7, order), weight.abs()[:, :, 0, 0])
    conv1d = torch.randn(3, 8, 1)  # MS-D's final layer
    assert torch.equal(compute_FourierSVD_norms(conv1d, 64, order), conv1d.abs()[:, :, 0])


def test_kernel_larger_than_image_wraps_around():
    kernel = np.random.default_rng(0).standard_normal((5, 5))
    weight = torch.tensor(kernel)[None, None]
    singular_values = np.linalg.svd(explicit_circulant(kernel, 3), compute_uv=False)
    assert compute_FourierSVD_norms(weight, 3, "max").item() == pytest.approx(singular_values.max(), rel=1e-10)


def test_spectral_norm_equals_power_method_on_periodic_convolution():
    rng = np.random.default_rng(1)
    n = 12
    for _ in range(3):
        kernel = rng.standard_normal((3, 3))
        image = rng.standard_normal((n, n))
        for _ in range(600):
            image = circular_correlation(kernel, circular_convolution(kernel, image))
            image /= np.linalg.norm(image)
        power_estimate = np.linalg.norm(circular_convolution(kernel, image))  # a lower bound
        norm = compute_FourierSVD_norms(torch.tensor(kernel)[None, None], n, "max").item()
        assert norm * (1 - 1e-4) <= power_estimate <= norm * (1 + 1e-12)


def test_spectral_norm_agrees_with_zero_padded_toeplitz_matrix():
    # Periodic (Fourier) and zero-padded boundaries differ slightly: the spec's check is about
    # 0.5 % on average for 3x3 kernels and n = 32.
    rng = np.random.default_rng(2)
    kernels = rng.standard_normal((4, 3, 3))
    fourier = compute_FourierSVD_norms(torch.tensor(kernels)[None], 32, "max")[0].numpy()
    toeplitz = np.array([spla.svds(doubly_block_toeplitz(k, 32), k=1, return_singular_vectors=False)[0]
                         for k in kernels])
    relative = np.abs(fourier - toeplitz) / toeplitz
    assert relative.mean() < 0.005 and relative.max() < 0.01


@pytest.mark.parametrize("n", [5, 8])
def test_all_norms_match_explicit_singular_values_of_circulant_operator(n):
    rng = np.random.default_rng(n)
    kernels = rng.standard_normal((2, 3, 3, 3))
    weight = torch.tensor(kernels)
    for o in range(2):
        for i in range(3):
            singular_values = np.linalg.svd(explicit_circulant(kernels[o, i], n), compute_uv=False)
            assert compute_FourierSVD_norms(weight, n, "max")[o, i].item() == pytest.approx(singular_values.max(), rel=1e-10)
            assert compute_FourierSVD_norms(weight, n, "nuc")[o, i].item() == pytest.approx(singular_values.sum(), rel=1e-10)
            assert compute_FourierSVD_norms(weight, n, "fro")[o, i].item() == pytest.approx(
                np.sqrt((singular_values ** 2).sum()), rel=1e-10)


def test_no_autograd_and_same_device():
    weight = torch.nn.Conv2d(4, 3, 3).weight  # requires grad
    for norms in (compute_FourierSVD_norms(weight, 7, "max"), compute_Ln_norms_conv(weight, 1)):
        assert not norms.requires_grad and norms.device == weight.device and norms.shape == (3, 4)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_weights_stay_on_cuda():
    weight = torch.randn(8, 4, 3, 3)
    norms = compute_FourierSVD_norms(weight.cuda(), 7, "max")
    assert norms.is_cuda
    torch.testing.assert_close(norms.cpu(), compute_FourierSVD_norms(weight, 7, "max"), rtol=1e-5, atol=1e-6)


def test_ln_norms_of_kernels():
    generator = torch.Generator().manual_seed(3)
    weight = torch.randn(4, 5, 3, 3, generator=generator, dtype=torch.float64)
    kernels = weight.numpy()
    expect = {1: np.abs(kernels).sum((2, 3)), 2: np.sqrt((kernels ** 2).sum((2, 3))),
              float("inf"): np.abs(kernels).max((2, 3)), "fro": np.sqrt((kernels ** 2).sum((2, 3))),
              "nuc": np.linalg.norm(kernels, "nuc", axis=(2, 3))}
    for p, expected in expect.items():
        np.testing.assert_allclose(compute_Ln_norms_conv(weight, p).numpy(), expected, rtol=1e-12)
    conv1d = torch.randn(3, 2, 1)
    assert torch.equal(compute_Ln_norms_conv(conv1d, 1), conv1d.abs()[:, :, 0])


@pytest.mark.parametrize("call, message", [
    (lambda: compute_FourierSVD_norms(torch.randn(3, 3), 7, "max"), "Conv2d weight"),
    (lambda: compute_FourierSVD_norms(torch.randn(2, 2, 3, 3), 7, "spectral"), "unknown norm order"),
    (lambda: compute_FourierSVD_norms(torch.randn(2, 2, 3, 3), 0, "max"), "positive integer"),
    (lambda: compute_FourierSVD_norms(torch.ones(2, 2, 3, 3, dtype=torch.int64), 7, "max"), "floating-point"),
    (lambda: compute_Ln_norms_conv(torch.randn(2, 2, 3, 3), "max"), "unknown norm order"),
    (lambda: compute_Ln_norms_conv(np.ones((2, 2, 3, 3)), 1), "torch.Tensor"),
])
def test_bad_input_raises(call, message):
    with pytest.raises(ValueError, match=message):
        call()


def test_fourier_norms_leave_the_torch_thread_count_alone():
    threads = torch.get_num_threads()
    compute_FourierSVD_norms(torch.randn(3, 2, 3, 3), 8, "max")
    assert torch.get_num_threads() == threads
