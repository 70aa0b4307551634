"""The generator interface every algorithm relies on.

A generator is an autoregressive LM over token ids. Subclasses implement three things:

* ``embed(x)``: token ids (B, T) or soft one-hots (B, T, V) -> embeddings (B, T, E)
* ``init_state(batch, prompt, z)``: the recurrent state / KV cache before the first response token
* ``forward_hidden(inputs, state)``: hidden states (B, T, H) for ``inputs`` continuing ``state``

and own an ``lm_head`` (nn.Linear H -> V). Everything else (teacher-forced log-probs, the fused
MLE/REINFORCE loss, sampling with temperature/top-k/top-p and EOS, Gumbel-softmax sampling,
Monte-Carlo rollouts) is written once here, on top of those.

Sequence convention: the response is always read after a BOS token, which follows the prompt (if
any): inputs ``[prompt..., BOS, y1, ..., y_{T-1}]`` predict ``[y1, ..., yT]``. For the SeqGAN
oracle BOS is token 0, an ordinary vocabulary entry, and there is no EOS.
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch import Tensor

from llmgan import interrupt
from llmgan.models import memory
from llmgan.models.output import token_log_probs, weighted_token_nll
from llmgan.models.sampling import (
    check_sampling_options,
    gumbel_softmax,
    rng_on,
    sample_categorical,
    sample_from_hidden,
)

if TYPE_CHECKING:
    from llmgan.models.watermark import Watermark


@dataclass
class State:
    """Recurrent state or KV cache, every tensor batch-first, so it can be repeated, selected and concatenated.

    ``tensors`` may hold tensors or (nested) lists/tuples of them; ``pos`` counts the positions
    already consumed (for position embeddings); ``extra`` carries per-row tensors such as a key
    padding mask (batch-first too) and row-independent python values (flags). ``cache`` is an
    opaque handle a generator may keep to extend its own tensors in place on the next step (the
    Hugging Face generator's preallocated KV buffers); every operation that builds new rows
    (``map``, ``repeat``, ``select``, ``cat``) drops it, so a derived state gets its own storage and
    the generator falls back to copying once.
    """

    tensors: tuple = ()
    pos: int = 0
    extra: dict = field(default_factory=dict)
    cache: Any = None

    def map(self, fn: Callable[[Tensor], Tensor]) -> State:
        def rec(x):
            if isinstance(x, Tensor):
                return fn(x)
            if isinstance(x, (list, tuple)):
                return type(x)(rec(v) for v in x)
            return x

        return State(rec(self.tensors), self.pos, {k: rec(v) for k, v in self.extra.items()})

    def repeat(self, k: int) -> State:
        """Each row repeated k times consecutively: row b becomes rows b*k .. b*k+k-1."""
        return self.map(lambda t: t.repeat_interleave(k, dim=0))

    def select(self, index: Tensor) -> State:
        return self.map(lambda t: t.index_select(0, index))

    def detach(self) -> State:
        return self.map(lambda t: t.detach())

    def rows(self, start: int, stop: int) -> State:
        """Rows ``start:stop`` as views (no copy): one slice of a token step run in pieces."""
        return self.map(lambda t: t[start:stop])

    @classmethod
    def cat(cls, states: Sequence[State]) -> State:
        """The rows of ``states`` stacked in order: one state of sum(batch) rows (Monte-Carlo rollouts
        grow their batch this way).

        Every state must come from the same generator at the same position (``pos``), so that their
        structures match leaf by leaf: tensors are concatenated along dim 0, in ``tensors`` and in
        ``extra`` alike; a python bool in ``extra`` is a flag over rows ("some row has padding") and
        is OR-ed; any other python value must be equal in all states. Raises ValueError otherwise.
        """
        states = list(states)
        if not states:
            raise ValueError("State.cat: no states")
        if len(states) == 1:
            return states[0].map(lambda t: t)  # a fresh State (no shared cache handle), like the general case
        pos = states[0].pos
        if any(s.pos != pos for s in states):
            raise ValueError(f"State.cat: states at different positions {[s.pos for s in states]}")

        def rec(xs: list, where: str):
            x0 = xs[0]
            if isinstance(x0, Tensor):
                if not all(isinstance(x, Tensor) for x in xs):
                    raise ValueError(f"State.cat: {where} is a tensor in some states only")
                return torch.cat(xs, dim=0)
            if isinstance(x0, (list, tuple)):
                if not all(type(x) is type(x0) and len(x) == len(x0) for x in xs):
                    raise ValueError(f"State.cat: {where} has a different structure across states")
                return type(x0)(rec([x[i] for x in xs], f"{where}[{i}]") for i in range(len(x0)))
            if isinstance(x0, bool):
                return any(bool(x) for x in xs)
            if any(x != x0 for x in xs[1:]):
                raise ValueError(f"State.cat: {where} differs across states ({x0!r} vs others)")
            return x0

        keys = list(states[0].extra)
        if any(list(s.extra) != keys for s in states):
            raise ValueError("State.cat: states carry different extra entries")
        tensors = rec([s.tensors for s in states], "tensors")
        extra = {k: rec([s.extra[k] for s in states], f"extra[{k!r}]") for k in keys}
        return cls(tensors, pos, extra)


@dataclass
class Samples:
    """Sampled sequences. tokens (B, T) long, padded with ``pad_id`` after EOS; log_probs (B, T)
    log-probability of each sampled token under the sampling distribution (0 after the end);
    lengths (B,) number of tokens including the EOS."""

    tokens: Tensor
    log_probs: Tensor
    lengths: Tensor

    def mask(self) -> Tensor:
        """(B, T) bool, True on real tokens (EOS included)."""
        T = self.tokens.size(1)
        return torch.arange(T, device=self.tokens.device)[None, :] < self.lengths[:, None]


@dataclass
class Relaxed:
    """Gumbel-softmax samples: soft (B, T, V) differentiable one-hots, tokens (B, T) hard ids."""

    soft: Tensor
    tokens: Tensor


def lengths_from_eos(tokens: Tensor, eos_id: int | None) -> Tensor:
    """Length (B,) of each row up to and including its first EOS (T when there is none)."""
    B, T = tokens.shape
    if eos_id is None:
        return torch.full((B,), T, dtype=torch.long, device=tokens.device)
    is_eos = tokens == eos_id
    first = torch.where(is_eos.any(1), is_eos.float().argmax(1), torch.full((B,), T - 1, device=tokens.device))
    return torch.where(is_eos.any(1), first + 1, torch.full_like(first, T)).long()


def left_padding(prompt: Tensor, batch: int, pad_id: int | None) -> tuple[Tensor, Tensor]:
    """Leading pads of a left-padded prompt (B, P): (count per row (B,), real-token mask (B, P)).

    Only leading pads count: a pad id after the first real token is an ordinary token. Raises
    ValueError when the prompt's rows do not match ``batch``.
    """
    if prompt.size(0) != batch:
        raise ValueError(f"prompt has {prompt.size(0)} rows, expected {batch}")
    if pad_id is not None:
        n_pad = (prompt == pad_id).long().cumprod(1).sum(1)  # (B,)
    else:
        n_pad = torch.zeros(batch, dtype=torch.long, device=prompt.device)
    real = torch.arange(prompt.size(1), device=prompt.device)[None, :] >= n_pad[:, None]  # (B, P)
    return n_pad, real


class Generator(nn.Module):
    """Base class: see the module docstring for what a subclass provides."""

    vocab_size: int
    bos_id: int
    eos_id: int | None
    pad_id: int | None
    lm_head: nn.Linear

    # --- to implement -------------------------------------------------------------------------
    def embed(self, x: Tensor) -> Tensor:
        raise NotImplementedError

    def init_state(self, batch: int, prompt: Tensor | None = None, z: Tensor | None = None) -> State:
        raise NotImplementedError

    def forward_hidden(self, inputs: Tensor, state: State) -> tuple[Tensor, State]:
        raise NotImplementedError

    # --- hooks with defaults -------------------------------------------------------------------
    def embedding_parameters(self) -> list[nn.Parameter]:
        """The token embedding's parameters (an output layer tied to it is the same Parameter object).

        SeqGAN's delayed rollout policy copies these and smooths everything else, so the rule must
        not depend on parameter names. Default: the ``embedding`` module of our LSTM, LeakGAN and
        RMC generators; generators that call it something else (GPT, Hugging Face) override this.
        """
        emb = getattr(self, "embedding", None)
        if not isinstance(emb, nn.Module):
            raise NotImplementedError(f"{type(self).__name__}: say which parameters are the token embedding")
        return list(emb.parameters())

    def embedding_parameter_names(self) -> set[str]:
        """Names (as in ``state_dict()``) of the token embedding, tied aliases included."""
        ids = {id(p) for p in self.embedding_parameters()}
        return {n for n, p in self.named_parameters(remove_duplicate=False) if id(p) in ids}

    def frozen_reference(self) -> Generator:
        """A frozen generator (no gradients, eval mode) to hold a snapshot of this one's weights: the
        KL reference, SPIN's opponent, SeqGAN's rollout policy. Callers refresh it with
        ``ref.load_state_dict(generator.state_dict())`` and checkpoint ``ref.state_dict()``.

        Default: a deep copy. Generators whose trainable part is small (Hugging Face + LoRA) return a
        view that shares the frozen weights and copies only the trainable ones.
        """
        return copy.deepcopy(self).requires_grad_(False).eval()

    # --- shared machinery ---------------------------------------------------------------------
    @property
    def device(self) -> torch.device:
        return self.lm_head.weight.device

    def _bos(self, batch: int) -> Tensor:
        return torch.full((batch, 1), self.bos_id, dtype=torch.long, device=self.device)

    def _teacher_inputs(self, tokens: Tensor) -> Tensor:
        """[BOS, y1..y_{T-1}] for targets tokens (B, T)."""
        return torch.cat([self._bos(tokens.size(0)), tokens[:, :-1]], dim=1)

    def _safe_targets(self, tokens: Tensor) -> Tensor:
        # Padding may use an id outside the vocabulary (-1, say); gather needs a valid index.
        return tokens.clamp(0, self.vocab_size - 1)

    def hidden(self, tokens: Tensor, prompt: Tensor | None = None, z: Tensor | None = None) -> Tensor:
        """Teacher-forced hidden states (B, T, H) predicting tokens (B, T)."""
        state = self.init_state(tokens.size(0), prompt=prompt, z=z)
        h, _ = self.forward_hidden(self._teacher_inputs(tokens), state)
        return h

    def head_inputs(self, tokens: Tensor) -> tuple[Tensor, Tensor, Tensor | None]:
        """Teacher-forced ``(h (B, T, H), weight (V, H), bias (V,) or None)`` with logits = h @ weight.T + bias:
        what a caller scaling the logits (a temperature) needs without materialising them."""
        return (self.hidden(tokens), *self.output_layer())

    def log_probs(self, tokens: Tensor, prompt: Tensor | None = None, z: Tensor | None = None) -> Tensor:
        """Per-token log p(y_t | prompt, y_<t): tokens (B, T) -> (B, T). Differentiable."""
        h = self.hidden(tokens, prompt, z)
        B, T, H = h.shape
        lp = token_log_probs(
            h.reshape(B * T, H), self.lm_head.weight, self.lm_head.bias, self._safe_targets(tokens).reshape(-1)
        )
        return lp.view(B, T)

    def weighted_nll(
        self, tokens: Tensor, weights: Tensor, prompt: Tensor | None = None, z: Tensor | None = None
    ) -> Tensor:
        """Scalar ``-sum(weights * log p(tokens))`` through the fused chunked output layer.

        tokens (B, T), weights (B, T) (zero on padding). MLE: weights = mask / mask.sum();
        REINFORCE: weights = advantage * mask / B.
        """
        h = self.hidden(tokens, prompt, z)
        B, T, H = h.shape
        flat_w = weights.reshape(-1)
        keep = flat_w != 0
        if not bool(keep.all()):  # skip padding rows: they cost a full vocabulary row each
            idx = keep.nonzero().squeeze(1)
            return weighted_token_nll(
                h.reshape(B * T, H).index_select(0, idx),
                self.lm_head.weight,
                self.lm_head.bias,
                self._safe_targets(tokens).reshape(-1).index_select(0, idx),
                flat_w.index_select(0, idx),
            )
        return weighted_token_nll(
            h.reshape(B * T, H), self.lm_head.weight, self.lm_head.bias, self._safe_targets(tokens).reshape(-1), flat_w
        )

    def nll(self, tokens: Tensor, mask: Tensor | None = None, prompt: Tensor | None = None) -> Tensor:
        """Mean per-token negative log-likelihood over the masked tokens (scalar)."""
        if mask is None:
            mask = torch.ones_like(tokens, dtype=torch.bool)
        w = mask.float()
        return self.weighted_nll(tokens, w / w.sum().clamp(min=1), prompt=prompt)

    def step_hidden(self, token: Tensor, state: State) -> tuple[Tensor, State]:
        """Consume one token (B,) ids or (B, V) soft: the output layer's input (B, H) and the new state.

        Generators whose step is not one ``forward_hidden`` call (LeakGAN) override this and
        ``output_layer``; ``step`` and sampling are built on the two.
        """
        h, state = self.forward_hidden(token.unsqueeze(1), state)
        return h[:, -1], state

    def output_layer(self) -> tuple[Tensor, Tensor | None]:
        """(weight (V, H), bias (V,) or None) such that logits = step_hidden's output @ weight.T + bias."""
        return self.lm_head.weight, self.lm_head.bias

    def step(self, token: Tensor, state: State) -> tuple[Tensor, State]:
        """One incremental step: token (B,) ids or (B, V) soft -> next-token logits (B, V)."""
        h, state = self.step_hidden(token, state)
        return F.linear(h, *self.output_layer()), state

    def _sample_next(
        self,
        token: Tensor,
        state: State,
        temperature: float,
        top_k: int | None,
        top_p: float | None,
        generator: torch.Generator | None,
        ban_ids: Tensor | None = None,
        watermark: Watermark | None = None,
        context: Tensor | None = None,
    ) -> tuple[Tensor, Tensor, State]:
        """Feed token (B,), draw the next one: (next (B,), its log-prob (B,), new state).

        With a ``watermark``, ``context`` (B, watermark.context) holds the previous ids that seed the
        green lists; the full logits are then formed (the per-row bias defeats the shared-bias fast path).
        """
        h, state = self.step_hidden(token, state)
        if watermark is not None and watermark.delta > 0:
            weight, bias = self.output_layer()
            logits = F.linear(h.float(), weight.float(), None if bias is None else bias.float())
            nxt, lp = sample_categorical(logits, temperature, top_k, top_p, generator, ban_ids,
                                         logit_bias=watermark.logit_bias(context, logits.size(-1)))
            return nxt, lp, state
        nxt, lp = sample_from_hidden(h, *self.output_layer(), temperature, top_k, top_p, generator, ban_ids)
        return nxt, lp, state

    def _register_latent_flag(self) -> None:
        """Call once ``self.latent`` exists: a checkpointed flag, set by an algorithm that trains G(z)
        (``set_latent_sampling``), after which sampling without an explicit z draws z ~ N(0, I) per
        sequence, the distribution the generator was trained on, instead of the z-less initial state."""
        if getattr(self, "latent", None) is not None:
            self.register_buffer("latent_in_use", torch.zeros((), dtype=torch.bool))

    def set_latent_sampling(self, on: bool) -> None:
        """Draw z ~ N(0, I) whenever ``sample`` gets no z (only for generators built with a latent code)."""
        flag = getattr(self, "latent_in_use", None)
        if flag is None:
            raise ValueError("this generator was built with latent_dim=0; it takes no z")
        flag.fill_(bool(on))

    @torch.no_grad()
    def sample(
        self,
        n: int,
        max_len: int,
        *,
        temperature: float = 1.0,
        top_k: int | None = None,
        top_p: float | None = None,
        prompt: Tensor | None = None,
        z: Tensor | None = None,
        state: State | None = None,
        first_token: Tensor | None = None,
        generator: torch.Generator | None = None,
        ban_ids: Tensor | None = None,
        watermark: Watermark | None = None,
    ) -> Samples:
        """Sample n sequences of at most ``max_len`` tokens, stopping each row at EOS.

        ``state`` + ``first_token`` (B,) continue from a cached prefix instead of starting at BOS
        (used by Monte-Carlo rollouts). The loop stops early once every row has ended. A generator
        trained with a latent code (``set_latent_sampling``) draws z ~ N(0, I) from ``generator`` when
        no z is given. ``ban_ids`` (1-D token ids) are never sampled (``llmgan generate --ban``).
        Bad options (temperature NaN, top_p 1.5, ...) raise a ConfigError naming them.
        ``watermark`` (:class:`llmgan.models.watermark.Watermark`) biases every step toward its green
        lists, seeded by the previous tokens (the fed start token stands in before there are any);
        training never passes one (Monte-Carlo rollouts sample through ``_sample_next`` without it).
        The tokens are those of :meth:`sample_steps` (the one sampling loop), collected into a matrix.
        """
        steps = self.sample_steps(n, max_len, temperature=temperature, top_k=top_k, top_p=top_p, prompt=prompt, z=z,
                                  state=state, first_token=first_token, generator=generator, ban_ids=ban_ids,
                                  watermark=watermark)
        B = first_token.size(0) if first_token is not None else n
        pad = self.pad_id if self.pad_id is not None else 0
        try:
            tokens = torch.full((B, max_len), pad, dtype=torch.long, device=self.device)
            logps = torch.zeros(B, max_len, device=self.device)
            for t, (token, lp) in enumerate(steps):
                tokens[:, t] = token
                logps[:, t] = lp
        except Exception as e:  # an allocation outside the sliced steps (tokens, initial state) failed
            if not memory.is_out_of_memory(e):
                raise
            raise memory.too_big(n, max_len, 12 * max_len, memory.free_memory_bytes(self.device)) from None
        return Samples(tokens, logps, lengths_from_eos(tokens, self.eos_id))

    def sample_steps(
        self,
        n: int,
        max_len: int,
        *,
        temperature: float = 1.0,
        top_k: int | None = None,
        top_p: float | None = None,
        prompt: Tensor | None = None,
        z: Tensor | None = None,
        state: State | None = None,
        first_token: Tensor | None = None,
        generator: torch.Generator | None = None,
        ban_ids: Tensor | None = None,
        watermark: Watermark | None = None,
    ) -> Iterator[tuple[Tensor, Tensor]]:
        """The sampling loop behind :meth:`sample` (same options), one step at a time: yields
        ``(tokens (B,), log-probs (B,))`` per position; rows that have ended get the pad id and log-prob 0.

        Options are checked now (a ConfigError before any work); the steps run as the iterator is
        consumed, so a consumer that stops iterating (the server: a deadline, a client gone) stops the
        sampling between two tokens. ``sample`` and the server's streaming both draw through here, so a
        seeded request gives the same tokens whichever path it takes.
        """
        check_sampling_options(temperature=temperature, top_k=top_k, top_p=top_p)
        generator = rng_on(generator, self.device)  # a CPU-seeded rng for a CUDA model
        return self._steps(n, max_len, temperature, top_k, top_p, prompt, z, state, first_token, generator, ban_ids,
                           watermark)

    @torch.no_grad()
    def _steps(self, n: int, max_len: int, temperature: float, top_k: int | None, top_p: float | None,
               prompt: Tensor | None, z: Tensor | None, state: State | None, first_token: Tensor | None,
               generator: torch.Generator | None, ban_ids: Tensor | None,
               watermark: Watermark | None) -> Iterator[tuple[Tensor, Tensor]]:
        if state is None:
            if z is None and bool(getattr(self, "latent_in_use", False)):
                z = torch.randn(n, self.latent.in_features, generator=generator, device=self.device)
            state = self.init_state(n, prompt=prompt, z=z)
        token = first_token if first_token is not None else self._bos(n).squeeze(1)
        B = token.size(0)
        pad = self.pad_id if self.pad_id is not None else 0
        alive = torch.ones(B, dtype=torch.bool, device=self.device)
        ctx = token[:, None].repeat(1, watermark.context) if watermark is not None else None
        full_logits = (temperature == 0 or (top_k is not None and top_k > 0) or (top_p is not None and top_p < 1.0)
                       or watermark is not None)
        rows = B  # rows per slice of a token step: lowered to fit memory, never raised again
        for _ in range(max_len):
            interrupt.point()  # SIGTERM during training: stop here (the engine rolls back)
            rows = self._fitting_rows(state, B, rows, full_logits)
            token, lp, state, rows = self._sliced_step(token, state, rows, temperature, top_k, top_p, generator,
                                                       ban_ids, watermark, ctx, max_len)
            if ctx is not None:
                ctx = torch.cat([ctx[:, 1:], token[:, None]], dim=1)
            if self.eos_id is not None:
                token = torch.where(alive, token, torch.full_like(token, pad))
                lp = lp * alive
            yield token, lp
            if self.eos_id is not None:
                alive &= token != self.eos_id
                if not bool(alive.any()):
                    break

    # a step over fewer bytes than this is never planned in slices (no memory query, no overhead)
    SLICE_CHECK_BYTES = 256 * 2**20

    def _fitting_rows(self, state: State, B: int, rows: int, full_logits: bool) -> int:
        """Rows per slice of the next token step, from the free memory and this model's per-row state."""
        vocab = self.output_layer()[0].size(0)
        per_row = memory.step_row_bytes(memory.tensor_bytes((state.tensors, state.extra)) / max(B, 1), vocab,
                                        full_logits)
        if min(rows, B) * per_row < self.SLICE_CHECK_BYTES:
            return rows
        free = memory.free_memory_bytes(self.device)
        if free is None:
            return rows
        return memory.aligned_rows(min(rows, int(memory.STEP_MEMORY_SHARE * free / per_row)))

    def _sliced_step(self, token, state, rows, temperature, top_k, top_p, generator, ban_ids, watermark, ctx,
                     max_len) -> tuple[Tensor, Tensor, State, int]:
        """One token step for all B rows, run over slices of ``rows`` rows; on out-of-memory the random
        stream is rewound and the step redone in slices half as wide. Each row draws its numbers in row
        order whatever the slicing (``_draw_rows``), and slices of whole 256-row blocks give the matrix
        products the shapes of the full step's own blocks, so the samples are bitwise those of one full
        step; narrower slices (a model where 256 rows do not fit) draw the same numbers but may round
        the log-probabilities differently in the last bit."""
        B = token.size(0)
        rng = memory.rng_for(generator, self.device)
        while True:
            saved = rng.get_state()
            try:
                if rows >= B:
                    return (*self._sample_next(token, state, temperature, top_k, top_p, generator, ban_ids,
                                               watermark, ctx), rows)
                parts = [self._sample_next(token[a : a + rows], state.rows(a, a + rows), temperature, top_k, top_p,
                                           generator, ban_ids, watermark,
                                           None if ctx is None else ctx[a : a + rows])
                         for a in range(0, B, rows)]
                return (torch.cat([p[0] for p in parts]), torch.cat([p[1] for p in parts]),
                        State.cat([p[2] for p in parts]), rows)
            except Exception as e:
                if not memory.is_out_of_memory(e):
                    raise
                parts = None  # noqa: F841 - drop the failed attempt's tensors before retrying
                if min(rows, B) <= 1:
                    per_row = 12 * max_len + memory.tensor_bytes((state.tensors, state.extra)) / max(B, 1)
                    raise memory.too_big(B, max_len, per_row, memory.free_memory_bytes(self.device),
                                         "; even one sequence per step did not fit") from None
                rng.set_state(saved)
                rows = memory.aligned_rows((min(rows, B) + 1) // 2)

    def sample_relaxed(
        self,
        n: int,
        max_len: int,
        tau: float,
        *,
        prompt: Tensor | None = None,
        z: Tensor | None = None,
        generator: torch.Generator | None = None,
        feed: str = "hard",
    ) -> Relaxed:
        """Gumbel-softmax samples with gradient to the generator's parameters.

        At each step the soft one-hot ``softmax((logits + g) / tau)`` is kept for the discriminator;
        the next input is the hard sample (RelGAN; ``feed="hard"``) or the soft vector itself
        (``feed="soft"``, fully differentiable through time).
        """
        state = self.init_state(n, prompt=prompt, z=z)
        token: Tensor = self._bos(n).squeeze(1)
        softs, hards = [], []
        for _ in range(max_len):
            interrupt.point()
            logits, state = self.step(token, state)
            soft, hard = gumbel_softmax(logits.float(), tau, generator)
            softs.append(soft)
            hards.append(hard)
            token = hard if feed == "hard" else soft
        return Relaxed(torch.stack(softs, 1), torch.stack(hards, 1))

    def num_parameters(self) -> int:
        return sum(p.numel() for p in self.parameters())
