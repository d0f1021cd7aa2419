"""Prune an FCN-ResNet50 on the Circle-Square data with LEAN, IndivL1 and IndivSV.

    python examples/prune_example_resnet50.py [--method lean|indivL1|indivSV|all] [--ratio 0.05]
                                              [--steps 15] [--epochs 3] [--model FILE]
    python examples/prune_example_resnet50.py --quick   # narrow network, small images (CPU, ~1 minute)
    python examples/prune_example_resnet50.py --train-only [--resume]   # train the start model only

The network is pruning_toolkit.fcn_resnet.fcn_resnet50 with 1 input channel and 5 classes. When ``--model`` does
not exist it is trained first (``--train-epochs`` epochs of Adam, the best by validation loss is
kept) and saved there as ``{"epoch", "state_dict", "optimizer"}``; the training's state after every
epoch goes to ``<model stem>.resume.torch``, and ``--resume`` continues an interrupted training
(each epoch's data order seeded by ``--seed`` and the epoch, so it ends as an uninterrupted one).
Methods: LEAN_SV_ResNet50, IndivL1_Global_ResNet50, IndivSV_Global_ResNet50 (every backbone and
head convolution), and the criteria. Pruned models:
``<out>/fcn_resnet50_<METHOD>_ratio=<target kept>_acc=<test accuracy>.torch`` (4 decimals);
results.csv, results.md and accuracy_vs_kept.svg/.png go to ``--results``.
"""
import torch
from torch.utils.data import DataLoader

from pruning_toolkit import methods, norm_graph
from pruning_toolkit.cli import OneLineErrorParser, UsageError
from pruning_toolkit.experiments import EXAMPLES_DIR
from pruning_toolkit.experiments import pruning_run as experiment
from pruning_toolkit.experiments.fcn_segmentation import NARROW_SHAPE, FCNSegmentationModel
from pruning_toolkit.experiments.msd_training import fresh_run, resume_run, resume_state_path, train_keeping_best

PROG = "prune_example_resnet50.py"
METHODS = {"lean": methods.LEAN_SV_ResNet50, "indivL1": methods.IndivL1_Global_ResNet50,
           "indivSV": methods.IndivSV_Global_ResNet50, "lrp": methods.LRP_Global_ResNet50,
           "taylor": methods.Taylor_Global_ResNet50, "grad": methods.Grad_Global_ResNet50,
           "weight": methods.Weight_Global_ResNet50}
NUM_CLASSES = 5
FULL_DEFAULTS = dict(
    experiment.FULL_DEFAULTS,
    model=EXAMPLES_DIR / "trained_models" / "fcn_resnet50_cs.torch",
    out=EXAMPLES_DIR / "pruned_models",
    results=EXAMPLES_DIR / "my_results" / "resnet50",
    train_epochs=20,
)
QUICK_DIR = experiment.QUICK_DIR / "resnet50"
QUICK_DEFAULTS = dict(
    experiment.QUICK_DEFAULTS,
    model=QUICK_DIR / "trained_models" / "fcn_resnet50_narrow.torch",
    out=QUICK_DIR / "pruned_models",
    results=QUICK_DIR / "results",
)


class ResNetPruning(experiment.PruningSetup):
    """FCN-ResNet50 (narrow with --quick) on the CS data, every convolution prunable."""

    def __init__(self, args, test_loader=None):
        super().__init__(args, test_loader)
        self.title = f"{'narrow ' if args.quick else ''}FCN-ResNet50 on CS data"

    def new_model(self):
        return FCNSegmentationModel(NUM_CLASSES, 1, self.args.device, **(NARROW_SHAPE if self.args.quick else {}))

    def load_model(self, path=None):
        model = self.new_model()
        model.load(self.args.model if path is None else path)
        return model

    def prune(self, method, model, kept):
        experiment.prune_with(METHODS[method], method, model.net, kept, self.reference, self.args.granularity,
                              self.args.lrp_rule)

    def kept_fraction(self, model):
        return 1 - norm_graph.fraction_pruned_convs_ResNet50(model.net)[2]

    def file_name(self, label, target_kept, accuracy):
        return f"fcn_resnet50_{label}_ratio={target_kept:.4f}_acc={accuracy:.4f}.torch"


def parse_args(argv=None):
    parser = OneLineErrorParser(description=__doc__.splitlines()[0])
    experiment.add_arguments(parser, "examples/trained_models/fcn_resnet50_cs.torch, trained first if missing", "examples/my_results/resnet50")
    parser.add_argument("--train-only", action="store_true",
                        help="train the start model (--resume: continue its interrupted training) and stop before pruning")
    args = experiment.fill_defaults(parser.parse_args(argv), FULL_DEFAULTS, QUICK_DEFAULTS)
    experiment.check_arguments(args)
    return args


def unfinished_training(args):
    """The resume state of a start-model training that stopped before its last epoch, else None."""
    state_path = resume_state_path(args.model)
    if not state_path.is_file():
        return None
    state = torch.load(state_path, map_location="cpu", weights_only=True, mmap=True)   # reads two numbers
    if not isinstance(state, dict) or "last_epoch" not in state or "epoch" not in state:
        raise ValueError(f"{state_path}: not a training resume state (no epoch / last_epoch)")
    return state_path if int(state["epoch"]) < int(state["last_epoch"]) else None


def train_start_model(setup, args, train_loader, interrupted=False):
    """Train a new network for ``--train-epochs`` epochs (or, ``interrupted``, continue the training
    that stopped) and save the best by validation loss at ``--model``."""
    torch.manual_seed(args.seed)
    model = setup.new_model()
    val_loader = DataLoader(experiment.cs_split(args.data, "val"), batch_size=args.batch_size)
    if interrupted:
        run = resume_run(model, args.model)
    else:
        print(f"no model at {args.model}: training {setup.title.replace(' on CS data', '')} "
              f"for {args.train_epochs} epochs")
        run = fresh_run(args.train_epochs)
    train_keeping_best(model, train_loader, val_loader, run, args.model, args.quiet, args.seed)


def main(argv=None):
    args = parse_args(argv)
    args.command = experiment.command_line(PROG, argv)
    experiment.set_threads(args.threads)
    if args.quick:
        experiment.ensure_quick_data(args.data, args.size, args.seed, args.quiet)
    setup = ResNetPruning(args)
    interrupted = unfinished_training(args)
    if interrupted is not None and not args.resume:
        raise UsageError(f"the training of {args.model} stopped before its last epoch ({interrupted}); "
                         f"pass --resume to continue it")
    if args.model.is_file() and interrupted is None:
        setup.load_model()  # a checkpoint of another architecture fails here, before any work
        if args.train_only:
            print(f"{args.model} is trained already; nothing to do")
    else:
        train_loader, _ = experiment.cs_loaders(args)
        train_start_model(setup, args, train_loader, interrupted is not None)
    if not args.train_only:
        experiment.launch_or_run(__name__, args)


def run(args):
    """The experiment of ``args`` in this process (what each job runs with --launcher)."""
    experiment.run_with(ResNetPruning(args), args)


def report_errors(argv=None):
    """The command line: :func:`main` with one-line errors; returns the exit status."""
    return experiment.report_errors(PROG, main, argv)
