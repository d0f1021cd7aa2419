"""Benchmark one LEAN pruning step end to end (norms, graph, extraction, masks): straightforward vs fast.

    python benchmarks/bench_lean.py [--cases msd50 msd100 msd200 resnet50] [--cap-seconds 30]
                                    [--device cpu|cuda] [--weights calibrated|init]

Cases: ``LEAN_SV_MSD`` on MS-D depth 50/100/200 (c_in 1, 2 labels, dilations 1..10) keeping
50 %, and ``LEAN_SV_ResNet50`` on FCN-ResNet50 (3 input channels, 21 classes, BatchNorm
statistics randomised) keeping 10 %. Implementations:
  fast      the library as it is: batched Fourier norms, ``engine="fast"`` (numba when installed);
  straight  the straightforward algorithms: a Python loop over kernels (one FFT each) for the
            norms and a full dynamic programme per chain (``engine="reference"``). Each of the
            two phases stops after ``--cap-seconds``; its total is then extrapolated from the
            kernels (chains) per second and the number of kernels (chains of the fast run, which
            selects exactly the same chains).
Weights: ``calibrated`` (default) scales every layer so that its median BatchNorm-scaled
spectral norm is 1, which gives chains through the whole network as in trained networks
(FCN-ResNet50: ~44,000 chains); ``init`` keeps the random initialisation (few chains, then an
early stop and the percentile fallback).
Every (case, implementation) runs in a fresh process, so the peak memory (ru_maxrss) is its own.
The numba kernels are compiled once before the cases; each fast process then loads them from
numba's on-disk cache before the timed step (shown apart, "numba load s": once per process).
Timings on a shared machine are noisy: the table shows the 1-minute load average and the
process CPU time next to the wall time.
"""
import argparse
import importlib.util
import json
import os
import resource
import subprocess
import sys
import time
from pathlib import Path
from unittest import mock

import numpy as np
import torch
from prettytable import PrettyTable

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
import graph_algorithms as ga  # noqa: E402
from pruning_toolkit import chains, norm_graph, selection  # noqa: E402
import pruning_algorithms as pa  # noqa: E402
from benchmarks.capped_engines import TimeCap, capped  # noqa: E402

CASES = {
    "msd50": dict(kind="msd", depth=50, kept=0.5),
    "msd100": dict(kind="msd", depth=100, kept=0.5),
    "msd200": dict(kind="msd", depth=200, kept=0.5),
    "resnet50": dict(kind="resnet", kept=0.1),
}
IMPLEMENTATIONS = ("fast", "straight")


# --------------------------------------------------------------------------------------------
# Models
# --------------------------------------------------------------------------------------------

def build_model(spec, weights, device):
    """(model, channel graph, LEAN step function, Fourier size) of a benchmark case."""
    torch.manual_seed(0)
    if spec["kind"] == "msd":
        import msd
        model = msd.MSDSegmentationModel(1, 2, spec["depth"], 1, dilations=list(range(1, 11)), device=device)
        graph, step, fourier_size = norm_graph.msd_channel_graph(model), pa.LEAN_SV_MSD, pa.MSD_FOURIER_SIZE
    else:
        from fcn_resnet import fcn_resnet50
        model = fcn_resnet50(num_classes=21, in_channels=3).eval().to(device)
        randomize_batchnorms(model)
        graph, step, fourier_size = norm_graph.resnet50_channel_graph(model), pa.LEAN_SV_ResNet50, pa.RESNET_FOURIER_SIZE
    if weights == "calibrated":
        calibrate(graph, fourier_size)
    return model, graph, step, fourier_size


@torch.no_grad()
def randomize_batchnorms(model):
    """BatchNorm scales |gamma| / sqrt(var + eps) spread as in a trained network (not all 1)."""
    generator = torch.Generator().manual_seed(0)
    for module in model.modules():
        if isinstance(module, torch.nn.BatchNorm2d):
            module.weight.copy_(torch.randn(module.weight.shape, generator=generator))
            module.running_var.copy_(torch.rand(module.running_var.shape, generator=generator) + 0.5)


@torch.no_grad()
def calibrate(graph, fourier_size):
    """Scale each layer's weights so that its median BatchNorm-scaled spectral norm is 1
    (all-zero layers, like MS-D's initial final layer, get standard normal weights first)."""
    for layer in graph.layers:
        weight = getattr(layer.module, layer.name)
        if not weight.any():
            weight.normal_()
    for layer, norms in zip(graph.layers, pa.layer_norms(graph, "sv", fourier_size)):
        getattr(layer.module, layer.name).div_(float(np.median(norms)))


# --------------------------------------------------------------------------------------------
# The straightforward norms: one FFT per kernel in a Python loop (as the reference)
# --------------------------------------------------------------------------------------------

