"""Schema 3, the baseline: the tables as rsbench wrote them before migrations existed.

A store of schema 3 is stamped with this revision rather than created by it; running it creates an
empty schema-3 store (the upgrade tests start from one on PostgreSQL).
"""

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = None


def upgrade() -> None:
    op.create_table(
        "rsbench_meta", sa.Column("key", sa.String(64), primary_key=True), sa.Column("value", sa.String(256))
    )
    op.create_table(
        "training_runs",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("created_at", sa.DateTime(timezone=True)),
        sa.Column("checkpoint_path", sa.String(1024)),
        sa.Column("checkpoint_sha256", sa.String(64), index=True),
        sa.Column("dataset", sa.String(64)),
        sa.Column("arch", sa.String(128)),
        sa.Column("method", sa.String(64)),
        sa.Column("params", sa.JSON),
        sa.Column("sigma", sa.Float),
        sa.Column("seed", sa.BigInteger),
        sa.Column("epochs", sa.Integer),
        sa.Column("test_accuracy", sa.Float, nullable=True),
        sa.Column("images_per_second", sa.Float, nullable=True),
        sa.Column("config", sa.JSON),
        sa.Column("provenance", sa.JSON),
    )
    op.create_table(
        "certification_runs",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("created_at", sa.DateTime(timezone=True)),
        sa.Column("kind", sa.String(16)),
        sa.Column("origin", sa.String(16)),
        sa.Column("status", sa.String(16)),
        sa.Column("protocol_key", sa.String(64), unique=True),
        sa.Column("dataset", sa.String(64), index=True),
        sa.Column("split", sa.String(16)),
        sa.Column("method", sa.String(64)),
        sa.Column("params", sa.JSON),
        sa.Column("arch", sa.String(128), nullable=True),
        sa.Column("sigma", sa.Float),
        sa.Column("train_sigma", sa.Float, nullable=True),
        sa.Column("seed", sa.BigInteger, nullable=True),
        sa.Column("noise_seed", sa.BigInteger, nullable=True),
        sa.Column("certifier", sa.String(64)),
        sa.Column("certifier_params", sa.JSON),
        sa.Column("n0", sa.Integer, nullable=True),
        sa.Column("n", sa.Integer),
        sa.Column("alpha", sa.Float),
        sa.Column("batch_size", sa.Integer, nullable=True),
        sa.Column("indices", sa.JSON),
        sa.Column("num_planned", sa.Integer),
        sa.Column("budget", sa.String(32), nullable=True),
        sa.Column("experiment", sa.String(128), nullable=True),
        sa.Column("checkpoint_path", sa.String(1024), nullable=True),
        sa.Column("checkpoint_sha256", sa.String(64), nullable=True),
        sa.Column("training_run_id", sa.Integer, sa.ForeignKey("training_runs.id"), nullable=True),
        sa.Column("provenance", sa.JSON),
    )
    op.create_table(
        "results",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("run_id", sa.Integer, sa.ForeignKey("certification_runs.id"), index=True),
        sa.Column("idx", sa.Integer),
        sa.Column("label", sa.Integer),
        sa.Column("predict", sa.Integer),
        sa.Column("radius", sa.Float),
        sa.Column("radius_kind", sa.String(8), nullable=True),
        sa.Column("correct", sa.Integer),
        sa.Column("n_a", sa.Integer, nullable=True),
        sa.Column("n", sa.Integer, nullable=True),
        sa.Column("n0", sa.Integer, nullable=True),
        sa.Column("alpha", sa.Float, nullable=True),
        sa.Column("draws", sa.Integer, nullable=True),
        sa.Column("seconds", sa.Float),
        sa.UniqueConstraint("run_id", "idx"),
    )
    op.execute(sa.text("INSERT INTO rsbench_meta (key, value) VALUES ('schema_version', '3')"))
