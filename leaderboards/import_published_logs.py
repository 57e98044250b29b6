"""Import the per-example certification logs that papers published beside their code, and write one run record
per log into leaderboards/records/DATASET/:

    python leaderboards/import_published_logs.py --mirrors MIRRORS --db published.db --records leaderboards/records

MIRRORS holds a clone of each repository in ``SOURCES`` as ``MIRRORS/OWNER+NAME`` (a work tree or a bare
repository, e.g. ``git clone --bare https://github.com/locuslab/smoothing MIRRORS/locuslab+smoothing``); ``--repo
OWNER/NAME=PATH`` names one elsewhere. Logs are read at the commit named in ``SOURCES`` (``git cat-file`` of the
commit's tree), never from a work tree, so a newer clone gives the same records.

Every file under a source's folders is accounted for: imported, a byte-identical copy of a log an earlier source
already published (named in that record's ``provenance.source.also_published``), or left out for the reason its
rule gives; a file no rule names stops the import. ``--summary FILE`` writes that accounting as markdown.

Each record carries its paper (authors, title, venue, year, URL) and code URL in ``model_info``, the repository,
commit, path and SHA-256 of the log in ``provenance.source``, the architecture, σ and training σ, N0, N, α (Cohen et
al.'s ``certify.py`` defaults, which every source's scripts use: N0 = 100, N = 100,000, α = 0.001; see
``COHEN_ALPHA_NOTE`` for the exception) and the indices the log's ``idx`` column covers (``{"skip": K, "limit":
COUNT}`` where they are every K-th index from 0, else the list). ε of SmoothAdv and CAT-RS is converted from the
official 1/256 units (255 -> 255/256). Logs whose indices follow another order than the dataset plugin's are mapped
to its order, each row's label checked against the mapping, before they are stored (see ``IMAGENET_FILE_ORDER``):
that needs ``MIRRORS/tensorflow+models`` (or ``--repo tensorflow/models=PATH``), or ``--imagenet-val-synsets FILE``,
a copy of the file ``IMAGENET_VAL_SYNSETS`` names, checked against its SHA-256.
"""

from __future__ import annotations

import argparse
import collections
import dataclasses
import hashlib
import json
import re
import subprocess
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from rsbench.errors import RsbenchError
from rsbench.plugins import get_dataset, get_manager
from rsbench.protocol import CertificationProtocol, RunDescription, Split
from rsbench.provenance import provenance
from rsbench.results.cohen_tsv import check_protocol, check_rows, read_tsv, typed_params
from rsbench.results.records import record_of, write_record
from rsbench.store import Store, frame_rows, open_store
from rsbench.store.models import CertificationRun

N0, N, ALPHA = 100, 100_000, 0.001  # certify.py's defaults in every source
NO_PLUGIN = "no rsbench dataset plugin of that name (today: mnist, cifar10, imagenet)"
PREDICT_LOG = "a prediction log (idx label predict correct time), not a certification"
# Salman et al. read ImageNet's validation images in the order of their files (val_map.txt), not in the
# class-folder order of torchvision's ImageFolder that Cohen et al., rsbench and the later papers use: their index 0
# is ILSVRC2012_val_00000001 (label 65), a class-0 image here. Stored as they are, beside the others, they would pair
# different images that share an index. The synset of every validation file, in file order, is public (the file
# IMAGENET_VAL_SYNSETS names), and class-folder order follows from it: classes are the sorted synsets, files sorted
# by name within a class, so file k goes to (files of the classes before its own) + (its class's files before it).
# The importer maps each row's index so, after checking that its logged label is the class of its file's synset: a
# single disagreement refuses the log. All 5,500 rows of the 11 logs agree.
IMAGENET_FILE_ORDER = "file-order"


@dataclasses.dataclass(frozen=True)
class FileSource:
    """One file of a public repository, pinned by commit and content."""

    repo: str
    commit: str
    path: str
    sha256: str

    @property
    def url(self) -> str:
        return f"https://github.com/{self.repo}/blob/{self.commit}/{self.path}"


# line k: the synset of ILSVRC2012_val_{k:08d}.JPEG (1-based), 50,000 lines (TensorFlow's slim data preparation; the
# same bytes ship in tensorflow-datasets as datasets/imagenet2012/validation_labels.txt)
IMAGENET_VAL_SYNSETS = FileSource(
    "tensorflow/models",
    "c80d1b17d5f835e6f2cdeddefeb16c193beed071",
    "research/slim/datasets/imagenet_2012_validation_synset_labels.txt",
    "313fc3f23c864dde9183c9a368809065765dd1b657a6904fded44e3e46d34604",
)


@dataclasses.dataclass(frozen=True)
class Paper:
    key: str  # names the records: cohen2019-...
    authors: str
    title: str
    venue: str
    year: int
    url: str


@dataclasses.dataclass(frozen=True)
class Config:
    """What a log's path says: the training run and the certification's σ."""

    dataset: str
    method: str
    sigma: float
    params: dict[str, Any]
    arch: str
    seed: int | None = None
    split: Split = "test"
    note: str | None = None
    alpha: float = ALPHA
    train_sigma: float | None = None  # None: the certification σ
    index_order: str | None = None  # None: the dataset plugin's order; else the order the log's indices follow


Describe = Callable[[dict[str, str]], Config]


@dataclasses.dataclass(frozen=True)
class Rule:
    """Paths that fully match ``pattern`` are imported as ``describe(named groups)``, or left out for ``reason``
    when ``describe`` is None."""

    pattern: str
    describe: Describe | None = None
    reason: str = ""


@dataclasses.dataclass(frozen=True)
class Source:
    paper: Paper
    repo: str
    commit: str
    folders: tuple[str, ...]
    rules: tuple[Rule, ...]

    @property
    def code_url(self) -> str:
        return f"https://github.com/{self.repo}/tree/{self.commit}"


