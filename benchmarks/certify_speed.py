"""Noise draws per second of certification against Cohen et al.'s own ``Smooth``, on a quiet and a busy machine.

    python benchmarks/certify_speed.py --cohen-core smoothing/code/core.py --checkpoint CKPT   # LeNet, CPU
    python benchmarks/certify_speed.py --cohen-core smoothing/code/core.py --device cuda       # + ResNet shapes

``--cohen-core`` is ``code/core.py`` of https://github.com/locuslab/smoothing (not vendored here). It is
loaded with two patches made at load time, in memory, and checked: its noise is drawn on the input's
device (``torch.randn_like(batch, device='cuda')`` becomes ``device=batch.device``, so it runs on a CPU
too), and on SciPy ≥ 1.12, which dropped ``scipy.stats.binom_test``, that name (used by ``predict`` only)
is supplied from ``binomtest``. Without it the reference is a loop written the way ``Smooth`` samples
(repeat, ``randn_like``, forward, argmax, counts on the host).

Rows (draws/s, each with its ratio to the reference measured in the same round):

- ``Cohen Smooth.certify``: the reference, N0 + N draws with ``--batch`` (Cohen's default 1000);
- ``rsbench certify()``: ``SmoothedClassifier.certify`` with its defaults, one instance for the whole run
  (on a CPU it chooses threads and pass size by timing its passes, so it must follow the load changes);
- ``rsbench certify() forward_batch=F`` / ``compile``: opt-in paths (``--forward-batches``, ``--compile``);
- ``forward bound, T threads``: the model's forward pass and argmax alone on pre-made noisy batches of 128
  (no noise, no counting; every thread count the tuner tries): what no certifier of this model beats;
- ``rsbench certify (CLI)``: ``rsbench certify`` run as a subprocess on ``--cli-images`` real MNIST test
  images (LeNet with ``--checkpoint``; data from ``$RSBENCH_DATA``), draws per second of the per-example
  seconds it stores, against ``Smooth.certify`` on the same images in the same round (``Cohen on the CLI's
  images``); the process's start is outside those seconds and is printed apart.

``--contention both`` (the default) measures every round twice, once with the machine as it is and once
with a busy-loop process on every other CPU this process may use (started before and stopped after that
half of the round), so quiet and busy figures come from one run. Rows alternate within each round, the two
halves alternate their order from round to round, and each figure is the median over ``--rounds`` rounds
(ratios: the median of the per-round ratios). The load average is printed beside each half. Nothing here
asserts a timing.
"""

from __future__ import annotations

import argparse
import contextlib
import math
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
import types
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import torch

from rsbench.nets import build_classifier
from rsbench.plugins import get_dataset
from rsbench.smoothing import CPU_FORWARD_BATCH, SmoothedClassifier
from rsbench.tuning import available_cpus, thread_choices

SHAPES = {"lenet": "mnist", "cifar_resnet110": "cifar10", "resnet50": "imagenet"}
BATCH = {"lenet": 1000, "cifar_resnet110": 1000, "resnet50": 400}  # Cohen's --batch for each dataset
BIG = ("cifar_resnet110", "resnet50")  # GPU shapes: never run on a CPU unless asked by name
N0, ALPHA = 100, 0.001

Step = Callable[[], object]  # a step returning a float gives its own rate (the CLI: draws per stored second)


def load_cohen_smooth(path: Path) -> type:
    """``Smooth`` from Cohen et al.'s ``core.py``, patched in memory (see the module docstring)."""
    source = path.read_text()
    cuda = "torch.randn_like(batch, device='cuda')"
    if source.count(cuda) != 1:
        raise SystemExit(f"{path}: expected one `{cuda}` (Cohen et al.'s core.py); is this the right file?")
    source = source.replace(cuda, "torch.randn_like(batch, device=batch.device)")
    namespace: dict = {"__name__": "cohen_core", "__file__": str(path)}
    import scipy.stats

    if not hasattr(scipy.stats, "binom_test"):  # removed in SciPy 1.12; Smooth.predict calls it
        source = source.replace("from scipy.stats import norm, binom_test", "from scipy.stats import norm")
        namespace["binom_test"] = lambda k, n, p=0.5: scipy.stats.binomtest(int(k), int(n), p).pvalue
    module = types.ModuleType("cohen_core")
    module.__dict__.update(namespace)
    exec(compile(source, str(path), "exec"), module.__dict__)  # noqa: S102  # the user's own copy of core.py
    return module.Smooth


