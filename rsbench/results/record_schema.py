"""A run record is untrusted input: this module reads one in bounded memory and checks everything in it
before a store sees it (``rsbench import``) or a maintainer accepts it (``rsbench validate``).

- **Bounded reading.** The file is decompressed as a stream, never past ``RSBENCH_MAX_RECORD_BYTES``
  (default 2 GiB); the header (every key but ``rows``) is parsed event by event, refusing nesting deeper
  than :data:`MAX_DEPTH`; the rows are then streamed in batches of :data:`BATCH` (a second pass).
- **The header** is a typed model (pydantic, unknown keys refused): closed vocabularies (kind, split,
  origin, status, normalization; registered datasets and certifiers), names (methods, architectures,
  parameters, budgets) of letters, digits and ``_ - . +`` only, at most 64 characters, numbers in range
  (σ > 0 finite, 0 < α < 1, 1 ≤ N0, N < 2³¹, seeds below 2⁶³), timestamps that are times, http(s) links
  only, hashes of 64 hex digits, and the protocol key recomputed from the protocol's own fields. A budget
  label that names a budget (:mod:`rsbench.budgets`) must be kept by the certification: N0, N, α, the test
  split and exactly the budget's images (the training behind it a record cannot show).
- **Each row** against the protocol: index within the split and among the planned ones, once; label a
  class of the dataset, prediction a class or -1, ``correct`` = (prediction = label); radius finite, ≥ 0,
  at most σ·Φ⁻¹(α^{1/N}) (CERTIFY's largest) and 0 for a prediction; N, N0 and α those of the protocol;
  counts within N; p_A bounds in [0, 1]; draws and seconds finite and bounded. A record without rows, or
  whose rows do not cover its planned indices while it says ``complete``, is refused.
"""

from __future__ import annotations

import datetime
import gzip
import io
import math
import os
import zlib
from collections.abc import Iterator
from pathlib import Path
from typing import Annotated, Any, BinaryIO, Literal

import ijson
from pydantic import BaseModel, ConfigDict, Field, StringConstraints, ValidationError, field_validator

from rsbench import budgets
from rsbench.errors import RsbenchError
from rsbench.plugins import get_certifier, get_dataset
from rsbench.protocol import RADIUS_KINDS, CertificationProtocol
from rsbench.smoothing import max_certified_radius
from rsbench.store import RESULT_COLUMNS

FORMAT = "rsbench-run-record"
MAX_BYTES_VARIABLE = "RSBENCH_MAX_RECORD_BYTES"
DEFAULT_MAX_BYTES = 2 << 30
MAX_DEPTH = 32
BATCH = 5_000
INT32 = 2**31
INT64 = 2**63
MAX_SECONDS = 1e7  # per example: about 116 days
RADIUS_ROUNDING = 5e-3  # published logs print radii to 3 significant digits
V1_COLUMNS = [c for c in RESULT_COLUMNS if c != "p_a_lower"]

Name = Annotated[str, StringConstraints(pattern=r"^[A-Za-z0-9_.+-]{1,64}$")]
Hash = Annotated[str, StringConstraints(pattern=r"^[0-9a-f]{64}$")]
Text = Annotated[str, StringConstraints(max_length=1000, pattern=r"^[^\x00-\x1f\x7f-\x9f]*$")]
Url = Annotated[str, StringConstraints(max_length=500, pattern=r"^https?://[^\s\x00-\x1f\x7f-\x9f]+$")]
Seed = Annotated[int, Field(ge=0, lt=INT64, strict=True)]  # the store keeps signed 64-bit seeds
Count32 = Annotated[int, Field(ge=1, lt=INT32, strict=True)]
Index = Annotated[int, Field(ge=0, lt=INT32, strict=True)]
ParamValue = (
    Annotated[bool, Field(strict=True)]
    | Annotated[int, Field(strict=True, gt=-INT64, lt=INT64)]
    | Annotated[float, Field(strict=True, allow_inf_nan=False)]
    | Annotated[str, StringConstraints(pattern=r"^[A-Za-z0-9_.+\-/: ]{0,64}$")]
    | None
)
Params = Annotated[dict[Name, ParamValue], Field(max_length=64)]
Sigma = Annotated[float, Field(gt=0, le=1000, allow_inf_nan=False, strict=False)]
Radius = Annotated[float, Field(ge=0, le=1000, allow_inf_nan=False, strict=False)]


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)


