"""Time the MS-D network: forward (inference) and forward+backward+Adam step per image.

    python benchmarks/bench_msd.py [--depth 50] [--size 256] [--batch 5] [--threads 1]
                                   [--device auto|cpu|cuda] [--repeats 3]

Reports the best of ``--repeats`` runs, wall and process CPU time, in ms per image.
"""
import argparse
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
import msd  # noqa: E402


def best_time(step, repeats, synchronize):
    step()
    synchronize()
    wall, cpu = [], []
    for _ in range(repeats):
        start_wall, start_cpu = time.perf_counter(), time.process_time()
        step()
        synchronize()
        wall.append(time.perf_counter() - start_wall)
        cpu.append(time.process_time() - start_cpu)
    return min(wall), min(cpu)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--depth", type=int, default=50)
    parser.add_argument("--size", type=int, default=256)
    parser.add_argument("--batch", type=int, default=5)
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    parser.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    model = msd.MSDSegmentationModel(1, 5, args.depth, 1, dilations=list(range(1, 11)),
                                     device=args.device)
    device = model.device
    synchronize = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    x = torch.randn(args.batch, 1, args.size, args.size, device=device)
    y = torch.randint(0, 5, (args.batch, 1, args.size, args.size), device=device)

    def inference():
        with torch.inference_mode():
            model.net(x)

    results = {"forward": best_time(inference, args.repeats, synchronize),
               "forward+backward+step": best_time(lambda: model.learn(x, y), args.repeats,
                                                  synchronize)}
    print(f"MS-D depth {args.depth}, {args.size}x{args.size}, batch {args.batch}, "
          f"device {device}, torch threads {torch.get_num_threads()}")
    for name, (wall, cpu) in results.items():
        print(f"  {name:22s} {1000 * wall / args.batch:8.1f} ms/image wall "
              f"{1000 * cpu / args.batch:8.1f} ms/image CPU")


if __name__ == "__main__":
    main()
