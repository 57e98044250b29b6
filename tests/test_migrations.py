"""Schema upgrades in place: a schema-3 store (``fixtures/schema3.db``, written by rsbench before migrations
existed) keeps every run and row through ``rsbench db upgrade``, on SQLite and on a real PostgreSQL server;
every command meets an old store with one line pointing at the upgrade."""

from __future__ import annotations

import hashlib
import json
import math
import shutil
import sqlite3
from pathlib import Path

import pytest
from sqlalchemy import MetaData, create_engine, insert, select
from typer.testing import CliRunner

from rsbench.cli import app
from rsbench.protocol import PROTOCOL_FIELDS
from rsbench.smoothing import max_certified_radius
from rsbench.store import open_store, upgrade_store
from rsbench.store.migrations import create_schema3
from rsbench.store.models import SCHEMA_VERSION

pytest_plugins = ["postgres"]
FIXTURE = Path(__file__).parent / "fixtures" / "schema3.db"
runner = CliRunner()


def schema3_contents() -> dict[str, list[dict]]:
    """Every row of every table of the fixture, read with plain sqlite3 (no rsbench code)."""
    with sqlite3.connect(FIXTURE) as connection:
        connection.row_factory = sqlite3.Row
        tables = ("rsbench_meta", "training_runs", "certification_runs", "results")
        return {t: [dict(r) for r in connection.execute(f"select * from {t} order by 1")] for t in tables}


def plain(value):
    """None for a missing value however pandas shows it (None or NaN)."""
    return None if value is None or (isinstance(value, float) and math.isnan(value)) else value


def check_upgraded(url: str, before: dict[str, list[dict]]) -> None:
    """Every run and row of ``before`` is in the store at ``url``, with the new columns filled as the
    migration promises, keys that are the typed protocol's, and metrics equal to those of the rows."""
    store = open_store(url)
    runs = store.runs(kind=None).set_index("id")
    assert sorted(runs.index) == [r["id"] for r in before["certification_runs"]]
    results = store.results(runs.index.tolist())
    assert len(results) == len(before["results"])
    old_rows = {(r["run_id"], r["idx"]): r for r in before["results"]}
    for row in results.itertuples():
        old = old_rows[(row.run_id, row.idx)]
        assert (row.label, row.predict, row.correct, plain(row.n_a), plain(row.draws)) == (
            old["label"], old["predict"], old["correct"], old["n_a"], old["draws"]
        )  # fmt: skip
        assert row.radius == old["radius"] and plain(row.p_a_lower) is None
    for old in before["certification_runs"]:
        run = runs.loc[old["id"]]
        for column in ("method", "sigma", "n", "alpha", "seed", "status", "num_planned", "checkpoint_sha256"):
            assert plain(run[column]) == old[column]
        provenance = json.loads(old["provenance"])
        assert list(run["radii"]) == (provenance.get("radii") or [])
        expected_source = provenance.get("file_sha256") if old["checkpoint_sha256"] is None else None
        assert plain(run["source_sha256"]) == expected_source
        stored = store.get_run(old["id"])  # the key, re-derived from its definition: SHA-256 of the fields' JSON
        fields = {f: getattr(stored, f) for f in PROTOCOL_FIELDS}
        assert stored.protocol_key == hashlib.sha256(json.dumps(fields, sort_keys=True).encode()).hexdigest()
    assert runs["protocol_key"].is_unique
    metrics = store.run_metrics().set_index("id")
    complete = sorted(i for i in runs.index if runs.loc[i, "status"] == "complete")
    assert sorted(metrics.index) == complete
    for run_id in complete:  # the metrics, recomputed here from the old rows by their definitions
        rows = [r for r in before["results"] if r["run_id"] == run_id]
        scores = [r["radius"] * r["correct"] for r in rows]
        run = metrics.loc[run_id]
        assert run["num_examples"] == len(rows) and run["num_correct"] == sum(r["correct"] for r in rows)
        assert run["acr"] == pytest.approx(sum(scores) / len(rows))
        assert run["acr_square"] == pytest.approx(sum(s * s for s in scores) / len(rows))
        top = max_certified_radius(run["sigma"], int(run["n"]), run["alpha"])
        assert len(run["certified_counts"]) == math.floor(max(top, max(scores)) / 0.01 + 1e-9) + 1
        for k in (0, 25, 50, 100, 150):
            expected = sum(1 for r in rows if r["correct"] == 1 and r["radius"] >= k / 100)
            assert (run["certified_counts"][k] if k < len(run["certified_counts"]) else 0) == expected


