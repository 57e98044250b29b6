import math

import pytest
import torch
import torch.nn.functional as F
from scipy.stats import norm
from torch import nn
from typer.testing import CliRunner

from rsbench.cli import app
from rsbench.losses import cross_entropy_of_copies, disagreement_penalty
from rsbench.methods import noisy_copies
from rsbench.plugins import get_dataset, get_method
from rsbench_plugins.consistency import Consistency, ConsistencyParams
from rsbench_plugins.macer import macer_loss
from rsbench_plugins.smoothadv import SmoothAdv, SmoothAdvParams, consistency_pgd, salman_ddn, salman_pgd, warmed_up_eps
from rsbench_plugins.stability import stability_loss

runner = CliRunner()

# two noisy copies of one input: p1 = (1/2, 1/2), p2 = (3/4, 1/4), p̂ = (5/8, 3/8); label 0
LOGITS = torch.tensor([[[0.0, 0.0]], [[math.log(3.0), 0.0]]])
Y = torch.tensor([0])
CE = (-math.log(0.5) - math.log(0.75)) / 2
KL = (
    0.625 * math.log(0.625 / 0.5)
    + 0.375 * math.log(0.375 / 0.5)
    + 0.625 * math.log(0.625 / 0.75)
    + 0.375 * math.log(0.375 / 0.25)
) / 2
H = -(0.625 * math.log(0.625) + 0.375 * math.log(0.375))
MSE = 0.25**2 + 0.25**2  # ‖p₂ − p₁‖²


@pytest.mark.parametrize(
    ("form", "expected"),
    [("default", CE + 10 * KL + 0.5 * H), ("kl", CE + 10 * KL), ("mse", CE + 10 * MSE), ("xent", CE + 10 * (KL + H))],
)
def test_consistency_loss_by_hand(form, expected):
    loss = cross_entropy_of_copies(LOGITS, Y) + disagreement_penalty(LOGITS, lam=10.0, eta=0.5, form=form)
    assert loss.item() == pytest.approx(expected, rel=1e-5)


def test_gradient_flows_through_the_mean_prediction():
    logits = LOGITS.clone().requires_grad_(True)
    disagreement_penalty(logits, 1.0, 0.0, "kl").backward()
    with_mean = logits.grad.clone()
    # the same KL with p̂ treated as a constant gives another gradient
    logits.grad = None
    log_probs = F.log_softmax(logits, -1)
    mean = log_probs.exp().mean(0).detach()
    (mean * (mean.log() - log_probs)).sum(-1).mean(0).mean().backward()
    assert not torch.allclose(with_mean, logits.grad)
    assert with_mean.abs().sum() > 0


def test_zero_weights_reduce_consistency_to_gaussian_on_m_copies():
    model = nn.Sequential(nn.Flatten(), nn.Linear(16, 3))
    x, y = torch.rand(6, 1, 4, 4), torch.tensor([0, 1, 2, 0, 1, 2])
    method = Consistency(ConsistencyParams(lam=0.0, eta=0.0, m=3), sigma=0.5)
    torch.manual_seed(7)
    ours = method.loss(model, x, y)
    torch.manual_seed(7)
    gaussian = F.cross_entropy(model(noisy_copies(x, 0.5, 3)), y.repeat(3))
    assert ours.item() == pytest.approx(gaussian.item(), rel=1e-6)
    chunks = list(method.split_batch(torch.rand(256, 1, 4, 4), torch.zeros(256)))
    assert [len(c[0]) for c in chunks] == [85, 85, 85] and method.noisy_passes_per_example == 3  # 1 dropped
    assert list(method.split_batch(torch.rand(2, 1, 4, 4), torch.zeros(2))) == []


def test_stability_loss_by_hand():
    clean = torch.tensor([[0.0, 0.0]])
    noisy = torch.tensor([[math.log(3.0), 0.0]])
    expected = -math.log(0.5) + 2 * -(0.5 * math.log(0.75) + 0.5 * math.log(0.25))
    assert stability_loss(clean, noisy, torch.tensor([0]), 2.0).item() == pytest.approx(expected, rel=1e-6)