@dataclasses.dataclass
class Log:
    source: Source
    path: str
    blob: str
    sha256: str
    config: Config


# --- how each repository names its logs ---------------------------------------------------------------------------

CIFAR_ARCH = {"resnet110": "cifar_resnet110"}
DEFAULT_ARCH = {"mnist": "lenet", "cifar10": "cifar_resnet110", "imagenet": "resnet50"}


def smoothadv(attack: str, eps_256: str, steps: str, m: str | int, warmup: int = 10) -> dict[str, Any]:
    """SmoothAdv's hyperparameters from the official names: attack PGD/DDN, ε in 1/256 units, T, m_train."""
    return {"attack": attack.lower(), "eps": float(eps_256) / 256, "steps": int(steps), "m": int(m), "warmup": warmup}


def consistency_layout(groups: dict[str, str]) -> Config:
    """Jeong & Shin's folders (``mnist/consistency/cohen/num_2/lbd_5.0/eta_0.5/noise_0.50_3``: consistency, m=2,
    λ=5, η=0.5, σ=0.5, run 3), also used by SmoothMix for the same baselines."""
    dataset, parts = groups["dataset"], groups["rest"].split("/")
    match = re.fullmatch(r"noise_(?P<sigma>[0-9.]+)(?:_(?P<seed>\d+))?(?:_o)?", parts[-1])
    if match is None:
        raise ValueError(f"no noise_SIGMA folder in {groups['rest']}")
    keys: dict[str, Any] = {}
    arch = DEFAULT_ARCH[dataset] if dataset != "cifar10" else None
    for part in parts[:-1]:
        for prefix, key in (("num_", "m"), ("lbd_", "lam"), ("eta_", "eta"), ("gamma_", "gamma"), ("beta_", "beta")):
            if part.startswith(prefix):
                keys[key] = float(part[len(prefix) :])
        if part.startswith(("cifar_", "resnet")):
            arch = part
    if "m" in keys:
        keys["m"] = int(keys["m"])
    attack = next((p for p in parts if p.startswith(("salman_", "pgd_"))), None)
    adversarial = {}
    if attack:  # salman_EPS_STEPS_WARMUP or pgd_EPS_STEPS_WARMUP (train_consistency.py, train_salman.py)
        eps, steps, warmup = attack.split("_")[1:4]
        adversarial = smoothadv("pgd", eps, steps, keys.get("m", 1), int(warmup))
    family = parts[0]
    if family == "cohen":
        method, params = "gaussian", {}
    elif family == "consistency" and attack:
        method, params = "smoothadv", {**adversarial, **keys}
    elif family == "consistency":
        method, params = "consistency", keys
    elif family == "salman":
        method, params = "smoothadv", {**adversarial, **keys}
    elif family.startswith("macer"):
        method, params = "macer", {**keys, "deferred": "deferred" in family}
    elif family == "stab":
        method, params = "stability", {"lam": keys.get("lam", 2.0)}
    else:
        raise ValueError(f"unknown method folder {family!r}")
    if arch is None:
        raise ValueError(f"no architecture folder in {groups['rest']}")
    seed = int(match["seed"]) if match["seed"] else None
    return Config(dataset, method, float(match["sigma"]), params, arch, seed)


# Cohen et al.'s ImageNet logs and their CIFAR-10 logs of σ = 0.25, 0.5 and 1.0 models certified at their own σ were
# certified with α = 0.01, not the α = 0.001 of the paper and of certify.py's default. Their largest radii (0.978 at
# σ = 0.25, 1.96 at 0.5, 3.91 at 1.0) exceed σ·Φ⁻¹(0.001^(1/N)) (0.953, 1.906, 3.811 with N = 100,000) and equal
# σ·Φ⁻¹(0.01^(1/N)) to the printed digits; the time per image rules out a larger N. On the 500 CIFAR-10 images both
# certified, those three logs' radii exceed the radii of Salman et al.'s α = 0.001 certification of the same models
# (308 vs 95, 248 vs 110, 222 vs 78 images), while the σ = 0.12 log's do not (145 vs 132). The other CIFAR-10 logs
# (σ = 0.12, and the 0.12/0.25/1.0 models certified at σ = 0.5) print times as H:MM:SS like the σ = 0.12 log, unlike
# the three (seconds), and no radius of theirs exceeds what α = 0.001 allows: they keep α = 0.001.
COHEN_ALPHA_NOTE = (
    "α = 0.01, not the paper's 0.001: the log's radii reach σ·Φ⁻¹(0.01^(1/100000)), above what α = 0.001 allows "
    "(and, on CIFAR-10, exceed those of Salman et al.'s α = 0.001 certification of the same models)"
)


def cohen_layout(groups: dict[str, str]) -> Config:
    """``data/certify/DATASET/ARCH/noise_TRAIN/SPLIT/sigma_SIGMA``: a Gaussian model trained at σ = TRAIN."""
    dataset, sigma, train_sigma = groups["dataset"], float(groups["sigma"]), float(groups["train"])
    arch = CIFAR_ARCH.get(groups["arch"], groups["arch"])
    split: Split = "train" if groups["split"] == "train" else "test"
    if dataset == "imagenet" or (sigma == train_sigma and sigma in (0.25, 0.5, 1.0)):
        note = COHEN_ALPHA_NOTE
        return Config(dataset, "gaussian", sigma, {}, arch, split=split, note=note, alpha=0.01, train_sigma=train_sigma)
    return Config(dataset, "gaussian", sigma, {}, arch, split=split, train_sigma=train_sigma)


