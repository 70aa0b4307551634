"""Hugging Face models as llmgan generators and discriminators (``name: "hf:<path-or-hub-name>"``).

Generator (:class:`HFCausalLMGenerator`): any ``AutoModelForCausalLM``. The backbone (``model.base_model``,
e.g. ``GPT2Model`` / ``LlamaModel``) gives the hidden states; ``lm_head`` is the model's own output
embedding (``get_output_embeddings()``), so the base class's fused loss, sampling and Gumbel-softmax
work unchanged and the (B, T, V) logits are never materialized for MLE.

KV cache as a :class:`~llmgan.models.base.State`:

* ``tensors``: one ``(k, v)`` pair per layer, each (B, kv_heads, S, head_dim) -- batch-first, so
  ``State.repeat`` / ``State.select`` / ``State.cat`` (Monte-Carlo rollouts, group sampling) work as
  for our own GPT. Every call hands them to a ``transformers.DynamicCache`` whose full-attention layers
  are :class:`_InPlaceLayer`: without autograd (sampling, rollouts) a step writes its keys/values into
  a preallocated buffer that grows by a factor (``State.cache`` holds the buffers), so each cached
  position is copied O(1) times instead of once per later step. A buffer is only extended by the
  state at its end; any other state (an older one reused for several continuations, a repeated or
  selected one) copies into a new buffer, so the tensors of an old State are never modified.
  With autograd on, steps concatenate into new tensors (writing into storage that earlier steps'
  backward still reads would break it, e.g. Gumbel-softmax sampling).
* ``extra["attn"]`` (B, S) long: HF's attention mask over the cached positions (0 on left padding);
* ``extra["offset"]`` (B,) long: left-padding tokens per row. Position ids are ``cache index - offset``,
  so a left-padded prompt yields exactly the distribution of the same prompt unpadded.

With LoRA, :meth:`HFCausalLMGenerator.frozen_reference` (the KL reference, SPIN's opponent, SeqGAN's
rollout policy) is a :class:`LoRASnapshot`: the generator's own frozen base weights plus a copy of
the adapter weights only, so it costs the adapters' memory, not a second model.

Options (``generator.kwargs``): ``dtype`` (``float32`` | ``bfloat16`` | ``float16`` | ``auto``),
``bf16_autocast`` (``auto``: on CUDA devices that support bf16), ``lora: {r, alpha, dropout,
target_modules}`` (peft; base weights frozen, adapters trained), ``attn_implementation``,
``trust_remote_code``.

Discriminator (:class:`HFDiscriminator`): ``AutoModel`` (an encoder such as MiniLM/BERT, or the backbone
of a causal LM, as GAD recommends: D with G's architecture) plus a scalar head on the last non-pad
token (causal models) or the mean over non-pad tokens (encoders). When the run's tokenizer is the
discriminator's own tokenizer (same vocabulary), ids (and soft one-hots) go straight in; otherwise
each row is decoded to text with the run's tokenizer and re-encoded with the discriminator's
(ids only; ``per_step`` then is unavailable because positions no longer line up).
"""

from __future__ import annotations

import inspect
from collections.abc import Iterator
from contextlib import contextmanager, nullcontext
from typing import Any

import torch
import torch.nn as nn
from torch import Tensor

from llmgan.data.hf_tokenizer import HFTokenizer, load_hf_tokenizer, resolve_model_path
from llmgan.errors import ConfigError
from llmgan.models.base import Generator, State, left_padding
from llmgan.models.discriminators.base import Discriminator

# Encoder (bidirectional) architectures: mean pooling; everything else is treated as causal.
ENCODER_TYPES = frozenset(
    {"bert", "roberta", "xlm-roberta", "distilbert", "albert", "electra", "deberta", "deberta-v2", "mpnet",
     "camembert", "modernbert", "ernie", "megatron-bert", "funnel", "longformer", "bigbird"}
)
_DTYPES = {"float32": torch.float32, "fp32": torch.float32, "bfloat16": torch.bfloat16, "bf16": torch.bfloat16,
           "float16": torch.float16, "fp16": torch.float16}


