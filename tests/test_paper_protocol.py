"""leaderboards/paper_protocol.py against numbers worked out by hand on tiny hand-made run records."""

import datetime
import gzip
import importlib.util
import json
import math
import sys
from pathlib import Path

import pytest

COLUMNS = ["idx", "label", "predict", "radius", "radius_kind", "correct", "n_a", "n", "n0", "alpha", "draws", "seconds"]
ROW_OF_TABLE = {"method": "gaussian", "params": {}, "sigma": 0.5}


def load_script():
    path = Path(__file__).parents[1] / "leaderboards" / "paper_protocol.py"
    spec = importlib.util.spec_from_file_location("paper_protocol", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules["paper_protocol"] = module  # dataclasses look their module up while the class is made
    spec.loader.exec_module(module)
    return module


pp = load_script()


def record(origin, seed, certified, certifier="cohen", budget=None, sigma=0.5):
    """A run record; ``certified`` maps test index -> (correct, radius[, draws])."""
    rows = []
    for idx, (correct, radius, *draws) in certified.items():
        predict = 3 if correct else -1
        rows.append([idx, 3, predict, radius, "exact", correct, None, 100_000, 100, 0.001, *(draws or [100_100]), 0.1])
    return {
        "format": "rsbench-run-record",
        "protocol": {"kind": "certify", "dataset": "mnist", "split": "test", "sigma": sigma, "certifier": certifier,
                     "n0": 100, "n": 100_000, "alpha": 0.001, "budget": budget},
        "run": {"origin": origin, "method": "gaussian", "params": {}, "seed": seed},
        "columns": COLUMNS,
        "rows": rows,
    }  # fmt: skip


def write(folder: Path, name: str, content: dict) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    if name.endswith(".gz"):
        with gzip.open(folder / name, "wt") as handle:
            json.dump(content, handle)
    else:
        (folder / name).write_text(json.dumps(content))


# Two official runs on test images 0..5; rsbench certified 0, 2 and 4 only.
OFFICIAL_A = {0: (1, 1.0), 1: (1, 0.3), 2: (0, 0.8), 3: (0, 0.0), 4: (1, 0.6), 5: (1, 2.0)}
OFFICIAL_B = {0: (1, 0.5), 1: (0, 0.4), 2: (1, 0.25), 3: (1, 0.1), 4: (1, 1.5), 5: (0, 0.0)}
MINE = {0: (1, 0.9), 2: (1, 0.3), 4: (0, 1.2)}
ADAPTIVE = {0: (1, 0.75, 2_000), 2: (1, 0.25, 5_000), 4: (0, 0.0, 100_100)}
RADII = (0.0, 0.25, 0.5, 1.0)


@pytest.fixture
def comparisons(tmp_path):
    write(tmp_path / "official", "a.json.gz", record("imported", 1, OFFICIAL_A))
    write(tmp_path / "official", "b.json", record("imported", 2, OFFICIAL_B))
    write(tmp_path / "official", "other-sigma.json", record("imported", 3, OFFICIAL_A, sigma=1.0))
    write(tmp_path / "mine", "cohen.json.gz", record("rsbench", 0, MINE, budget="paper-subset"))
    write(tmp_path / "mine", "adaptive.json.gz", record("rsbench", 0, ADAPTIVE, "adaptive", "paper-subset"))
    write(tmp_path / "mine", "quick.json.gz", record("rsbench", 0, OFFICIAL_A, budget="quick"))  # another budget
    records = pp.read_records(tmp_path / "mine") + pp.read_records(tmp_path / "official")
    row = pp.Row("mnist-gaussian-0.50", "gaussian", {}, 0.5, "table2-slice")
    return pp.compare([row], records, [], radii=RADII)


def test_official_runs_are_summarised_on_the_images_rsbench_certified(comparisons):
    (c,) = comparisons
    assert c.images == (0, 2, 4)
    assert [r["run"]["seed"] for r, _ in c.official] == [1, 2]  # not the σ = 1.0 run
    a, b = (s for _, s in c.official)
    # run A on images 0, 2, 4: certified radii 1.0, (wrong), 0.6
    assert a.acr == pytest.approx(1.6 / 3)
    assert a.accuracy == pytest.approx({0.0: 2 / 3, 0.25: 2 / 3, 0.5: 2 / 3, 1.0: 1 / 3})
    # run B: 0.5, 0.25, 1.5
    assert b.acr == pytest.approx(0.75)
    assert b.accuracy == pytest.approx({0.0: 1.0, 0.25: 1.0, 0.5: 2 / 3, 1.0: 1 / 3})
    # the same runs on all six images they certified, for context
    assert [s.acr for s in c.official_all] == pytest.approx([3.9 / 6, 2.35 / 6])
    acr, accuracy = pp.official_mean(c, RADII)
    assert acr == pytest.approx((1.6 / 3 + 0.75) / 2)
    assert accuracy[0.0] == pytest.approx(5 / 6)
    assert pp.mean_std([a.acr, b.acr])[1] == pytest.approx(abs(0.75 - 1.6 / 3) / math.sqrt(2))  # ddof = 1


def test_rsbench_rows_and_the_difference(comparisons):
    (c,) = comparisons
    ((_, mine),) = c.rsbench  # the quick-budget record is not this protocol
    assert mine.acr == pytest.approx(1.2 / 3)  # 0.9 + 0.3; image 4 is wrong whatever its radius
    assert mine.accuracy == pytest.approx({0.0: 2 / 3, 0.25: 2 / 3, 0.5: 1 / 3, 1.0: 0.0})
    ok, detail = pp.within_tolerance(mine, c, RADII)
    assert not ok and f"ACR {1.2 / 3 - (1.6 / 3 + 0.75) / 2:+.3f}" in detail
    ((_, adaptive),) = c.adaptive
    assert adaptive.draws == pytest.approx((2_000 + 5_000 + 100_100) / 3)
    assert adaptive.accuracy == pytest.approx({0.0: 2 / 3, 0.25: 2 / 3, 0.5: 1 / 3, 1.0: 0.0})
    text = pp.render(comparisons, [], [], RADII)
    assert (
        "| gaussian σ = 0.5 | difference (rsbench − official mean) | | | -0.242 | -16.7 | -16.7 | -33.3 | -33.3 |"
        in text
    )


def test_a_missing_row_is_named_with_its_command_and_never_given_numbers(tmp_path):
    write(tmp_path, "a.json", record("imported", 1, {i: (1, 1.0) for i in range(0, 60, 20)}))
    row = pp.Row("mnist-gaussian-0.50", "gaussian", {}, 0.5, "table2-slice")
    (c,) = pp.compare([row], pp.read_records(tmp_path), [], default_images=(0, 20, 40), radii=RADII)
    assert c.rsbench == [] and c.images == (0, 20, 40)
    text = pp.render([c], [], [], RADII)
    line = next(line for line in text.splitlines() if "rsbench `paper-subset`" in line)
    cells = [cell.strip() for cell in line.strip().strip("|").split("|")]  # row, source, runs, images, ACR, radii
    assert "not yet run" in cells[1] and cells[2] == "0" and cells[3:] == [""] * (2 + len(RADII))
    assert "`rsbench reproduce table2-slice --budget paper-subset --methods gaussian --sigmas 0.5`" in text
    assert "runs/mnist/full/gaussian-sigma0.5-seed0/checkpoint.pth.tar --certifier adaptive" in text


def test_an_official_run_lacking_an_image_is_an_error_not_a_smaller_average():
    with pytest.raises(ValueError, match="lacks 1 of the images"):
        pp.summarise(record("imported", 1, {0: (1, 1.0)}), [0, 20])


def test_step_cost_adds_attempts_and_averages_the_load_sampled_during_them(tmp_path):
    (tmp_path / "steps.tsv").write_text(
        pp.STEPS_HEADER
        + "train-x\t2026-01-01T00:00:00Z\t2026-01-01T00:10:00Z\t600\t\tkilled\t1 1 1\t2 2 2\n"
        + "train-x\t2026-01-01T01:00:00Z\t2026-01-01T01:05:00Z\t300\t250\t0\t1 1 1\t2 2 2\n"
        + "cohen-x\t2026-01-01T02:00:00Z\t2026-01-01T02:01:00Z\t60\t50\t0\t1 1 1\t2 2 2\n"
    )
    (tmp_path / "load.log").write_text(
        "2026-01-01T00:05:00Z 2.00 1 1 1/1 1\n"  # in the first attempt
        "2026-01-01T00:30:00Z 9.00 1 1 1/1 1\n"  # between attempts: not counted
        "2026-01-01T01:01:00Z 4.00 1 1 1/1 1\n"  # in the second
    )
    cost = pp.step_cost("train-x", pp.read_steps(tmp_path / "steps.tsv"), pp.read_load(tmp_path / "load.log"))
    assert cost == {"attempts": 2, "wall": 900, "cpu": 250, "cpu_complete": False, "load": 3.0, "done": True}


def test_a_snapshot_of_the_chain_includes_the_step_running_now(tmp_path):
    chain = tmp_path / "chain"
    (chain / "running").mkdir(parents=True)
    started = datetime.datetime(2026, 1, 1, tzinfo=datetime.UTC)
    (chain / "running" / "train-x").write_text(
        f"train-x 2026-01-01T00:00:00Z {started.timestamp():.0f} 1.00,2.00,3.00\n"
    )
    (chain / "load.log").write_text("2026-01-01T00:07:00Z 5.00 4.00 3.00 1/1 1\n")
    pp.snapshot_chain(chain, tmp_path / "records")
    (attempt,) = pp.read_steps(tmp_path / "records" / "chain-steps.tsv")
    assert (attempt.step, attempt.wall_seconds, attempt.status) == ("train-x", 420, "running")
