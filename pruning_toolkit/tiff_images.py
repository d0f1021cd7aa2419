"""TIFF image stacks as datasets, as msd_pytorch's ``ImageDataset`` reads them (inputs and labels)."""
import re
from pathlib import Path

import numpy as np
import tifffile
import torch
from torch.utils.data import Dataset

TIFF_SUFFIXES = (".tif", ".tiff")

def _natural_sort(paths):
    def key(path):
        return [int(part) if part.isdigit() else part for part in re.split(r"(\d+)", path)]
    return sorted(paths, key=key)


def find_images(path_specifier):
    """Files named by a glob pattern, a directory (all files in it) or a single file,
    naturally sorted ("im2" before "im10"); FileNotFoundError if nothing matches."""
    spec = Path(path_specifier).expanduser()
    if any(ch in spec.name for ch in "*?["):
        paths = [p for p in spec.parent.glob(spec.name) if p.is_file()]
    elif spec.is_dir():
        paths = [p for p in spec.iterdir() if p.is_file()]
    elif spec.is_file():
        paths = [spec]
    else:
        paths = []
    if not paths:
        raise FileNotFoundError(f"no image files match {path_specifier}")
    not_tiff = [str(p) for p in paths if p.suffix.lower() not in TIFF_SUFFIXES]
    if not_tiff:
        raise ValueError(f"{path_specifier}: only TIFF images are supported, got {not_tiff[0]}")
    return _natural_sort([str(p) for p in paths])


def _relabel(image, labels, path):
    """Class indices of a label image: ``labels`` is a list of pixel values (value
    labels[i] -> class i) or a count k (values must be 0..k-1)."""
    if image.dtype.kind not in "uib":
        raise ValueError(f"{path}: label image must hold integers, found dtype {image.dtype}")
    image = image.astype(np.int64)
    values = list(range(int(labels))) if np.isscalar(labels) else [int(v) for v in labels]
    lookup = {value: index for index, value in enumerate(values)}
    present = np.unique(image)
    unexpected = [int(v) for v in present if int(v) not in lookup]
    if unexpected:
        raise ValueError(f"{path}: label values {unexpected} are not in the label set {values}")
    classes = np.empty_like(image)
    for value in present:
        classes[image == value] = lookup[int(value)]
    return classes


class ImageStack:
    """A naturally sorted stack of TIFF images; ``stack[i]`` is a tensor (C, H, W):
    float32, or int64 class indices when ``labels`` is given."""

    def __init__(self, path_specifier, *, collapse_channels=False, labels=None):
        if labels is not None and collapse_channels:
            raise ValueError("cannot collapse the channels of a label image stack")
        self.path_specifier = path_specifier
        self.collapse_channels = collapse_channels
        self.labels = labels
        self.paths = find_images(path_specifier)

    @property
    def num_labels(self):
        if self.labels is None:
            raise RuntimeError("this image stack has no labels")
        return int(self.labels) if np.isscalar(self.labels) else len(list(self.labels))

    def __len__(self):
        return len(self.paths)

    def __getitem__(self, i):
        path = self.paths[i]
        try:
            image = np.asarray(tifffile.imread(path))
        except Exception as error:
            raise ValueError(f"{path}: cannot read TIFF image ({error})")
        if image.ndim not in (2, 3):
            raise ValueError(f"{path}: expected a 2-D image or a (C, H, W) stack, "
                             f"found shape {image.shape}")
        if self.labels is not None:
            image = _relabel(image, self.labels, path)
        else:
            image = image.astype(np.float32)
        if image.ndim == 2:
            image = image[None]
        if self.collapse_channels:
            image = image.mean(axis=0, keepdims=True)
        return torch.from_numpy(np.ascontiguousarray(image))


class ImageDataset(Dataset):
    """Pairs (input image, target image) from two TIFF stacks, as msd_pytorch's
    ImageDataset: inputs float32 (C, H, W); targets relabelled by ``labels``."""

    def __init__(self, input_path_specifier, target_path_specifier, *,
                 collapse_channels=False, labels=None):
        super().__init__()
        self.input_path_specifier = input_path_specifier
        self.target_path_specifier = target_path_specifier
        self.labels = labels
        self.input_stack = ImageStack(input_path_specifier, collapse_channels=collapse_channels)
        self.target_stack = ImageStack(target_path_specifier, labels=labels,
                                       collapse_channels=collapse_channels and labels is None)
        if len(self.input_stack) != len(self.target_stack):
            raise ValueError(f"{len(self.input_stack)} input images match "
                             f"{input_path_specifier} but {len(self.target_stack)} target "
                             f"images match {target_path_specifier}")

    @property
    def num_labels(self):
        return self.target_stack.num_labels

    def __len__(self):
        return len(self.input_stack)

    def __getitem__(self, i):
        return self.input_stack[i], self.target_stack[i]