def _require_transformers():
    try:
        import transformers
    except ImportError:
        raise ConfigError("hf models need the 'hf' extra: pip install 'llmgan[hf]'") from None
    return transformers


def _dtype(value: str | None) -> Any:
    if value is None or value == "auto":
        return value
    if value not in _DTYPES:
        raise ConfigError(f"dtype: expected auto|float32|bfloat16|float16, got {value!r}")
    return _DTYPES[value]


def _load(auto_cls: Any, name: str, dtype: str | None, **kw: Any) -> Any:
    """``from_pretrained`` with a one-line ConfigError (not found, offline without a cache, ...)."""
    path = resolve_model_path(name)
    if dtype is not None:
        kw["dtype"] = _dtype(dtype)
    try:
        return auto_cls.from_pretrained(path, **kw)
    except Exception as e:
        msg = str(e).splitlines()[0] if str(e) else type(e).__name__
        raise ConfigError(f"hf:{name}: cannot load the model ({msg})") from None


def apply_lora(model: nn.Module, lora: dict[str, Any], task_type: str | None) -> nn.Module:
    """Wrap ``model`` with peft LoRA adapters: base weights frozen, adapters trainable."""
    try:
        from peft import LoraConfig, get_peft_model
    except ImportError:
        raise ConfigError("lora: needs peft (pip install 'llmgan[hf]')") from None
    unknown = set(lora) - {"r", "alpha", "dropout", "target_modules", "bias"}
    if unknown:
        valid = "r, alpha, dropout, target_modules, bias"
        raise ConfigError(f"lora: unknown option {sorted(unknown)[0]!r} (valid: {valid})")
    cfg = LoraConfig(
        r=int(lora.get("r", 8)),
        lora_alpha=int(lora.get("alpha", 16)),
        lora_dropout=float(lora.get("dropout", 0.0)),
        target_modules=lora.get("target_modules"),  # None: peft's default for known architectures
        bias=lora.get("bias", "none"),
        task_type=task_type,
    )
    try:
        return get_peft_model(model, cfg)
    except ValueError as e:  # e.g. target_modules not found / unknown architecture without a default
        raise ConfigError(f"lora: {str(e).splitlines()[0]}") from None


def _cache_kwarg(module: nn.Module) -> str:
    """transformers 5 calls the cache argument ``cache``; 4.x calls it ``past_key_values``."""
    params = inspect.signature(module.forward).parameters
    return "cache" if "cache" in params else "past_key_values"


def _autocast_ctx(setting: Any, device: torch.device):
    on = setting is True or (
        setting == "auto" and device.type == "cuda" and torch.cuda.is_available() and torch.cuda.is_bf16_supported()
    )
    return torch.autocast(device_type=device.type, dtype=torch.bfloat16) if on else nullcontext()


# Buffers grow to this factor times the needed length: each cached position is copied O(1) times.
_KV_GROWTH = 1.5
_KV_MIN_CAPACITY = 16
IN_PLACE_KV = True  # False: always concatenate (the pre-buffer behaviour; tests compare the two)


class _KVBuffer:
    """One layer's preallocated keys and values (B, heads, capacity, head_dim), filled up to ``used``."""

    def __init__(self, keys: Tensor, values: Tensor, capacity: int):
        B, H, S, _ = keys.shape
        self.k = keys.new_empty(B, H, capacity, keys.size(-1))
        self.v = values.new_empty(B, values.size(1), capacity, values.size(-1))
        self.k[:, :, :S] = keys
        self.v[:, :, :S] = values
        self.used = S
        self.copied = keys.numel() + values.numel()  # elements copied into this buffer (tests count them)

    def extends(self, keys: Tensor, new: Tensor) -> bool:
        """Whether ``keys`` are this buffer's filled part (the state at its end) and ``new`` fits."""
        return (
            keys.size(-2) == self.used
            and keys.data_ptr() == self.k.data_ptr()
            and keys.size(0) == self.k.size(0)
            and new.dtype == self.k.dtype
            and self.used + new.size(-2) <= self.k.size(2)
        )

    def append(self, k: Tensor, v: Tensor) -> tuple[Tensor, Tensor]:
        S, T = self.used, k.size(-2)
        self.k[:, :, S : S + T] = k
        self.v[:, :, S : S + T] = v
        self.used = S + T
        self.copied += k.numel() + v.numel()
        return self.k[:, :, : S + T], self.v[:, :, : S + T]


