"""Train an MS-D segmentation network on the Circle-Square data (LEAN example experiment).

    python examples/train_example_msd.py [--epochs 50] [--depth 50] [--device auto]

Adam, batch size 5, the network with the lowest validation loss is kept (saved after every
improvement, atomically), as in the reference's train_example_msd.py.
"""
import argparse
import sys

import torch
from torch.utils.data import DataLoader
from tqdm import tqdm

import _paths
import msd

DEFAULT_MODEL = _paths.EXAMPLES_DIR / "trained_models" / "msd_network_d=50.torch"


def parse_int_list(text):
    """'1-10' or '1,2,4' -> list of ints."""
    values = []
    for part in text.split(","):
        low, _, high = part.partition("-")
        values.extend(range(int(low), int(high) + 1) if high else [int(low)])
    return values


def cs_dataset(data_dir, split, limit=None):
    dataset = msd.ImageDataset(str(data_dir / split / "noisy" / "*.tiff"),
                               str(data_dir / split / "label" / "*.tiff"), labels=[0, 1, 2, 3, 4])
    if limit is not None and limit < len(dataset):
        dataset = torch.utils.data.Subset(dataset, range(limit))
    return dataset


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=_paths.Path, default=_paths.EXAMPLES_DIR / "data",
                        help="folder made by generate_example_data.py (default: examples/data)")
    parser.add_argument("--out", type=_paths.Path, default=DEFAULT_MODEL, help="where the best model is saved")
    parser.add_argument("--depth", type=int, default=50)
    parser.add_argument("--dilations", type=parse_int_list, default=list(range(1, 11)),
                        help="dilation cycle, e.g. 1-10 or 1,2,4,8 (default 1-10)")
    parser.add_argument("--epochs", type=int, default=50)
    parser.add_argument("--batch-size", type=int, default=5)
    parser.add_argument("--train-images", type=int, default=None, help="use only the first N training images")
    parser.add_argument("--val-images", type=int, default=None, help="use only the first N validation images")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's choice)")
    parser.add_argument("--init", type=_paths.Path, default=None,
                        help="continue training from this checkpoint (weights, normalisation, optimizer, epoch)")
    parser.add_argument("--quiet", action="store_true", help="no progress bars")
    args = parser.parse_args(argv)
    if args.depth < 1 or args.epochs < 1 or args.batch_size < 1:
        parser.error("--depth, --epochs and --batch-size must be at least 1")
    if args.threads:
        torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    try:
        train_set = cs_dataset(args.data, "train", args.train_images)
        val_set = cs_dataset(args.data, "val", args.val_images)
        model = msd.MSDSegmentationModel(1, 5, args.depth, 1, dilations=args.dilations, device=args.device)
        first_epoch = model.load(args.init) + 1 if args.init else 1
    except (FileNotFoundError, ValueError, RuntimeError) as error:
        sys.exit(f"train_example_msd.py: {error}")
    train_dl = DataLoader(train_set, batch_size=args.batch_size, shuffle=True)
    val_dl = DataLoader(val_set, batch_size=args.batch_size, shuffle=False)
    if args.init:
        best_loss = model.validate(val_dl)
        print(f"continuing {args.init} after epoch {first_epoch - 1} (validation loss {best_loss:.5f})")
    else:
        model.set_normalization(train_dl)
        best_loss = float("inf")
    train_keeping_best(model, train_dl, val_dl, args.epochs, args.out, args.quiet, first_epoch, best_loss)


def train_keeping_best(model, train_loader, val_loader, epochs, out, quiet=False, first_epoch=1,
                       best_loss=float("inf")):
    """Train ``epochs`` epochs (a model with msd_pytorch's learn/validate/save), saving it to
    ``out`` whenever its validation loss improves on ``best_loss``; returns the best loss."""
    progress = tqdm(range(first_epoch, first_epoch + epochs), desc="epochs", disable=True if quiet else None)
    for epoch in progress:
        for input, target in tqdm(train_loader, desc=f"epoch {epoch}", leave=False, disable=True if quiet else None):
            model.learn(input, target)
        val_loss = model.validate(val_loader)
        if val_loss < best_loss:
            best_loss = val_loss
            model.save(out, epoch)
        progress.write(f"epoch {epoch}: validation loss {val_loss:.5f} (best {best_loss:.5f})")
    print(f"best model (validation loss {best_loss:.5f}) saved to {out}")
    return best_loss


if __name__ == "__main__":
    main()
