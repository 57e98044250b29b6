"""Schema 4: every protocol field a column, the typed protocol's key, each row's p_A bound, run metrics.

- ``certification_runs`` gains ``radii`` (from the provenance, where schema 3 kept it), ``normalization``
  (unknown for schema-3 runs: NULL) and ``source_sha256`` (an imported log's file hash, from the provenance);
  every ``protocol_key`` is recomputed by :meth:`rsbench.protocol.CertificationProtocol.key`, which hashes
  all protocol fields (schema 3 had three hashers that disagreed).
- ``results`` gains ``p_a_lower`` (NULL for rows certified before it was kept).
- ``run_metrics`` is created and filled for every complete run.
"""

import pandas as pd
import sqlalchemy as sa
from alembic import op

from rsbench.protocol import CertificationProtocol
from rsbench.store.store import summarize

revision = "0004"
down_revision = "0003"

RUN_COLUMNS = (
    "id", "kind", "origin", "status", "protocol_key", "dataset", "split", "sigma", "train_sigma", "noise_seed",
    "certifier", "certifier_params", "n0", "n", "alpha", "budget", "checkpoint_sha256", "provenance",
)  # fmt: skip


def upgrade() -> None:
    with op.batch_alter_table("certification_runs") as batch:
        batch.add_column(sa.Column("radii", sa.JSON, nullable=True))
        batch.add_column(sa.Column("normalization", sa.String(16), nullable=True))
        batch.add_column(sa.Column("source_sha256", sa.String(64), nullable=True))
    with op.batch_alter_table("results") as batch:
        batch.add_column(sa.Column("p_a_lower", sa.Float, nullable=True))
    op.create_table(
        "run_metrics",
        sa.Column("run_id", sa.Integer, sa.ForeignKey("certification_runs.id"), primary_key=True),
        sa.Column("num_examples", sa.Integer),
        sa.Column("num_correct", sa.Integer),
        sa.Column("num_abstain", sa.Integer),
        sa.Column("acr", sa.Float),
        sa.Column("acr_square", sa.Float),
        sa.Column("draws_sum", sa.BigInteger),
        sa.Column("draws_count", sa.Integer),
        sa.Column("lower_bound", sa.Boolean),
        sa.Column("certified_counts", sa.JSON),
    )
    bind = op.get_bind()
    runs = sa.table(
        "certification_runs",
        *(sa.column(c, sa.JSON if c in ("certifier_params", "provenance") else None) for c in RUN_COLUMNS),
        sa.column("radii", sa.JSON),
        sa.column("source_sha256"),
    )
    results = sa.table(
        "results", *(sa.column(c) for c in ("run_id", "correct", "radius", "predict", "draws", "radius_kind"))
    )
    metrics = sa.table(
        "run_metrics",
        *(sa.column(c) for c in ("run_id", "num_examples", "num_correct", "num_abstain", "acr", "acr_square")),
        *(sa.column(c) for c in ("draws_sum", "draws_count", "lower_bound")),
        sa.column("certified_counts", sa.JSON),
    )
    for run in bind.execute(sa.select(*runs.c[: len(RUN_COLUMNS)])).mappings().all():
        provenance = run["provenance"] or {}
        radii = [float(r) for r in provenance.get("radii") or []]
        source = provenance.get("file_sha256") if run["checkpoint_sha256"] is None else None
        protocol = CertificationProtocol.from_dict({**run, "radii": radii, "source_sha256": source})
        bind.execute(
            runs.update()
            .where(runs.c.id == run["id"])
            .values(radii=radii, source_sha256=source, protocol_key=protocol.key())
        )
        if run["status"] != "complete":
            continue
        columns = ["correct", "radius", "predict", "draws", "radius_kind"]
        rows = bind.execute(sa.select(*(results.c[c] for c in columns)).where(results.c.run_id == run["id"])).all()
        if rows:
            summary = summarize(pd.DataFrame(rows, columns=columns), run["sigma"], run["n"], run["alpha"])
            bind.execute(metrics.insert().values(run_id=run["id"], **summary))
    bind.execute(sa.text("UPDATE rsbench_meta SET value = '4' WHERE key = 'schema_version'"))
