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
    assert registries["certifier"].names() == ["adaptive", "cohen"]


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


THIRD_PARTY = """
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
"""


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
    return subprocess.run(
        [sys.executable, "-m", "rsbench", *args], env=env, cwd=cwd, capture_output=True, text=True, timeout=300
    )


def test_third_party_method_trains_from_cli_without_core_changes(third_party, toy_mnist_root, tmp_path):
    listing = rsbench(["plugins", "--json"], third_party, tmp_path)
    assert listing.returncode == 0, listing.stderr
    plugin = next(p for p in json.loads(listing.stdout) if p["name"] == "label_smooth")
    assert plugin["source"] == "rsbench-label-smooth"
    assert plugin["registers"]["method"][0]["params"][0]["name"] == "smoothing"

    env = {**third_party, "RSBENCH_DATA": str(toy_mnist_root), "RSBENCH_DB": str(tmp_path / "s.db")}
    trained = rsbench(
        [
            "train",
            "--dataset",
            "mnist",
            "--method",
            "label_smooth",
            "--sigma",
            "0.25",
            "--smoothing",
            "0.2",
            "--epochs",
            "1",
            "--out",
            str(tmp_path / "run"),
            "--no-progress",
        ],
        env,
        tmp_path,
    )
    assert trained.returncode == 0, trained.stderr
    assert trained.stdout.strip().endswith("checkpoint.pth.tar")

    bad = rsbench(
        [
            "train",
            "--dataset",
            "mnist",
            "--method",
            "label_smooth",
            "--sigma",
            "0.25",
            "--smoothing",
            "2",
            "--epochs",
            "1",
            "--out",
            str(tmp_path / "bad"),
        ],
        env,
        tmp_path,
    )
    assert bad.returncode == 2 and "smoothing must be <= 1.0" in bad.stderr

    builtin_only = rsbench(["plugins", "--json"], {**third_party, "RSBENCH_LOAD_PLUGINS": ""}, tmp_path)
    assert "label_smooth" not in {p["name"] for p in json.loads(builtin_only.stdout)}


THIRD_PARTY_CERTIFIER = '''
import math
from dataclasses import dataclass

import torch
from scipy.stats import norm

from rsbench import Certificate, Certifier, SmoothedClassifierBase, hookimpl, hyperparameter


@dataclass(frozen=True)
class Params:
    chunk: int = hyperparameter(250, "noisy copies per forward pass", min=1)


class Hoeffding(SmoothedClassifierBase):
    """CERTIFY with a Hoeffding lower bound instead of Clopper-Pearson, written to rsbench's contract."""

    def __init__(self, base, num_classes, sigma, params):
        self.base, self.num_classes, self.sigma, self.chunk = base, num_classes, sigma, params.chunk

    def counts(self, x, num, generator):
        counts = torch.zeros(self.num_classes, dtype=torch.long)
        with torch.no_grad():
            for start in range(0, num, self.chunk):
                size = min(self.chunk, num - start)
                noise = torch.randn((size, *x.shape), generator=generator) * self.sigma
                counts += torch.bincount(self.base(x + noise).argmax(1), minlength=self.num_classes)
        return counts

    def certify_batch(self, xs, request, generators):
        certificates = []
        for x, generator in zip(xs, generators):
            top = int(self.counts(x, request.n0, generator).argmax())
            n_a = int(self.counts(x, request.n, generator)[top])
            p_a = n_a / request.n - math.sqrt(math.log(1 / request.alpha) / (2 * request.n))
            draws = request.n0 + request.n
            if p_a < 0.5:
                certificates.append(Certificate(-1, 0.0, draws, "exact", n_a, p_a))
            else:
                certificates.append(Certificate(top, self.sigma * float(norm.ppf(p_a)), draws, "exact", n_a, p_a))
        return certificates

    def predict(self, x, n, alpha, batch_size, generator=None):
        return int(self.counts(x, n, generator).argmax())


@hookimpl
def register_certifiers(register):
    register(Certifier("hoeffding", "CERTIFY with a Hoeffding bound", Hoeffding, Params))
'''


