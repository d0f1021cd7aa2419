"""The pruning experiment shared by prune_example_msd.py and prune_example_resnet50.py.

One run evaluates the start model, then, for every requested method and always from the same
start model: ``steps`` times prune to the kept fraction ``ratio ** (step / steps)``, fine-tune
``epochs`` epochs, measure the test pixel accuracy, save the pruned model (atomically) and append
a row to ``results.csv``; the table and plot (plot_results.py) are rewritten after each method.
The architecture-specific parts come from a :class:`PruningSetup`.
"""
import argparse
import csv
import importlib
import io
import json
import math
import os
import shlex
import shutil
import sys
import time
from pathlib import Path

import torch
from torch.utils.data import DataLoader

try:
    import fcntl
except ImportError:  # Windows: no folder lock
    fcntl = None
from tqdm import tqdm

from pruning_toolkit import cli, launcher, runtime
from pruning_toolkit.accuracy import get_global_accuracy
from pruning_toolkit.cli import UsageError
from pruning_toolkit.cnn_lrp import RULES
from pruning_toolkit.experiments import EXAMPLES_DIR, cs_data
from pruning_toolkit.experiments import results as plot_results
from pruning_toolkit.experiments.cs_data import cs_split, has_cs_images
from pruning_toolkit.files import append_durably, check_writable_folder, write_atomically

PAPER_METHODS = ("lean", "indivL1", "indivSV")           # the LEAN paper's comparison: --method all
CRITERIA = ("lrp", "taylor", "grad", "weight")            # Pruning by Explaining's, on reference images
METHODS = PAPER_METHODS + CRITERIA
# how each method is named in the pruned models' file names and in results.csv (the reference's)
METHOD_LABELS = {"lean": "LEAN", "indivL1": "indivL1", "indivSV": "indivSV", "lrp": "LRP", "taylor": "Taylor",
                 "grad": "Grad", "weight": "Weight"}
GRANULARITIES = ("kernel", "filter")
RESULTS_CSV = "results.csv"
RUN_RECORD = "run.json"
# run.json keys that must agree for --resume to continue a run
RUN_SETTINGS = ("model", "train_images", "test_images", "epochs", "steps", "ratio", "batch_size", "seed",
                "reference_images", "granularity", "lrp_rule")
REPO_ROOT = EXAMPLES_DIR.parent
QUICK_DIR = EXAMPLES_DIR / "quick"
QUICK_DATA = dict(counts={"train": 20, "val": 5, "test": 5}, size=64)
# defaults of the flags left at None, per mode; the scripts add their architecture's own
FULL_DEFAULTS = dict(method="lean", steps=15, epochs=3, data=EXAMPLES_DIR / "data")
# one thread: tiny tensors gain nothing from more, and on a busy machine OpenMP threads that
# wait for each other make a small network many times slower
QUICK_DEFAULTS = dict(method="all", steps=3, epochs=1, train_epochs=2, threads=1, data=QUICK_DIR / "data")


class PruningSetup:
    """What an example script supplies for its architecture (the experiment loop is shared)."""

    title = "Test accuracy while pruning"

    def __init__(self, args, test_loader=None):
        self.args = args
        self.test_loader = test_loader

    def load_model(self, path=None):
        """The start model (``path`` None) or a pruned checkpoint, ready to fine-tune."""
        raise NotImplementedError

    reference = None   # the reference batches of the criteria (set when one of CRITERIA runs)

    def prune(self, method, model, kept):
        """One pruning step of ``method`` (a key of METHODS) to the overall kept fraction ``kept``."""
        raise NotImplementedError

    def kept_fraction(self, model):
        """Fraction of the prunable convolutions whose mask is not all zero."""
        raise NotImplementedError

    def learn(self, model, input, target):
        """One optimiser step on one batch (models with msd_pytorch's surface); returns the batch loss."""
        return model.learn(input, target)

    def accuracy(self, model):
        """Pixel accuracy on the test set."""
        return get_global_accuracy(model, self.test_loader)

    def save(self, model, path, epoch):
        """Write ``{"epoch", "state_dict", "optimizer"}`` to ``path`` atomically."""
        model.save(path, epoch)

    def file_name(self, label, target_kept, accuracy):
        """The pruned model's file name (the reference's pattern for its architecture)."""
        raise NotImplementedError


