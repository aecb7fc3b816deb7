"""The review rule's false alarms and detection delay on simulated courses (hub/dashboard/flags.py).

Each course: session means with normal noise (SD 0.1) around 0.2. Stable courses have 25
sessions after the baseline; drop courses fall by 2 SD five sessions after the baseline and stay
there for 10 sessions. Reports, per parameter set, the share of stable courses with any flag, the
share of drops flagged, and the median number of sessions from the drop to the flag.

    .venv/bin/python bench/bench_review_rule.py [--courses 300]
"""

from __future__ import annotations

import argparse
import random
import statistics
from datetime import UTC, datetime, timedelta

from hub.dashboard import flags


def course(values: list[float]) -> list[tuple[str, str, float, float]]:
    start = datetime(2026, 1, 5, tzinfo=UTC)
    return [(f"s{i}", (start + timedelta(weeks=i)).isoformat(), v, 1.0) for i, v in enumerate(values)]


def measure(params: flags.RuleParams, courses: int) -> tuple[float, float, float | None]:
    nb = params.baseline_sessions
    false_alarms, delays = 0, []
    for seed in range(courses):
        rng = random.Random(seed)
        stable = [0.2 + rng.gauss(0, 0.1) for _ in range(nb + 25)]
        false_alarms += bool(flags.evaluate(course(stable), params).flags)
        rng = random.Random(10_000 + seed)
        drop = [0.2 + rng.gauss(0, 0.1) for _ in range(nb + 5)] + [0.0 + rng.gauss(0, 0.1) for _ in range(10)]
        hits = [int(f.key[1:]) - (nb + 5) + 1 for f in flags.evaluate(course(drop), params).flags
                if int(f.key[1:]) >= nb + 5]
        if hits:
            delays.append(hits[0])
    return false_alarms / courses, len(delays) / courses, statistics.median(delays) if delays else None


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--courses", type=int, default=300)
    args = parser.parse_args()
    print("baseline  L    lambda  false-alarm  2SD-drop-flagged  median-delay")
    for nb in (5, 8, 10):
        for limit in (2.5, 3.0, 3.5):
            for lam in (0.2, 0.3):
                fa, hit, delay = measure(flags.RuleParams(baseline_sessions=nb, limit_sds=limit, lam=lam), args.courses)
                mark = "  <- default" if flags.RuleParams() == flags.RuleParams(nb, lam, limit) else ""
                print(f"{nb:8d}  {limit:.1f}  {lam:.1f}     {fa:10.2f}  {hit:16.2f}  {delay}{mark}")


if __name__ == "__main__":
    main()
