"""Sampling a run's generator corrected by its discriminator read as a density ratio.

``llmgan generate RUN --resample sir|rejection --candidates K [--ratio-from d|ebm]`` and
:func:`resample_run`. The math lives in :mod:`llmgan.metrics.density_ratio`; this module is the glue:

* The log-ratio ``log r(x)`` of a sample is its realness logit (``losses.realness_logits``: larger = more
  real whatever the loss convention D was trained with), calibrated: ``--ratio-from d`` fits Platt
  scaling (``log r = a s + b``) on the run's held-out real texts against as many fresh generator samples
  (temperature 1: the G that D was trained against), stored in ``RUN_DIR/ratio_calibration.json`` for
  the checkpoint it was fitted on. ``--ratio-from ebm`` reads the energy of a ``residual_ebm`` run
  (``log r = -E``, trained by noise-contrastive estimation so that it is a log-ratio already; no fit).
* ``sir``: each output is one of K fresh candidates, kept with probability ``r_k / sum_j r_j``;
  reported with the effective sample size ``(sum r)^2 / sum r^2`` (1..K) of its candidates.
* ``rejection`` (discriminator rejection sampling, Azadi et al. 2019): candidates accepted with
  probability ``r / M``; ``M`` starts as the largest ratio over the calibration samples and is raised
  when a candidate exceeds it (DRS's rule; each raise is counted: the candidates before it were
  accepted slightly too often, so the sampler is exact only while no raise happens). At most ``n * K``
  candidates are drawn per prompt; fewer than ``n`` outputs come back when the budget runs out (never a
  fallback to unaccepted samples), with the acceptance rate reported.

The target is ``q(x) r(x) / Z`` where ``q`` is the sampling distribution asked for: at temperature 1
(and no top-k/top-p) that is ``p_G r`` ~ p_data; at other settings it is the tempered G times the ratio
(a heuristic, and the frontier experiments sweep it). Cost per output: K generator samples + K D scores
for SIR, ``1 / acceptance_rate`` of each for rejection sampling.
"""

from __future__ import annotations

import json
import math
import os
from dataclasses import dataclass, field
from typing import Any

import torch

from llmgan.detect import discriminator_kind, score_tokens, validation_tokens
from llmgan.errors import ConfigError
from llmgan.losses import realness_logits
from llmgan.metrics.density_ratio import CALIBRATIONS, Calibration, fit_platt, rejection_accept, sir_select

METHODS = ("sir", "rejection")
RATIO_SOURCES = ("d", "ebm")
CALIBRATION_FILE = "ratio_calibration.json"
EBM_ALGORITHM = "residual_ebm"


@dataclass
class Resampled:
    """Outputs of :func:`resample_run`: tokens (N, T) right-padded, lengths (N,), log-ratios (N,) of the
    kept samples, ``group`` (N,) the prompt row each belongs to (0 without prompts), and ``stats``."""

    tokens: torch.Tensor
    lengths: torch.Tensor
    log_r: torch.Tensor
    group: torch.Tensor
    stats: dict = field(default_factory=dict)


