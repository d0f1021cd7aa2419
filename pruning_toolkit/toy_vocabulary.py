"""The vocabulary of the "Pruning by Explaining" toy experiment, in one place.

Datasets and their classes, the criteria, the log's scenarios and stages, the paper's grid
(reference samples per class, seeds), the neurons a run removes and the set sizes of the rank
analysis. Every other toy module imports these names from here. Plain constants, free of numpy
and torch, so that the command line validates its input without loading either.
"""

NUM_CLASSES = {"moon": 2, "circle": 2, "mult": 4}
DATASETS = tuple(NUM_CLASSES)
TRAINING_SET_SIZE = {"moon": 2000, "circle": 2000, "mult": 4000}
# what each shipped training set holds per class: the most reference samples per class a run may draw
TRAINING_SAMPLES_PER_CLASS = {dataset: TRAINING_SET_SIZE[dataset] // NUM_CLASSES[dataset] for dataset in DATASETS}

CRITERIA = ("lrp", "taylor", "grad", "weight")

SCENARIOS = ("train", "test")
RANK_SCENARIO = "rankselection"  # the scenario of rank-log lines (the neuron order instead of an accuracy)
STAGES = ("pre", "post")

# the paper's grid: reference samples per class (also the accuracy plots' x ticks) and seeds
SAMPLES_PER_CLASS = (1, 2, 5, 10, 20, 50, 100, 200)
SEEDS = tuple(range(50))
PRUNED_NEURONS = 1000  # of the 3000 hidden neurons, removed in one shot per run

SET_SIZES = (125, 250, 500, 1000)  # k of the rank analysis' first-k / last-k set overlaps
