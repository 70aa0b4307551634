"""A self-contained comparison report of one or more runs: ``index.html`` + ``report.md`` + PNGs.

    out/
      index.html       metric table, quality–diversity plot, training curves, samples
      report.md        the same in Markdown
      curves/*.png     one plot per logged quantity, all runs on the same axes
      sweep/           sweep.csv, sweep.md, sweep.png (run here, or copied from --sweep DIR)

Images are referenced by relative paths, so the folder can be moved, zipped or served as it is.
Everything shown comes from the run directories (config, metrics.jsonl, latest checkpoint); the
evaluation and samples are seeded, so building the report twice gives the same numbers.
"""

from __future__ import annotations

import html
import math
import os
import shutil
import time
from collections.abc import Sequence
from dataclasses import dataclass, field

import torch

from llmgan.errors import LLMGanError

__all__ = ["CURVES", "DEFAULT_REPORT_TEMPERATURES", "build_report", "final_metrics", "plot_curves"]

DEFAULT_REPORT_TEMPERATURES = "0.5:1.5:5"  # a small grid: the report is an overview, not the full sweep

# Direction of each metric family, for the arrows in the table header and for marking the best run.
_LOWER = ("_nll", "self_bleu", "fed", "nll_gen")
_HIGHER = ("bleu", "distinct", "mauve")


# Metrics whose best value is a target, not an extreme: a detector AUROC of 0.5 means the detector
# cannot tell generated from real text.
_TARGET = {"detector_auroc": 0.5}


def _direction(name: str) -> int:
    """-1: lower is better, +1: higher is better, 0: no preference or a target (see ``_TARGET``)."""
    if name in _TARGET:
        return 0
    if "self_bleu" in name or any(name.endswith(s) or name.startswith(s) for s in _LOWER):
        return -1
    if any(name.startswith(s) for s in _HIGHER):
        return 1
    return 0


@dataclass(frozen=True)
class Curve:
    """One training-curve plot: which logged keys, from which phases, against which x-axis."""

    stem: str  # file name (curves/<stem>.png)
    title: str
    ylabel: str
    series: tuple[tuple[tuple[str, ...], str, str], ...]  # (phases, key, series label); label styles the line
    x: str  # "step" (global step), "round" (adversarial round), "d" (D refreshes: pre-training <= 0, then rounds)


CURVES: tuple[Curve, ...] = (
    Curve("mle_loss", "Generator MLE loss (teacher-forced NLL per token)", "NLL per token",
          ((("mle",), "loss", ""),), "step"),
    Curve("g_loss", "Generator loss in adversarial rounds", "G loss", ((("adversarial",), "g_loss", ""),), "round"),
    Curve("d_loss", "Discriminator loss (x <= 0: D pre-training refreshes, then adversarial rounds)", "D loss",
          ((("d_pretrain", "adversarial"), "d_loss", ""),), "d"),
    Curve("d_acc", "Discriminator accuracy: real (solid), generated (dashed), relativistic pairs (dotted)", "accuracy",
          ((("d_pretrain", "adversarial"), "d_acc_real", "real"),
           (("d_pretrain", "adversarial"), "d_acc_fake", "fake"),
           # relativistic losses (RelGAN) score pairs: P(real scored above generated), dotted
           (("d_pretrain", "adversarial"), "d_acc_rel", "relativistic")), "d"),
    Curve("reward_mean", "Mean reward of generated sequences (adversarial rounds)", "mean reward",
          ((("adversarial",), "reward_mean", ""),), "round"),
    Curve("oracle_nll", "Oracle NLL of generated samples (quality; lower is better)", "NLL_oracle",
          ((("eval", "final"), "oracle_nll", ""),), "step"),
    Curve("heldout_nll", "Held-out NLL: validation (solid) during training, test (x) at the end", "NLL per token",
          ((("eval",), "valid_nll", "valid"), (("final",), "test_nll", "test")), "step"),
)

_X_LABELS = {
    "step": "training step (MLE steps, then adversarial rounds)",
    "round": "adversarial round",
    "d": "adversarial round (<= 0: discriminator pre-training refreshes)",
}
_STYLES = {"": "-", "real": "-", "valid": "-", "fake": "--", "relativistic": ":", "test": "x"}


