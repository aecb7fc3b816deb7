"""The "review suggested" rule: an EWMA chart of session mean valence against the patient's baseline.

Rule (parameters in `[dashboard]` of the hub config, defaults here; documented in hub/dashboard/README.md):

1. A session counts when it has a mean valence and its mood coverage (windows with a mood
   estimate / windows) is at least `min_coverage`; other sessions are skipped, never imputed,
   and do not break a run (a missed or empty session is no evidence either way).
2. Baseline: the first `baseline_sessions` counting sessions: mean mu0 and sample SD sigma
   (at least `sd_floor`, so a very steady baseline does not make every wobble a breach).
3. From the next counting session on: z_t = lam * x_t + (1 - lam) * z_{t-1}, z_0 = mu0, and the
   lower control limit LCL_t = mu0 - L * sigma * sqrt(lam / (2 - lam) * (1 - (1 - lam)^(2t))).
4. A run is consecutive counting sessions with z_t < LCL_t; a run reaching `run_length`
   sessions raises one flag, keyed by the session where it reached that length. The flag stays
   open until a clinician acknowledges it with a note; a new flag needs a new run (the EWMA back
   at or above the limit, then below it again).
5. Fewer counting sessions than the baseline needs: no flag can be raised ("baseline pending").

EWMA rather than a Shewhart chart on single sessions because it accumulates small sustained
shifts and damps one-off bad sessions (Schat et al. 2021; Smit et al. 2022, HUB_RESEARCH.md §4).
It is a prompt to look at the course, never a diagnosis.

Defaults (8 baseline sessions, lam 0.3, L 3.0, run 2) measured by bench/bench_review_rule.py on
simulated courses (normal noise of one baseline SD): on 25 stable sessions after the baseline 9 %
of courses raise a flag at least once, and a sustained drop of 2 SD is flagged in 91 % of courses
within 10 sessions, at a median of the 4th session after the drop. A 5-session baseline flagged
17-26 % of stable courses (its SD estimate is too often small), hence 8.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field


@dataclass(frozen=True)
class RuleParams:
    baseline_sessions: int = 8
    lam: float = 0.3
    limit_sds: float = 3.0
    run_length: int = 2
    min_coverage: float = 0.3
    sd_floor: float = 0.05


@dataclass(frozen=True)
class ChartPoint:
    key: str
    at: str
    value: float
    ewma: float | None  # None inside the baseline
    lcl: float | None
    below: bool
    coverage: float | None


@dataclass(frozen=True)
class Flag:
    key: str  # the session that completed the run
    at: str
    run: tuple[str, ...]  # the sessions of the run so far
    coverage: float | None  # mean mood coverage over the run
    ewma: float
    lcl: float


@dataclass
class Chart:
    params: RuleParams
    baseline_mean: float | None = None
    baseline_sd: float | None = None
    baseline_keys: tuple[str, ...] = ()
    points: list[ChartPoint] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)  # sessions that did not count (no mood, low coverage)
    flags: list[Flag] = field(default_factory=list)

    @property
    def baseline_pending(self) -> bool:
        return self.baseline_mean is None


def evaluate(series: Iterable[tuple[str, str, float | None, float | None]],
             params: RuleParams = RuleParams()) -> Chart:
    """The chart over (key, time, mean valence, mood coverage), oldest first."""
    chart = Chart(params)
    counted: list[tuple[str, str, float, float | None]] = []
    for key, at, value, coverage in series:
        if value is None or not math.isfinite(value) or (coverage is not None and coverage < params.min_coverage):
            chart.skipped.append(key)
            continue
        counted.append((key, at, float(value), coverage))
    if len(counted) < params.baseline_sessions or params.baseline_sessions < 2:
        return chart
    base = counted[:params.baseline_sessions]
    mu0 = statistics.fmean(v for _, _, v, _ in base)
    sigma = max(params.sd_floor, statistics.stdev(v for _, _, v, _ in base))
    chart.baseline_mean, chart.baseline_sd = mu0, sigma
    chart.baseline_keys = tuple(k for k, _, _, _ in base)
    for key, at, value, coverage in base:
        chart.points.append(ChartPoint(key, at, value, None, None, False, coverage))
    lam, z = params.lam, mu0
    run: list[tuple[str, float | None]] = []
    for t, (key, at, value, coverage) in enumerate(counted[params.baseline_sessions:], start=1):
        z = lam * value + (1 - lam) * z
        lcl = mu0 - params.limit_sds * sigma * math.sqrt(lam / (2 - lam) * (1 - (1 - lam) ** (2 * t)))
        below = z < lcl
        chart.points.append(ChartPoint(key, at, value, z, lcl, below, coverage))
        if not below:
            run = []
            continue
        run.append((key, coverage))
        if len(run) == params.run_length:
            covs = [c for _, c in run if c is not None]
            chart.flags.append(Flag(key=key, at=at, run=tuple(k for k, _ in run),
                                    coverage=statistics.fmean(covs) if covs else None, ewma=z, lcl=lcl))
    return chart


def open_flags(chart: Chart, acknowledged: Sequence[str] | set[str]) -> list[Flag]:
    return [f for f in chart.flags if f.key not in acknowledged]
