"""ImageNet ResNet-50 from torchvision (He et al. 2016), randomly initialised, 25.6M parameters."""

from __future__ import annotations

from rsbench import hookimpl
from rsbench.specs import Architecture


def build_resnet50(num_classes, input_shape, variant=None):
    from torchvision.models import resnet50  # imported when used

    if input_shape[0] != 3:
        raise ValueError(f"resnet50 takes 3-channel images, not {input_shape[0]}")
    return resnet50(weights=None, num_classes=num_classes)


@hookimpl
def register_architectures(register):
    register(Architecture("resnet50", "torchvision ResNet-50 for ImageNet-sized inputs", build_resnet50))
