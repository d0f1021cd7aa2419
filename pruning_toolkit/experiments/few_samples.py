"""Pruning by Explaining's few-samples scenario on the CS segmentation networks: one-shot pruning
without fine-tuning, test accuracy against the number of reference images.

    python examples/prune_few_samples.py --model examples/trained_models/msd_network_d=50_epochs=50.torch
        [--architecture msd|resnet50] [--criteria lrp,taylor,grad,weight,lean,indivSV,indivL1]
        [--samples 1,2,5,10,20] [--seeds 0-2] [--kept 0.5,0.2,0.1,0.05] [--granularity kernel|filter]
        [--lrp-rule zplus|epsilon] [--test-images 50] [--results DIR] [--resume]

For every criterion, number of reference images n and seed, n training images are drawn (seeded)
and the criterion's scores computed once on the trained model; then, for every kept fraction, a
fresh copy of the model is pruned in one step (redundancy pruning included) and its test pixel
accuracy measured. Every CS image shows all five classes, so n images are n samples per class.
LEAN, IndivSV, IndivL1 and weight need no reference images: they are run once per kept fraction
(samples 0 in the CSV). At filter granularity each pruned network is evaluated shrunk (as
``shrinking.shrink`` deploys it: the same outputs, faster) and its convolution MACs are recorded
(``conv_macs_kept``: the fraction of the unpruned network's). ``results.csv`` gets one row per
pruned model, appended as it is done (``--resume`` skips what is there); ``results.md`` (mean +- std
over seeds) and ``accuracy_vs_samples.svg/.png`` are rewritten at the end.
"""
import csv
import io
import json
import time
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import DataLoader, Subset

from pruning_toolkit import cli, runtime
from pruning_toolkit.cnn_criteria import ScoreSelection, criterion_scores
from pruning_toolkit.cli import OneLineErrorParser, UsageError
from pruning_toolkit.experiments import EXAMPLES_DIR, msd_training
from pruning_toolkit.experiments import pruning_run as experiment
from pruning_toolkit.experiments.cs_data import cs_split
from pruning_toolkit.experiments.results import save_reproducibly
from pruning_toolkit.files import append_durably, check_writable_folder, write_atomically
from pruning_toolkit.masks import copy_model
from pruning_toolkit.norm_graph import (fraction_pruned_convs_MSD3x3, fraction_pruned_convs_ResNet50,
                                        msd_channel_graph, resnet50_channel_graph)
from pruning_toolkit.pruning_step import prune_step
from pruning_toolkit.shrinking import shrink

PROG = "prune_few_samples.py"
FIELDS = ("criterion", "granularity", "samples", "seed", "target_kept", "kept_fraction", "test_accuracy", "seconds",
          "conv_macs_kept")
LAYOUTS = (FIELDS, FIELDS[:-1])   # results written before conv_macs_kept keep their layout
DATA_FREE = ("lean", "indivSV", "indivL1", "weight")
CRITERIA = ("lrp", "taylor", "grad")
ALL = CRITERIA + DATA_FREE
PLOT_STEM = "accuracy_vs_samples"
PANELS_PER_ROW = 4   # one panel per kept fraction
# run.json keys that must agree for --resume to add rows to a results folder
RUN_SETTINGS = ("model", "architecture", "granularity", "lrp_rule", "train_images", "test_images")


class Architecture:
    """The start model and what one-shot pruning needs of it, for MS-D or FCN-ResNet50."""

    def __init__(self, args):
        self.args = args
        self.msd = args.architecture == "msd"
        from pruning_toolkit.experiments.msd_pruning import MSDPruning
        from pruning_toolkit.experiments.resnet_pruning import ResNetPruning
        self.setup = (MSDPruning if self.msd else ResNetPruning)(args)
        self.model = self.setup.load_model()
        parameter = next(self.net(self.model).parameters())
        # what shrink traces and checks its outputs on (the CS networks take one channel)
        self.example_input = torch.randn(1, 1, 64, 64, generator=torch.Generator().manual_seed(0)).to(parameter)

    def net(self, model):
        return model.net

    def graph(self, model):
        return msd_channel_graph(model, include_final_layer=False) if self.msd else resnet50_channel_graph(model.net)

    def kept_fraction(self, model):
        counts = fraction_pruned_convs_MSD3x3(model) if self.msd else fraction_pruned_convs_ResNet50(model.net)
        return 1 - counts[2]

    def evaluated(self, model):
        """(network, conv MACs kept) of what the test accuracy is measured on: at filter granularity the
        pruned network shrunk (its removed channels cut out, masks baked in; the same outputs, checked, in
        less time) and the fraction of the unpruned network's convolution MACs it computes; else the
        masked network and None."""
        if self.args.granularity != "filter":
            return model, None
        shrunk, report = shrink(self.net(model), self.example_input, keep_masks=False)
        return shrunk, report.macs_after / report.macs_before

    def data_free(self, name, model, kept):
        """One-shot pruning by a method that needs no reference images (the pruning scripts' own step)."""
        self.setup.prune(name, model, kept)


