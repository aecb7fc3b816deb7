"""The dashboard's numbers without a server: the review rule on constructed series, the course's
periods across year boundaries, between-session variability, model-change markers."""

from __future__ import annotations

import random
import statistics
from datetime import UTC, datetime, timedelta

import pytest

from hub.dashboard import course, flags
from hub.dashboard.records import SessionPoint

P = flags.RuleParams()
FIVE = flags.RuleParams(baseline_sessions=5)


def series(values, coverage=1.0, start=datetime(2026, 1, 5, 9, tzinfo=UTC)):
    return [(f"d/s{i}", (start + timedelta(weeks=i)).isoformat().replace("+00:00", "Z"), v,
             coverage if not isinstance(coverage, list) else coverage[i]) for i, v in enumerate(values)]


def noisy(n, rng, mean=0.2, sd=0.1):
    return [mean + rng.gauss(0, sd) for _ in range(n)]


def test_sustained_drop_is_flagged_within_a_few_sessions_with_its_coverage():
    rng = random.Random(1)
    values = noisy(10, rng) + noisy(6, rng, mean=-0.2)  # a drop of 4 SD after ten sessions
    chart = flags.evaluate(series(values, coverage=0.8))
    assert chart.baseline_keys == tuple(f"d/s{i}" for i in range(8))
    assert len(chart.flags) == 1
    flag = chart.flags[0]
    first = int(flag.key.split("s")[-1])
    assert 10 < first <= 13, flag  # raised after the drop, within three sessions
    assert flag.run == (f"d/s{first - 1}", flag.key)  # two sessions in a row below the limit
    assert flag.coverage == pytest.approx(0.8)
    assert flag.ewma < flag.lcl


def test_noise_and_single_bad_sessions_raise_few_flags():
    raised = 0
    for seed in range(200):
        rng = random.Random(seed)
        values = noisy(30, rng)
        if seed % 4 == 0:
            values[20] = values[20] - 0.35  # one bad session (3.5 SD), then back to normal
        raised += bool(flags.evaluate(series(values)).flags)
    # 200 stable courses of 30 sessions: a rule that flagged noise would fire in most of them
    assert raised <= 24, raised  # bench/bench_review_rule.py: about 9 % of stable courses


def test_gradual_decline_is_flagged():
    values = [0.3 - 0.03 * max(0, i - 8) + 0.02 * (-1) ** i for i in range(30)]
    chart = flags.evaluate(series(values))
    assert chart.flags and chart.flags[0].at > series(values)[8][1]


def test_short_history_never_flags():
    chart = flags.evaluate(series([0.5, 0.4, -0.9, -0.9, -0.9, -0.9, -0.9]))
    assert chart.baseline_pending and not chart.flags and chart.points == []


def test_missing_and_low_coverage_sessions_are_skipped_not_imputed():
    values = [0.2, 0.25, 0.15, 0.2, 0.22, 0.2, None, -0.5, -0.5, -0.6]
    coverage = [1, 1, 1, 1, 1, 1, 1, 0.1, 1, 1]  # s7 is a near-empty session: it does not count
    chart = flags.evaluate(series(values, coverage=coverage), FIVE)
    assert chart.skipped == ["d/s6", "d/s7"]
    assert [p.key for p in chart.points][-3:] == ["d/s5", "d/s8", "d/s9"]
    assert [f.key for f in chart.flags] == ["d/s9"]  # s8 and s9 in a row: the gap does not break the run
    # a low-coverage baseline session is not part of the baseline either
    chart = flags.evaluate(series([0.2, 0.2, -0.9, 0.2, 0.3, 0.2, 0.25], coverage=[1, 1, 0.0, 1, 1, 1, 1]), FIVE)
    assert "d/s2" not in chart.baseline_keys and chart.baseline_mean == pytest.approx(0.22)


def test_recovery_then_a_second_drop_raises_a_second_flag():
    rng = random.Random(3)
    values = noisy(8, rng) + noisy(4, rng, mean=-0.3) + noisy(12, rng) + noisy(4, rng, mean=-0.3)
    chart = flags.evaluate(series(values))
    assert len(chart.flags) == 2
    assert flags.open_flags(chart, {chart.flags[0].key}) == [chart.flags[1]]


