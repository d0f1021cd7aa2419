"""Command line of the "Pruning by Explaining" toy experiment: one pruning run, sweep scripts, log analysis.

    python main.py -d moon -c lrp -n 10 -s 1 -l ./output/log.txt    # one run, 4 log lines
    python main.py -d all -c all -n all -s 0-49 -l ./output/log.txt  # the paper's grid, resumable
    python main.py -f -d all -c all -n 5 -s 0 -l ./output-toy-figure/log.txt  # qualitative figure
    python main.py -g [-rl | -nt SIGMA]                              # write the sweep scripts
    python main.py -a -l ./output/log.txt [-rl]                      # plots / rank tables

Only argument handling, validation and dispatch live here; heavy modules load after validation.
``main.py`` at the repository root is the script that calls :func:`main`.
"""
import math
import signal
import sys
import threading
from contextlib import contextmanager
from pathlib import Path

from pruning_toolkit import launcher, toy_log
from pruning_toolkit.cli import OneLineErrorParser
from pruning_toolkit.toy_vocabulary import CRITERIA, DATASETS, SAMPLES_PER_CLASS, SEEDS, TRAINING_SAMPLES_PER_CLASS

RENDER_MODES = ("none", "svg", "show")
DEVICES = ("auto", "cpu", "cuda")


def build_parser():
    parser = OneLineErrorParser(prog="main.py", description="Neural Network Pruning Toy experiment")
    parser.add_argument("--dataset", "-d", default="mult",
                        help="The toy dataset to use. Choices: " + ", ".join(DATASETS) +
                             "; a comma list or 'all' runs a grid (see below).")
    parser.add_argument("--criterion", "-c", default="lrp",
                        help="The criterion to use for pruning. Choices: " + ", ".join(CRITERIA) +
                             "; a comma list or 'all' runs a grid.")
    parser.add_argument("--numsamples", "-n", default=5,
                        help="Number of training samples (per class) to use for computing the pruning criterion, "
                             "at most what the training sets hold per class "
                             f"({min(TRAINING_SAMPLES_PER_CLASS.values())}); a list and ranges (1,2,5 or 10-20) "
                             f"or 'all' ({','.join(map(str, SAMPLES_PER_CLASS))}) run a grid.")
    parser.add_argument("--seed", "-s", default=1,
                        help="Random seed used for (random) sample selection for pruning criterion computation, "
                             f"0 to 4294967295; a list and ranges (0-49 or 0-9,20) or 'all' ({SEEDS[0]}-{SEEDS[-1]}) "
                             "run a grid (of at most 1000000 runs).")
    parser.add_argument("--rendermode", "-r", default="none", choices=RENDER_MODES,
                        help="Is result visualization desired? Choices: none, svg, show")
    parser.add_argument("--colormap", "-cm", default="Dark2",
                        help="The colormap to use for rendering the output figures. "
                             "Must be a valid one from matplotlib.")
    parser.add_argument("--logfile", "-l", default="./log.txt",
                        help="Output log file location (a regular file). Results will be appended. A missing folder "
                             "is created. A file that is not a log of this toolkit is refused, and so is a log "
                             "holding results of another --noisytest sigma (recorded in LOG.noise.json).")
    parser.add_argument("--generate", "-g", action="store_true",
                        help="Generate shell scripts with the parameterized calls of the whole experiment, then "
                             "terminate. Overrides --analyze.")
    parser.add_argument("--analyze", "-a", action="store_true",
                        help="Analyze the log file given with --logfile and write figures (or, with --ranklog, "
                             "tables) next to it.")
    parser.add_argument("--ranklog", "-rl", action="store_true",
                        help="Rank analysis: with -g generate rank-logging scripts, with -a analyze neuron rank "
                             "correlations, otherwise log the neuron ranking instead of pruning.")
    parser.add_argument("--noisytest", "-nt", type=float, default=0.0, metavar="SIGMA",
                        help="If > 0, evaluate the test scenario on 500 new samples with Gaussian input noise of "
                             "this standard deviation (with -g: generate such scripts).")
    parser.add_argument("--device", default="auto", choices=DEVICES,
                        help="Where to compute: auto (CUDA when available), cpu or cuda.")
    parser.add_argument("--jobs", "-j", type=int, default=None,
                        help="Grid runs: number of worker processes (default: the number of cores; on CUDA, 1); "
                             "with --launcher: number of jobs the runs are split into (default 1).")
    parser.add_argument("--quiet", "-q", action="store_true", help="No progress bar.")
    parser.add_argument("--figure", "-f", action="store_true",
                        help="Draw the qualitative figure for the datasets (rows) and criteria (columns) given "
                             "with -d and -c, for one -n and -s, as LOGDIR/qualitative.svg and .png; the runs' "
                             "lines go to the log.")
    launcher.add_arguments(parser)
    parser.epilog = ("Grids: when -d, -c, -n or -s holds a list, a range or 'all', every combination runs in "
                     "this one process tree (--jobs workers, one torch thread each). Runs the log already "
                     "holds are skipped, so an interrupted grid continues when started again.")
    return parser