def parse_args(argv=None):
    parser = OneLineErrorParser(prog=PROG, description=__doc__.splitlines()[0])
    parser.add_argument("--model", type=Path, required=True, help="the trained start model")
    parser.add_argument("--architecture", choices=("msd", "resnet50"), default="msd")
    parser.add_argument("--depth", type=int, default=50, help="MS-D depth of --model (default 50)")
    parser.add_argument("--dilations", type=msd_training.parse_int_list, default=list(range(1, 11)),
                        help="MS-D dilation cycle of --model (default 1-10)")
    parser.add_argument("--narrow", action="store_true", help="the narrow FCN-ResNet50 of the --quick runs")
    parser.add_argument("--criteria", default=",".join(ALL),
                        help=f"comma list of {', '.join(ALL)} (default: all)")
    parser.add_argument("--samples", type=msd_training.parse_int_list, default=[1, 2, 5, 10, 20],
                        help="reference images per run (default 1,2,5,10,20)")
    parser.add_argument("--seeds", type=msd_training.parse_int_list, default=[0, 1, 2],
                        help="seeds of the reference draws, e.g. 0-4 (default 0-2)")
    parser.add_argument("--kept", type=lambda text: [float(v) for v in text.split(",")], default=[0.5, 0.2, 0.1, 0.05],
                        help="kept fractions of the one-shot pruning (default 0.5,0.2,0.1,0.05)")
    parser.add_argument("--granularity", choices=("kernel", "filter"), default="kernel")
    experiment.add_lrp_rule(parser)
    parser.add_argument("--data", type=Path, default=EXAMPLES_DIR / "data")
    parser.add_argument("--test-images", type=int, default=None, help="the first N test images (default: all)")
    parser.add_argument("--results", type=Path, default=EXAMPLES_DIR / "my_results" / "few_samples")
    parser.add_argument("--batch-size", type=int, default=5)
    parser.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto")
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--resume", action="store_true", help="keep the rows results.csv holds, run the rest")
    args = parser.parse_args(argv)
    args.criteria = [name.strip() for name in args.criteria.split(",")]
    unknown = [name for name in args.criteria if name not in ALL]
    if unknown:
        raise UsageError(f"--criteria: unknown criterion {unknown[0]!r}; choices: {', '.join(ALL)}")
    if not all(0 < kept <= 1 for kept in args.kept):
        raise UsageError(f"--kept fractions must lie in (0, 1], got {args.kept}")
    if min(args.samples) < 1:
        raise UsageError(f"--samples must be at least 1, got {min(args.samples)}")
    args.quick = args.narrow                 # what ResNetPruning reads for the narrow network
    args.quiet = True
    return args


def run_key(row):
    return (row["criterion"], row["granularity"], int(row["samples"]), int(row["seed"]), f"{float(row['target_kept']):.6f}")


class FewSamplesLog:
    """results.csv of this experiment: read the rows done, append rows whole."""

    def __init__(self, path, resume):
        self.path = Path(path)
        if self.path.is_file() and not resume:
            raise UsageError(f"{self.path} already holds results: continue with --resume or choose another --results")
        if not self.path.is_file():
            write_atomically(self.path, lambda temporary: temporary.write_text(",".join(FIELDS) + "\n"))
        with open(self.path, newline="") as handle:
            lines = handle.read().split("\n")
        complete = "\n".join(lines[:-1])   # a torn last line (no newline) is dropped
        rows = list(csv.DictReader(io.StringIO(complete + "\n")))
        self.fields = tuple(csv.reader([lines[0]]).__next__())
        if self.fields not in LAYOUTS:
            raise ValueError(f"{self.path}: not a results file of {PROG}")
        if lines[-1]:
            write_atomically(self.path, lambda temporary: temporary.write_text(complete + "\n"))
        self.done = {run_key(row) for row in rows}

    def append(self, row):
        buffer = io.StringIO()
        csv.DictWriter(buffer, self.fields, lineterminator="\n", extrasaction="ignore").writerow(row)
        append_durably(self.path, buffer.getvalue().encode("utf-8"))
        self.done.add(run_key(row))


