"""Inference time of pruned models before and after shrinking (``shrink.shrink``).

Run: ``python benchmarks/bench_shrink.py`` (FCN-ResNet50 and MS-D depth 50, kept fractions
0.5 0.2 0.1 0.05, on the CPU and on CUDA when available). Each model is pruned step by step
(``--steps`` geometric steps between consecutive fractions, no fine-tuning) with the generic
LEAN (``--method lean``), IndivSV or a criterion (``--method lrp --granularity filter``), a copy is shrunk at every fraction, and the original and
the shrunk model are timed in turn on one input (best of ``--repeats`` runs after a
warm-up; the original is the unpruned model, the shrunk one has its masks baked in with
``shrink(..., keep_masks=False)``, as for deployment).
Weights are random (an untrained network) unless ``--fcn-weights`` (a state_dict) or
``--msd-checkpoint`` (an msd_pytorch-style checkpoint) give trained ones. The criteria score
``--reference-images`` random images labelled with the network's own predictions, or, with
``--reference-data DIR`` (a CS data folder, for a trained network), the first training images.
"""
import argparse
import copy
import json
import math
import sys
import time
from pathlib import Path

import torch
from prettytable import PrettyTable

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
import fcn_resnet  # noqa: E402
from pruning_toolkit import graph_tracing  # noqa: E402
from pruning_toolkit.graph_tracing import trace_channel_graph  # noqa: E402
from pruning_toolkit.masks import fraction_pruned  # noqa: E402
import msd  # noqa: E402
import pruning_algorithms  # noqa: E402
from msd import SparseMSDBlock2d
from pruning_toolkit.shrinking import count_parameters, shrink  # noqa: E402

NUM_CLASSES = 5
MSD_DILATIONS = list(range(1, 11))


def build_fcn(args):
    model = fcn_resnet.fcn_resnet50(NUM_CLASSES, 1)
    if args.fcn_weights:
        state = torch.load(args.fcn_weights, map_location="cpu", weights_only=True)
        model.load_state_dict(state.get("state_dict", state))   # the example's checkpoint or a bare state_dict
    return model.eval()


def build_msd(args):
    wrapper = msd.MSDSegmentationModel(1, NUM_CLASSES, args.msd_depth, 1, dilations=MSD_DILATIONS, device="cpu")
    if args.msd_checkpoint:
        wrapper.load(args.msd_checkpoint)
    else:   # msd_pytorch zero-initialises the final layer; give it weights so outputs vary
        torch.nn.init.normal_(wrapper.msd.final_layer.linear.weight, std=1 / math.sqrt(1 + args.msd_depth))
    return wrapper.msd.eval()


MODELS = {
    # name: (builder, layers excluded from pruning, Fourier size n, timing input size option)
    "fcn": (build_fcn, (), pruning_algorithms.RESNET_FOURIER_SIZE, "fcn_size"),
    "msd": (build_msd, ("final_layer",), pruning_algorithms.MSD_FOURIER_SIZE, "msd_size"),
}


CRITERIA = {"lrp": pruning_algorithms.LRP_Global, "taylor": pruning_algorithms.Taylor_Global,
            "grad": pruning_algorithms.Grad_Global, "weight": pruning_algorithms.Weight_Global}


@torch.no_grad()
def own_predictions(model, inputs):
    """Reference samples for the criteria: the inputs with the model's own per-pixel predictions
    as targets (this benchmark measures speed, not accuracy)."""
    model.eval()
    output = model(inputs)
    return inputs, (output["out"] if isinstance(output, dict) else output).argmax(1)


def reference_samples(model, args):
    """(inputs, per-pixel targets) that the criteria score: CS training images or random ones."""
    if args.reference_data:
        from pruning_toolkit.experiments.cs_data import cs_split
        images = cs_split(args.reference_data, "train", args.reference_images)
        return next(iter(torch.utils.data.DataLoader(images, batch_size=len(images))))
    return own_predictions(model, torch.rand(args.reference_images, 1, args.trace_size, args.trace_size))