def _in_place_layer_class():
    from transformers.cache_utils import DynamicLayer

    class _InPlaceLayer(DynamicLayer):
        """A ``DynamicLayer`` that, without autograd, appends into a :class:`_KVBuffer` (see the module doc)."""

        def __init__(self, keys: Tensor | None = None, values: Tensor | None = None, buffer: _KVBuffer | None = None):
            super().__init__()
            self.buffer = buffer
            if keys is not None and values is not None and keys.size(-2) > 0:
                self.device = keys.device
                self.keys, self.values = keys, values
                self.is_initialized = True

        def update(self, key_states: Tensor, value_states: Tensor, *args: Any, **kwargs: Any) -> tuple[Tensor, Tensor]:
            if not self.is_initialized or self.keys.size(-2) == 0:  # first chunk: keep it as it is, no copy
                self.device = key_states.device
                self.keys, self.values = key_states, value_states
                self.is_initialized = True
                return self.keys, self.values
            grad = torch.is_grad_enabled() and (key_states.requires_grad or self.keys.requires_grad)
            if not IN_PLACE_KV or grad:
                self.buffer = None
                self.keys = torch.cat([self.keys, key_states], dim=-2)
                self.values = torch.cat([self.values, value_states], dim=-2)
                return self.keys, self.values
            buf = self.buffer
            if buf is None or not buf.extends(self.keys, key_states):
                need = self.keys.size(-2) + key_states.size(-2)
                buf = _KVBuffer(self.keys, self.values, max(_KV_MIN_CAPACITY, int(need * _KV_GROWTH)))
            self.buffer = buf
            self.keys, self.values = buf.append(key_states, value_states)
            return self.keys, self.values

    return _InPlaceLayer


_IN_PLACE_LAYER: Any = None


def _make_cache(config: Any, tensors: tuple, buffers: tuple | None) -> Any:
    """A DynamicCache holding a State's per-layer (k, v) (none: empty); full-attention layers extend in place."""
    global _IN_PLACE_LAYER
    from transformers import DynamicCache
    from transformers.cache_utils import DynamicLayer

    if _IN_PLACE_LAYER is None:
        _IN_PLACE_LAYER = _in_place_layer_class()
    layer_cls = _IN_PLACE_LAYER
    cache = DynamicCache(config=config)
    if not cache.layers:  # the config names no layer types: full attention everywhere, layers added lazily
        cache.layer_class_to_replicate = layer_cls
        cache.layers = [layer_cls() for _ in tensors]
    for i, layer in enumerate(cache.layers):
        kv = tensors[i] if i < len(tensors) else (None, None)
        buf = buffers[i] if buffers is not None and i < len(buffers) else None
        if type(layer) in (DynamicLayer, layer_cls):
            cache.layers[i] = layer_cls(kv[0], kv[1], buf)
        elif kv[0] is not None:  # sliding-window and other layer kinds: refilled by their own update (a copy)
            layer.update(kv[0], kv[1])
    return cache


