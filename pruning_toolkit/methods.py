"""LEAN and the individual-filter baselines under the reference's names; one call = one pruning step.

Every method has the reference signature ``METHOD(model, tot_perc, Redun=True, verbose=False)``:
``tot_perc`` is the fraction of prunable convolutions to KEEP after this step, counted over the
whole model, earlier steps included. Each is one line: the channel graph of the model (MS-D,
FCN-ResNet50, or traced from an example input for any CNN), a :mod:`selection`, and
:func:`pruning_step.prune_step`. On MS-D and FCN-ResNet50 the generic ``LEAN_SV`` /
``IndivSV_Global`` / ``IndivL1_Global`` select exactly what the per-architecture methods select.
The "Pruning by Explaining" criteria take reference samples as well: ``LRP_Global``,
``Taylor_Global``, ``Grad_Global``, ``Weight_Global`` and their ``_MSD_3x3`` / ``_ResNet50`` forms.
"""
from pruning_toolkit.cnn_criteria import CriterionSelection
from pruning_toolkit.graph_tracing import trace_channel_graph
from pruning_toolkit.norm_graph import msd_channel_graph, resnet50_channel_graph
from pruning_toolkit.pruning_step import prune_dead_channel_params, prune_redundant, prune_step
from pruning_toolkit.selection import MSD_FOURIER_SIZE, RESNET_FOURIER_SIZE, LeanChains, NormThreshold


def _pruned(model, graph, tot_perc, selection, Redun, verbose, label):
    prune_step(graph, tot_perc, selection, redundancy=Redun, verbose=verbose, label=label)
    return model


# ============================================================================================
# Any model (the graph is traced)
# ============================================================================================

def LEAN_SV(model, tot_perc, example_input, Redun=True, verbose=False, *, exclude=(),
            fourier_size=MSD_FOURIER_SIZE, rules=None):
    """LEAN on any traceable CNN: ``example_input`` (a tensor, or a tuple of the forward's
    tensors) is run once to build the graph; layers named in ``exclude`` (or below a module
    named there) are not pruned; ``rules``: layer rules for this call (``{type: LayerRule}``).
    ``fourier_size``: n of the spectral norms (7 reproduces the reference's ResNet50 choice)."""
    graph = trace_channel_graph(model, example_input, exclude, rules)
    return _pruned(model, graph, tot_perc, LeanChains(fourier_size, verbose), Redun, verbose, "LEAN_SV")


def IndivSV_Global(model, tot_perc, example_input, Redun=True, verbose=False, *, exclude=(),
                   fourier_size=MSD_FOURIER_SIZE, inclusive=False, rules=None):
    """Global threshold on spectral norms of any traceable CNN (``inclusive``: prune norms
    equal to the threshold too, as the reference's ResNet50 variant)."""
    graph = trace_channel_graph(model, example_input, exclude, rules)
    return _pruned(model, graph, tot_perc, NormThreshold("sv", fourier_size, inclusive), Redun, verbose,
                   "IndivSV_Global")


def IndivL1_Global(model, tot_perc, example_input, Redun=True, verbose=False, *, exclude=(), rules=None):
    """Global threshold on the L1 norms of the kernels of any traceable CNN."""
    graph = trace_channel_graph(model, example_input, exclude, rules)
    return _pruned(model, graph, tot_perc, NormThreshold("l1"), Redun, verbose, "IndivL1_Global")


# ============================================================================================
# MS-D (``_3x3``: the final 1x1 layer is left out, as in the paper's experiments)
# ============================================================================================

def LEAN_SV_MSD(model, tot_perc, Redun=True, verbose=False):
    """LEAN on an MS-D network, final 1x1 layer included."""
    return _pruned(model, msd_channel_graph(model), tot_perc, LeanChains(MSD_FOURIER_SIZE, verbose), Redun,
                   verbose, "LEAN_SV_MSD")


def LEAN_SV_MSD_3x3(model, tot_perc, Redun=True, verbose=False):
    """LEAN on the 3x3 layers of an MS-D network (the paper's experiments)."""
    return _pruned(model, msd_channel_graph(model, include_final_layer=False), tot_perc,
                   LeanChains(MSD_FOURIER_SIZE, verbose), Redun, verbose, "LEAN_SV_MSD_3x3")


def IndivSV_Global_MSD(model, tot_perc, Redun=True, verbose=False):
    return _pruned(model, msd_channel_graph(model), tot_perc, NormThreshold("sv", MSD_FOURIER_SIZE), Redun,
                   verbose, "IndivSV_Global_MSD")


def IndivSV_Global_MSD_3x3(model, tot_perc, Redun=True, verbose=False):
    return _pruned(model, msd_channel_graph(model, include_final_layer=False), tot_perc,
                   NormThreshold("sv", MSD_FOURIER_SIZE), Redun, verbose, "IndivSV_Global_MSD_3x3")


def IndivL1_Global_MSD(model, tot_perc, Redun=True, verbose=False):
    return _pruned(model, msd_channel_graph(model), tot_perc, NormThreshold("l1"), Redun, verbose,
                   "IndivL1_Global_MSD")


