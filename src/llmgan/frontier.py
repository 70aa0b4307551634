"""The oracle quality–diversity frontier: each run's points against temperature-tuned MLE.

Caccia et al. (ICLR 2020) showed that a language GAN's single oracle-NLL number says little, because
sampling MLE colder buys the same quality for diversity. So every run is compared with MLE's whole
temperature curve: a point (``test_nll`` = NLL_test of the temperature-scaled model, diversity;
``oracle_nll`` = NLL_oracle of its samples, quality; both lower is better) has a **frontier gap** =
its ``oracle_nll`` minus MLE's at the same ``test_nll``, interpolated linearly along MLE's curve.
Negative: better than temperature-tuned MLE at that diversity.

MLE's curve is its Pareto-efficient part: above the temperature of lowest ``test_nll``, both NLLs
rise, so those points never set the reference (at equal diversity the colder branch is better).
A point whose ``test_nll`` lies outside MLE's frontier range has no gap; it is reported as ``left``
(more diverse than any MLE point) or ``right`` (less diverse than MLE's coldest point).

Rows are dicts with at least ``run``, ``temperature``, ``oracle_nll``, ``test_nll`` (the rows of
:func:`llmgan.sweep.sweep` or of ``oracle_frontier.csv``).
"""

from __future__ import annotations

import bisect
import csv
import math
import os
from collections.abc import Sequence

from llmgan.errors import ConfigError

CSV_FIELDS = ("run", "algorithm", "seed", "temperature", "oracle_nll", "test_nll")


def pareto_curve(points: Sequence[tuple[float, float]]) -> list[tuple[float, float]]:
    """(test_nll, oracle_nll) points -> their Pareto-efficient subset, sorted by test_nll (ascending),
    with oracle_nll strictly decreasing along it."""
    clean = sorted((float(x), float(y)) for x, y in points if math.isfinite(x) and math.isfinite(y))
    out: list[tuple[float, float]] = []
    for x, y in clean:
        if not out or y < out[-1][1]:  # sorted by (x, y): at equal x the better y comes first
            out.append((x, y))
    return out


def interpolate(curve: Sequence[tuple[float, float]], x: float) -> float | None:
    """The curve's oracle_nll at test_nll ``x`` (linear between neighbours); None outside its range."""
    if not curve:
        return None
    xs = [p[0] for p in curve]
    if x < xs[0] or x > xs[-1]:
        return None
    i = bisect.bisect_left(xs, x)
    if xs[i] == x:
        return curve[i][1]
    (x0, y0), (x1, y1) = curve[i - 1], curve[i]
    return y0 + (y1 - y0) * (x - x0) / (x1 - x0)


def frontier_gaps(reference: Sequence[dict], rows: Sequence[dict]) -> list[dict]:
    """Every row with ``mle_oracle_nll`` (MLE's curve at its test_nll), ``gap`` (its oracle_nll minus
    that; None outside the range) and ``position`` (``on``, ``left`` or ``right`` of MLE's range)."""
    curve = pareto_curve([(float(r["test_nll"]), float(r["oracle_nll"])) for r in reference])
    if len(curve) < 2:
        raise ConfigError("frontier: MLE's curve needs at least two temperatures on its Pareto front")
    out = []
    for r in rows:
        x, y = float(r["test_nll"]), float(r["oracle_nll"])
        ref = interpolate(curve, x)
        pos = "on" if ref is not None else ("left" if x < curve[0][0] else "right")
        out.append({**r, "mle_oracle_nll": ref, "gap": None if ref is None else y - ref, "position": pos})
    return out


def summarise(gapped: Sequence[dict]) -> list[dict]:
    """Per run: its best (lowest) gap with the temperature where it occurs, its gap at T = 1, and how
    many of its points lie outside MLE's range."""
    by_run: dict[str, list[dict]] = {}
    for r in gapped:
        by_run.setdefault(str(r["run"]), []).append(r)
    out = []
    for name, rs in by_run.items():
        inside = [r for r in rs if r["gap"] is not None]
        best = min(inside, key=lambda r: r["gap"]) if inside else None
        at1 = [r for r in inside if abs(float(r["temperature"]) - 1.0) < 1e-9]
        out.append({
            "run": name, "algorithm": rs[0].get("algorithm", name), "seed": rs[0].get("seed"),
            "points": len(rs), "outside": len(rs) - len(inside),
            "best_gap": None if best is None else best["gap"],
            "best_temperature": None if best is None else float(best["temperature"]),
            "gap_at_1": at1[0]["gap"] if at1 else None,
        })
    return out