def test_macer_filters_misclassified_inputs_and_infinite_gaps():
    logits = torch.tensor(
        [
            [
                [2.0, 1.0, 0.0],  # correct, finite gap: kept
                [0.0, 3.0, 0.0],  # top class 1 but label 0: misclassified, dropped
                [200.0, 0.0, 0.0],
            ]
        ]
    )  # p̃₁ = 1 so Φ⁻¹ = inf: dropped
    y = torch.tensor([0, 0, 0])
    sigma, gamma, beta = 0.5, 8.0, 1.0
    total, classification, robustness = macer_loss(logits, y, sigma, lam=16.0, gamma=gamma, beta=beta)
    probs = torch.softmax(logits[0], -1)
    expected_classification = -sum(math.log(probs[i, 0].item() + 1e-10) for i in range(3)) / 3
    gap = norm.ppf(probs[0, 0].item()) - norm.ppf(probs[0, 1].item())
    expected_robustness = sigma / 2 * max(0.0, gamma - gap) / 3
    assert classification.item() == pytest.approx(expected_classification, rel=1e-5)
    assert robustness.item() == pytest.approx(expected_robustness, rel=1e-4)
    assert total.item() == pytest.approx(expected_classification + 16 * expected_robustness, rel=1e-4)


def test_macer_deferred_starts_robustness_at_first_lr_drop():
    macer = get_method("macer")
    method = macer(macer.Params(deferred=True), sigma=0.25)
    schedule = get_dataset("mnist").schedule
    method.start_epoch(30, schedule)  # the official `epoch <= lr_step_size`: 31 deferred epochs
    assert method.lam == 0.0
    method.start_epoch(31, schedule)
    assert method.lam == 16.0


def test_eps_warmup_is_linear_over_the_warmup_epochs():
    assert [warmed_up_eps(1.0, 10, e) for e in (0, 4, 9, 10, 50)] == pytest.approx([0.1, 0.5, 1.0, 1.0, 1.0])
    assert warmed_up_eps(0.5, 0, 0) == 0.5
    method = SmoothAdv(SmoothAdvParams(eps=2.0, warmup=4), sigma=0.5)
    method.start_epoch(1, get_dataset("mnist").schedule)
    assert method.eps == pytest.approx(1.0)


class LinearNet(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(16, 3)

    def forward(self, x):
        return self.fc(x.flatten(1))


def test_pgd_stays_in_the_ball_and_never_lowers_the_loss():
    torch.manual_seed(0)
    model = LinearNet().eval()
    x = torch.rand(8, 1, 4, 4) * 0.5 + 0.25
    y = torch.randint(0, 3, (8,))
    noise = 0.1 * torch.randn(8, 1, 4, 4)  # m = 1: the smoothed NLL is convex in x for a linear model
    before = F.cross_entropy(model(x + noise), y, reduction="none")
    for attack in (salman_pgd, consistency_pgd):
        adversarial = attack(model, x, y, noise, 0.5, 10)
        norms = (adversarial - x).flatten(1).norm(dim=1)
        assert (norms <= 0.5 + 1e-5).all() and (adversarial >= 0).all() and (adversarial <= 1).all()
        with torch.no_grad():
            assert (F.cross_entropy(model(adversarial + noise), y, reduction="none") > before).all()


def test_attacks_on_lenet_raise_the_smoothed_loss_within_eps():
    torch.manual_seed(1)
    from rsbench_plugins.lenet import LeNet

    model = LeNet().eval()
    x, y = torch.rand(4, 1, 28, 28), torch.randint(0, 10, (4,))
    noise = 0.25 * torch.randn(4 * 4, 1, 28, 28)
    for attack, slack in ((salman_pgd, 1e-5), (consistency_pgd, 1e-5), (salman_ddn, 28 * 0.5 / 255)):
        adversarial = attack(model, x, y, noise, 1.0, 5)
        assert ((adversarial - x).flatten(1).norm(dim=1) <= 1.0 + slack).all()


def test_presets_cover_the_paper_rows():
    consistency = {p.name: p for p in get_method("consistency").presets}
    assert consistency["mnist-consistency-0.25"].params["lam"] == 10.0
    assert consistency["mnist-consistency-0.50"].params["lam"] == 5.0
    assert consistency["cifar10-consistency-0.25"].params["lam"] == 20.0
    smoothadv = {p.name: p for p in get_method("smoothadv").presets}
    assert smoothadv["mnist-smoothadv-1.00"].params == {
        "attack": "pgd",
        "eps": 255 / 256,
        "steps": 10,
        "m": 4,
        "warmup": 10,
    }
    assert smoothadv["cifar10-smoothadv-0.25"].params["eps"] == pytest.approx(255 / 256)
    macer = {p.name: p for p in get_method("macer").presets}
    assert macer["mnist-macer-1.00"].params["lam"] == 6.0


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--method", "consistency", "--m", "1"], "m must be >= 2"),
        (["--method", "consistency", "--lam", "-1"], "lam must be >= 0.0"),
        (["--method", "consistency", "--loss", "huber"], "loss must be one of default, kl, mse, xent"),
        (["--method", "smoothadv", "--eps", "-0.5"], "eps must be >= 0.0"),
        (["--method", "smoothadv", "--attack", "fgsm"], "attack must be one of pgd, ddn"),
        (["--method", "smoothadv", "--lam", "1", "--m", "1"], "needs m >= 2"),
        (["--method", "macer", "--eta", "1"], "method 'macer' has no hyperparameter 'eta'"),
        (["--method", "stability", "--m", "abc"], "method 'stability' has no hyperparameter 'm'"),
        (["--method", "consistency", "--m", "two"], "'m' must be int"),
    ],
)
def test_bad_hyperparameters_are_one_line_errors(toy_mnist_root, tmp_path, args, message):
    result = runner.invoke(
        app,
        [
            "train",
            "--dataset",
            "mnist",
            "--sigma",
            "0.5",
            "--epochs",
            "1",
            *args,
            "--data-dir",
            str(toy_mnist_root),
            "--out",
            str(tmp_path / "o"),
        ],
    )
    assert result.exit_code == 2, result.output
    assert message in result.stderr and len(result.stderr.strip().splitlines()) == 1
    assert not (tmp_path / "o").exists()


