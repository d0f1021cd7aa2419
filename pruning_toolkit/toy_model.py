"""The toy MLP of "Pruning by Explaining", its seeded training recipe and the shipped checkpoints.

Architecture: Linear(2,1000) ReLU Dropout(0.5) Linear(1000,1000) ReLU Linear(1000,1000)
Linear(1000,K). There is no nonlinearity between the third hidden layer and the output: the
reference declared one but gave two layers the same name, so it was dropped, and the paper's
numbers were produced with this network.

The shipped models follow the reference's recipe: ``python -m pruning_toolkit.toy_model --dataset
moon --optimizer sgd --epochs 10000`` (full-batch SGD, lr 0.001, momentum 0.9, seed 0; 10,000
epochs for moon and circle, 12,000 for mult; about an hour per dataset on one CPU core) writes into
``models-retrained/``; ``--out models --overwrite`` replaces a shipped one. Without flags the
command trains all three with full-batch Adam (lr 0.001, 300 epochs; about 8 minutes on 2 CPU
cores): faster, and further from the paper's numbers.
"""
import time
from pathlib import Path

import torch
from torch import nn
from tqdm import tqdm

from pruning_toolkit import files, runtime, toy_data
from pruning_toolkit.cli import OneLineErrorParser
from pruning_toolkit.toy_vocabulary import DATASETS, NUM_CLASSES

MODEL_DIR = Path(__file__).resolve().parents[1] / "models"
RETRAINED_DIR = MODEL_DIR.with_name("models-retrained")
HIDDEN_WIDTH = 1000
TRAINING_SEED = 0
CHECKPOINT_EVERY = 250  # epochs between the resumable training states


def build_model(num_classes, hidden_width=HIDDEN_WIDTH):
    """The reference network; indices 0, 3, 5 are the hidden Linear layers, 6 the output layer."""
    return nn.Sequential(
        nn.Linear(2, hidden_width), nn.ReLU(), nn.Dropout(0.5),
        nn.Linear(hidden_width, hidden_width), nn.ReLU(),
        nn.Linear(hidden_width, hidden_width),
        nn.Linear(hidden_width, num_classes),
    )


def hidden_layer_indices(model):
    """Positions in ``model`` (an ``nn.Sequential``) of the Linear layers whose neurons are pruned."""
    linear_indices = [i for i, layer in enumerate(model) if isinstance(layer, nn.Linear)]
    return linear_indices[:-1]


def hidden_widths(model):
    """The number of neurons of each hidden Linear layer (the real size of a pruned model)."""
    return [model[i].out_features for i in hidden_layer_indices(model)]


def accuracy(model, X, y):
    """Accuracy in percent of ``model`` (eval mode) on numpy or torch inputs."""
    X, y = torch.as_tensor(X), torch.as_tensor(y)
    with runtime.eval_mode(model), torch.no_grad():
        correct = (model(X).argmax(dim=1) == y).sum().item()
    return 100.0 * correct / len(y)


def accuracy_of_logits(logits, y):
    """Accuracy in percent, computed as :func:`accuracy` does, from logits already computed."""
    return 100.0 * (logits.argmax(dim=1) == y).sum().item() / len(y)


def make_optimizer(model, optimizer):
    if optimizer == "sgd":
        return torch.optim.SGD(model.parameters(), lr=0.001, momentum=0.9)
    if optimizer == "adam":
        return torch.optim.Adam(model.parameters(), lr=0.001)
    raise ValueError(f"unknown optimizer {optimizer!r}, expected 'sgd' or 'adam'")


def train(model, X, y, epochs, optimizer="sgd", description="training", quiet=False, state_path=None,
          every=CHECKPOINT_EVERY):
    """Full-batch training with dropout active: SGD(lr 1e-3, momentum 0.9) or Adam(lr 1e-3);
    a progress bar shows the loss.

    ``state_path``: every ``every`` epochs the weights, optimizer and random state go there
    (atomically); when it exists, training continues from it, so an interrupted run ends with
    exactly the model of an uninterrupted one (bit for bit on the CPU), and a finished run can
    be continued to more epochs (the model of a run that asked for them from the start)."""
    X, y = torch.as_tensor(X), torch.as_tensor(y)
    opt = make_optimizer(model, optimizer)
    first_epoch = 1
    if state_path is not None and Path(state_path).is_file():
        state = torch.load(state_path, map_location="cpu", weights_only=True)
        if state.get("optimizer_name") != optimizer or int(state["epoch"]) > epochs:
            raise ValueError(f"{state_path}: a run with --optimizer {state.get('optimizer_name')} is stored there "
                             f"at epoch {state['epoch']}; resume it with the same optimizer and at least as many "
                             f"--epochs, or delete it")
        model.load_state_dict(state["state_dict"])
        opt.load_state_dict(state["optimizer"])
        torch.set_rng_state(state["rng"])
        first_epoch = int(state["epoch"]) + 1
    model.train()
    progress = tqdm(range(first_epoch, epochs + 1), desc=description, unit="epoch", initial=first_epoch - 1,
                    total=epochs, disable=True if quiet else None)
    for epoch in progress:
        opt.zero_grad()
        loss = nn.functional.cross_entropy(model(X), y)
        loss.backward()
        opt.step()
        if epoch % 10 == 0 or epoch == epochs:
            progress.set_postfix(loss=f"{loss.item():.4f}", refresh=False)
        if state_path is not None and (epoch % every == 0 or epoch == epochs):
            _save({"epoch": epoch, "epochs": epochs, "optimizer_name": optimizer,
                              "state_dict": model.state_dict(), "optimizer": opt.state_dict(),
                              "rng": torch.get_rng_state()}, state_path)
    model.eval()
    return model


