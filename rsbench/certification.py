"""Certify or predict a checkpoint on a dataset split: open the run, certify a chunk of inputs, record its
rows, repeat. Each row is committed to the store as it is done, so an interrupted run resumes where it
stopped.

Each example's noise comes from its own generator, seeded by (noise seed, index): a resumed or sharded run
gives exactly the rows an uninterrupted one would. Under torchrun the examples still to do are split across
ranks, each committing its own rows into the one run. Everything is validated before the run is written.
"""

from __future__ import annotations

import dataclasses
import math
import re
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any, NamedTuple

import torch

from rsbench import budgets
from rsbench.checkpoint import classifier_from_checkpoint, load_checkpoint
from rsbench.config import CertifyConfig
from rsbench.data import data_root
from rsbench.distributed import World, current_world, rank_device
from rsbench.errors import RsbenchError, check_seed
from rsbench.params import params_to_dict, parse_params
from rsbench.plugins import get_certifier, get_dataset, plugin_sources
from rsbench.progress import console, make_progress
from rsbench.protocol import CertificationProtocol, RunDescription
from rsbench.provenance import auto_device, file_sha256, provenance
from rsbench.smoothing import max_certified_radius
from rsbench.specs import Certificate, CertificationRequest, Dataset, SmoothedClassifierBase
from rsbench.store import Store


@dataclasses.dataclass
class CertificationJob:
    """A validated certification: what to certify, with what, and where its rows go."""

    config: CertifyConfig
    sigma: float
    dataset: Dataset
    split: Any
    smoothed: SmoothedClassifierBase
    request: CertificationRequest
    protocol: CertificationProtocol
    device: torch.device
    run_id: int
    todo: list[int]


def validate(config: CertifyConfig) -> None:
    if config.kind not in ("certify", "predict"):
        raise RsbenchError(f"kind must be certify or predict, not {config.kind!r}")
    if config.sigma is not None and not (math.isfinite(config.sigma) and config.sigma > 0):
        raise RsbenchError(f"sigma must be a positive number, not {config.sigma}")
    if not 0 < config.alpha < 1:
        raise RsbenchError(f"alpha must lie strictly between 0 and 1, not {config.alpha}", "e.g. --alpha 0.001")
    for name in ("n0", "n", "batch", "skip", "images_per_batch"):
        if getattr(config, name) < 1:
            raise RsbenchError(f"{name} must be at least 1, not {getattr(config, name)}")
    check_seed(config.noise_seed, "the noise seed (--seed)")
    if config.limit is not None and config.limit < 1:
        raise RsbenchError(f"limit must be at least 1, not {config.limit}")
    if config.budget is not None and not re.fullmatch(r"[A-Za-z0-9_.+-]{1,32}", config.budget):
        raise RsbenchError(f"budget {config.budget!r} is not a name", "letters, digits and _ - . + (e.g. quick)")
    if config.split not in ("train", "test"):
        raise RsbenchError(f"split must be train or test, not {config.split!r}")
    if config.indices is not None:
        if not config.indices:
            raise RsbenchError("--indices names no index", "e.g. --indices 0,7,42")
        if len(set(config.indices)) != len(config.indices):
            raise RsbenchError("--indices names an index twice")


def select_indices(size: int, config: CertifyConfig) -> list[int]:
    if config.indices is not None:
        bad = [i for i in config.indices if not 0 <= i < size]
        if bad:
            raise RsbenchError(f"indices {bad[:5]} are outside the split (size {size})")
        return list(config.indices)
    return budgets.every_nth(size, config.skip, config.limit)


def noise_generators(config: CertifyConfig, indices: Sequence[int], device: torch.device) -> list[torch.Generator]:
    """One noise stream per example, seeded by (noise seed, index)."""
    return [torch.Generator(device=device).manual_seed(config.noise_seed * 1_000_003 + i) for i in indices]