# Salman et al.: the models behind the paper's Tables 1 and 2 (no extra data), as the README's
# analysis/radii_to_best_models/{cifar10,imagenet}_ours list them (the best model at each radius).
SALMAN_CIFAR10_TABLE = (
    "DDN_10steps_multiNoiseSamples/8-multitrain/eps_64/cifar10/resnet110/noise_0.12",
    "DDN_4steps_multiNoiseSamples/4-multitrain/eps_255/cifar10/resnet110/noise_0.12",
    "PGD_10steps_multiNoiseSamples/4-multitrain/eps_64/cifar10/resnet110/noise_0.12",
    "PGD_2steps_multiNoiseSamples/8-multitrain/eps_255/cifar10/resnet110/noise_0.25",
    "PGD_10steps_multiNoiseSamples/8-multitrain/eps_255/cifar10/resnet110/noise_0.25",
    "PGD_2steps_multiNoiseSamples/8-multitrain/eps_512/cifar10/resnet110/noise_0.25",
    "PGD_2steps_multiNoiseSamples/8-multitrain/eps_512/cifar10/resnet110/noise_0.50",
    "PGD_10steps_multiNoiseSamples/2-multitrain/eps_512/cifar10/resnet110/noise_0.50",
    "PGD_2steps_multiNoiseSamples/2-multitrain/eps_512/cifar10/resnet110/noise_0.50",
    "PGD_10steps_multiNoiseSamples/2-multitrain/eps_512/cifar10/resnet110/noise_1.00",
)
SALMAN_IMAGENET_TABLE = (
    "DDN_2steps/eps_127/resnet50/noise_0.25",
    "DDN_2steps/eps_255/resnet50/noise_0.25",
    "DDN_2steps/eps_512/resnet50/noise_0.25",
    "PGD_1step/eps_1024/resnet50/noise_0.50",
    "PGD_1step/eps_1024/resnet50/noise_1.00",
    "PGD_1step/eps_255/resnet50/noise_0.25",
    "PGD_1step/eps_255/resnet50/noise_0.50",
    "PGD_1step/eps_512/resnet50/noise_1.00",
)
SALMAN_MODEL = re.compile(
    r"(?P<attack>PGD|DDN)_(?P<steps>\d+)steps?(?:_multiNoiseSamples/(?P<m>\d+)-multitrain)?/eps_(?P<eps>\d+)/"
    r"(?:cifar10/)?(?P<arch>resnet110|resnet50)/noise_(?P<sigma>[0-9.]+)"
)


def salman_layout(groups: dict[str, str]) -> Config:
    match = SALMAN_MODEL.fullmatch(groups["model"])
    assert match is not None  # the rule's pattern admits only the listed models
    dataset = "cifar10" if match["arch"] == "resnet110" else "imagenet"
    params = smoothadv(match["attack"], match["eps"], match["steps"], match["m"] or 1)
    order = IMAGENET_FILE_ORDER if dataset == "imagenet" else None
    arch = CIFAR_ARCH.get(match["arch"], match["arch"])
    note = "ε warm-up: 10 epochs as in the README's training commands (the script's default is 1)"
    return Config(dataset, "smoothadv", float(match["sigma"]), params, arch, note=note, index_order=order)


def salman_gaussian(groups: dict[str, str]) -> Config:
    dataset = groups["dataset"]
    order = IMAGENET_FILE_ORDER if dataset == "imagenet" else None
    note = (
        "Cohen et al.'s released Gaussian model, certified on every test image by Salman et al."
        if dataset == "cifar10"
        else "Gaussian model of Cohen et al.'s recipe, certified by Salman et al. (their 'replication')"
    )
    arch = CIFAR_ARCH.get(groups["arch"], groups["arch"])
    return Config(dataset, "gaussian", float(groups["sigma"]), {}, arch, note=note, index_order=order)


# SmoothMix: EXPERIMENTS.MD's MNIST configurations, (σ, T) -> the two η it reports, each with and without the
# one-step adversary (mix_step 1 / 0); folders smix_{alpha}_{T}_m{mix_step}/tau_{η}/num_{m}/{run}/noise_{σ}.
SMOOTHMIX_MNIST = {(0.25, 3): (1.0,), (0.25, 2): (5.0,), (0.5, 4): (1.0, 5.0), (1.0, 8): (1.0, 5.0)}
SMOOTHMIX_CIFAR10_ALPHA = {0.25: 0.5, 0.5: 1.0, 1.0: 2.0}  # EXPERIMENTS.MD: T = 4, η = 5, m = 2


def smoothmix_params(m: int, steps: int, alpha: float, eta: float, mix_step: int) -> dict[str, Any]:
    """SmoothMix's hyperparameters: m noisy copies, T attack steps of size α, mixup weight η, mix_step."""
    return {"m": m, "steps": steps, "alpha": alpha, "eta": eta, "mix_step": mix_step}


def smoothmix_mnist(groups: dict[str, str]) -> Config:
    sigma, steps, eta = float(groups["sigma"]), int(groups["steps"]), float(groups["eta"])
    if float(groups["alpha"]) != 1.0 or int(groups["m"]) != 4 or eta not in SMOOTHMIX_MNIST.get((sigma, steps), ()):
        raise LeftOut("a setting outside EXPERIMENTS.MD's MNIST configurations (a single run of another η or T)")
    params = smoothmix_params(4, steps, 1.0, eta, int(groups["mix"]))
    return Config("mnist", "smoothmix", sigma, params, "lenet", seed=int(groups["run"]))


def smoothmix_cifar10(groups: dict[str, str]) -> Config:
    sigma = float(groups["sigma"])
    params = smoothmix_params(2, 4, SMOOTHMIX_CIFAR10_ALPHA[sigma], 5.0, 1 if groups["adv"] else 0)
    return Config("cifar10", "smoothmix", sigma, params, "cifar_resnet110")


# CAT-RS: EXPERIMENTS.MD's CIFAR-10 commands (ours and the baselines it trained), ImageNet command, and the one
# MNIST command it gives (σ = 0.25, in the corruption section). ε in 1/256 units.
def catrs_params(m: int, eps_256: float, steps: int, lam: float, **extra: Any) -> dict[str, Any]:
    """CAT-RS's hyperparameters: m noisy copies, ε of the noise attack, its T steps, weight λ."""
    return {"m": m, "eps": eps_256 / 256, "steps": steps, "lam": lam, **extra}


