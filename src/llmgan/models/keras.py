"""Keras 3 models as llmgan players, on Keras's PyTorch backend (``name: "keras:<module>:<factory>"``).

Keras 3's torch-backend layers are ``torch.nn.Module`` s whose variables are ``torch.nn.Parameter`` s,
so a Keras model trains in our engine like any torch module (our optimizers, autocast, checkpoints:
``state_dict`` holds the Keras variables). ``<module>`` is an importable module or a ``.py`` file path;
``<factory>(vocab_size=V, **kwargs)`` returns a Keras model:

* generator: token ids (B, T) -> next-token logits (B, T, V), its LAST layer a ``Dense(V)`` (linear
  activation): the layers before it give the hidden states, the Dense is the output layer, so the
  engine's fused loss, sampling and rollouts work unchanged. The model is causal by contract (an
  LSTM, or causally masked attention). It keeps no recurrent state across calls: every step re-runs
  the prefix (O(T^2) per sampled sequence, fine for the short texts of text GANs). A prompt is a
  prefix; left padding is fed as ordinary tokens (give the model a mask if that matters).
* discriminator: token ids (B, T) -> one logit per row ((B,) or (B, 1)), logit > 0 = real; with a
  prompt, it reads ``prompt ++ x``. Soft one-hot inputs (Gumbel-softmax GANs) and per-step scores
  are not supported.

``import llmgan`` never imports keras; the first Keras model sets ``KERAS_BACKEND=torch`` before
importing it, and refuses with one line when keras was already imported with another backend.
"""

from __future__ import annotations

import importlib
import importlib.util
import os
import re
import sys
from typing import Any

import torch
from torch import Tensor, nn

from llmgan.errors import ConfigError
from llmgan.models.base import Generator, State


def import_keras() -> Any:
    """keras on the torch backend (sets KERAS_BACKEND before the first import)."""
    if "keras" not in sys.modules:
        os.environ.setdefault("KERAS_BACKEND", "torch")
    try:
        import keras
    except ImportError as e:
        raise ConfigError(f"keras models need the 'keras' extra and KERAS_BACKEND=torch: pip install 'llmgan[keras]' "
                          f"({e})") from None
    if keras.backend.backend() != "torch":
        raise ConfigError(f"keras models need KERAS_BACKEND=torch (keras is running on {keras.backend.backend()!r}); "
                          "set it before anything imports keras")
    return keras


def load_factory(name: str) -> Any:
    """``keras:<module or file.py>:<factory>`` -> the factory callable."""
    parts = name.split(":")
    if len(parts) != 3 or parts[0] != "keras" or not parts[1] or not parts[2]:
        raise ConfigError(f"{name!r}: expected keras:<module or file.py>:<factory>")
    _, mod, fn = parts
    import_keras()
    try:
        if mod.endswith(".py"):
            if not os.path.isfile(mod):
                raise ConfigError(f"{name}: file {mod} not found")
            spec = importlib.util.spec_from_file_location(f"_llmgan_keras_{abs(hash(mod))}", mod)
            module = importlib.util.module_from_spec(spec)  # type: ignore[arg-type]
            spec.loader.exec_module(module)  # type: ignore[union-attr]
        else:
            module = importlib.import_module(mod)
    except ImportError as e:
        raise ConfigError(f"{name}: cannot import {mod} ({e})") from None
    factory = getattr(module, fn, None)
    if not callable(factory):
        raise ConfigError(f"{name}: {mod} has no callable {fn!r}")
    return factory


def _build(name: str, vocab_size: int, kwargs: dict[str, Any]) -> Any:
    keras = import_keras()
    try:
        model = load_factory(name)(vocab_size=vocab_size, **kwargs)
    except TypeError as e:
        raise ConfigError(f"{name}: {e}") from None
    if not isinstance(model, keras.Model):
        raise ConfigError(f"{name}: the factory must return a keras.Model, got {type(model).__name__}")
    if not model.built or not list(model.parameters()):
        model(torch.zeros(1, 2, dtype=torch.long))  # a Sequential without an Input creates its weights on first call
    return model


class _KerasState:
    """``state_dict`` / ``load_state_dict`` keyed by position and layer path, e.g. ``003.dense/kernel``.

    Why not nn.Module's own: Keras names layers uniquely per process (``dense_5`` for the sixth Dense
    built), so the registered names -- and a checkpoint's keys -- would depend on how many models were
    built before; and it registers each variable twice. The tensors returned share the variables'
    storage (SeqGAN's rollout policy is updated in place through them), as nn.Module's do."""

    model: Any

    def _named_variables(self) -> list[tuple[str, Tensor]]:
        out = []
        for i, v in enumerate(self.model.variables):
            path = re.sub(r"_\d+(?=/|$)", "", str(v.path))
            out.append((f"{i:03d}.{path}", v.value))
        return out

    def state_dict(self, *args: Any, destination: Any = None, prefix: str = "", keep_vars: bool = False) -> Any:
        sd = {} if destination is None else destination
        for k, t in self._named_variables():
            sd[prefix + k] = t if keep_vars else t.detach()
        return sd

    @torch.no_grad()
    def load_state_dict(self, state_dict: Any, strict: bool = True, assign: bool = False) -> Any:
        own = dict(self._named_variables())
        missing = [k for k in own if k not in state_dict]
        unexpected = [k for k in state_dict if k not in own]
        if strict and (missing or unexpected):
            raise RuntimeError(f"keras model state: missing {missing[:3]}, unexpected {unexpected[:3]}")
        for k, t in own.items():
            if k in state_dict:
                if tuple(state_dict[k].shape) != tuple(t.shape):
                    raise RuntimeError(f"keras model state: {k} has shape {tuple(state_dict[k].shape)}, "
                                       f"expected {tuple(t.shape)}")
                t.copy_(state_dict[k])
        return nn.modules.module._IncompatibleKeys(missing, unexpected)