@dataclass
class _RunInfo:
    name: str
    run_dir: str
    records: list[dict]
    final: dict
    summary: dict
    evaluation: dict = field(default_factory=dict)
    samples: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    data_key: tuple = ()  # runs with equal keys were trained and scored on the same data


def final_metrics(records: Sequence[dict]) -> dict:
    """Numeric metrics of the last ``final`` record of metrics.jsonl (bookkeeping keys left out)."""
    last: dict = {}
    for r in records:
        if r.get("phase") == "final":
            last = r
    skip = {"step", "phase", "time", "epoch", "round"}
    return {k: v for k, v in last.items() if k not in skip and _is_number(v)}


def _is_number(v) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def _x_values(records: Sequence[dict], mode: str, phases: tuple[str, ...], key: str) -> tuple[list, list]:
    """x and y of one series; records without the key (or with a non-finite value) are skipped."""
    n_pre = max((r.get("refresh", 0) for r in records if r.get("phase") == "d_pretrain"), default=0)
    xs, ys = [], []
    for r in records:
        if r.get("phase") not in phases or not _is_number(r.get(key)) or not math.isfinite(r[key]):
            continue
        if mode == "step":
            x = r.get("step")
        elif mode == "round":
            x = r.get("round")
        else:  # pre-training refreshes all share one global step, so index them by refresh instead
            x = r.get("refresh", 0) - n_pre if r.get("phase") == "d_pretrain" else r.get("round")
        if _is_number(x):
            xs.append(x)
            ys.append(r[key])
    return xs, ys


def curve_data(runs: Sequence[tuple[str, list[dict]]], curve: Curve,
               offsets: dict[str, int] | None = None) -> list[tuple[str, str, list, list]]:
    """(run, series label, xs, ys) of every series of ``curve`` that has points."""
    data = []
    for name, records in runs:
        for phases, key, label in curve.series:
            xs, ys = _x_values(records, curve.x, phases, key)
            if curve.x == "step" and (offsets or {}).get(name):
                xs = [x + offsets[name] for x in xs]
            if xs:
                data.append((name, label, xs, ys))
    return data


def plot_curves(runs: Sequence[tuple[str, list[dict]]], out_dir: str,
                offsets: dict[str, int] | None = None) -> list[tuple[Curve, str]]:
    """One PNG per quantity that at least one run logged; returns (curve, path) for those written.

    ``offsets``: run name -> global steps to add on the step axis (a run started with
    ``train.init_from`` continues its parent's curve instead of starting again at 0)."""
    offsets = offsets or {}
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    os.makedirs(out_dir, exist_ok=True)
    colors = {name: plt.cm.tab10(i % 10) for i, (name, _) in enumerate(runs)}
    written = []
    for curve in CURVES:
        data = curve_data(runs, curve, offsets)
        if not data:
            continue
        fig, ax = plt.subplots(figsize=(8.5, 4.2))
        for name, label, xs, ys in data:
            style = _STYLES.get(label, "-")
            kw = {"markersize": 7, "markeredgewidth": 2} if style == "x" else {"linewidth": 1.4}
            if style != "x" and len(xs) == 1:
                style = "o"  # a single point would be an invisible line
            ax.plot(xs, ys, style, color=colors[name], label=f"{name} ({label})" if label else name, **kw)
        if curve.x == "d":
            ax.axvline(0.5, color="grey", linewidth=0.8, linestyle=":")  # D pre-training | adversarial
        if curve.x != "step":
            from matplotlib.ticker import MaxNLocator

            ax.xaxis.set_major_locator(MaxNLocator(integer=True))  # rounds and refreshes are whole numbers
        ax.set_title(curve.title, fontsize=10)
        ax.set_xlabel(_X_LABELS[curve.x])
        ax.set_ylabel(curve.ylabel)
        ax.grid(True, alpha=0.3)
        # outside the axes, so the legend never covers data
        ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1.0), borderaxespad=0)
        fig.tight_layout()
        path = os.path.join(out_dir, f"{curve.stem}.png")
        fig.savefig(path, dpi=100, bbox_inches="tight")
        plt.close(fig)
        written.append((curve, path))
    return written