# ================================================================================== flags

def add_arguments(parser, model_default, results_default):
    """The flags both pruning scripts share; defaults None are filled by :func:`fill_defaults`
    (``model_default``/``results_default``: how the script's defaults read in --help)."""
    parser.add_argument("--method", type=parse_methods, default=None,
                        help="pruning method: lean, indivL1, indivSV, or a criterion of Pruning by Explaining "
                             "(lrp, taylor, grad, weight, on --reference-images); a comma list; or all "
                             "(the LEAN paper's three), all from the same start model (default: lean; --quick: all)")
    parser.add_argument("--granularity", choices=GRANULARITIES, default="kernel",
                        help="what the criteria score and remove: kernel (one convolution W[o, i], LEAN's "
                             "unit) or filter (an output channel) (default kernel)")
    parser.add_argument("--reference-images", type=int, default=10,
                        help="the first N training images are the criteria's reference samples (default 10)")
    add_lrp_rule(parser)
    parser.add_argument("--ratio", type=float, default=0.05,
                        help="final fraction of convolutions kept, in (0, 1] (default 0.05)")
    parser.add_argument("--steps", type=int, default=None, help="pruning steps (default 15; --quick: 3)")
    parser.add_argument("--epochs", type=int, default=None,
                        help="fine-tuning epochs after each step (default 3; --quick: 1)")
    parser.add_argument("--model", type=Path, default=None,
                        help=f"the trained start model (default: {model_default})")
    parser.add_argument("--data", type=Path, default=None,
                        help="CS data folder made by generate_example_data.py (default: examples/data)")
    parser.add_argument("--out", type=Path, default=None,
                        help="folder for the pruned models (default: examples/pruned_models)")
    parser.add_argument("--results", type=Path, default=None,
                        help=f"folder for results.csv, run.json, results.md and accuracy_vs_kept.svg/.png "
                             f"(default: {results_default})")
    parser.add_argument("--train-images", type=int, default=None,
                        help="fine-tune on the first N training images only (default: all)")
    parser.add_argument("--test-images", type=int, default=None,
                        help="measure accuracy on the first N test images only (default: all)")
    parser.add_argument("--batch-size", type=int, default=5, help="batch size (default 5)")
    parser.add_argument("--train-epochs", type=int, default=None,
                        help="epochs to train the start model when --model does not exist (ResNet50: default 20; "
                             "MS-D: only with --quick; --quick: 2)")
    parser.add_argument("--size", type=int, default=QUICK_DATA["size"],
                        help="image side of the data --quick generates (default 64)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the data order and initialisation (0)")
    parser.add_argument("--seeds", type=parse_seeds, default=None,
                        help="repeat the experiment with these seeds of the fine-tuning data order, e.g. 0-4 "
                             "(results.csv gets a row per seed, the table and plot mean and spread; each seed's "
                             "models in --out/seed-K)")
    parser.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's choice; --quick: 1)")
    parser.add_argument("--resume", action="store_true",
                        help="continue the run recorded in --results/results.csv instead of starting over")
    parser.add_argument("--overwrite", action="store_true",
                        help="start the selected methods over in a --results folder that holds results "
                             "(the other methods' rows stay)")
    parser.add_argument("--quiet", action="store_true", help="no progress bars")
    launcher.add_arguments(parser)
    parser.add_argument("--quick", action="store_true",
                        help="self-contained smoke run: small generated data, a small network trained "
                             "if missing, few steps; everything under examples/quick/ unless given")


def add_lrp_rule(parser):
    parser.add_argument("--lrp-rule", choices=RULES, default="zplus",
                        help="the LRP rule of the lrp criterion: zplus (the toy experiment's) or epsilon "
                             "(default zplus)")


def fill_defaults(args, full, quick):
    """Replace the flags left at None by the ``quick`` or the ``full`` defaults (dicts by flag name)."""
    for name, value in (quick if args.quick else full).items():
        if getattr(args, name, None) is None:
            setattr(args, name, value(args) if callable(value) else value)
    return args


