"""What an adversarial algorithm is: its generator update and its discriminator update, nothing else.

The engine (``llmgan.training.adversarial``) hands each algorithm a ``GANContext`` with the shared
parts: models, optimizers, sampling, real data, the update helpers, the frozen MLE reference and
logging. An algorithm file holds a params dataclass (every field documented, with the paper's
default) and a subclass of ``Algorithm`` registered with ``@register("name")``.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

from llmgan import interrupt
from llmgan.errors import ConfigError
from llmgan.losses import d_loss, realness_logits
from llmgan.models.base import Samples

ALGORITHMS: dict[str, type[Algorithm]] = {}


def register(name: str) -> Callable[[type[Algorithm]], type[Algorithm]]:
    def deco(cls: type[Algorithm]) -> type[Algorithm]:
        cls.name = name
        ALGORITHMS[name] = cls
        return cls

    return deco


@dataclass
class NoParams:
    pass


# (loss, optimizer, module, grad-clip norm or None, what) -> the loss's value. The engine's optimizer
# step: finiteness agreed across ranks, backward, data-parallel gradient averaging, clipping, step.
StepFn = Callable[[Tensor, torch.optim.Optimizer, torch.nn.Module, "float | None", str], float]


class GANContext:
    """The shared machinery an algorithm may use. Built by the engine; see the attributes below.

    generator, discriminator: the models being trained (discriminator may be None)
    g_opt, d_opt: their optimizers (adversarial learning rates)
    cfg: the run's AdversarialConfig; device; max_len: sample length
    rng: sampling torch.Generator on the model's device; data_rng: CPU generator for indices/permutations
    round: the current adversarial round (0-based)

    The engine passes in everything the context reads: the run's data (``train`` and, when
    conditional, ``train_prompts``), its live progress counters (``progress``: the trainer's state
    dict, read only here), its optimizer step (``step_fn``), autocast and the frozen reference.
    """

    def __init__(
        self,
        *,
        generator: torch.nn.Module,
        discriminator: torch.nn.Module | None,
        g_opt: torch.optim.Optimizer,
        d_opt: torch.optim.Optimizer | None,
        cfg: Any,
        device: torch.device,
        max_len: int,
        rng: torch.Generator,
        data_rng: torch.Generator,
        data: Any,
        progress: dict,
        step_fn: StepFn,
        autocast: Callable[[], Any],
        reference: torch.nn.Module | None = None,
        grad_clip: float | None = None,
    ):
        self.generator = generator
        self.discriminator = discriminator
        self.g_opt = g_opt
        self.d_opt = d_opt
        self.cfg = cfg
        self.device = device
        self.max_len = max_len
        self.rng = rng  # on the model's device: sampling
        self.data_rng = data_rng  # on the CPU: data indices, permutations, latent codes
        self._data = data
        self.tokenizer = data.tokenizer
        self.pad_id = data.tokenizer.pad_id
        self._progress = progress
        self._step_fn = step_fn
        self._autocast = autocast
        self._reference = reference
        self._grad_clip = grad_clip
        self.metrics: dict[str, float] = {}

    @property
    def round(self) -> int:
        return int(self._progress.get("round", 0))

    @property
    def phase(self) -> str:
        """The engine's phase: "d_pretrain" or "adversarial" (lets d_step tell pre-training apart)."""
        return str(self._progress.get("phase", "adversarial"))

    @property
    def d_pretrain_step(self) -> int:
        """Discriminator pre-training refreshes completed so far."""
        return int(self._progress.get("d_pretrain", 0))

    # --- data ---------------------------------------------------------------------------------
    @property
    def conditional(self) -> bool:
        """True for prompt/response (or class-conditional) runs: ``real_pairs`` gives aligned prompts."""
        return getattr(self._data, "train_prompts", None) is not None

    @property
    def n_train(self) -> int:
        """Number of training sequences (pairs, when conditional)."""
        return len(self._data.train)

    @torch.no_grad()
    def sample(self, n: int, generator=None, **kwargs) -> Samples:
        """n fresh samples from the generator (or another policy), no gradient.

        ``prompt=`` (n, P) left-padded ids (e.g. from :meth:`real_pairs`) conditions each row; other
        keyword arguments (temperature, top_k, ...) go to ``Generator.sample``.
        """
        g = generator or self.generator
        was = g.training
        g.eval()
        out = g.sample(n, self.max_len, generator=self.rng, **kwargs)
        g.train(was)
        return out

    def real_batch(self, n: int) -> tuple[Tensor, Tensor]:
        """n random real training sequences: tokens (n, T) padded to max_len, lengths (n,)."""
        train = self._data.train
        idx = torch.randint(0, len(train), (n,), generator=self.data_rng)
        tokens = train.tokens[idx]
        if tokens.size(1) < self.max_len:
            pad = self.pad_id if self.pad_id is not None else 0
            tokens = torch.nn.functional.pad(tokens, (0, self.max_len - tokens.size(1)), value=pad)
        return tokens[:, : self.max_len].to(self.device), train.lengths[idx].clamp(max=self.max_len).to(self.device)

    def real_pairs(self, n: int) -> tuple[Tensor, Tensor, Tensor]:
        """n random (prompt, reference response) training pairs of a conditional run.

        Returns prompts (n, P) left-padded and trimmed to the batch's longest prompt, responses (n, T)
        padded to max_len, lengths (n,) -- row i of each belongs to the same record.
        """
        from llmgan.data.conditional import trim_prompt

        data = self._data
        if data.train_prompts is None:
            raise ValueError("real_pairs: this run has no prompts (unconditional data); use real_batch")
        train = data.train
        idx = torch.randint(0, len(train), (n,), generator=self.data_rng)
        tokens = train.tokens[idx]
        if tokens.size(1) < self.max_len:
            pad = self.pad_id if self.pad_id is not None else 0
            tokens = torch.nn.functional.pad(tokens, (0, self.max_len - tokens.size(1)), value=pad)
        prompts = trim_prompt(data.train_prompts[idx], self.pad_id)
        lengths = train.lengths[idx].clamp(max=self.max_len)
        return prompts.to(self.device), tokens[:, : self.max_len].to(self.device), lengths.to(self.device)

    def mask(self, tokens: Tensor, lengths: Tensor) -> Tensor:
        return torch.arange(tokens.size(1), device=tokens.device)[None, :] < lengths[:, None]

    # --- updates ------------------------------------------------------------------------------
    def update_generator(self, loss: Tensor) -> float:
        """One optimizer step of G on ``loss`` (checked finite on every rank, gradients averaged, clipped)."""
        return self._step_fn(loss, self.g_opt, self.generator, self._grad_clip, f"{self.cfg.algorithm} G loss")

    def update_discriminator(self, loss: Tensor, clip: float | None = None) -> float:
        """One optimizer step of D on ``loss``; ``clip``: gradient-norm clipping (None: off)."""
        return self._step_fn(loss, self.d_opt, self.discriminator, clip, f"{self.cfg.algorithm} D loss")

    def reference(self):
        """A frozen copy of the generator as it was after MLE pre-training (for KL leashes)."""
        return self._reference

    @torch.no_grad()
    def sync_reference(self) -> None:
        """Copy the generator's current weights into the frozen reference (SPIN's opponent refresh).

        The reference stays frozen and in eval mode; it is checkpointed with the run, so a resumed run
        keeps the opponent it had.
        """
        ref = self.reference()
        if ref is None:
            raise ValueError("sync_reference: the algorithm has no reference (set needs_reference = True)")
        ref.load_state_dict(self.generator.state_dict())
        ref.requires_grad_(False).eval()

    def autocast(self):
        return self._autocast()

    def log(self, **metrics: float) -> None:
        self.metrics.update({k: float(v) for k, v in metrics.items()})


