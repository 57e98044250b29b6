"""The published-log importer (leaderboards/import_published_logs.py): how it reads paths of the official
repositories, and the committed run records it wrote."""

from __future__ import annotations

import gzip
import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from scipy.stats import norm

from rsbench.errors import RsbenchError
from rsbench.results.records import record_of
from rsbench.store import open_store

ROOT = Path(__file__).resolve().parents[1]
SPEC = importlib.util.spec_from_file_location("import_published_logs", ROOT / "leaderboards/import_published_logs.py")
assert SPEC and SPEC.loader
published = importlib.util.module_from_spec(SPEC)
sys.modules[SPEC.name] = published  # dataclasses look their module up
SPEC.loader.exec_module(published)

SOURCES = {source.paper.key: source for source in published.SOURCES}
SPLIT_SIZE = {("mnist", "test"): 10_000, ("cifar10", "test"): 10_000, ("imagenet", "test"): 50_000}
SPLIT_SIZE[("imagenet", "train")] = 1_281_167
CLASSES = {"mnist": 10, "cifar10": 10, "imagenet": 1000}
FOLDERS = ("mnist", "cifar10", "imagenet")
RECORDS = sorted(p for d in FOLDERS for p in (ROOT / "leaderboards/records" / d).glob("*.gz"))
# one record per dataset and paper in the fast suite (parsing all 253 takes half a minute); all with -m slow
SAMPLE = list({(p.parent.name, p.name.split("-")[0]): p for p in RECORDS}.values())
ALL = [p if p in SAMPLE else pytest.param(p, marks=pytest.mark.slow) for p in RECORDS]


def config(key, path):
    verdict = published.classify(SOURCES[key], path)
    assert not isinstance(verdict, str), verdict
    return verdict


def left_out(key, path):
    verdict = published.classify(SOURCES[key], path)
    assert isinstance(verdict, str), verdict
    return verdict


def test_cohen_paths():
    c = config("cohen2019", "data/certify/cifar10/resnet110/noise_0.25/test/sigma_0.25")
    assert (c.dataset, c.method, c.arch, c.sigma, c.train_sigma, c.params, c.seed, c.split) == (
        "cifar10", "gaussian", "cifar_resnet110", 0.25, 0.25, {}, None, "test",
    )  # fmt: skip
    assert c.alpha == 0.01  # what its radii show, not the paper's 0.001
    assert config("cohen2019", "data/certify/cifar10/resnet110/noise_0.12/test/sigma_0.12").alpha == 0.001
    off = config("cohen2019", "data/certify/cifar10/resnet110/noise_1.00/test/sigma_0.50")
    assert (off.sigma, off.train_sigma, off.alpha) == (0.5, 1.0, 0.001)  # certified off its training σ
    i = config("cohen2019", "data/certify/imagenet/resnet50/noise_1.00/test/sigma_1.00")
    assert (i.dataset, i.arch, i.sigma, i.alpha, i.index_order) == ("imagenet", "resnet50", 1.0, 0.01, None)
    train = config("cohen2019", "data/certify/imagenet/resnet50/noise_0.50/train/sigma_0.50")
    assert (train.split, train.sigma) == ("train", 0.5)


def test_salman_paths():
    model = "PGD_2steps_multiNoiseSamples/8-multitrain/eps_255/cifar10/resnet110/noise_0.25"
    c = config("salman2019", f"data/certify/best_models/cifar10/ours/cifar10/{model}/test/sigma_0.25")
    assert (c.dataset, c.method, c.arch, c.sigma, c.split) == ("cifar10", "smoothadv", "cifar_resnet110", 0.25, "test")
    assert c.params == {"attack": "pgd", "eps": 255 / 256, "steps": 2, "m": 8, "warmup": 10}
    i = config("salman2019", "data/certify/best_models/imagenet/DDN_2steps/eps_127/resnet50/noise_0.25/test/sigma_0.25")
    assert i.params == {"attack": "ddn", "eps": 127 / 256, "steps": 2, "m": 1, "warmup": 10}
    assert (i.dataset, i.split, i.index_order) == ("imagenet", "test", "file-order")  # files' order, not classes'
    g = config("salman2019", "data/certify/best_models/cifar10/cohen/resnet110/noise_1.00/test/sigma_1.00")
    assert (g.method, g.sigma, g.split, g.index_order) == ("gaussian", 1.0, "test", None)
    unlisted = "DDN_10steps_multiNoiseSamples/4-multitrain/eps_64/cifar10/resnet110/noise_0.12"
    assert "Tables" in left_out(
        "salman2019", f"data/certify/best_models/cifar10/ours/cifar10/{unlisted}/test/sigma_0.12"
    )
    extra = "data/certify/best_models/cifar10/ours_selftraining/cifar10/self_training/PGD_2steps/weight_1.0/eps_64/x"
    assert "extra data" in left_out("salman2019", extra)
    assert "console" in left_out(
        "salman2019", "data/certify/best_models/cifar10/cohen/resnet110/noise_0.12/test/stdout.txt"
    )