@torch.no_grad()
def reference_counts(model, x, num: int, batch_size: int, sigma: float, num_classes: int) -> np.ndarray:
    """A loop written like Cohen et al.'s ``Smooth._sample_noise`` (used without ``--cohen-core``)."""
    counts = np.zeros(num_classes, dtype=int)
    remaining = num
    while remaining > 0:
        this_batch = min(batch_size, remaining)
        remaining -= this_batch
        batch = x.repeat((this_batch, 1, 1, 1))
        noise = torch.randn_like(batch, device=x.device) * sigma
        counts += np.bincount(model(batch + noise).argmax(1).cpu().numpy(), minlength=num_classes)
    return counts


def reference_certify(args, model, num_classes: int, sigma: float) -> Callable[[torch.Tensor], None]:
    """One CERTIFY by the reference: Cohen's ``Smooth.certify``, or the loop written like it."""
    if args.cohen_core is not None:
        smooth = args.smooth_class(model, num_classes, sigma)
        return lambda x: smooth.certify(x, N0, args.draws, ALPHA, args.batch_size)
    return lambda x: reference_counts(model, x, N0 + args.draws, args.batch_size, sigma, num_classes)


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def rate(step: Step, draws: int, device: torch.device) -> float:
    """Draws per second of one call of ``step`` (or the rate it returns)."""
    synchronize(device)
    started = time.perf_counter()
    result = step()
    synchronize(device)
    return result if isinstance(result, float) else draws / (time.perf_counter() - started)


class Contention:
    """Busy-loop processes, one per other CPU this process may use, while ``busy()`` is active."""

    def __init__(self) -> None:
        self.count = max(1, available_cpus() - 1)

    @contextlib.contextmanager
    def busy(self) -> Iterator[None]:
        loops = [subprocess.Popen([sys.executable, "-c", "while True: pass"]) for _ in range(self.count)]
        try:
            time.sleep(0.2)  # let the scheduler place them
            yield
        finally:
            for loop in loops:
                loop.kill()
            for loop in loops:
                loop.wait()