class Algorithm:
    """Subclasses set ``Params`` and implement ``g_step`` (and ``d_step`` if the default won't do)."""

    name: str = "base"
    Params: type = NoParams
    uses_discriminator: bool = True
    needs_reference: bool = False  # the engine keeps a frozen, checkpointed copy of G after MLE (KL leashes)
    # Whether g_step/d_step condition on prompts (ctx.real_pairs) on conditional data; the engine refuses
    # conditional data for algorithms that would silently ignore the prompts.
    supports_prompts: bool = False

    def __init__(self, params: Any):
        self.params = params

    @classmethod
    def from_dict(cls, raw: dict) -> Algorithm:
        from llmgan.config import _from_dict

        try:
            params = _from_dict(cls.Params, dict(raw or {}), where="adversarial.params")
        except ConfigError:
            raise
        return cls(params)

    def setup(self, ctx: GANContext) -> None:
        """Build the algorithm's own modules (called at construction, before a resume loads them)."""

    def start(self, ctx: GANContext) -> None:
        """Called once when adversarial training begins, after MLE (e.g. to sync policy copies)."""

    def extra_models(self) -> dict[str, torch.nn.Module]:
        """Modules of the algorithm's own (e.g. a rollout policy) to checkpoint with the run."""
        return {}

    def extra_optimizers(self) -> dict[str, torch.optim.Optimizer]:
        """Optimizers of the algorithm's own (checkpointed with the run)."""
        return {}

    def state_dict(self) -> dict:
        """Run state that is not a module (moving baselines, cached samples), JSON-serialisable.

        Saved in every checkpoint's state.json and handed back to ``load_state_dict`` on resume, so
        a resumed run continues exactly where the killed one stopped.
        """
        return {}

    def load_state_dict(self, state: dict, device: torch.device) -> None:
        """Restore what ``state_dict`` returned (tensors go to ``device``)."""

    def g_step(self, ctx: GANContext) -> dict:
        raise NotImplementedError

    def d_step(self, ctx: GANContext) -> dict:
        """Default (SeqGAN): fresh fake samples + as many real ones, cfg.d_epochs epochs of minibatches."""
        fake = ctx.sample(ctx.cfg.d_samples)
        real_tokens, real_lengths = ctx.real_batch(ctx.cfg.d_samples)
        return train_discriminator(ctx, real_tokens, fake.tokens, ctx.cfg.d_epochs, kind=ctx.cfg.loss)


