"""The CPU pass tuner: which thread counts and pass sizes it tries, how it follows the timings it is given
(a fake clock: no test here measures or asserts a speed), and that it never changes the counts."""

import torch

from rsbench import SmoothedClassifier
from rsbench.tuning import PassTuner, available_cpus, cgroup_cpu_quota, thread_choices


def test_thread_choices_are_powers_of_two_and_the_limit():
    assert thread_choices(1) == (1,)
    assert thread_choices(2) == (1, 2)
    assert thread_choices(6) == (1, 2, 4, 6)


def test_cgroup_quota_caps_the_cpus(tmp_path):
    assert cgroup_cpu_quota(tmp_path) is None  # no cpu.max: unknown
    (tmp_path / "cpu.max").write_text("max 100000\n")
    assert cgroup_cpu_quota(tmp_path) is None
    (tmp_path / "cpu.max").write_text("150000 100000\n")
    assert cgroup_cpu_quota(tmp_path) == 1.5
    assert available_cpus() >= 1


def run(tuner: PassTuner, cost, passes: int) -> list:
    """Drive the tuner for ``passes`` passes with ``cost(choice)`` seconds per row; the choices it made."""
    chosen = []
    for _ in range(passes):
        choice = tuner.choose()
        tuner.observe(choice, choice.rows, cost(choice) * choice.rows)
        chosen.append((choice.threads, choice.rows))
    return chosen


def test_tuner_tries_everything_then_keeps_the_fastest_and_follows_a_change():
    tuner = PassTuner((1, 2), (64, 128, 256))
    quiet = {(1, 64): 2.0, (1, 128): 1.9, (1, 256): 2.0, (2, 64): 1.1, (2, 128): 1.0, (2, 256): 1.2}
    chosen = run(tuner, lambda c: quiet[c.threads, c.rows], 400)
    assert sorted(chosen[:6]) == sorted(quiet)  # each choice once, first
    assert (tuner.best.threads, tuner.best.rows) == (2, 128)
    assert chosen[-100:].count((2, 128)) >= 90  # exploring the others takes a small share
    # another process takes a core: two threads now wait for each other at every step of the pass
    busy = {key: value * (6.0 if key[0] == 2 else 1.0) for key, value in quiet.items()}
    run(tuner, lambda c: busy[c.threads, c.rows], 400)
    assert (tuner.best.threads, tuner.best.rows) == (1, 128)
    run(tuner, lambda c: quiet[c.threads, c.rows], 1000)  # and back when it leaves
    assert (tuner.best.threads, tuner.best.rows) == (2, 128)


def test_a_thread_count_twice_as_slow_tries_no_other_pass_size_at_the_start():
    tuner = PassTuner((1, 2), (128, 64, 256))
    chosen = run(tuner, lambda c: 1.0 if c.threads == 1 else 5.0, 4)
    assert chosen == [(1, 128), (2, 128), (1, 64), (1, 256)]


def test_exploring_costs_about_the_explore_share_of_time():
    tuner = PassTuner((1, 2), (64, 128, 256))
    run(tuner, lambda c: 1.0 if c.threads == 1 else 10.0, 2000)
    assert tuner.explore_seconds <= 2 * PassTuner.EXPLORE_SHARE * tuner.total_seconds


def test_a_short_last_pass_is_not_taken_as_the_choice_s_speed():
    tuner = PassTuner((1,), (256,))
    choice = tuner.choose()
    tuner.observe(choice, 8, 1.0)  # 8 of 256 rows: overheads, not the pass size's speed
    assert not choice.seconds_per_row and tuner.passes == 1


def test_tuned_sampling_gives_the_counts_of_fixed_passes_and_restores_the_thread_count():
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(16, 3))
    xs = torch.rand(2, 1, 4, 4)
    threads = torch.get_num_threads()
    tuned = SmoothedClassifier(model, 3, 0.5)
    counts = [tuned.sample_counts_many(xs, 2000, 700, [torch.Generator().manual_seed(k) for k in range(2)])]
    assert torch.get_num_threads() == threads
    fixed = SmoothedClassifier(model, 3, 0.5, forward_batch=128)
    counts.append(fixed.sample_counts_many(xs, 2000, 700, [torch.Generator().manual_seed(k) for k in range(2)]))
    assert torch.equal(counts[0], counts[1]) and counts[0].sum().item() == 4000
    tuner = tuned.tuner(xs)
    assert tuner is not None and tuner.passes > 0
    assert max(c.threads for c in tuner.choices) <= min(threads, available_cpus())


def test_the_thread_limit_follows_torch_s_setting():
    model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(16, 3))
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        g = SmoothedClassifier(model, 3, 0.5)
        g.sample_counts(torch.rand(1, 4, 4), 300, 100)
        assert {c.threads for c in g.tuner(torch.rand(1, 1, 4, 4)).choices} == {1}
    finally:
        torch.set_num_threads(threads)