def check_arguments(args):
    """Raise UsageError for flag values no run can use."""
    problem = launcher.check_arguments(args)
    if problem:
        raise UsageError(problem)
    if args.resume and args.overwrite:
        raise UsageError("--resume continues the results folder, --overwrite starts it over: give one of them")
    if not 0 < args.ratio <= 1:  # also rejects nan
        raise UsageError(f"--ratio is the final fraction of convolutions kept and must lie in (0, 1], "
                         f"got {args.ratio}")
    at_least = {"--steps": (args.steps, 1), "--epochs": (args.epochs, 0), "--batch-size": (args.batch_size, 1),
                "--train-images": (args.train_images, 1), "--test-images": (args.test_images, 1),
                "--train-epochs": (args.train_epochs, 1), "--threads": (args.threads, 1),
                "--reference-images": (args.reference_images, 1),
                "--depth": (getattr(args, "depth", None), 1)}
    for flag, (value, low) in at_least.items():
        if value is not None and value < low:
            raise UsageError(f"{flag} must be at least {low}, got {value}")
    if args.size < 32:
        raise UsageError(f"--size must be at least 32 (CS shapes are size // 8 wide), got {args.size}")
    if args.device == "cuda" and not torch.cuda.is_available():
        raise UsageError("--device cuda requested but CUDA is not available (use --device auto or cpu)")


def kept_schedule(ratio, steps):
    """Kept fraction after each step: ratio ** (step / steps), i.e. exp(log(ratio) / steps) per step."""
    return [ratio ** (step / steps) for step in range(1, steps + 1)]


def prune_with(method_function, method, model, kept, reference, granularity, lrp_rule="zplus", **options):
    """One step of ``method``: the criteria take the reference batches and the granularity (lrp also
    its rule), the others not."""
    if method == "lrp":
        options["rule"] = lrp_rule
    if method in CRITERIA:
        method_function(model, kept, reference, granularity=granularity, **options)
    else:
        method_function(model, kept, **options)


def parse_seeds(text):
    """``--seeds``: a comma list of integers and ranges (0-4,7)."""
    seeds = []
    for item in text.split(","):
        low, _, high = item.strip().partition("-")
        if not low.isdigit() or (high and not high.isdigit()):
            raise argparse.ArgumentTypeError(f"seeds are a comma list of integers and ranges such as 0-4, got {text!r}")
        seeds += [int(low)] if not high else list(range(int(low), int(high) + 1))
    return list(dict.fromkeys(seeds))


def selected_seeds(args):
    return args.seeds if args.seeds else [args.seed]


def model_folder(args, seed):
    """Where the pruned models of ``seed`` go: --out, or --out/seed-K when --seeds is given."""
    return Path(args.out) if not args.seeds else Path(args.out) / f"seed-{seed}"


def parse_methods(text):
    """``--method``: one name, a comma list, or "all"; returned as given once every name is known."""
    names = [name.strip() for name in text.split(",")]
    unknown = [name for name in names if name not in METHODS + ("all",)]
    if unknown or not all(names):
        raise argparse.ArgumentTypeError(f"unknown method {(unknown or [''])[0]!r}; choices: {', '.join(METHODS)}, "
                                         f"a comma list of them, or all")
    return text


def selected_methods(method):
    """The methods of a ``--method`` value, in the order given ("all": the paper's three)."""
    selected = []
    for name in method.split(","):
        for expanded in (PAPER_METHODS if name.strip() == "all" else [name.strip()]):
            if expanded not in selected:
                selected.append(expanded)
    return selected


def selected_labels(method):
    return [METHOD_LABELS[m] for m in selected_methods(method)]


# ================================================================================== data