def _summary(run) -> dict:
    cfg = run.cfg
    ckpt = os.path.basename(os.path.normpath(run.checkpoint))
    return {
        "algorithm": cfg.adversarial.algorithm or "mle",
        "generator": cfg.generator.name,
        "params": run.generator.num_parameters(),
        "checkpoint": ckpt,
        "data": "oracle" if cfg.data.oracle else cfg.data.tokenizer,
        "log_samples": cfg.eval.n_samples,  # sample count behind the training log's sampled metrics
    }


def _decode_samples(run, n: int, seed: int) -> list[str]:
    from llmgan.training.evaluation import ban_token_ids, sample_tokens

    tokens, lengths = sample_tokens(run.generator, n, run.max_len, rng=torch.Generator().manual_seed(seed),
                                    ban_ids=ban_token_ids(run.tokenizer, run.cfg.eval.ban_tokens))
    return [run.tokenizer.decode(row[:k]) for row, k in zip(tokens.tolist(), lengths.tolist())]


def _fmt(v) -> str:
    if v is None:
        return "—"
    if isinstance(v, float):
        return f"{v:.4f}" if abs(v) < 1e5 else f"{v:.4g}"
    if isinstance(v, int):
        return f"{v:,}"
    return str(v)


# Evaluation keys said once in the table's caption instead of as columns (a standard error is shown
# inside its metric's cell: "9.0440 ± 0.0120").
_NOT_COLUMNS = ("n_samples", "temperature", "bleu_references", "bleu_tokenizer")
# Above this many columns the table is printed transposed (one row per metric, one column per run):
# a text run's ~20 metric columns overflow a 1280 px page and hide behind a scroll bar.
_MAX_WIDE_COLUMNS = 12


def _cell(values: dict, key: str) -> str:
    v = _fmt(values.get(key))
    se = values.get(key + "_se")
    return f"{v} ± {se:.4f}" if _is_number(se) and values.get(key) is not None else v


def _init_offset(init_from: str | None) -> int:
    """Global step at which a run started with ``train.init_from`` took over from its parent: the
    checkpoint's own step (``.../step-0000123``) or the parent run's last logged step."""
    import re

    from llmgan.training.logging import read_metrics

    if not init_from:
        return 0
    m = re.match(r"step-(\d+)", os.path.basename(os.path.normpath(init_from)))
    if m:
        return int(m.group(1))
    steps = [r["step"] for r in read_metrics(init_from) if _is_number(r.get("step"))]
    return int(max(steps)) if steps else 0


def _columns(infos: Sequence[_RunInfo]) -> tuple[list[str], list[str], list[str]]:
    summary = list(dict.fromkeys(k for i in infos for k in i.summary))
    final = list(dict.fromkeys(k for i in infos for k in i.final))
    evaluation = list(dict.fromkeys(k for i in infos for k in i.evaluation
                                    if k not in _NOT_COLUMNS and not k.endswith("_se")))
    return summary, sorted(final, key=_column_rank), sorted(evaluation, key=_column_rank)


# Column order of the metric groups (oracle and text runs share one table, so a fixed order keeps
# the same metric in the same place whichever run comes first); unknown names keep their order last.
_ORDER = ("oracle_nll", "valid_nll", "test_nll", "nll_gen", "bleu", "self_bleu", "distinct", "fed", "mauve",
          "detector_auroc")


def _column_rank(key: str) -> int:
    ranks = [i for i, p in enumerate(_ORDER) if key == p or key.startswith(p + "_")]
    return max(ranks) if ranks else len(_ORDER)  # max: "self_bleu_2" matches self_bleu, not bleu


