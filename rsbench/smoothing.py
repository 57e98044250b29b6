"""Randomized smoothing with Cohen et al.'s (2019) CERTIFY and PREDICT, interface kept::

    from rsbench import SmoothedClassifier
    g = SmoothedClassifier(base_classifier, num_classes, sigma)
    prediction, radius = g.certify(x, n0=100, n=100_000, alpha=0.001, batch_size=1000)
    prediction = g.predict(x, n=1000, alpha=0.001, batch_size=1000)

``x`` is one input [C,H,W] in [0,1] pixel space; noise N(0, σ²I) is added in that space (normalization
is the base classifier's first layer); ``radius`` is an ℓ2 radius in the same units. Noise counts are
accumulated on the classifier's device; no Python loop runs over samples.
"""

from __future__ import annotations

import contextlib
import math
import time
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch
from scipy.stats import binomtest, norm
from statsmodels.stats.proportion import proportion_confint
from torch import nn

from rsbench.params import hyperparameter
from rsbench.specs import Certificate, CertificationRequest, SmoothedClassifierBase
from rsbench.tuning import CPU_FORWARD_BATCHES, PassTuner, available_cpus, thread_choices, threads_set

ABSTAIN = -1
PRECISIONS = ("float32", "bfloat16", "float16")
CPU_FORWARD_BATCH = 128  # the first pass size the CPU tuner tries, and the one used with compile


@dataclass(frozen=True)
class SpeedParams:
    """How the base classifier is run, hyperparameters of every certifier built on
    :class:`SmoothedClassifier`; none of them changes the noise drawn."""

    forward_batch: int = hyperparameter(
        0,
        "noisy copies per forward pass; 0 = what suits the device (on a CPU: 64-256 copies and the torch thread "
        "count, both chosen by timing the passes; on a GPU: the whole --batch)",
        min=0,
    )
    compile: bool = hyperparameter(False, "run the model through torch.compile (opt-in; first batches compile)")
    precision: str = hyperparameter(
        "float32",
        "forward-pass precision; bfloat16/float16 (CUDA autocast) certify the reduced-precision classifier, "
        "which may predict differently from float32: sound for that classifier only",
        choices=PRECISIONS,
    )


IMPLEMENTATION_PARAMS = ("forward_batch", "compile")  # how the computation is run; the certificates stay the same


def speed_options(params: SpeedParams) -> dict[str, Any]:
    """The keyword arguments of :class:`SmoothedClassifier` that ``params`` sets."""
    return {"forward_batch": params.forward_batch or None, "compile": params.compile, "precision": params.precision}


def suited_forward_batch(device: torch.device) -> int | None:
    """Noisy copies per forward pass that suit ``device`` before any timing: 128 on a CPU, where a pass of
    a small model (LeNet) then stays in cache (``benchmarks/certify_speed.py`` measures batches 64 to
    1,000; the CPU tuner then picks among 64, 128 and 256); ``None`` (the whole chunk of ``--batch``
    draws) on accelerators, which want the largest pass that fits."""
    return CPU_FORWARD_BATCH if device.type == "cpu" else None


def lower_confidence_bound(n_a: int, n: int, alpha: float) -> float:
    """One-sided (1-α) Clopper-Pearson lower bound on a binomial proportion from ``n_a`` of ``n``."""
    return float(proportion_confint(n_a, n, alpha=2 * alpha, method="beta")[0])


def max_certified_radius(sigma: float, n: int, alpha: float) -> float:
    """The largest radius CERTIFY can return with ``n`` draws: σ·Φ⁻¹(α^{1/n}) (all draws agree).

    Negative when ``n`` is too small for α: then nothing can be certified.
    """
    return sigma * float(norm.ppf(alpha ** (1.0 / n)))


def certify_from_counts(
    selection: torch.Tensor, estimation: torch.Tensor, alpha: float, sigma: float, draws: int
) -> Certificate:
    """Cohen et al.'s CERTIFY (2019, Algorithm 1) from the class counts of its two independent samples:

    1. ĉ_A = the most frequent class among the N0 selection draws ``selection``;
    2. n_A = the count of ĉ_A among the N estimation draws ``estimation``;
    3. p_A = the one-sided (1-α) Clopper-Pearson lower bound on P(f(x+δ) = ĉ_A) from n_A of N;
    4. p_A < ½: abstain; else predict ĉ_A, certified within ℓ2 radius σ·Φ⁻¹(p_A).

    ``draws`` is the total spent (N0 + N), recorded with the certificate.
    """
    top = int(selection.argmax())
    n_a, n = int(estimation[top]), int(estimation.sum())
    p_a = lower_confidence_bound(n_a, n, alpha)
    if p_a < 0.5:
        return Certificate(ABSTAIN, 0.0, draws, "exact", n_a, p_a)
    return Certificate(top, sigma * float(norm.ppf(p_a)), draws, "exact", n_a, p_a)