def noise_band(gaps: Sequence[float]) -> float:
    """Half-width of the seed-noise band: the largest |gap| of MLE's other seeds against the reference
    seed's curve (0 when there is only one seed)."""
    vals = [abs(g) for g in gaps if g is not None and math.isfinite(g)]
    return max(vals) if vals else 0.0


def read_csv(path: str) -> list[dict]:
    with open(path, newline="", encoding="utf-8") as f:
        rows = list(csv.DictReader(f))
    missing = [c for c in CSV_FIELDS if rows and c not in rows[0]]
    if missing:
        raise ConfigError(f"{path}: missing column(s) {', '.join(missing)} (expected {', '.join(CSV_FIELDS)})")
    for r in rows:
        for k in ("temperature", "oracle_nll", "test_nll"):
            r[k] = float(r[k])
    return rows


def write_csv(rows: Sequence[dict], path: str) -> None:
    with open(path, "w", newline="", encoding="utf-8") as f:
        w = csv.DictWriter(f, fieldnames=list(CSV_FIELDS), extrasaction="ignore", lineterminator="\n")
        w.writeheader()
        for r in rows:
            w.writerow({k: (f"{r[k]:.4f}" if isinstance(r[k], float) and k != "temperature" else r[k])
                        for k in CSV_FIELDS})


def merge_csv(rows: Sequence[dict], path: str) -> list[dict]:
    """Write ``rows`` into the CSV at ``path``, replacing the rows of the runs they name and keeping every
    other run's (several benchmarks write points into one file); returns the merged rows."""
    names = {r["run"] for r in rows}
    old = read_csv(path) if os.path.isfile(path) else []
    merged = [r for r in old if r["run"] not in names] + list(rows)
    write_csv(merged, path)
    return merged


def _f(v, signed: bool = False) -> str:
    if v is None:
        return "outside"
    return f"{v:+.3f}" if signed else f"{v:.3f}"


def gap_markdown(reference: Sequence[dict], rows: Sequence[dict], noise: float = 0.0) -> str:
    """The frontier-gap table: per run, best gap (and its T), gap at T=1, points outside MLE's range,
    and whether the best gap exceeds the seed-noise band."""
    summ = summarise(frontier_gaps(reference, rows))
    lines = ["| run | algorithm | seed | best gap | at T | gap at T=1 | outside MLE's range | beyond noise |",
             "|---|---|---|---|---|---|---|---|"]
    for s in summ:
        g = s["best_gap"]
        beyond = "" if g is None else ("yes, better" if g < -noise else ("yes, worse" if g > noise else "no"))
        t = "" if s["best_temperature"] is None else f"{s['best_temperature']:g}"
        lines.append(f"| {s['run']} | {s['algorithm']} | {s['seed']} | {_f(g, True)} | {t} | "
                     f"{_f(s['gap_at_1'], True)} | {s['outside']}/{s['points']} | {beyond} |")
    return "\n".join(lines)


def plot_frontier(reference: Sequence[dict], rows: Sequence[dict], path: str, title: str = "") -> None:
    """MLE's temperature curve (line) and every other run's points, labelled with their temperature."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(8, 5.5))
    ref = sorted(reference, key=lambda r: float(r["temperature"]))
    ax.plot([float(r["test_nll"]) for r in ref], [float(r["oracle_nll"]) for r in ref], "k-o", ms=3,
            label=f"MLE ({ref[0]['run']}), T {float(ref[0]['temperature']):g}–{float(ref[-1]['temperature']):g}")
    by_run: dict[str, list[dict]] = {}
    for r in rows:
        by_run.setdefault(str(r["run"]), []).append(r)
    markers = "sD^v<>pPX*h"
    for i, (name, rs) in enumerate(by_run.items()):
        rs = sorted(rs, key=lambda r: float(r["temperature"]))
        ax.plot([float(r["test_nll"]) for r in rs], [float(r["oracle_nll"]) for r in rs],
                marker=markers[i % len(markers)], ls=":", lw=0.8, ms=5, label=name)
    ax.set_xlabel("NLL_test of the temperature-scaled model (diversity, lower is better)")
    ax.set_ylabel("NLL_oracle of samples (quality, lower is better)")
    ax.set_title(title or "Oracle frontier: every run against temperature-tuned MLE", fontsize=10)
    ax.grid(alpha=0.3)
    # legend outside the axes so it never covers data
    ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0), borderaxespad=0)
    fig.tight_layout()
    fig.savefig(path, dpi=110, bbox_inches="tight")
    plt.close(fig)
