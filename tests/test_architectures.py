import pytest
import torch
from torch import nn

from rsbench.errors import RsbenchError
from rsbench.nets import NormalizeLayer, build_classifier
from rsbench.plugins import get_dataset


def count(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


@pytest.mark.parametrize(
    ("arch", "dataset", "published"),
    [
        ("lenet", "mnist", 431_080),  # 20*25+20 + 50*20*25+50 + 800*500+500 + 500*10+10
        ("cifar_resnet20", "cifar10", 0.27e6),  # He et al. 2016, Table 6
        ("cifar_resnet110", "cifar10", 1.7e6),  # He et al. 2016, Table 6
    ],
)
def test_parameter_counts_match_published(arch, dataset, published):
    model = build_classifier(arch, get_dataset(dataset))
    assert isinstance(model[0], NormalizeLayer)
    assert count(model) == pytest.approx(published, rel=0.03)


def test_resnet50_matches_torchvision_count():
    spec = get_dataset("imagenet")
    from rsbench.plugins import get_architecture

    net = get_architecture("resnet50").build(spec.num_classes, spec.input_shape, None)
    assert count(net) == pytest.approx(25.557e6, rel=0.001)


def test_timm_backbone_adapts_channels_and_classes():
    model = build_classifier("timm/resnet18", get_dataset("mnist"))
    assert model(torch.rand(3, 1, 28, 28)).shape == (3, 10)


def test_unknown_timm_model_suggests():
    with pytest.raises(RsbenchError, match="timm has no model"):
        build_classifier("timm/resnet18x", get_dataset("mnist"))


def test_architecture_that_does_not_fit_dataset_is_a_clear_error():
    # LeNet and the CIFAR ResNets adapt to the input channels; torchvision's ResNet-50 needs RGB
    with pytest.raises(RsbenchError, match="does not fit dataset 'mnist'"):
        build_classifier("resnet50", get_dataset("mnist"))


def test_normalization_is_the_first_layer():
    model = build_classifier("cifar_resnet20", get_dataset("cifar10"))
    x = torch.full((1, 3, 32, 32), 0.5)
    expected = (0.5 - torch.tensor([0.4914, 0.4822, 0.4465])) / torch.tensor([0.2023, 0.1994, 0.2010])
    assert torch.allclose(model[0](x)[0, :, 0, 0], expected)
    assert not any(k.startswith("0.") for k in model.state_dict())  # official layout: no normalizer keys
