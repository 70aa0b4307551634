"""LeakGAN's hierarchical generator (Guo et al. 2018): a MANAGER reads the discriminator's leaked
features and sets goals; a WORKER turns them into next-token logits.

One step, predicting token y_t from the prefix y_<t (input x_t = BOS or y_{t-1}):

    f_t   = feature_fn(y_<t)                          (B, F)  D's feature of the current prefix (leak)
    g_t   = normalize(W_M · LSTM_M(f_t))               (B, F)  goal, a direction in D's feature space
    w_t   = normalize(psi(g_{t-c+1} + ... + g_t))      (B, k)  goal embedding (psi: F -> k, no bias)
    O_t   = reshape(W_O · LSTM_W(emb(x_t)), (V, k))    (B, V, k)
    logits = O_t w_t                                   (B, V)

Sizes (paper/code, synthetic data): embedding 32, hidden 32 (both LSTMs), goal size k = 16, step
size c = 4, F = the CNN discriminator's 1720 features; N(0, 0.1) initialisation.

Differences from the reference TF code (CR-Gjx/LeakGAN), and why:

* The goal window slides: w_t sums the c most recent goals including g_t, so the feature of the
  current prefix acts on the very next token. The TF code holds one goal sum fixed per block of c
  steps (with a learned ``goal_init`` for the first block); the paper writes a sliding sum.
* No temperature trick (the TF code multiplies the first two steps' logits by 1.5 when sampling).
* Goals are detached before psi by default (``detach_goals``): as in the TF code the worker's losses
  never update the manager, which learns only from its own cosine loss (``leakgan`` algorithm).

The feature function is set from outside (``set_feature_fn``), normally by the ``leakgan`` algorithm
(the run's discriminator) or by ``llmgan.run.load_run``. Before one is set every feature is zero, so
MLE pre-training and plain sampling work through the standard interface: the manager then sees a
constant input and its goals depend only on the position. A model trained with D's features and
then sampled without them behaves differently; ``load_run`` therefore reattaches the run's D.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch import Tensor

from llmgan.models.base import Generator, State
from llmgan.models.output import token_log_probs, weighted_token_nll

FeatureFn = Callable[[Tensor], Tensor]
FeatureStepper = Any  # init_carry(batch, device) -> (B, C); step(prefix (B, t), carry) -> (features (B, F), carry)


@dataclass
class LeakGANGeneratorConfig:
    vocab_size: int = 5000
    embed_dim: int = 32  # LeakGAN synthetic: 32
    hidden_dim: int = 32  # worker and manager LSTM size (LeakGAN synthetic: 32)
    goal_size: int = 16  # k, size of the goal embedding w_t (LeakGAN: 16)
    step_size: int = 4  # c, goals summed over the last c steps (LeakGAN: 4)
    feature_dim: int = 1720  # F, the discriminator's feature size (SeqGAN CNN: 1720); must match D
    detach_goals: bool = True  # worker losses do not reach the manager (as in the reference code)
    bos_id: int = 1
    eos_id: int | None = 2
    pad_id: int | None = 0
    init_std: float | None = 0.1  # N(0, 0.1) like the reference code; None: PyTorch defaults


@dataclass
class LeakOutputs:
    """Teacher-forced pass over tokens (B, T).

    log_probs (B, T): log p(tokens[:, t] | tokens[:, :t]); goals (B, T, F): the goal made at each step
    (with the manager's gradient); features (B, T+1, F): D's features of the prefixes of length 0..T
    (detached; goals[:, t] was made from features[:, t]).
    """

    log_probs: Tensor
    goals: Tensor
    features: Tensor


class LeakGANGenerator(Generator):
    """Hierarchical MANAGER/WORKER generator; see the module docstring.

    State tensors (all batch-first): worker (h, c) (B, H) each, manager (h, c) (B, H) each, the last
    c goals (B, c, F) (oldest first, zeros before the start), the prefix generated so far (B, t) and
    the feature stepper's carry (B, 2F) (running window maxima; (B, 0) without a stepper).
    ``State.pos`` counts consumed inputs; the first input (BOS) is not part of the prefix.

    Speed: logits_v = sum_k w_k (W_O h + b)_{v,k} = [w (x) h, w] . [W_O as (V, k*H), b as (V, k)], so
    the worker's output is one (k*H + k)-wide "hidden" vector per step against a fixed (V, k*H + k)
    matrix. That never builds the (B, V, k) tensor O_t, and lets log-probs, the MLE/REINFORCE loss and
    sampling use the shared fused/chunked output layer. Teacher forcing runs both LSTMs over the whole
    sequence at once (the features of every prefix are known up front).
    """

    def __init__(self, cfg: LeakGANGeneratorConfig):
        super().__init__()
        self.cfg = cfg
        self.vocab_size, self.bos_id, self.eos_id, self.pad_id = cfg.vocab_size, cfg.bos_id, cfg.eos_id, cfg.pad_id
        V, E, H, K, Fd = cfg.vocab_size, cfg.embed_dim, cfg.hidden_dim, cfg.goal_size, cfg.feature_dim
        # worker
        self.embedding = nn.Embedding(V, E)
        self.worker = nn.LSTM(E, H, batch_first=True)
        self.worker_out = nn.Linear(H, V * K)  # O_t: row v*k + j of the output is O_t[v, j]
        self.goal_proj = nn.Linear(Fd, K, bias=False)  # psi
        # manager
        self.manager = nn.LSTM(Fd, H, batch_first=True)
        self.manager_out = nn.Linear(H, Fd)
        if cfg.init_std is not None:
            for p in self.parameters():
                nn.init.normal_(p, 0.0, cfg.init_std)
        self._feature_fn: FeatureFn | None = None
        self._all_prefix_fn: FeatureFn | None = None
        self._stepper: FeatureStepper | None = None

    # --- the leak ------------------------------------------------------------------------------
    def set_feature_fn(
        self, fn: FeatureFn | None, all_prefixes: FeatureFn | None = None, stepper: FeatureStepper | None = None
    ) -> None:
        """Set the leaked feature function.

        fn: prefix ids (B, t) -> (B, F) (t may be 0). all_prefixes (optional fast path for teacher
        forcing): ids (B, T) -> (B, T, F), row t the feature of tokens[:, :t+1] (a causal CNN gives
        all of them in one pass). stepper (optional fast path for sampling): features of a prefix one
        token longer than the last, from a carry kept in the generator's state (``init_carry(B, device)``
        and ``step(prefix, carry) -> (features, carry)``). None: zero features.
        """
        self._feature_fn = fn
        self._all_prefix_fn = all_prefixes
        self._stepper = stepper

    @property
    def has_features(self) -> bool:
        return self._feature_fn is not None

    def managed_modules(self) -> list[nn.Module]:
        """The manager's modules (its parameters learn only from the manager's cosine loss)."""
        return [self.manager, self.manager_out]

    @torch.no_grad()
    def prefix_features(self, prefix: Tensor) -> Tensor:
        """D's features of prefixes (B, t) -> (B, F), detached; zeros when t = 0 or no fn is set."""
        B = prefix.size(0)
        if self._feature_fn is None or prefix.size(1) == 0:
            return torch.zeros(B, self.cfg.feature_dim, device=self.device)
        return self._feature_fn(prefix).float().to(self.device)

    @torch.no_grad()
    def all_prefix_features(self, tokens: Tensor) -> Tensor:
        """Features of every prefix of tokens (B, T), lengths 0..T: (B, T+1, F), detached."""
        B, T = tokens.shape
        if self._feature_fn is None:
            return torch.zeros(B, T + 1, self.cfg.feature_dim, device=self.device)
        if self._all_prefix_fn is not None and T > 0:
            rest = self._all_prefix_fn(tokens).float().to(self.device)
        else:
            rest = torch.stack([self.prefix_features(tokens[:, : t + 1]) for t in range(T)], 1) if T else None
        empty = self.prefix_features(tokens[:, :0]).unsqueeze(1)
        return empty if rest is None else torch.cat([empty, rest], 1)

    # --- Generator interface ----------------------------------------------------------------------
    @property
    def device(self) -> torch.device:
        return self.embedding.weight.device

    def embed(self, x: Tensor) -> Tensor:
        if x.dtype.is_floating_point:  # soft one-hots (B, T, V)
            return x @ self.embedding.weight
        return self.embedding(x)

    def init_state(self, batch: int, prompt: Tensor | None = None, z: Tensor | None = None) -> State:
        if (prompt is not None and prompt.size(1) > 0) or z is not None:
            raise ValueError("the LeakGAN generator is unconditional: it takes no prompt and no z")
        c, dev = self.cfg, self.device
        H = c.hidden_dim
        hs = tuple(torch.zeros(batch, H, device=dev) for _ in range(4))
        window = torch.zeros(batch, c.step_size, c.feature_dim, device=dev)
        prefix = torch.zeros(batch, 0, dtype=torch.long, device=dev)
        carry = self._stepper.init_carry(batch, dev) if self._stepper is not None else torch.zeros(batch, 0, device=dev)
        return State(hs + (window, prefix, carry))

    def head_weight(self) -> Tensor:
        """(V, k*H + k): the worker's output layer rearranged so that logits = head_weight @ head_input."""
        V, K, H = self.vocab_size, self.cfg.goal_size, self.cfg.hidden_dim
        return torch.cat([self.worker_out.weight.view(V, K * H), self.worker_out.bias.view(V, K)], 1)

    def _goal_embedding(self, window_sum: Tensor) -> Tensor:
        """w = normalize(psi(sum of the last c goals)): (..., F) -> (..., k)."""
        if self.cfg.detach_goals:
            window_sum = window_sum.detach()
        return F.normalize(self.goal_proj(window_sum), dim=-1)

    @staticmethod
    def _head_input(w: Tensor, h: Tensor) -> Tensor:
        """[w (x) h, w]: w (..., k), h (..., H) -> (..., k*H + k), matching ``head_weight``."""
        outer = (w.unsqueeze(-1) * h.unsqueeze(-2)).flatten(-2)
        return torch.cat([outer, w], -1)

    def _core(self, x: Tensor, state: State, feature: Tensor) -> tuple[Tensor, Tensor, State]:
        """One step from input x (B,) ids or (B, V) soft, given D's feature (B, F) of the prefix.

        Returns (head input (B, k*H + k), goal g_t (B, F), new state with the prefix unchanged).
        """
        wh, wc, mh, mc, window = state.tensors[:5]
        m_out, (mh, mc) = self.manager(feature.unsqueeze(1), (mh.unsqueeze(0), mc.unsqueeze(0)))
        goal = F.normalize(self.manager_out(m_out[:, 0]), dim=-1)  # (B, F)
        window = torch.cat([window[:, 1:], goal.unsqueeze(1)], 1)  # the c most recent goals
        w = self._goal_embedding(window.sum(1))
        w_out, (wh, wc) = self.worker(self.embed(x.unsqueeze(1)), (wh.unsqueeze(0), wc.unsqueeze(0)))
        new = State((wh[0], wc[0], mh[0], mc[0], window) + state.tensors[5:], state.pos + 1)
        return self._head_input(w, w_out[:, 0]), goal, new

    def _advance(self, x: Tensor, state: State) -> tuple[Tensor, Tensor, State]:
        """_core plus prefix bookkeeping: the consumed id joins the prefix (except the first input,
        BOS), and the manager reads D's feature of that updated prefix (the tokens generated so far)."""
        prefix, carry = state.tensors[5], state.tensors[6]
        if state.pos > 0:
            ids = x.argmax(-1) if x.dtype.is_floating_point else x
            prefix = torch.cat([prefix, ids.unsqueeze(1).to(prefix.dtype)], 1)
        if self._stepper is not None and prefix.size(1) > 0 and carry.size(1) > 0:
            feature, carry = self._stepper.step(prefix, carry)  # only the new windows, from D's tables
            feature = feature.float()
        else:
            feature = self.prefix_features(prefix)
        hin, goal, new = self._core(x, state, feature)
        return hin, goal, State(new.tensors[:5] + (prefix, carry), new.pos)

    def forward_hidden(self, inputs: Tensor, state: State) -> tuple[Tensor, State]:
        """Consume inputs (B, T) step by step: head inputs (B, T, k*H + k) (logits = them @
        ``head_weight().T``) and the new state."""
        hs = []
        for t in range(inputs.size(1)):
            hin, _, state = self._advance(inputs[:, t], state)
            hs.append(hin)
        return torch.stack(hs, 1), state

    def _teacher_forced(self, tokens: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """Whole-sequence pass: head inputs (B, T, k*H + k), goals (B, T, F), features (B, T+1, F)."""
        B, T = tokens.shape
        c = self.cfg.step_size
        feats = self.all_prefix_features(tokens)  # feats[:, t] = f(tokens[:, :t])
        m_out, _ = self.manager(feats[:, :T])
        goals = F.normalize(self.manager_out(m_out), dim=-1)  # (B, T, F)
        # sum of the c most recent goals at each step (zeros before the start), as in ``_core``
        padded = F.pad(goals, (0, 0, c - 1, 0))
        window = sum(padded[:, i : i + T] for i in range(c))
        w = self._goal_embedding(window)
        h, _ = self.worker(self.embed(self._teacher_inputs(tokens)))
        return self._head_input(w, h), goals, feats

    def leak_forward(self, tokens: Tensor) -> LeakOutputs:
        """Teacher-forced pass over targets tokens (B, T): log-probs, goals and prefix features."""
        hin, goals, feats = self._teacher_forced(tokens)
        B, T, D = hin.shape
        lp = token_log_probs(hin.reshape(B * T, D), self.head_weight(), None, self._safe_targets(tokens).reshape(-1))
        return LeakOutputs(lp.view(B, T), goals, feats)

    def head_inputs(self, tokens: Tensor) -> tuple[Tensor, Tensor, Tensor | None]:
        """The worker/goal head input (B, T, k*H + k) and the head weight: logits = hin @ head_weight().T."""
        hin, _, _ = self._teacher_forced(tokens)
        return hin, self.head_weight(), None

    def log_probs(self, tokens: Tensor, prompt: Tensor | None = None, z: Tensor | None = None) -> Tensor:
        """Per-token log p(y_t | y_<t): tokens (B, T) -> (B, T). Differentiable."""
        self.init_state(tokens.size(0), prompt, z)  # rejects prompt / z
        return self.leak_forward(tokens).log_probs

    def weighted_nll(
        self, tokens: Tensor, weights: Tensor, prompt: Tensor | None = None, z: Tensor | None = None
    ) -> Tensor:
        """Scalar ``-sum(weights * log p(tokens))`` (fused output layer); tokens, weights (B, T)."""
        self.init_state(tokens.size(0), prompt, z)
        hin, _, _ = self._teacher_forced(tokens)
        B, T, D = hin.shape
        return weighted_token_nll(hin.reshape(B * T, D), self.head_weight(), None,
                                  self._safe_targets(tokens).reshape(-1), weights.reshape(-1))

    def step_hidden(self, token: Tensor, state: State) -> tuple[Tensor, State]:
        """token (B,) ids or (B, V) soft -> head input (B, k*H + k) (logits = it @ head_weight().T), state."""
        hin, _, state = self._advance(token, state)
        return hin, state

    def output_layer(self) -> tuple[Tensor, Tensor | None]:
        return self.head_weight(), None


def discriminator_feature_fns(discriminator: nn.Module) -> tuple[FeatureFn, FeatureFn | None, FeatureStepper | None]:
    """The leak: feature functions for ``set_feature_fn`` from a discriminator with ``features(x)``.

    Features are taken in eval mode (no dropout) without gradient; D's train/eval mode is restored.
    For the causal SeqGAN CNN the features of every prefix come from one per-step pass (max pooling
    over a prefix is a cumulative max), so teacher forcing costs one D call instead of T; and sampling
    steps prefix features forward (:class:`~llmgan.models.discriminators.cnn.PrefixFeatureStepper`)
    instead of re-convolving the prefix at every token.
    """
    from llmgan.models.discriminators.cnn import CNNDiscriminator, PrefixFeatureStepper

    def run(fn: Callable[[], Tensor]) -> Tensor:
        was = discriminator.training
        discriminator.eval()
        try:
            with torch.no_grad():
                return fn().float()
        finally:
            discriminator.train(was)

    def prefix_fn(prefix: Tensor) -> Tensor:  # (B, t) -> (B, F)
        return run(lambda: discriminator.features(prefix))

    all_fn: FeatureFn | None = None
    stepper: PrefixFeatureStepper | None = None
    if isinstance(discriminator, CNNDiscriminator):

        def all_fn(tokens: Tensor) -> Tensor:  # (B, T) -> (B, T, F)
            return run(lambda: discriminator._features(tokens, None, True)[0])

        stepper = PrefixFeatureStepper(discriminator)
        stepper = stepper if stepper.applies else None
    return prefix_fn, all_fn, stepper


def attach_discriminator(generator: LeakGANGenerator, discriminator: nn.Module) -> None:
    """Make ``discriminator``'s features the generator's leaked features (checks the sizes agree)."""
    from llmgan.errors import ConfigError

    dim = getattr(discriminator, "feature_dim", None)
    if dim is not None and dim != generator.cfg.feature_dim:
        raise ConfigError(
            f"generator.kwargs.feature_dim: {generator.cfg.feature_dim} does not match the discriminator's "
            f"feature size {dim} (set feature_dim: {dim})"
        )
    generator.set_feature_fn(*discriminator_feature_fns(discriminator))
