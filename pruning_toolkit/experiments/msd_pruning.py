"""Prune a trained MS-D network on the Circle-Square data with LEAN, IndivL1 and IndivSV.

    python examples/prune_example_msd.py [--method lean|indivL1|indivSV|all] [--ratio 0.05]
                                         [--steps 15] [--epochs 3] [--model FILE] [--depth 50]
    python examples/prune_example_msd.py --quick      # self-contained smoke run (about a minute)

The paper's experiment: the 3x3 variants (LEAN_SV_MSD_3x3, IndivL1_Global_MSD_3x3,
IndivSV_Global_MSD_3x3; the final 1x1 layer is not pruned), kept fraction ratio ** (step/steps)
after each step, ``--epochs`` epochs of Adam fine-tuning, test pixel accuracy. Each pruned model
is saved as ``<out>/msd_network_<METHOD>_d=<depth>_ratio=<target kept, 4 decimals>_acc=<test
accuracy, 4 decimals>.torch``; results.csv, results.md and accuracy_vs_kept.svg/.png go to
``--results``.
"""
from pruning_toolkit import methods, msd_network, norm_graph
from pruning_toolkit.cli import OneLineErrorParser
from pruning_toolkit.experiments import EXAMPLES_DIR, msd_training
from pruning_toolkit.experiments import pruning_run as experiment

PROG = "prune_example_msd.py"
METHODS = {"lean": methods.LEAN_SV_MSD_3x3, "indivL1": methods.IndivL1_Global_MSD_3x3,
           "indivSV": methods.IndivSV_Global_MSD_3x3, "lrp": methods.LRP_Global_MSD_3x3,
           "taylor": methods.Taylor_Global_MSD_3x3, "grad": methods.Grad_Global_MSD_3x3,
           "weight": methods.Weight_Global_MSD_3x3}
NUM_LABELS = 5
FULL_DEFAULTS = dict(
    experiment.FULL_DEFAULTS, depth=50,
    model=lambda args: EXAMPLES_DIR / "trained_models" / f"msd_network_d={args.depth}.torch",
    out=EXAMPLES_DIR / "pruned_models",
    results=EXAMPLES_DIR / "my_results" / "msd",
)
QUICK_DIR = experiment.QUICK_DIR / "msd"
QUICK_DEFAULTS = dict(
    experiment.QUICK_DEFAULTS, depth=10,
    model=lambda args: QUICK_DIR / "trained_models" / f"msd_network_d={args.depth}.torch",
    out=QUICK_DIR / "pruned_models",
    results=QUICK_DIR / "results",
)


class MSDPruning(experiment.PruningSetup):
    """MS-D (c_in 1, 5 labels, width 1) on the CS data, pruned with the 3x3 variants."""

    def __init__(self, args, test_loader=None):
        super().__init__(args, test_loader)
        self.title = f"MS-D depth {args.depth} on CS data"

    def load_model(self, path=None):
        model = msd_network.MSDSegmentationModel(1, NUM_LABELS, self.args.depth, 1,
                                                 dilations=self.args.dilations, device=self.args.device)
        model.load(self.args.model if path is None else path)
        return model

    def prune(self, method, model, kept):
        experiment.prune_with(METHODS[method], method, model, kept, self.reference, self.args.granularity,
                              self.args.lrp_rule, verbose=not self.args.quiet)

    def kept_fraction(self, model):
        return 1 - norm_graph.fraction_pruned_convs_MSD3x3(model)[2]

    def file_name(self, label, target_kept, accuracy):
        return f"msd_network_{label}_d={self.args.depth}_ratio={target_kept:.4f}_acc={accuracy:.4f}.torch"


def parse_args(argv=None):
    parser = OneLineErrorParser(description=__doc__.splitlines()[0])
    experiment.add_arguments(parser, "examples/trained_models/msd_network_d=<depth>.torch", "examples/my_results/msd")
    parser.add_argument("--depth", type=int, default=None, help="MS-D depth of --model (default 50; --quick: 10)")
    parser.add_argument("--dilations", type=msd_training.parse_int_list, default=list(range(1, 11)),
                        help="dilation cycle of --model, e.g. 1-10 or 1,2,4,8 (default 1-10)")
    args = experiment.fill_defaults(parser.parse_args(argv), FULL_DEFAULTS, QUICK_DEFAULTS)
    experiment.check_arguments(args)
    return args


def train_quick_model(args):
    """Train the small MS-D of --quick with train_example_msd.py (best by validation loss)."""
    print(f"no model at {args.model}: training an MS-D network of depth {args.depth} "
          f"for {args.train_epochs} epochs")
    flags = ["--data", args.data, "--out", args.model, "--depth", args.depth,
             "--dilations", ",".join(map(str, args.dilations)), "--epochs", args.train_epochs,
             "--batch-size", args.batch_size, "--seed", args.seed, "--device", args.device]
    if args.train_images:
        flags += ["--train-images", args.train_images]
    msd_training.main([str(flag) for flag in flags] + (["--quiet"] if args.quiet else []))


def main(argv=None):
    args = parse_args(argv)
    args.command = experiment.command_line(PROG, argv)
    experiment.set_threads(args.threads)
    if args.quick:
        experiment.ensure_quick_data(args.data, args.size, args.seed, args.quiet)
        if not args.model.is_file():
            train_quick_model(args)
    elif not args.model.is_file():
        raise FileNotFoundError(f"model file not found: {args.model} (train one with "
                                f"python examples/train_example_msd.py --depth {args.depth}, or try --quick)")
    MSDPruning(args).load_model()  # a model of another depth or architecture fails here, before any work
    experiment.launch_or_run(__name__, args)


def run(args):
    """The experiment of ``args`` in this process (what each job runs with --launcher)."""
    experiment.run_with(MSDPruning(args), args)


def report_errors(argv=None):
    """The command line: :func:`main` with one-line errors; returns the exit status."""
    return experiment.report_errors(PROG, main, argv)
