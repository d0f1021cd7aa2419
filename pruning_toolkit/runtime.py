"""Compute settings shared by both halves: threads, the device, one-thread sections."""
import contextlib

import torch


def set_threads(threads):
    """Use ``threads`` CPU threads for torch and for the numba kernels (None: leave the defaults).

    Both pools matter: numba's threads spin while torch's run, so with more of them than
    cores the two slow each other down."""
    if not threads:
        return
    torch.set_num_threads(threads)
    try:
        import numba
    except ImportError:
        return
    numba.set_num_threads(min(threads, numba.config.NUMBA_NUM_THREADS))


def resolve_device(device=None):
    """The torch device to use: ``device`` if given ("cpu", "cuda", "auto", a torch.device),
    else CUDA when available, else CPU; ValueError when CUDA is asked for but missing."""
    if device is None or device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(device)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device {device} requested but CUDA is not available")
    return device


@contextlib.contextmanager
def one_cpu_thread(device):
    """On the CPU, run torch on one intra-op thread inside, restored after.

    Many small ops (a toy model, per-layer operator norms) gain nothing from more threads: the
    start/join per op costs more, and with the cores shared with another busy process it costs
    10-50x (measured on 2 cores while a training job ran: FCN-ResNet50 spectral norms 0.5 s on
    one thread, 6-28 s on two); grid workers then share the cores instead of fighting over them."""
    if torch.device(device).type != "cpu":
        yield
        return
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(previous)


@contextlib.contextmanager
def eval_mode(model):
    """``model`` in eval mode inside (dropout off, BatchNorm on its running statistics); the
    mode of every submodule restored after, also when they differed."""
    modes = {module: module.training for module in model.modules()}
    model.eval()
    try:
        yield model
    finally:
        for module, training in modes.items():
            module.train(training)