class RatioModel:
    """``log r(x)`` of a loaded run: its D (calibrated) or its residual EBM's ``-E``."""

    def __init__(self, run: Any, ratio_from: str = "d", calibration: str | None = None):
        if ratio_from not in RATIO_SOURCES:
            raise ConfigError(f"--ratio-from: expected one of {', '.join(RATIO_SOURCES)}, got {ratio_from!r}")
        algo = run.cfg.adversarial.algorithm
        if algo == "rankgan":
            raise ConfigError(f"--resample: {run.run_dir} is a rankgan run; its discriminator is a ranker (its "
                              "logit head never trains), not a density ratio")
        if ratio_from == "ebm" and algo != EBM_ALGORITHM:
            raise ConfigError(f"--ratio-from ebm: {run.run_dir} was trained with adversarial.algorithm {algo!r}, "
                              f"not {EBM_ALGORITHM!r} (use --ratio-from d to read its discriminator)")
        calibration = calibration or ("none" if ratio_from == "ebm" else "platt")
        if calibration not in CALIBRATIONS:
            raise ConfigError(f"--calibration: expected one of {', '.join(CALIBRATIONS)}, got {calibration!r}")
        self.run = run
        self.ratio_from = ratio_from
        self.kind = discriminator_kind(run.cfg)
        self.discriminator = run.discriminator()
        self.method = calibration
        self.cal = Calibration()
        self.info: dict = {"method": "none", "a": 1.0, "b": 0.0}
        self.calibration_log_r: torch.Tensor | None = None  # calibrated log r of the fresh calibration samples

    def realness(self, tokens: torch.Tensor, prompts: torch.Tensor | None = None) -> torch.Tensor:
        """Uncalibrated realness logits (N,) (float64)."""
        logits = torch.from_numpy(score_tokens(self.discriminator, tokens, prompts)).double()
        return realness_logits(logits, self.kind)

    def log_ratio(self, tokens: torch.Tensor, prompts: torch.Tensor | None = None) -> torch.Tensor:
        return self.cal.log_ratio(self.realness(tokens, prompts))

    def calibrate(self, n: int = 500, seed: int = 0, force: bool = False, save: bool = True) -> dict:
        """Fit (or load from ratio_calibration.json) the calibration; keep the calibration samples' log r
        (the starting rejection bound). Returns the stored record."""
        run = self.run
        ckpt = os.path.basename(os.path.normpath(run.checkpoint))
        path = os.path.join(run.run_dir, CALIBRATION_FILE)
        real, prompts = validation_tokens(run, n)
        rng = torch.Generator(device=run.generator.device).manual_seed(seed)
        g = run.generator
        # fresh samples at temperature 1 (the distribution D was trained against), one per real row
        if prompts is not None:
            from llmgan.training.conditional import sample_for_prompts

            fake, _ = sample_for_prompts(g, prompts, run.max_len, rng=rng)
        else:
            from llmgan.training.evaluation import sample_tokens

            fake, _ = sample_tokens(g, real.size(0), run.max_len, rng=rng)
        s_fake = self.realness(fake, prompts)
        rec = None
        key = {"checkpoint": ckpt, "method": self.method, "ratio_from": self.ratio_from, "n": int(real.size(0)),
               "seed": seed}
        if not force and os.path.isfile(path):
            try:
                stored = json.loads(open(path, encoding="utf-8").read())
            except (OSError, json.JSONDecodeError):
                stored = {}
            if all(stored.get(k) == v for k, v in key.items()) and "a" in stored:
                rec = stored
        if rec is None:
            s_real = self.realness(real, prompts)
            cal = fit_platt(s_real.numpy(), s_fake.numpy(), method=self.method)
            lr_fake = cal.log_ratio(s_fake)
            rec = {**key, "a": cal.a, "b": cal.b, "heldout_bce": cal.nll, "heldout_bce_raw": cal.nll_raw,
                   # E_G[r] ~ 1 when r is a ratio (a check of the calibration, not used by the samplers)
                   "mean_ratio_on_generated": float(torch.exp(torch.logsumexp(lr_fake, 0)) / lr_fake.numel()),
                   "kind": self.kind}
            if save:
                from llmgan.training.checkpoint import atomic_write_text

                atomic_write_text(path, json.dumps(rec, indent=1))
        self.cal = Calibration(float(rec["a"]), float(rec["b"]), self.method)
        self.calibration_log_r = self.cal.log_ratio(s_fake)
        self.info = rec
        return rec


def _draw(g: Any, n: int, max_len: int, prompt_row: torch.Tensor | None, rng: torch.Generator,
          sample_kwargs: dict) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
    """n candidates (tokens (n, max_len), lengths (n,), their prompts or None) from G, no gradient."""
    p = prompt_row[None, :].expand(n, -1).to(g.device) if prompt_row is not None else None
    with torch.no_grad():
        s = g.sample(n, max_len, prompt=p, generator=rng, **sample_kwargs)
    return s.tokens.cpu(), s.lengths.cpu(), (p.cpu() if p is not None else None)


