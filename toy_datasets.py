"""The three 2-D toy datasets of "Pruning by Explaining": moon, circle and mult (a 4-arm spiral).

The training sets are generated once with seed 0 and ship in ``data/`` so that every user
prunes the same model on the same data; reference samples are drawn per run.

The public surface of ``pruning_toolkit.toy_data`` (and of the datasets' names in ``toy_vocabulary``).
"""
from pruning_toolkit.toy_data import (DATA_DIR, GENERATORS, TRAINING_SET_SEED, generate, load_training_set,
                                      make_circle, make_moon, make_mult, noisy_test_set, reference_samples,
                                      training_set_path, write_training_set)
from pruning_toolkit.toy_vocabulary import DATASETS, NUM_CLASSES, TRAINING_SET_SIZE

__all__ = [
    "DATASETS", "NUM_CLASSES", "TRAINING_SET_SIZE",
    "DATA_DIR", "GENERATORS", "TRAINING_SET_SEED", "generate", "load_training_set", "make_circle", "make_moon",
    "make_mult", "noisy_test_set", "reference_samples", "training_set_path", "write_training_set",
]
