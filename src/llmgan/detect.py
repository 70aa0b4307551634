"""Human-vs-generated text detection with a run's discriminator.

``llmgan detect RUN_DIR FILE`` scores each text with the trained discriminator: ``p_human =
losses.realness(D logit, kind)`` for the loss kind D was trained with (``sigmoid(logit)``; for the
``wgan``/``wgan_gp`` convention, whose critic scores fakeness, ``sigmoid(-logit)``). RankGAN runs are
refused: their discriminator is trained as a ranker (``features()`` only), its logit head never trains.
The decision threshold is calibrated once on validation data -- the run's held-out real texts against
fresh samples from its generator -- as the threshold that maximizes balanced accuracy (mean of the
recalls of both classes, so a class imbalance cannot buy accuracy), and stored in ``RUN_DIR/detector.json``
together with the checkpoint it was computed for (a newer checkpoint triggers a new calibration).

AUROC is reported when the true labels are known: a JSONL file with ``{"text", "label": "human" |
"generated"}``, or ``--real FILE --fake FILE``.
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch

from llmgan.errors import ConfigError, DataError
from llmgan.losses import realness

HUMAN, GENERATED = "human", "generated"
DETECTOR_FILE = "detector.json"


# ----------------------------------------------------------------------------------------- pure functions
def auroc(pos_scores: Sequence[float], neg_scores: Sequence[float]) -> float:
    """P(score of a random positive > score of a random negative), ties counting 1/2 (Mann-Whitney U)."""
    pos, neg = np.asarray(pos_scores, dtype=np.float64), np.asarray(neg_scores, dtype=np.float64)
    if pos.size == 0 or neg.size == 0:
        raise ValueError("auroc needs at least one positive and one negative score")
    allv = np.concatenate([pos, neg])
    order = np.argsort(allv, kind="mergesort")
    ranks = np.empty(allv.size, dtype=np.float64)
    ranks[order] = np.arange(1, allv.size + 1)
    # average ranks over ties
    sorted_v = allv[order]
    start = 0
    for i in range(1, allv.size + 1):
        if i == allv.size or sorted_v[i] != sorted_v[start]:
            ranks[order[start:i]] = (start + 1 + i) / 2.0
            start = i
    u = ranks[: pos.size].sum() - pos.size * (pos.size + 1) / 2.0
    return float(u / (pos.size * neg.size))


def balanced_accuracy(scores: Sequence[float], is_human: Sequence[bool], threshold: float) -> float:
    """Mean of the two recalls when ``score >= threshold`` predicts human."""
    s, y = np.asarray(scores, dtype=np.float64), np.asarray(is_human, dtype=bool)
    pred = s >= threshold
    recalls = [float((pred[y]).mean()) if y.any() else 0.0, float((~pred[~y]).mean()) if (~y).any() else 0.0]
    return sum(recalls) / 2.0


def calibrate_threshold(human_scores: Sequence[float], generated_scores: Sequence[float]) -> tuple[float, float]:
    """(threshold, balanced accuracy): the threshold maximizing balanced accuracy on these scores.

    Candidates are every midpoint between consecutive distinct scores plus one below the minimum and one
    above the maximum -- every distinct labelling a threshold can produce -- so no other threshold does
    better on this data. All candidates are scored at once (sorted cumulative counts).
    """
    h, g = np.asarray(human_scores, dtype=np.float64), np.asarray(generated_scores, dtype=np.float64)
    if h.size == 0 or g.size == 0:
        raise ValueError("calibration needs human and generated scores")
    u = np.unique(np.concatenate([h, g]))
    cands = np.concatenate([[u[0] - 1.0], (u[:-1] + u[1:]) / 2.0, [u[-1] + 1.0]])
    # recall(human) = share of human scores >= t; recall(generated) = share of generated scores < t
    tpr = 1.0 - np.searchsorted(np.sort(h), cands, side="left") / h.size
    tnr = np.searchsorted(np.sort(g), cands, side="left") / g.size
    bacc = (tpr + tnr) / 2.0
    best = int(np.argmax(bacc))
    return float(cands[best]), float(bacc[best])


def discriminator_kind(cfg: Any) -> str:
    """The losses.py kind a run's D was trained with: GAD's own ``params.d_loss`` (Bradley-Terry = ``rsgan``),
    else ``adversarial.loss``."""
    a = cfg.adversarial
    if a.algorithm == "gad":
        kind = (a.params or {}).get("d_loss", "bradley_terry")
        return "rsgan" if kind == "bradley_terry" else kind
    return a.loss


# ----------------------------------------------------------------------------------------- run-level
@torch.no_grad()
def score_tokens(discriminator: torch.nn.Module, tokens: torch.Tensor, prompts: torch.Tensor | None = None,
                 batch_size: int = 128) -> np.ndarray:
    """D logits (N,) of right-padded token rows (and their left-padded prompts, if any)."""
    was = discriminator.training
    discriminator.eval()
    dev = next(discriminator.parameters()).device
    out = []
    for start in range(0, tokens.size(0), batch_size):
        x = tokens[start : start + batch_size].to(dev)
        p = prompts[start : start + batch_size].to(dev) if prompts is not None else None
        out.append(discriminator(x, prompt=p).float().cpu())
    discriminator.train(was)
    return torch.cat(out).numpy() if out else np.zeros(0)


def encode_texts(run: Any, texts: Sequence[str]) -> torch.Tensor:
    """Texts -> right-padded ids (EOS appended, truncated to the run's max_len) as training data was."""
    from llmgan.data import encode_corpus

    return encode_corpus(list(texts), run.tokenizer, run.max_len, overflow="truncate", source="<detect>").tokens


def _left_pad(rows: Sequence[Sequence[int]], pad: int) -> torch.Tensor:
    P = max(1, max(len(r) for r in rows))
    out = torch.full((len(rows), P), pad, dtype=torch.long)
    for i, r in enumerate(rows):
        if r:
            out[i, P - len(r) :] = torch.tensor(list(r))
    return out


class Detector:
    """A run's discriminator as a human/generated classifier with a calibrated threshold."""

    def __init__(self, run: Any, threshold: float | None = None):
        if run.cfg.adversarial.algorithm == "rankgan":
            raise ConfigError(f"detect: {run.run_dir} is a rankgan run; its discriminator is a ranker (only "
                              "features() train, the logit head detect reads is untrained)")
        self.run = run
        self.kind = discriminator_kind(run.cfg)
        self.discriminator = run.discriminator()
        self.threshold = threshold  # on p_human; None until calibrated/loaded
        self.calibration: dict = {}

    def logits(self, texts: Sequence[str], prompts: Sequence[str] | None = None) -> np.ndarray:
        tokens = encode_texts(self.run, texts)
        p = None
        if prompts is not None:
            pad = self.run.tokenizer.pad_id if self.run.tokenizer.pad_id is not None else 0
            p = _left_pad([self.run.encode_prompt(t) for t in prompts], pad)
        return score_tokens(self.discriminator, tokens, p)

    def p_human(self, texts: Sequence[str], prompts: Sequence[str] | None = None) -> np.ndarray:
        return self._realness(self.logits(texts, prompts))

    def _realness(self, logits: np.ndarray) -> np.ndarray:
        return realness(torch.from_numpy(logits).double(), self.kind).numpy()

    # --- calibration ---------------------------------------------------------------------------
    def calibrate(self, n: int = 500, seed: int = 0, save: bool = True) -> dict:
        """Threshold on validation real texts vs as many fresh generator samples; stored in detector.json."""
        real_tokens, prompts = validation_tokens(self.run, n)
        rng = torch.Generator().manual_seed(seed)
        g = self.run.generator
        if prompts is not None:
            from llmgan.training.conditional import sample_for_prompts

            fake_tokens, _ = sample_for_prompts(g, prompts, self.run.max_len, rng=rng)
        else:
            from llmgan.training.evaluation import sample_tokens

            fake_tokens, _ = sample_tokens(g, real_tokens.size(0), self.run.max_len, rng=rng)
        ph = self._realness(score_tokens(self.discriminator, real_tokens, prompts)).tolist()
        pg = self._realness(score_tokens(self.discriminator, fake_tokens, prompts)).tolist()
        thr, bacc = calibrate_threshold(ph, pg)
        self.threshold = thr
        self.calibration = {
            "threshold": thr,
            "balanced_accuracy": bacc,
            "auroc": auroc(ph, pg),
            "n_human": len(ph),
            "n_generated": len(pg),
            "checkpoint": os.path.basename(os.path.normpath(self.run.checkpoint)),
            "seed": seed,
        }
        if save:
            from llmgan.training.checkpoint import atomic_write_text

            atomic_write_text(os.path.join(self.run.run_dir, DETECTOR_FILE), json.dumps(self.calibration, indent=1))
        return self.calibration

    def load_or_calibrate(self, n: int = 500, seed: int = 0, force: bool = False) -> dict:
        """Use ``detector.json`` when it belongs to the current checkpoint, else calibrate (and save)."""
        path = os.path.join(self.run.run_dir, DETECTOR_FILE)
        if not force and os.path.isfile(path):
            try:
                cal = json.loads(open(path, encoding="utf-8").read())
            except (OSError, json.JSONDecodeError):
                cal = {}
            if cal.get("checkpoint") == os.path.basename(os.path.normpath(self.run.checkpoint)) and "threshold" in cal:
                self.calibration = cal
                if self.threshold is None:
                    self.threshold = float(cal["threshold"])
                return cal
        cal = self.calibrate(n=n, seed=seed)
        return cal

    def classify(self, texts: Sequence[str], prompts: Sequence[str] | None = None) -> list[dict]:
        if self.threshold is None:
            raise ValueError("detector threshold not set: calibrate first or pass a threshold")
        return [{"p_human": float(p), "label": HUMAN if p >= self.threshold else GENERATED}
                for p in self.p_human(texts, prompts)]


def validation_tokens(run: Any, n: int) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Up to ``n`` held-out real sequences of the run -- its validation file, else the validation split of
    the training file (same seed and fractions as training), else the test data -- and their prompts
    for conditional runs."""
    from llmgan.data import load_texts, split_texts

    d = run.cfg.data
    if run.is_conditional:
        from llmgan.data.conditional import format_prompt, load_records

        recs = list(load_records(d.valid, d)) if d.valid else None
        if recs is None:
            total = sum(d.split)
            _, recs, test = split_texts(list(load_records(d.train, d)), [x / total for x in d.split], seed=run.cfg.seed)
            recs = recs or test
        recs = recs[:n]
        if not recs:
            raise DataError(f"{run.run_dir}: no validation pairs to calibrate the detector on")
        tokens = encode_texts(run, [r["response"] for r in recs])
        pad = run.tokenizer.pad_id if run.tokenizer.pad_id is not None else 0
        prompts = _left_pad([run.tokenizer.encode(format_prompt(run.tokenizer, r["prompt"], d)) for r in recs], pad)
        return tokens, prompts
    texts: list[str] = []
    if d.valid:
        texts = list(load_texts(d.valid, field=d.field))
    elif d.train and not d.oracle:
        total = sum(d.split)
        _, texts, _ = split_texts(list(load_texts(d.train, field=d.field)), [x / total for x in d.split],
                                  seed=run.cfg.seed)
    if not texts:
        held = run.held_out_path()
        if held is None:
            raise DataError(f"{run.run_dir}: no validation or test data to calibrate the detector on")
        texts = list(load_texts(held, field=d.field))
    return encode_texts(run, texts[:n]), None


def read_detect_file(path: str) -> tuple[list[str], list[str] | None, list[str] | None]:
    """(texts, prompts or None, true labels or None) of a .txt file (one text per line) or a JSONL file of
    ``{"text"[, "label": "human"|"generated"][, "prompt"]}``."""
    from llmgan.data import load_texts, read_jsonl
    from llmgan.data.datasets import JSONL_SUFFIXES

    if os.path.splitext(path)[1].lower() not in JSONL_SUFFIXES:
        return list(load_texts(path)), None, None
    recs = read_jsonl(path, fields=("text",))
    texts = [r["text"] for r in recs]
    prompts = [r.get("prompt", "") for r in recs] if any("prompt" in r for r in recs) else None
    labels = None
    if any("label" in r for r in recs):
        labels = []
        for r, n in zip(recs, recs.line_numbers):
            lab = r.get("label")
            if lab not in (HUMAN, GENERATED):
                raise DataError(f'{path}: line {n}: "label" must be "human" or "generated", got {lab!r}')
            labels.append(lab)
    return texts, prompts, labels


def detect(run_dir: str, file: str | None = None, *, threshold: float | None = None, real: str | None = None,
           fake: str | None = None, n_calibration: int = 500, recalibrate: bool = False, seed: int = 0,
           device: str | torch.device = "cpu") -> dict:
    """Score ``file`` (and/or ``real``/``fake`` files) with a run's discriminator; see the module docstring.

    Returns ``{"threshold", "calibration", "results": [{"text", "p_human", "label"[, "true_label"]}],
    "auroc"?, "balanced_accuracy"?}``.
    """
    from llmgan.run import load_run

    if file is None and (real is None or fake is None):
        raise ConfigError("detect: give a FILE, or both --real and --fake")
    run = load_run(run_dir, device=device)
    det = Detector(run, threshold=threshold)
    cal = det.load_or_calibrate(n=n_calibration, seed=seed, force=recalibrate) if threshold is None else {}
    out: dict = {"threshold": det.threshold, "calibration": cal, "results": []}
    texts: list[str] = []
    prompts: list[str] | None = None
    truth: list[str] | None = None
    if file is not None:
        texts, prompts, truth = read_detect_file(file)
    if real is not None and fake is not None:
        rt, rp, _ = read_detect_file(real)
        ft, fp, _ = read_detect_file(fake)
        parts = [(t, p) for t, p in ((texts, prompts), (rt, rp), (ft, fp)) if t]
        if len({p is not None for _, p in parts}) > 1:
            raise DataError("detect: either every file has prompts or none has")
        n_file = len(texts)
        texts = texts + rt + ft
        prompts = [x for _, p in parts for x in p] if parts[0][1] is not None else None
        truth = (truth if truth is not None else [None] * n_file) + [HUMAN] * len(rt) + [GENERATED] * len(ft)
    results = det.classify(texts, prompts)
    for i, r in enumerate(results):
        r["text"] = texts[i]
        if truth is not None and truth[i] is not None:
            r["true_label"] = truth[i]
    out["results"] = results
    known = [r for r in results if "true_label" in r]
    if known and {r["true_label"] for r in known} == {HUMAN, GENERATED}:
        ph = [r["p_human"] for r in known if r["true_label"] == HUMAN]
        pg = [r["p_human"] for r in known if r["true_label"] == GENERATED]
        out["auroc"] = auroc(ph, pg)
        out["balanced_accuracy"] = balanced_accuracy(
            [r["p_human"] for r in known], [r["true_label"] == HUMAN for r in known], det.threshold
        )
    return out
