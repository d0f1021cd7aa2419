"""The reference's helpers: operator norms of convolutions, pruning masks, the convolutions of
MS-D and FCN-ResNet50 and their pruned fractions.

Names only; the code lives in ``pruning_toolkit.operator_norms``, ``pruning_toolkit.masks`` and
``pruning_toolkit.norm_graph``.
"""
from pruning_toolkit.accuracy import get_global_accuracy  # the reference exports it from here too
from pruning_toolkit.masks import (apply_mask, fraction_pruned, get_mask, is_pruned, kernel_alive, masked_weight,
                                   prune_kernels, pruned_counts)
from pruning_toolkit.masks import default_mask as get_default_mask
from pruning_toolkit.norm_graph import (fraction_pruned_convs_MSD, fraction_pruned_convs_MSD3x3,
                                        fraction_pruned_convs_MSD_3x3, fraction_pruned_convs_ResNet50,
                                        get_batchnorms_ResNet50, get_conv_masks_MSD, get_convs_MSD,
                                        get_convs_ResNet50, pruned_before_MSD, pruned_before_ResNet50)
from pruning_toolkit.operator_norms import FOURIER_ORDERS, compute_FourierSVD_norms, compute_Ln_norms_conv

__all__ = ["compute_FourierSVD_norms", "compute_Ln_norms_conv", "FOURIER_ORDERS", "get_default_mask", "get_mask",
           "apply_mask", "is_pruned", "masked_weight", "kernel_alive", "prune_kernels", "pruned_counts",
           "fraction_pruned", "get_convs_MSD", "get_conv_masks_MSD", "fraction_pruned_convs_MSD",
           "fraction_pruned_convs_MSD3x3", "fraction_pruned_convs_MSD_3x3", "pruned_before_MSD",
           "get_convs_ResNet50", "get_batchnorms_ResNet50", "fraction_pruned_convs_ResNet50",
           "pruned_before_ResNet50", "get_global_accuracy"]
