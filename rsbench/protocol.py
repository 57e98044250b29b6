"""What a certification run *is*: :class:`CertificationProtocol`, the one typed statement of a run's
identity, and :meth:`CertificationProtocol.key`, the only protocol hasher of rsbench.

A run is identified by the model it certifies and how it certifies it, never by which test indices it
covers: shards and index selections of one protocol are rows of one run. Every field is a column of the
store's ``certification_runs`` table and a key of a run record's ``protocol`` section.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
from typing import Any, Literal, get_args

from rsbench.errors import RsbenchError

RunKind = Literal["certify", "predict"]
"""What a certification run computes: CERTIFY's prediction and radius, or PREDICT's prediction alone."""
Split = Literal["train", "test"]
RadiusKind = Literal["exact", "grid"]
"""What a certified radius means: ``exact`` is CERTIFY's σ·Φ⁻¹(p_A lower bound) from its final bound;
``grid`` is the largest requested radius that was certified, a lower bound on CERTIFY's radius."""
Origin = Literal["rsbench", "imported"]
"""Where a run's rows come from: certified by rsbench here, or imported (a record or a published log)."""
Status = Literal["running", "complete"]
KINDS: tuple[str, ...] = get_args(RunKind)
SPLITS: tuple[str, ...] = get_args(Split)
RADIUS_KINDS: tuple[str, ...] = get_args(RadiusKind)
ORIGINS: tuple[str, ...] = get_args(Origin)
STATUSES: tuple[str, ...] = get_args(Status)


@dataclasses.dataclass(frozen=True)
class CertificationProtocol:
    """One certification (``kind`` certify: Cohen's CERTIFY or another certifier) or prediction (``kind``
    predict: PREDICT) of one model.

    - ``checkpoint_sha256``: SHA-256 of the certified checkpoint file; None for an imported log whose
      checkpoint is unknown, which ``source_sha256`` (SHA-256 of the imported log file) then identifies.
    - ``sigma``: σ of the smoothing noise used to certify, ``train_sigma`` the σ the model was trained at
      (both in [0,1] pixel units; they differ when a model is certified off its training noise level).
    - ``n0`` selection draws (None for predict), ``n`` estimation draws (an adaptive certifier's most),
      ``alpha`` each certificate's failure probability; ``radii`` the ℓ2 grid a grid certifier decides
      (empty for exact radii); ``noise_seed`` seeds each example's noise stream as (seed, index).
    - ``normalization``: the normalization kind given for an official checkpoint (None: the checkpoint's).
    - ``budget``: a named budget the run keeps in full (``full``: the paper's training and protocol,
      ``paper-subset``, ``quick``, ``smoke``; :mod:`rsbench.budgets`), ``custom``, or a free label.
    """

    kind: RunKind
    dataset: str
    split: Split
    sigma: float
    train_sigma: float | None
    certifier: str
    certifier_params: dict[str, Any]
    n0: int | None
    n: int
    alpha: float
    radii: tuple[float, ...] = ()
    noise_seed: int | None = None
    normalization: str | None = None
    budget: str | None = None
    checkpoint_sha256: str | None = None
    source_sha256: str | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "radii", tuple(float(r) for r in self.radii))

    def key(self) -> str:
        """SHA-256 of every field (canonical JSON): the run's identity in a store and in a record."""
        return hashlib.sha256(json.dumps(self.as_dict(), sort_keys=True).encode()).hexdigest()

    def as_dict(self) -> dict[str, Any]:
        """The fields as JSON values (``radii`` as a list)."""
        fields = dataclasses.asdict(self)
        fields["radii"] = list(self.radii)
        return fields

    @classmethod
    def from_dict(cls, fields: dict[str, Any]) -> CertificationProtocol:
        """A protocol from its fields (extra keys ignored, missing optional ones take their defaults)."""
        known = {f.name for f in dataclasses.fields(cls)}
        values = {k: v for k, v in fields.items() if k in known}
        values["radii"] = tuple(values.get("radii") or ())
        values["certifier_params"] = dict(values.get("certifier_params") or {})
        return cls(**values)

    @property
    def sigma_mismatch(self) -> bool:
        """Certified at a σ other than the one the model was trained at."""
        return self.train_sigma is not None and not math.isclose(self.sigma, self.train_sigma, rel_tol=1e-9)

    def check(self) -> None:
        """Refuse (one :class:`RsbenchError`) a protocol no certificate can have: unknown kind or split,
        σ not positive and finite, α outside (0, 1), N or N0 below 1, radii negative or unsorted."""
        if self.kind not in KINDS:
            raise RsbenchError(f"kind must be one of {', '.join(KINDS)}, not {self.kind!r}")
        if self.split not in SPLITS:
            raise RsbenchError(f"split must be one of {', '.join(SPLITS)}, not {self.split!r}")
        for name in ("sigma", "train_sigma"):
            value = getattr(self, name)
            if value is None and name == "train_sigma":
                continue
            if not _is_number(value) or not math.isfinite(value) or value <= 0:
                raise RsbenchError(f"{name} must be a positive number, not {value!r}")
        if not _is_number(self.alpha) or not 0 < self.alpha < 1:
            raise RsbenchError(f"alpha must lie strictly between 0 and 1, not {self.alpha!r}")
        if not _is_int(self.n) or self.n < 1:
            raise RsbenchError(f"n must be a positive integer, not {self.n!r}")
        if self.kind == "certify" and (not _is_int(self.n0) or self.n0 < 1):  # type: ignore[operator]
            raise RsbenchError(f"n0 must be a positive integer, not {self.n0!r}")
        if not all(_is_number(r) and math.isfinite(r) and r >= 0 for r in self.radii) or list(self.radii) != sorted(
            self.radii
        ):
            raise RsbenchError("radii must be finite, non-negative and ascending")


@dataclasses.dataclass(frozen=True)
class RunDescription:
    """What a certification run records beside its protocol: where its rows come from (``origin``), the
    model's recipe (training ``method``, its ``params``, ``arch``, training ``seed``), how it was run
    (``batch_size`` noisy copies per forward pass, the ``experiment`` it belongs to, the checkpoint's path)
    and its ``provenance`` (versions, commit, device, command, plugins)."""

    origin: Origin
    method: str
    params: dict[str, Any]
    arch: str | None = None
    seed: int | None = None
    batch_size: int | None = None
    experiment: str | None = None
    checkpoint_path: str | None = None
    provenance: dict[str, Any] = dataclasses.field(default_factory=dict)


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


PROTOCOL_FIELDS: tuple[str, ...] = tuple(f.name for f in dataclasses.fields(CertificationProtocol))
DESCRIPTION_FIELDS: tuple[str, ...] = tuple(f.name for f in dataclasses.fields(RunDescription))
