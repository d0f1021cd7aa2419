"""Pixel accuracy of a segmentation model, the metric of the LEAN experiments."""
import torch

from pruning_toolkit import runtime

def get_global_accuracy(model, dataloader):
    """Fraction of correctly classified pixels over ``dataloader`` (argmax over classes).

    ``model`` is an MSDSegmentationModel (its ``net`` is used) or any module mapping
    (B, C, H, W) to class scores (B, K, H, W) (a dict's "out" entry is used)."""
    net = getattr(model, "net", model)
    parameter = next(net.parameters())
    correct = total = 0
    with runtime.eval_mode(net), torch.inference_mode():
        for input, target in dataloader:
            scores = net(input.to(parameter.device, parameter.dtype))
            if isinstance(scores, dict):
                scores = scores["out"]
            target = target.to(parameter.device)
            if target.dim() == scores.dim():
                target = target.squeeze(1)
            correct += (scores.argmax(1) == target).sum().item()
            total += target.numel()
    if total == 0:
        raise ValueError("get_global_accuracy: the dataloader is empty")
    return correct / total
