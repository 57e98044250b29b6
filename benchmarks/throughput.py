"""Throughput of training and certification on LeNet / MNIST-shaped inputs, on this machine.

    python benchmarks/throughput.py [--device cpu] [--seconds 10]

Prints, per training method, images/s and noisy forward passes/s; and for certification, noise samples/s
of ``SmoothedClassifier.sample_counts`` beside a plain forward pass of LeNet on pre-made noisy batches
(the ceiling), with their ratio.
"""

from __future__ import annotations

import argparse
import time

import torch

from rsbench.methods import noisy_copies
from rsbench.nets import build_classifier
from rsbench.params import parse_params
from rsbench.plugins import get_dataset, get_method
from rsbench.smoothing import SmoothedClassifier

METHODS = {
    "gaussian": {},
    "consistency": {"lam": 5, "m": 2},
    "smoothadv": {"attack": "pgd", "eps": 1.0, "steps": 10, "m": 4, "warmup": 0},
    "smoothadv+consistency": {"attack": "pgd", "eps": 1.0, "steps": 10, "m": 4, "warmup": 0, "lam": 1},
    "macer": {"m": 16},
    "stability": {"lam": 2},
    "smoothmix": {"m": 4, "steps": 4, "alpha": 1.0, "eta": 1.0},  # MNIST σ=0.5 preset
    "catrs": {"m": 4, "eps": 1.0, "steps": 4, "lam": 1.0},  # MNIST preset; soft labels below stand in for a reference
}


def timed(step, seconds: float) -> tuple[int, float]:
    step()  # warm-up
    count, started = 0, time.perf_counter()
    while time.perf_counter() - started < seconds:
        step()
        count += 1
    return count, time.perf_counter() - started


def training(device: torch.device, seconds: float) -> None:
    mnist = get_dataset("mnist")
    x = torch.rand(256, 1, 28, 28, device=device)
    y = torch.randint(0, 10, (256,), device=device)
    print(f"{'method':<24}{'images/s':>12}{'noisy passes/s':>16}")
    for label, raw in METHODS.items():
        name = "smoothadv" if label.startswith("smoothadv") else label
        cls = get_method(name)
        method = cls(parse_params(cls.Params, raw, name), 0.5)
        method.start_epoch(0, mnist.schedule)
        model = build_classifier("lenet", mnist).to(device).train()
        optimizer = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9, nesterov=True)
        targets = y
        if method.needs_example_index:  # per-example data (CAT-RS's soft labels): one row per batch position
            method.soft_labels = torch.softmax(torch.randn(256, 10, device=device), dim=1)  # type: ignore[attr-defined]
            targets = torch.stack([y, torch.arange(256, device=device)], dim=1)

        def step(method=method, model=model, optimizer=optimizer, targets=targets):
            for cx, cy in method.split_batch(x, targets):
                loss = method.loss(model, cx, cy)
                optimizer.zero_grad()
                loss.backward()
                optimizer.step()

        batches, elapsed = timed(step, seconds)
        rate = batches * 256 / elapsed
        print(f"{label:<24}{rate:>12,.0f}{rate * method.noisy_passes_per_example:>16,.0f}")


@torch.no_grad()
def certification(device: torch.device, seconds: float, batch: int = 1000) -> None:
    model = build_classifier("lenet", get_dataset("mnist")).to(device).eval()
    smoothed = SmoothedClassifier(model, 10, 0.5)
    x = torch.rand(1, 28, 28, device=device)
    draws = 10_000
    calls, elapsed = timed(lambda: smoothed.sample_counts(x, draws, batch), seconds)
    certify_rate = calls * draws / elapsed
    noisy = noisy_copies(x.unsqueeze(0).expand(batch, 1, 28, 28), 0.5)
    calls, elapsed = timed(lambda: model(noisy).argmax(1), seconds)
    forward_rate = calls * batch / elapsed
    print(f"certification (sample_counts, batch {batch}): {certify_rate:,.0f} noise samples/s")
    print(f"plain LeNet forward on pre-made noisy batches: {forward_rate:,.0f} samples/s")
    print(f"ratio: {certify_rate / forward_rate:.2f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--seconds", type=float, default=10.0)
    args = parser.parse_args()
    device = torch.device(args.device)
    print(f"device {device}, torch {torch.__version__}, {torch.get_num_threads()} threads")
    training(device, args.seconds)
    certification(device, args.seconds)


if __name__ == "__main__":
    main()
