"""Temperature sweeps: the quality–diversity curve of each run (Caccia et al., 2020, "Language GANs
Falling Short").

A single (quality, diversity) point says little: lowering the sampling temperature buys quality for
diversity, so a model can look better on BLEU just by being colder. Sweeping the temperature traces
each run's whole trade-off curve, and runs are compared curve against curve.

* Oracle runs: quality = NLL_oracle of samples drawn at temperature T (lower is better); diversity
  = NLL_test of the *temperature-scaled* model, i.e. the held-out oracle data scored under
  ``log_softmax(logits / T)`` (lower is better: the model still covers the real data).
* Text runs: quality = BLEU-4 of samples against the test set (higher is better); diversity =
  Self-BLEU-4 of the samples (lower is more diverse). The temperature-scaled test NLL is reported
  as an extra column.

Every temperature uses the same sampling seed (common random numbers), so curves are smooth and
differences between temperatures are not sampling noise.
"""

from __future__ import annotations

import csv
import math
import os
from collections.abc import Sequence

import torch

from llmgan.errors import ConfigError, LLMGanError

__all__ = [
    "DEFAULT_TEMPERATURES",
    "parse_temperatures",
    "plot_sweep",
    "read_sweep_csv",
    "sweep",
    "sweep_loaded_run",
    "temperature_nll",
    "write_sweep",
]

DEFAULT_TEMPERATURES = "0.5:1.5:11"
CSV_FIELDS = ("run", "run_dir", "kind", "temperature", "quality", "diversity", "quality_metric",
              "diversity_metric", "oracle_nll", "test_nll", "bleu_4", "self_bleu_4", "n_samples")

# Axis labels per metric name, saying which direction is better so a plot reads on its own.
_LABELS = {
    "oracle_nll": "NLL_oracle of samples (quality, lower is better)",
    "test_nll": "NLL_test of the temperature-scaled model (diversity, lower is better)",
    "bleu_4": "BLEU-4 vs test set (quality, higher is better)",
    "self_bleu_4": "Self-BLEU-4 (diversity, lower is more diverse)",
}


def parse_temperatures(spec: str) -> list[float]:
    """``"a:b:n"`` -> n evenly spaced temperatures from a to b (inclusive); ``"0.7,1,1.3"`` -> that list.

    Every temperature must be a finite number > 0. Raises ConfigError naming the bad part.
    """
    text = str(spec).strip()
    try:
        if ":" in text:
            parts = text.split(":")
            if len(parts) != 3:
                raise ValueError
            a, b, n = float(parts[0]), float(parts[1]), int(parts[2])
            if n < 1:
                raise ConfigError(f"--temperatures {spec!r}: the count must be >= 1")
            temps = [a] if n == 1 else [a + (b - a) * i / (n - 1) for i in range(n)]
        else:
            temps = [float(x) for x in text.split(",") if x.strip()]
    except ValueError:
        raise ConfigError(
            f"--temperatures {spec!r}: expected START:STOP:COUNT (e.g. 0.5:1.5:11) or a comma list"
        ) from None
    if not temps:
        raise ConfigError(f"--temperatures {spec!r}: no temperature given")
    bad = [t for t in temps if not (math.isfinite(t) and t > 0)]
    if bad:
        raise ConfigError(f"--temperatures {spec!r}: temperatures must be > 0, got {bad[0]}")
    # round away float noise of the linspace (0.7000000000000001) so tables and labels read cleanly
    return [round(t, 10) for t in temps]


@torch.no_grad()
def temperature_nll(generator, corpus, temperature: float = 1.0, batch_size: int = 256) -> float:
    """Mean per-token NLL of a corpus under ``softmax(logits / temperature)`` (EOS in, padding out).

    ``logits / T = h @ (W / T).T + b / T``, so the scaled output layer goes through the same fused,
    chunked log-prob kernel as :func:`llmgan.training.evaluation.corpus_nll` (no (B, T, V) logits).
    At T = 1 it equals ``corpus_nll``.
    """
    from llmgan.models.output import token_log_probs

    was_training = generator.training
    generator.eval()
    total, count = 0.0, 0
    for start in range(0, len(corpus), batch_size):
        lengths = corpus.lengths[start : start + batch_size]
        tokens = corpus.tokens[start : start + batch_size, : int(lengths.max())].to(generator.device)
        mask = (torch.arange(tokens.size(1))[None, :] < lengths[:, None]).to(generator.device)
        h, w, b = generator.head_inputs(tokens)  # LeakGAN's head is not an lm_head: each model says
        w, b = w / temperature, (b / temperature if b is not None else None)
        B, T, H = h.shape
        lp = token_log_probs(h.reshape(B * T, H), w, b, generator._safe_targets(tokens).reshape(-1)).view(B, T)
        total += float(-(lp.float() * mask).sum())
        count += int(mask.sum())
    generator.train(was_training)
    return total / max(count, 1)