def test_flat_baseline_uses_the_sd_floor():
    chart = flags.evaluate(series([0.2] * 8 + [0.19, 0.18, 0.2]))
    assert chart.baseline_sd == P.sd_floor and not chart.flags


def test_control_limit_formula():
    chart = flags.evaluate(series([0.0, 0.1, -0.1, 0.05, -0.05, 0.0]), FIVE)
    mu, sigma = chart.baseline_mean, chart.baseline_sd
    assert sigma == pytest.approx(statistics.stdev([0.0, 0.1, -0.1, 0.05, -0.05]))
    p = chart.points[-1]
    assert p.ewma == pytest.approx(0.3 * 0.0 + 0.7 * mu)
    assert p.lcl == pytest.approx(mu - 3.0 * sigma * (0.3 / 1.7 * (1 - 0.7 ** 2)) ** 0.5)


def point(at: str, valence: float | None, device: str = "d1", version: str = "1.0", key: int = 0) -> SessionPoint:
    return SessionPoint(device_id=device, session_id=f"s{key}", at=at, end_event="ended", duration_s=600,
                        windows=60, windows_with_mood=60, summary_event_id=f"e{key}", valence=valence, arousal=0.1,
                        valence_sd=0.2, arousal_sd=0.1, dominant="neutral", probs=None,
                        dominant_windows={"neutral": 40, "sad": 20}, coverage={"mood": 1.0},
                        prosody={"f0_sd_st": 2.0}, software_version="0.9", models={"face": version})


def test_periods_are_correct_across_year_boundaries():
    days = ["2026-12-28T10:00:00.000Z", "2026-12-31T23:59:00.000Z", "2027-01-01T00:30:00.000Z",
            "2027-01-04T08:00:00.000Z", "2025-12-29T08:00:00.000Z"]
    points = sorted((point(d, 0.1 * i, key=i) for i, d in enumerate(days)), key=lambda p: p.at)
    weeks = {r["period"]: r["sessions"] for r in course.period_rows(points, "week")}
    assert weeks == {"2026-W01": 1, "2026-W53": 3, "2027-W01": 1}  # 2025-12-29 is in ISO week 1 of 2026
    months = [r["period"] for r in course.period_rows(points, "month")]
    assert months == ["2025-12", "2026-12", "2027-01"]
    years = {r["period"]: r["sessions"] for r in course.period_rows(points, "year")}
    assert years == {"2025": 1, "2026": 2, "2027": 2}
    row = course.period_rows(points, "month")[1]
    assert row["mood_share"] == {"sad": pytest.approx(1 / 3), "neutral": pytest.approx(2 / 3)}


def test_variability_and_model_change_markers():
    vals = [0.1, 0.3, 0.2, None, 0.5]
    assert course.mssd(vals) == pytest.approx(((0.2) ** 2 + (0.1) ** 2 + (0.3) ** 2) / 3)
    assert course.mssd([0.1]) is None
    points = [point(f"2026-0{i + 1}-01T10:00:00.000Z", 0.1, device="d1" if i % 2 else "d2",
                    version="2.0" if i >= 3 else "1.0", key=i) for i in range(6)]
    changes = course.model_changes(points)
    assert [(c["device_id"], c["at"][:7]) for c in changes] == [("d1", "2026-04"), ("d2", "2026-05")]
    chart = flags.evaluate([(p.key, p.at, p.valence, 1.0) for p in points], FIVE)
    data = course.course(points, chart, "month")
    assert data["between_sd"] == pytest.approx(0.0) and data["model_changes"] == changes
    assert data["baseline"]["n"] == 5


def test_timeline_lines_break_where_a_window_has_no_estimate():
    from hub.dashboard import charts

    def w(i, mood):
        return {"start_s": 10.0 * i, "end_s": 10.0 * (i + 1), "has_mood": mood, "dominant": "sad" if mood else None,
                "valence": -0.3 if mood else None, "arousal": 0.1 if mood else None}
    svg = str(charts.timeline([w(0, True), w(1, True), w(2, False), w(3, True), w(4, True), w(5, False), w(6, True)]))
    assert svg.count("<polyline") == 4  # valence and arousal, each in two runs
    assert svg.count("<circle") == 2  # the lone last window of each line
    assert svg.count(f'fill="{charts.NO_MOOD_COLOUR}"') == 2  # the strip shows the gaps