def test_consistency_paths():
    c = config("consistency2020", "data/certify/mnist/consistency/cohen/num_2/lbd_5.0/eta_0.5/noise_0.50_3")
    assert (c.method, c.arch, c.sigma, c.seed, c.params) == (
        "consistency",
        "lenet",
        0.5,
        3,
        {"m": 2, "lam": 5.0, "eta": 0.5},
    )
    a = config(
        "consistency2020",
        "data/certify/cifar10/consistency/salman_255.0_10_10/num_4/lbd_2.0/eta_0.5/cifar_resnet110/noise_0.25",
    )
    assert (a.method, a.arch, a.seed) == ("smoothadv", "cifar_resnet110", None)
    assert a.params == {"attack": "pgd", "eps": 255 / 256, "steps": 10, "m": 4, "warmup": 10, "lam": 2.0, "eta": 0.5}
    m = config(
        "consistency2020", "data/certify/mnist/macer_deferred30/num_16/lbd_6.0/gamma_8.0/beta_16.0/noise_1.00_505"
    )
    assert (m.method, m.seed) == ("macer", 505)
    assert m.params == {"m": 16, "lam": 6.0, "gamma": 8.0, "beta": 16.0, "deferred": True}
    rerun = "data/certify/cifar10/salman/pgd_512.0_10_10/num_2/cifar_densenet40/noise_0.50_1149"
    assert config("consistency2020", rerun + "_o").seed == 1149
    assert "interrupted" in left_out("consistency2020", rerun)
    assert "prediction log" in left_out(
        "consistency2020", "data/certify/mnist/consistency/cohen/num_2/lbd_1.0/eta_0.5/noise_1.00_0_acc"
    )


def test_smoothmix_and_catrs_paths():
    s = config("smoothmix2021", "data/certify/mnist/smoothmix/smix_1.0_4_m1/tau_5.0/num_4/23/noise_0.5")
    assert (s.method, s.arch, s.sigma, s.seed) == ("smoothmix", "lenet", 0.5, 23)
    assert s.params == {"m": 4, "steps": 4, "alpha": 1.0, "eta": 5.0, "mix_step": 1}
    assert "EXPERIMENTS" in left_out(
        "smoothmix2021", "data/certify/mnist/smoothmix/smix_1.0_4_m0/tau_2.0/num_4/0/noise_0.5"
    )
    c = config("smoothmix2021", "data/certify/cifar10/smoothmix/noise_0.5_adv")
    assert (c.arch, c.params) == ("cifar_resnet110", {"m": 2, "steps": 4, "alpha": 1.0, "eta": 5.0, "mix_step": 1})
    assert config("smoothmix2021", "data/certify/cifar10/smoothmix/noise_0.25").params["mix_step"] == 0
    r = config("catrs2023", "data/cifar10/noise_1.0/cat-rs/noise_1.0.tsv")
    assert (r.method, r.sigma, r.params) == ("catrs", 1.0, {"m": 4, "eps": 1.0, "steps": 4, "lam": 2.0})
    macer = config("catrs2023", "data/cifar10/noise_0.5/macer/noise_0.5.tsv")
    assert (macer.method, macer.params["lam"], macer.params["deferred"]) == ("macer", 4.0, False)
    assert config("catrs2023", "data/mnist/noise_0.5/noise_0.5.tsv").params == {}  # not stated upstream
    assert "dataset plugin" in left_out("catrs2023", "data/cifar100/noise_0.25/cat-rs/noise_0.25.tsv")
    with pytest.raises(RsbenchError, match="no rule"):
        published.classify(SOURCES["catrs2023"], "data/svhn/noise_0.25.tsv")


def test_index_selection():
    assert published.index_selection(list(range(0, 10_000, 20))) == {"skip": 20, "limit": 500}
    assert published.index_selection(list(range(0, 42_700, 100))) == {"skip": 100, "limit": 427}
    assert published.index_selection(list(range(10_000))) == {"skip": 1, "limit": 10_000}
    assert published.index_selection([0, 20, 41]) == {"list": [0, 20, 41]}
    assert published.index_selection([5, 10]) == {"list": [5, 10]}


