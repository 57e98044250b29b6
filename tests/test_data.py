import numpy as np
import pytest
import torch
from PIL import Image

from helpers import SHARED_DATA, need, write_cifar_batches
from rsbench.data import iterate_batches, random_crop_flip
from rsbench.errors import RsbenchError
from rsbench.plugins import get_dataset


def test_real_mnist_loads_in_memory(mnist_root):
    mnist = get_dataset("mnist")
    train = mnist.load(mnist_root, "train", True)
    test = mnist.load(mnist_root, "test", False)
    assert (len(train), len(test)) == (60_000, 10_000)
    x, y = test[0]
    assert x.shape == (1, 28, 28) and x.min() >= 0 and x.max() <= 1 and y == 7  # the first test digit is a 7
    batch_x, batch_y = next(iterate_batches(train, 256, True, torch.Generator().manual_seed(0)))
    assert batch_x.shape == (256, 1, 28, 28) and batch_y.shape == (256,)


def test_missing_data_is_a_one_line_error_naming_the_place(tmp_path):
    with pytest.raises(RsbenchError) as error:
        get_dataset("mnist").load(tmp_path, "train", True)
    assert str(tmp_path / "MNIST" / "raw") in error.value.message
    assert "RSBENCH_DATA" in error.value.hint
    with pytest.raises(RsbenchError, match="cifar-10-batches-py"):
        get_dataset("cifar10").load(tmp_path, "test", False)
    with pytest.raises(RsbenchError, match="imagenet"):
        get_dataset("imagenet").load(tmp_path, "test", False)


@pytest.fixture
def cifar_root(tmp_path):
    """CIFAR-10 batches made from the 20 real test images in ../shared (cifar10_II_L.png, L the label)."""
    files = sorted(need(SHARED_DATA / "cifar10-samples").glob("cifar10_*.png"))
    images = np.stack([np.asarray(Image.open(f).convert("RGB")) for f in files])
    labels = [int(f.stem.split("_")[-1]) for f in files]
    write_cifar_batches(tmp_path, images, labels)
    return tmp_path, images, labels


def test_cifar10_batches_load_with_paper_preprocessing(cifar_root):
    root, images, labels = cifar_root
    test = get_dataset("cifar10").load(root, "test", False)
    x, y = test[3]
    assert y == labels[3]
    assert torch.allclose(x, torch.from_numpy(images[3]).permute(2, 0, 1).float() / 255)
    train = get_dataset("cifar10").load(root, "train", True)
    assert len(train) == 20 and train.augment is not None


def test_random_crop_flip_translates_within_padding():
    x = torch.zeros(64, 3, 32, 32)
    x[:, :, 16, 16] = 1.0
    out = random_crop_flip(4)(x, torch.Generator().manual_seed(0))
    assert out.shape == x.shape
    for image in out:
        rows, cols = torch.nonzero(image[0], as_tuple=True)
        assert len(rows) == 1
        assert abs(int(rows[0]) - 16) <= 4 and (abs(int(cols[0]) - 16) <= 4 or abs(int(cols[0]) - 15) <= 4)
    assert len({tuple(torch.nonzero(i[0])[0].tolist()) for i in out}) > 5  # offsets vary per image


def test_imagenet_folder_layout_and_transforms(tmp_path):
    for split in ("train", "val"):
        for cls in ("n01440764", "n01443537"):
            folder = tmp_path / "imagenet" / split / cls
            folder.mkdir(parents=True)
            for i in range(2):
                Image.fromarray(np.random.randint(0, 255, (300, 400, 3), dtype=np.uint8)).save(folder / f"{i}.JPEG")
    spec = get_dataset("imagenet")
    test = spec.load(tmp_path, "test", False)
    train = spec.load(tmp_path, "train", True)
    assert test[0][0].shape == (3, 224, 224) and train[0][0].shape == (3, 224, 224)
    assert sorted({y for _, y in test}) == [0, 1]
    batch = next(iterate_batches(train, 4, True, torch.Generator().manual_seed(0), workers=0))
    assert batch[0].shape == (4, 3, 224, 224)


def test_download_uses_torchvision_into_the_data_root(tmp_path, monkeypatch):
    import torchvision.datasets

    calls = []

    class FakeMNIST:
        def __init__(self, root, train, download):
            calls.append((root, train, download))

    monkeypatch.setattr(torchvision.datasets, "MNIST", FakeMNIST)
    from typer.testing import CliRunner

    from rsbench.cli import app

    result = CliRunner().invoke(app, ["download", "mnist", "--data-dir", str(tmp_path)])
    assert result.exit_code == 0, result.output
    assert calls == [(str(tmp_path), True, True), (str(tmp_path), False, True)]


def test_download_failure_offline_is_one_line(tmp_path, monkeypatch):
    import torchvision.datasets

    class Offline:
        def __init__(self, *args, **kwargs):
            raise RuntimeError("Error downloading train-images-idx3-ubyte.gz: no network")

    monkeypatch.setattr(torchvision.datasets, "MNIST", Offline)
    from typer.testing import CliRunner

    from rsbench.cli import app

    result = CliRunner().invoke(app, ["download", "mnist", "--data-dir", str(tmp_path)])
    assert result.exit_code == 2 and "downloading mnist failed" in result.stderr
    assert "MNIST/raw" in result.stderr
    result = CliRunner().invoke(app, ["download", "imagenet", "--data-dir", str(tmp_path)])
    assert result.exit_code == 2 and "cannot be downloaded" in result.stderr


@pytest.mark.parametrize("in_memory", [True, False])
def test_batches_with_indices_name_the_examples_they_hold(in_memory):
    """The indices CAT-RS looks its soft labels up by: each batch's own examples, also in a resumed pass and in
    a rank's shard (a map-style dataset goes through a DataLoader)."""
    from torch.utils.data import TensorDataset

    from rsbench.data import InMemoryDataset

    images = torch.arange(37, dtype=torch.uint8).view(37, 1, 1, 1).expand(37, 1, 2, 2).contiguous()
    labels = torch.arange(37) % 10
    dataset = InMemoryDataset(images, labels) if in_memory else TensorDataset(images.float() / 255, labels)

    def check(batches):
        seen = []
        for x, y, index in batches:
            assert torch.equal((x[:, 0, 0, 0] * 255).round().long(), index) and torch.equal(y, labels[index])
            seen += index.tolist()
        return seen

    generator = torch.Generator().manual_seed(4)
    order = check(iterate_batches(dataset, 8, True, generator, with_indices=True))
    assert sorted(order) == list(range(37))
    generator = torch.Generator().manual_seed(4)
    state = generator.get_state()
    resumed = check(iterate_batches(dataset, 8, True, generator, resume_at=(2, state), with_indices=True))
    assert resumed == order[16:]
    shard = check(iterate_batches(dataset, 8, True, torch.Generator().manual_seed(4), shard=(1, 2), with_indices=True))
    assert set(shard) <= set(order) and len(shard) == 18