def ensure_quick_data(data_dir, size, seed, quiet):
    """Generate the small CS set of --quick into ``data_dir`` unless it already holds images.

    The set is made in a temporary folder and renamed when complete, so an interrupted run never
    leaves a partial set that a later run would take for the whole one."""
    data_dir = Path(data_dir)
    if has_cs_images(data_dir):
        return
    counts = QUICK_DATA["counts"]
    print(f"generating {sum(counts.values())} CS images of {size}x{size} into {data_dir}")
    progress = None if quiet else (lambda it, total: tqdm(it, total=total, desc="CS images", leave=False))
    partial = data_dir.with_name(f".{data_dir.name}.{os.getpid()}.partial")
    try:
        cs_data.generate_example_data(partial, counts, size, seed, progress)
        if data_dir.exists() and not any(data_dir.iterdir()):
            data_dir.rmdir()
        os.replace(partial, data_dir)
    finally:
        shutil.rmtree(partial, ignore_errors=True)


def cs_loaders(args):
    """(fine-tuning loader, test loader) over the CS data of ``args``."""
    train_set = cs_split(args.data, "train", args.train_images)
    test_set = cs_split(args.data, "test", args.test_images)
    return (DataLoader(train_set, batch_size=args.batch_size, shuffle=True),
            DataLoader(test_set, batch_size=args.batch_size, shuffle=False))


def reference_batches(args):
    """The criteria's reference samples: the first ``--reference-images`` training images, in batches
    (None when no criterion runs)."""
    if not set(selected_methods(args.method)) & set(CRITERIA):
        return None
    images = cs_split(args.data, "train", args.reference_images)
    return list(DataLoader(images, batch_size=args.batch_size, shuffle=False))


# ================================================================================== results

class ResultsLog:
    """results.csv, one row per finished step, each row written whole (one append, flushed to disk).

    ``mode``: "new" refuses a folder that already holds results (say --resume or --overwrite);
    "resume" continues it, dropping a torn last row (one a killed or full-disk write left) and
    saying what it found; "overwrite" starts the given methods over and keeps the other methods'
    rows. Rewrites go to a temporary file that is renamed. New files have a seed column; a file
    written before it keeps its layout, its rows being of ``default_seed``."""

    def __init__(self, path, mode="new", methods=(), default_seed=0):
        self.path = Path(path)
        self.rows = []
        self.fields = plot_results.SEEDED_FIELDS
        self.default_seed = default_seed
        exists = self.path.is_file() and self.path.stat().st_size > 0
        if exists and mode == "new":
            raise UsageError(f"{self.path} already holds results; pass --resume to continue that run, "
                             f"--overwrite to start these methods over, or another --results folder")
        if exists:
            self.rows, torn = self._read()
            if mode == "overwrite":
                self.rows = [row for row in self.rows if (row["method"], self.seed_of(row)) not in methods]
            if torn or mode == "overwrite":
                self._rewrite()
            if torn:
                print(f"{self.path}: dropped a torn last row ({torn[:80]!r}) left by an interrupted write")
            if mode == "resume":
                print(f"resuming {self.path}: " + (self.describe() or "no steps yet"))
        else:
            self.rows = []
            self._rewrite()

    def _read(self):
        """(complete rows, torn last line or ""); ValueError for a file of another layout."""
        text = self.path.read_bytes().decode("utf-8", errors="replace")
        lines = text.split("\n")
        last = lines.pop()                      # "" when the file ends with a newline
        reader = csv.reader(lines)
        header = tuple(next(reader, None) or ())
        if header not in plot_results.LAYOUTS:
            raise ValueError(f"{self.path}: not a results file of this script (header {list(header)}); "
                             f"choose another --results folder")
        self.fields = header
        rows = []
        for number, values in enumerate(reader, start=2):
            if len(values) != len(header) or not _is_number(values[1]):
                if number == len(lines) and not last:   # the last complete line may be torn too
                    return rows, ",".join(values)
                raise ValueError(f"{self.path}, line {number}: malformed row {values}")
            rows.append(dict(zip(header, values)))
        return rows, last

    def _rewrite(self):
        def write(temporary):
            with open(temporary, "w", newline="") as handle:
                writer = csv.DictWriter(handle, self.fields, lineterminator="\n", extrasaction="ignore")
                writer.writeheader()
                writer.writerows(self.rows)
        write_atomically(self.path, write)

    def seed_of(self, row):
        return int(row["seed"]) if row.get("seed") not in (None, "") else self.default_seed

    def describe(self):
        steps = {}
        for row in self.rows:
            seed = self.seed_of(row)
            name = row["method"] if seed == self.default_seed else f"{row['method']} seed {seed}"
            steps.setdefault(name, []).append(int(row["step"]))
        return "; ".join(f"{method} steps {min(found)}-{max(found)}" for method, found in steps.items())

    def rows_of(self, label, seed=None):
        seed = self.default_seed if seed is None else seed
        return [row for row in self.rows if row["method"] == label and self.seed_of(row) == seed]

    def append(self, **row):
        values = {field: str(row.get(field, "")) for field in self.fields}
        buffer = io.StringIO()
        csv.DictWriter(buffer, self.fields, lineterminator="\n").writerow(values)
        append_durably(self.path, buffer.getvalue().encode("utf-8"))
        self.rows.append(values)