CATRS_CIFAR10_LAM = {0.25: 0.5, 0.5: 1.0, 1.0: 2.0}
CATRS_BASELINES = {  # (folder, σ) -> (method, params), EXPERIMENTS.MD's certification commands' checkpoints
    ("stab", 0.25): ("stability", {"lam": 2.0}),
    ("stab", 0.5): ("stability", {"lam": 2.0}),
    ("stab", 1.0): ("stability", {"lam": 1.0}),
    ("macer", 0.25): ("macer", {"m": 16, "lam": 12.0, "gamma": 8.0, "beta": 16.0, "deferred": False}),
    ("macer", 0.5): ("macer", {"m": 16, "lam": 4.0, "gamma": 8.0, "beta": 16.0, "deferred": False}),
    ("macer", 1.0): ("macer", {"m": 16, "lam": 12.0, "gamma": 8.0, "beta": 16.0, "deferred": True}),
    ("salman", 0.25): ("smoothadv", smoothadv("pgd", "256", "10", 4)),
    ("salman", 0.5): ("smoothadv", smoothadv("pgd", "256", "10", 8)),
    ("salman", 1.0): ("smoothadv", smoothadv("pgd", "512", "10", 2)),
    ("consistency", 0.25): ("consistency", {"m": 2, "lam": 20.0, "eta": 0.5}),
    ("consistency", 0.5): ("consistency", {"m": 2, "lam": 10.0, "eta": 0.5}),
    ("consistency", 1.0): ("consistency", {"m": 2, "lam": 10.0, "eta": 0.5}),
    ("smoothmix", 0.25): ("smoothmix", smoothmix_params(2, 4, 0.5, 5.0, 0)),
    ("smoothmix", 0.5): ("smoothmix", smoothmix_params(2, 4, 1.0, 5.0, 1)),
    ("cohen", 0.25): ("gaussian", {}),
    ("cohen", 0.5): ("gaussian", {}),
    ("cohen", 1.0): ("gaussian", {}),
}
CATRS_NOTES = {
    "macer": "λ from the checkpoint path of EXPERIMENTS.MD's certification command (its training command for "
    "σ = 0.5 says λ = 6); deferred: λ = 0 for the first 50 epochs at σ = 1.0"
}


def catrs_cifar10(groups: dict[str, str]) -> Config:
    sigma, folder = float(groups["sigma"]), groups["method"]
    if folder == "cat-rs":
        return Config("cifar10", "catrs", sigma, catrs_params(4, 256.0, 4, CATRS_CIFAR10_LAM[sigma]), "cifar_resnet110")
    method, params = CATRS_BASELINES[(folder, sigma)]
    return Config("cifar10", method, sigma, params, "cifar_resnet110", note=CATRS_NOTES.get(folder))


def catrs_mnist(groups: dict[str, str]) -> Config:
    sigma = float(groups["sigma"])
    if sigma == 0.25:  # EXPERIMENTS.MD's MNIST-C command: logs/mnist/catrs/adv_256.0_4/lbd_1.0/num_4/noise_0.25
        return Config("mnist", "catrs", sigma, catrs_params(4, 256.0, 4, 1.0), "lenet")
    note = "hyperparameters not stated in the repository (EXPERIMENTS.MD names MNIST's only at σ = 0.25)"
    return Config("mnist", "catrs", sigma, {}, "lenet", note=note)


def catrs_imagenet(groups: dict[str, str]) -> Config:
    params = catrs_params(2, 256.0, 1, 2.0, warmup=80, confidence_mask=True)
    note = (
        "EXPERIMENTS.MD's ImageNet command: 90 epochs (learning-rate step 30, extra drop at 85), the attack's ε "
        "doubled from epoch 80 (--warmup 80), confidence from the Gaussian reference (--confidence_mask)"
    )
    return Config("imagenet", "catrs", 1.0, params, "resnet50", note=note)


class LeftOut(Exception):  # noqa: N818 - a verdict, not a failure
    """Raised by a ``describe`` for a path its pattern admits but its paper does not report."""


# --- the sources --------------------------------------------------------------------------------------------------

COHEN = Paper(
    "cohen2019",
    "Jeremy Cohen, Elan Rosenfeld, J. Zico Kolter",
    "Certified Adversarial Robustness via Randomized Smoothing",
    "ICML",
    2019,
    "https://arxiv.org/abs/1902.02918",
)
SALMAN = Paper(
    "salman2019",
    "Hadi Salman, Greg Yang, Jerry Li, Pengchuan Zhang, Huan Zhang, Ilya Razenshteyn, Sébastien Bubeck",
    "Provably Robust Deep Learning via Adversarially Trained Smoothed Classifiers",
    "NeurIPS",
    2019,
    "https://arxiv.org/abs/1906.04584",
)
CONSISTENCY = Paper(
    "consistency2020",
    "Jongheon Jeong, Jinwoo Shin",
    "Consistency Regularization for Certified Robustness of Smoothed Classifiers",
    "NeurIPS",
    2020,
    "https://arxiv.org/abs/2006.04062",
)
SMOOTHMIX = Paper(
    "smoothmix2021",
    "Jongheon Jeong, Sejun Park, Minkyu Kim, Heung-Chang Lee, Doguk Kim, Jinwoo Shin",
    "SmoothMix: Training Confidence-calibrated Smoothed Classifiers for Certified Robustness",
    "NeurIPS",
    2021,
    "https://proceedings.neurips.cc/paper/2021/file/fd45ebc1e1d76bc1fe0ba933e60e9957-Paper.pdf",
)
CATRS = Paper(
    "catrs2023",
    "Jongheon Jeong, Seojin Kim, Jinwoo Shin",
    "Confidence-aware Training of Smoothed Classifiers for Certified Robustness",
    "AAAI",
    2023,
    "https://ojs.aaai.org/index.php/AAAI/article/view/25968",
)