def validate(args):
    """Return a message for the first invalid argument, or None; sets ``args.runs`` and ``args.grid``."""
    from pruning_toolkit import toy_grid
    try:
        args.runs = toy_grid.parse_grid(args.dataset, args.criterion, args.numsamples, args.seed)
    except ValueError as error:
        return str(error)
    args.grid = any(toy_grid.is_grid_value(value)
                    for value in (args.dataset, args.criterion, args.numsamples, args.seed))
    if not (math.isfinite(args.noisytest) and args.noisytest >= 0):
        return f"--noisytest must be a finite standard deviation >= 0, got {args.noisytest}"
    if args.generate and args.ranklog and args.noisytest > 0:
        return "--generate takes either --ranklog or --noisytest, not both"
    if args.jobs is not None and args.jobs < 1:
        return f"--jobs must be at least 1, got {args.jobs}"
    problem = launcher.check_arguments(args)
    if problem:
        return problem
    if args.launcher and not args.grid:
        return "--launcher runs grids: give a list, a range or 'all' for -d, -c, -n or -s"
    if args.grid and not (args.generate or args.analyze or args.figure) and args.rendermode != "none":
        return "--rendermode svg/show draws single runs only; give single values for -d, -c, -n and -s"
    if args.figure and (len({r.samples_per_class for r in args.runs}) > 1 or len({r.seed for r in args.runs}) > 1):
        return "--figure draws one sample count and one seed: give single values for -n and -s"
    if args.figure and args.ranklog:
        return "--figure draws pruned models; it does not take --ranklog"
    import matplotlib
    if args.colormap not in matplotlib.colormaps:
        return f"unknown colormap {args.colormap!r}; use a matplotlib colormap name such as Dark2, Set1 or tab10"
    return None


def generate(args):
    from pruning_toolkit import toy_sweep
    for path in toy_sweep.write_scripts(".", ranklog=args.ranklog, noisy_sigma=args.noisytest):
        print(f"wrote {path}")


def analyze(args):
    from pruning_toolkit import toy_analysis
    records, duplicates = toy_log.unique_records(toy_log.read_log(args.logfile))
    sigma = toy_log.read_noise(args.logfile)
    if toy_log.torn_tail(args.logfile):
        print(f"main.py: note: {args.logfile} ends with an unfinished line (a writer was killed or is still "
              "writing); it is left out", file=sys.stderr)
    if duplicates:
        print(f"main.py: note: {args.logfile} holds {duplicates} duplicate line{'s' if duplicates > 1 else ''} "
              "(a run logged again); only the first line of each evaluation is used", file=sys.stderr)
    out_dir = Path(args.logfile).parent
    if args.ranklog:
        for path in toy_analysis.write_rank_tables(records, out_dir, progress=not args.quiet and sys.stderr.isatty()):
            print(f"wrote {path}")
        return
    written, means = toy_analysis.write_accuracy_plots(records, out_dir, show=args.rendermode == "show",
                                                       noisy_sigma=sigma)
    print(means)
    for path in written:
        print(f"wrote {path}")


def _log_sigma(args):
    """The test noise the log records for this command's runs (None for rank logs)."""
    from pruning_toolkit import toy_grid
    return toy_grid.log_sigma(args.noisytest, args.ranklog)


def _usable_log(args):
    """Before any work: the log is a regular file we may append to, a log of this toolkit (or empty),
    holding results of this command's test noise."""
    try:
        toy_log.check_log(args.logfile, _log_sigma(args))
    except OSError as error:
        if error.strerror:
            raise OSError(f"cannot write log file {args.logfile}: {error.strerror}") from None
        raise


