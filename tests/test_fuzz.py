"""Fuzz and property-based tests: damaged checkpoints, Cohen TSV logs, config files and radius grids. Every
input either works, with the properties its format promises, or is one RsbenchError line."""

from __future__ import annotations

import dataclasses
import io
import math
import tempfile
import zipfile
from pathlib import Path
from urllib.parse import quote

import numpy as np
import pytest
import torch
import yaml
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from rsbench.checkpoint import classifier_from_checkpoint, load_checkpoint
from rsbench.config import TrainConfig, parse_radii, train_config
from rsbench.errors import RsbenchError
from rsbench.nets import build_classifier
from rsbench.plugins import get_dataset
from rsbench.results.cohen_tsv import export_tsv, import_tsv, read_tsv
from rsbench.store import open_store
from rsbench.training import resolve

HEADER = "idx\tlabel\tpredict\tradius\tcorrect\ttime\n"
FUZZ = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])


def one_line(error: RsbenchError) -> None:
    assert "\n" not in str(error)


# ------------------------------------------------------------------------------------------ checkpoints


def checkpoint_bytes() -> bytes:
    """A small rsbench LeNet checkpoint in torch's zip format."""
    classifier = build_classifier("lenet", get_dataset("mnist"))
    buffer = io.BytesIO()
    torch.save(
        {
            "epoch": 1,
            "arch": "lenet",
            "state_dict": classifier.state_dict(),
            "optimizer": None,
            "rsbench": {
                "dataset": "mnist",
                "method": "gaussian",
                "params": {},
                "sigma": 0.25,
                "seed": 0,
                "normalization": {"kind": "none", "mean": [], "std": []},
            },
        },
        buffer,
    )
    return buffer.getvalue()


def structural_positions(data: bytes) -> list[int]:
    """Every byte of the zip's headers, of its pickle and of its central directory: where damage is parsed."""
    positions: set[int] = set()
    with zipfile.ZipFile(io.BytesIO(data)) as archive:
        for info in archive.infolist():
            start = info.header_offset
            data_start = start + 30 + len(info.filename) + len(info.extra)
            positions.update(range(start, data_start))
            if info.filename.endswith(".pkl"):
                positions.update(range(data_start, data_start + info.compress_size))
        directory = min(i.header_offset for i in archive.infolist()[-1:]) + 30
    positions.update(range(max(directory, len(data) - 2000), len(data)))
    return sorted(positions)


def corruptions(data: bytes) -> list[bytes]:
    """480 damaged copies: bytes flipped at structural and spread-out positions, and truncations."""
    rng = np.random.default_rng(0)
    structural = structural_positions(data)
    flips = list(rng.choice(structural, 300, replace=False)) + list(np.linspace(0, len(data) - 1, 80).astype(int))
    damaged = []
    for position in flips:
        copy = bytearray(data)
        copy[position] ^= int(rng.integers(1, 256))
        damaged.append(bytes(copy))
    damaged += [data[:length] for length in np.linspace(0, len(data) - 1, 100).astype(int)]
    return damaged


