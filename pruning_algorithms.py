"""LEAN and the individual-filter baselines under the reference's names; one call = one pruning step.

``METHOD(model, tot_perc, Redun=True, verbose=False)`` keeps a fraction ``tot_perc`` of the
prunable convolutions (earlier steps included). Names only; the code lives in
``pruning_toolkit.methods`` (these wrappers), ``pruning_toolkit.selection`` (what a step
removes: ``LeanChains``, ``NormThreshold``, ``CriterionSelection``) and ``pruning_toolkit.pruning_step``.
The "Pruning by Explaining" criteria on CNNs: ``LRP_Global``, ``Taylor_Global``, ``Grad_Global``,
``Weight_Global`` and their ``_MSD_3x3`` / ``_ResNet50`` forms (``pruning_toolkit.cnn_criteria``).
"""
from pruning_toolkit.cnn_criteria import CriterionSelection
from pruning_toolkit.masks import fraction_pruned, masked_weight
from pruning_toolkit.methods import (IndivL1_Global, IndivL1_Global_MSD, IndivL1_Global_MSD_3x3,
                                     IndivL1_Global_ResNet50, IndivSV_Global, IndivSV_Global_MSD,
                                     IndivSV_Global_MSD_3x3, IndivSV_Global_ResNet50, LEAN_SV, LEAN_SV_MSD,
                                     LEAN_SV_MSD_3x3, LEAN_SV_ResNet50, Prune_Redundant_Convolutions_MSD,
                                     Prune_Redundant_Convolutions_MSD3x3, Prune_Redundant_Convolutions_ResNet50,
                                     prune_batchnorms_ResNet50, prune_biases_MSD, prune_biases_MSD3x3)
from pruning_toolkit.methods import (Grad_Global, Grad_Global_MSD_3x3, Grad_Global_ResNet50, LRP_Global,
                                     LRP_Global_MSD_3x3, LRP_Global_ResNet50, Taylor_Global, Taylor_Global_MSD_3x3,
                                     Taylor_Global_ResNet50, Weight_Global, Weight_Global_MSD_3x3,
                                     Weight_Global_ResNet50)
from pruning_toolkit.operator_norms import layer_norms
from pruning_toolkit.pruning_step import prune_dead_channel_params, prune_redundant, prune_step
from pruning_toolkit.selection import (MSD_FOURIER_SIZE, RESNET_FOURIER_SIZE, LeanChains, NormThreshold, Selection,
                                       lean_selection, threshold_selection)

__all__ = ["LEAN_SV", "IndivSV_Global", "IndivL1_Global", "LEAN_SV_MSD", "LEAN_SV_MSD_3x3", "IndivSV_Global_MSD",
           "IndivSV_Global_MSD_3x3", "IndivL1_Global_MSD", "IndivL1_Global_MSD_3x3", "prune_biases_MSD",
           "prune_biases_MSD3x3", "Prune_Redundant_Convolutions_MSD", "Prune_Redundant_Convolutions_MSD3x3",
           "LEAN_SV_ResNet50", "IndivSV_Global_ResNet50", "IndivL1_Global_ResNet50", "prune_batchnorms_ResNet50",
           "Prune_Redundant_Convolutions_ResNet50", "prune_step", "prune_redundant", "prune_dead_channel_params",
           "Selection", "LeanChains", "NormThreshold", "lean_selection", "threshold_selection", "layer_norms",
           "fraction_pruned", "masked_weight", "MSD_FOURIER_SIZE", "RESNET_FOURIER_SIZE", "CriterionSelection",
           "LRP_Global", "LRP_Global_MSD_3x3", "LRP_Global_ResNet50", "Taylor_Global", "Taylor_Global_MSD_3x3",
           "Taylor_Global_ResNet50", "Grad_Global", "Grad_Global_MSD_3x3", "Grad_Global_ResNet50", "Weight_Global", "Weight_Global_MSD_3x3", "Weight_Global_ResNet50"]