class ModelInfo(Strict):
    paper: Text | None = None
    authors: Text | None = None
    title: Text | None = None
    paper_url: Url | None = None
    venue: Text | None = None
    year: Annotated[int, Field(ge=1900, le=2100, strict=True)] | None = None
    code_url: Url | None = None
    architecture: Name | None = None
    extra_data: bool | None = None
    checkpoint_sha256: Hash | None = None


class Protocol(Strict):
    protocol_key: Hash | None
    kind: Literal["certify", "predict"]
    dataset: Name
    split: Literal["train", "test"]
    sigma: Sigma
    train_sigma: Sigma | None
    certifier: Name
    certifier_params: Params
    n0: Count32 | None
    n: Count32
    alpha: Annotated[float, Field(gt=0, lt=1, strict=False)]
    radii: Annotated[
        list[Annotated[float, Field(ge=0, le=1000, allow_inf_nan=False, strict=False)]], Field(max_length=1000)
    ]
    noise_seed: Seed | None
    normalization: Literal["mean_std", "mean", "none"] | None
    budget: Annotated[str, StringConstraints(pattern=r"^[A-Za-z0-9_.+-]{1,32}$")] | None  # the store keeps 32
    checkpoint_sha256: Hash | None
    source_sha256: Hash | None

    @field_validator("dataset")
    @classmethod
    def registered_dataset(cls, name: str) -> str:
        get_dataset(name)
        return name

    @field_validator("certifier")
    @classmethod
    def registered_certifier(cls, name: str) -> str:
        get_certifier(name)
        return name


class Selection(Strict):
    model_config = ConfigDict(extra="forbid", strict=True, populate_by_name=True)
    skip: Count32 | None = None
    limit: Count32 | None = None
    indices: list[Index] | None = Field(None, alias="list")


class Indices(Strict):
    selections: Annotated[list[Selection], Field(max_length=1000)]
    planned: list[Index]


class Run(Strict):
    origin: Literal["rsbench", "imported"]
    method: Name
    params: Params
    arch: Name | None
    seed: Seed | None
    batch_size: Count32 | None
    experiment: Name | None
    checkpoint_path: Text | None
    created_at: datetime.datetime | None = Field(strict=False)
    status: Literal["running", "complete"]
    indices: Indices
    num_planned: Annotated[int, Field(ge=1, lt=INT32, strict=True)]


class Training(Strict):
    created_at: datetime.datetime | None = Field(strict=False)
    checkpoint_path: Text | None
    checkpoint_sha256: Hash
    dataset: Name
    arch: Name
    method: Name
    params: Params
    sigma: Sigma
    seed: Seed
    epochs: Annotated[int, Field(ge=0, lt=INT32, strict=True)]
    test_accuracy: Annotated[float, Field(ge=0, le=1, strict=False)] | None
    images_per_second: Annotated[float, Field(ge=0, allow_inf_nan=False, strict=False)] | None
    config: dict[str, Any]
    provenance: dict[str, Any]


class Header(Strict):
    format: Literal["rsbench-run-record"]
    format_version: Literal[2]
    model_info: ModelInfo
    protocol: Protocol
    run: Run
    provenance: dict[str, Any]
    training: Training | None
    columns: list[str]


def max_bytes() -> int:
    """The decompressed size a record may reach (``RSBENCH_MAX_RECORD_BYTES``, default 2 GiB)."""
    text = os.environ.get(MAX_BYTES_VARIABLE)
    if text is None:
        return DEFAULT_MAX_BYTES
    if not text.isdigit() or int(text) < 1:
        raise RsbenchError(f"{MAX_BYTES_VARIABLE} must be a positive number of bytes, not {text!r}")
    return int(text)


class Bounded(io.RawIOBase):
    """A binary stream that refuses to deliver more than ``limit`` bytes (a decompression bomb stops here)."""

    def __init__(self, stream: BinaryIO, limit: int, path: Path):
        self.stream, self.limit, self.path, self.delivered = stream, limit, path, 0

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        data = self.stream.read(min(len(buffer), 1 << 20))
        self.delivered += len(data)
        if self.delivered > self.limit:
            raise RsbenchError(
                f"{self.path} decompresses to more than {self.limit:,} bytes",
                f"a larger record needs {MAX_BYTES_VARIABLE}=BYTES",
            )
        buffer[: len(data)] = data
        return len(data)


