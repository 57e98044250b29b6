"""The contracts' edges: the public API resolves, checkpoints load for Python users, PREDICT is batched like
CERTIFY, certifier hyperparameters are flags, and a run names every plugin that built it."""

import gzip
import json

import torch
from typer.testing import CliRunner

import rsbench
from rsbench.cli import app
from rsbench.smoothing import SmoothedClassifier
from rsbench.specs import CertificationRequest, SmoothedClassifierBase

runner = CliRunner()


def test_every_public_name_resolves_and_is_listed():
    assert set(rsbench.__all__) == {"hookimpl", "__version__", *rsbench._EXPORTS}
    for name in rsbench.__all__:
        assert getattr(rsbench, name) is not None


def test_load_classifier_gives_the_checkpoints_weights_in_eval_mode(toy_checkpoint):
    model, meta = rsbench.load_classifier(toy_checkpoint)
    saved = torch.load(toy_checkpoint, weights_only=True)["state_dict"]
    assert not model.training and meta["sigma"] == 0.25 and meta["dataset"] == "mnist"
    for key, tensor in model.state_dict().items():
        assert torch.equal(tensor, saved[key])
    g = rsbench.SmoothedClassifier(model, 10, meta["sigma"])
    prediction, radius = g.certify(torch.rand(1, 28, 28), n0=10, n=100, alpha=0.001, batch_size=50)
    assert prediction in range(-1, 10) and radius >= 0


class Threshold(torch.nn.Module):
    """Class 1 where the mean pixel exceeds ``cut``, else class 0: P(class 1) is known in closed form."""

    def __init__(self, cut: float):
        super().__init__()
        self.cut = cut

    def forward(self, x):
        above = (x.flatten(1).mean(1) > self.cut).long()
        return torch.nn.functional.one_hot(above, 2).float()


def test_predict_batch_gives_each_input_the_prediction_predict_gives_it_alone():
    g = SmoothedClassifier(Threshold(0.5), 2, 0.5)
    xs = torch.stack([torch.full((1, 4, 4), v) for v in (0.1, 0.5, 0.52, 0.9)])

    def generators():
        return [torch.Generator().manual_seed(7 + i) for i in range(len(xs))]

    together = g.predict_batch(xs, CertificationRequest(1, 400, 0.01, 4 * 100), generators())
    alone = [g.predict(x, 400, 0.01, 100, gen) for x, gen in zip(xs, generators(), strict=True)]
    assert together == alone
    assert together[0] == 0 and together[3] == 1  # far from the cut: decided; near it: may abstain (-1)


def test_a_certifier_must_return_a_smoothed_classifier_base():
    assert issubclass(SmoothedClassifier, SmoothedClassifierBase)
    assert SmoothedClassifier(Threshold(0.5), 2, 0.5).check_request(CertificationRequest(1, 10, 0.1, 10)) is None


def test_certifier_hyperparameters_are_flags_and_runs_name_their_plugins(toy_checkpoint, toy_mnist_root, tmp_path):
    db = str(tmp_path / "s.db")
    help_text = runner.invoke(app, ["certify", "--certifier", "adaptive", "--help"]).output
    assert "--stages" in help_text and "--futility" in help_text
    args = ["certify", str(toy_checkpoint), "--certifier", "adaptive", "--stages", "2", "--futility=0.01"]
    args += ["--n0", "10", "--n", "400", "--radii", "0,0.25", "--limit", "2", "--skip", "50"]
    result = runner.invoke(app, [*args, "--data-dir", str(toy_mnist_root), "--db", db, "--no-progress"])
    assert result.exit_code == 0, result.output
    bad = runner.invoke(app, ["certify", str(toy_checkpoint), "--certifier", "cohen", "--stages", "2", "--db", db])
    assert bad.exit_code == 2 and "stages" in bad.stderr
    record = tmp_path / "run.json.gz"
    assert runner.invoke(app, ["export", "1", "-o", str(record), "--db", db]).exit_code == 0
    document = json.loads(gzip.decompress(record.read_bytes()))
    assert document["protocol"]["certifier_params"]["stages"] == 2
    assert document["protocol"]["certifier_params"]["futility"] == 0.01
    plugins = document["provenance"]["plugins"]
    assert {kind: p["name"] for kind, p in plugins.items()} == {
        "dataset": "mnist", "certifier": "adaptive", "architecture": "lenet", "method": "gaussian"
    }  # fmt: skip
    assert all(p["distribution"] == "rsbench" and p["version"] == rsbench.__version__ for p in plugins.values())
    trained_with = document["training"] and document["training"]["provenance"]["plugins"]
    assert trained_with is None or trained_with["method"]["name"] == "gaussian"


def test_predict_exports_cohens_predict_format(toy_checkpoint, toy_mnist_root, tmp_path):
    db = str(tmp_path / "s.db")
    args = ["predict", str(toy_checkpoint), "--n", "50", "--limit", "3", "--skip", "20", "--images-per-batch", "3"]
    result = runner.invoke(app, [*args, "--data-dir", str(toy_mnist_root), "--db", db, "--no-progress"])
    assert result.exit_code == 0, result.output
    log = tmp_path / "predict.tsv"
    assert runner.invoke(app, ["export", "1", "-o", str(log), "--db", db]).exit_code == 0
    header, *lines = log.read_text().splitlines()
    assert header == "idx\tlabel\tpredict\tcorrect\ttime" and [line.split("\t")[0] for line in lines] == [
        "0", "20", "40"
    ]  # fmt: skip


def test_a_budget_label_is_a_short_safe_name(tmp_path):
    result = runner.invoke(app, ["certify", "missing.pth", "--budget", "quick; rm -rf", "--db", str(tmp_path / "s.db")])
    assert result.exit_code == 2 and "budget 'quick; rm -rf' is not a name" in result.stderr
    assert not (tmp_path / "s.db").exists()