class HFCausalLMGenerator(Generator):
    """A ``transformers`` causal LM behind the :class:`~llmgan.models.base.Generator` interface."""

    def __init__(
        self,
        path: str,
        *,
        vocab_size: int,
        bos_id: int,
        eos_id: int | None,
        pad_id: int | None,
        dtype: str | None = None,
        bf16_autocast: bool | str = "auto",
        lora: dict[str, Any] | None = None,
        attn_implementation: str | None = None,
        trust_remote_code: bool = False,
    ):
        super().__init__()
        tf = _require_transformers()
        kw: dict[str, Any] = {"trust_remote_code": trust_remote_code}
        if attn_implementation:
            kw["attn_implementation"] = attn_implementation
        hf = _load(tf.AutoModelForCausalLM, path, dtype, **kw)
        n_rows = hf.get_output_embeddings().weight.size(0)
        if vocab_size > n_rows:  # the tokenizer knows more tokens than the model has rows (added tokens)
            hf.resize_token_embeddings(vocab_size)
            n_rows = vocab_size
        self.path = path
        self.vocab_size, self.bos_id, self.eos_id, self.pad_id = n_rows, bos_id, eos_id, pad_id
        self.config = hf.config
        self.bf16_autocast = bf16_autocast
        backbone = hf.base_model  # GPT2Model / LlamaModel ...: hidden states after the final norm
        self.model = apply_lora(hf, lora, "CAUSAL_LM") if lora else hf
        # Plain tuple: keeps references without registering the modules twice in state_dict().
        self._refs = (hf, backbone)
        self._cache_arg = _cache_kwarg(backbone)
        # What peft left trainable (the adapters): all a frozen snapshot needs to copy.
        self.adapter_keys = [n for n, p in self.named_parameters() if p.requires_grad] if lora else []

    # lm_head is the model's own output layer (tied to the input embedding for GPT-2), not a copy.
    @property
    def lm_head(self) -> nn.Linear:  # type: ignore[override]
        return self._refs[0].get_output_embeddings()

    def embedding_parameters(self) -> list[nn.Parameter]:
        """``get_input_embeddings()`` (``wte`` / ``embed_tokens``; the tied output layer is the same Parameter)."""
        return list(self._refs[0].get_input_embeddings().parameters())

    def frozen_reference(self) -> Generator:
        """With LoRA, a :class:`LoRASnapshot` (shared frozen base, own copy of the adapters); else a deep copy."""
        if self.adapter_keys:
            return LoRASnapshot(self)
        return super().frozen_reference()

    # --- Generator interface ------------------------------------------------------------------
    def embed(self, x: Tensor) -> Tensor:
        """Ids (B, T) or soft one-hots (B, T, V) -> input embeddings (B, T, E)."""
        emb = self._refs[0].get_input_embeddings()
        if x.dtype.is_floating_point:
            return x.to(emb.weight.dtype) @ emb.weight
        return emb(x)

    def init_state(self, batch: int, prompt: Tensor | None = None, z: Tensor | None = None) -> State:
        """Empty cache, then the left-padded prompt (B, P) run through it (padding masked, positions shifted)."""
        if z is not None:
            raise ValueError("hf generators take no latent code z")
        dev = self.device
        state = State((), 0, {"attn": torch.ones(batch, 0, dtype=torch.long, device=dev),
                              "offset": torch.zeros(batch, dtype=torch.long, device=dev)})
        if prompt is not None and prompt.size(1) > 0:
            n_pad, real = left_padding(prompt, batch, self.pad_id)  # (B,), (B, P)
            state.extra["offset"] = n_pad
            _, state = self._forward(prompt, state, real)
        return state

    def forward_hidden(self, inputs: Tensor, state: State) -> tuple[Tensor, State]:
        return self._forward(inputs, state, None)

    # --- internals ----------------------------------------------------------------------------
    def _forward(self, inputs: Tensor, state: State, new_real: Tensor | None) -> tuple[Tensor, State]:
        B, T = inputs.shape[:2]
        dev = inputs.device
        S0 = state.pos
        real = torch.ones(B, T, dtype=torch.long, device=dev) if new_real is None else new_real.long()
        attn = torch.cat([state.extra["attn"], real], dim=1)  # (B, S0 + T)
        pos = (S0 + torch.arange(T, device=dev))[None, :] - state.extra["offset"][:, None]
        pos = pos.clamp(min=0)  # padding positions clamp to 0; they are masked anyway
        cache = _make_cache(self.config, tuple(state.tensors) if S0 > 0 else (), state.cache if S0 > 0 else None)
        with _autocast_ctx(self.bf16_autocast, dev):
            out = self._refs[1](
                inputs_embeds=self.embed(inputs),
                attention_mask=attn,
                position_ids=pos,
                use_cache=True,
                **{self._cache_arg: cache},
            )
        new_cache = getattr(out, "cache", None) or out.past_key_values
        try:
            tensors = tuple((layer.keys, layer.values) for layer in new_cache.layers)
        except AttributeError:
            raise ConfigError(
                f"hf:{self.path}: its cache has no per-layer keys/values (a recurrent/hybrid model?); "
                "only attention KV caches are supported"
            ) from None
        buffers = tuple(getattr(layer, "buffer", None) for layer in new_cache.layers)
        extra = dict(state.extra)
        extra["attn"] = attn
        return out.last_hidden_state, State(tensors, S0 + T, extra, cache=buffers)