def open_stream(path: Path) -> BinaryIO:
    """The record's decompressed bytes, bounded by :func:`max_bytes`."""
    raw: Any = gzip.open(path, "rb") if path.name.endswith(".gz") else open(path, "rb")  # noqa: SIM115
    return io.BufferedReader(Bounded(raw, max_bytes(), path), buffer_size=1 << 20)


DECODE_ERRORS = (ijson.JSONError, EOFError, OSError, zlib.error, ValueError, UnicodeError)
"""The ways a file fails to be JSON, each reported as one line (a truncated gzip is damage, not Ctrl-D)."""
OPENING, CLOSING = ("start_map", "start_array"), ("end_map", "end_array")
SCALARS = ("null", "boolean", "integer", "double", "number", "string")


def read_header(path: Path) -> dict[str, Any]:
    """Every top-level key of the record but ``rows``, parsed event by event (the rows are skipped, nesting
    is bounded by :data:`MAX_DEPTH`)."""
    header: dict[str, Any] = {}
    builder: Any = None
    key: str | None = None
    depth = 0
    try:
        with open_stream(path) as stream:
            for prefix, event, value in ijson.parse(stream, use_float=True):
                if event in OPENING:
                    depth += 1
                    if depth > MAX_DEPTH:
                        raise RsbenchError(f"{path}: nested deeper than {MAX_DEPTH} levels")
                if prefix == "":
                    if event == "map_key":
                        key, builder = value, None
                    elif event not in ("start_map", "end_map"):
                        raise RsbenchError(f"{path} is not a JSON object")
                elif key != "rows":
                    builder = builder or ijson.ObjectBuilder()
                    builder.event(event, value)
                if event in CLOSING:
                    depth -= 1
                done = (event in CLOSING and depth == 1) or (prefix == key and event in SCALARS)
                if key not in (None, "rows") and prefix != "" and done:
                    header[key] = builder.value
                    builder = None
    except RsbenchError:
        raise
    except DECODE_ERRORS as error:
        raise RsbenchError(f"{path} is not a JSON run record: {str(error).splitlines()[0][:200]}") from None
    return header


def iter_raw_rows(path: Path) -> Iterator[Any]:
    """The record's ``rows``, one list at a time, streamed."""
    try:
        with open_stream(path) as stream:
            yield from ijson.items(stream, "rows.item", use_float=True)
    except RsbenchError:
        raise
    except DECODE_ERRORS as error:
        raise RsbenchError(f"{path}: its rows are not JSON: {str(error).splitlines()[0][:200]}") from None


def check_header(path: Path, header: dict[str, Any]) -> Header:
    """The typed header, or one error line naming the first field that is wrong."""
    try:
        checked = Header.model_validate(header)
    except ValidationError as error:
        first = error.errors()[0]
        where = ".".join(str(part) for part in first["loc"])
        raise RsbenchError(f"{path}: {where}: {first['msg']}", "run `rsbench validate` on it for the checks") from None
    except RsbenchError as error:  # an unregistered dataset or certifier
        raise RsbenchError(f"{path}: {error.message}", error.hint) from None
    if checked.columns != list(RESULT_COLUMNS):
        raise RsbenchError(f"{path}: columns must be {', '.join(RESULT_COLUMNS)}")
    run = checked.run
    if len(set(run.indices.planned)) != len(run.indices.planned) or run.num_planned != len(run.indices.planned):
        raise RsbenchError(f"{path}: num_planned must count the distinct planned indices")
    sizes = get_dataset(checked.protocol.dataset).split_sizes or {}
    size = sizes.get(checked.protocol.split)
    if size is not None and max(run.indices.planned) >= size:
        raise RsbenchError(f"{path}: planned index {max(run.indices.planned)} is outside the {size:,}-example split")
    if checked.protocol.kind == "certify" and checked.protocol.n0 is None:
        raise RsbenchError(f"{path}: a certification needs n0")
    check_budget_label(path, checked, size)
    protocol = CertificationProtocol.from_dict(checked.protocol.model_dump())
    if max_certified_radius(protocol.sigma, protocol.n, protocol.alpha) <= 0 and protocol.kind == "certify":
        raise RsbenchError(f"{path}: with N={protocol.n} and α={protocol.alpha} no radius can be certified")
    if checked.protocol.protocol_key is not None and checked.protocol.protocol_key != protocol.key():
        raise RsbenchError(
            f"{path}: its protocol_key does not match its own protocol fields",
            "the record was edited or is damaged; export it again with `rsbench export`",
        )
    return checked