def resample_run(
    run: Any,
    n: int,
    *,
    method: str = "sir",
    candidates: int = 8,
    ratio_from: str = "d",
    calibration: str | None = None,
    max_len: int | None = None,
    prompts: torch.Tensor | None = None,
    temperature: float = 1.0,
    top_k: int | None = None,
    top_p: float | None = None,
    ban_ids: torch.Tensor | None = None,
    rng: torch.Generator | None = None,
    n_calibration: int = 500,
    calibration_seed: int = 0,
    recalibrate: bool = False,
    batch_size: int = 1024,
    ratio: RatioModel | None = None,
) -> Resampled:
    """``n`` outputs (per prompt row of ``prompts``, left-padded (P, L)) of a loaded run's generator
    corrected by its density ratio; see the module docstring. ``stats`` holds the method, the calibration,
    ``generator_samples`` / ``ratio_evaluations`` (the sampling cost), and ``ess_mean``/``ess_min`` (SIR)
    or ``acceptance_rate``, ``bound_log_m``, ``bound_raises`` (rejection). ``ratio``: a calibrated
    :class:`RatioModel` of this run to reuse (a server calibrates once); ``ratio_from``/``calibration``
    are then ignored."""
    if method not in METHODS:
        raise ConfigError(f"--resample: expected one of {', '.join(METHODS)}, got {method!r}")
    if candidates < 1:
        raise ConfigError(f"--candidates: must be >= 1, got {candidates}")
    if n < 1:
        raise ConfigError(f"-n: must be >= 1, got {n}")
    if ratio is None:
        ratio = RatioModel(run, ratio_from, calibration)
        ratio.calibrate(n=n_calibration, seed=calibration_seed, force=recalibrate)
    ratio_from = ratio.ratio_from
    g = run.generator
    was = g.training
    g.eval()
    max_len = max_len or run.max_len
    rng = rng or torch.Generator(device=g.device).manual_seed(0)  # G's samplers draw on its device
    # the selection RNG lives on the CPU (multinomial/rand there), whatever device G samples on
    sel_rng = torch.Generator().manual_seed(rng.initial_seed() + 1)
    kw = {"temperature": temperature, "top_k": top_k, "top_p": top_p, "ban_ids": ban_ids}
    rows: list[torch.Tensor | None] = list(prompts) if prompts is not None else [None]
    toks, lens, lrs, groups = [], [], [], []
    stats: dict = {"method": method, "candidates": candidates, "ratio_from": ratio_from,
                   "calibration": ratio.info, "temperature": temperature}
    n_gen = 0
    try:
        if method == "sir":
            ess_all = []
            per_batch = max(1, batch_size // candidates)
            for gi, row in enumerate(rows):
                for start in range(0, n, per_batch):
                    b = min(per_batch, n - start)
                    t, ln, p = _draw(g, b * candidates, max_len, row, rng, kw)
                    lr = ratio.log_ratio(t, p).view(b, candidates)
                    idx, ess = sir_select(lr, generator=sel_rng)
                    pick = torch.arange(b) * candidates + idx
                    toks.append(t[pick])
                    lens.append(ln[pick])
                    lrs.append(lr[torch.arange(b), idx])
                    groups.append(torch.full((b,), gi, dtype=torch.long))
                    ess_all.append(ess)
                    n_gen += b * candidates
            ess = torch.cat(ess_all)
            stats.update(ess_mean=float(ess.mean()), ess_min=float(ess.min()), ess_per_candidate=float(ess.mean())
                         / candidates)
        else:
            assert ratio.calibration_log_r is not None
            log_m = float(ratio.calibration_log_r.max())
            stats["bound_log_m_start"] = log_m
            raises, accepted_total = 0, 0
            for gi, row in enumerate(rows):
                got, budget = 0, n * candidates
                while got < n and budget > 0:
                    b = min(batch_size, budget)
                    t, ln, p = _draw(g, b, max_len, row, rng, kw)
                    lr = ratio.log_ratio(t, p)
                    budget -= b
                    n_gen += b
                    top = float(lr.max())
                    if top > log_m:  # DRS: raise the bound to the largest ratio seen
                        log_m = top
                        raises += 1
                    mask = rejection_accept(lr, log_m, generator=sel_rng)
                    accepted_total += int(mask.sum())  # the rate counts every acceptance, kept or not
                    acc = mask.nonzero().squeeze(1)[: n - got]
                    toks.append(t[acc])
                    lens.append(ln[acc])
                    lrs.append(lr[acc])
                    groups.append(torch.full((acc.numel(),), gi, dtype=torch.long))
                    got += acc.numel()
            stats.update(acceptance_rate=accepted_total / max(n_gen, 1), bound_log_m=log_m, bound_raises=raises,
                         requested=n * len(rows))
    finally:
        g.train(was)
    out_tokens = torch.cat(toks) if toks else torch.zeros(0, max_len, dtype=torch.long)
    n_out = int(out_tokens.size(0))
    stats.update(n_out=n_out, generator_samples=n_gen, ratio_evaluations=n_gen,
                 cost_per_output=n_gen / n_out if n_out else math.inf)
    return Resampled(out_tokens, torch.cat(lens) if lens else torch.zeros(0, dtype=torch.long),
                     torch.cat(lrs) if lrs else torch.zeros(0, dtype=torch.float64),
                     torch.cat(groups) if groups else torch.zeros(0, dtype=torch.long), stats)