SIGMA = r"(?P<sigma>[0-9.]+)"
CONSISTENCY_RULES = (
    Rule(r".*_acc", reason=PREDICT_LOG),
    Rule(
        r"data/certify/cifar10/salman/pgd_512.0_10_10/num_2/cifar_densenet40/noise_0.50_1149",
        reason="an interrupted certification (9 rows) of the run completed in noise_0.50_1149_o",
    ),
    Rule(r"data/certify/(?P<dataset>mnist|cifar10|imagenet)/(?P<rest>.+)", consistency_layout),
)
SOURCES: tuple[Source, ...] = (
    Source(
        COHEN,
        "locuslab/smoothing",
        "78a4d949e4f627d000a78908e001f8ca66c92943",
        ("data/certify",),
        (
            Rule(
                r"data/certify/(?P<dataset>cifar10|imagenet)/(?P<arch>resnet110|resnet50)/noise_(?P<train>[0-9.]+)/"
                rf"(?P<split>test|train)/sigma_{SIGMA}",
                cohen_layout,
            ),
        ),
    ),
    Source(
        SALMAN,
        "Hadisalman/smoothing-adversarial",
        "cff781d53ed5fa7df6ba567d3b51df202b6ec14e",
        ("data/certify/best_models",),
        (
            Rule(r".*/stdout\.txt", reason="console output of the run, not a log"),
            Rule(
                r"data/certify/best_models/(?P<dataset>cifar10)/cohen/(?P<arch>resnet110)/noise_(?P<sigma>[0-9.]+)/"
                r"test/sigma_(?P=sigma)",
                salman_gaussian,
            ),
            Rule(
                r"data/certify/best_models/(?P<dataset>imagenet)/replication/(?P<arch>resnet50)/noise_"
                r"(?P<sigma>[0-9.]+)/test/sigma_(?P=sigma)",
                salman_gaussian,
            ),
            Rule(
                r"data/certify/best_models/cifar10/ours/cifar10/(?P<model>"
                + "|".join(map(re.escape, SALMAN_CIFAR10_TABLE))
                + r")/test/sigma_[0-9.]+",
                salman_layout,
            ),
            Rule(
                r"data/certify/best_models/imagenet/(?P<model>"
                + "|".join(map(re.escape, SALMAN_IMAGENET_TABLE))
                + r")/test/sigma_[0-9.]+",
                salman_layout,
            ),
            Rule(r"data/certify/best_models/imagenet/PGD_1step/eps_2048/.*", reason="empty (header only)"),
            Rule(
                r"data/certify/best_models/(cifar10/ours|imagenet)/.*",
                reason="not among the models of the paper's Tables 1-2 (analysis/radii_to_best_models/*_ours)",
            ),
            Rule(
                r"data/certify/best_models/cifar10/ours_(pretraining|selftraining|pretraining_selftraining)/.*",
                reason="extra data (ImageNet-32 pre-training and/or 500K unlabelled images): not the no-extra-data "
                "track, and SmoothAdv's hyperparameters cannot tell these models apart",
            ),
        ),
    ),
    Source(
        CONSISTENCY,
        "jh-jeong/smoothing-consistency",
        "a11954aa91adb9924eecf49aaca74051e79bbb86",
        ("data/certify",),
        CONSISTENCY_RULES,
    ),
    Source(
        SMOOTHMIX,
        "jh-jeong/smoothmix",
        "cb1fd33055a29d0c41bbc429a982fdec709e993c",
        ("data/certify",),
        (
            Rule(
                rf"data/certify/mnist/smoothmix/smix_(?P<alpha>[0-9.]+)_(?P<steps>\d+)_m(?P<mix>[01])/"
                rf"tau_(?P<eta>[0-9.]+)/num_(?P<m>\d+)/(?P<run>\d+)/noise_{SIGMA}",
                smoothmix_mnist,
            ),
            Rule(rf"data/certify/cifar10/smoothmix/noise_{SIGMA}(?P<adv>_adv)?", smoothmix_cifar10),
            Rule(r"data/certify/ablation/.*", reason="the ablation study's grid (MNIST, σ = 1.0), not a reported row"),
            *CONSISTENCY_RULES,  # the baselines: the consistency paper's own logs
        ),
    ),
    Source(
        CATRS,
        "alinlab/smoothing-catrs",
        "d4bc576e7d373d158f087ba5744af8bb48466bb7",
        ("data",),
        (
            Rule(r".*/log\.txt", reason="a training log"),
            Rule(r".*_acc", reason=PREDICT_LOG),
            Rule(r"data/(cifar100|cifar10c|fmnist|mnistc)/.*", reason=NO_PLUGIN),
            Rule(rf"data/mnist/noise_{SIGMA}/noise_(?P=sigma)\.tsv", catrs_mnist),
            Rule(rf"data/cifar10/noise_{SIGMA}/(?P<method>[a-z-]+)/noise_(?P=sigma)\.tsv", catrs_cifar10),
            Rule(r"data/imagenet/noise_1\.0\.tsv", catrs_imagenet),
        ),
    ),
)

# Published logs that no repository holds (named in the accounting, not imported).
NOT_RELEASED = {
    "RuntianZ/macer@1b6837fd51cc814531a5385613c614bad85c7dab": "MACER (Zhai et al., ICLR 2020) released code, "
    "checkpoints and figures but no per-example logs; its MNIST and CIFAR-10 rows here are the logs the "
    "consistency paper (ResNet-20/DenseNet-40, LeNet) and CAT-RS (ResNet-110) published."
}


# --- reading the repositories -------------------------------------------------------------------------------------


