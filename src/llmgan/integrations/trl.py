"""An online discriminator as a TRL reward function: GAD (Ye et al. 2025) on TRL's ``GRPOTrainer``.

TRL calls a plain callable reward as ``reward_func(prompts=, completions=, completion_ids=, **kwargs)``
with every other dataset column in ``kwargs`` (one value per completion) and outside ``no_grad``, so a
callable can own a discriminator D and its optimizer and step D on every batch -- which TRL's own
reward models cannot (an ``nn.Module`` reward runs under ``inference_mode`` and is never trained).
:class:`OnlineDiscriminatorReward` does per call:

1. encode the completions and the reference responses of their prompts (the dataset column
   ``reference_column``, GAD's teacher responses) with the discriminator's tokenizer, from TEXT on
   both sides, so D cannot tell them apart by how they were tokenized; with ``condition_on_prompt``
   (default) D judges each response given its prompt, as in GAD;
2. score them with D in eval mode, no gradient: the reward is D's logit of the completion
   (``reward="logodds"``, GAD) or ``log sigmoid(D(completion) - D(reference))`` (``bradley_terry``);
   the same scores give D's accuracies before it sees this batch (an honest, on-policy estimate);
3. ``steps_per_call`` optimizer steps of D on (reference, completion) pairs: the Bradley-Terry loss
   ``-log sigmoid(D(ref) - D(completion))`` (``loss="bt"``, GAD's game; losses.py ``rsgan``) or binary
   cross-entropy (``"bce"``); gradient norm clipped at ``grad_clip`` (GAD: 0.2);
4. log ``discriminator/{loss,pair_accuracy,real_accuracy,fake_accuracy,reward_mean}`` through TRL's
   ``log_metric`` (averaged over processes and logging steps by TRL), and keep them in ``history``.

Several processes (``accelerate launch``, torchrun; D lives outside the student's DDP wrapper): each rank
scores its own completions and D's gradients are averaged across ranks by one all-reduce per step,
after D's weights were broadcast from rank 0 once, so every rank holds the same D -- equal, to float
tolerance, to one process training on the global batch (ranks with equal batch sizes, as TRL's are).

Checkpoints: :meth:`callback` returns a ``transformers.TrainerCallback`` that writes D, its optimizer
and counters into each ``checkpoint-N/llmgan_discriminator/`` the trainer saves, and on a resumed
``trainer.train(resume_from_checkpoint=...)`` loads them back before the first step. Evaluation
batches (the trainer's model in eval mode) are scored but never train D.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Sequence
from typing import Any

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import Tensor, nn

from llmgan.config import ModelConfig
from llmgan.data.tokenizers import Tokenizer
from llmgan.errors import CheckpointError, ConfigError
from llmgan.fileio import atomic_write_text
from llmgan.losses import LOSS_KINDS, d_loss, realness_logits
from llmgan.models.factory import make_discriminator
from llmgan.tensor_files import load_model_weights, load_tensors, save_tensors
from llmgan.training.checkpoint import optimizer_from_flat, optimizer_to_flat
from llmgan.training.optim import make_optimizer

STATE_DIR = "llmgan_discriminator"  # inside each checkpoint-N/ the trainer writes
_LOSSES = {"bt": "rsgan", "bradley_terry": "rsgan", "bce": "nonsaturating"}


def as_tokenizer(tokenizer: Any) -> Tokenizer:
    """An llmgan Tokenizer as it is; a ``transformers`` tokenizer (TRL's processing class) wrapped."""
    if isinstance(tokenizer, Tokenizer):
        return tokenizer
    if hasattr(tokenizer, "encode") and hasattr(tokenizer, "get_vocab"):
        from llmgan.data.hf_tokenizer import HFTokenizer

        return HFTokenizer(str(getattr(tokenizer, "name_or_path", "") or "tokenizer"), hf=tokenizer)
    raise ConfigError(f"tokenizer: expected an llmgan Tokenizer or a transformers tokenizer, got {type(tokenizer)}")


def as_text(x: Any, where: str) -> str:
    """The text of one TRL prompt/completion/reference: a string, or a conversation (a list of
    ``{"role", "content"}`` messages, TRL's conversational format), whose contents are joined."""
    if isinstance(x, str):
        return x
    if isinstance(x, dict) and "content" in x:
        return as_text(x["content"], where)
    if isinstance(x, list) and all(isinstance(m, dict) and "content" in m for m in x):
        return "\n".join(as_text(m["content"], where) for m in x)
    if isinstance(x, list) and all(isinstance(m, dict) and m.get("type") == "text" for m in x):
        return "".join(str(m.get("text", "")) for m in x)  # multimodal content blocks: their text parts
    raise ConfigError(f"{where}: expected a string or a list of chat messages, got {type(x).__name__}")


class OnlineDiscriminatorReward:
    """A TRL reward callable that owns a discriminator and trains it on every call (see the module doc).

    ``discriminator``: an llmgan discriminator module (``logit > 0`` = real), or a registry name
    (``"cnn"``, ``"transformer"``, ``"hf:<encoder>"``, ...) built for ``tokenizer`` with
    ``discriminator_kwargs``. ``tokenizer``: the one D reads (the student's HF tokenizer for an
    embedding-sharing D, or any llmgan tokenizer); ``hf:`` encoders with their own vocabulary
    re-tokenize the text themselves.
    """

    def __init__(
        self,
        discriminator: nn.Module | str,
        tokenizer: Any,
        reference_column: str = "response",
        *,
        lr: float = 1e-4,
        steps_per_call: int = 1,
        loss: str = "bt",
        reward: str = "logodds",
        grad_clip: float | None = 0.2,
        max_length: int = 256,
        condition_on_prompt: bool = True,
        optimizer: str = "adam",
        betas: tuple[float, float] = (0.9, 0.999),
        weight_decay: float = 0.0,
        discriminator_kwargs: dict[str, Any] | None = None,
        device: str | torch.device | None = None,
        name: str = "discriminator",
    ):
        self.tokenizer = as_tokenizer(tokenizer)
        if isinstance(discriminator, str):
            discriminator = make_discriminator(ModelConfig(discriminator, dict(discriminator_kwargs or {})),
                                               self.tokenizer)
        elif discriminator_kwargs:
            raise ConfigError("discriminator_kwargs: only for a discriminator given by name")
        if not isinstance(discriminator, nn.Module):
            raise ConfigError(f"discriminator: expected an nn.Module or a registry name, got {type(discriminator)}")
        kind = _LOSSES.get(loss, loss)
        if kind not in LOSS_KINDS:
            raise ConfigError(f"loss: expected bt|bce or a losses.py kind ({', '.join(LOSS_KINDS)}), got {loss!r}")
        if reward not in ("logodds", "bradley_terry"):
            raise ConfigError(f"reward: expected logodds|bradley_terry, got {reward!r}")
        if isinstance(steps_per_call, bool) or not isinstance(steps_per_call, int) or steps_per_call < 0:
            raise ConfigError(f"steps_per_call: expected an integer >= 0, got {steps_per_call!r}")
        if not (isinstance(max_length, int) and max_length >= 1):
            raise ConfigError(f"max_length: expected a positive integer, got {max_length!r}")
        if not (isinstance(lr, int | float) and lr > 0):
            raise ConfigError(f"lr: expected a positive number, got {lr!r}")
        self.discriminator = discriminator
        self.reference_column = reference_column
        self.lr, self.steps_per_call, self.kind, self.reward_kind = float(lr), steps_per_call, kind, reward
        self.grad_clip, self.max_length, self.condition_on_prompt = grad_clip, max_length, condition_on_prompt
        self.optimizer_name, self.betas, self.weight_decay = optimizer, tuple(betas), weight_decay
        self.device = None if device is None else torch.device(device)
        self.__name__ = name  # TRL names a reward function's logged columns after it (rewards/<name>/mean)
        self.optimizer: torch.optim.Optimizer | None = None
        self.calls = 0  # reward calls seen
        self.updates = 0  # optimizer steps of D
        self.history: list[dict[str, float]] = []  # one entry per call: the metrics logged
        self._model: nn.Module | None = None  # the trainer's model (set by the callback): eval mode = no D update
        self._loaded_from: str | None = None
        self._synced = False  # rank 0's D broadcast to the other ranks (multi-process)

    # --- setup ----------------------------------------------------------------------------------
    def _ready(self, collective: bool = True) -> None:
        """Device and optimizer once, lazily (Accelerate's process group and device exist only once the
        trainer is built); and, in a collective call (one every rank makes: a reward call, a resume),
        rank 0's weights broadcast to every rank, once. ``save_state`` runs on rank 0 alone: not collective."""
        if self.optimizer is None:
            if self.device is None:
                self.device = _accelerate_device() or next(self.discriminator.parameters()).device
            self.discriminator.to(self.device)
            self.optimizer = make_optimizer(self.discriminator.parameters(), self.optimizer_name, self.lr,
                                            self.weight_decay, self.betas)
        if collective and not self._synced:
            if _world() > 1:
                with torch.no_grad():
                    for t in self.discriminator.state_dict().values():
                        dist.broadcast(t, src=0)  # every rank starts from rank 0's D (seeds may differ)
            self._synced = True

    # --- encoding -------------------------------------------------------------------------------
    def _pad_id(self) -> int:
        tok = self.tokenizer
        for i in (tok.pad_id, tok.eos_id, 0):
            if i is not None:
                return int(i)
        return 0

    def encode_responses(self, texts: Sequence[str]) -> Tensor:
        """(B, T) right-padded ids, each response truncated to ``max_length - 1`` tokens plus EOS."""
        tok, pad = self.tokenizer, self._pad_id()
        rows = []
        for t in texts:
            ids = tok.encode(t)[: self.max_length - (tok.eos_id is not None)]
            rows.append(ids + ([tok.eos_id] if tok.eos_id is not None else []) or [pad])
        T = max(len(r) for r in rows)
        out = torch.full((len(rows), T), pad, dtype=torch.long)
        for i, r in enumerate(rows):
            out[i, : len(r)] = torch.tensor(r, dtype=torch.long)
        return out.to(self.device)

    def encode_prompts(self, texts: Sequence[str]) -> Tensor:
        """(B, P) left-padded prompt ids (the last ``max_length`` tokens of each), the llmgan convention."""
        pad = self._pad_id()
        rows = [self.tokenizer.encode(t)[-self.max_length:] or [pad] for t in texts]
        P = max(len(r) for r in rows)
        out = torch.full((len(rows), P), pad, dtype=torch.long)
        for i, r in enumerate(rows):
            out[i, P - len(r):] = torch.tensor(r, dtype=torch.long)
        return out.to(self.device)

    # --- the reward ------------------------------------------------------------------------------
    def _scores(self, real: Tensor, fake: Tensor, prompt: Tensor | None) -> tuple[Tensor, Tensor]:
        kw = {} if prompt is None else {"prompt": prompt}
        return self.discriminator(real, **kw).float(), self.discriminator(fake, **kw).float()

    def _training(self) -> bool:
        return self.steps_per_call > 0 and (self._model is None or self._model.training)

    def __call__(self, prompts: Sequence[Any], completions: Sequence[Any], completion_ids: Any = None,
                 **kwargs: Any) -> list[float]:
        if self.reference_column not in kwargs:
            cols = sorted(k for k in kwargs if k not in ("trainer_state", "log_extra", "log_metric", "environments"))
            raise ConfigError(f"reference column {self.reference_column!r} is not among the dataset columns TRL "
                              f"passed ({', '.join(cols) or 'none'}); set reference_column=")
        refs = kwargs[self.reference_column]
        if len(refs) != len(completions) or len(prompts) != len(completions):
            raise ConfigError(f"{len(completions)} completions but {len(refs)} references / {len(prompts)} prompts")
        self._ready()
        D = self.discriminator
        fake = self.encode_responses([as_text(c, "completions") for c in completions])
        real = self.encode_responses([as_text(r, f"column {self.reference_column!r}") for r in refs])
        if real.size(1) != fake.size(1):  # one width for both sides (padding is masked; shapes must pair)
            T = max(real.size(1), fake.size(1))
            real, fake = (F.pad(x, (0, T - x.size(1)), value=self._pad_id()) for x in (real, fake))
        prompt = self.encode_prompts([as_text(p, "prompts") for p in prompts]) if self.condition_on_prompt else None
        was = D.training
        D.eval()
        with torch.no_grad():
            sr, sf = self._scores(real, fake, prompt)
            ar, af = realness_logits(sr, self.kind), realness_logits(sf, self.kind)  # > 0 = judged real
            reward = af if self.reward_kind == "logodds" else F.logsigmoid(af - ar)
        D.train(was)
        metrics = {"pair_accuracy": float((ar > af).float().mean()), "real_accuracy": float((ar > 0).float().mean()),
                   "fake_accuracy": float((af <= 0).float().mean()), "reward_mean": float(reward.mean())}
        if self._training():
            metrics["loss"] = self._train_steps(real, fake, prompt)
        self.calls += 1
        self.history.append(metrics)
        log_metric: Callable[[str, float], None] | None = kwargs.get("log_metric")
        if callable(log_metric):
            for k, v in metrics.items():
                log_metric(f"{self.__name__}/{k}", v)
        return [float(r) for r in reward.cpu()]

    def _train_steps(self, real: Tensor, fake: Tensor, prompt: Tensor | None) -> float:
        D, opt = self.discriminator, self.optimizer
        assert opt is not None
        params = [p for p in D.parameters() if p.requires_grad]
        D.train()
        total = 0.0
        for _ in range(self.steps_per_call):
            opt.zero_grad(set_to_none=False)
            sr, sf = self._scores(real, fake, prompt)
            loss = d_loss(sr, sf, self.kind)
            if not torch.isfinite(loss):
                raise ConfigError(f"{self.__name__}: the discriminator loss is {float(loss)} (lower lr?)")
            loss.backward()
            _average_gradients(params)
            if self.grad_clip:
                torch.nn.utils.clip_grad_norm_(params, self.grad_clip)
            opt.step()
            self.updates += 1
            total += float(loss.detach())
        return total / self.steps_per_call

    # --- state ------------------------------------------------------------------------------------
    def save_state(self, checkpoint_dir: str) -> str:
        """Write D, its optimizer and the counters to ``checkpoint_dir/llmgan_discriminator/``; returns it."""
        self._ready(collective=False)
        assert self.optimizer is not None
        out = os.path.join(checkpoint_dir, STATE_DIR)
        os.makedirs(out, exist_ok=True)
        save_tensors(self.discriminator.state_dict(), os.path.join(out, "discriminator.safetensors"))
        tensors, meta = optimizer_to_flat(self.optimizer)
        save_tensors(tensors, os.path.join(out, "optimizer.safetensors"))
        doc = {"calls": self.calls, "updates": self.updates, "optimizer": meta, "loss": self.kind}
        atomic_write_text(os.path.join(out, "state.json"), json.dumps(doc) + "\n")  # last: marks it complete
        return out

    @staticmethod
    def has_state(checkpoint_dir: str) -> bool:
        return os.path.isfile(os.path.join(checkpoint_dir, STATE_DIR, "state.json"))

    def load_state(self, checkpoint_dir: str) -> None:
        """Restore what :meth:`save_state` wrote (``checkpoint_dir`` is the trainer's ``checkpoint-N``)."""
        src = os.path.join(checkpoint_dir, STATE_DIR)
        if not self.has_state(checkpoint_dir):
            raise CheckpointError(f"{checkpoint_dir}: no discriminator state ({STATE_DIR}/state.json missing)")
        self._ready(collective=False)  # every rank reads the same files; the first call syncs anyway
        assert self.optimizer is not None
        try:
            with open(os.path.join(src, "state.json"), encoding="utf-8") as f:
                doc = json.load(f)
        except (OSError, ValueError) as e:
            raise CheckpointError(f"{src}/state.json: unreadable ({e})") from None
        load_model_weights(self.discriminator, os.path.join(src, "discriminator.safetensors"))
        tensors = {k: v.to(self.device) for k, v in load_tensors(os.path.join(src, "optimizer.safetensors")).items()}
        optimizer_from_flat(self.optimizer, tensors, doc["optimizer"])
        self.calls, self.updates = int(doc["calls"]), int(doc["updates"])
        self._loaded_from = checkpoint_dir

    # --- TRL / transformers glue ----------------------------------------------------------------
    def callback(self) -> Any:
        """A ``transformers.TrainerCallback`` saving/resuming D with the trainer's checkpoints and telling
        train from eval batches: ``GRPOTrainer(..., callbacks=[reward.callback()])``."""
        return _callback_class()(self)

    def attach(self, trainer: Any) -> Any:
        """``trainer.add_callback(self.callback())``; returns the trainer."""
        trainer.add_callback(self.callback())
        return trainer


def _world() -> int:
    return dist.get_world_size() if dist.is_available() and dist.is_initialized() else 1


def _accelerate_device() -> torch.device | None:
    """Accelerate's device for this process when accelerate is in use (TRL always brings it), else None."""
    import sys

    if "accelerate" not in sys.modules:
        return None
    from accelerate import PartialState

    return PartialState().device


def _average_gradients(params: list[nn.Parameter]) -> None:
    """Mean of every gradient over the ranks, as DDP would: one flat all-reduce (no-op in one process).

    A parameter without a gradient counts as zero on that rank, so every rank runs the same collective."""
    world = _world()
    if world <= 1 or not params:
        return
    grads = [p.grad if p.grad is not None else torch.zeros_like(p) for p in params]
    flat = torch.cat([g.reshape(-1) for g in grads])
    dist.all_reduce(flat)
    flat.div_(world)
    i = 0
    for p, g in zip(params, grads):
        n = g.numel()
        p.grad = flat[i: i + n].view_as(p).clone()
        i += n


_CALLBACK: Any = None


def _callback_class() -> Any:
    global _CALLBACK
    if _CALLBACK is not None:
        return _CALLBACK
    try:
        from transformers import TrainerCallback
    except ImportError:
        raise ConfigError("the TRL integration needs transformers: pip install 'llmgan[trl]'") from None

    class DiscriminatorCheckpointCallback(TrainerCallback):
        """Saves the reward's D into every ``checkpoint-N`` and loads it back when training resumes."""

        def __init__(self, reward: OnlineDiscriminatorReward):
            self.reward = reward

        def on_train_begin(self, args, state, control, model=None, **kwargs):
            r = self.reward
            r._model = model
            if state.global_step > 0 and r._loaded_from is None:  # resumed: the trainer restored step N
                ckpt = os.path.join(args.output_dir, f"checkpoint-{state.global_step}")
                if not r.has_state(ckpt):
                    raise CheckpointError(f"{ckpt}: resuming at step {state.global_step} but no discriminator state "
                                          "there; call reward.load_state(<checkpoint dir>) before train()")
                r.load_state(ckpt)
            return control

        def on_save(self, args, state, control, **kwargs):
            if state.is_world_process_zero:  # every rank holds the same D: one writer
                self.reward.save_state(os.path.join(args.output_dir, f"checkpoint-{state.global_step}"))
            return control

    _CALLBACK = DiscriminatorCheckpointCallback
    return _CALLBACK


__all__ = ["STATE_DIR", "OnlineDiscriminatorReward", "as_text", "as_tokenizer"]