def open_job(config: CertifyConfig, store: Store) -> CertificationJob:
    """Validate everything (config, checkpoint, σ, certifier and its parameters, data, indices), then open
    or resume the run in the store."""
    validate(config)
    certifier = get_certifier(config.certifier)
    certifier_params = parse_params(certifier.Params, config.certifier_params, f"certifier {config.certifier!r}")
    checkpoint = load_checkpoint(config.checkpoint)
    classifier, meta = classifier_from_checkpoint(checkpoint, config.dataset, config.normalization)
    dataset = get_dataset(meta["dataset"])
    sigma = config.sigma if config.sigma is not None else meta.get("sigma")
    if sigma is None:
        raise RsbenchError("the checkpoint does not record its σ (an official checkpoint?)", "pass --sigma")
    if config.kind == "certify" and max_certified_radius(sigma, config.n, config.alpha) <= 0:
        raise RsbenchError(
            f"with N={config.n} and alpha={config.alpha} CERTIFY can never certify (it needs alpha^(1/N) > 0.5)",
            "raise --n",
        )
    device = auto_device(rank_device(current_world(config.device), config.device))
    smoothed = certifier.create(classifier.to(device), dataset.num_classes, float(sigma), certifier_params)
    if not isinstance(smoothed, SmoothedClassifierBase):
        raise RsbenchError(
            f"certifier {config.certifier!r} created a {type(smoothed).__name__}, not a SmoothedClassifierBase",
            "its create() must return a subclass of rsbench.SmoothedClassifierBase (see CONTRIBUTING.md)",
        )
    split = dataset.load(data_root(config.data_dir), config.split, False)
    indices = select_indices(len(split), config)  # type: ignore[arg-type]  # map-style datasets have a length
    request = CertificationRequest(config.n0, config.n, config.alpha, config.batch, tuple(config.radii))
    smoothed.check_request(request)
    certification = budgets.Certification(
        config.split,
        config.n0 if config.kind == "certify" else None,
        config.n,
        config.alpha,
        indices,
        len(split),  # type: ignore[arg-type]
    )
    budget = budgets.label(config.budget, certification, meta, checkpoint.get("epoch"), dataset)
    protocol, description = describe_run(
        config, meta, dataset, float(sigma), file_sha256(config.checkpoint), params_to_dict(certifier_params), device,
        budget,
    )  # fmt: skip
    protocol.check()
    training = store.training_run_for(protocol.checkpoint_sha256 or "")
    selection = {"list": indices} if config.indices is not None else {"skip": config.skip, "limit": config.limit}
    run_id, done = store.start_run(protocol, description, indices, selection, training.id if training else None)
    todo = [i for i in indices if i not in done]
    return CertificationJob(config, float(sigma), dataset, split, smoothed, request, protocol, device, run_id, todo)


def describe_run(
    config: CertifyConfig, meta: dict[str, Any], dataset: Dataset, sigma: float, sha256: str,
    certifier_params: dict[str, Any], device: torch.device, budget: str,
) -> tuple[CertificationProtocol, RunDescription]:  # fmt: skip
    """A certification run's protocol (its identity; ``budget`` its :func:`rsbench.budgets.label`) and its
    description: the model it certifies (from the checkpoint's metadata) and its provenance, including the plugin
    distributions that built it."""
    certifying = config.kind == "certify"
    protocol = CertificationProtocol(
        kind=config.kind, dataset=dataset.name, split=config.split, sigma=sigma, train_sigma=meta.get("sigma"),
        certifier=config.certifier, certifier_params=certifier_params, n0=config.n0 if certifying else None,
        n=config.n, alpha=config.alpha, radii=tuple(config.radii), noise_seed=config.noise_seed,
        normalization=config.normalization, budget=budget,
        checkpoint_sha256=sha256,
    )  # fmt: skip
    recorded = {k: v for k, v in meta.items() if k in ("preset", "provenance", "train_limit")}
    method = meta.get("method", "unknown")
    plugins = plugin_sources(
        dataset=dataset.name, certifier=config.certifier, architecture=meta.get("arch"),
        method=method if method != "unknown" else None,
    )  # fmt: skip
    description = RunDescription(
        origin="rsbench", method=method, params=meta.get("params", {}), arch=meta.get("arch"), seed=meta.get("seed"),
        batch_size=config.batch, experiment=config.experiment, checkpoint_path=str(Path(config.checkpoint).resolve()),
        provenance={
            **provenance(device), "plugins": plugins, "images_per_batch": config.images_per_batch,
            "checkpoint_meta": recorded,
        },
    )  # fmt: skip
    return protocol, description


def certify_chunk(job: CertificationJob, indices: Sequence[int], images: torch.Tensor) -> list[Certificate]:
    """Certificates (or, for ``predict``, predictions with radius 0) of the examples at ``indices``, whose
    ``images`` [K,C,H,W] are already loaded; the K inputs share forward passes."""
    xs = images.to(job.device)
    generators = noise_generators(job.config, indices, job.device)
    if job.config.kind == "certify":
        return job.smoothed.certify_batch(xs, job.request, generators)
    predictions = job.smoothed.predict_batch(xs, job.request, generators)
    return [Certificate(prediction, 0.0, job.request.n) for prediction in predictions]


