"""Mixed-scale dense (MS-D) networks with msd_pytorch's public surface (``import msd as mp``).

The names msd_pytorch users know; the code lives in ``pruning_toolkit.msd_network`` (the
network, its blocks and checkpoints), ``pruning_toolkit.tiff_images`` (``ImageDataset``) and
``pruning_toolkit.accuracy`` (``get_global_accuracy``).
"""
from pruning_toolkit.accuracy import get_global_accuracy
from pruning_toolkit.msd_network import (DEFAULT_DILATIONS, MSDBlock2d, MSDFinalLayer, MSDModule2d,
                                         MSDSegmentationModel, SparseMSDBlock2d, read_checkpoint,
                                         save_checkpoint, symmetric_index)
from pruning_toolkit.runtime import resolve_device
from pruning_toolkit.tiff_images import ImageDataset, ImageStack, find_images

__all__ = ["MSDBlock2d", "SparseMSDBlock2d", "MSDFinalLayer", "MSDModule2d", "MSDSegmentationModel",
           "DEFAULT_DILATIONS", "read_checkpoint", "save_checkpoint", "symmetric_index", "ImageDataset",
           "ImageStack", "find_images", "get_global_accuracy", "resolve_device"]