def git(git_dir: Path, *args: str) -> bytes:
    result = subprocess.run(["git", "--git-dir", str(git_dir), *args], capture_output=True)
    if result.returncode != 0:
        raise RsbenchError(f"git {' '.join(args)} failed in {git_dir}: {result.stderr.decode().strip()}")
    return result.stdout


def git_dir_of(path: Path) -> Path:
    """The git directory of a clone: ``path/.git``, ``path/repo/.git``, ``path/repo`` or ``path`` itself."""
    for candidate in (path / ".git", path / "repo" / ".git", path / "repo", path):
        if (candidate / "HEAD").is_file() and (candidate / "objects").is_dir():
            return candidate
    raise RsbenchError(f"{path} is not a git repository", "clone it: git clone --bare https://github.com/OWNER/NAME")


def classify(source: Source, path: str) -> Config | str:
    """The configuration of the log at ``path``, or why it is left out."""
    for rule in source.rules:
        match = re.fullmatch(rule.pattern, path)
        if match is None:
            continue
        if rule.describe is None:
            return rule.reason
        try:
            return rule.describe(match.groupdict())
        except LeftOut as verdict:
            return str(verdict)
    raise RsbenchError(f"{source.repo}: no rule names {path}", "add one to SOURCES (import it or say why not)")


def collect(sources: tuple[Source, ...], git_dirs: dict[str, Path]) -> tuple[list[Log], list[dict[str, Any]]]:
    """Every file under the sources' folders: the logs to import (first publication of each distinct file, in
    source order) and the accounting rows of all files."""
    logs: dict[str, Log] = {}
    accounting = []
    for source in sources:
        git_dir = git_dirs[source.repo]
        git(git_dir, "cat-file", "-e", f"{source.commit}^{{commit}}")
        listing = git(git_dir, "ls-tree", "-r", source.commit, "--", *source.folders).decode()
        for line in listing.splitlines():
            meta, path = line.split("\t", 1)
            blob = meta.split()[2]
            verdict = classify(source, path)
            row = {"repo": source.repo, "path": path, "rows": None}
            if isinstance(verdict, str):
                accounting.append({**row, "status": "left out", "reason": verdict})
                continue
            sha256 = hashlib.sha256(git(git_dir, "cat-file", "blob", blob)).hexdigest()
            first = logs.get(sha256)
            if first is not None:
                where = f"{first.source.repo}:{first.path}"
                accounting.append({**row, "status": "duplicate", "reason": f"byte-identical to {where}"})
                continue
            logs[sha256] = Log(source, path, blob, sha256, verdict)
            imported = {"status": "imported", "reason": verdict.note or "", "sha256": sha256}
            accounting.append({**row, **imported, "index_order": verdict.index_order})
    return list(logs.values()), accounting


def index_selection(indices: list[int]) -> dict[str, Any]:
    """``{"skip": K, "limit": COUNT}`` when ``indices`` are 0, K, 2K, ...; else the list itself."""
    if len(indices) > 1 and indices[0] == 0:
        step = indices[1]
        if step > 0 and indices == list(range(0, step * len(indices), step)):
            return {"skip": step, "limit": len(indices)}
    if indices == [0]:
        return {"skip": 1, "limit": 1}
    return {"list": indices}


@dataclasses.dataclass(frozen=True)
class IndexMap:
    """From a log's index order to the dataset plugin's: ``index[i]`` is where the log's index ``i`` sits, and
    ``label[i]`` the class of that example, which the log's label must equal."""

    order: str
    index: list[int]
    label: list[int]
    source: FileSource


SYNSET = re.compile(r"n\d{8}")


def parse_synsets(data: bytes, where: str) -> list[str]:
    """The synsets of a file of one WordNet id a line (``n01751748``)."""
    synsets = data.decode("ascii", errors="replace").splitlines()
    bad = next((k for k, synset in enumerate(synsets, 1) if not SYNSET.fullmatch(synset)), None)
    if not synsets or bad is not None:
        raise RsbenchError(f"{where}: line {bad or 1} is not a WordNet id (nNNNNNNNN)")
    return synsets


def class_folder_order(synsets: list[str]) -> tuple[list[int], list[int]]:
    """For files listed in name order with these synsets: each file's index in class-folder order (torchvision's
    ImageFolder: classes are the sorted synsets, files sorted by name within each class) and its class."""
    classes = {synset: c for c, synset in enumerate(sorted(set(synsets)))}
    counts = collections.Counter(synsets)
    start, first = {}, 0
    for synset in sorted(classes):
        start[synset], first = first, first + counts[synset]
    seen: collections.Counter[str] = collections.Counter()
    index = []
    for synset in synsets:
        index.append(start[synset] + seen[synset])
        seen[synset] += 1
    return index, [classes[synset] for synset in synsets]


def imagenet_file_order_map(data: bytes, where: str) -> IndexMap:
    """The map of ILSVRC2012 validation files' name order to class-folder order, from the bytes of the file
    ``IMAGENET_VAL_SYNSETS`` names (refused unless they are those bytes)."""
    digest = hashlib.sha256(data).hexdigest()
    if digest != IMAGENET_VAL_SYNSETS.sha256:
        raise RsbenchError(
            f"{where} is not {IMAGENET_VAL_SYNSETS.url}: SHA-256 {digest}, not {IMAGENET_VAL_SYNSETS.sha256}"
        )
    index, label = class_folder_order(parse_synsets(data, where))
    return IndexMap(IMAGENET_FILE_ORDER, index, label, IMAGENET_VAL_SYNSETS)


