"""Train an MS-D segmentation network on the Circle-Square data (LEAN example experiment).

    python examples/train_example_msd.py [--epochs 50] [--depth 50] [--out FILE] [--device auto]
    python examples/train_example_msd.py --init FILE --epochs 24 --out FILE2   # continue a run
    python examples/train_example_msd.py ... --resume                          # after a stop

Adam, batch size 5, the network with the lowest validation loss is kept (saved after every
improvement, atomically), as in the reference's train_example_msd.py. After every epoch the
run's state goes to ``<out stem>.resume.torch`` beside ``--out``; ``--resume`` continues from
it and ends with the model an uninterrupted run gives (each epoch's data order is seeded by
``--seed`` and the epoch). An existing ``--out`` is never replaced unless ``--overwrite``.
"""
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import DataLoader
from tqdm import tqdm

from pruning_toolkit import cli, msd_network, runtime
from pruning_toolkit.cli import OneLineErrorParser
from pruning_toolkit.experiments import EXAMPLES_DIR
from pruning_toolkit.experiments.cs_data import cs_dataset
from pruning_toolkit.files import check_writable_folder

PROG = "train_example_msd.py"
DEFAULT_OUT_DIR = EXAMPLES_DIR / "my_models"


def parse_int_list(text):
    """'1-10' or '1,2,4' -> list of ints."""
    values = []
    for part in text.split(","):
        low, _, high = part.partition("-")
        values.extend(range(int(low), int(high) + 1) if high else [int(low)])
    return values


def resume_state_path(out):
    """Where a training run writing ``out`` keeps its state after every epoch."""
    out = Path(out)
    return out.with_name(f"{out.stem}.resume.torch")


def epoch_seed(seed, epoch):
    """The seed of one epoch's data order: the same whether the run was interrupted or not."""
    return int(np.random.SeedSequence([seed, epoch]).generate_state(1)[0])


def parse_args(argv=None):
    parser = OneLineErrorParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=EXAMPLES_DIR / "data",
                        help="folder made by generate_example_data.py (default: examples/data)")
    parser.add_argument("--out", type=Path, default=None,
                        help="model file where the best network is saved "
                             "(default: examples/my_models/msd_network_d=<depth>.torch)")
    parser.add_argument("--overwrite", action="store_true", help="replace an existing --out")
    parser.add_argument("--resume", action="store_true",
                        help="continue the run that writes --out from its last finished epoch")
    parser.add_argument("--depth", type=int, default=50)
    parser.add_argument("--dilations", type=parse_int_list, default=list(range(1, 11)),
                        help="dilation cycle, e.g. 1-10 or 1,2,4,8 (default 1-10)")
    parser.add_argument("--epochs", type=int, default=50, help="epochs to train (default 50)")
    parser.add_argument("--batch-size", type=int, default=5)
    parser.add_argument("--train-images", type=int, default=None, help="use only the first N training images")
    parser.add_argument("--val-images", type=int, default=None, help="use only the first N validation images")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's choice)")
    parser.add_argument("--init", type=Path, default=None,
                        help="continue training from this checkpoint (weights, normalisation, optimizer, epoch)")
    parser.add_argument("--quiet", action="store_true", help="no progress bars")
    args = parser.parse_args(argv)
    for flag in ("depth", "epochs", "batch_size", "train_images", "val_images", "threads"):
        value = getattr(args, flag)
        if value is not None and value < 1:
            parser.error(f"--{flag.replace('_', '-')} must be at least 1, got {value}")
    if args.out is None:
        args.out = DEFAULT_OUT_DIR / f"msd_network_d={args.depth}.torch"
    check_output(args.out, args.overwrite, args.resume)
    return args


def check_output(out, overwrite, resume):
    """ValueError before any work when ``out`` cannot or may not be written."""
    if str(out) in ("", "."):
        raise ValueError("--out must name a model file")
    if out.is_dir():
        raise ValueError(f"--out {out} is a folder; name a model file, e.g. {out / 'msd_network.torch'}")
    existing = out.parent
    while not existing.exists():
        existing = existing.parent
    if not existing.is_dir():
        raise ValueError(f"--out {out}: {existing} is not a folder")
    check_writable_folder(out.parent, f"--out {out}: folder")
    if out.exists() and not (overwrite or (resume and resume_state_path(out).is_file())):
        raise ValueError(f"--out {out} exists; pass another --out, --overwrite to replace it, "
                         f"or --resume to continue the run that wrote it")