def run_once(args):
    _usable_log(args)
    from pruning_toolkit import runtime, toy_model, toy_run
    (single,) = args.runs
    device = runtime.resolve_device(args.device)
    with runtime.one_cpu_thread(device):
        prepared = toy_run.prepare(single.dataset, device)
        result = toy_run.run(prepared, single.criterion, single.samples_per_class, single.seed,
                             noisy_sigma=args.noisytest, rank_log=args.ranklog)
    toy_log.append_lines(args.logfile, result.lines, _log_sigma(args))
    if args.ranklog:
        print(f"{result.lines[0].split(' ')[0]} [{len(result.order)} neuron indices] -> {args.logfile}")
        return
    for line in result.lines:
        print(line)
    before, after = toy_model.hidden_widths(prepared.model), toy_model.hidden_widths(result.pruned_model)
    print("pruned neurons per hidden layer: " + ", ".join(f"{b - a} of {b}" for b, a in zip(before, after)))
    if args.rendermode != "none":
        from pruning_toolkit import toy_analysis
        out_dir = Path(args.logfile).parent if args.rendermode == "svg" else None
        for path in toy_analysis.render_evaluations(result.evaluations, prepared.train_X, single.criterion,
                                                    args.colormap, out_dir, show=args.rendermode == "show"):
            print(f"wrote {path}")


def run_grid(args):
    _usable_log(args)
    from pruning_toolkit import runtime, toy_grid
    device = runtime.resolve_device(args.device)
    if args.launcher:
        summary = toy_grid.launch_grid(args.runs, args.logfile, args, device, noisy_sigma=args.noisytest,
                                       rank_log=args.ranklog, jobs=args.jobs or 1)
        if summary is None:
            return
    else:
        summary = toy_grid.run_grid(args.runs, args.logfile, device, jobs=args.jobs or toy_grid.default_jobs(),
                                    noisy_sigma=args.noisytest, rank_log=args.ranklog,
                                    progress=not args.quiet and sys.stderr.isatty())
    per_run = f" ({summary.seconds / summary.done:.3f} s per run)" if summary.done else ""
    print(f"{summary.requested} runs: {summary.skipped} already in {args.logfile}, {summary.done} run now "
          f"in {summary.seconds:.1f} s{per_run}")


def figure(args):
    """The qualitative figure of the runs given (one sample count and seed), next to the log."""
    _usable_log(args)
    from pruning_toolkit import runtime, toy_analysis, toy_grid
    device = runtime.resolve_device(args.device)
    rows = toy_grid.figure_runs(args.runs, args.logfile, device, noisy_sigma=args.noisytest)
    for path in toy_analysis.write_qualitative_figure(rows, args.colormap, Path(args.logfile).parent):
        print(f"wrote {path}")


class _Terminated(KeyboardInterrupt):
    """SIGTERM, handled as Ctrl-C is: workers stopped, the log left whole, one line on stderr."""


@contextmanager
def _sigterm_as_interrupt():
    """Inside, SIGTERM raises :class:`_Terminated` in the main thread (once; a second one is ignored
    while the first is handled); the previous handler is restored after."""
    if not hasattr(signal, "SIGTERM") or threading.current_thread() is not threading.main_thread():
        yield
        return

    def terminate(signum, frame):
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        raise _Terminated()

    previous = signal.signal(signal.SIGTERM, terminate)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def main(argv=None):
    args = build_parser().parse_args(argv)
    problem = validate(args)
    if problem:
        print(f"main.py: error: {problem}", file=sys.stderr)
        return 2
    try:
        with _sigterm_as_interrupt():
            if args.generate:
                generate(args)
            elif args.analyze:
                analyze(args)
            elif args.figure:
                figure(args)
            elif args.grid:
                run_grid(args)
            else:
                run_once(args)
    except (OSError, ValueError) as error:
        print(f"main.py: error: {error}", file=sys.stderr)
        return 1
    except KeyboardInterrupt as error:
        resume = " (the log holds every finished run: the same command continues the grid)" if args.grid else ""
        if isinstance(error, _Terminated):
            print(f"main.py: terminated by SIGTERM{resume}", file=sys.stderr)
            return 128 + signal.SIGTERM
        print(f"main.py: interrupted{resume}", file=sys.stderr)
        return 130
    return 0