def map_rows(rows: pd.DataFrame, index_map: IndexMap, where: str) -> pd.DataFrame:
    """The rows with their indices in the dataset plugin's order, after checking that every row's label is the
    class the map gives its example; a row outside the map or a label that disagrees refuses the log."""
    idx = rows.idx.to_numpy()
    if (idx >= len(index_map.index)).any():
        raise RsbenchError(f"{where}: index {idx.max()} is beyond the {len(index_map.index)} examples of the map")
    expected = np.asarray(index_map.label)[idx]
    wrong = np.flatnonzero(expected != rows.label.to_numpy())
    if len(wrong):
        first = wrong[0]
        raise RsbenchError(
            f"{where}: {len(wrong)} of {len(rows)} rows have a label other than the class of their example under "
            f"{index_map.source.url} (idx {idx[first]}: label {rows.label.iloc[first]}, map {expected[first]})",
            "the map does not fit this log: leave it unmapped",
        )
    return rows.assign(idx=np.asarray(index_map.index)[idx])


def import_log(
    store: Store, log: Log, git_dir: Path, also: list[str], index_maps: dict[str, IndexMap] | None = None
) -> tuple[int, int]:
    """Import one log as a complete run carrying its paper and source; returns (run id, rows). A log whose indices
    follow another order is mapped with ``index_maps[order]``."""
    config, source, paper = log.config, log.source, log.source.paper
    with tempfile.TemporaryDirectory() as folder:
        file = Path(folder) / "log.tsv"
        file.write_bytes(git(git_dir, "cat-file", "blob", log.blob))
        rows = read_tsv(file)
    mapped = None
    if config.index_order is not None:
        index_map = (index_maps or {}).get(config.index_order)
        if index_map is None:
            raise RsbenchError(f"{log.path}: its indices follow the {config.index_order} order, and no map was given")
        rows = map_rows(rows, index_map, log.path)
        mapped = {
            "from": INDEX_ORDERS[config.index_order],
            "to": "the class-folder order of rsbench's imagenet dataset (sorted synsets, files by name within each)",
            "map": {**dataclasses.asdict(index_map.source), "url": index_map.source.url},
            "rule": "file k (0-based, name order) -> (files of the synsets sorted before its own) + (files of its "
            "synset before it)",
            "labels_checked": len(rows),
            "labels_disagreeing": 0,
        }
    check_protocol(config.sigma, N0, N, config.alpha, config.seed)
    registered = config.method in get_manager().registries["method"].names()
    # a registered method's hyperparameters are checked and completed by its plugin; a new one's are kept as given
    raw = config.params if registered else {key: json.dumps(value) for key, value in config.params.items()}
    params = typed_params(config.method, raw, new_method=not registered)
    check_rows(rows, log.path, get_dataset(config.dataset).num_classes, config.sigma, N, config.alpha)
    train_sigma = config.sigma if config.train_sigma is None else config.train_sigma
    protocol = CertificationProtocol(
        kind="certify", dataset=config.dataset, split=config.split, sigma=config.sigma, train_sigma=train_sigma,
        certifier="cohen", certifier_params={}, n0=N0, n=N, alpha=config.alpha, source_sha256=log.sha256,
    )  # fmt: skip
    model_info = {
        "paper": f"{paper.authors}: {paper.title}. {paper.venue} {paper.year}",
        "authors": paper.authors,
        "title": paper.title,
        "venue": paper.venue,
        "year": paper.year,
        "paper_url": paper.url,
        "code_url": source.code_url,
        "extra_data": False,
    }
    origin = {
        "repo": source.repo,
        "commit": source.commit,
        "path": log.path,
        "url": f"https://github.com/{source.repo}/blob/{source.commit}/{log.path}",
        "sha256": log.sha256,
        "also_published": also,
        "index_order": None,
        "index_map": mapped,
        "note": config.note,
    }
    description = RunDescription(
        origin="imported", method=config.method, params=params, arch=config.arch, seed=config.seed,
        provenance={**provenance(), "model_info": model_info, "source": origin},
    )  # fmt: skip
    rows = rows.assign(n_a=None, p_a_lower=None, n=N, n0=N0, alpha=config.alpha, draws=N0 + N, radius_kind="exact")
    indices = sorted(int(i) for i in rows.idx)
    selection = {"selections": [index_selection(indices)], "planned": indices}
    run_id = store.import_run(protocol, description, [frame_rows(rows)], selection, merge=False)[0]
    return run_id, len(indices)


INDEX_ORDERS = {
    IMAGENET_FILE_ORDER: "the log's idx: ILSVRC2012 validation files in name order, index k is "
    "ILSVRC2012_val_{k+1:08d}.JPEG"
}


def record_name(paper_key: str, run: CertificationRun) -> str:
    params = hashlib.sha256(json.dumps(run.params, sort_keys=True).encode()).hexdigest()[:8]
    seed = "none" if run.seed is None else int(run.seed)
    return (
        f"{paper_key}-{run.method}-{run.arch}-{params}-sigma{run.sigma:.2f}-seed{seed}-{run.protocol_key[:8]}.json.gz"
    )