class LoRASnapshot(Generator):
    """A frozen snapshot of a LoRA :class:`HFCausalLMGenerator` that shares the generator's base weights.

    LoRA keeps the base weights frozen, so a snapshot only needs its own copy of the adapter weights
    (buffers here). Each call runs the generator itself with those copies swapped in for its adapters
    (the live Parameter objects are put back afterwards, untouched, so a graph being built on them
    is unaffected) and in eval mode (no LoRA dropout). Before any update of the adapters (B = 0) it
    computes exactly the base model, what ``disable_adapter()`` gives; unlike that, it can also hold
    the post-SFT generator (GAD's reference) and follow refreshes (SPIN's opponent, SeqGAN's rollout
    policy).

    ``state_dict()`` holds the adapter copies only, under the generator's own key names, so a
    checkpoint stores no second base model; ``load_state_dict`` takes the generator's full state
    dict (refresh) or a saved snapshot (resume).
    """

    def __init__(self, generator: HFCausalLMGenerator):
        nn.Module.__init__(self)
        self._gen = (generator,)  # plain tuple: the base weights belong to the generator, not to this module
        self.vocab_size, self.bos_id = generator.vocab_size, generator.bos_id
        self.eos_id, self.pad_id = generator.eos_id, generator.pad_id
        self._keys = list(generator.adapter_keys)
        self._slots = []
        for i, key in enumerate(self._keys):
            module_path, _, attr = key.rpartition(".")
            self._slots.append((generator.get_submodule(module_path), attr))
            self.register_buffer(f"adapter{i}", generator.get_parameter(key).detach().clone())
        self.eval()

    @property
    def lm_head(self) -> nn.Linear:  # type: ignore[override]
        return self._gen[0].lm_head

    def embedding_parameters(self) -> list[nn.Parameter]:
        return self._gen[0].embedding_parameters()

    def state_dict(self, *args: Any, **kwargs: Any) -> dict[str, Tensor]:  # type: ignore[override]
        return {key: getattr(self, f"adapter{i}") for i, key in enumerate(self._keys)}

    @torch.no_grad()
    def load_state_dict(self, state_dict: Any, strict: bool = True, assign: bool = False) -> Any:  # type: ignore[override]
        missing = [k for k in self._keys if k not in state_dict]
        if missing and strict:
            raise KeyError(f"LoRA snapshot: missing adapter weight {missing[0]!r}")
        for i, key in enumerate(self._keys):
            if key in state_dict:
                getattr(self, f"adapter{i}").copy_(state_dict[key])
        return nn.modules.module._IncompatibleKeys(missing, [])

    @contextmanager
    def _swapped(self) -> Iterator[HFCausalLMGenerator]:
        gen = self._gen[0]
        was = gen.training
        live = [mod._parameters[attr] for mod, attr in self._slots]
        try:
            for i, (mod, attr) in enumerate(self._slots):
                mod._parameters[attr] = getattr(self, f"adapter{i}")
            gen.eval()
            yield gen
        finally:
            for (mod, attr), p in zip(self._slots, live):
                mod._parameters[attr] = p
            gen.train(was)

    def embed(self, x: Tensor) -> Tensor:
        with self._swapped() as g:
            return g.embed(x)

    def init_state(self, batch: int, prompt: Tensor | None = None, z: Tensor | None = None) -> State:
        with self._swapped() as g:
            return g.init_state(batch, prompt=prompt, z=z)

    def forward_hidden(self, inputs: Tensor, state: State) -> tuple[Tensor, State]:
        with self._swapped() as g:
            return g.forward_hidden(inputs, state)

    def step_hidden(self, token: Tensor, state: State) -> tuple[Tensor, State]:
        with self._swapped() as g:
            return g.step_hidden(token, state)