@pytest.mark.parametrize(
    ("method", "flags"),
    [
        ("gaussian", []),
        ("consistency", ["--lam", "5", "--m", "2", "--loss", "mse"]),
        ("smoothadv", ["--eps", "1.0", "--steps", "2", "--m", "2", "--warmup", "1"]),
        ("smoothadv", ["--attack", "ddn", "--eps", "1.0", "--steps", "2", "--m", "2", "--lam", "1"]),
        ("macer", ["--m", "4", "--deferred"]),
        ("stability", ["--lam", "2"]),
    ],
)
def test_every_method_trains_lenet_on_real_mnist_and_certifies(mnist_root, tmp_path, method, flags):
    out = tmp_path / method
    db = str(tmp_path / "s.db")
    trained = runner.invoke(
        app,
        [
            "train",
            "--dataset",
            "mnist",
            "--arch",
            "lenet",
            "--method",
            method,
            "--sigma",
            "0.5",
            "--epochs",
            "1",
            "--train-limit",
            "512",
            "--test-limit",
            "200",
            *flags,
            "--data-dir",
            str(mnist_root),
            "--out",
            str(out),
            "--db",
            db,
            "--no-progress",
        ],
    )
    assert trained.exit_code == 0, trained.output
    certified = runner.invoke(
        app,
        [
            "certify",
            trained.stdout.strip(),
            "--limit",
            "3",
            "--n",
            "200",
            "--n0",
            "10",
            "--data-dir",
            str(mnist_root),
            "--db",
            db,
            "--no-progress",
        ],
    )
    assert certified.exit_code == 0, certified.output
    meta = torch.load(out / "checkpoint.pth.tar", weights_only=True)["rsbench"]
    assert meta["method"] == method and set(meta["params"]) == set(
        f.name for f in __import__("dataclasses").fields(get_method(method).Params)
    )


@pytest.mark.parametrize(("dataset", "step_size"), [("mnist", 30), ("cifar10", 50), ("imagenet", 30)])
def test_dataset_schedules_follow_the_official_step_lr(dataset, step_size):
    """The official loop trains epoch e at the current lr, then calls ``StepLR(step_size).step(e)``, which
    sets lr = base·γ^(e // step_size) for epoch e + 1: the drops land one epoch after the text's."""
    from rsbench.training import learning_rate

    schedule = get_dataset(dataset).schedule
    official, lr = [], schedule.lr
    for epoch in range(schedule.epochs):
        official.append(lr)
        lr = schedule.lr * 0.1 ** (epoch // step_size)
    ours = [learning_rate(schedule, epoch) for epoch in range(schedule.epochs)]
    assert ours == pytest.approx(official, rel=1e-12)
    assert not schedule.nesterov and schedule.momentum == 0.9 and schedule.weight_decay == 1e-4
