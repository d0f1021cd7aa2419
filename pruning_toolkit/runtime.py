"""Process-wide compute settings shared by the command lines and benchmarks."""
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