def _save(state, path):
    files.write_atomically(path, lambda temporary: torch.save(state, temporary))


def model_path(dataset):
    return MODEL_DIR / f"{dataset}.pt"


def save_model(model, path, **recipe):
    """Save the state_dict together with the recipe that produced it (loadable weights_only)."""
    _save({"state_dict": model.state_dict(), "recipe": recipe}, path)


def load_model(dataset, path=None):
    """The shipped trained model of ``dataset`` in eval mode."""
    checkpoint = torch.load(path or model_path(dataset), map_location="cpu", weights_only=True)
    model = build_model(NUM_CLASSES[dataset])
    model.load_state_dict(checkpoint["state_dict"])
    return model.eval()


def load_recipe(dataset, path=None):
    return torch.load(path or model_path(dataset), map_location="cpu", weights_only=True)["recipe"]


def resume_state_path(out_dir, dataset):
    return Path(out_dir) / f".{dataset}.training-state.pt"


def retrain(dataset, epochs, optimizer, out_dir=RETRAINED_DIR, quiet=False, resume=False):
    X, y = toy_data.load_training_set(dataset)
    torch.manual_seed(TRAINING_SEED)
    model = build_model(NUM_CLASSES[dataset])
    state_path = resume_state_path(out_dir, dataset)
    if not resume:
        state_path.unlink(missing_ok=True)
    start = time.time()
    train(model, X, y, epochs, optimizer, description=dataset, quiet=quiet, state_path=state_path)
    acc = accuracy(model, X, y)
    path = Path(out_dir) / f"{dataset}.pt"
    save_model(model, path, dataset=dataset, seed=TRAINING_SEED, epochs=epochs,
               optimizer=optimizer, lr=0.001, momentum=0.9 if optimizer == "sgd" else 0.0,
               full_batch=True, train_accuracy=acc, torch_version=str(torch.__version__))
    print(f"{dataset}: training accuracy {acc:.2f} % after {epochs} epochs "
          f"({time.time() - start:.0f} s) -> {path}", flush=True)


def main(argv=None):
    parser = OneLineErrorParser(prog="python -m pruning_toolkit.toy_model",
                                description="Retrain the toy models on the shipped training sets.")
    parser.add_argument("--datasets", "--dataset", default=",".join(DATASETS),
                        help="one dataset or a comma-separated subset of " + ",".join(DATASETS))
    parser.add_argument("--epochs", type=int, default=300)
    parser.add_argument("--optimizer", choices=("sgd", "adam"), default="adam",
                        help="sgd (the reference's recipe and the shipped models', with --epochs 10000) or adam (faster)")
    parser.add_argument("--out", type=Path, default=RETRAINED_DIR,
                        help="folder for <dataset>.pt (default: models-retrained/; the shipped models are in models/)")
    parser.add_argument("--overwrite", action="store_true", help="replace models that exist in --out")
    parser.add_argument("--resume", action="store_true",
                        help=f"continue an interrupted training from its last state (saved every {CHECKPOINT_EVERY} epochs), "
                             "or a finished one to more --epochs")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    parser.add_argument("--quiet", action="store_true", help="no progress bar")
    args = parser.parse_args(argv)
    datasets = args.datasets.split(",")
    for dataset in datasets:
        if dataset not in NUM_CLASSES:
            parser.error(f"unknown dataset {dataset!r}; choices: {', '.join(DATASETS)}")
    if args.epochs < 1 or (args.threads is not None and args.threads < 1):
        parser.error("--epochs and --threads must be at least 1")
    existing = [str(Path(args.out) / f"{d}.pt") for d in datasets if (Path(args.out) / f"{d}.pt").exists()]
    if existing and not (args.overwrite or args.resume):
        parser.error(f"{existing[0]} exists; pass --overwrite to replace it or another --out")
    runtime.set_threads(args.threads)
    for dataset in datasets:
        retrain(dataset, args.epochs, args.optimizer, args.out, args.quiet, args.resume)


if __name__ == "__main__":
    main()
