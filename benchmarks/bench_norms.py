"""Time the operator norms of all FCN-ResNet50 convolutions (n = 7), whole layers at once.

Run: ``python benchmarks/bench_norms.py [--device cpu|cuda] [--threads N]``. Prints the time
per norm order for random weights with the FCN-ResNet50 layer shapes (about 14.4 M kernels).
"""
import argparse
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from pruning_utils import compute_FourierSVD_norms, compute_Ln_norms_conv  # noqa: E402

RESNET50_STAGES = ((3, 64), (4, 128), (6, 256), (3, 512))


def fcn_resnet50_conv_shapes(c_in=3, num_classes=21, expansion=4):
    """Weight shapes of every Conv2d of FCN-ResNet50 in network order (downsample after conv3)."""
    shapes = [(64, c_in, 7, 7)]
    channels = 64
    for n_blocks, width in RESNET50_STAGES:
        for block in range(n_blocks):
            shapes += [(width, channels, 1, 1), (width, width, 3, 3), (width * expansion, width, 1, 1)]
            if block == 0:
                shapes.append((width * expansion, channels, 1, 1))
            channels = width * expansion
    shapes += [(512, channels, 3, 3), (num_classes, 512, 1, 1)]
    return shapes


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    generator = torch.Generator().manual_seed(0)
    weights = [torch.randn(shape, generator=generator).to(args.device) for shape in fcn_resnet50_conv_shapes()]
    n_kernels = sum(w.shape[0] * w.shape[1] for w in weights)
    print(f"FCN-ResNet50: {len(weights)} convolutions, {n_kernels / 1e6:.2f} M kernels, "
          f"device {args.device}, {torch.get_num_threads()} threads")
    jobs = [(f"Fourier SVD '{order}' (n=7)", lambda w, o=order: compute_FourierSVD_norms(w, 7, o))
            for order in ("max", "nuc", "fro")]
    jobs.append(("L1 vector norm", lambda w: compute_Ln_norms_conv(w, 1)))
    for label, job in jobs:
        best_wall = best_cpu = float("inf")
        for _ in range(args.repeats):
            if args.device.startswith("cuda"):
                torch.cuda.synchronize()
            wall, cpu = time.perf_counter(), time.process_time()
            for w in weights:
                job(w)
            if args.device.startswith("cuda"):
                torch.cuda.synchronize()
            best_wall = min(best_wall, time.perf_counter() - wall)
            best_cpu = min(best_cpu, time.process_time() - cpu)
        print(f"  {label:28s} wall {best_wall:7.3f} s   process CPU {best_cpu:7.3f} s   (best of {args.repeats})")


if __name__ == "__main__":
    main()