def prune_to(model, kept, example, method, exclude, fourier_size, reference=None, granularity="kernel"):
    if method == "lean":
        pruning_algorithms.LEAN_SV(model, kept, example, exclude=exclude, fourier_size=fourier_size)
    elif method == "indivsv":
        pruning_algorithms.IndivSV_Global(model, kept, example, exclude=exclude, fourier_size=fourier_size)
    else:
        CRITERIA[method](model, kept, example, reference, exclude=exclude, granularity=granularity)


def schedule(targets, steps):
    """Kept fractions of every step: ``steps`` geometric steps from 1 to the first target and
    between consecutive targets; yields (kept, target reached or None)."""
    previous = 1.0
    for target in targets:
        for step in range(1, steps + 1):
            kept = previous * (target / previous) ** (step / steps)
            yield kept, (target if step == steps else None)
        previous = target


@torch.inference_mode()
def inference_ms(models, x, repeats):
    """Best wall time (ms) of one forward pass of each model. The models run in turn, round
    after round, so that a change in the machine's load hits all of them alike; the best
    rather than the median because other processes only ever add time."""
    def run(model):
        start = time.perf_counter()
        model(x)
        if x.device.type == "cuda":
            torch.cuda.synchronize(x.device)
        return time.perf_counter() - start

    for model in models:
        run(model)
    best = [math.inf] * len(models)
    for _ in range(repeats):
        best = [min(b, run(model)) for b, model in zip(best, models)]
    return [1000 * b for b in best]


def structure(model):
    """A short description of what is left (MS-D: layers and inputs read per layer)."""
    for block in model.modules():
        if isinstance(block, SparseMSDBlock2d):
            reads = [len(i) for i in block.layer_inputs]
        elif isinstance(block, msd.MSDBlock2d):
            reads = [block.in_channels + block.width * k for k in range(block.depth)]
        else:
            continue
        return f"{len(reads)} layers, {sum(reads) / max(len(reads), 1):.1f} inputs/layer"
    convs = [m for m in model.modules() if isinstance(m, torch.nn.Conv2d)]
    return f"{sum(c.out_channels for c in convs)} conv channels"


def benchmark_model(name, args, devices):
    builder, exclude, fourier_size, size_option = MODELS[name]
    size = getattr(args, size_option)
    model = builder(args)
    trace_input = torch.randn(1, 1, args.trace_size, args.trace_size)
    time_input = torch.randn(1, 1, size, size)
    original = copy.deepcopy(model)
    baseline = {"params": count_parameters(model), "macs": graph_tracing.trace(model, time_input).conv_macs,
                "structure": structure(model)}
    print(f"{name}: original {baseline}", flush=True)
    reference = reference_samples(model, args)
    rows = []
    for kept, target in schedule(args.kept, args.steps):
        started = time.perf_counter()
        prune_to(model, kept, trace_input, args.method, exclude, fourier_size, reference, args.granularity)
        if target is None:
            continue
        kernels_kept = 1 - fraction_pruned(trace_channel_graph(model, trace_input, exclude))
        shrunk, _ = shrink(model, trace_input, keep_masks=False)   # inference: masks baked in
        row = {"model": name, "kept": target, "kernels_kept": round(kernels_kept, 4), "params": count_parameters(shrunk),
               "macs": graph_tracing.trace(shrunk, time_input).conv_macs, "structure": structure(shrunk),
               "prune_and_shrink_s": round(time.perf_counter() - started, 1)}
        for device in devices:
            pair = [copy.deepcopy(m).to(device) for m in (original, shrunk)]
            row[f"original_ms_{device}"], row[f"ms_{device}"] = inference_ms(pair, time_input.to(device), args.repeats)
        print(f"{name}: {row}", flush=True)
        rows.append(row)
    return baseline, rows