def _is_number(text):
    try:
        int(text)
        return True
    except ValueError:
        return False


class FolderLock:
    """An exclusive lock on a results folder, so that two runs never write into it at once."""

    def __init__(self, folder):
        self.path = Path(folder) / ".results.lock"

    def __enter__(self):
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.handle = open(self.path, "a")
        if fcntl is not None:
            try:
                fcntl.flock(self.handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                self.handle.close()
                raise UsageError(f"another run is writing to {self.path.parent}; wait for it to finish "
                                 f"or choose another --results folder") from None
        return self

    def __exit__(self, *exc_info):
        self.handle.close()


def _resume_point(log, label, seed, schedule, out_dir):
    """(next step, checkpoint to continue from or None) from the rows ``log`` holds for ``label`` and ``seed``."""
    rows = log.rows_of(label, seed)
    for row in rows:
        step = int(row["step"])
        if step > len(schedule) or (step > 0 and abs(float(row["target_kept"]) - schedule[step - 1]) > 1e-6):
            raise ValueError(f"{log.path}: {label} step {step} was run with another --ratio/--steps; "
                             f"rerun without --resume or with the earlier flags")
    if not rows:
        return 0, None
    last = max(rows, key=lambda row: int(row["step"]))
    step = int(last["step"])
    if step == 0:
        return 1, None
    checkpoint = Path(out_dir) / last["model_file"]
    if not checkpoint.is_file():
        raise FileNotFoundError(f"cannot resume {label}: its last pruned model {checkpoint} is missing")
    return step + 1, checkpoint


def command_line(script, argv=None):
    """The command that started this run, as a user would type it."""
    return shlex.join(["python", f"examples/{script}", *(sys.argv[1:] if argv is None else argv)])


def repository_path(path):
    """``path`` relative to the repository when it lies inside it, else as given."""
    resolved = Path(path).resolve()
    return resolved.relative_to(REPO_ROOT).as_posix() if resolved.is_relative_to(REPO_ROOT) else str(path)


def pruning_settings(args, train_images, test_images, architecture):
    """What run.json records of a pruning experiment (RUN_SETTINGS must agree when it is resumed)."""
    settings = dict(command=args.command, model=repository_path(args.model), train_images=train_images,
                    test_images=test_images, epochs=args.epochs, steps=args.steps, ratio=args.ratio,
                    batch_size=args.batch_size, seed=args.seed, seeds=selected_seeds(args),
                    reference_images=args.reference_images,
                    granularity=args.granularity, lrp_rule=args.lrp_rule, methods=selected_labels(args.method),
                    device=str(runtime.resolve_device(args.device)), threads=torch.get_num_threads())
    settings["title"] = (f"{architecture}: start {Path(args.model).name}\n{train_images} training images, "
                         f"{args.epochs} epochs per step, {args.steps} steps, {test_images} test images")
    return settings


class RunRecord:
    """run.json beside results.csv: how the results were made (``settings``: command, start model,
    data counts, schedule, device, threads) and the total seconds, rewritten atomically as the run
    goes. With ``resume`` an earlier record must agree on the keys ``must_agree``; the lists under
    ``merged`` gain what this run adds, the seconds add up and ``resumed`` lists each later command."""

    def __init__(self, results_dir, settings, resume=False, must_agree=RUN_SETTINGS, merged=("methods",)):
        self.path = Path(results_dir) / RUN_RECORD
        settings = dict(settings, seconds=0.0)
        earlier = self._read() if resume else None
        if earlier is not None:
            differing = [key for key in must_agree if key in earlier and earlier[key] != settings[key]]
            if differing:
                key = differing[0]
                raise UsageError(f"{self.path} records {key}={earlier[key]!r} but this run has {settings[key]!r}; "
                                 f"resume with the earlier settings or start a new --results folder")
            for key in merged:
                earlier_values = earlier.get(key, [])
                settings[key] = earlier_values + [v for v in settings[key] if v not in earlier_values]
            settings.update(command=earlier.get("command", settings["command"]),
                            seconds=float(earlier.get("seconds", 0.0)),
                            resumed=earlier.get("resumed", []) + [settings["command"]])
        self.record = settings
        self.started = time.perf_counter()
        self.write()

    def update(self, **values):
        """Record more (e.g. a result known only once the run is under way) with the next write."""
        self.record.update(values)
        self.write()

    def _read(self):
        if not self.path.is_file():
            return None
        try:
            record = json.loads(self.path.read_text())
        except (OSError, ValueError) as error:
            raise ValueError(f"{self.path}: not a run record ({error})") from None
        if not isinstance(record, dict):
            raise ValueError(f"{self.path}: not a run record (expected a JSON object)")
        return record

    def write(self):
        record = dict(self.record, seconds=round(self.record["seconds"] + time.perf_counter() - self.started, 1))
        text = json.dumps(record, indent=2) + "\n"
        write_atomically(self.path, lambda temporary: temporary.write_text(text))


# ================================================================================== the loop

def fine_tune(setup, model, loader, epochs, quiet, description):
    """``epochs`` passes of Adam over ``loader``; the mean batch loss of the last epoch (nan if none)."""
    mean_loss = float("nan")
    for epoch in range(1, epochs + 1):
        losses = [setup.learn(model, input, target)
                  for input, target in tqdm(loader, desc=f"{description} epoch {epoch}/{epochs}",
                                            leave=False, disable=True if quiet else None)]
        mean_loss = sum(losses) / len(losses)
    return mean_loss


def run_with(setup, args):
    """The experiment of ``args`` in this process, for the architecture of ``setup``."""
    train_loader, setup.test_loader = cs_loaders(args)
    setup.reference = reference_batches(args)
    return run_experiment(setup, args, train_loader)


def launch_or_run(module_name, args):
    """With --launcher: jobs (:func:`launch_experiment`); else ``module_name``'s ``run(args)`` here."""
    if args.launcher:
        return launch_experiment(module_name, args)
    return importlib.import_module(module_name).run(args)


def run_experiment(setup, args, train_loader):
    """Prune with every selected method, recording each step; returns the results.csv path."""
    check_output_folders(args)
    with FolderLock(args.results):
        return _run_locked(setup, args, train_loader)


def check_output_folders(args):
    """ValueError before any work when --out or --results cannot be written."""
    check_writable_folder(args.out, "--out")
    check_writable_folder(args.results, "--results")


def _run_locked(setup, args, train_loader):
    schedule = kept_schedule(args.ratio, args.steps)
    # --quick writes into its own scratch folder, which a later smoke run may simply replace
    mode = "resume" if args.resume else "overwrite" if (args.overwrite or args.quick) else "new"
    runs = [(method, seed) for method in selected_methods(args.method) for seed in selected_seeds(args)]
    log = ResultsLog(Path(args.results) / RESULTS_CSV, mode, [(METHOD_LABELS[m], seed) for m, seed in runs],
                     default_seed=args.seed)
    record = RunRecord(args.results, pruning_settings(args, len(train_loader.dataset), len(setup.test_loader.dataset),
                                                      setup.title),
                       resume=args.resume or args.overwrite)   # the rows of other methods stay: so does their record
    print(f"pruning to {args.ratio} kept in {args.steps} steps: {100 * (1 - schedule[0]):.2f} % of the "
          f"remaining convolutions each step, {args.epochs} fine-tuning epoch(s) per step")
    start_row = None
    for method, seed in runs:
        label = METHOD_LABELS[method]
        name = label if not args.seeds else f"{label} seed {seed}"
        first_step, checkpoint = _resume_point(log, label, seed, schedule, args.out) if args.resume else (0, None)
        if first_step > args.steps:
            print(f"{name}: all {args.steps} steps already in {log.path}")
            continue
        model = setup.load_model(checkpoint)
        if first_step == 0:
            start_row = start_row or _evaluate_start(setup, model, args.model)
            log.append(method=label, seed=seed, **start_row)
            first_step = 1
        steps = tqdm(range(first_step, args.steps + 1), desc=name, disable=True if args.quiet else None)
        for step in steps:
            row = _pruning_step(setup, args, method, seed, model, step, schedule[step - 1], train_loader)
            log.append(**row)
            record.write()
            steps.write(f"{name} step {step}/{args.steps}: kept {float(row['kept_fraction']):.4f} (target "
                        f"{float(row['target_kept']):.4f}), test accuracy {float(row['test_accuracy']):.4f}, "
                        f"{row['seconds']} s, saved {row['model_file']}")
        plot_results.write_summary(log.path)
    print(f"results: {log.path} (table and plot next to it); pruned models in {args.out}")
    return log.path


def _evaluate_start(setup, model, model_path):
    """The results row of the unpruned start model (step 0)."""
    started = time.perf_counter()
    accuracy = setup.accuracy(model)
    print(f"start model {model_path}: test accuracy {accuracy:.4f}")
    baseline = majority_accuracy(setup.test_loader)
    if accuracy <= baseline + 0.01:
        print(f"warning: the start model's test accuracy {accuracy:.4f} is no better than predicting the most "
              f"frequent class everywhere ({baseline:.4f}): is it trained, and do --depth/--dilations match "
              f"how it was trained?", file=sys.stderr)
    return dict(step=0, target_kept=f"{1:.6f}", kept_fraction=f"{setup.kept_fraction(model):.6f}",
                test_accuracy=f"{accuracy:.6f}", seconds=f"{time.perf_counter() - started:.1f}",
                model_file=repository_path(model_path))


def majority_accuracy(loader):
    """Pixel accuracy of predicting the most frequent class of ``loader``'s targets everywhere."""
    totals = {}
    for _, target in loader:
        values, counts = torch.unique(target, return_counts=True)
        for value, count in zip(values.tolist(), counts.tolist()):
            totals[value] = totals.get(value, 0) + count
    return max(totals.values()) / sum(totals.values()) if totals else 0.0


def _pruning_step(setup, args, method, seed, model, step, target, train_loader):
    """Prune to ``target`` kept, fine-tune, evaluate and save; returns the results row."""
    started = time.perf_counter()
    label = METHOD_LABELS[method]
    torch.manual_seed(seed + step)  # the same data order for every method, also on resume
    setup.prune(method, model, target)
    loss = fine_tune(setup, model, train_loader, args.epochs, args.quiet, f"{label} step {step}")
    accuracy = setup.accuracy(model)
    name = setup.file_name(label, target, accuracy)
    setup.save(model, model_folder(args, seed) / name, epoch=step * args.epochs)
    if args.seeds:
        name = f"seed-{seed}/{name}"            # model_file is relative to --out
    return dict(method=label, seed=seed, step=step, target_kept=f"{target:.6f}",
                kept_fraction=f"{setup.kept_fraction(model):.6f}", test_accuracy=f"{accuracy:.6f}",
                train_loss="" if math.isnan(loss) else f"{loss:.6f}",
                seconds=f"{time.perf_counter() - started:.1f}", model_file=name)


def report_errors(prog, main, argv=None):
    """Run a pruning script's ``main(argv)`` with one-line errors (pruning_toolkit.cli)."""
    return cli.report_errors(prog, main, argv, "the steps done are saved, continue with --resume")


set_threads = runtime.set_threads



# ================================================================================== as jobs

def job_folder(args):
    return Path(args.job_logs) if args.job_logs else Path(args.results) / "jobs"


def run_job(module_name, args):
    """One job: the experiment of ``args`` (one method, one seed) in this process."""
    set_threads(args.threads)
    importlib.import_module(module_name).run(args)


def _shard_done(shard, label, seed, steps):
    path = shard / RESULTS_CSV
    if not path.is_file():
        return False
    with open(path, newline="") as handle:
        found = {int(row["step"]) for row in csv.DictReader(handle)
                 if row.get("method") == label and int(row.get("seed") or seed) == seed and _is_number(row["step"])}
    return found >= set(range(steps + 1))


def merge_shards(args, folder):
    """results.csv (every shard's rows, with their seeds), run.json and the table and plot of a launched run."""
    rows, records = [], []
    for shard in sorted((folder / "shards").glob("*-seed*")):
        path = shard / RESULTS_CSV
        if not path.is_file():
            continue
        seed = int(shard.name.rsplit("-seed", 1)[1])
        with open(path, newline="") as handle:
            rows += [dict(row, seed=row.get("seed") or seed) for row in csv.DictReader(handle) if _is_number(row["step"])]
        if (shard / RUN_RECORD).is_file():
            records.append(json.loads((shard / RUN_RECORD).read_text()))
    if not rows:
        return None
    order = {label: index for index, label in enumerate(METHOD_LABELS.values())}
    rows.sort(key=lambda row: (order.get(row["method"], len(order)), int(row["seed"]), int(row["step"])))

    def write(temporary):
        with open(temporary, "w", newline="") as handle:
            writer = csv.DictWriter(handle, plot_results.SEEDED_FIELDS, lineterminator="\n", extrasaction="ignore")
            writer.writeheader()
            writer.writerows(rows)
    path = write_atomically(Path(args.results) / RESULTS_CSV, write)
    first = records[0] if records else {}
    record = {key: first.get(key) for key in ("command", "model", "train_images", "test_images", "epochs", "steps",
                                              "ratio", "batch_size", "reference_images", "granularity", "lrp_rule", "device",
                                              "threads", "title")}
    record.update(command=args.command, methods=list(dict.fromkeys(row["method"] for row in rows)),
                  seeds=sorted({int(row["seed"]) for row in rows}), launcher=args.launcher, jobs=len(records),
                  seconds=round(sum(float(r.get("seconds", 0)) for r in records), 1))
    if record.get("title"):
        record["title"] += f", {len(record['seeds'])} seed(s)"
    text = json.dumps(record, indent=2) + "\n"
    write_atomically(Path(args.results) / RUN_RECORD, lambda temporary: temporary.write_text(text))
    plot_results.write_summary(path)
    return path


def launch_experiment(module_name, args):
    """Run the experiment as one submitit job per (method, seed), each into its own shard folder
    (``--resume`` within it), then merge the shards into --results. A later call with the same
    arguments collects what finished and submits only the (method, seed) runs still missing."""
    check_output_folders(args)
    folder = job_folder(args)
    with FolderLock(args.results):
        if not launcher.settle_earlier_jobs(folder, args.no_wait, lambda: merge_shards(args, folder), args.results):
            return None
        todo = []
        for method in selected_methods(args.method):
            for seed in selected_seeds(args):
                label = METHOD_LABELS[method]
                shard = folder / "shards" / f"{label}-seed{seed}"
                if _shard_done(shard, label, seed, args.steps):
                    continue
                job = argparse.Namespace(**vars(args))
                job.__dict__.update(method=method, seeds=[seed], results=shard, resume=(shard / RESULTS_CSV).is_file(),
                                    overwrite=False, launcher=None, no_wait=False, job_logs=None, quiet=True)
                todo.append((module_name, job))
        failed = []
        if todo:
            executor = launcher.make_executor(args, folder / "logs", "lean-pruning")
            jobs = launcher.submit(executor, run_job, todo)
            launcher.record_submission(folder, args.launcher, jobs, str(args.results))
            print(f"submitted {len(jobs)} job(s), one per (method, seed); logs in {folder / 'logs'}", file=sys.stderr)
            if args.no_wait:
                return None
            failed = launcher.follow(jobs)
        merged = merge_shards(args, folder)
        if failed:
            raise launcher.JobsFailed(launcher.failure_message(failed))
        launcher.forget_submission(folder)
        print(f"results: {merged} (table and plot next to it); pruned models in {args.out}/seed-K")
        return merged