def IndivL1_Global_MSD_3x3(model, tot_perc, Redun=True, verbose=False):
    return _pruned(model, msd_channel_graph(model, include_final_layer=False), tot_perc, NormThreshold("l1"),
                   Redun, verbose, "IndivL1_Global_MSD_3x3")


def prune_biases_MSD(model):
    """Prune the bias of every MS-D channel whose incoming convolutions are all pruned."""
    prune_dead_channel_params(msd_channel_graph(model))


def prune_biases_MSD3x3(model):
    prune_dead_channel_params(msd_channel_graph(model, include_final_layer=False))


def Prune_Redundant_Convolutions_MSD(model):
    prune_redundant(msd_channel_graph(model))


def Prune_Redundant_Convolutions_MSD3x3(model):
    prune_redundant(msd_channel_graph(model, include_final_layer=False))


# ============================================================================================
# FCN-ResNet50 (BatchNorm-scaled norms, n = 7, unprunable identity skips)
# ============================================================================================

def LEAN_SV_ResNet50(model, tot_perc, Redun=True, verbose=False):
    """LEAN on FCN-ResNet50: BatchNorm-scaled spectral norms (n = 7), unprunable identity skips."""
    return _pruned(model, resnet50_channel_graph(model), tot_perc, LeanChains(RESNET_FOURIER_SIZE, verbose),
                   Redun, verbose, "LEAN_SV_ResNet50")


def IndivSV_Global_ResNet50(model, tot_perc, Redun=True, verbose=False):
    return _pruned(model, resnet50_channel_graph(model), tot_perc,
                   NormThreshold("sv", RESNET_FOURIER_SIZE, inclusive=True), Redun, verbose, "IndivSV_Global_ResNet50")


def IndivL1_Global_ResNet50(model, tot_perc, Redun=True, verbose=False):
    return _pruned(model, resnet50_channel_graph(model), tot_perc, NormThreshold("l1"), Redun, verbose,
                   "IndivL1_Global_ResNet50")


def prune_batchnorms_ResNet50(model):
    """Prune the BatchNorm weight and bias of every channel whose incoming convolutions are all pruned."""
    prune_dead_channel_params(resnet50_channel_graph(model))


def Prune_Redundant_Convolutions_ResNet50(model):
    prune_redundant(resnet50_channel_graph(model))


# ============================================================================================
# The "Pruning by Explaining" criteria (cnn_criteria): lrp, taylor, grad, weight
# ============================================================================================

def _criterion_methods(criterion, prefix):
    """``<prefix>_Global`` (any traceable CNN), ``<prefix>_Global_MSD_3x3`` and ``<prefix>_Global_ResNet50``.

    ``reference``: the reference samples, (inputs, targets) or an iterable of such batches
    (targets: class indices, per pixel for segmentation); ``granularity``: "kernel" (one score
    per convolution, LEAN's unit) or "filter" (per output channel); ``rule``: the LRP rule."""
    def generic(model, tot_perc, example_input, reference, Redun=True, verbose=False, *, granularity="kernel",
                rule="zplus", exclude=(), rules=None):
        graph = trace_channel_graph(model, example_input, exclude, rules)
        selection = CriterionSelection(criterion, model, reference, granularity, rule, rules)
        return _pruned(model, graph, tot_perc, selection, Redun, verbose, f"{prefix}_Global")

    def msd_3x3(model, tot_perc, reference, Redun=True, verbose=False, *, granularity="kernel", rule="zplus"):
        selection = CriterionSelection(criterion, getattr(model, "net", model), reference, granularity, rule)
        return _pruned(model, msd_channel_graph(model, include_final_layer=False), tot_perc, selection, Redun,
                       verbose, f"{prefix}_Global_MSD_3x3")

    def resnet50(model, tot_perc, reference, Redun=True, verbose=False, *, granularity="kernel", rule="zplus"):
        selection = CriterionSelection(criterion, model, reference, granularity, rule)
        return _pruned(model, resnet50_channel_graph(model), tot_perc, selection, Redun, verbose,
                       f"{prefix}_Global_ResNet50")

    methods = []
    for function, suffix, what in ((generic, "", "any traceable CNN (the graph is traced on example_input)"),
                                   (msd_3x3, "_MSD_3x3", "the 3x3 layers of an MS-D network"),
                                   (resnet50, "_ResNet50", "FCN-ResNet50")):
        function.__name__ = function.__qualname__ = f"{prefix}_Global{suffix}"
        function.__doc__ = f"Prune {what} by the {criterion} criterion, all layers ranked together.\n\n" + \
            _criterion_methods.__doc__.split("\n\n", 1)[1]
        methods.append(function)
    return methods


LRP_Global, LRP_Global_MSD_3x3, LRP_Global_ResNet50 = _criterion_methods("lrp", "LRP")
Taylor_Global, Taylor_Global_MSD_3x3, Taylor_Global_ResNet50 = _criterion_methods("taylor", "Taylor")
Grad_Global, Grad_Global_MSD_3x3, Grad_Global_ResNet50 = _criterion_methods("grad", "Grad")
Weight_Global, Weight_Global_MSD_3x3, Weight_Global_ResNet50 = _criterion_methods("weight", "Weight")