class Outcome(NamedTuple):
    """What the progress line counts of one example."""

    correct: int
    radius: float
    abstained: bool


def progress_status(kind: str, outcomes: Sequence[Outcome]) -> str:
    """The progress line's running figures: accuracy and ACR for CERTIFY; accuracy and the share of
    abstentions for PREDICT, which has no radius."""
    accuracy = sum(o.correct for o in outcomes) / len(outcomes)
    if kind == "certify":
        return f"accuracy {accuracy:.3f}  ACR {sum(o.correct * o.radius for o in outcomes) / len(outcomes):.3f}"
    return f"accuracy {accuracy:.3f}  abstained {sum(o.abstained for o in outcomes) / len(outcomes):.3f}"


def record(
    job: CertificationJob,
    store: Store,
    indices: Sequence[int],
    labels: Sequence[int],
    certificates: Sequence[Certificate],
    seconds: float,
) -> list[Outcome]:
    """Commit one row per example (one transaction); returns each row's :class:`Outcome` for the progress line."""
    config = job.config
    certifying = config.kind == "certify"
    rows = [
        dict(
            idx=index,
            label=label,
            predict=certificate.prediction,
            radius=certificate.radius,
            radius_kind=certificate.radius_kind if certifying else None,
            correct=int(certificate.prediction == label),
            n_a=certificate.n_a,
            p_a_lower=certificate.p_a_lower,
            n=config.n,
            n0=config.n0 if certifying else None,
            alpha=config.alpha,
            draws=certificate.draws,
            seconds=seconds / len(indices),
        )  # fmt: skip
        for index, label, certificate in zip(indices, labels, certificates, strict=True)
    ]
    store.add_certificates(job.run_id, rows)
    return [
        Outcome(int(c.prediction == label), c.radius, c.prediction == -1)
        for label, c in zip(labels, certificates, strict=True)
    ]


def certify(config: CertifyConfig, store: Store, show_progress: bool = True, reuse_complete: bool = False) -> int:
    """Run (or resume) a certification; returns its run id in ``store``. A run that already holds every
    requested example is an error, or is returned as it is with ``reuse_complete``."""
    world = current_world(config.device)
    job = open_job_in_turn(config, store, world)
    if world.main and job.protocol.sigma_mismatch:
        console.print(
            f"[yellow]note:[/] certifying at σ = {job.sigma:g}, but the model was trained at σ = "
            f"{job.protocol.train_sigma:g}: the leaderboard shows this run as its own, marked row",
            highlight=False,
        )
    if not job.todo:
        if world.main:
            store.finish_run(job.run_id)
        if reuse_complete:
            return job.run_id
        raise RsbenchError(
            f"this certification is already complete in the store (run {job.run_id})",
            f"see `rsbench runs` or `rsbench export {job.run_id}`; change --seed for another run",
        )
    previous = store.results([job.run_id])
    outcomes = [
        Outcome(int(row.correct), float(row.radius), row.predict == -1) for row in previous.itertuples(index=False)
    ]
    group = config.images_per_batch
    mine = world.shard(job.todo)
    with make_progress(show_progress and world.main) as progress:
        task = progress.add_task(
            f"{config.kind} σ={job.sigma:g}", total=len(outcomes) + len(mine), completed=len(outcomes), status=""
        )
        for start in range(0, len(mine), group):
            chunk = mine[start : start + group]
            started = time.perf_counter()
            examples = [job.split[i] for i in chunk]  # each example loaded once: image for the certifier, label
            certificates = certify_chunk(job, chunk, torch.stack([x for x, _ in examples]))
            labels = [int(y) for _, y in examples]
            outcomes += record(job, store, chunk, labels, certificates, time.perf_counter() - started)
            progress.update(task, advance=len(chunk), status=progress_status(config.kind, outcomes))
    world.barrier()
    if world.main:
        store.finish_run(job.run_id)
    return job.run_id


def open_job_in_turn(config: CertifyConfig, store: Store, world: World) -> CertificationJob:
    """:func:`open_job` on every rank, rank 0 first (it creates the run; the others then find it), so all
    ranks see the same examples still to do and split them by :meth:`World.shard`. Rank 0 validates first:
    its error is every rank's (:meth:`World.main_first`), no rank is left waiting for it."""
    job = world.main_first(lambda: open_job(config, store))
    world.agree((job.run_id, job.todo), "the run and the examples still to do")
    return job