@pytest.fixture
def one_thread():
    """Tiny forward passes run fastest on one thread (several contend on a shared CPU)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def test_damaged_checkpoints_load_or_fail_in_one_line(tmp_path, one_thread):
    path = tmp_path / "checkpoint.pth.tar"
    outcomes = {"loaded": 0, "refused": 0}
    damaged = corruptions(checkpoint_bytes())
    assert len(damaged) == 480
    for content in damaged:
        path.write_bytes(content)
        try:
            classifier, meta = classifier_from_checkpoint(load_checkpoint(path))
        except RsbenchError as error:
            one_line(error)
            outcomes["refused"] += 1
            continue
        assert isinstance(classifier, torch.nn.Module) and meta["sigma"] > 0  # damage only in the weights
        outcomes["loaded"] += 1
    assert outcomes["refused"] > 200


# -------------------------------------------------------------------------------------------- TSV logs

TOKENS = st.sampled_from(
    [
        "0",
        "1",
        "7",
        "-1",
        "9",
        "10",
        "0.5",
        "1e30",
        "99999999999",
        "nan",
        "inf",
        "-inf",
        "",
        " ",
        "abc",
        "0:00:01.5",
        "-0:00:01",
        "25:61:99",
        "1:2",
        "9" * 40,
        "0x10",
        "1.0",
        '"1"',
        "1e-320",
        "-0.0",
        "999999999:00:00",
    ]
)


@st.composite
def tsv_texts(draw) -> str:
    header = draw(
        st.sampled_from(
            [
                HEADER,
                HEADER.replace("time", "seconds"),
                "idx label predict\n",
                "idx\tlabel\tpredict\tradius\tcorrect\ttime\textra\n",
                "",
            ]
        )
    )
    rows = draw(st.lists(st.lists(TOKENS, min_size=0, max_size=8), max_size=6))
    noise = draw(st.text(max_size=20))
    return header + "".join("\t".join(row) + "\n" for row in rows) + draw(st.sampled_from(["", noise]))


def check_frame(rows) -> None:
    """What a parsed log promises (Cohen's format)."""
    assert len(rows) > 0 and rows.idx.is_unique and (rows.idx >= 0).all()
    assert rows.correct.isin([0, 1]).all() and (rows.correct == (rows.predict == rows.label)).all()
    assert np.isfinite(rows.radius).all() and (rows.radius >= 0).all()
    assert np.isfinite(rows.seconds).all() and (rows.seconds >= 0).all()


@FUZZ
@given(text=tsv_texts())
@example(text=HEADER + "0\t1\t1\t0.5\t1\t-0:00:01\n")
def test_any_tsv_parses_to_a_valid_log_or_one_line(text):
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "log.tsv"
        path.write_text(text)
        try:
            rows = read_tsv(path)
        except RsbenchError as error:
            one_line(error)
            return
    check_frame(rows)


@FUZZ
@given(data=st.binary(max_size=200))
@example(data=b"3\t1\t1\t0.5\t1\t-2.5\n")
def test_any_bytes_parse_or_fail_in_one_line(data):
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "log.tsv"
        path.write_bytes(HEADER.encode() + data)
        try:
            check_frame(read_tsv(path))
        except RsbenchError as error:
            one_line(error)


ROW = st.tuples(
    st.integers(0, 12),
    st.booleans(),
    st.floats(0, 0.95, allow_subnormal=False),
    st.floats(-5, 1e5, allow_subnormal=False),
)


@settings(max_examples=30, deadline=None)
@given(rows=st.dictionaries(st.integers(0, 2**31 - 1), ROW, min_size=1, max_size=30))
@example(rows={0: (10, False, 0.5, 0.1)})
def test_logs_import_exactly_when_mnist_could_give_them_and_export_unchanged(rows):
    """A log of MNIST classes (0-9) and times >= 0 is imported and exported equivalent (full precision);
    any other is refused in one line."""
    lines = []
    for idx, (label, abstain, radius, seconds) in rows.items():
        predict = -1 if abstain else label
        lines.append(f"{idx}\t{label}\t{predict}\t{0.0 if abstain else radius!r}\t{int(not abstain)}\t{seconds!r}\n")
    possible = all(label < 10 and seconds >= 0 for label, _, _, seconds in rows.values())
    with tempfile.TemporaryDirectory() as folder:
        log, out = Path(folder) / "log.tsv", Path(folder) / "out.tsv"
        log.write_text(HEADER + "".join(lines))
        store = open_store(str(Path(folder) / "s.db"))
        try:
            export_tsv(store, import_tsv(store, log, dataset="mnist", method="gaussian", sigma=0.25), out)
        except RsbenchError as error:
            one_line(error)
            assert not possible
            return
        finally:
            store.engine.dispose()
        assert possible
        original, again = read_tsv(log), read_tsv(out)
    original = original.sort_values("idx").reset_index(drop=True)
    assert original[["idx", "label", "predict", "radius", "correct"]].equals(
        again[["idx", "label", "predict", "radius", "correct"]]
    )
    assert np.allclose(original.seconds, again.seconds, rtol=0, atol=1e-6)  # H:MM:SS.ffffff: microseconds


PROTOCOL_NUMBERS = st.one_of(
    st.floats(allow_nan=True, allow_infinity=True),
    st.integers(-5, 10**12),
    st.floats(0, 1),
    st.sampled_from([0.001, 100, 100_000]),
)


@settings(max_examples=60, deadline=None)
@given(
    sigma=PROTOCOL_NUMBERS,
    n=PROTOCOL_NUMBERS,
    n0=PROTOCOL_NUMBERS,
    alpha=PROTOCOL_NUMBERS,
    seed=st.one_of(st.none(), st.integers(-(2**70), 2**70)),
)
@example(sigma=math.inf, n=100_000, n0=100, alpha=0.001, seed=None)
@example(sigma=0.5, n=100_000, n0=100, alpha=0.001, seed=2**40)
def test_import_protocol_is_valid_or_one_line(sigma, n, n0, alpha, seed):
    with tempfile.TemporaryDirectory() as folder:
        log = Path(folder) / "log.tsv"
        log.write_text(HEADER + "0\t1\t1\t0.01\t1\t0.1\n")
        store = open_store(str(Path(folder) / "s.db"))
        try:
            run_id = import_tsv(
                store, log, dataset="mnist", method="gaussian", sigma=sigma, n=n, n0=n0, alpha=alpha, seed=seed
            )
        except RsbenchError as error:
            one_line(error)
            store.engine.dispose()
            return
        run = store.get_run(run_id)
        store.engine.dispose()
    assert math.isfinite(run.sigma) and run.sigma > 0 and 0 < run.alpha < 1 and run.n >= 1 and run.n0 >= 1
    assert seed is None or 0 <= run.seed < 2**32


# ------------------------------------------------------------------------------------------ config files

SETTING_NAMES = [f.name for f in dataclasses.fields(TrainConfig)] + ["sigmma", "lr_"]
SCALARS = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-(2**70), 2**70),
    st.floats(),
    st.text(max_size=8),
    st.sampled_from(["mnist", "cifar10", "lenet", "gaussian", "consistency", "0.5"]),
)
VALUES = st.recursive(
    SCALARS,
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=5) | st.integers(0, 3), inner, max_size=3)
    ),
    max_leaves=6,
)
BASE = {"dataset": "mnist", "sigma": 0.5}  # present unless a drawn setting replaces them