# 3 classes x 2 files, listed in file-name order and shuffled across classes; worked by hand: the sorted synsets are
# n01 (class 0), n02 (1), n03 (2), so class-folder order is n01's files 1, 3, then n02's 2, 5, then n03's 0, 4.
TINY_SYNSETS = ["n00000003", "n00000001", "n00000002", "n00000001", "n00000003", "n00000002"]


def test_class_folder_order_by_hand():
    index, label = published.class_folder_order(TINY_SYNSETS)
    assert index == [4, 0, 2, 1, 5, 3]
    assert label == [2, 0, 1, 0, 2, 1]
    uneven = published.class_folder_order(["n00000002", "n00000001", "n00000001", "n00000001"])
    assert uneven == ([3, 0, 1, 2], [1, 0, 0, 0])  # a class's start counts the files before it, not a fixed 50


def tiny_map():
    index, label = published.class_folder_order(TINY_SYNSETS)
    return published.IndexMap("file-order", index, label, published.IMAGENET_VAL_SYNSETS)


def test_map_rows_checks_every_label():
    log = pd.DataFrame({"idx": [0, 3, 5], "label": [2, 0, 1], "predict": [2, 1, 1], "radius": [0.5, 0.0, 0.2]})
    mapped = published.map_rows(log, tiny_map(), "log")
    assert mapped.idx.tolist() == [4, 1, 3]
    assert mapped.drop(columns="idx").equals(log.drop(columns="idx"))  # only the indices change
    with pytest.raises(RsbenchError, match="1 of 3 rows have a label other than"):
        published.map_rows(log.assign(label=[2, 1, 1]), tiny_map(), "log")  # file 3 is n01, class 0, not 1
    with pytest.raises(RsbenchError, match="beyond the 6 examples"):
        published.map_rows(log.assign(idx=[0, 3, 6]), tiny_map(), "log")


def test_imagenet_map_needs_the_pinned_file():
    with pytest.raises(RsbenchError, match="SHA-256"):
        published.imagenet_file_order_map("\n".join(TINY_SYNSETS).encode() + b"\n", "tiny")
    with pytest.raises(RsbenchError, match="line 2 is not a WordNet id"):
        published.parse_synsets(b"n01751748\nsea snake\n", "f")


VAL_SYNSETS = os.environ.get("RSBENCH_IMAGENET_VAL_SYNSETS")


