"""Time the MS-D network: inference and training step (forward + backward + Adam) per image.

    python benchmarks/bench_msd.py [--depth 50] [--size 256] [--batch 5] [--threads 2]
                                   [--device auto|cpu|cuda] [--repeats 3]
    python benchmarks/bench_msd.py --kept 1,0.5,0.2,0.1,0.05 [--model CHECKPOINT]

Without ``--kept``: a randomly initialised network. With ``--kept``: the trained ``--model``
(default: the shipped depth-50 network) LEAN-pruned along the paper's schedule (15 steps to
5 %, no fine-tuning) to each kept fraction, one training step timed with the dense masked
computation (every layer reads all earlier channels) and with the fast path (live inputs only,
``msd_network.SPARSE_READ_BELOW``; ``--compiled-reads`` compares where the compiled kernels take
over), then the projected time of the full pruning experiment (3 methods, 15 steps, 3 epochs,
500 training images, 50 test images) from times interpolated in log kept.
Reports the best of ``--repeats`` runs in ms per image (wall clock).
"""
import argparse
import math
import sys
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
import msd  # noqa: E402
from pruning_toolkit import msd_network  # noqa: E402
import pruning_algorithms  # noqa: E402
import pruning_utils  # noqa: E402
from pruning_toolkit import runtime  # noqa: E402

SHIPPED_MODEL = ROOT / "examples" / "trained_models" / "msd_network_d=50.torch"
FULL_EXPERIMENT = dict(methods=3, steps=15, ratio=0.05, epochs=3, train_images=500, test_images=50)


def best_time(step, repeats, synchronize):
    step()
    synchronize()
    wall = []
    for _ in range(repeats):
        start = time.perf_counter()
        step()
        synchronize()
        wall.append(time.perf_counter() - start)
    return min(wall)


def with_settings(settings, function):
    """Run ``function`` with the module settings ``msd_network.<name>`` set to ``settings[name]``."""
    saved = {name: getattr(msd_network, name) for name in settings}
    for name, value in settings.items():
        setattr(msd_network, name, value)
    try:
        return function()
    finally:
        for name, value in saved.items():
            setattr(msd_network, name, value)


def timings(model, x, y, repeats, synchronize):
    """(training step, inference) seconds per batch."""
    def inference():
        with torch.inference_mode():
            model.net(x)
    return (best_time(lambda: model.learn(x, y), repeats, synchronize),
            best_time(inference, repeats, synchronize))


def pruned_models(args):
    """(kept target, model) along LEAN's 15-step schedule to each ``--kept`` fraction."""
    model = msd.MSDSegmentationModel(1, 5, args.depth, 1, dilations=list(range(1, 11)), device=args.device)
    model.load(args.model)
    schedule = [FULL_EXPERIMENT["ratio"] ** (s / FULL_EXPERIMENT["steps"])
                for s in range(1, FULL_EXPERIMENT["steps"] + 1)]
    for kept in sorted(args.kept, reverse=True):
        for target in [k for k in schedule if k > kept * (1 + 1e-9)] + [kept]:
            if target < 1:
                pruning_algorithms.LEAN_SV_MSD_3x3(model, target)
        yield kept, model


def live_inputs_per_layer(model):
    """Mean number of input channels a hidden layer reads through an unpruned kernel."""
    block = model.msd.msd_block
    counts = []
    for k in range(block.depth):
        mask = getattr(block, f"weight{k}_mask", None)
        counts.append(block.in_channels + block.width * k if mask is None
                      else int(mask.reshape(block.width, mask.shape[1], -1).ne(0).any(2).any(0).sum()))
    return float(np.mean(counts))


