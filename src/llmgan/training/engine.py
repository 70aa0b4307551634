"""The one training engine: MLE pre-training of G, D pre-training, adversarial rounds.

    Trainer.run()
      ├─ phase "mle":       epochs of teacher-forced MLE on the training set (eval every N epochs)
      ├─ phase "d_pretrain": D trained on real vs fresh generated samples     (adversarial runs only)
      └─ phase "adversarial": rounds of [g_steps x algo.g_step, d_steps x algo.d_step] (+ eval, samples)

The engine owns devices, seeds, optimizers, LR schedules, torch.distributed, logging, checkpoints
and evaluation; an algorithm (``llmgan.algorithms``) only says how G and D are updated. Every
phase records its progress in the checkpoint, so ``--resume`` continues a killed run exactly where
its last checkpoint left off (same data order, same RNG streams).
"""

from __future__ import annotations

import copy
import math
import os
import random
import signal
import sys
import time
from collections.abc import Callable
from typing import Any, TypeVar

import numpy as np
import torch
from torch import Tensor

from llmgan import interrupt
from llmgan.config import RunConfig, save_config
from llmgan.data import RunData
from llmgan.data.conditional import trim_prompt
from llmgan.errors import CheckpointError, ConfigError, TrainingDiverged
from llmgan.fileio import atomic_write_text
from llmgan.models.factory import make_generator
from llmgan.training import distributed as dist_utils
from llmgan.training.adversarial import AdversarialSetup, adversarial_phases
from llmgan.training.checkpoint import Checkpointer, load_model_weights
from llmgan.training.conditional import conditional_evaluator
from llmgan.training.data_setup import prepare_data, write_ids
from llmgan.training.evaluation import ban_token_ids, evaluate_generator
from llmgan.training.logging import MetricsLogger, info
from llmgan.training.optim import lr_lambda, make_optimizer
from llmgan.training.precision import LossScaler, autocast_context, resolve_precision


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % (2**32))
    torch.manual_seed(seed)


_T = TypeVar("_T")

# Modules with more parameters than this are not snapshotted at their first update inside a sub-step
# (memory: a copy of a large LLM and its Adam moments); a stop then waits for the sub-step to finish.
SNAPSHOT_MAX_PARAMS = 50_000_000


class _SubStep:
    """What one sub-step (a G step, a D step, an evaluation) may change, captured so that a stop
    requested in the middle of it can put everything back: the run then checkpoints the state at the
    sub-step's start and ``--resume`` re-runs the sub-step from there, bit for bit.

    RNG states and the algorithm's own state are taken at the start (cheap); a module and its
    optimizer are copied lazily, just before their first update inside the sub-step. Under torchrun
    (several ranks) nothing is rolled back: ranks would have to agree at every interruption point,
    so there a stop waits for the sub-step boundary.
    """

    def __init__(self, tr: Trainer):
        self.tr = tr
        self.rollbackable = tr.world == 1
        cuda = torch.cuda.is_available() and torch.cuda.is_initialized()
        self.rng = {
            "torch": torch.get_rng_state(),
            "cuda": torch.cuda.get_rng_state_all() if cuda else None,
            "python": random.getstate(),
            "numpy": np.random.get_state(),
            "sample": tr.sample_rng.get_state(),
            "data": tr.data_rng.get_state(),
        }
        adv = tr.adversarial
        self.algo_state = copy.deepcopy(adv.algorithm.state_dict()) if adv is not None else None
        self.metrics = dict(adv.ctx.metrics) if adv is not None else None
        self.log_offset = tr.logger.offset()  # lines the sub-step logs are taken back with it
        self.saved: dict[int, tuple[torch.nn.Module, torch.optim.Optimizer, dict, dict]] = {}

    def before_update(self, module: torch.nn.Module, opt: torch.optim.Optimizer) -> None:
        if not self.rollbackable or id(module) in self.saved:
            return
        if sum(p.numel() for p in module.parameters()) > SNAPSHOT_MAX_PARAMS:
            self.rollbackable = False
            return
        weights = {k: v.detach().clone() for k, v in module.state_dict().items()}
        self.saved[id(module)] = (module, opt, weights, copy.deepcopy(opt.state_dict()))

    def rollback(self) -> None:
        tr = self.tr
        for module, opt, weights, opt_state in self.saved.values():
            module.load_state_dict(weights)
            opt.load_state_dict(opt_state)
        torch.set_rng_state(self.rng["torch"])
        if self.rng["cuda"] is not None:
            torch.cuda.set_rng_state_all(self.rng["cuda"])
        random.setstate(self.rng["python"])
        np.random.set_state(self.rng["numpy"])
        tr.sample_rng.set_state(self.rng["sample"])
        tr.data_rng.set_state(self.rng["data"])
        if tr.adversarial is not None:
            tr.adversarial.algorithm.load_state_dict(copy.deepcopy(self.algo_state), tr.device)
            tr.adversarial.ctx.metrics = dict(self.metrics or {})
        tr.logger.truncate(self.log_offset)  # redone on resume: its lines must not appear twice


