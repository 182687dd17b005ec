"""Matched controls: the temperature at which LoRA's diversity equals polychromic's, and the
quality-diversity frontiers that sampling temperature and adapter scale trace.

A diversity gain is only worth something if temperature cannot buy it: LoRA sampled hotter
is more diverse too. So the protocol compares polychromic with LoRA at the temperature where
LoRA's independent diversity, on val, equals polychromic's at the domain's temperature
(`matched_temperature`), and draws each system's frontier over temperature and over adapter
scale (`frontier_points`: one point per setting, means over prompts with bootstrap CIs).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from polychromic import stats


def matched_temperature(curve: Sequence[tuple[float, float]], target: float,
                        decimals: int = 2) -> dict:
    """The temperature where `curve` ((temperature, diversity) points, LoRA's on val) reaches
    `target` (polychromic's diversity there): linear interpolation between the first two
    neighbouring grid points that bracket it, in increasing temperature. A target outside
    the curve's range gets the nearest end of the grid (`outside`: "below" or "above")."""
    points = sorted(curve)
    if len(points) < 2:
        raise ValueError("matching needs the diversity at two temperatures at least")
    temperatures, values = zip(*points, strict=True)
    for (t0, v0), (t1, v1) in zip(points, points[1:], strict=False):
        if min(v0, v1) <= target <= max(v0, v1):
            share = 0.0 if v1 == v0 else (target - v0) / (v1 - v0)
            return {"temperature": round(t0 + share * (t1 - t0), decimals), "outside": None,
                    "bracket": [t0, t1]}
    low = int(np.argmin(values))
    high = int(np.argmax(values))
    below = target < values[low]
    end = temperatures[low] if below else temperatures[high]
    return {"temperature": round(end, decimals), "outside": "below" if below else "above",
            "bracket": None}


def frontier_points(runs: Sequence[dict], metrics: Sequence[str], resamples: int = 10_000,
                    seed: int = 0) -> list[dict]:
    """One point per run (a system at one setting): each metric's mean over prompts and its
    percentile bootstrap 95% CI. `runs`: {"system", "knob" ("temperature" or
    "adapter_scale"), "value", "scores": per-prompt score rows}."""
    points = []
    for run in runs:
        point = {key: run[key] for key in ("system", "knob", "value")}
        for metric in metrics:
            values = [row[metric] for row in run["scores"] if row.get(metric) is not None]
            if not values:
                point[metric] = {"mean": None, "ci95": None}
                continue
            ci = stats.bootstrap_ci(values, np.zeros(len(values)), resamples, seed=seed)
            point[metric] = {"mean": float(np.mean(values)), "ci95": list(ci)}
        points.append(point)
    return points


def above_frontier(point: dict, frontier: Sequence[dict], x: str, y: str) -> dict:
    """Whether `point` lies above the piecewise-linear frontier through `frontier`'s points
    (at the point's x): the gap in y and whether the point's CI clears the line (its CI's
    lower end above it), or None where the frontier does not reach its x."""
    line = sorted((p[x]["mean"], p[y]["mean"]) for p in frontier
                  if p[x]["mean"] is not None and p[y]["mean"] is not None)
    px, py = point[x]["mean"], point[y]["mean"]
    if px is None or py is None or len(line) < 2 or not line[0][0] <= px <= line[-1][0]:
        return {"gap": None, "clears": None}
    xs, ys = zip(*line, strict=True)
    level = float(np.interp(px, xs, ys))
    low = (point[y]["ci95"] or [py])[0]
    return {"gap": py - level, "clears": low > level}