def sweep_loaded_run(run, temperatures: Sequence[float], test=None, n_samples: int | None = None, seed: int = 0,
                     name: str | None = None, data: str | None = None, bleu_references: str | None = None,
                     bleu_tokenizer: str | None = None) -> list[dict]:
    """One row per temperature for a :class:`llmgan.run.LoadedRun` (see the module docstring).

    ``test`` is the held-out :class:`llmgan.data.EncodedCorpus` of ``data`` (default: the run's own).
    BLEU follows the definition of ``llmgan evaluate`` (:func:`llmgan.training.evaluation.evaluate_run`:
    ``bleu_references`` / ``bleu_tokenizer``, default the run's eval config), and samples never
    contain the run's ``eval.ban_tokens``.
    """
    from llmgan.metrics import bleu, self_bleu
    from llmgan.models.generators.oracle import oracle_nll
    from llmgan.training.evaluation import (
        _token_strings,
        ban_token_ids,
        bleu_tokenizer_for,
        held_out_corpus,
        reference_tokens,
        sample_tokens,
    )

    if test is None:
        test = held_out_corpus(run, data)
    if test is None:
        raise LLMGanError(f"{run.run_dir}: no held-out data to sweep against (pass --data FILE)")
    name = name or os.path.basename(os.path.normpath(run.run_dir))
    n = n_samples or run.cfg.eval.n_samples
    is_oracle = run.oracle is not None
    if not is_oracle and n < 2:
        raise ConfigError("--n-samples: Self-BLEU needs at least 2 samples")
    tok_name = bleu_tokenizer_for(run, bleu_tokenizer)
    refs_mode = bleu_references or run.cfg.eval.bleu_references
    refs = None if is_oracle else reference_tokens(run, data, refs_mode, tok_name, test)
    ban_ids = ban_token_ids(run.tokenizer, run.cfg.eval.ban_tokens)
    rows = []
    for temp in temperatures:
        rng = torch.Generator().manual_seed(seed)  # same stream at every temperature
        samples, lengths = sample_tokens(run.generator, n, run.max_len, run.cfg.eval.batch_size, temp, rng=rng,
                                         ban_ids=ban_ids)
        row: dict = {"run": name, "run_dir": run.run_dir, "kind": "oracle" if is_oracle else "text",
                     "temperature": float(temp), "n_samples": n,
                     "test_nll": temperature_nll(run.generator, test, temp)}
        if is_oracle:
            row["oracle_nll"] = oracle_nll(run.oracle, samples.to(run.generator.device))
            row.update(quality=row["oracle_nll"], diversity=row["test_nll"],
                       quality_metric="oracle_nll", diversity_metric="test_nll")
        else:
            gen = _token_strings(run, samples, lengths, tok_name)
            row["bleu_4"] = bleu(gen, refs, max_n=4)["bleu_4"]
            row["self_bleu_4"] = self_bleu(gen, max_n=4)["self_bleu_4"]
            row.update(quality=row["bleu_4"], diversity=row["self_bleu_4"],
                       quality_metric="bleu_4", diversity_metric="self_bleu_4")
        rows.append(row)
    return rows


def _unique_names(run_dirs: Sequence[str]) -> list[str]:
    """Display names: the directory's base name, made unique with the parent directory if needed."""
    base = [os.path.basename(os.path.normpath(d)) or d for d in run_dirs]
    out = []
    for d, b in zip(run_dirs, base):
        if base.count(b) > 1:
            parent = os.path.basename(os.path.dirname(os.path.normpath(os.path.abspath(d))))
            b = f"{parent}/{b}"
        while b in out:
            b += "'"
        out.append(b)
    return out


def sweep(run_dirs: Sequence[str], temperatures: Sequence[float] | str = DEFAULT_TEMPERATURES,
          out_dir: str | None = None, data: str | None = None, n_samples: int | None = None, seed: int = 0,
          device: str | torch.device = "cpu", bleu_references: str | None = None,
          bleu_tokenizer: str | None = None) -> list[dict]:
    """Sweep every run over the temperatures; with ``out_dir`` write sweep.csv, sweep.md and sweep.png.

    ``data`` replaces each run's held-out set (it must suit every run's tokenizer). Returns the rows
    (one per run and temperature, in the order given).
    """
    from llmgan.run import load_run
    from llmgan.training.evaluation import held_out_corpus

    if not run_dirs:
        raise LLMGanError("sweep: no run directory given")
    temps = parse_temperatures(temperatures) if isinstance(temperatures, str) else [float(t) for t in temperatures]
    if not temps or any(not (math.isfinite(t) and t > 0) for t in temps):
        raise ConfigError(f"temperatures: expected numbers > 0, got {list(temperatures)}")
    rows: list[dict] = []
    for run_dir, name in zip(run_dirs, _unique_names(run_dirs)):
        run = load_run(run_dir, device=device)
        rows.extend(sweep_loaded_run(run, temps, held_out_corpus(run, data), n_samples, seed, name, data=data,
                                     bleu_references=bleu_references, bleu_tokenizer=bleu_tokenizer))
    if out_dir:
        write_sweep(rows, out_dir)
    return rows