class HFDiscriminator(Discriminator):
    """``AutoModel`` backbone + a scalar head; logits (B,) with "real" > 0, see the module docstring."""

    def __init__(
        self,
        vocab_size: int,
        path: str,
        *,
        pad_id: int | None = None,
        run_tokenizer: Any = None,
        pooling: str = "auto",
        dropout: float = 0.1,
        freeze: bool = False,
        lora: dict[str, Any] | None = None,
        dtype: str | None = None,
        max_length: int = 512,
        bf16_autocast: bool | str = "auto",
        trust_remote_code: bool = False,
    ):
        nn.Module.__init__(self)  # no own embedding table: the backbone's is used
        tf = _require_transformers()
        self.path, self.vocab_size, self.pad_id = path, vocab_size, pad_id
        backbone = _load(tf.AutoModel, path, dtype, trust_remote_code=trust_remote_code)
        self.config = backbone.config
        model_type = getattr(self.config, "model_type", "")
        if pooling == "auto":
            pooling = "mean" if model_type in ENCODER_TYPES else "last"
        if pooling not in ("mean", "last"):
            raise ConfigError(f"discriminator pooling: expected auto|mean|last, got {pooling!r}")
        self.pooling = pooling
        self.max_length = max_length
        self.bf16_autocast = bf16_autocast
        if freeze:
            backbone.requires_grad_(False)
        self.backbone = apply_lora(backbone, lora, "FEATURE_EXTRACTION") if lora else backbone
        self._inner = (backbone,)
        hidden = int(getattr(self.config, "hidden_size", 0) or getattr(self.config, "n_embd", 0))
        self.emb_dim = hidden
        self.drop = nn.Dropout(dropout)
        self.head = nn.Linear(hidden, 1)
        # Shared vocabulary: the run's ids index the backbone's embedding directly. Otherwise decode
        # with the run's tokenizer and re-encode with the discriminator's own.
        self.run_tokenizer = run_tokenizer
        self.own_tokenizer = None
        self.retokenize = True
        if isinstance(run_tokenizer, HFTokenizer):
            if resolve_model_path(run_tokenizer.name) == resolve_model_path(path):
                self.retokenize = False
            else:
                try:
                    own = load_hf_tokenizer(path)
                except ConfigError:
                    own = None  # no tokenizer files: a model built for the run's tokenizer
                self.retokenize = own is not None and not run_tokenizer.same_vocabulary(own)
                self.own_tokenizer = own
        if self.retokenize:
            if run_tokenizer is None:
                raise ConfigError(f"hf:{path} discriminator: needs the run's tokenizer to re-tokenize text")
            if self.own_tokenizer is None:
                self.own_tokenizer = load_hf_tokenizer(path)
            if self.own_tokenizer.pad_token is None:  # GPT-2 style: batches need some pad token
                self.own_tokenizer.pad_token = self.own_tokenizer.eos_token or self.own_tokenizer.unk_token
        elif backbone.get_input_embeddings().num_embeddings < vocab_size:
            raise ConfigError(f"hf:{path} discriminator: embedding has fewer rows than the vocabulary ({vocab_size})")

    # --- inputs -------------------------------------------------------------------------------
    def embed(self, x: Tensor) -> Tensor:
        emb = self._inner[0].get_input_embeddings()
        if x.is_floating_point():
            return x.to(emb.weight.dtype) @ emb.weight[: x.size(-1)]
        return emb(x)

    def _text_batch(self, x: Tensor, prompt: Tensor | None) -> dict[str, Tensor]:
        """Re-tokenize: run-tokenizer ids -> text -> the discriminator's ids (padding, truncation)."""
        if x.is_floating_point():
            raise ValueError(
                f"hf:{self.path} discriminator has its own tokenizer: soft one-hot inputs need a shared tokenizer"
            )
        tok = self.run_tokenizer
        texts = [self._decode(row) for row in x.tolist()]
        kw: dict[str, Any] = {"padding": True, "truncation": True, "max_length": self.max_length,
                              "return_tensors": "pt"}
        if prompt is not None:
            prompts = [tok.decode(row) for row in prompt.tolist()]
            enc = self.own_tokenizer(prompts, texts, **kw)
        else:
            enc = self.own_tokenizer(texts, **kw)
        return {k: v.to(x.device) for k, v in enc.items() if k in ("input_ids", "attention_mask", "token_type_ids")}

    def _decode(self, row: list[int]) -> str:
        eos = self.run_tokenizer.eos_id
        if eos is not None and eos in row:  # everything after EOS is padding
            row = row[: row.index(eos)]
        return self.run_tokenizer.decode(row)

    def _hidden(self, x: Tensor, prompt: Tensor | None) -> tuple[Tensor, Tensor, int]:
        """Backbone hidden states (B, L, H), valid mask (B, L) bool, and the prompt length P."""
        if self.retokenize:
            batch = self._text_batch(x, prompt)
            valid = batch["attention_mask"].bool()
            P = 0
            kwargs: dict[str, Any] = dict(batch)
        else:
            self._check_input(x)
            emb = self.embed(x)
            pad = self.pad_mask(x)
            valid = torch.ones(x.shape[:2], dtype=torch.bool, device=x.device) if pad is None else ~pad
            P = 0
            if prompt is not None:
                P = prompt.size(1)
                emb = torch.cat([self.embed(prompt).to(emb.dtype), emb], dim=1)
                pvalid = prompt != self.pad_id if self.pad_id is not None else torch.ones_like(prompt, dtype=torch.bool)
                valid = torch.cat([pvalid, valid], dim=1)
            # positions count real tokens only, so left padding of the prompt does not shift them
            pos = (valid.long().cumsum(1) - 1).clamp(min=0)
            kwargs = {"inputs_embeds": emb, "attention_mask": valid.long(), "position_ids": pos}
        with _autocast_ctx(self.bf16_autocast, x.device):
            h = self.backbone(**kwargs).last_hidden_state
        return h.float(), valid, P

    def _pool(self, h: Tensor, valid: Tensor) -> Tensor:
        if self.pooling == "mean":
            w = valid.float().unsqueeze(-1)
            return (h * w).sum(1) / w.sum(1).clamp(min=1.0)
        L = valid.size(1)
        # index of the last valid position (0 when a row has none)
        last = (L - 1) - valid.flip(1).float().argmax(1)
        return h[torch.arange(h.size(0), device=h.device), last]

    # --- API ----------------------------------------------------------------------------------
    def features(self, x: Tensor, prompt: Tensor | None = None) -> Tensor:
        """Pooled hidden state (B, H)."""
        h, valid, _ = self._hidden(x, prompt)
        return self._pool(h, valid)

    def forward(self, x: Tensor, prompt: Tensor | None = None, *, per_step: bool = False) -> Tensor:
        """Logits (B,), or with ``per_step`` the head at every position of ``x`` (B, T).

        For causal backbones column t is the score of the prefix ``x[:, :t+1]`` (it sees nothing later);
        for encoders it is the head on position t's contextual state (which sees the whole sequence).
        """
        if per_step and self.retokenize:
            raise ValueError(f"hf:{self.path} discriminator re-tokenizes text: per_step needs a shared tokenizer")
        h, valid, P = self._hidden(x, prompt)
        if per_step:
            return self.head(self.drop(h[:, P:])).squeeze(-1)
        return self.head(self.drop(self._pool(h, valid))).squeeze(-1)