def in_process_rows(model, x, args, device) -> tuple[dict[str, tuple[Step, int]], SmoothedClassifier]:
    """name -> (a zero-argument step, draws it spends) for every in-process row, and the default instance."""
    classes, sigma, n = args.num_classes, 0.5, args.draws
    reference = reference_certify(args, model, classes, sigma)
    rows: dict[str, tuple[Step, int]] = {args.reference: (lambda: reference(x), N0 + n)}
    default = SmoothedClassifier(model, classes, sigma)
    rows["rsbench certify()"] = (lambda: default.certify(x, N0, n, ALPHA, args.batch_size), N0 + n)
    for size in args.forward_batches:
        g = SmoothedClassifier(model, classes, sigma, forward_batch=size)
        rows[f"rsbench certify() forward_batch={size}"] = (
            lambda g=g: g.certify(x, N0, n, ALPHA, args.batch_size),
            N0 + n,
        )
    if args.compile:
        compiled = SmoothedClassifier(model, classes, sigma, compile=True)
        compiled.certify(x, N0, n, ALPHA, args.batch_size)  # compile outside the timing
        rows["rsbench certify() compile"] = (lambda: compiled.certify(x, N0, n, ALPHA, args.batch_size), N0 + n)
    pass_rows = CPU_FORWARD_BATCH if device.type == "cpu" else args.batch_size
    noisy = (x + sigma * torch.randn(pass_rows, *x.shape, device=device)).contiguous()
    passes = max(1, n // 4 // pass_rows)  # a quarter of N: a rate, measured on fewer draws
    thread_counts = thread_choices(min(torch.get_num_threads(), available_cpus())) if device.type == "cpu" else (0,)
    for threads in thread_counts:

        @torch.inference_mode()
        def forward_only(threads: int = threads) -> None:
            previous = torch.get_num_threads()
            if threads:
                torch.set_num_threads(threads)
            try:
                for _ in range(passes):
                    model(noisy).argmax(1)
            finally:
                torch.set_num_threads(previous)

        name = f"forward bound, {threads} thread{'s' * (threads > 1)}" if threads else "forward bound"
        rows[f"{name} (passes of {pass_rows})"] = (forward_only, passes * pass_rows)
    return rows, default


def cli_step(args, sigma: float) -> Callable[[], tuple[float, float]]:
    """``rsbench certify`` in a subprocess on the CLI images: (draws per stored second, process seconds)."""
    from rsbench.store import Store

    def run() -> tuple[float, float]:
        with tempfile.TemporaryDirectory() as tmp:
            db = f"sqlite:///{tmp}/bench.db"
            command = [
                sys.executable, "-m", "rsbench", "certify", str(args.checkpoint), "--n0", str(N0), "--n",
                str(args.draws), "--batch", str(args.batch_size), "--indices", ",".join(map(str, args.cli_indices)),
                "--sigma", str(sigma), "--device", str(args.device), "--db", db, "--no-progress",
            ]  # fmt: skip
            started = time.perf_counter()
            subprocess.run(command, check=True, capture_output=True, env=os.environ)
            wall = time.perf_counter() - started
            store = Store(db)
            frame = store.results(store.runs()["id"].tolist())
            store.engine.dispose()
            return float(frame["draws"].sum() / frame["seconds"].sum()), wall

    return run


def cli_rows(args, model, device) -> dict[str, tuple[Step, int]] | None:
    """The CLI row and the reference on the CLI's images (LeNet, a checkpoint and $RSBENCH_DATA)."""
    if args.checkpoint is None:
        return None
    from rsbench.data import data_root

    dataset = get_dataset("mnist")
    split = dataset.load(data_root(None), "test", False)
    images = [split[i][0].to(device) for i in args.cli_indices]
    meta = torch.load(args.checkpoint, map_location="cpu", weights_only=True).get("rsbench", {})
    sigma = float(meta.get("sigma", 0.5))
    reference = reference_certify(args, model, dataset.num_classes, sigma)
    run = cli_step(args, sigma)

    def reference_on_images() -> None:
        for image in images:
            reference(image)

    def cli() -> float:
        args.cli_last = run()
        return args.cli_last[0]

    draws = (N0 + args.draws) * len(images)
    return {
        f"{args.reference} on the CLI's images": (reference_on_images, draws),
        "rsbench certify (CLI)": (cli, draws),
    }


def load_average() -> str:
    return "{:.2f} {:.2f} {:.2f}".format(*os.getloadavg())


def benchmark(arch: str, args, device: torch.device) -> None:
    dataset = get_dataset(SHAPES[arch])
    args.num_classes = dataset.num_classes
    args.batch_size = args.batch or BATCH[arch]
    model = build_classifier(arch, dataset).to(device).eval()
    if arch == "lenet" and args.checkpoint is not None:
        model.load_state_dict(torch.load(args.checkpoint, map_location=device, weights_only=True)["state_dict"])
    x = torch.rand(dataset.input_shape, generator=torch.Generator().manual_seed(0)).to(device)
    rows, default = in_process_rows(model, x, args, device)
    cli = cli_rows(args, model, device) if arch == "lenet" else None
    modes = {"quiet": contextlib.nullcontext, "busy": Contention().busy}
    if args.contention != "both":
        modes = {args.contention: modes[args.contention]}
    rates: dict[str, dict[str, list[float]]] = {m: {} for m in modes}
    ratios: dict[str, dict[str, list[float]]] = {m: {} for m in modes}
    loads: dict[str, list[str]] = {m: [] for m in modes}
    cli_wall: dict[str, list[float]] = {m: [] for m in modes}
    chosen: dict[str, list[str]] = {m: [] for m in modes}
    for round_ in range(args.warmup + args.rounds):
        order = list(modes) if round_ % 2 == 0 else list(reversed(modes))
        for mode in order:
            with modes[mode]():
                load_before = load_average()
                groups = [(rows, args.reference)]
                if cli is not None:
                    groups.append((cli, f"{args.reference} on the CLI's images"))
                for group, reference in groups:
                    measured = {name: rate(step, draws, device) for name, (step, draws) in group.items()}
                    if round_ < args.warmup:
                        continue
                    for name, value in measured.items():
                        rates[mode].setdefault(name, []).append(value)
                        ratios[mode].setdefault(name, []).append(value / measured[reference])
                if round_ >= args.warmup:
                    loads[mode].append(f"{load_before} → {load_average()}")
                    if cli is not None:
                        cli_wall[mode].append(args.cli_last[1])
                    tuner = default.tuner(x.unsqueeze(0))
                    chosen[mode].append(tuner.describe() if tuner is not None else "whole chunk per pass")
    report(arch, device, args, modes, rates, ratios, loads, cli_wall, chosen)


def report(arch, device, args, modes, rates, ratios, loads, cli_wall, chosen) -> None:
    cpu = platform.processor() or platform.machine()
    with contextlib.suppress(OSError, StopIteration):
        lines = Path("/proc/cpuinfo").read_text().splitlines()
        cpu = next(line.split(":", 1)[1].strip() for line in lines if line.startswith("model name"))
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else cpu
    print(
        f"\n### {arch} on {device} ({name}; {available_cpus()} CPUs available, torch {torch.__version__} with "
        f"{torch.get_num_threads()} threads by default)\n\n--batch {args.batch_size}, N0 + N = {N0 + args.draws:,} "
        f"per certificate, median of {args.rounds} interleaved rounds (after {args.warmup} untimed); busy = "
        f"{Contention().count} busy-loop process(es) on the other CPUs; reference: {args.reference}"
        f"{' (' + str(args.cohen_core) + ', patched at load time)' if args.cohen_core else ''}\n"
    )
    header = "| path | " + " | ".join(f"{m}: draws/s | {m}: × reference" for m in modes) + " |"
    print(header)
    print("|" + "---|" + "---:|---:|" * len(modes))
    names = list(next(iter(rates.values())))
    for row in names:
        cells = []
        for mode in modes:
            cells += [f"{statistics.median(rates[mode][row]):,.0f}", f"{statistics.median(ratios[mode][row]):.2f}"]
        print(f"| {row} | " + " | ".join(cells) + " |")
    print()
    for mode in modes:
        print(f"- {mode}: load average (1, 5, 15 min) per round, before → after: " + "; ".join(loads[mode]))
        print(f"  - rsbench certify() chose, at the end of the last round: {chosen[mode][-1]}")
        if cli_wall[mode]:
            walls = statistics.median(cli_wall[mode])
            draws = (N0 + args.draws) * len(args.cli_indices)
            print(
                f"  - rsbench certify (CLI) process, start to exit: median {walls:.1f} s for {draws:,} draws "
                f"({draws / walls:,.0f} draws/s with the start of Python, torch and the store)"
            )
        spreads = {row: (min(v), max(v)) for row, v in ratios[mode].items() if row != args.reference}
        print(
            "  - per-round ratio ranges: "
            + "; ".join(f"{row}: {lo:.2f}–{hi:.2f}" for row, (lo, hi) in spreads.items() if math.isfinite(lo))
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument(
        "--arch", action="append", choices=sorted(SHAPES), help="default: lenet (+ the ResNet shapes on a GPU)"
    )
    parser.add_argument("--cohen-core", type=Path, help="Cohen et al.'s code/core.py: the reference (recommended)")
    parser.add_argument("--checkpoint", type=Path, help="a LeNet/MNIST checkpoint (also enables the CLI rows)")
    parser.add_argument("--batch", type=int, help="--batch of every path (default: Cohen's, 1000; 400 for ResNet-50)")
    parser.add_argument("--draws", type=int, default=20_000, help="N per certify() call")
    parser.add_argument("--forward-batches", type=int, nargs="*", default=[], help="also time these pass sizes")
    parser.add_argument("--compile", action="store_true", help="also time torch.compile (opt-in path)")
    parser.add_argument("--contention", choices=("both", "quiet", "busy"), default="both")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--warmup", type=int, default=1)
    parser.add_argument("--cli-indices", type=lambda s: [int(i) for i in s.split(",")], default=[0, 5000])
    args = parser.parse_args()
    if args.cohen_core is not None:
        args.smooth_class = load_cohen_smooth(args.cohen_core)
    args.reference = "Cohen Smooth.certify" if args.cohen_core else "reference loop (written like Smooth)"
    device = torch.device(args.device)
    archs = args.arch or (["lenet", *BIG] if device.type == "cuda" else ["lenet"])
    for arch in archs:
        if arch in BIG and device.type != "cuda":
            print(f"note: {arch} on {device} is slow (a GPU shape); pass fewer --draws", file=sys.stderr)
        benchmark(arch, args, device)


if __name__ == "__main__":
    main()