def _best(infos: Sequence[_RunInfo], group: str, key: str) -> set[int]:
    """Indices of the best run(s) in a column (bold in the table).

    Only runs on the same data are compared (an oracle NLL and a text NLL are different scales),
    and a data group needs at least two values to have a best.
    """
    d = _direction(key)
    if d == 0 and key not in _TARGET:
        return set()
    best: set[int] = set()
    for data_key in dict.fromkeys(i.data_key for i in infos):
        vals = [(i, getattr(info, group).get(key)) for i, info in enumerate(infos) if info.data_key == data_key]
        vals = [(i, v) for i, v in vals if _is_number(v) and math.isfinite(v)]
        if key in _TARGET:  # closest to the target is best
            vals = [(i, -abs(v - _TARGET[key])) for i, v in vals]
            d = 1
        if len(vals) >= 2:
            target = (min if d < 0 else max)(v for _, v in vals)
            best |= {i for i, v in vals if v == target}
    return best


def _header(key: str) -> str:
    if key in _TARGET:
        return f"{key} →{_TARGET[key]:g}"
    d = _direction(key)
    return key + (" ↓" if d < 0 else " ↑" if d > 0 else "")


_CSS = """
body { font-family: system-ui, -apple-system, Segoe UI, Helvetica, Arial, sans-serif; margin: 2em auto;
       max-width: 1200px; padding: 0 1em; color: #222; line-height: 1.4; }
h1 { font-size: 1.6em; margin-bottom: 0.2em; } h2 { border-bottom: 1px solid #ddd; padding-bottom: 0.2em; }
.meta { color: #666; font-size: 0.9em; }
.scroll { overflow-x: auto; }
table { border-collapse: collapse; font-size: 0.85em; }
th, td { border: 1px solid #ddd; padding: 4px 8px; text-align: right; white-space: nowrap; }
th { background: #f4f4f4; } td.name, th.name { text-align: left; font-weight: 600; }
th.group { text-align: center; background: #e9eef5; }
td.best { font-weight: 700; background: #eaf6ea; }
.grid { display: flex; flex-wrap: wrap; gap: 1em; }
.grid figure { margin: 0; flex: 1 1 520px; max-width: 600px; }
figure img { width: 100%; border: 1px solid #eee; } figcaption { font-size: 0.85em; color: #555; }
ol.samples { font-family: ui-monospace, Menlo, Consolas, monospace; font-size: 0.85em; background: #fafafa;
             border: 1px solid #eee; padding: 0.6em 0.6em 0.6em 2.8em; white-space: pre-wrap; }
.note { color: #a33; font-size: 0.9em; }
"""


def _html_table(infos: Sequence[_RunInfo], n_eval: str) -> str:
    summary, final, evaluation = _columns(infos)
    e = html.escape
    groups = [("setup", summary), ("final training log (metrics.jsonl)", final), (f"evaluation ({n_eval})", evaluation)]
    top = ['<th class="name" rowspan="2">run</th>']
    for label, cols in groups:
        if cols:
            top.append(f'<th class="group" colspan="{len(cols)}">{e(label)}</th>')
    sub = [f"<th>{e(_header(k) if g != 'setup' else k)}</th>" for g, cols in groups for k in cols]
    rows = []
    attr = {"setup": "summary", "final training log (metrics.jsonl)": "final"}
    for idx, info in enumerate(infos):
        cells = [f'<td class="name">{e(info.name)}</td>']
        for label, cols in groups:
            group = attr.get(label, "evaluation")
            for k in cols:
                best = group != "summary" and idx in _best(infos, group, k)
                cls = ' class="best"' if best else ""
                cells.append(f"<td{cls}>{e(_cell(getattr(info, group), k))}</td>")
        rows.append("<tr>" + "".join(cells) + "</tr>")
    if sum(len(cols) for _, cols in groups) > _MAX_WIDE_COLUMNS:
        return _html_table_transposed(infos, groups, attr)
    return (
        '<div class="scroll"><table>\n<thead><tr>' + "".join(top) + "</tr>\n<tr>" + "".join(sub)
        + "</tr></thead>\n<tbody>\n" + "\n".join(rows) + "\n</tbody></table></div>"
    )