class _KerasHead:
    """The final Dense seen as llmgan's ``lm_head``: weight (V, H) (a view of the Keras kernel (H, V),
    so gradients reach it), bias (V,) or None."""

    def __init__(self, dense: Any):
        self.dense = dense

    @property
    def weight(self) -> Tensor:
        return self.dense.kernel.value.t()

    @property
    def bias(self) -> Tensor | None:
        return self.dense.bias.value if self.dense.use_bias else None

    def __call__(self, h: Tensor) -> Tensor:
        return torch.nn.functional.linear(h, self.weight, self.bias)


class KerasGenerator(_KerasState, Generator):
    """A Keras model (ids -> logits, last layer Dense(V)) behind the Generator interface."""

    def __init__(self, name: str, *, vocab_size: int, bos_id: int, eos_id: int | None, pad_id: int | None,
                 **kwargs: Any):
        super().__init__()
        keras = import_keras()
        self.name, self.kwargs = name, dict(kwargs)
        self.vocab_size, self.bos_id, self.eos_id, self.pad_id = vocab_size, bos_id, eos_id, pad_id
        self.model = _build(name, vocab_size, self.kwargs)
        layers = list(self.model.layers)
        dense = layers[-1] if layers else None
        if not isinstance(dense, keras.layers.Dense) or dense.units != vocab_size or \
                getattr(dense.activation, "__name__", "") != "linear":
            raise ConfigError(f"{name}: a generator's last layer must be Dense({vocab_size}) with no activation "
                              "(the logits)")
        # the hidden states: everything but the Dense (the same layer objects, so the same weights)
        if isinstance(self.model, keras.Sequential):
            body = keras.Sequential(layers[:-1])
        else:
            body = keras.Model(self.model.inputs, dense.input)
        self._body = (body,)  # plain tuple: its weights are registered once, under self.model
        self._head = _KerasHead(dense)
        self._embeddings = [layer for layer in layers if isinstance(layer, keras.layers.Embedding)]

    @property
    def lm_head(self) -> Any:  # type: ignore[override]
        return self._head

    def embedding_parameters(self) -> list[nn.Parameter]:
        if not self._embeddings:
            raise NotImplementedError(f"{self.name}: no keras Embedding layer to call the token embedding")
        return [layer.embeddings.value for layer in self._embeddings]

    def frozen_reference(self) -> Generator:
        """A second model from the same factory holding a copy of the weights (Keras models do not deepcopy)."""
        ref = KerasGenerator(self.name, vocab_size=self.vocab_size, bos_id=self.bos_id, eos_id=self.eos_id,
                             pad_id=self.pad_id, **self.kwargs).to(self.device)
        ref.load_state_dict(self.state_dict())
        return ref.requires_grad_(False).eval()

    def embed(self, x: Tensor) -> Tensor:
        raise NotImplementedError(f"{self.name}: keras generators take token ids only (no soft one-hot inputs)")

    def init_state(self, batch: int, prompt: Tensor | None = None, z: Tensor | None = None) -> State:
        if z is not None:
            raise ValueError("keras generators take no latent code z")
        prefix = torch.zeros(batch, 0, dtype=torch.long, device=self.device) if prompt is None else prompt.long()
        return State((prefix,), prefix.size(1))

    def forward_hidden(self, inputs: Tensor, state: State) -> tuple[Tensor, State]:
        """Re-runs the whole prefix plus ``inputs`` (B, T) and returns the last T hidden states."""
        if inputs.is_floating_point():
            raise ValueError(f"{self.name}: keras generators take token ids only (no soft one-hot inputs)")
        full = torch.cat([state.tensors[0], inputs], dim=1)
        h = self._body[0](full, training=self.training)
        return h[:, -inputs.size(1):], State((full,), full.size(1))


class KerasDiscriminator(_KerasState, nn.Module):
    """A Keras model (ids -> one logit) with the discriminator calling convention (logit > 0 = real)."""

    def __init__(self, name: str, vocab_size: int, pad_id: int | None = None, **kwargs: Any):
        super().__init__()
        self.name, self.vocab_size, self.pad_id = name, vocab_size, pad_id
        self.model = _build(name, vocab_size, dict(kwargs))

    def forward(self, x: Tensor, prompt: Tensor | None = None, *, per_step: bool = False) -> Tensor:
        if x.is_floating_point():
            raise ValueError(f"{self.name}: keras discriminators take token ids only (no soft one-hot inputs)")
        if per_step:
            raise ValueError(f"{self.name}: keras discriminators give no per-step scores")
        if prompt is not None:
            x = torch.cat([prompt.long(), x], dim=1)
        out = self.model(x, training=self.training)
        if out.dim() == 2 and out.size(1) == 1:
            out = out[:, 0]
        if out.dim() != 1:
            raise ValueError(f"{self.name}: the discriminator must return one logit per row, got {tuple(out.shape)}")
        return out


def build_keras_generator(name: str, tokenizer: Any, **kwargs: Any) -> KerasGenerator:
    from llmgan.data.tokenizers import token_ids

    return KerasGenerator(name, **token_ids(tokenizer), **kwargs)


def build_keras_discriminator(name: str, tokenizer: Any, **kwargs: Any) -> KerasDiscriminator:
    return KerasDiscriminator(name, tokenizer.vocab_size, pad_id=tokenizer.pad_id, **kwargs)
