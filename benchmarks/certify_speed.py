"""Noise samples per second of certification, measured side by side in one run on one model and one input.

    python benchmarks/certify_speed.py                        # LeNet / MNIST on the CPU
    python benchmarks/certify_speed.py --checkpoint runs/.../checkpoint.pth.tar --compile
    python benchmarks/certify_speed.py --device cuda --arch cifar_resnet110 --arch resnet50

Rows (samples/s, and each row's ratio to the reference loop):

- ``reference loop``: written the way Cohen et al.'s ``core.Smooth`` works: per batch of ``--batch``
  draws, ``randn_like`` noise, a forward pass, argmax, predictions moved to the host and counted by numpy;
- ``rsbench certify()``: ``SmoothedClassifier.certify`` with its defaults (N0 + N draws);
- ``rsbench certify() forward_batch=F``: the same with F noisy copies per forward pass (sweep);
- ``rsbench certify() compile``: with ``torch.compile`` (``--compile``; opt-in, compiles first);
- ``rsbench certify (CLI)``: ``rsbench certify`` end to end on real MNIST test images, from the per-example
  seconds it stores (LeNet only, needs ``$RSBENCH_DATA``);
- ``forward bound``: LeNet's forward pass and argmax alone on pre-made noisy batches (no noise, no counts):
  no certifier can sample faster.

Methods alternate over ``--rounds`` rounds and each row reports its median round, so a busy shared
machine slows every row alike. Nothing here asserts a timing.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from rsbench.nets import build_classifier
from rsbench.plugins import get_dataset
from rsbench.smoothing import SmoothedClassifier, suited_forward_batch

SHAPES = {"lenet": "mnist", "cifar_resnet110": "cifar10", "resnet50": "imagenet"}


@torch.no_grad()
def reference_counts(model, x, num: int, batch_size: int, sigma: float, num_classes: int) -> np.ndarray:
    """Cohen et al.'s ``Smooth._sample_noise``: repeat, randn_like, forward, argmax, count on the host."""
    counts = np.zeros(num_classes, dtype=int)
    remaining = num
    while remaining > 0:
        this_batch = min(batch_size, remaining)
        remaining -= this_batch
        batch = x.repeat((this_batch, 1, 1, 1))
        noise = torch.randn_like(batch, device=x.device) * sigma
        predictions = model(batch + noise).argmax(1)
        counts += np.bincount(predictions.cpu().numpy(), minlength=num_classes)
    return counts


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def rate(step, draws: int, device: torch.device) -> float:
    synchronize(device)
    started = time.perf_counter()
    step()
    synchronize(device)
    return draws / (time.perf_counter() - started)


def model_rows(model, x, args, device) -> dict[str, tuple]:
    """name -> (a zero-argument step, draws it spends) for every in-process row."""
    n0, n, sigma, classes = 100, args.draws, 0.5, args.num_classes
    rows = {"reference loop": (lambda: reference_counts(model, x, n0 + n, args.batch, sigma, classes), n0 + n)}
    default = SmoothedClassifier(model, classes, sigma)
    rows["rsbench certify()"] = (lambda: default.certify(x, n0, n, 0.001, args.batch), n0 + n)
    for size in args.forward_batches:
        g = SmoothedClassifier(model, classes, sigma, forward_batch=size)
        rows[f"rsbench certify() forward_batch={size}"] = (lambda g=g: g.certify(x, n0, n, 0.001, args.batch), n0 + n)
    if args.compile:
        compiled = SmoothedClassifier(model, classes, sigma, compile=True)
        compiled.certify(x, n0, n, 0.001, args.batch)  # compile outside the timing
        rows["rsbench certify() compile"] = (lambda: compiled.certify(x, n0, n, 0.001, args.batch), n0 + n)
    bound = suited_forward_batch(device) or args.batch
    noisy = (x + 0.5 * torch.randn(bound, *x.shape, device=device)).contiguous()

    @torch.inference_mode()
    def forward_only():
        for _ in range(n // bound):
            model(noisy).argmax(1)

    rows[f"forward bound (batch {bound})"] = (forward_only, n // bound * bound)
    return rows


def cli_rate(checkpoint: Path, args) -> float:
    """Draws per stored second of ``rsbench certify`` (the engine, the store, the default certifier)."""
    from rsbench.certification import certify
    from rsbench.config import CertifyConfig
    from rsbench.store import Store

    with tempfile.TemporaryDirectory() as tmp:
        store = Store(f"sqlite:///{tmp}/bench.db")
        config = CertifyConfig(
            checkpoint=str(checkpoint),
            n=args.draws,
            batch=args.batch,
            limit=args.cli_images,
            skip=50,
            dataset="mnist",
            sigma=0.5,
            device=str(args.device),
        )
        run = certify(config, store, show_progress=False)
        rows = store.results([run])
        return float(rows["draws"].sum() / rows["seconds"].sum())


def benchmark(arch: str, args, device: torch.device) -> None:
    dataset = get_dataset(SHAPES[arch])
    args.num_classes = dataset.num_classes
    model = build_classifier(arch, dataset).to(device).eval()
    checkpoint = args.checkpoint if arch == "lenet" else None
    if checkpoint is not None:
        model.load_state_dict(torch.load(checkpoint, map_location=device, weights_only=True)["state_dict"])
    x = torch.rand(dataset.input_shape, generator=torch.Generator().manual_seed(0)).to(device)
    rows = model_rows(model, x, args, device)
    for _ in range(args.warmup):
        for step, _draws in rows.values():
            step()
    samples = {name: [] for name in rows}
    for _ in range(args.rounds):  # interleaved: a busy machine slows every row alike
        for name, (step, draws) in rows.items():
            samples[name].append(rate(step, draws, device))
    result = {name: statistics.median(values) for name, values in samples.items()}
    if arch == "lenet" and args.checkpoint is not None:
        result["rsbench certify (CLI, stored seconds)"] = cli_rate(args.checkpoint, args)
    report(arch, device, args, result)


def report(arch: str, device: torch.device, args, result: dict[str, float]) -> None:
    reference = result["reference loop"]
    print(
        f"\n{arch} on {device} ({torch.get_num_threads()} threads, torch {torch.__version__}), --batch "
        f"{args.batch}, N0+N = {100 + args.draws:,}, median of {args.rounds} interleaved rounds"
    )
    print(f"| {'path':<44} | {'samples/s':>12} | {'× reference':>11} |")
    print(f"|{'-' * 46}|{'-' * 14}:|{'-' * 12}:|")
    for name, value in result.items():
        print(f"| {name:<44} | {value:>12,.0f} | {value / reference:>11.2f} |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--arch", action="append", choices=sorted(SHAPES), help="default: lenet (+ the GPU shapes)")
    parser.add_argument("--checkpoint", type=Path, help="a LeNet/MNIST checkpoint (also enables the CLI row)")
    parser.add_argument("--batch", type=int, default=1000, help="--batch of both loops (Cohen's default 1000)")
    parser.add_argument("--draws", type=int, default=20_000, help="N per certify() call")
    parser.add_argument("--forward-batches", type=int, nargs="*", default=[64, 256, 1000])
    parser.add_argument("--compile", action="store_true", help="also time torch.compile (opt-in path)")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--warmup", type=int, default=1)
    parser.add_argument("--cli-images", type=int, default=4)
    args = parser.parse_args()
    device = torch.device(args.device)
    archs = args.arch or (["lenet", "cifar_resnet110", "resnet50"] if device.type == "cuda" else ["lenet"])
    for arch in archs:
        benchmark(arch, args, device)


if __name__ == "__main__":
    main()