# A minibatch loss for train_discriminator: (real ids, fake ids) -> (loss, accuracy on real, on fake), optionally
# followed by a dict of further per-minibatch statistics (averaged and returned like the accuracies).
BatchLoss = Callable[[Tensor, Tensor], tuple]


def classifier_batch_loss(D: torch.nn.Module, kind: str) -> BatchLoss:
    """The binary real/fake loss ``kind`` (llmgan.losses.d_loss) on D's logits; accuracy = logit sign.

    Real and fake rows of the same width go through D in ONE forward: twice the rows per GEMM, and one
    autograd graph instead of two (~12% faster per step on the SeqGAN CNN than two calls).
    """

    def batch_loss(r: Tensor, f: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        if r.shape[1:] == f.shape[1:]:
            logits = D(torch.cat([r, f])).float()
            lr, lf = logits[: len(r)], logits[len(r) :]
        else:
            lr, lf = D(r).float(), D(f).float()
        # accuracy reads D's realness, so it means the same under the wgan convention (D scores fakeness)
        rr, rf = realness_logits(lr.detach(), kind), realness_logits(lf.detach(), kind)
        return d_loss(lr, lf, kind), (rr > 0).float().mean(), (rf <= 0).float().mean()

    return batch_loss


def train_discriminator(
    ctx: GANContext, real: Tensor, fake: Tensor, epochs: int, kind: str = "vanilla",
    batch_loss: BatchLoss | None = None, paired: bool = False, clip: float | None = None,
) -> dict:
    """Epochs of minibatch D updates on balanced real (N, T) and fake (M, T) token sets.

    Each minibatch holds d_batch_size real and d_batch_size fake sequences; ``batch_loss`` (default:
    :func:`classifier_batch_loss` with ``kind``) turns one into a loss, run under the run's autocast.
    ``paired``: real row i belongs with fake row i (GAD's pairs; N = M), so both are drawn with one
    permutation. ``clip``: D's gradient-norm clip. Returns the mean loss and D's accuracy on real and on
    fake over the last epoch (logged to spot collapse), and the means of batch_loss's extra statistics.
    """
    D = ctx.discriminator
    D.train()
    batch_loss = batch_loss or classifier_batch_loss(D, kind)
    bs = ctx.cfg.d_batch_size
    n = min(len(real), len(fake))
    if paired and len(real) != len(fake):
        raise ValueError(f"train_discriminator(paired=True): {len(real)} real rows vs {len(fake)} fake rows")
    stats = {"d_loss": 0.0, "d_acc_real": 0.0, "d_acc_fake": 0.0}
    for _ in range(max(epochs, 0)):
        perm_r = torch.randperm(len(real), generator=ctx.data_rng)[:n]
        perm_f = perm_r if paired else torch.randperm(len(fake), generator=ctx.data_rng)[:n]
        tot, acc_r, acc_f, batches = 0.0, 0.0, 0.0, 0
        extra: dict[str, float] = {}
        for start in range(0, n, bs):
            interrupt.point()  # per D minibatch (the engine restores D and its optimizer)
            r = real[perm_r[start : start + bs].to(real.device)].to(ctx.device)
            f = fake[perm_f[start : start + bs].to(fake.device)].to(ctx.device)
            with ctx.autocast():
                loss, a_r, a_f, *more = batch_loss(r, f)
            tot += ctx.update_discriminator(loss, clip=clip)
            acc_r += float(a_r)
            acc_f += float(a_f)
            for k, v in (more[0] if more else {}).items():
                extra[k] = extra.get(k, 0.0) + float(v)
            batches += 1
        stats = {"d_loss": tot / batches, "d_acc_real": acc_r / batches, "d_acc_fake": acc_f / batches,
                 **{k: v / batches for k, v in extra.items()}}
    return stats


def build_algorithm(name: str, raw_params: dict) -> Algorithm:
    import llmgan.algorithms  # noqa: F401 - registers every algorithm

    if name not in ALGORITHMS:
        raise ConfigError(f"adversarial.algorithm: unknown {name!r} (valid: {', '.join(sorted(ALGORITHMS))})")
    return ALGORITHMS[name].from_dict(raw_params)
