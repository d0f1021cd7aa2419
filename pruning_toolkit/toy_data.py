"""The three 2-D toy datasets of "Pruning by Explaining": moon, circle and mult (a 4-arm spiral).

The training sets are generated once with seed 0 and ship in ``data/`` so that every user
prunes the same model on the same data; reference samples are drawn per run.
"""
from pathlib import Path

import numpy as np

from pruning_toolkit.toy_vocabulary import NUM_CLASSES, TRAINING_SET_SIZE

DATA_DIR = Path(__file__).resolve().parents[1] / "data"
TRAINING_SET_SEED = 0


def make_moon(n, seed):
    from sklearn.datasets import make_moons  # imported on use: the CLI validates its input without it
    return make_moons(n, noise=0.1, random_state=seed)


def make_circle(n, seed):
    from sklearn.datasets import make_circles
    return make_circles(n, noise=0.1, factor=0.3, random_state=seed)


def make_mult(n, seed):
    """Four spiral arms of ``n // 4`` points each, drawn from numpy's global RNG seeded with ``seed``."""
    np.random.seed(seed)
    per_class = n // 4
    points, labels = [], []
    for label in range(4):
        radius = np.linspace(0, 1, per_class)
        angle = np.linspace(4 * label, 4 * (label + 1), per_class) + np.random.randn(per_class) * 0.2
        points.append(np.stack([radius * np.sin(angle), radius * np.cos(angle)], axis=1))
        labels.append(np.full(per_class, label))
    return np.concatenate(points), np.concatenate(labels)


GENERATORS = {"moon": make_moon, "circle": make_circle, "mult": make_mult}


def generate(dataset, n, seed):
    """Return ``(X, y)``: ``n`` points of ``dataset`` as float32 and int64 arrays."""
    X, y = GENERATORS[dataset](n, seed)
    return X.astype(np.float32), y.astype(np.int64)


def reference_samples(dataset, samples_per_class, seed):
    """The samples a run computes its pruning criterion on (``samples_per_class * K`` points)."""
    return generate(dataset, samples_per_class * NUM_CLASSES[dataset], seed)


def noisy_test_set(dataset, seed, sigma, n=500):
    """500 points generated with ``seed + 1`` plus Gaussian input noise of std ``sigma``."""
    X, y = generate(dataset, n, seed + 1)
    noise = np.random.default_rng(seed + 1).normal(0.0, sigma, size=X.shape)
    return (X + noise).astype(np.float32), y


def training_set_path(dataset):
    return DATA_DIR / f"{dataset}-train.npz"


def write_training_set(dataset):
    """Generate the training set of ``dataset`` (seeded, so the same points) into ``data/``; how the shipped sets were made."""
    X, y = generate(dataset, TRAINING_SET_SIZE[dataset], TRAINING_SET_SEED)
    DATA_DIR.mkdir(parents=True, exist_ok=True)
    np.savez(training_set_path(dataset), X=X, y=y)
    return X, y


def load_training_set(dataset):
    """The shipped training set of ``dataset`` as ``(X, y)``."""
    with np.load(training_set_path(dataset), allow_pickle=False) as archive:
        return archive["X"], archive["y"]
