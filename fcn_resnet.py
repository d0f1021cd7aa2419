"""FCN-ResNet50 with torchvision's state_dict keys and any number of input channels
(the code lives in ``pruning_toolkit.fcn_resnet``)."""
from pruning_toolkit.fcn_resnet import FCN, Bottleneck, FCNHead, ResNetBackbone, fcn_resnet50

__all__ = ["fcn_resnet50", "FCN", "FCNHead", "ResNetBackbone", "Bottleneck"]