def reference_draw(train_set, samples, seed, batch_size):
    """``samples`` training images drawn without replacement with ``seed``, in batches."""
    indices = np.random.default_rng(seed).choice(len(train_set), size=samples, replace=False)
    return list(DataLoader(Subset(train_set, indices.tolist()), batch_size=batch_size, shuffle=False))


def pruning(architecture, name, train_set, samples, seed):
    """``prune(model, kept)`` of criterion ``name``, scored once on ``samples`` training images drawn with ``seed``."""
    if name in DATA_FREE:
        return lambda model, kept: architecture.data_free(name, model, kept)
    args = architecture.args
    reference = reference_draw(train_set, samples, seed, args.batch_size)
    scores = criterion_scores(architecture.net(architecture.model), architecture.graph(architecture.model),
                              name, reference, args.granularity, args.lrp_rule)
    selection = ScoreSelection(scores, name, args.granularity, args.lrp_rule)
    return lambda model, kept: prune_step(architecture.graph(model), kept, selection)


def one_shot(architecture, prune, kept):
    """(kept fraction, test accuracy, conv MACs kept or None) of a fresh copy of the start model pruned by
    ``prune(model, kept)``."""
    model = copy_model(architecture.model)
    prune(model, kept)
    network, macs_kept = architecture.evaluated(model)
    return architecture.kept_fraction(model), architecture.setup.accuracy(network), macs_kept


def run(args):
    check_writable_folder(args.results, "--results")
    experiment.set_threads(args.threads)
    architecture = Architecture(args)
    train_set = cs_split(args.data, "train")
    test_loader = DataLoader(cs_split(args.data, "test", args.test_images), batch_size=args.batch_size)
    architecture.setup.test_loader = test_loader
    log = FewSamplesLog(args.results / "results.csv", args.resume)
    settings = dict(command=experiment.command_line(PROG), model=experiment.repository_path(args.model),
                    architecture=args.architecture, criteria=args.criteria, samples=args.samples, seeds=args.seeds,
                    kept=args.kept, granularity=args.granularity, lrp_rule=args.lrp_rule, train_images=len(train_set),
                    test_images=len(test_loader.dataset),
                    evaluated="shrunk" if args.granularity == "filter" else "masked",
                    device=str(runtime.resolve_device(args.device)), threads=torch.get_num_threads())
    record = experiment.RunRecord(args.results, settings, args.resume, must_agree=RUN_SETTINGS,
                                  merged=("criteria", "samples", "seeds", "kept"))
    unpruned = architecture.setup.accuracy(architecture.model)
    print(f"start model {args.model}: test accuracy {unpruned:.4f}")
    record.update(unpruned_accuracy=round(unpruned, 6))
    for name in args.criteria:
        draws = [(0, 0)] if name in DATA_FREE else [(n, seed) for n in args.samples for seed in args.seeds]
        for samples, seed in draws:
            todo = [kept for kept in args.kept if
                    (name, args.granularity, samples, seed, f"{kept:.6f}") not in log.done]
            if not todo:
                continue
            clock = time.perf_counter()
            prune = pruning(architecture, name, train_set, samples, seed)
            for kept in todo:
                fraction, accuracy, macs_kept = one_shot(architecture, prune, kept)
                log.append(dict(criterion=name, granularity=args.granularity, samples=samples, seed=seed,
                                target_kept=f"{kept:.6f}", kept_fraction=f"{fraction:.6f}",
                                test_accuracy=f"{accuracy:.6f}", seconds=f"{time.perf_counter() - clock:.1f}",
                                conv_macs_kept="" if macs_kept is None else f"{macs_kept:.6f}"))
                clock = time.perf_counter()
                record.write()
                print(f"{name} samples {samples} seed {seed} kept {kept}: kept {fraction:.4f}, "
                      f"test accuracy {accuracy:.4f}")
    record.write()
    write_summary(args.results)
    return args.results


def summary(rows):
    """{(criterion, kept): {samples: (mean, std, count)}} of the test accuracies over seeds."""
    grouped = {}
    for row in rows:
        key = (row["criterion"], float(row["target_kept"]))
        grouped.setdefault(key, {}).setdefault(int(row["samples"]), []).append(float(row["test_accuracy"]))
    return {key: {n: (float(np.mean(v)), float(np.std(v)), len(v)) for n, v in sorted(per.items())}
            for key, per in grouped.items()}