def _html_table_transposed(infos, groups, attr) -> str:
    """One row per metric (grouped), one column per run: stays readable however many metrics."""
    e = html.escape
    head = '<th class="name">metric</th>' + "".join(f"<th>{e(i.name)}</th>" for i in infos)
    rows = []
    for label, cols in groups:
        if not cols:
            continue
        rows.append(f'<tr><th class="group" colspan="{len(infos) + 1}">{e(label)}</th></tr>')
        group = attr.get(label, "evaluation")
        for k in cols:
            cells = [f'<td class="name">{e(_header(k) if group != "summary" else k)}</td>']
            for idx, info in enumerate(infos):
                cls = ' class="best"' if group != "summary" and idx in _best(infos, group, k) else ""
                cells.append(f"<td{cls}>{e(_cell(getattr(info, group), k))}</td>")
            rows.append("<tr>" + "".join(cells) + "</tr>")
    return ('<div class="scroll"><table class="transposed">\n<thead><tr>' + head + "</tr></thead>\n<tbody>\n"
            + "\n".join(rows) + "\n</tbody></table></div>")


def _md_table(infos: Sequence[_RunInfo]) -> str:
    summary, final, evaluation = _columns(infos)
    if len(summary) + len(final) + len(evaluation) > _MAX_WIDE_COLUMNS:
        lines = ["| metric | " + " | ".join(i.name.replace("|", "\\|") for i in infos) + " |",
                 "|---|" + "---:|" * len(infos)]
        for group, prefix, cols in (("summary", "", summary), ("final", "log: ", final),
                                    ("evaluation", "eval: ", evaluation)):
            for k in cols:
                cells = []
                for idx, info in enumerate(infos):
                    v = _cell(getattr(info, group), k) if group != "summary" else _fmt(info.summary.get(k))
                    cells.append(f"**{v}**" if group != "summary" and idx in _best(infos, group, k) else v)
                name = prefix + (_header(k) if group != "summary" else k)
                lines.append("| " + " | ".join(c.replace("|", "\\|") for c in [name, *cells]) + " |")
        return "\n".join(lines)
    head = ["run", *summary, *(f"log: {_header(k)}" for k in final), *(f"eval: {_header(k)}" for k in evaluation)]
    lines = ["| " + " | ".join(head) + " |", "|" + "|".join(["---"] + ["---:"] * (len(head) - 1)) + "|"]
    for idx, info in enumerate(infos):
        cells = [info.name] + [_fmt(info.summary.get(k)) for k in summary]
        for group, cols in (("final", final), ("evaluation", evaluation)):
            for k in cols:
                v = _cell(getattr(info, group), k)
                cells.append(f"**{v}**" if idx in _best(infos, group, k) else v)
        lines.append("| " + " | ".join(c.replace("|", "\\|") for c in cells) + " |")
    return "\n".join(lines)


def _sweep_section(infos, loaded, out_dir, sweep_dir, temperatures, n_samples, seed, data,
                   bleu_references=None, bleu_tokenizer=None) -> tuple[str | None, list]:
    """Sweep rows and the relative path of sweep.png inside out_dir (None when there is no plot)."""
    from llmgan.sweep import parse_temperatures, plot_sweep, read_sweep_csv, sweep_loaded_run, write_sweep
    from llmgan.training.evaluation import held_out_corpus

    target = os.path.join(out_dir, "sweep")
    os.makedirs(target, exist_ok=True)
    if sweep_dir:
        rows = read_sweep_csv(os.path.join(sweep_dir, "sweep.csv"))
        for ext in ("csv", "md", "png"):
            src = os.path.join(sweep_dir, f"sweep.{ext}")
            if os.path.isfile(src) and os.path.abspath(src) != os.path.abspath(os.path.join(target, f"sweep.{ext}")):
                shutil.copyfile(src, os.path.join(target, f"sweep.{ext}"))
        if not os.path.isfile(os.path.join(target, "sweep.png")):
            plot_sweep(rows, os.path.join(target, "sweep.png"))
        return "sweep/sweep.png", rows
    temps = parse_temperatures(temperatures) if isinstance(temperatures, str) else list(temperatures)
    rows = []
    for info, run in zip(infos, loaded):
        try:
            rows.extend(sweep_loaded_run(run, temps, held_out_corpus(run, data), n_samples, seed, info.name,
                                         data=data, bleu_references=bleu_references, bleu_tokenizer=bleu_tokenizer))
        except LLMGanError as e:  # one run without held-out data should not sink the whole report
            info.notes.append(f"sweep skipped: {e}")
    if not rows:
        return None, []
    write_sweep(rows, target)
    return "sweep/sweep.png", rows


