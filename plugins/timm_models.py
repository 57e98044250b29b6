"""Any timm backbone as ``timm/<name>`` (``rsbench train --arch timm/resnet18``), randomly initialised
with the dataset's input channels and classes (timm's ``in_chans`` / ``num_classes``)."""

from __future__ import annotations

from rsbench import hookimpl
from rsbench.errors import RsbenchError, did_you_mean
from rsbench.specs import Architecture


def build_timm(num_classes, input_shape, variant):
    import timm  # imported when used: it takes seconds

    if not timm.is_model(variant):
        raise RsbenchError(f"timm has no model {variant!r}", did_you_mean(variant, timm.list_models()))
    return timm.create_model(variant, pretrained=False, num_classes=num_classes, in_chans=input_shape[0])


@hookimpl
def register_architectures(register):
    register(Architecture("timm/", "any timm model: timm/<name> (see timm.list_models())", build_timm, True))