def projected_hours(kept_points, step_seconds, inference_seconds, batch):
    """The full experiment's time from per-batch times measured at ``kept_points`` (interpolated in log kept)."""
    e = FULL_EXPERIMENT
    logs = np.log(kept_points)
    order = np.argsort(logs)
    total = 0.0
    for step in range(1, e["steps"] + 1):
        kept = math.log(e["ratio"] ** (step / e["steps"]))
        train = np.interp(kept, logs[order], np.asarray(step_seconds)[order])
        infer = np.interp(kept, logs[order], np.asarray(inference_seconds)[order])
        total += e["epochs"] * e["train_images"] / batch * train + e["test_images"] / batch * infer
    return e["methods"] * total / 3600


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--depth", type=int, default=50)
    parser.add_argument("--size", type=int, default=256)
    parser.add_argument("--batch", type=int, default=5)
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    parser.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--kept", type=lambda text: [float(v) for v in text.split(",")], default=None,
                        help="kept fractions to time, e.g. 1,0.5,0.2,0.1,0.05")
    parser.add_argument("--model", type=Path, default=SHIPPED_MODEL, help="trained start network for --kept")
    parser.add_argument("--thresholds", type=lambda text: [float(v) for v in text.split(",")], default=None,
                        help="also time the fast path with these values of msd_network.SPARSE_READ_BELOW")
    parser.add_argument("--compiled-reads", type=lambda text: [int(v) for v in text.split(",")], default=None,
                        help="also time the fast path with these values of msd_network.COMPILED_READS_UP_TO "
                             "(the most live inputs a layer may read on the compiled kernels; 0: never), e.g. 0,1,2,4,8")
    args = parser.parse_args(argv)
    runtime.set_threads(args.threads)
    torch.manual_seed(0)
    device = msd.resolve_device(args.device)
    synchronize = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    x = torch.randn(args.batch, 1, args.size, args.size, device=device)
    y = torch.randint(0, 5, (args.batch, 1, args.size, args.size), device=device)
    where = (f"{args.size}x{args.size}, batch {args.batch}, device {device}"
             f"{' (' + torch.cuda.get_device_name(device) + ')' if device.type == 'cuda' else ''}, "
             f"torch threads {torch.get_num_threads()}")
    per_image = lambda seconds: f"{1000 * seconds / args.batch:8.1f}"

    if args.kept is None:
        model = msd.MSDSegmentationModel(1, 5, args.depth, 1, dilations=list(range(1, 11)), device=device)
        step, inference = timings(model, x, y, args.repeats, synchronize)
        print(f"MS-D depth {args.depth} (random weights), {where}")
        print(f"  forward                {per_image(inference)} ms/image")
        print(f"  forward+backward+step  {per_image(step)} ms/image")
        return

    print(f"MS-D depth {args.depth}, {args.model.name} LEAN-pruned, {where}; ms per image")
    header = f"{'kept':>7} {'live inputs':>11} {'dense step':>11} {'fast step':>10} {'speedup':>8} {'fast infer':>11}"
    variants = ([("SPARSE_READ_BELOW", value, f"t={value:g}") for value in args.thresholds or []]
                + [("COMPILED_READS_UP_TO", value, f"c={value}") for value in args.compiled_reads or []])
    extra = "".join(f" {label:>8}" for _, _, label in variants)
    print(header + extra)
    kept_points, dense_steps, fast_steps = [], [], []
    for kept, model in pruned_models(args):
        dense_step, dense_inference = with_settings({"USE_COMPILED_KERNELS": False, "SPARSE_READ_BELOW": 0.0},
                                                    lambda: timings(model, x, y, args.repeats, synchronize))
        fast_step, fast_inference = timings(model, x, y, args.repeats, synchronize)
        others = [with_settings({name: value}, lambda: timings(model, x, y, args.repeats, synchronize))[0]
                  for name, value, _ in variants]
        kept_fraction = 1 - pruning_utils.fraction_pruned_convs_MSD3x3(model)[2] if kept < 1 else 1.0
        print(f"{kept_fraction:7.4f} {live_inputs_per_layer(model):11.1f} {per_image(dense_step):>11} "
              f"{per_image(fast_step):>10} {dense_step / fast_step:7.2f}x {per_image(fast_inference):>11}"
              + "".join(f" {per_image(t):>8}" for t in others), flush=True)
        kept_points.append(kept)
        dense_steps.append((dense_step, dense_inference))
        fast_steps.append((fast_step, fast_inference))
    e = FULL_EXPERIMENT
    print(f"projected full experiment ({e['methods']} methods x {e['steps']} steps to {e['ratio']} kept, "
          f"{e['epochs']} epochs x {e['train_images']} images per step, {e['test_images']} test images):")
    for label, times in (("dense masked", dense_steps), ("fast path", fast_steps)):
        hours = projected_hours(kept_points, [t for t, _ in times], [i for _, i in times], args.batch)
        print(f"  {label:13s} {hours:5.2f} h")


if __name__ == "__main__":
    main()