def build_report(run_dirs: Sequence[str], out_dir: str, sweep_dir: str | None = None, n_samples: int | None = None,
                 temperatures: str | Sequence[float] = DEFAULT_REPORT_TEMPERATURES, n_show: int = 10, seed: int = 0,
                 data: str | None = None, device: str | torch.device = "cpu", bleu_references: str | None = None,
                 bleu_tokenizer: str | None = None) -> str:
    """Write the report for ``run_dirs`` into ``out_dir``; returns the path of index.html.

    Args:
        sweep_dir: a directory with a previous ``llmgan sweep`` (sweep.csv, sweep.png) to show
            instead of sweeping here over ``temperatures``.
        n_samples: samples per run for the evaluation and the sweep (default: each run's eval.n_samples).
        n_show: sample texts shown per run.
        data: held-out file replacing each run's test set (default: the run's own).
        bleu_references, bleu_tokenizer: the BLEU definition (default: each run's eval config; see
            :func:`llmgan.training.evaluation.evaluate_run`).
    """
    from llmgan.run import load_run
    from llmgan.sweep import _unique_names
    from llmgan.training.evaluation import evaluate_run
    from llmgan.training.logging import read_metrics

    if not run_dirs:
        raise LLMGanError("report: no run directory given")
    if sweep_dir is not None and not os.path.isfile(os.path.join(sweep_dir, "sweep.csv")):
        raise LLMGanError(f"{sweep_dir}: no sweep.csv there (write one with `llmgan sweep ... --out DIR`)")
    os.makedirs(out_dir, exist_ok=True)
    infos: list[_RunInfo] = []
    loaded = []
    for run_dir, name in zip(run_dirs, _unique_names(run_dirs)):
        run = load_run(run_dir, device=device)
        records = read_metrics(run_dir)
        info = _RunInfo(name, run_dir, records, final_metrics(records), _summary(run))
        d = run.cfg.data
        info.data_key = (d.oracle, d.train, d.test, d.tokenizer, data)
        try:
            info.evaluation = evaluate_run(run, data=data, n_samples=n_samples, rng=torch.Generator().manual_seed(seed),
                                           bleu_references=bleu_references, bleu_tokenizer=bleu_tokenizer)
            if os.path.isfile(os.path.join(run.checkpoint, "discriminator.safetensors")):
                # adversarial runs: can their own discriminator still tell real from generated?
                info.evaluation.update(evaluate_run(run, data=data, metrics=["detector_auroc"], n_samples=n_samples,
                                                    rng=torch.Generator().manual_seed(seed)))
        except LLMGanError as e:
            info.notes.append(f"evaluation skipped: {e}")
        info.samples = _decode_samples(run, n_show, seed)
        infos.append(info)
        loaded.append(run)
    offsets = {}
    for info, run in zip(infos, loaded):
        parent = run.cfg.train.init_from
        if parent:
            offsets[info.name] = _init_offset(parent)
            info.notes.append(f"started from {parent}; its curves continue at that run's step {offsets[info.name]}")
    curves = plot_curves([(i.name, i.records) for i in infos], os.path.join(out_dir, "curves"), offsets)
    sweep_png, sweep_rows = _sweep_section(infos, loaded, out_dir, sweep_dir, temperatures, n_samples, seed, data,
                                           bleu_references, bleu_tokenizer)

    ns = sorted({i.evaluation.get("n_samples") for i in infos if i.evaluation.get("n_samples")})
    n_eval = f"{', '.join(map(str, ns)) or '?'} samples, T=1, seed {seed}"
    for key, what in (("bleu_references", "references"), ("bleu_tokenizer", "tokens")):
        found = sorted({str(i.evaluation[key]) for i in infos if key in i.evaluation})
        if found:  # the BLEU definition the numbers follow (docs/configuration.md, BLEU)
            n_eval += f", BLEU {what}: {'/'.join(found)}"
    stamp = time.strftime("%Y-%m-%d %H:%M")
    frontier = frontier_section(infos, sweep_rows, out_dir) if sweep_rows else None
    _write_html(infos, curves, sweep_png, sweep_rows, out_dir, n_eval, stamp, sweep_dir, frontier)
    _write_markdown(infos, curves, sweep_png, sweep_rows, out_dir, n_eval, stamp, frontier)
    return os.path.join(out_dir, "index.html")