# ------------------------------------------------------------------------------------------ output
def _fmt(v) -> str:
    if isinstance(v, float):
        return f"{v:.4f}"
    return "" if v is None else str(v)


def write_sweep(rows: Sequence[dict], out_dir: str) -> dict[str, str]:
    """Write ``sweep.csv``, ``sweep.md`` and ``sweep.png`` into out_dir; returns their paths."""
    os.makedirs(out_dir, exist_ok=True)
    paths = {k: os.path.join(out_dir, f"sweep.{k}") for k in ("csv", "md", "png")}
    with open(paths["csv"], "w", encoding="utf-8", newline="") as f:
        w = csv.DictWriter(f, fieldnames=CSV_FIELDS, extrasaction="ignore")
        w.writeheader()
        for r in rows:
            w.writerow({k: r.get(k, "") for k in CSV_FIELDS})
    with open(paths["md"], "w", encoding="utf-8") as f:
        f.write(sweep_markdown(rows) + "\n")
    plot_sweep(rows, paths["png"])
    return paths


def sweep_markdown(rows: Sequence[dict]) -> str:
    """A Markdown table: run, temperature, then the metrics that any row has."""
    names = ("oracle_nll", "test_nll", "bleu_4", "self_bleu_4")
    metrics = [m for m in names if any(r.get(m) is not None for r in rows)]
    head = ["run", "temperature", *metrics]
    lines = ["| " + " | ".join(head) + " |", "|" + "|".join(["---"] * 2 + ["---:"] * len(metrics)) + "|"]
    for r in rows:
        cells = [str(r["run"]).replace("|", "\\|"), f"{float(r['temperature']):g}"] + [_fmt(r.get(m)) for m in metrics]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def read_sweep_csv(path: str) -> list[dict]:
    """Rows of a ``sweep.csv`` written by :func:`write_sweep` (numbers parsed back to float/int)."""
    if not os.path.isfile(path):
        raise LLMGanError(f"{path}: sweep results not found (run `llmgan sweep ... --out DIR` first)")
    rows = []
    with open(path, encoding="utf-8", newline="") as f:
        for r in csv.DictReader(f):
            row: dict = {}
            for k, v in r.items():
                if v in ("", None):
                    row[k] = None
                elif k in ("run", "run_dir", "kind", "quality_metric", "diversity_metric"):
                    row[k] = v
                elif k == "n_samples":
                    row[k] = int(float(v))
                else:
                    try:
                        row[k] = float(v)
                    except ValueError:
                        raise LLMGanError(f"{path}: column {k!r} holds {v!r}, expected a number") from None
            rows.append(row)
    if not rows:
        raise LLMGanError(f"{path}: no rows")
    return rows


def plot_sweep(rows: Sequence[dict], path: str) -> None:
    """One curve per run (points labelled with their temperature), one panel per metric pair.

    Oracle and text runs measure different things, so a mixed sweep gets two panels side by side;
    runs of the same kind always share axes.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    groups: dict[tuple[str, str], list[dict]] = {}
    for r in rows:
        groups.setdefault((r["quality_metric"], r["diversity_metric"]), []).append(r)
    fig, axes = plt.subplots(1, max(len(groups), 1), figsize=(7.5 * max(len(groups), 1), 5.5), squeeze=False)
    runs = list(dict.fromkeys(r["run"] for r in rows))
    colors = {name: plt.cm.tab10(i % 10) for i, name in enumerate(runs)}
    for ax, ((qm, dm), grp) in zip(axes[0], groups.items()):
        for name in dict.fromkeys(r["run"] for r in grp):
            pts = sorted((r for r in grp if r["run"] == name), key=lambda r: r["temperature"])
            xs, ys = [p["quality"] for p in pts], [p["diversity"] for p in pts]
            ax.plot(xs, ys, "-o", color=colors[name], label=name, markersize=4, linewidth=1.5)
            for p in pts:
                ax.annotate(f"{p['temperature']:g}", (p["quality"], p["diversity"]), textcoords="offset points",
                            xytext=(4, 4), fontsize=7, color=colors[name])
        ax.set_xlabel(_LABELS.get(qm, qm))
        ax.set_ylabel(_LABELS.get(dm, dm))
        kind = "oracle runs" if qm == "oracle_nll" else "text runs"
        ax.set_title(f"Quality–diversity by sampling temperature ({kind}; labels = T)", fontsize=10)
        ax.grid(True, alpha=0.3)
        ax.legend(fontsize=8)
    if not groups:
        axes[0][0].text(0.5, 0.5, "no sweep data", ha="center", va="center")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