def table(name, baseline, rows, devices, size):
    columns = ["kept", "kernels kept", "parameters", "conv GMACs", "what is left"]
    for device in devices:
        columns += [f"{device} original ms", f"{device} shrunk ms", f"{device} speedup"]
    result = PrettyTable(columns)
    result.add_row(["1.00", "1.0000", f"{baseline['params']:,}", f"{baseline['macs'] / 1e9:.3f}", baseline["structure"]]
                   + ["", "", ""] * len(devices))
    for row in rows:
        cells = [f"{row['kept']:.2f}", f"{row['kernels_kept']:.4f}", f"{row['params']:,}", f"{row['macs'] / 1e9:.3f}", row["structure"]]
        for device in devices:
            original, shrunk = row[f"original_ms_{device}"], row[f"ms_{device}"]
            cells += [f"{original:.1f}", f"{shrunk:.1f}", f"{original / shrunk:.2f}x"]
        result.add_row(cells)
    result.align = "r"
    return f"{name} (input 1x1x{size}x{size})\n{result.get_string()}"


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--models", nargs="+", choices=sorted(MODELS), default=["fcn", "msd"])
    parser.add_argument("--kept", nargs="+", type=float, default=[0.5, 0.2, 0.1, 0.05])
    parser.add_argument("--method", choices=["lean", "indivsv", *CRITERIA], default="lean",
                        help="LEAN, IndivSV, or a Pruning by Explaining criterion (on --reference-images random "
                             "inputs labelled by the model's own predictions)")
    parser.add_argument("--granularity", choices=["kernel", "filter"], default="kernel",
                        help="what the criteria remove: kernels or whole filters (default kernel)")
    parser.add_argument("--reference-images", type=int, default=4)
    parser.add_argument("--reference-data", type=Path, default=None,
                        help="CS data folder whose first training images the criteria score (default: random images)")
    parser.add_argument("--steps", type=int, default=2, help="pruning steps between consecutive fractions")
    parser.add_argument("--fcn-size", type=int, default=128, help="timing input size of FCN-ResNet50")
    parser.add_argument("--msd-size", type=int, default=256, help="timing input size of MS-D")
    parser.add_argument("--msd-depth", type=int, default=50)
    parser.add_argument("--trace-size", type=int, default=64, help="input size used to prune and shrink")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--device", choices=["auto", "cpu", "cuda"], default="auto",
                        help="auto: the CPU, and CUDA too when available")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's)")
    parser.add_argument("--fcn-weights", help="FCN-ResNet50 state_dict or prune_example_resnet50.py checkpoint "
                                                   "(1 input channel, 5 classes)")
    parser.add_argument("--msd-checkpoint", help="MS-D checkpoint (c_in 1, 5 labels, --msd-depth)")
    parser.add_argument("--json", help="also write the measurements to this file")
    args = parser.parse_args(argv)
    if any(not 0 < kept <= 1 for kept in args.kept) or sorted(args.kept, reverse=True) != args.kept:
        parser.error("--kept: fractions in (0, 1], in decreasing order")
    if args.device == "cuda" and not torch.cuda.is_available():
        parser.error("--device cuda: CUDA is not available")
    for option in ("fcn_weights", "msd_checkpoint"):
        if getattr(args, option) and not Path(getattr(args, option)).is_file():
            parser.error(f"--{option.replace('_', '-')}: no such file {getattr(args, option)}")
    return args


def main(argv=None):
    args = parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    devices = ["cpu"] if args.device == "cpu" else ["cuda"] if args.device == "cuda" else \
        ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])
    print(f"torch {torch.__version__}, {torch.get_num_threads()} CPU threads, devices {devices}, "
          f"method {args.method}", flush=True)
    results, tables = {}, []
    for name in args.models:
        baseline, rows = benchmark_model(name, args, devices)
        results[name] = {"original": baseline, "shrunk": rows}
        size = getattr(args, MODELS[name][3])
        tables.append(table(name, baseline, rows, devices, size))
    print("\n\n".join(tables))
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