def frontier_section(infos: Sequence[_RunInfo], sweep_rows: Sequence[dict], out_dir: str) -> tuple[str, str] | None:
    """(frontier plot path relative to out_dir, gap table in Markdown) when the sweep holds an MLE oracle
    run (the reference curve: the first run whose algorithm is ``mle``) and at least one other oracle run."""
    from llmgan.errors import ConfigError
    from llmgan.frontier import gap_markdown, plot_frontier

    algo = {i.name: i.summary.get("algorithm") for i in infos}
    oracle = [r for r in sweep_rows if r.get("kind") == "oracle" and _is_number(r.get("oracle_nll"))]
    mle = next((i.name for i in infos if algo[i.name] == "mle" and any(r["run"] == i.name for r in oracle)), None)
    if mle is None:
        return None
    ref = [r for r in oracle if r["run"] == mle]
    others = [{**r, "algorithm": algo.get(r["run"], "")} for r in oracle if r["run"] != mle]
    if not others:
        return None
    try:
        table = gap_markdown(ref, others)
    except ConfigError:  # MLE's sweep has fewer than two Pareto points: no curve to compare with
        return None
    os.makedirs(os.path.join(out_dir, "sweep"), exist_ok=True)
    plot_frontier(ref, others, os.path.join(out_dir, "sweep", "frontier.png"))
    return "sweep/frontier.png", table


def _md_to_html_table(md: str) -> str:
    rows = [ln.strip().strip("|").split(" | ") for ln in md.splitlines() if ln.strip() and not ln.startswith("|---")]
    e = html.escape
    head = "".join(f"<th>{e(c.strip())}</th>" for c in rows[0])
    body = "\n".join("<tr>" + "".join(f"<td>{e(c.strip())}</td>" for c in r) + "</tr>" for r in rows[1:])
    return f'<div class="scroll"><table>\n<thead><tr>{head}</tr></thead>\n<tbody>\n{body}\n</tbody></table></div>'


_FRONTIER_NOTE = ("Frontier gap: each run's NLL_oracle minus the MLE run's temperature curve (its Pareto part) at "
                  "the same NLL_test; negative = better than temperature-tuned MLE at that diversity; "
                  "“outside” = its NLL_test lies outside MLE's range. The noise band is not known from one "
                  "seed: compare with a second MLE seed before reading small gaps.")


def _rel(path: str, out_dir: str) -> str:
    return os.path.relpath(path, out_dir).replace(os.sep, "/")