class Trainer:
    """Runs a config into ``run_dir``. ``resume=True`` continues from the latest checkpoint."""

    def __init__(self, cfg: RunConfig, run_dir: str, resume: bool = False):
        self.cfg = cfg
        self.run_dir = run_dir
        self.resume = resume
        self._stop = False  # set by tests (and by the signal handler, through llmgan.interrupt)
        self._sub: _SubStep | None = None
        self._signal: int | None = None
        self._signal_at: float | None = None  # perf_counter() at the first signal
        self._stop_rolled_back: tuple[float, float] | None = None  # when the stop's rollback began and ended

    # ------------------------------------------------------------------------------ setup
    def setup(self) -> None:
        cfg = self.cfg
        if cfg.threads:
            torch.set_num_threads(cfg.threads)
        self.device = dist_utils.resolve_device(cfg.device)
        dist_utils.maybe_init(self.device)
        self.precision = resolve_precision(cfg.train.precision, self.device)  # bf16 -> fp32 where unsupported
        self.scaler = LossScaler(self.precision, self.device)  # fp16 loss scaling; plain backward otherwise
        self.rank, self.world = dist_utils.rank(), dist_utils.world_size()
        seed_everything(cfg.seed)
        if self.resume and not os.path.isfile(os.path.join(self.run_dir, "config.yaml")):
            # a typo in --out must not silently start a new run from scratch
            raise CheckpointError(
                f"--resume: {self.run_dir} is not a run directory (no config.yaml); check the path, "
                "or drop --resume to start a new run there"
            )
        os.makedirs(self.run_dir, exist_ok=True)
        self.checkpointer = Checkpointer(self.run_dir, keep=cfg.train.keep_checkpoints, is_writer=dist_utils.is_main())
        latest = self.checkpointer.latest() if self.resume else None
        if self.resume and latest is None:
            info(f"--resume: no checkpoint in {self.run_dir}; starting from scratch")
        if dist_utils.is_main():
            save_config(cfg, os.path.join(self.run_dir, "config.yaml"))
        self.data: RunData = prepare_data(cfg, self.run_dir, resume=latest is not None)
        self.max_len = cfg.eval.max_len or self.data.max_len
        self.generator = make_generator(cfg.generator, self.data.tokenizer).to(self.device)
        if cfg.train.init_from and latest is None:
            self._init_from(cfg.train.init_from)
        t = cfg.train
        # FSDP2 (train.fsdp): G's parameters, gradients and Adam moments are sharded over the ranks
        self.sharded = bool(t.fsdp)
        if self.sharded:
            n_blocks = dist_utils.shard_generator(self.generator)
            info(f"train.fsdp: generator sharded over {self.world} ranks ({n_blocks} blocks)")
        self.g_opt = make_optimizer(self.generator.parameters(), t.optimizer, t.lr, t.weight_decay, t.betas)
        steps_per_epoch = math.ceil(len(self.data.train) / (t.batch_size * self.world))
        total = t.max_steps if t.max_steps is not None else t.epochs * steps_per_epoch
        self.g_sched = torch.optim.lr_scheduler.LambdaLR(self.g_opt, lr_lambda(t.lr_schedule, t.warmup_steps, total))
        # sampling RNG for evaluation and adversarial samples: per rank, checkpointed
        # a sharded G gathers its weights inside every forward, a collective: all ranks must then sample
        # the same sequences (same stream), so that every sampling loop runs the same number of steps
        sample_rank = 0 if self.sharded else self.rank
        self.sample_rng = torch.Generator(device=self.device).manual_seed(cfg.seed * 1009 + 17 + sample_rank)
        self.data_rng = torch.Generator().manual_seed(cfg.seed * 1013 + 29 + self.rank)
        self.logger = MetricsLogger(self.run_dir)
        self.state = {
            "phase": "mle",
            "epoch": 0,
            "batch": 0,
            "mle_step": 0,
            "best_valid": None,
            "bad_evals": 0,
            "round": 0,
            "d_pretrain": 0,
            "done": False,
        }
        # data parallelism: DDP engines over G (and D), built once; the modules stay the plain ones
        self.data_parallel = dist_utils.DataParallel(self.world > 1)
        if not self.sharded:  # FSDP reduce-scatters the sharded G's gradients itself
            self.data_parallel.add(self.generator)
        self.adversarial: AdversarialSetup | None = None
        if cfg.adversarial.algorithm:
            self.adversarial = AdversarialSetup(self)
            if self.adversarial.discriminator is not None:
                self.data_parallel.add(self.adversarial.discriminator)
            for module in self.adversarial.algorithm.extra_models().values():
                if any(p.requires_grad for p in module.parameters()):
                    self.data_parallel.add(module)
        self.latest_checkpoint = latest
        if latest is None:  # from scratch: lines left by an earlier attempt that never checkpointed go
            self.logger.truncate(0)
        if latest is not None:
            self.state.update(self._load(latest))
            self.logger.truncate(self.state.get("metrics_offset"))  # lines of work this resume redoes
            info(f"resumed from {latest} (phase {self.state['phase']}, step {self.global_step})")
            if self.state["phase"] == "done" and self.adversarial is None and self.state["epoch"] < cfg.train.epochs:
                self.state["phase"] = "mle"  # a finished MLE run resumed with more epochs trains on
                self.state["early_stopped"] = False

    def _init_from(self, run_dir: str) -> None:
        ckpt = Checkpointer(run_dir).latest()
        if ckpt is None:
            raise CheckpointError(f"train.init_from: {run_dir} has no checkpoint")
        self._check_init_tokenizer(run_dir)
        fresh = load_model_weights(self.generator, os.path.join(ckpt, "generator.safetensors"), allow_missing=True)
        info(f"generator initialised from {ckpt}" + (f" (new, not in it: {', '.join(fresh)})" if fresh else ""))

    def _check_init_tokenizer(self, run_dir: str) -> None:
        """Refuse an init_from run whose tokenizer differs from this run's (ids would mean other tokens)."""
        from llmgan.data import load_tokenizer

        path = os.path.join(run_dir, "tokenizer.json")
        if not os.path.isfile(path):
            return
        theirs, ours = load_tokenizer(path), self.data.tokenizer
        if theirs.kind != ours.kind or theirs.vocab_size != ours.vocab_size:
            raise ConfigError(
                f"train.init_from: {run_dir} was trained with a {theirs.kind!r} tokenizer of {theirs.vocab_size} "
                f"tokens, this run has a {ours.kind!r} tokenizer of {ours.vocab_size}; init_from needs the same "
                f"tokenizer (set data.tokenizer={theirs.kind} and the same data, or start without init_from)"
            )

    @property
    def global_step(self) -> int:
        return int(self.state["mle_step"]) + int(self.state.get("round", 0))

    def models(self) -> dict[str, torch.nn.Module]:
        """Every module a checkpoint holds."""
        out: dict[str, torch.nn.Module] = {"generator": self.generator}
        if self.adversarial is not None:
            out.update(self.adversarial.models())
        return out

    def optimizers(self) -> dict[str, torch.optim.Optimizer]:
        """Every optimizer a checkpoint holds."""
        out = {"generator": self.g_opt}
        if self.adversarial is not None:
            out.update(self.adversarial.optimizers())
        return out

    def save(self, best: bool = False) -> None:
        """Checkpoint everything; ``best``: this is the best validation NLL so far (kept from pruning)."""
        self.state["sched"] = self.g_sched.state_dict()
        self.state["loss_scale"] = self.scaler.state_dict(self.optimizers())
        # a resume drops metrics.jsonl lines written after this point (kill -9: that work is redone)
        self.state["metrics_offset"] = self.logger.offset()
        if self.adversarial is not None:
            self.state["algorithm"] = self.adversarial.algorithm.state_dict()
        models, optimizers = self.models(), self.optimizers()
        if self.sharded:  # gathered on every rank (a collective), written by rank 0 in the unsharded layout
            models["generator"] = dist_utils.StateSnapshot(dist_utils.FullModelState(self.generator).state_dict())
            optimizers["generator"] = dist_utils.StateSnapshot(
                dist_utils.FullOptimizerState(self.generator, self.g_opt).state_dict())
        path = self.checkpointer.save(
            self.global_step,
            models,
            optimizers,
            dict(self.state),
            generators={"sample": self.sample_rng, "data": self.data_rng},
            best=best,
        )
        if path:
            self.latest_checkpoint = path

    def _load(self, path: str) -> dict:
        models, optimizers = self.models(), self.optimizers()
        if self.sharded:  # every rank reads the full tensors and keeps its own shards
            models["generator"] = dist_utils.FullModelState(self.generator)
            optimizers["generator"] = dist_utils.FullOptimizerState(self.generator, self.g_opt)
        state = Checkpointer.load(path, models, optimizers,
                                  generators={"sample": self.sample_rng, "data": self.data_rng})
        if "sched" in state:
            self.g_sched.load_state_dict(state["sched"])
        self.scaler.load_state_dict(state.get("loss_scale", {}), self.optimizers())
        if self.adversarial is not None and "algorithm" in state:
            self.adversarial.algorithm.load_state_dict(state["algorithm"], self.device)
        return state

    def autocast(self):
        return autocast_context(self.precision, self.device)

    def check_finite(self, value: Tensor | float, what: str) -> None:
        """Raise TrainingDiverged on EVERY rank when ``value`` is NaN/inf on ANY rank.

        Under torchrun the ranks agree first (one tiny all-reduce), so a NaN on one rank stops them all
        with the same one-line error instead of leaving the others blocked in the next collective.
        """
        v = float(value.detach()) if isinstance(value, Tensor) else float(value)
        bad_rank = dist_utils.first_rank_where(not math.isfinite(v), self.device)
        if bad_rank is not None:
            where = self.latest_checkpoint or "none written yet"
            on = f" on rank {bad_rank}" if self.world > 1 else ""
            raise TrainingDiverged(
                f"{what} became {v if bad_rank == self.rank else 'non-finite'}{on} at step {self.global_step} "
                f"(phase {self.state['phase']}); training stopped, last good checkpoint: {where}"
            )

    def optimizer_step(
        self, loss: Tensor, opt: torch.optim.Optimizer, module: torch.nn.Module, clip: float | None, what: str
    ) -> float:
        """The one optimizer step every phase uses: finiteness agreed across ranks, backward (through
        DDP's bucketed, overlapped gradient averaging under torchrun), gradient clipping, step."""
        self.check_finite(loss, what)
        if self._sub is not None:  # a stop later in this sub-step must be able to undo this update
            self._sub.before_update(module, opt)
        opt.zero_grad(set_to_none=True)
        # fp16: the loss scaler (llmgan.training.precision) scales, unscales before clipping, skips overflows
        self.scaler.backward(self.data_parallel.prepare(module, loss), opt)
        self.scaler.unscale_(opt)
        if clip:
            torch.nn.utils.clip_grad_norm_(module.parameters(), clip)
        self.scaler.step(opt)
        return float(loss.detach())

    def supervised_step(
        self, tokens: Tensor, lengths: Tensor, prompt: Tensor | None, opt: torch.optim.Optimizer
    ) -> float:
        """One teacher-forced MLE step of G on real ``tokens`` (B, T) (responses given ``prompt`` if set).

        The loss is the mean NLL per token of the GLOBAL batch: each rank divides its token sum by the
        token count of all ranks together (times the world size, since DDP averages), so 2 ranks on
        shards equal one process on the whole batch even when the shards hold different token counts.
        """
        mask = (torch.arange(tokens.size(1), device=tokens.device)[None, :] < lengths[:, None].to(tokens.device))
        n_tok = dist_utils.sum_across_ranks(int(mask.sum()), self.device)
        with self.autocast():
            loss = self.generator.weighted_nll(tokens, mask.float() * (self.world / max(n_tok, 1)), prompt=prompt)
        value = self.optimizer_step(loss, opt, self.generator, self.cfg.train.grad_clip, "MLE loss")
        return value * max(n_tok, 1) / (self.world * max(int(mask.sum()), 1))  # this rank's mean NLL per token

    # ------------------------------------------------------------------------------ run
    def run(self) -> dict:
        """Train to the end, or until SIGTERM/SIGINT: then checkpoint and exit 128 + the signal (143).

        The first signal is honoured at the next interruption point inside any phase (an MLE step, a
        D minibatch, a rollout batch, a token step of sampling, an evaluation batch): the sub-step in
        progress is rolled back (see ``_SubStep``), a checkpoint recording exactly which sub-step of
        the round comes next is written, and ``--resume`` continues to the same final weights. A
        second signal exits at once (128 + signal) without a checkpoint; ``latest`` stays valid.
        """
        interrupt.clear()
        self.setup()
        previous = self._install_signal_handlers()
        interrupt.set_guard(lambda: self._sub is not None and self._sub.rollbackable)
        try:
            if self.state["phase"] == "mle":
                self.mle_phase()
                self.state.update(phase="d_pretrain" if self.adversarial is not None else "done")
                self.save()
            if self.adversarial is not None and self.state["phase"] in ("d_pretrain", "adversarial"):
                adversarial_phases(self)
            final = self.sub_step(lambda: self.evaluate(final=True))
            self.state.update(phase="done", done=True)
            self.save()
            return final
        except interrupt.StopRequested:
            t_save = time.perf_counter()
            self.save()
            info(f"stopped on request in phase {self.state['phase']}; checkpoint written, continue with --resume "
                 f"({self.run_dir})" + self._stop_timing(t_save))
            raise SystemExit(128 + (self._signal or signal.SIGTERM)) from None
        finally:
            interrupt.set_guard(None)
            interrupt.clear()
            for signum, handler in previous.items():
                signal.signal(signum, handler)
            self.logger.close()

    def _stop_timing(self, t_save: float) -> str:
        """Where the seconds between the signal and the checkpoint went (docs/reliability.md)."""
        if self._signal_at is None:
            return ""
        now = time.perf_counter()
        rollback = self._stop_rolled_back or (t_save, t_save)
        return (f"; {now - self._signal_at:.2f} s after the signal: {rollback[0] - self._signal_at:.2f} s to the next "
                f"interruption point, {rollback[1] - rollback[0]:.2f} s rollback, {now - t_save:.2f} s checkpoint")

    def _install_signal_handlers(self) -> dict[int, Any]:
        def on_signal(signum: int, frame: Any) -> None:
            if self._signal is not None:  # the second signal: the user means it, exit now
                sys.stderr.write(f"llmgan: second signal {signum}: exiting without a checkpoint\n")
                os._exit(128 + signum)
            self._signal, self._signal_at = signum, time.perf_counter()
            interrupt.request()
            sys.stderr.write(f"llmgan: signal {signum}: stopping at the next step, then checkpointing "
                             "(send it again to exit at once)\n")

        previous: dict[int, Any] = {}
        for signum in (signal.SIGTERM, signal.SIGINT):
            try:
                previous[signum] = signal.signal(signum, on_signal)
            except ValueError:  # not the main thread: no handlers, the caller owns signals
                break
        return previous

    def stop_requested(self) -> bool:
        """A stop asked for on any rank (under torchrun the ranks agree: one tiny all-reduce)."""
        local = self._stop or interrupt.requested()
        if self.world > 1:
            return dist_utils.first_rank_where(local, self.device) is not None
        return local

    def maybe_stop(self) -> None:
        """A step boundary: raise StopRequested when a stop is pending."""
        if self.stop_requested():
            raise interrupt.StopRequested

    def sub_step(self, fn: Callable[[], _T]) -> _T:
        """Run one sub-step (a G or D step, an evaluation) so that a stop requested inside it rolls it
        back to its start; a stop pending before it raises at once (a step boundary)."""
        self.maybe_stop()
        self._sub = _SubStep(self)
        try:
            return fn()
        except interrupt.StopRequested:
            t0 = time.perf_counter()
            self._sub.rollback()
            self._stop_rolled_back = (t0, time.perf_counter())
            raise
        finally:
            self._sub = None

    # ------------------------------------------------------------------------------ MLE
    def mle_phase(self) -> None:
        cfg, t = self.cfg, self.cfg.train
        train = self.data.train
        g = self.generator
        N = len(train)
        bar = None
        if t.progress and dist_utils.is_main():
            from tqdm import tqdm

            bar = tqdm(
                total=t.max_steps or t.epochs * math.ceil(N / (t.batch_size * self.world)),
                initial=self.state["mle_step"],
                desc="MLE",
                dynamic_ncols=True,
                leave=False,
                disable=None,
            )
        last_log, tokens_since = time.time(), 0
        # a run stopped during an epoch-end evaluation resumes by redoing it
        if self.state.get("epoch_end_pending"):
            self._epoch_end()
        while self.state["epoch"] < t.epochs and not self.state.get("early_stopped"):
            epoch = self.state["epoch"]
            if t.max_steps is not None and self.state["mle_step"] >= t.max_steps:
                break
            # data order is a pure function of (seed, epoch): resuming mid-epoch replays it exactly
            order = torch.randperm(N, generator=torch.Generator().manual_seed(cfg.seed * 100003 + epoch))
            if self.world > 1:  # equal shards, so every rank runs the same number of all-reduces
                order = order[: (N // self.world) * self.world][self.rank :: self.world]
            n_batches = math.ceil(len(order) / t.batch_size)
            g.train()
            while self.state["batch"] < n_batches:
                self.maybe_stop()
                b = self.state["batch"]
                idx = order[b * t.batch_size : (b + 1) * t.batch_size]
                lengths = train.lengths[idx]
                tokens = train.tokens[idx, : int(lengths.max())].to(self.device)
                prompt = None
                if self.data.train_prompts is not None:  # SFT: prompts condition, only responses are targets
                    prompt = trim_prompt(self.data.train_prompts[idx], g.pad_id).to(self.device)
                loss = self.supervised_step(tokens, lengths.to(self.device), prompt, self.g_opt)
                n_tok = int(lengths.sum())
                self.g_sched.step()
                self.state["batch"] = b + 1
                self.state["mle_step"] += 1
                tokens_since += n_tok * self.world
                step = self.state["mle_step"]
                if bar is not None:
                    bar.update(1)
                if step % t.log_every == 0:
                    now = time.time()
                    tps = tokens_since / max(now - last_log, 1e-9)
                    self.logger.log(
                        step,
                        "mle",
                        loss=loss,
                        lr=self.g_sched.get_last_lr()[0],
                        tokens_per_s=round(tps, 1),
                        epoch=epoch,
                    )
                    if bar is not None:
                        bar.set_postfix(loss=f"{loss:.3f}", tok_s=f"{tps:,.0f}")
                    last_log, tokens_since = now, 0
                if t.max_steps is not None and step >= t.max_steps:
                    break
            if self.state["batch"] >= n_batches:
                self.state["epoch"] = epoch + 1
                self.state["batch"] = 0
                if not self.sharded:  # shards differ by design; FSDP keeps them consistent
                    dist_utils.assert_in_sync({"generator": self.generator}, f"MLE epoch {epoch + 1}")
                self.state["epoch_end_pending"] = True
                if self._epoch_end():
                    break
        if bar is not None:
            bar.close()

    def _epoch_end(self) -> bool:
        """Evaluation (a sub-step: a stop inside it is redone on resume), early stopping, checkpoint
        after the epoch ``state["epoch"]`` just finished. True when early stopping ends MLE."""
        t = self.cfg.train
        done = int(self.state["epoch"])
        finished = done >= t.epochs or (t.max_steps is not None and self.state["mle_step"] >= t.max_steps)
        if done % t.eval_every == 0 or finished:
            metrics = self.sub_step(self.evaluate)
            self.state["epoch_end_pending"] = False
            best_before = self.state.get("best_valid")
            if self._early_stop(metrics):
                info(
                    f"early stopping after epoch {done}: validation NLL has not improved "
                    f"for {t.early_stopping} evaluations"
                )
                self.state["early_stopped"] = True
                return True
            if t.early_stopping is not None and self.state.get("best_valid") != best_before:
                self.save(best=True)  # a new best: checkpointed now and protected from pruning
                return False
        self.state["epoch_end_pending"] = False
        if done % t.checkpoint_every == 0 and not finished:
            self.save()
        return False

    def _early_stop(self, metrics: dict) -> bool:
        t = self.cfg.train
        v = metrics.get("valid_nll")
        if v is None or t.early_stopping is None:
            return False
        best = self.state.get("best_valid")
        if best is None or v < best - 1e-6:
            self.state["best_valid"], self.state["bad_evals"] = v, 0
            return False
        self.state["bad_evals"] += 1
        return self.state["bad_evals"] >= t.early_stopping

    # ------------------------------------------------------------------------------ eval
    def evaluate(self, final: bool = False) -> dict:
        """Oracle NLL (oracle runs), validation and test NLL; logged; samples dumped."""
        e = self.cfg.eval
        evaluate = evaluate_generator
        if self.data.train_prompts is not None:  # conditional run: responses given their prompts
            evaluate = conditional_evaluator(self.data)
        metrics, samples = evaluate(
            self.generator,
            oracle=self.data.oracle,
            valid=self.data.valid,
            test=self.data.test if final else None,
            n_samples=e.n_samples,
            max_len=self.max_len,
            batch_size=e.batch_size,
            temperature=e.temperature,
            rng=self.sample_rng,
            autocast=self.autocast,
            ban_ids=ban_token_ids(self.data.tokenizer, e.ban_tokens),
        )
        phase = self.state["phase"]
        metrics.update(epoch=self.state["epoch"], round=self.state.get("round", 0))
        self.logger.log(self.global_step, "eval" if not final else "final", **metrics)
        parts = [f"{k} {v:.4f}" for k, v in metrics.items() if isinstance(v, float)]
        info(f"[{phase} epoch {self.state['epoch']} round {self.state.get('round', 0)}] " + ", ".join(parts))
        if dist_utils.is_main():
            self.dump_samples(samples, f"{phase}-step-{self.global_step:07d}.txt")
        return metrics

    def dump_samples(self, tokens: torch.Tensor, name: str, limit: int = 200) -> None:
        path = os.path.join(self.run_dir, "samples", name)
        if self.data.tokenizer.kind == "ids":
            write_ids(path, tokens[:limit])
        else:
            lines = [self.data.tokenizer.decode(row) for row in tokens[:limit].tolist()]
            atomic_write_text(path, "\n".join(lines) + "\n")