def test_sqlite_schema3_store_upgrades_in_place_and_keeps_every_row(tmp_path):
    before = schema3_contents()
    assert before["rsbench_meta"] == [{"key": "schema_version", "value": "3"}] and len(before["results"]) == 134
    path = tmp_path / "old.db"
    shutil.copy(FIXTURE, path)
    refused = runner.invoke(app, ["runs", "--db", str(path)])
    assert refused.exit_code == 2 and "rsbench db upgrade" in refused.stderr
    assert len(refused.stderr.strip().splitlines()) == 1
    upgraded = runner.invoke(app, ["db", "upgrade", "--db", str(path)])
    assert upgraded.exit_code == 0 and "schema version 3, now 4" in upgraded.stderr
    check_upgraded(f"sqlite:///{path}", before)
    again = runner.invoke(app, ["db", "upgrade", "--db", str(path)])
    assert again.exit_code == 0 and "nothing to do" in again.stderr
    board = runner.invoke(app, ["leaderboard", "--dataset", "mnist", "--format", "json", "--db", str(path)])
    assert board.exit_code == 0 and '"method": "gaussian"' in board.stdout


def test_a_failed_upgrade_leaves_the_store_as_it_was(tmp_path, monkeypatch):
    path = tmp_path / "old.db"
    shutil.copy(FIXTURE, path)
    monkeypatch.setattr("rsbench.store.store.summarize", lambda *a: 1 / 0)  # the migration fails midway
    with pytest.raises(ZeroDivisionError):
        upgrade_store(str(path))
    monkeypatch.undo()
    with sqlite3.connect(path) as connection:
        assert connection.execute("select value from rsbench_meta").fetchall() == [("3",)]
        columns = [c[1] for c in connection.execute("pragma table_info(certification_runs)")]
        tables = [t for (t,) in connection.execute("select name from sqlite_master where type = 'table'")]
    assert "radii" not in columns and "run_metrics" not in tables and "alembic_version" not in tables
    assert upgrade_store(str(path)) == (3, SCHEMA_VERSION)
    check_upgraded(f"sqlite:///{path}", schema3_contents())


def test_postgresql_schema3_store_upgrades_in_place(postgres_server):
    """The baseline revision makes a schema-3 store on a fresh PostgreSQL database; the fixture's rows are
    copied into it; the upgrade then keeps them all, as on SQLite."""
    url = postgres_server.new_database()
    engine = create_engine(url.replace("postgresql://", "postgresql+psycopg://"))
    with engine.begin() as connection:
        create_schema3(connection)
    before = schema3_contents()
    source = create_engine(f"sqlite:///{FIXTURE}")
    old, new = MetaData(), MetaData()
    old.reflect(source)
    new.reflect(engine)
    with source.connect() as reading, engine.begin() as writing:
        for table in ("training_runs", "certification_runs", "results"):
            rows = [dict(r._mapping) for r in reading.execute(select(old.tables[table]))]
            if rows:
                writing.execute(insert(new.tables[table]), rows)
    source.dispose()
    engine.dispose()
    refused = runner.invoke(app, ["runs", "--db", url])
    assert refused.exit_code == 2 and "rsbench db upgrade" in refused.stderr
    assert upgrade_store(url) == (3, SCHEMA_VERSION)
    check_upgraded(url, before)


def test_a_store_older_than_migrations_is_refused_with_a_hint(tmp_path):
    path = tmp_path / "ancient.db"
    shutil.copy(FIXTURE, path)
    with sqlite3.connect(path) as connection:
        connection.execute("update rsbench_meta set value = '2'")
    result = runner.invoke(app, ["db", "upgrade", "--db", str(path)])
    assert result.exit_code == 2 and "predates migrations" in result.stderr
