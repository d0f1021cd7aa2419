"""Command line of the "Pruning by Explaining" toy experiment: one pruning run, sweep scripts, log analysis.

    python main.py -d moon -c lrp -n 10 -s 1 -l ./output/log.txt    # one run, 4 log lines
    python main.py -g [-rl | -nt SIGMA]                              # write the sweep scripts
    python main.py -a -l ./output/log.txt [-rl]                      # plots / rank tables

Only argument handling, validation and dispatch live here; heavy modules load after validation.
"""
import argparse
import math
import sys
from pathlib import Path

import toy_log

RENDER_MODES = ("none", "svg", "show")
DEVICES = ("auto", "cpu", "cuda")


class _OneLineErrorParser(argparse.ArgumentParser):
    """Report bad arguments as one line on stderr (no usage dump) and exit with status 2."""

    def error(self, message):
        self.exit(2, f"{self.prog}: error: {message}\n")


def build_parser():
    parser = _OneLineErrorParser(prog="main.py", description="Neural Network Pruning Toy experiment")
    parser.add_argument("--dataset", "-d", default="mult", choices=toy_log.DATASETS,
                        help="The toy dataset to use. Choices: " + ", ".join(toy_log.DATASETS))
    parser.add_argument("--criterion", "-c", default="lrp", choices=toy_log.CRITERIA,
                        help="The criterion to use for pruning. Choices: " + ", ".join(toy_log.CRITERIA))
    parser.add_argument("--numsamples", "-n", type=int, default=5,
                        help="Number of training samples (per class) to use for computing the pruning criterion.")
    parser.add_argument("--seed", "-s", type=int, default=1,
                        help="Random seed used for (random) sample selection for pruning criterion computation.")
    parser.add_argument("--rendermode", "-r", default="none", choices=RENDER_MODES,
                        help="Is result visualization desired? Choices: none, svg, show")
    parser.add_argument("--colormap", "-cm", default="Dark2",
                        help="The colormap to use for rendering the output figures. "
                             "Must be a valid one from matplotlib.")
    parser.add_argument("--logfile", "-l", default="./log.txt",
                        help="Output log file location. Results will be appended. A missing folder is created.")
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
    return parser


def validate(args):
    """Return a message for the first invalid argument, or None."""
    if args.numsamples < 1:
        return f"--numsamples must be at least 1, got {args.numsamples}"
    if not 0 <= args.seed < 2 ** 32:
        return f"--seed must be between 0 and 2**32 - 1, got {args.seed}"
    if not (math.isfinite(args.noisytest) and args.noisytest >= 0):
        return f"--noisytest must be a finite standard deviation >= 0, got {args.noisytest}"
    if args.generate and args.ranklog and args.noisytest > 0:
        return "--generate takes either --ranklog or --noisytest, not both"
    import matplotlib
    if args.colormap not in matplotlib.colormaps:
        return f"unknown colormap {args.colormap!r}; use a matplotlib colormap name such as Dark2, Set1 or tab10"
    return None


def generate(args):
    import toy_sweep
    for path in toy_sweep.write_scripts(".", ranklog=args.ranklog, noisy_sigma=args.noisytest):
        print(f"wrote {path}")


def analyze(args):
    import toy_analysis
    records = toy_log.read_log(args.logfile)
    out_dir = Path(args.logfile).parent
    if args.ranklog:
        for path in toy_analysis.write_rank_tables(records, out_dir, progress=sys.stderr.isatty()):
            print(f"wrote {path}")
        return
    written, means = toy_analysis.write_accuracy_plots(records, out_dir, show=args.rendermode == "show")
    print(means)
    for path in written:
        print(f"wrote {path}")


def run_once(args):
    try:
        toy_log.check_writable(args.logfile)
    except OSError as error:
        raise OSError(f"cannot write log file {args.logfile}: {error.strerror or error}") from None
    import toy_pruning
    device = toy_pruning.resolve_device(args.device)
    prepared = toy_pruning.prepare(args.dataset, device)
    result = toy_pruning.run(prepared, args.criterion, args.numsamples, args.seed,
                             noisy_sigma=args.noisytest, rank_log=args.ranklog)
    toy_log.append_lines(args.logfile, result.lines)
    if args.ranklog:
        print(f"{result.lines[0].split(' ')[0]} [{len(result.order)} neuron indices] -> {args.logfile}")
        return
    for line in result.lines:
        print(line)
    if args.rendermode != "none":
        import toy_analysis
        out_dir = Path(args.logfile).parent if args.rendermode == "svg" else None
        for path in toy_analysis.render_evaluations(result.evaluations, prepared.train_X, args.criterion,
                                                    args.colormap, out_dir, show=args.rendermode == "show"):
            print(f"wrote {path}")


def main(argv=None):
    args = build_parser().parse_args(argv)
    problem = validate(args)
    if problem:
        print(f"main.py: error: {problem}", file=sys.stderr)
        return 2
    try:
        if args.generate:
            generate(args)
        elif args.analyze:
            analyze(args)
        else:
            run_once(args)
    except (OSError, ValueError) as error:
        print(f"main.py: error: {error}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("main.py: interrupted", file=sys.stderr)
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