def main(argv=None):
    args = parse_args(argv)
    runtime.set_threads(args.threads)
    torch.manual_seed(args.seed)
    train_set = cs_dataset(args.data, "train", args.train_images)
    val_set = cs_dataset(args.data, "val", args.val_images)
    model = msd_network.MSDSegmentationModel(1, 5, args.depth, 1, dilations=args.dilations, device=args.device)
    train_dl = DataLoader(train_set, batch_size=args.batch_size, shuffle=True)
    val_dl = DataLoader(val_set, batch_size=args.batch_size, shuffle=False)
    if args.resume and resume_state_path(args.out).is_file():
        run = resume_run(model, args.out)
    elif args.init:
        first_epoch = model.load(args.init) + 1
        best_loss = model.validate(val_dl)
        print(f"continuing {args.init} after epoch {first_epoch - 1} (validation loss {best_loss:.5f})")
        run = dict(first_epoch=first_epoch, last_epoch=first_epoch + args.epochs - 1, best_loss=best_loss)
    else:
        model.set_normalization(train_dl)
        run = fresh_run(args.epochs)
    train_keeping_best(model, train_dl, val_dl, run, args.out, args.quiet, args.seed)


def fresh_run(epochs):
    """The run of a new training: epochs 1 to ``epochs``, no best validation loss yet."""
    return dict(first_epoch=1, last_epoch=epochs, best_loss=float("inf"))


def resume_run(model, out):
    """Load the state that the run writing ``out`` left after its last finished epoch into ``model``;
    returns the run's first epoch still to train, last epoch and best validation loss."""
    state_path = resume_state_path(out)
    epoch = model.load(state_path)
    extra = torch.load(state_path, map_location="cpu", weights_only=True, mmap=True)   # model.load read the weights
    try:
        run = dict(first_epoch=epoch + 1, last_epoch=int(extra["last_epoch"]), best_loss=float(extra["best_loss"]))
    except (KeyError, TypeError, ValueError):
        raise ValueError(f"{state_path}: not a training resume state (no last_epoch / best_loss)") from None
    print(f"resuming the training of {out} after epoch {epoch} of {run['last_epoch']} "
          f"(best validation loss {run['best_loss']:.5f})")
    return run


def train_keeping_best(model, train_loader, val_loader, run, out, quiet=False, seed=None):
    """Train the epochs of ``run`` (:func:`fresh_run`, :func:`resume_run`; a model with msd_pytorch's
    learn/validate/save), saving it to ``out`` whenever its validation loss improves on the run's
    best; returns the best loss.

    The run's state goes to :func:`resume_state_path` after every epoch (for --resume); ``seed``: seed
    each epoch's data order from (seed, epoch), so that a resumed run equals an uninterrupted one."""
    first_epoch, last_epoch, best_loss = run["first_epoch"], run["last_epoch"], run["best_loss"]
    state_path = resume_state_path(out)
    progress = tqdm(range(first_epoch, last_epoch + 1), desc="epochs", disable=True if quiet else None)
    for epoch in progress:
        if seed is not None:
            torch.manual_seed(epoch_seed(seed, epoch))
        for input, target in tqdm(train_loader, desc=f"epoch {epoch}", leave=False, disable=True if quiet else None):
            model.learn(input, target)
        val_loss = model.validate(val_loader)
        if val_loss < best_loss:
            best_loss = val_loss
            model.save(out, epoch)
        model.save(state_path, epoch, last_epoch=last_epoch, best_loss=best_loss)
        progress.write(f"epoch {epoch}: validation loss {val_loss:.5f} (best {best_loss:.5f})")
    if Path(out).is_file():
        print(f"best model (validation loss {best_loss:.5f}) saved to {out}")
    else:
        print(f"no epoch improved on the start model's validation loss {best_loss:.5f}; {out} not written")
    return best_loss


def report_errors(argv=None):
    """The command line: :func:`main` with one-line errors; returns the exit status."""
    return cli.report_errors(PROG, main, argv)