def check_budget_label(path: Path, header: Header, split_size: int | None) -> None:
    """A record labelled with a named budget must certify as that budget does (N0, N, α, the test split and
    exactly its images); how its model was trained a record cannot show, so that part is its word."""
    protocol = header.protocol
    try:
        budget = budgets.named_budget(protocol.budget or "")
    except RsbenchError as error:
        raise RsbenchError(f"{path}: {error.message}", "a record keeps the budget its run kept") from None
    if budget is None:
        return
    run = budgets.Certification(
        protocol.split, protocol.n0 if protocol.kind == "certify" else None, protocol.n, protocol.alpha,
        sorted(header.run.indices.planned), split_size,
    )  # fmt: skip
    differences = budgets.certification_differences(budget, run)
    if differences:
        raise RsbenchError(
            f"{path}: it is labelled budget {budget.name}, but certifies " + "; ".join(differences),
            "a record keeps the budget its run kept: export it again with `rsbench export`",
        )


class RowChecker:
    """Checks rows (lists in :data:`RESULT_COLUMNS` order) against a checked header, batch by batch."""

    def __init__(self, path: Path, header: Header):
        protocol, run = header.protocol, header.run
        self.path = path
        self.kind = protocol.kind
        self.classes = get_dataset(protocol.dataset).num_classes
        self.n, self.n0, self.alpha = protocol.n, protocol.n0 if protocol.kind == "certify" else None, protocol.alpha
        largest = max_certified_radius(protocol.sigma, protocol.n, protocol.alpha)
        self.largest = max(largest, 0.0) * (1 + RADIUS_ROUNDING)
        self.planned = set(run.indices.planned)
        self.seen: set[int] = set()

    def fail(self, index: Any, message: str) -> None:
        raise RsbenchError(f"{self.path}: row of index {index!r}: {message}")

    def check(self, values: Any) -> dict[str, Any]:
        if not isinstance(values, list) or len(values) != len(RESULT_COLUMNS):
            raise RsbenchError(f"{self.path}: rows must be lists of {len(RESULT_COLUMNS)} values")
        row = dict(zip(RESULT_COLUMNS, values, strict=True))
        index = row["idx"]
        for column in ("idx", "label", "predict", "correct"):
            if not _is_int(row[column]) or abs(row[column]) >= INT32:
                self.fail(index, f"{column} must be an integer below 2^31")
        if index not in self.planned:
            self.fail(index, "the index is not among the run's planned indices")
        if index in self.seen:
            self.fail(index, "the index appears twice")
        self.seen.add(index)
        if not 0 <= row["label"] < self.classes or not -1 <= row["predict"] < self.classes:
            self.fail(index, f"label and prediction must be classes of the dataset (0 to {self.classes - 1}, or -1)")
        if row["correct"] != int(row["predict"] == row["label"]):
            self.fail(index, "correct must equal (predict == label)")
        radius = row["radius"]
        if not _is_number(radius) or not math.isfinite(radius) or radius < 0:
            self.fail(index, "radius must be a finite number >= 0")
        if self.kind == "certify" and radius > self.largest:
            self.fail(index, f"radius {radius:g} exceeds {self.largest:.4g}, the largest this protocol can certify")
        if self.kind == "predict" and radius != 0:
            self.fail(index, "a prediction has radius 0")
        if row["radius_kind"] not in (*RADIUS_KINDS, None):
            self.fail(index, f"radius_kind must be one of {', '.join(RADIUS_KINDS)} or null")
        if (row["n"], row["n0"], row["alpha"]) != (self.n, self.n0, self.alpha):
            self.fail(index, "n, n0 and alpha must be the protocol's")
        if row["n_a"] is not None and (not _is_int(row["n_a"]) or not 0 <= row["n_a"] <= self.n):
            self.fail(index, "n_a must be a count between 0 and N")
        if row["p_a_lower"] is not None and (not _is_number(row["p_a_lower"]) or not 0 <= row["p_a_lower"] <= 1):
            self.fail(index, "p_a_lower must lie in [0, 1]")
        if row["draws"] is not None and (not _is_int(row["draws"]) or not 0 <= row["draws"] < INT32):
            self.fail(index, "draws must be a count below 2^31")
        seconds = row["seconds"]
        if not _is_number(seconds) or not math.isfinite(seconds) or not 0 <= seconds <= MAX_SECONDS:
            self.fail(index, f"seconds must be a number between 0 and {MAX_SECONDS:g}")
        return row

    def finish(self, complete: bool) -> None:
        if not self.seen:
            raise RsbenchError(f"{self.path}: the record has no rows")
        if complete and self.seen != self.planned:
            raise RsbenchError(f"{self.path}: it says complete, but its rows do not cover its planned indices")


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def upgrade_header(header: dict[str, Any]) -> dict[str, Any]:
    """A version-1 header in version 2's shape: radii from the provenance, the checkpoint hash and training σ
    from the run section, an imported log identified by its file hash, its key (an older hasher's) dropped."""
    run, provenance = dict(header.get("run") or {}), header.get("provenance") or {}
    protocol = {k: v for k, v in (header.get("protocol") or {}).items() if k != "protocol_key"}
    protocol.update(
        protocol_key=None,
        train_sigma=run.pop("train_sigma", None),
        checkpoint_sha256=run.pop("checkpoint_sha256", None),
        radii=provenance.get("radii") or [],
        normalization=None,
    )
    protocol["source_sha256"] = provenance.get("file_sha256") if protocol["checkpoint_sha256"] is None else None
    indices = run.get("indices")
    if isinstance(indices, dict) and "selections" not in indices:  # the first records: one selection, unplanned
        run["indices"] = {"selections": [indices], "planned": _selected(protocol, indices)}
    model_info = {k: v for k, v in (header.get("model_info") or {}).items() if v is not None}
    if header.get("columns") != V1_COLUMNS:
        raise RsbenchError("a version-1 record's columns must be " + ", ".join(V1_COLUMNS))
    return {**header, "format_version": 2, "model_info": model_info, "protocol": protocol, "run": run,
            "columns": list(RESULT_COLUMNS)}  # fmt: skip


