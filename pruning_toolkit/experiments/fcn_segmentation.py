"""An FCN-ResNet50 segmentation model with the MS-D model's training surface (learn, validate,
save, load), so the pruning example treats both architectures alike.

Checkpoints are ``{"epoch", "state_dict", "optimizer"}`` like the MS-D ones, written atomically;
pruned ones keep torch.nn.utils.prune's ``weight_orig``/``weight_mask`` and load back pruned.
"""
from pathlib import Path

import torch
from torch import nn

from pruning_toolkit import masks, runtime
from pruning_toolkit.fcn_resnet import fcn_resnet50
from pruning_toolkit.msd_network import read_checkpoint, save_checkpoint

# a narrow network of FCN-ResNet50's layout, for --quick runs and tests
NARROW_SHAPE = dict(blocks_per_layer=(1, 1, 1, 1), layer_widths=(4, 8, 8, 8), stem_channels=8)


class FCNSegmentationModel:
    """``net`` (pruning_toolkit.fcn_resnet.fcn_resnet50) trained with Adam on pixel-wise cross-entropy."""

    def __init__(self, num_classes, in_channels=1, device=None, **backbone_shape):
        self.device = runtime.resolve_device(device)
        self.num_classes, self.in_channels = num_classes, in_channels
        self.shape_note = "narrow" if backbone_shape else "full-size"
        self.net = fcn_resnet50(num_classes, in_channels, **backbone_shape).to(self.device)
        self.optimizer = torch.optim.Adam(self.net.parameters())
        self.criterion = nn.CrossEntropyLoss()

    def _batch(self, input, target):
        target = target.to(self.device).long()
        if target.dim() == 4:
            target = target.squeeze(1)
        return input.to(self.device, torch.float32), target

    def learn(self, input, target):
        """One Adam step on one batch (training mode: BatchNorm statistics update); the loss before it."""
        self.net.train()
        input, target = self._batch(input, target)
        loss = self.criterion(self.net(input)["out"], target)
        self.optimizer.zero_grad()
        loss.backward()
        self.optimizer.step()
        return loss.item()

    def validate(self, dataloader):
        """Mean loss per batch in evaluation mode."""
        if len(dataloader) == 0:
            raise ValueError("validate: the dataloader is empty")
        self.net.eval()
        total = 0.0
        with torch.no_grad():
            for input, target in dataloader:
                input, target = self._batch(input, target)
                total += self.criterion(self.net(input)["out"], target).item()
        return total / len(dataloader)

    def save(self, path, epoch, **extra):
        state = {**extra, "epoch": int(epoch), "state_dict": self.net.state_dict(),
                 "optimizer": self.optimizer.state_dict()}
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        save_checkpoint(state, path)

    def load(self, path):
        """Load a checkpoint written by :meth:`save` (pruned or not); returns its epoch."""
        state = read_checkpoint(path, self.device)
        state_dict = state["state_dict"]
        self._check_fits(path, state_dict)
        masks.match_pruning(self.net, state_dict)
        try:
            self.net.load_state_dict(state_dict)
        except RuntimeError as error:
            raise ValueError(f"{path}: state_dict does not fit this model: {error}") from None
        if state.get("optimizer") is not None:
            try:
                self.optimizer.load_state_dict(state["optimizer"])
            except (ValueError, KeyError, TypeError, AttributeError, IndexError) as error:
                raise ValueError(f"{path}: optimizer state does not fit this model: {error}") from None
        return int(state["epoch"])

    def _check_fits(self, path, state_dict):
        """ValueError naming the first differences when ``state_dict`` holds another architecture."""
        expected = {_plain(k): v.shape for k, v in self.net.state_dict().items() if not k.endswith("_mask")}
        found = {_plain(k): v.shape for k, v in state_dict.items() if not k.endswith("_mask")}
        missing = [k for k in expected if k not in found]
        unexpected = [k for k in found if k not in expected]
        wrong_shape = [f"{k} {tuple(found[k])} instead of {tuple(shape)}"
                       for k, shape in expected.items() if k in found and found[k] != shape]
        if missing or unexpected or wrong_shape:
            details = [f"{len(items)} {what} (e.g. {items[0]})" for items, what in
                       ((missing, "missing keys"), (unexpected, "unexpected keys"), (wrong_shape, "shape mismatches"))
                       if items]
            raise ValueError(f"{path}: not a checkpoint of this {self.shape_note} FCN-ResNet50 "
                             f"({self.in_channels} input channel(s), {self.num_classes} classes): "
                             + "; ".join(details))


def _plain(key):
    return key[:-len("_orig")] if key.endswith("_orig") else key
