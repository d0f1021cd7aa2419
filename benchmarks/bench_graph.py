"""Benchmark the LEAN chain extraction: straightforward (reference) engine vs the fast engine.

Run: ``python benchmarks/bench_graph.py`` (all cases) or ``--case NAME`` (one case). Every case
runs in its own process so that its peak memory (ru_maxrss) is its own. Engines that would
run longer than ``--cap`` seconds are stopped; their total time is extrapolated from the chains
per second so far and the number of chains of the complete run (when another engine finished it).

Cases: MS-D depth 50/100/200 (c_in 1, c_out 1, keep 50 %) and an FCN-ResNet50-sized graph
(~27k nodes, ~14.4M edges, keep 10 %) under three norm regimes:
  ``hub``     lognormal norms with median 1 (long chains through the whole network),
  ``mixed``   lognormal norms with median exp(-1) (shorter chains),
  ``fan_in``  median 1/sqrt(fan_in) as in a trained, batch-normalised network (few chains).
"""
import argparse
import json
import resource
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
import graph_algorithms as ga  # noqa: E402
from benchmarks.capped_engines import TimeCap, capped  # noqa: E402
from benchmarks.synthetic_graphs import msd_graph, resnet_graph  # noqa: E402

CASES = {
    "msd50": dict(kind="msd", depth=50, kept=0.5),
    "msd100": dict(kind="msd", depth=100, kept=0.5),
    "msd200": dict(kind="msd", depth=200, kept=0.5),
    "resnet50_hub": dict(kind="resnet", log_mean=0.0, kept=0.1),
    "resnet50_mixed": dict(kind="resnet", log_mean=-1.0, kept=0.1),
    "resnet50_fan_in": dict(kind="resnet", fan_in=True, kept=0.1),
}


def build_case(spec, seed=0):
    rng = np.random.default_rng(seed)
    if spec["kind"] == "msd":
        return msd_graph(spec["depth"], c_in=1, c_out=1, rng=rng)
    if spec.get("fan_in"):
        n, src, dst, weight, skip = resnet_graph(rng=rng, log_sigma=0.5)
        fan_in = np.bincount(src, minlength=n)[src]  # edges per output channel = its fan-in
        weight = np.where(skip, weight, weight * (2.0 / np.sqrt(fan_in))).astype(np.float32)
        return n, src, dst, weight, skip
    return resnet_graph(rng=rng, log_mean=spec["log_mean"])


FINDERS = {"reference": ga.ReferenceChainFinder, "lazy": ga.LazyChainFinder, "levels": ga.LevelChainFinder}


def fast_engine_name(graph):
    """The engine that ``engine="fast"`` picks for this graph."""
    finder = ga._chain_finder(graph, "fast")
    return next(name for name, cls in FINDERS.items() if isinstance(finder, cls))


def run_engine(graph, perc, engine, cap):
    stats = {}
    label = engine
    if engine == "fast":
        engine = fast_engine_name(graph)
        label = f"fast={engine}"
    factory = FINDERS[engine]
    wall, cpu = time.perf_counter(), time.process_time()
    try:
        result = ga.lean_extraction(graph, perc, engine=capped(factory, cap, stats))
        finished = True
    except TimeCap:
        result, finished = None, False
    return {
        "engine": label, "finished": finished, "wall_s": time.perf_counter() - wall,
        "cpu_s": time.process_time() - cpu, "chains": stats.get("chains", 0),
        "edges_kept_by_chains": stats.get("edges_kept", 0),
        "stop_reason": result.stop_reason if finished else None,
        "to_prune": result.to_prune if finished else None,
    }


def run_case(name, cap, engines, reference_cap=None):
    spec = CASES[name]
    start = time.perf_counter()
    n, src, dst, weight, skip = build_case(spec)
    graph = ga.build_edge_graph(n, src, dst, weight, skip)
    build_s = time.perf_counter() - start
    del src, dst, weight, skip
    perc = 1.0 - spec["kept"]
    report = {"case": name, "nodes": graph.n_nodes, "edges": graph.n_edges, "build_s": build_s, "runs": []}
    for engine in engines:
        limit = reference_cap if engine == "reference" and reference_cap is not None else cap
        run = run_engine(graph, perc, engine, limit)
        report["runs"].append(run)
    finished = [r for r in report["runs"] if r["finished"]]
    if len(finished) >= 2:
        report["identical"] = all(bool((r["to_prune"] == finished[0]["to_prune"]).all()) for r in finished[1:])
    for run in report["runs"]:
        run.pop("to_prune")
    report["peak_rss_gb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20
    return report


def summarise(report):
    total_chains = next((r["chains"] for r in report["runs"] if r["finished"]), None)
    lines = [f"{report['case']}: {report['nodes']} nodes, {report['edges']} edges, graph build "
             f"{report['build_s']:.2f} s, peak RSS {report['peak_rss_gb']:.2f} GB"]
    times = {}
    for run in report["runs"]:
        per_chain = run["wall_s"] / max(run["chains"], 1)
        if run["finished"]:
            times[run["engine"]] = run["wall_s"]
            lines.append(f"  {run['engine']:9s} {run['wall_s']:9.2f} s wall ({run['cpu_s']:.2f} s CPU), "
                         f"{run['chains']} chains ({run['chains'] / run['wall_s']:.1f}/s), "
                         f"stop: {run['stop_reason']}")
        else:
            estimate = f"~{per_chain * total_chains:.0f} s extrapolated" if total_chains else "total unknown"
            times[run["engine"]] = per_chain * total_chains if total_chains else None
            lines.append(f"  {run['engine']:9s} stopped after {run['wall_s']:.1f} s: {run['chains']} chains "
                         f"({run['chains'] / run['wall_s']:.2f}/s, {run['edges_kept_by_chains']} edges kept), "
                         f"{estimate}")
    fast = next((label for label in times if label != "reference" and times[label]), None)
    if times.get("reference") and fast:
        lines.append(f"  speed-up (reference / {fast}): {times['reference'] / times[fast]:.1f}x")
    if "identical" in report:
        lines.append(f"  identical selections: {report['identical']}")
    return "\n".join(lines)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--case", choices=sorted(CASES), help="run one case in this process")
    parser.add_argument("--cases", nargs="+", default=list(CASES), choices=sorted(CASES))
    parser.add_argument("--cap", type=float, default=60.0, help="seconds per engine run (default 60)")
    parser.add_argument("--reference-cap", type=float, default=None,
                        help="seconds for the reference engine (default: --cap)")
    parser.add_argument("--engines", nargs="+", default=["reference", "fast"],
                        choices=["reference", "fast", "lazy", "levels"])
    parser.add_argument("--json", action="store_true", help="print the raw report as JSON")
    args = parser.parse_args()
    if args.case:
        report = run_case(args.case, args.cap, args.engines, args.reference_cap)
        print(json.dumps(report) if args.json else summarise(report), flush=True)
        return
    for name in args.cases:
        command = [sys.executable, __file__, "--case", name, "--cap", str(args.cap), "--engines", *args.engines]
        if args.reference_cap is not None:
            command += ["--reference-cap", str(args.reference_cap)]
        completed = subprocess.run(command, capture_output=True, text=True)
        print(completed.stdout.rstrip() or completed.stderr.rstrip(), flush=True)


if __name__ == "__main__":
    main()