def build_hf_generator(name: str, tokenizer: Any, **kwargs: Any) -> HFCausalLMGenerator:
    """``name`` = ``hf:<path>``; special ids from the run's tokenizer (which must be the model's)."""
    from llmgan.data.tokenizers import token_ids

    path = name[3:]
    if not isinstance(tokenizer, HFTokenizer):
        raise ConfigError(f"generator {name}: needs the model's own tokenizer (data.tokenizer: hf), "
                          f"got kind {tokenizer.kind!r}")
    try:
        return HFCausalLMGenerator(path, **token_ids(tokenizer), **kwargs)
    except TypeError as e:
        raise ConfigError(f"generator {name!r}: {e}") from None


def build_hf_discriminator(name: str, tokenizer: Any, **kwargs: Any) -> HFDiscriminator:
    path = name[3:]
    if tokenizer.pad_id is not None:
        kwargs.setdefault("pad_id", tokenizer.pad_id)
    try:
        return HFDiscriminator(tokenizer.vocab_size, path, run_tokenizer=tokenizer, **kwargs)
    except TypeError as e:
        raise ConfigError(f"discriminator {name!r}: {e}") from None


def make_tiny_hf_model(
    out_dir: str, arch: str = "gpt2", texts: list[str] | None = None, *, hidden: int = 32, layers: int = 2,
    heads: int = 2, max_positions: int = 128, pad_token: bool = True, seed: int = 0,
) -> str:
    """Write a tiny randomly initialised ``arch`` (gpt2 | llama) causal LM plus a word-level HF tokenizer
    (trained on ``texts``) to ``out_dir``; returns the path. For offline tests and smoke runs:
    ``generator.name: hf:<out_dir>`` then loads without any download.

    ``pad_token=False`` leaves the tokenizer without a pad token (like GPT-2's), so EOS doubles as pad.
    """
    tf = _require_transformers()
    from tokenizers import Tokenizer as RawTokenizer
    from tokenizers import models, pre_tokenizers, trainers

    texts = texts or ["the cat sat on the mat", "a dog ran in the park", "hello world"]
    specials = ["<unk>", "<s>", "</s>"] + (["<pad>"] if pad_token else [])
    raw = RawTokenizer(models.WordLevel(unk_token="<unk>"))
    raw.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    raw.train_from_iterator(texts, trainers.WordLevelTrainer(special_tokens=specials, show_progress=False))
    tok = tf.PreTrainedTokenizerFast(
        tokenizer_object=raw, unk_token="<unk>", bos_token="<s>", eos_token="</s>",
        **({"pad_token": "<pad>"} if pad_token else {}),
    )
    V = len(tok)
    ids = {"bos_token_id": tok.bos_token_id, "eos_token_id": tok.eos_token_id, "pad_token_id": tok.pad_token_id}
    torch.manual_seed(seed)
    if arch == "gpt2":
        cfg = tf.GPT2Config(vocab_size=V, n_positions=max_positions, n_embd=hidden, n_layer=layers, n_head=heads,
                            **ids)
        model = tf.GPT2LMHeadModel(cfg)
    elif arch == "llama":
        cfg = tf.LlamaConfig(vocab_size=V, hidden_size=hidden, intermediate_size=2 * hidden, num_hidden_layers=layers,
                             num_attention_heads=heads, num_key_value_heads=max(1, heads // 2),
                             max_position_embeddings=max_positions, **ids)
        model = tf.LlamaForCausalLM(cfg)
    else:
        raise ConfigError(f"make_tiny_hf_model: arch must be gpt2 or llama, got {arch!r}")
    model.save_pretrained(out_dir)
    tok.save_pretrained(out_dir)
    return out_dir