def test_third_party_certifier_written_to_the_contract_certifies_from_cli(tmp_path, toy_mnist_root):
    """A certifier that knows only the documented contract certifies, stores and resumes like Cohen's; its
    radii are recomputed here from the stored counts with Hoeffding's bound."""
    import math

    from scipy.stats import norm

    from rsbench.store import open_store

    site = tmp_path / "site"
    site.mkdir()
    (site / "hoeffding_plugin.py").write_text(THIRD_PARTY_CERTIFIER)
    dist = site / "rsbench_hoeffding-1.0.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: rsbench-hoeffding\nVersion: 1.0\n")
    (dist / "entry_points.txt").write_text("[rsbench]\nhoeffding = hoeffding_plugin\n")
    env = {
        **os.environ,
        "PYTHONPATH": str(site),
        "RSBENCH_DATA": str(toy_mnist_root),
        "RSBENCH_DB": str(tmp_path / "s.db"),
    }
    trained = rsbench(
        [
            "train",
            "--dataset",
            "mnist",
            "--sigma",
            "0.25",
            "--epochs",
            "2",
            "--lr",
            "0.05",
            "--batch",
            "32",
            "--out",
            str(tmp_path / "run"),
            "--no-progress",
        ],
        env,
        tmp_path,
    )
    assert trained.returncode == 0, trained.stderr
    args = [
        "certify",
        trained.stdout.strip(),
        "--certifier",
        "hoeffding",
        "--param",
        "chunk=100",
        "--n",
        "2000",
        "--skip",
        "20",
        "--no-progress",
    ]
    certified = rsbench(args, env, tmp_path)
    assert certified.returncode == 0, certified.stderr
    store = open_store(str(tmp_path / "s.db"))
    run = store.get_run(int(certified.stdout))
    assert (run.certifier, run.certifier_params) == ("hoeffding", {"chunk": 100})
    rows = store.results([run.id])
    assert len(rows) == 10 and (rows.draws == 2100).all() and (rows.radius_kind == "exact").all()
    slack = math.sqrt(math.log(1 / 0.001) / (2 * 2000))
    for row in rows.itertuples():
        p_a = row.n_a / 2000 - slack
        assert row.radius == (pytest.approx(0.25 * norm.ppf(p_a)) if p_a >= 0.5 else 0.0)
    assert (rows.correct == 1).mean() > 0.5
    again = rsbench(args, env, tmp_path)
    assert again.returncode == 2 and "already complete" in again.stderr
    bad = rsbench([*args[:-1], "--param", "chunk=0"], env, tmp_path)
    assert bad.returncode == 2 and "chunk must be >= 1" in bad.stderr


def test_registering_the_wrong_kind_names_the_plugin():
    class Confused:
        @hookimpl
        def register_certifiers(self, register):
            register(Architecture("not-a-certifier", "an architecture", lambda *a: None))

    manager = PluginManager()
    manager.register(Confused(), "confused")
    with pytest.raises(RsbenchError, match="plugin 'confused' registered .* which is not a Certifier"):
        _ = manager.registries


def test_a_plugin_whose_hook_raises_or_has_a_wrong_signature_is_named():
    class Raises:
        @hookimpl
        def register_datasets(self, register):
            raise ValueError("boom")

    manager = PluginManager()
    manager.register(Raises(), "raiser")
    with pytest.raises(RsbenchError, match="plugin 'raiser' failed in register_datasets: ValueError: boom"):
        _ = manager.registries

    class WrongSignature:
        @hookimpl
        def register_datasets(self, register, extra):
            pass

    with pytest.raises(RsbenchError, match="plugin 'wrong' from local has a hook that does not match"):
        PluginManager(load_entry_points=False).register(WrongSignature(), "wrong")