def macs_summary(rows):
    """{criterion: {kept: mean conv MACs kept}} over the rows that measured it (shrunk networks)."""
    grouped = {}
    for row in rows:
        if row.get("conv_macs_kept"):
            per = grouped.setdefault(row["criterion"], {})
            per.setdefault(float(row["target_kept"]), []).append(float(row["conv_macs_kept"]))
    return {name: {kept: float(np.mean(v)) for kept, v in per.items()} for name, per in grouped.items()}


def markdown(stats, unpruned, macs=None):
    kept_values = sorted({kept for _, kept in stats}, reverse=True)
    samples = sorted({n for per in stats.values() for n in per if n})
    lines = [f"Test accuracy after one-shot pruning, no fine-tuning (unpruned: {unpruned:.4f}); "
             f"mean +- std over seeds; data-free methods in the first column.", ""]
    for kept in kept_values:
        lines += [f"kept {kept}:", "", "| criterion | data-free | " + " | ".join(f"n = {n}" for n in samples) + " |",
                  "|---|---:|" + "---:|" * len(samples)]
        for (name, k), per in stats.items():
            if k != kept:
                continue
            cells = [f"{per[0][0]:.4f}" if 0 in per else ""]
            cells += [f"{per[n][0]:.4f} +- {per[n][1]:.4f}" if n in per else "" for n in samples]
            lines.append(f"| {name} | " + " | ".join(cells) + " |")
        lines.append("")
    if macs:
        lines += ["Convolution MACs of the shrunk networks, as a fraction of the unpruned network's "
                  "(mean over reference draws):", "", "| criterion | " + " | ".join(f"kept {k}" for k in kept_values)
                  + " |", "|---|" + "---:|" * len(kept_values)]
        lines += [f"| {name} | " + " | ".join(f"{per[k]:.4f}" if k in per else "" for k in kept_values) + " |"
                  for name, per in macs.items()]
        lines.append("")
    return "\n".join(lines)


def write_summary(results_dir):
    results_dir = Path(results_dir)
    with open(results_dir / "results.csv", newline="") as handle:
        rows = list(csv.DictReader(handle))
    record = json.loads((results_dir / "run.json").read_text())
    stats = summary(rows)
    text = markdown(stats, record["unpruned_accuracy"], macs_summary(rows))
    write_atomically(results_dir / "results.md", lambda temporary: temporary.write_text(text))
    from matplotlib.figure import Figure
    kept_values = sorted({kept for _, kept in stats}, reverse=True)
    columns = min(len(kept_values), PANELS_PER_ROW)
    rows = -(-len(kept_values) // columns)
    figure = Figure(figsize=(3.6 * columns, 3.4 * rows))
    panels = np.atleast_1d(figure.subplots(rows, columns, sharey=True, squeeze=False).ravel())
    for unused in panels[len(kept_values):]:
        unused.set_visible(False)
    names = list(dict.fromkeys(name for name, _ in stats))
    for axes, kept in zip(panels, kept_values):
        for index, name in enumerate(names):
            per = stats.get((name, kept))
            if not per:
                continue
            colour = f"C{index}"
            if 0 in per:       # data-free: a horizontal line
                axes.axhline(per[0][0], color=colour, linestyle=":", label=name)
                continue
            n = np.array(list(per))
            mean, std = np.array([per[k][0] for k in n]), np.array([per[k][1] for k in n])
            axes.plot(n, mean, marker="o", markersize=3, color=colour, label=name)
            axes.fill_between(n, mean - std, mean + std, color=colour, alpha=0.2, linewidth=0)
        axes.axhline(record["unpruned_accuracy"], color="0.4", linewidth=0.8)
        axes.set_xscale("log")
        axes.set_title(f"kept {kept}", fontsize=9)
        axes.set_xlabel("reference images")
    for first in panels[::columns]:
        first.set_ylabel("test pixel accuracy")
    panels[len(kept_values) - 1].legend(fontsize=7)
    figure.suptitle(f"{record['architecture']}, one-shot {record['granularity']} pruning, no fine-tuning; "
                    f"{len(record['seeds'])} seeds, {record['test_images']} test images", fontsize=9)
    figure.tight_layout()
    for suffix in ("svg", "png"):
        path = results_dir / f"{PLOT_STEM}.{suffix}"
        write_atomically(path, lambda temporary: save_reproducibly(figure, temporary))
    return results_dir


def main(argv=None):
    run(parse_args(argv))


def report_errors(argv=None):
    """The command line: :func:`main` with one-line errors; returns the exit status."""
    return cli.report_errors(PROG, main, argv, "the rows done are saved, continue with --resume")