def _write_html(infos, curves, sweep_png, sweep_rows, out_dir, n_eval, stamp, sweep_dir, frontier=None) -> None:
    e = html.escape
    names = ", ".join(i.name for i in infos)
    parts = [
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8">',
        '<meta name="viewport" content="width=device-width, initial-scale=1">',
        f"<title>llmgan report: {e(names)}</title>",
        f"<style>{_CSS}</style></head><body>",
        "<h1>llmgan report</h1>",
        f'<p class="meta">{len(infos)} run(s): {e(names)} — generated {e(stamp)}</p>',
        "<h2>Metrics</h2>",
        '<p class="meta">One row per run. ↓ lower is better, ↑ higher is better; the best value of a column among '
        "runs on the same data is highlighted. “final training log” is the last evaluation the engine logged; "
        "“evaluation” is recomputed now from the latest checkpoint.</p>",
        _html_table(infos, n_eval),
    ]
    notes = [(i.name, n) for i in infos for n in i.notes]
    if notes:
        parts.append("<ul>" + "".join(f'<li class="note">{e(a)}: {e(b)}</li>' for a, b in notes) + "</ul>")
    parts.append("<h2>Quality–diversity (temperature sweep)</h2>")
    if sweep_png:
        src = f" (from {e(sweep_dir)})" if sweep_dir else ""
        temps = sorted({r["temperature"] for r in sweep_rows})
        parts.append(
            f'<p class="meta">Each curve is one run sampled at temperatures {e(", ".join(f"{t:g}" for t in temps))}'
            f"{src}; point labels give the temperature. Table: <a href=\"sweep/sweep.md\">sweep.md</a>, "
            '<a href="sweep/sweep.csv">sweep.csv</a>.</p>'
        )
        parts.append(f'<figure><img src="{e(sweep_png)}" alt="quality-diversity curves"></figure>')
    else:
        parts.append('<p class="note">No sweep (no held-out data for any run).</p>')
    if frontier:
        parts.append("<h2>Oracle frontier: gap to temperature-tuned MLE</h2>")
        parts.append(f'<p class="meta">{html.escape(_FRONTIER_NOTE)}</p>')
        parts.append(_md_to_html_table(frontier[1]))
        parts.append(f'<figure><img src="{html.escape(frontier[0])}" alt="oracle frontier"></figure>')
    parts.append(
        '<p class="meta">Sampled metrics of one checkpoint differ between the training log, the evaluation '
        "and the sweep at T=1: each draws its own sample set (sizes above; ± is one standard error).</p>")
    parts.append("<h2>Training curves</h2>")
    if curves:
        parts.append('<div class="grid">')
        for curve, path in curves:
            parts.append(
                f'<figure><img src="{e(_rel(path, out_dir))}" alt="{e(curve.title)}">'
                f"<figcaption>{e(curve.title)}</figcaption></figure>"
            )
        parts.append("</div>")
    else:
        parts.append('<p class="note">No training curves: the runs have no metrics.jsonl records.</p>')
    parts.append("<h2>Samples</h2>")
    for i in infos:
        parts.append(f"<h3>{e(i.name)}</h3>")
        parts.append('<ol class="samples">' + "".join(f"<li>{e(s) or '<i>(empty)</i>'}</li>" for s in i.samples)
                     + "</ol>")
    parts.append("</body></html>")
    with open(os.path.join(out_dir, "index.html"), "w", encoding="utf-8") as f:
        f.write("\n".join(parts) + "\n")


def _write_markdown(infos, curves, sweep_png, sweep_rows, out_dir, n_eval, stamp, frontier=None) -> None:
    lines = [
        "# llmgan report",
        "",
        f"{len(infos)} run(s): {', '.join(i.name for i in infos)} — generated {stamp}",
        "",
        "## Metrics",
        "",
        f"↓ lower is better, ↑ higher is better, best in bold. `log:` = last evaluation in metrics.jsonl; "
        f"`eval:` = recomputed now ({n_eval}).",
        "",
        _md_table(infos),
        "",
    ]
    lines += [f"- {i.name}: {n}" for i in infos for n in i.notes]
    lines += ["", "## Quality–diversity (temperature sweep)", ""]
    if sweep_png:
        from llmgan.sweep import sweep_markdown

        lines += [f"![quality-diversity curves]({sweep_png})", "", sweep_markdown(sweep_rows), ""]
    else:
        lines += ["No sweep (no held-out data for any run).", ""]
    if frontier:
        lines += ["## Oracle frontier: gap to temperature-tuned MLE", "", _FRONTIER_NOTE, "", frontier[1], "",
                  f"![oracle frontier]({frontier[0]})", ""]
    lines += ["Sampled metrics of one checkpoint differ between the training log, the evaluation and the sweep "
              "at T=1: each draws its own sample set (± is one standard error).", ""]
    lines += ["## Training curves", ""]
    for curve, path in curves:
        lines += [f"**{curve.title}**", "", f"![{curve.title}]({_rel(path, out_dir)})", ""]
    lines += ["## Samples", ""]
    for i in infos:
        lines += [f"### {i.name}", "", "```text"]
        # a line of backticks inside a sample would close the fence early
        lines += [s.replace("```", "'''") or "(empty)" for s in i.samples]
        lines += ["```", ""]
    with open(os.path.join(out_dir, "report.md"), "w", encoding="utf-8") as f:
        f.write("\n".join(lines))
