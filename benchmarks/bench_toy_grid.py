"""Time the toy experiment's runs the reference's way (one ``python main.py`` process per run, the
generated scripts' lines) and as one grid command, on the same runs, with the same parallelism.

    python benchmarks/bench_toy_grid.py [-d all] [-c all] [-n 5,50] [-s 0] [--jobs 1] [--grow 4]

Prints seconds per run of both ways and their ratio, checks that both logs hold the same lines,
and times a grid ``--grow`` times larger (more seeds) to separate the grid's fixed start-up from
its cost per run, projecting the paper's 4800-run grid both ways. Uses the shipped models.
"""
import argparse
import shlex
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
import toy_grid  # noqa: E402
import toy_sweep  # noqa: E402

PAPER_GRID_RUNS = 4800


def script_lines(runs, root):
    """The generated scripts' lines (``python main.py -d .. -c .. -n .. -s .. -l ..``) of ``runs``."""
    wanted = {(run.dataset, run.criterion, run.samples_per_class, run.seed) for run in runs}
    lines = {}
    for script in toy_sweep.write_scripts(root):
        for line in script.read_text(encoding="utf-8").splitlines():
            if line.startswith("python main.py "):
                words = shlex.split(line)
                options = dict(zip(words[2::2], words[3::2]))
                key = (options["-d"], options["-c"], int(options["-n"]), int(options["-s"]))
                if key in wanted:
                    lines[key] = words
    missing = wanted - set(lines)
    if missing:
        raise SystemExit(f"bench_toy_grid.py: runs outside the paper's grid: {sorted(missing)[:3]}")
    return [lines[(run.dataset, run.criterion, run.samples_per_class, run.seed)] for run in runs]


def with_log(words, log):
    """A script line run with this interpreter, logging to ``log``."""
    words = list(words)
    words[0] = sys.executable
    words[1] = str(ROOT / "main.py")
    words[words.index("-l") + 1] = str(log)
    return words


def run_checked(command):
    result = subprocess.run(command, cwd=ROOT, capture_output=True, text=True)
    if result.returncode != 0:
        raise SystemExit(f"bench_toy_grid.py: {' '.join(command)} failed: {result.stderr.strip()}")
    return result.stdout


def time_per_process(lines, log, jobs):
    """Seconds for running every line as its own process, ``jobs`` at a time (like ``bash script &``)."""
    start = time.perf_counter()
    with ThreadPoolExecutor(jobs) as pool:
        list(pool.map(run_checked, [with_log(words, log) for words in lines]))
    return time.perf_counter() - start


def time_grid(flags, log, jobs):
    """Seconds for one ``python main.py`` grid command over ``flags``, start-up included."""
    start = time.perf_counter()
    run_checked([sys.executable, str(ROOT / "main.py"), *flags, "-l", str(log), "--jobs", str(jobs), "--quiet"])
    return time.perf_counter() - start


def sorted_lines(path):
    return sorted(Path(path).read_text(encoding="utf-8").splitlines())


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("-d", default="all")
    parser.add_argument("-c", default="all")
    parser.add_argument("-n", default="5,50")
    parser.add_argument("-s", default="0")
    parser.add_argument("--jobs", type=int, default=1, help="processes at a time (both ways)")
    parser.add_argument("--grow", type=int, default=4, help="the larger grid has this many times the seeds")
    args = parser.parse_args(argv)
    runs = toy_grid.parse_grid(args.d, args.c, args.n, args.s)
    seeds = sorted({run.seed for run in runs})
    grown_seeds = f"{seeds[0]}-{seeds[0] + args.grow * len(seeds) - 1}"
    grown = toy_grid.parse_grid(args.d, args.c, args.n, grown_seeds)

    with tempfile.TemporaryDirectory() as folder:
        folder = Path(folder)
        lines = script_lines(runs, folder)
        per_process = time_per_process(lines, folder / "per-process.txt", args.jobs)
        grid = time_grid(["-d", args.d, "-c", args.c, "-n", args.n, "-s", args.s], folder / "grid.txt", args.jobs)
        grid_grown = time_grid(["-d", args.d, "-c", args.c, "-n", args.n, "-s", grown_seeds],
                               folder / "grid-grown.txt", args.jobs)
        same = sorted_lines(folder / "per-process.txt") == sorted_lines(folder / "grid.txt")

    per_process_run = per_process / len(runs)
    marginal = (grid_grown - grid) / (len(grown) - len(runs))
    start_up = max(0.0, grid - marginal * len(runs))
    paper_grid = start_up + marginal * PAPER_GRID_RUNS
    print(f"{len(runs)} runs ({args.d} x {args.c} x n {args.n} x seeds {args.s}), {args.jobs} at a time")
    print(f"  per process (the scripts' lines): {per_process:8.1f} s  {per_process_run:7.3f} s per run")
    print(f"  one grid command:                 {grid:8.1f} s  {grid / len(runs):7.3f} s per run  "
          f"ratio {per_process / grid:5.1f}x")
    print(f"  same log lines both ways: {'yes' if same else 'NO'}")
    print(f"{len(grown)} runs as one grid command:       {grid_grown:8.1f} s  {grid_grown / len(grown):7.3f} s per run"
          f"  ratio {per_process_run * len(grown) / grid_grown:5.1f}x")
    print(f"  grid start-up {start_up:.1f} s, then {marginal:.3f} s per run")
    print(f"paper grid ({PAPER_GRID_RUNS} runs), projected: "
          f"per process {per_process_run * PAPER_GRID_RUNS / 3600:.1f} h, one grid {paper_grid / 60:.1f} min, "
          f"ratio {per_process_run * PAPER_GRID_RUNS / paper_grid:.0f}x")
    return 0 if same else 1


if __name__ == "__main__":
    sys.exit(main())
