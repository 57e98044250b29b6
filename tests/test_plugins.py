import json
import os
import subprocess
import sys

import pytest
from typer.testing import CliRunner

from rsbench import hookimpl
from rsbench.cli import app
from rsbench.errors import RsbenchError
from rsbench.plugins import PluginManager, get_manager, get_method
from rsbench.specs import Architecture

runner = CliRunner()


def test_builtins_register_through_entry_points():
    manager = get_manager()
    assert {"gaussian", "mnist", "lenet", "cohen"} <= set(manager.info)
    assert all(info.builtin for info in manager.info.values() if info.module.startswith("rsbench_plugins"))
    registries = manager.registries
    assert "gaussian" in registries["method"].names()
    architectures = set(registries["architecture"].names())
    assert {"lenet", "cifar_resnet20", "cifar_resnet110", "resnet50", "timm/"} <= architectures
    assert {"mnist", "cifar10", "imagenet"} <= set(registries["dataset"].names())
    assert registries["certifier"].names() == ["cohen"]


def test_unknown_name_suggests_close_match():
    with pytest.raises(RsbenchError) as error:
        get_method("gausian")
    assert "gaussian" in error.value.hint


def test_duplicate_name_is_an_error():
    class Twin:
        @hookimpl
        def register_architectures(self, register):
            register(Architecture("lenet", "an impostor", lambda *a: None))

    manager = PluginManager()
    manager.register(Twin(), "twin")
    with pytest.raises(RsbenchError, match="registered twice"):
        _ = manager.registries


def test_plugins_json_lists_sources_and_hyperparameters():
    result = runner.invoke(app, ["plugins", "--json"])
    assert result.exit_code == 0, result.output
    listing = {entry["name"]: entry for entry in json.loads(result.stdout)}
    assert listing["gaussian"]["source"] == "built-in"
    assert listing["gaussian"]["registers"]["method"][0]["name"] == "gaussian"
    assert listing["mnist"]["registers"]["dataset"][0]["name"] == "mnist"


THIRD_PARTY = '''
import torch.nn.functional as F
from rsbench import hookimpl
from rsbench.methods import TrainingMethod, noisy_copies
from rsbench.params import hyperparameter
from dataclasses import dataclass

@dataclass(frozen=True)
class Params:
    smoothing: float = hyperparameter(0.1, "label smoothing", min=0.0, max=1.0)

class LabelSmoothedGaussian(TrainingMethod):
    name = "label_smooth"
    description = "Gaussian augmentation with label smoothing"
    Params = Params

    def loss(self, model, x, y):
        return F.cross_entropy(model(noisy_copies(x, self.sigma)), y, label_smoothing=self.params.smoothing)

@hookimpl
def register_training_methods(register):
    register(LabelSmoothedGaussian)
'''


@pytest.fixture
def third_party(tmp_path):
    """A tiny installed distribution 'rsbench-label-smooth' exposing one method through entry points."""
    site = tmp_path / "site"
    site.mkdir()
    (site / "label_smooth_plugin.py").write_text(THIRD_PARTY)
    dist = site / "rsbench_label_smooth-0.3.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: rsbench-label-smooth\nVersion: 0.3\n")
    (dist / "entry_points.txt").write_text("[rsbench]\nlabel_smooth = label_smooth_plugin\n")
    env = {**os.environ, "PYTHONPATH": str(site)}
    return env


def rsbench(args, env, cwd):
    return subprocess.run([sys.executable, "-m", "rsbench", *args], env=env, cwd=cwd, capture_output=True,
                          text=True, timeout=300)


def test_third_party_method_trains_from_cli_without_core_changes(third_party, toy_mnist_root, tmp_path):
    listing = rsbench(["plugins", "--json"], third_party, tmp_path)
    assert listing.returncode == 0, listing.stderr
    plugin = next(p for p in json.loads(listing.stdout) if p["name"] == "label_smooth")
    assert plugin["source"] == "rsbench-label-smooth"
    assert plugin["registers"]["method"][0]["params"][0]["name"] == "smoothing"

    env = {**third_party, "RSBENCH_DATA": str(toy_mnist_root), "RSBENCH_DB": str(tmp_path / "s.db")}
    trained = rsbench(["train", "--dataset", "mnist", "--method", "label_smooth", "--sigma", "0.25",
                       "--smoothing", "0.2", "--epochs", "1", "--out", str(tmp_path / "run"), "--no-progress"],
                      env, tmp_path)
    assert trained.returncode == 0, trained.stderr
    assert trained.stdout.strip().endswith("checkpoint.pth.tar")

    bad = rsbench(["train", "--dataset", "mnist", "--method", "label_smooth", "--sigma", "0.25",
                   "--smoothing", "2", "--epochs", "1", "--out", str(tmp_path / "bad")], env, tmp_path)
    assert bad.returncode == 2 and "smoothing must be <= 1.0" in bad.stderr

    builtin_only = rsbench(["plugins", "--json"], {**third_party, "RSBENCH_LOAD_PLUGINS": ""}, tmp_path)
    assert "label_smooth" not in {p["name"] for p in json.loads(builtin_only.stdout)}