@st.composite
def config_files(draw) -> str:
    """YAML mappings of settings: known names and typos, any values, some non-string keys (YAML allows them)."""
    keys = st.sampled_from(SETTING_NAMES) | st.text(max_size=6) | st.integers(0, 3)
    drawn = draw(st.dictionaries(keys, VALUES, max_size=5))
    params = draw(st.one_of(st.none(), st.dictionaries(st.sampled_from(["lam", "m", "eta", 1]), VALUES, max_size=2)))
    return yaml.safe_dump({**BASE, **drawn, **({"params": params} if params is not None else {})})


@FUZZ
@given(text=config_files())
@example(text="dataset: mnist\nsigma: 0.5\n1: 2\n")
@example(text="dataset: mnist\nsigma: 0.5\nparams: {1: 2}\n")
@example(text="dataset: mnist\nsigma: 0.5\nseed: 100000000000000000000\n")
def test_any_config_file_gives_a_valid_config_or_one_line(text):
    """Loaded (read_config_file + train_config) and validated (training.resolve), or one RsbenchError line."""
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "run.yaml"
        path.write_text(text)
        try:
            config = train_config(None, path, {})
            resolve(config)
        except RsbenchError as error:
            one_line(error)
            return
    assert isinstance(config, TrainConfig) and math.isfinite(config.sigma) and config.sigma > 0
    assert isinstance(config.seed, int) and 0 <= config.seed < 2**32  # torch's generators, a 64-bit column


# -------------------------------------------------------------------------------------------- radii


RADIUS_TEXT = st.one_of(
    st.text(max_size=30),
    st.lists(
        st.sampled_from(["0", "1", "-1", "0.25", "1e300", "1e-300", "nan", "inf", ":", ",", " ", "2.5", "1e-9", "3"]),
        max_size=7,
    ).map("".join),
)
# start:stop:step as a person writes it (decimals), stop = start + (count - 1) * step
GRID = st.tuples(st.decimals(0, 5, places=2), st.decimals("0.01", 1, places=2), st.integers(1, 60))


@FUZZ
@given(text=RADIUS_TEXT, grid=GRID)
@example(text="0:1e300:1e-300", grid=(0, 1, 1))
@example(text="0:1:1e-320", grid=(0, 1, 1))
def test_radius_grids_are_valid_and_whole_or_one_line(text, grid):
    """Any text: sorted distinct finite radii >= 0 (1 to 1,000) or one line; a grid: every point of it."""
    try:
        radii = parse_radii(text)
    except RsbenchError as error:
        one_line(error)
    else:
        assert radii == () if not text.strip() else 1 <= len(radii) <= 1000 and list(radii) == sorted(set(radii))
        assert all(math.isfinite(r) and r >= 0 for r in radii)
    start, step, count = grid
    radii = parse_radii(f"{start}:{start + (count - 1) * step}:{step}")
    assert len(radii) == count and np.allclose(radii, [float(start + i * step) for i in range(count)], atol=1e-9)


# ---------------------------------------------------------------------------------------------- store URLs


def store_error(url: str) -> str:
    with pytest.raises(RsbenchError) as error:
        open_store(url)
    one_line(error.value)
    return str(error.value)


@settings(max_examples=40, deadline=None)
@given(
    password=st.text(min_size=1, max_size=20),
    user=st.from_regex(r"[a-z]{1,8}", fullmatch=True),
    scheme=st.sampled_from(["mysql", "postgresql+pg8000", "oracle", "nosuchdb"]),
    query=st.sampled_from(["", "?charset=utf8", "?password=PW"]),
)
def test_store_errors_read_the_same_whatever_the_password(password, user, scheme, query):
    """An error about a store never depends on its password (in the URL's user part or its query)."""
    url = f"{scheme}://{user}:{quote(password, safe='')}@db.example/runs{query}"
    reference = f"{scheme}://{user}:XXXX@db.example/runs{query}"
    assert store_error(url.replace("PW", quote(password, safe=""))) == store_error(reference.replace("PW", "XXXX"))