def _selected(protocol: dict[str, Any], selection: dict[str, Any]) -> list[int]:
    """The indices a selection of the first records (``{"skip", "limit"}`` or ``{"list"}``) names."""
    if "list" in selection:
        return list(selection["list"])
    size = (get_dataset(protocol["dataset"]).split_sizes or {}).get(protocol["split"])
    if size is None:
        raise RsbenchError("its index selection cannot be resolved without the split's size")
    return budgets.every_nth(size, selection["skip"], selection.get("limit"))


def upgrade_row(values: Any) -> Any:
    """A version-1 row with no p_A bound, in version 2's columns."""
    where = RESULT_COLUMNS.index("p_a_lower")
    return [*values[:where], None, *values[where:]] if isinstance(values, list) else values


class RecordReader:
    """A record checked as untrusted input: :attr:`header` (typed) at once, :meth:`batches` of checked rows
    streamed (each a list of row dicts) when asked; ``finish`` runs the whole-record checks."""

    def __init__(self, path: str | os.PathLike):
        self.path = Path(path)
        if not self.path.is_file():
            raise RsbenchError(f"run record {str(self.path)!r} does not exist")
        raw = read_header(self.path)
        if raw.get("format") != FORMAT:
            raise RsbenchError(f"{self.path} is not an rsbench run record", f'expected "format": "{FORMAT}"')
        version = raw.get("format_version")
        if version not in (1, 2):
            raise RsbenchError(f"{self.path} has record format version {version!r}", "this rsbench reads versions 1, 2")
        self.version = version
        if version == 1:
            try:
                raw = upgrade_header(raw)
            except (RsbenchError, AttributeError, TypeError) as error:
                raise RsbenchError(f"{self.path}: malformed version-1 record: {error}") from None
        self.header = check_header(self.path, raw)
        self.raw = raw  # as written (checked): selections keep exactly the keys they were given

    @property
    def protocol(self) -> CertificationProtocol:
        return CertificationProtocol.from_dict(self.header.protocol.model_dump())

    def batches(self) -> Iterator[list[dict[str, Any]]]:
        checker = RowChecker(self.path, self.header)
        batch: list[dict[str, Any]] = []
        for values in iter_raw_rows(self.path):
            batch.append(checker.check(upgrade_row(values) if self.version == 1 else values))
            if len(batch) >= BATCH:
                yield batch
                batch = []
        if batch:
            yield batch
        checker.finish(self.header.run.status == "complete")