def summary(accounting: list[dict[str, Any]]) -> str:
    """The accounting as markdown: per source the commit, imported files and rows, every file left out, and the
    logs whose indices were mapped to the dataset's order."""
    lines = ["# Published certification logs", "", "Generated by `leaderboards/import_published_logs.py`.", ""]
    lines += ["| source | commit | imported logs | rows | duplicates | left out |", "|---|---|---|---|---|---|"]
    by_repo = collections.defaultdict(list)
    for row in accounting:
        by_repo[row["repo"]].append(row)
    commits = {source.repo: source.commit for source in SOURCES}
    for repo, rows in by_repo.items():
        imported = [r for r in rows if r["status"] == "imported"]
        counts = collections.Counter(r["status"] for r in rows)
        total = sum(r["rows"] or 0 for r in imported)
        lines.append(
            f"| [{repo}](https://github.com/{repo}) | `{commits[repo][:12]}` | {len(imported)} | {total:,} | "
            f"{counts['duplicate']} | {counts['left out']} |"
        )
    for key, text in NOT_RELEASED.items():
        lines.append(f"| {key.split('@')[0]} | `{key.split('@')[1][:12]}` | 0 | 0 | 0 | {text} |")
    lines += ["", "## Left out, by reason", ""]
    reasons = collections.defaultdict(list)
    for row in accounting:
        if row["status"] == "left out":
            reasons[(row["repo"], row["reason"])].append(row["path"])
    for (repo, reason), paths in reasons.items():
        lines.append(f"- {repo}, {len(paths)} files: {reason} (e.g. `{paths[0]}`)")
    mapped = collections.defaultdict(list)
    for row in accounting:
        if row.get("index_order"):
            mapped[(row["repo"], row["index_order"])].append(row)
    if mapped:
        lines += ["", "## Indices mapped to the dataset's order", ""]
    for (repo, order), rows in mapped.items():
        checked = sum(r["rows"] or 0 for r in rows)
        lines.append(
            f"- {repo}, {len(rows)} logs, {checked:,} rows: {INDEX_ORDERS[order]}; mapped to class-folder order with "
            f"[{IMAGENET_VAL_SYNSETS.repo}@{IMAGENET_VAL_SYNSETS.commit[:12]}:{IMAGENET_VAL_SYNSETS.path}]"
            f"({IMAGENET_VAL_SYNSETS.url}) (SHA-256 `{IMAGENET_VAL_SYNSETS.sha256[:12]}…`), every row's label "
            "checked against the class of its file's synset: all agree"
        )
    lines += ["", "## Duplicates", ""]
    for row in accounting:
        if row["status"] == "duplicate":
            lines.append(f"- {row['repo']}:`{row['path']}`: {row['reason']}")
    return "\n".join(lines) + "\n"


def val_synsets(args: argparse.Namespace, given: dict[str, str]) -> tuple[bytes, str]:
    """The bytes of ``IMAGENET_VAL_SYNSETS`` and where they were read: the file given, else the clone's blob."""
    if args.imagenet_val_synsets:
        return args.imagenet_val_synsets.read_bytes(), str(args.imagenet_val_synsets)
    repo, commit, path = IMAGENET_VAL_SYNSETS.repo, IMAGENET_VAL_SYNSETS.commit, IMAGENET_VAL_SYNSETS.path
    if repo in given:
        clone = Path(given[repo])
    elif args.mirrors:
        clone = args.mirrors / repo.replace("/", "+")
    else:
        raise RsbenchError(
            f"no clone of {repo}", "give --mirrors FOLDER, --repo OWNER/NAME=PATH or --imagenet-val-synsets"
        )
    return git(git_dir_of(clone), "show", f"{commit}:{path}"), f"{repo}@{commit[:12]}:{path}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mirrors", type=Path, help="folder of clones named OWNER+NAME")
    parser.add_argument("--repo", action="append", default=[], help="OWNER/NAME=PATH of one clone")
    parser.add_argument("--db", required=True, help="results store to import into (a fresh one)")
    parser.add_argument("--records", type=Path, help="write one run record per imported log under RECORDS/DATASET/")
    parser.add_argument("--summary", type=Path, help="write the accounting of every file as markdown")
    parser.add_argument(
        "--imagenet-val-synsets",
        type=Path,
        help=f"a copy of {IMAGENET_VAL_SYNSETS.repo}:{IMAGENET_VAL_SYNSETS.path} at {IMAGENET_VAL_SYNSETS.commit[:12]}"
        " (else read from its clone)",
    )
    args = parser.parse_args()
    given = dict(item.split("=", 1) for item in args.repo)
    try:
        git_dirs = {}
        for source in SOURCES:
            if source.repo in given:
                git_dirs[source.repo] = git_dir_of(Path(given[source.repo]))
            elif args.mirrors:
                git_dirs[source.repo] = git_dir_of(args.mirrors / source.repo.replace("/", "+"))
            else:
                raise RsbenchError(f"no clone of {source.repo}", "give --mirrors FOLDER or --repo OWNER/NAME=PATH")
        logs, accounting = collect(SOURCES, git_dirs)
        index_maps = {}
        if any(log.config.index_order == IMAGENET_FILE_ORDER for log in logs):
            index_maps[IMAGENET_FILE_ORDER] = imagenet_file_order_map(*val_synsets(args, given))
        also = collections.defaultdict(list)
        first_of = {}
        for row in accounting:
            if row["status"] == "imported":
                first_of[row["sha256"]] = row
        for row in accounting:
            if row["status"] == "duplicate":
                target = row["reason"].removeprefix("byte-identical to ")
                also[target].append(f"{row['repo']}:{row['path']}")
        store = open_store(args.db)
        rows_of, mapped = {}, collections.Counter[str]()
        for log in logs:
            also_published = also[f"{log.source.repo}:{log.path}"]
            run_id, count = import_log(store, log, git_dirs[log.source.repo], also_published, index_maps)
            rows_of[log.sha256] = count
            if log.config.index_order is not None:
                mapped[log.config.index_order] += count
            if args.records:
                run = store.get_run(run_id)
                target = args.records / log.config.dataset / record_name(log.source.paper.key, run)
                target.parent.mkdir(parents=True, exist_ok=True)
                write_record(record_of(store, run_id), target)
                print(f"run {run_id}: {log.source.repo}:{log.path} -> {target} ({count} rows)")
        for row in accounting:
            if row["status"] == "imported":
                row["rows"] = rows_of[row["sha256"]]
        if args.summary:
            args.summary.write_text(summary(accounting))
    except RsbenchError as error:
        print(f"error: {error}", file=sys.stderr)
        sys.exit(2)
    counts = collections.Counter(row["status"] for row in accounting)
    print(", ".join(f"{count} {status}" for status, count in counts.items()))
    for order, count in mapped.items():
        print(f"{order}: {count} rows mapped to the dataset's order, every label agreeing with the map")


if __name__ == "__main__":
    main()