class SmoothedClassifier(SmoothedClassifierBase):
    """A smoothed classifier g(x) = argmax_c P(f(x+δ) = c), δ ~ N(0, σ²I), σ in [0,1] pixel units.

    Implements the certifier contract (:class:`rsbench.specs.SmoothedClassifierBase`) with Cohen's
    CERTIFY, and Cohen's own ``certify``/``predict`` interface on top of it.
    """

    ABSTAIN = ABSTAIN

    def __init__(
        self,
        base_classifier: nn.Module,
        num_classes: int,
        sigma: float,
        *,
        forward_batch: int | None = None,
        compile: bool = False,
        precision: str = "float32",
    ):
        """``forward_batch``: noisy copies per forward pass; ``None``: on a CPU, the pass size (64, 128 or
        256) and torch's thread count (up to the CPUs this process may use, never above
        ``torch.get_num_threads()``) are chosen by timing the passes (:mod:`rsbench.tuning`), on a GPU the
        whole chunk; it never changes the noise drawn, only how it is fed to the model.
        ``compile``: run the model through ``torch.compile``. ``precision``: ``float32``, or on CUDA
        ``bfloat16``/``float16`` autocast for the forward pass only (noise stays float32): the certificate
        is then one of the reduced-precision classifier, whose predictions may differ from float32's."""
        if not sigma > 0:
            raise ValueError(f"sigma must be positive, not {sigma}")
        if precision not in PRECISIONS:
            raise ValueError(f"precision must be one of {', '.join(PRECISIONS)}, not {precision!r}")
        if forward_batch is not None and forward_batch < 1:
            raise ValueError(f"forward_batch must be at least 1, not {forward_batch}")
        self.base_classifier = base_classifier
        self.num_classes = num_classes
        self.sigma = sigma
        self.forward_batch = forward_batch
        self.precision = precision
        self.compile = compile
        self._model = torch.compile(base_classifier, dynamic=False) if compile else base_classifier
        self._tuners: dict[tuple[Any, ...], PassTuner] = {}

    def certify(
        self, x: torch.Tensor, n0: int, n: int, alpha: float, batch_size: int, generator: torch.Generator | None = None
    ) -> tuple[int, float]:
        """CERTIFY: the prediction of g at ``x`` and an ℓ2 radius within which g is constant, both with
        probability at least 1-α over the noise; ``(-1, 0.0)`` when it abstains."""
        request = CertificationRequest(n0=n0, n=n, alpha=alpha, batch_size=batch_size)
        certificate = self.certify_batch(x.unsqueeze(0), request, [generator])[0]
        return certificate.prediction, certificate.radius

    def certify_batch(
        self, xs: torch.Tensor, request: CertificationRequest, generators: Sequence[torch.Generator | None]
    ) -> list[Certificate]:
        """CERTIFY for each input of ``xs`` [K,C,H,W]; their noisy copies share forward passes of
        ``request.batch_size``. Each input draws from its own generator, so its certificate is the one
        :meth:`certify` gives it alone. ``request.radii`` is ignored: radii are exact."""
        _check_sampling(request.n0, "n0")
        _check_sampling(request.n, "n")
        _check_alpha(request.alpha)
        if max_certified_radius(self.sigma, request.n, request.alpha) <= 0:
            warnings.warn(
                f"with n={request.n} and alpha={request.alpha} no radius can be certified: CERTIFY will always abstain",
                RuntimeWarning,
                stacklevel=3,
            )
        self.base_classifier.eval()
        selection = self.sample_counts_many(xs, request.n0, request.batch_size, generators)
        estimation = self.sample_counts_many(xs, request.n, request.batch_size, generators)
        draws = request.n0 + request.n
        return [
            certify_from_counts(s, e, request.alpha, self.sigma, draws)
            for s, e in zip(selection, estimation, strict=True)
        ]

    def predict(
        self, x: torch.Tensor, n: int, alpha: float, batch_size: int, generator: torch.Generator | None = None
    ) -> int:
        """PREDICT: g's prediction at ``x``, or -1 when a two-sided binomial test cannot tell the top two
        classes apart at level α (the returned class is wrong with probability at most α)."""
        _check_sampling(n, "n")
        _check_alpha(alpha)
        self.base_classifier.eval()
        return self._predict_from_counts(self.sample_counts(x, n, batch_size, generator), alpha)

    def predict_batch(
        self, xs: torch.Tensor, request: CertificationRequest, generators: Sequence[torch.Generator | None]
    ) -> list[int]:
        """PREDICT for each input of ``xs`` [K,C,H,W] with ``request.n`` draws at level ``request.alpha``;
        their noisy copies share forward passes of ``request.batch_size``, each input drawing from its own
        generator."""
        _check_sampling(request.n, "n")
        _check_alpha(request.alpha)
        self.base_classifier.eval()
        counts = self.sample_counts_many(xs, request.n, request.batch_size, generators)
        return [self._predict_from_counts(c, request.alpha) for c in counts]

    def _predict_from_counts(self, counts: torch.Tensor, alpha: float) -> int:
        top2 = torch.topk(counts, 2 if self.num_classes > 1 else 1)
        count1 = int(top2.values[0])
        count2 = int(top2.values[1]) if len(top2.values) > 1 else 0
        if binomtest(count1, count1 + count2, p=0.5).pvalue > alpha:
            return ABSTAIN
        return int(top2.indices[0])

    def sample_counts(
        self, x: torch.Tensor, num: int, batch_size: int, generator: torch.Generator | None = None
    ) -> torch.Tensor:
        """Class counts of f(x + δ) over ``num`` draws, in batches of ``batch_size`` (on x's device)."""
        return self.sample_counts_many(x.unsqueeze(0), num, batch_size, [generator])[0]

    @torch.inference_mode()
    def sample_counts_many(
        self, xs: torch.Tensor, num: int, batch_size: int, generators: Sequence[torch.Generator | None] | None = None
    ) -> torch.Tensor:
        """[K, classes] counts of f(x_k + δ) over ``num`` fresh draws for each of the K inputs ``xs``; a
        chunk holds ``batch_size // K`` draws of each input.

        Input k's noise is drawn from its own generator in chunks of ``batch_size // K`` draws, in place
        into one reused buffer (``normal_`` on a contiguous slice: the stream ``torch.randn`` of the same
        chunk gives); the chunk is fed to the model ``forward_batch`` rows at a time."""
        if batch_size < 1:
            raise ValueError(f"batch_size must be at least 1, not {batch_size}")
        inputs = len(xs)
        generators = generators or [None] * inputs
        per_input = min(max(1, batch_size // inputs), num)
        buffer = torch.empty((inputs * per_input, *xs.shape[1:]), device=xs.device, dtype=xs.dtype)
        counts = torch.zeros(inputs * self.num_classes, dtype=torch.long, device=xs.device)
        remaining = num
        with threads_set() as threads:  # the tuner's thread count also runs the noise arithmetic
            while remaining > 0:
                size = min(per_input, remaining)
                remaining -= size
                chunk = buffer[: inputs * size].view(inputs, size, *xs.shape[1:])  # input-major, contiguous
                for k, generator in enumerate(generators):
                    chunk[k].normal_(generator=generator)
                chunk.mul_(self.sigma).add_(xs.unsqueeze(1))  # x_k + σ·δ, bit for bit
                offsets = torch.arange(inputs, device=xs.device).repeat_interleave(size) * self.num_classes
                predictions = self.classify(buffer[: inputs * size], threads)
                counts += torch.bincount(predictions + offsets, minlength=inputs * self.num_classes)
        return counts.view(inputs, self.num_classes)

    def classify(self, batch: torch.Tensor, threads: threads_set | None = None) -> torch.Tensor:
        """f's class for each row of ``batch`` (noisy inputs in [0,1]), ``forward_batch`` rows per pass, or,
        with ``forward_batch=None`` on a CPU, as many rows and torch threads as :meth:`tuner` finds fastest
        (``threads``: the caller's :class:`~rsbench.tuning.threads_set`, which restores torch's thread count
        when the caller is done; by default this call restores it)."""
        autocast = torch.autocast(
            batch.device.type, dtype=getattr(torch, self.precision), enabled=self.precision != "float32"
        )
        tuner = self.tuner(batch) if self.forward_batch is None else None
        if tuner is None:
            step = self.forward_batch or suited_forward_batch(batch.device) or len(batch)
            with autocast:
                return torch.cat([self._model(batch[i : i + step]).argmax(1) for i in range(0, len(batch), step)])
        predictions = []
        setting = threads or threads_set()
        with autocast, setting if threads is None else contextlib.nullcontext():
            start = 0
            while start < len(batch):
                choice = tuner.choose()
                rows = min(choice.rows, len(batch) - start)
                setting.use(choice.threads)
                started = time.perf_counter()
                predictions.append(self._model(batch[start : start + rows]).argmax(1))
                tuner.observe(choice, rows, time.perf_counter() - started)
                start += rows
        return torch.cat(predictions)

    def tuner(self, batch: torch.Tensor) -> PassTuner | None:
        """The :class:`~rsbench.tuning.PassTuner` of inputs shaped like ``batch``'s rows on its device (kept
        for the classifier's life, so later certificates start from what earlier ones measured); None off
        the CPU. With ``compile`` it tunes threads only (each new pass size would compile anew)."""
        if batch.device.type != "cpu":
            return None
        key = (str(batch.device), tuple(batch.shape[1:]), batch.dtype)
        if key not in self._tuners:
            threads = thread_choices(min(torch.get_num_threads(), available_cpus()))
            rows = (CPU_FORWARD_BATCH,) if self.compile else CPU_FORWARD_BATCHES
            self._tuners[key] = PassTuner(threads, rows)
        return self._tuners[key]


def _check_sampling(value: int, name: str) -> None:
    if not (isinstance(value, int) and value >= 1):
        raise ValueError(f"{name} must be a positive integer, not {value}")


def _check_alpha(alpha: float) -> None:
    if not (0 < alpha < 1) or math.isnan(alpha):
        raise ValueError(f"alpha must lie in (0, 1), not {alpha}")