def straightforward_norms(graph, fourier_size, cap_seconds):
    """Time the per-kernel loop over all layers, stopping after ``cap_seconds``: (seconds, kernels done, total)."""
    total = graph.num_convolutions
    done = 0
    start = time.perf_counter()
    for layer in graph.layers:
        weight = pa.masked_weight(layer.module, layer.name).double().cpu().numpy()
        kernels = weight.reshape(weight.shape[0] * weight.shape[1], *weight.shape[2:])
        scale = None if layer.batchnorm is None else norm_graph.batchnorm_scale(layer.batchnorm)
        norms = np.empty(len(kernels))
        for index, kernel in enumerate(kernels):
            if kernel.size == 1:
                norms[index] = abs(kernel.item())
            else:
                norms[index] = np.abs(np.fft.fft2(kernel.reshape(kernel.shape[-2:]), (fourier_size, fourier_size))).max()
            if scale is not None:
                norms[index] *= scale[index // weight.shape[1]]
            done += 1
            if done % 1000 == 0 and time.perf_counter() - start > cap_seconds:
                return time.perf_counter() - start, done, total
    return time.perf_counter() - start, done, total


# --------------------------------------------------------------------------------------------
# One (case, implementation) in this process
# --------------------------------------------------------------------------------------------

def run_worker(case, implementation, cap_seconds, weights, device):
    spec = CASES[case]
    model, graph, step, fourier_size = build_model(spec, weights, device)
    times = {"norms": 0.0, "selection": 0.0, "extraction": 0.0}
    report = {"case": case, "implementation": implementation, "nodes": int(graph.num_nodes),
              "convolutions": int(graph.num_convolutions), "load_before": os.getloadavg()[0]}
    chain_stats = {}
    real_layer_norms, real_selection, real_extraction = (selection.layer_norms, selection.lean_selection,
                                                          chains.lean_extraction)

    def timed_norms(*args, **kwargs):
        if implementation == "straight":
            seconds, done, total = straightforward_norms(graph, fourier_size, cap_seconds)
            report.update(norm_kernels_done=done, norm_kernels_total=total)
            times["norms"] += seconds
            return real_layer_norms(*args, **kwargs)  # the selection continues with the same values
        start = time.perf_counter()
        norms = real_layer_norms(*args, **kwargs)
        if device.startswith("cuda"):
            torch.cuda.synchronize()
        times["norms"] += time.perf_counter() - start
        return norms

    def timed_selection(*args, **kwargs):
        start = time.perf_counter()
        try:
            return real_selection(*args, **kwargs)
        finally:
            times["selection"] += time.perf_counter() - start

    def timed_extraction(graph_, perc, engine="fast", verbose=False):
        if implementation == "straight":
            engine = capped(ga.ReferenceChainFinder, cap_seconds, chain_stats)
        start = time.perf_counter()
        try:
            result = real_extraction(graph_, perc, engine=engine, verbose=verbose)
        finally:
            times["extraction"] += time.perf_counter() - start
        report.update(chains=result.n_chains, stop_reason=result.stop_reason)
        return result

    report["numba_load_s"] = warm_up_numba() if implementation == "fast" else None  # once per process
    wall, cpu = time.perf_counter(), time.process_time()
    with mock.patch.object(selection, "layer_norms", timed_norms), \
            mock.patch.object(selection, "lean_selection", timed_selection), \
            mock.patch.object(chains, "lean_extraction", timed_extraction):
        try:
            step(model, spec["kept"])
            report["finished"] = True
        except TimeCap:
            report.update(finished=False, chains=chain_stats["chains"])
    report.update(
        total_s=time.perf_counter() - wall, cpu_s=time.process_time() - cpu, norms_s=times["norms"],
        graph_s=times["selection"] - times["extraction"], extraction_s=times["extraction"],
        masks_s=(time.perf_counter() - wall) - times["norms"] - times["selection"] if implementation == "fast" else None,
        peak_rss_gb=resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20, load_after=os.getloadavg()[0])
    return report


def warm_up_numba():
    """Compile (or load from numba's cache) the engine's kernels; returns the seconds taken, or None."""
    if importlib.util.find_spec("numba") is None:
        return None
    start = time.perf_counter()
    matrix = np.triu(np.full((6, 6), 2.0), 1)
    ga.longest_path_prune(matrix, 0.5, engine="numba")
    return time.perf_counter() - start


# --------------------------------------------------------------------------------------------
# The table
# --------------------------------------------------------------------------------------------

def extrapolate(straight, fast):
    """Fill the straightforward run's extrapolated phase times (seconds), where capped."""
    norms = straight["norms_s"]
    if straight.get("norm_kernels_done", 0) < straight.get("norm_kernels_total", 0):
        norms *= straight["norm_kernels_total"] / straight["norm_kernels_done"]
    extraction = straight["extraction_s"]
    if not straight["finished"]:
        extraction = (extraction / max(straight["chains"], 1)) * fast["chains"] if fast else None
    straight["norms_est_s"], straight["extraction_est_s"] = norms, extraction


def seconds(value, estimated=False):
    if value is None:
        return "-"
    return f"~{value:.1f}" if estimated else f"{value:.2f}"


def table(reports):
    rows = PrettyTable(["case", "nodes / convs", "implementation", "norms s", "graph s", "extraction s",
                        "chains (per s)", "masks s", "step s", "CPU s", "numba load s", "peak RSS GB", "load"])
    rows.align = "r"
    for case in dict.fromkeys(r["case"] for r in reports):
        fast = next((r for r in reports if r["case"] == case and r["implementation"] == "fast"), None)
        straight = next((r for r in reports if r["case"] == case and r["implementation"] == "straight"), None)
        if straight is not None:
            extrapolate(straight, fast)
        for report in (fast, straight):
            if report is None:
                continue
            capped_norms = report.get("norm_kernels_done", 0) < report.get("norm_kernels_total", 0)
            norms = seconds(report.get("norms_est_s", report["norms_s"]), capped_norms)
            if capped_norms:
                norms += f" ({report['norm_kernels_done'] / report['norms_s']:.0f} kernels/s)"
            extraction = seconds(report.get("extraction_est_s", report["extraction_s"]), not report["finished"])
            rate = report["chains"] / report["extraction_s"] if report["extraction_s"] else 0
            chains = f"{report['chains']}{'' if report['finished'] else ' done'} ({rate:.1f})"
            rows.add_row([case, f"{report['nodes']} / {report['convolutions']}", report["implementation"], norms,
                          seconds(report["graph_s"]), extraction, chains, seconds(report["masks_s"]),
                          seconds(report["total_s"]) if report["finished"] else f"stopped {report['total_s']:.0f}",
                          f"{report['cpu_s']:.1f}", seconds(report["numba_load_s"]), f"{report['peak_rss_gb']:.2f}",
                          f"{report['load_before']:.1f}-{report['load_after']:.1f}"])
        if fast and straight and fast["finished"]:
            rows.add_row([case, "", "ratio", ratio(straight["norms_est_s"], fast["norms_s"]), "",
                          ratio(straight["extraction_est_s"], fast["extraction_s"]), "", "", "", "", "", "", ""])
    return rows


def ratio(slow, fast):
    return f"{slow / fast:.0f}x" if slow and fast else "-"


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cases", nargs="+", default=list(CASES), choices=list(CASES))
    parser.add_argument("--implementations", nargs="+", default=list(IMPLEMENTATIONS), choices=IMPLEMENTATIONS)
    parser.add_argument("--cap-seconds", type=float, default=30.0,
                        help="time cap of each straightforward phase (norms, extraction); default 30")
    parser.add_argument("--device", default="cpu", choices=["cpu", "cuda"], help="where the model and norms live")
    parser.add_argument("--weights", default="calibrated", choices=["calibrated", "init"])
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's)")
    parser.add_argument("--json", action="store_true", help="also print the raw reports as JSON")
    parser.add_argument("--worker", nargs=2, metavar=("CASE", "IMPLEMENTATION"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.device == "cuda" and not torch.cuda.is_available():
        print("bench_lean.py: --device cuda, but no CUDA device is available", file=sys.stderr)
        sys.exit(2)
    if args.cap_seconds <= 0:
        print(f"bench_lean.py: --cap-seconds must be positive, got {args.cap_seconds}", file=sys.stderr)
        sys.exit(2)
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.worker:
        print(json.dumps(run_worker(*args.worker, args.cap_seconds, args.weights, args.device)))
        return
    compile_s = warm_up_numba()
    device_name = torch.cuda.get_device_name() if args.device == "cuda" else "cpu"
    print(f"LEAN step benchmark: device {device_name}, {os.cpu_count()} CPUs, torch threads "
          f"{torch.get_num_threads()}, weights {args.weights}, cap {args.cap_seconds:g} s per straightforward phase; "
          + ("numba not installed" if compile_s is None else f"numba kernels ready in {compile_s:.1f} s"), flush=True)
    reports = []
    for case in args.cases:
        for implementation in args.implementations:
            command = [sys.executable, __file__, "--worker", case, implementation, "--cap-seconds",
                       str(args.cap_seconds), "--device", args.device, "--weights", args.weights]
            if args.threads:
                command += ["--threads", str(args.threads)]
            completed = subprocess.run(command, capture_output=True, text=True)
            if completed.returncode != 0:
                print(f"{case} / {implementation} failed:\n{completed.stderr.strip()}", file=sys.stderr)
                continue
            reports.append(json.loads(completed.stdout.strip().splitlines()[-1]))
            print(f"  done: {case} / {implementation} ({reports[-1]['total_s']:.1f} s)", flush=True)
    print(table(reports))
    if args.json:
        print(json.dumps(reports))


if __name__ == "__main__":
    main()
