"""The toy MLP of "Pruning by Explaining", its seeded training recipe and the shipped checkpoints.

Architecture: Linear(2,1000) ReLU Dropout(0.5) Linear(1000,1000) ReLU Linear(1000,1000)
Linear(1000,K). There is no nonlinearity between the third hidden layer and the output: the
reference declared one but gave two layers the same name, so it was dropped, and the paper's
numbers were produced with this network.

Run ``python -m pruning_toolkit.toy_model`` to regenerate the training sets in ``data/`` and retrain the
three shipped models in ``models/`` (full-batch Adam, lr 0.001, 300 epochs, seed 0: minutes on a CPU).
``--optimizer sgd --epochs 10000`` is the reference's recipe (SGD, lr 0.001, momentum 0.9): closer
to the paper's numbers, about an hour per dataset on two CPU cores.
"""
import argparse
import time
from pathlib import Path

import torch
from torch import nn

import toy_datasets

MODEL_DIR = Path(__file__).resolve().parents[1] / "models"
HIDDEN_WIDTH = 1000
TRAINING_SEED = 0


def build_model(num_classes, hidden_width=HIDDEN_WIDTH):
    """The reference network; indices 0, 3, 5 are the hidden Linear layers, 6 the output layer."""
    return nn.Sequential(
        nn.Linear(2, hidden_width), nn.ReLU(), nn.Dropout(0.5),
        nn.Linear(hidden_width, hidden_width), nn.ReLU(),
        nn.Linear(hidden_width, hidden_width),
        nn.Linear(hidden_width, num_classes),
    )


def hidden_linears(model):
    """The Linear layers whose output neurons are pruned, in network order."""
    linears = [m for m in model if isinstance(m, nn.Linear)]
    return linears[:-1]


def accuracy(model, X, y):
    """Accuracy in percent of ``model`` (eval mode) on numpy or torch inputs."""
    X, y = torch.as_tensor(X), torch.as_tensor(y)
    was_training = model.training
    model.eval()
    with torch.no_grad():
        correct = (model(X).argmax(dim=1) == y).sum().item()
    model.train(was_training)
    return 100.0 * correct / len(y)


def train(model, X, y, epochs, optimizer="sgd", log_every=1000):
    """Full-batch training with dropout active: SGD(lr 1e-3, momentum 0.9) or Adam(lr 1e-3)."""
    X, y = torch.as_tensor(X), torch.as_tensor(y)
    if optimizer == "sgd":
        opt = torch.optim.SGD(model.parameters(), lr=0.001, momentum=0.9)
    else:
        opt = torch.optim.Adam(model.parameters(), lr=0.001)
    model.train()
    for epoch in range(1, epochs + 1):
        opt.zero_grad()
        loss = nn.functional.cross_entropy(model(X), y)
        loss.backward()
        opt.step()
        if log_every and epoch % log_every == 0:
            print(f"  epoch {epoch}: loss {loss.item():.4f}", flush=True)
    model.eval()
    return model


def model_path(dataset):
    return MODEL_DIR / f"{dataset}.pt"


def save_model(model, path, **recipe):
    """Save the state_dict together with the recipe that produced it (loadable weights_only)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(path.suffix + ".tmp")
    torch.save({"state_dict": model.state_dict(), "recipe": recipe}, tmp)
    tmp.replace(path)


def load_model(dataset, path=None):
    """The shipped trained model of ``dataset`` in eval mode."""
    checkpoint = torch.load(path or model_path(dataset), map_location="cpu", weights_only=True)
    model = build_model(toy_datasets.NUM_CLASSES[dataset])
    model.load_state_dict(checkpoint["state_dict"])
    return model.eval()


def load_recipe(dataset, path=None):
    return torch.load(path or model_path(dataset), map_location="cpu", weights_only=True)["recipe"]


def retrain(dataset, epochs, optimizer):
    X, y = toy_datasets.write_training_set(dataset)
    torch.manual_seed(TRAINING_SEED)
    model = build_model(toy_datasets.NUM_CLASSES[dataset])
    start = time.time()
    train(model, X, y, epochs, optimizer)
    acc = accuracy(model, X, y)
    save_model(model, model_path(dataset), dataset=dataset, seed=TRAINING_SEED, epochs=epochs,
               optimizer=optimizer, lr=0.001, momentum=0.9 if optimizer == "sgd" else 0.0,
               full_batch=True, train_accuracy=acc, torch_version=str(torch.__version__))
    print(f"{dataset}: training accuracy {acc:.2f} % after {epochs} epochs "
          f"({time.time() - start:.0f} s) -> {model_path(dataset)}", flush=True)


def main(argv=None):
    parser = argparse.ArgumentParser(description="Regenerate the toy training sets and retrain the toy models.")
    parser.add_argument("--datasets", default="moon,circle,mult", help="comma-separated subset of moon,circle,mult")
    parser.add_argument("--epochs", type=int, default=300)
    parser.add_argument("--optimizer", choices=("sgd", "adam"), default="adam",
                        help="adam (the shipped models) or sgd (the reference's recipe, with --epochs 10000)")
    args = parser.parse_args(argv)
    for dataset in args.datasets.split(","):
        if dataset not in toy_datasets.NUM_CLASSES:
            parser.error(f"unknown dataset {dataset!r}; choices: {', '.join(toy_datasets.DATASETS)}")
        retrain(dataset, args.epochs, args.optimizer)


if __name__ == "__main__":
    main()