@pytest.mark.skipif(
    not VAL_SYNSETS, reason="RSBENCH_IMAGENET_VAL_SYNSETS (a copy of tensorflow/models' validation synset labels) unset"
)
def test_imagenet_map_on_the_real_file():
    """The map of the pinned file: 1000 classes of 50 files; ILSVRC2012_val_00000001 is a sea snake (class 65)."""
    index_map = published.imagenet_file_order_map(Path(VAL_SYNSETS).read_bytes(), VAL_SYNSETS)
    assert sorted(index_map.index) == list(range(50_000))
    assert all(index // 50 == label for index, label in zip(index_map.index, index_map.label, strict=True))
    assert index_map.label[0] == 65 and index_map.index[0] == 65 * 50


def git(folder, *args):
    subprocess.run(["git", "-C", str(folder), *args], check=True, capture_output=True)


LOG = "idx\tlabel\tpredict\tradius\tcorrect\ttime\n0\t3\t3\t0.5\t1\t1.0\n2\t1\t-1\t0.0\t0\t1.0\n4\t2\t5\t0.1\t0\t1.0\n"


def test_import_from_a_repository(tmp_path):
    """Two sources, one publishing a byte-identical copy of the other's log: one run, its copy named, every
    file accounted for, the paper and source in the record."""
    repo = tmp_path / "repo"
    for path, text in {
        "data/certify/mnist/cohen/noise_0.50_7": LOG,
        "data/certify/mnist/cohen/noise_0.50_7_acc": "idx\tlabel\tpredict\tcorrect\ttime\n",
        "copy/mnist/cohen/noise_0.50_7": LOG,
    }.items():
        (repo / path).parent.mkdir(parents=True, exist_ok=True)
        (repo / path).write_text(text)
    git(tmp_path, "init", "-q", str(repo))
    git(repo, "add", ".")
    git(repo, "-c", "user.name=t", "-c", "user.email=t@t", "commit", "-q", "-m", "logs")
    commit = subprocess.run(
        ["git", "-C", str(repo), "rev-parse", "HEAD"], capture_output=True, text=True
    ).stdout.strip()
    first = published.Source(
        SOURCES["consistency2020"].paper, "a/first", commit, ("data/certify",), published.CONSISTENCY_RULES
    )
    later = published.Source(
        SOURCES["smoothmix2021"].paper, "b/later", commit, ("copy",),
        (published.Rule(r"copy/(?P<dataset>mnist)/(?P<rest>.+)", published.consistency_layout),),
    )  # fmt: skip
    git_dir = published.git_dir_of(repo)
    logs, accounting = published.collect((first, later), {"a/first": git_dir, "b/later": git_dir})
    assert [(r["repo"], r["status"]) for r in accounting] == [
        ("a/first", "imported"), ("a/first", "left out"), ("b/later", "duplicate"),
    ]  # fmt: skip
    store = open_store(str(tmp_path / "s.db"))
    run_id, rows = published.import_log(store, logs[0], git_dir, ["b/later:copy/mnist/cohen/noise_0.50_7"])
    document = record_of(store, run_id)
    assert rows == 3 and [r[0] for r in document["rows"]] == [0, 2, 4]
    assert document["run"]["indices"]["selections"] == [{"skip": 2, "limit": 3}]
    assert (document["run"]["method"], document["run"]["seed"], document["protocol"]["sigma"]) == ("gaussian", 7, 0.5)
    assert document["model_info"]["venue"] == "NeurIPS" and document["model_info"]["year"] == 2020
    assert document["model_info"]["code_url"] == f"https://github.com/a/first/tree/{commit}"
    source = document["provenance"]["source"]
    assert (source["repo"], source["commit"], source["path"]) == (
        "a/first",
        commit,
        "data/certify/mnist/cohen/noise_0.50_7",
    )
    assert source["also_published"] == ["b/later:copy/mnist/cohen/noise_0.50_7"]
    assert "imported_file" not in document["provenance"]  # no temporary path of the importing machine


@pytest.mark.parametrize("path", ALL, ids=lambda p: p.name[:60])
def test_committed_record(path):
    document = json.loads(gzip.decompress(path.read_bytes()))
    protocol, run = document["protocol"], document["run"]
    dataset, split = protocol["dataset"], protocol["split"]
    assert path.parent.name == dataset and document["provenance"]["source"]["index_order"] is None
    mapped = document["provenance"]["source"].get("index_map")
    if mapped is not None:  # Salman et al.'s ImageNet logs: file order mapped to class-folder order, labels checked
        assert mapped["map"]["sha256"] == published.IMAGENET_VAL_SYNSETS.sha256
        assert mapped["labels_checked"] == len(document["rows"]) and mapped["labels_disagreeing"] == 0
    columns = dict(
        zip(document["columns"], (np.array(column) for column in zip(*document["rows"], strict=True)), strict=True)
    )
    idx, label, predict = columns["idx"].astype(int), columns["label"].astype(int), columns["predict"].astype(int)
    radius, correct = columns["radius"].astype(float), columns["correct"].astype(int)
    assert len(set(idx)) == len(idx) and idx.min() >= 0 and idx.max() < SPLIT_SIZE[(dataset, split)]
    assert ((label >= 0) & (label < CLASSES[dataset])).all()
    assert ((predict >= -1) & (predict < CLASSES[dataset])).all()
    assert np.isin(correct, [0, 1]).all() and (correct == (predict == label)).all()
    assert (radius >= 0).all() and (radius[predict == -1] == 0).all()
    assert (
        protocol["train_sigma"] is not None and protocol["source_sha256"] == document["provenance"]["source"]["sha256"]
    )
    # CERTIFY's largest radius, when all N draws agree: σ·Φ⁻¹(α^(1/N)); logs print three significant digits
    largest = protocol["sigma"] * norm.ppf(protocol["alpha"] ** (1 / protocol["n"]))
    assert radius.max() <= largest * 1.005
    assert sorted(idx.tolist()) == run["indices"]["planned"] and run["num_planned"] == len(idx)
    (selection,) = run["indices"]["selections"]
    if "skip" in selection:
        assert sorted(idx.tolist()) == list(range(0, selection["skip"] * selection["limit"], selection["skip"]))
    else:
        assert selection["list"] == sorted(idx.tolist())
    info, source = document["model_info"], document["provenance"]["source"]
    paper_key = path.name.split("-")[0]
    assert paper_key.endswith(str(info["year"])) and info["paper_url"].startswith("https://")
    assert info["venue"] and info["authors"] and info["extra_data"] is False
    assert info["code_url"] == f"https://github.com/{source['repo']}/tree/{source['commit']}"
    assert len(source["commit"]) == 40 and len(source["sha256"]) == 64 and source["path"]
