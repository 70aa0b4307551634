"""Which numeric precision a run trains in, the autocast region that gives it, and fp16 loss scaling.

``train.precision`` asks for one of:

* ``fp32``: no autocast.
* ``bf16``: forward passes under ``torch.autocast(dtype=torch.bfloat16)``; the fused output layer and
  the sampler stay fp32 inside it (``llmgan.models.output``, ``llmgan.models.sampling``). It needs
  bf16 arithmetic in hardware: on CUDA ``torch.cuda.is_bf16_supported()``; on a CPU the AVX512_BF16
  or AMX instructions (x86) or the ``bf16`` feature (Arm), and a probe that an LSTM and a linear
  layer actually run forward and backward under autocast. Without it the run **falls back to fp32
  with one warning line**: on an AVX2-only x86 CPU oneDNN has no bf16 LSTM at all ("could not create
  a primitive descriptor"), and its emulated bf16 matmul is ~50x slower than fp32 (256x512 @ 512x512,
  one thread: 139 ms vs 2.8 ms), so fp32 is what a user asking for speed wants there.
* ``fp16``: autocast to float16 with a per-optimizer ``torch.amp.GradScaler`` (:class:`LossScaler`),
  CUDA only: anywhere else it is refused with a one-line ``ConfigError`` (CPU fp16 autocast has
  neither the speed nor the dynamic range that would make it worth it).
"""

from __future__ import annotations

import functools
import os
from contextlib import AbstractContextManager, nullcontext

import torch

from llmgan.errors import ConfigError
from llmgan.training.logging import info

PRECISIONS = ("fp32", "bf16", "fp16")
_DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16}


def _cpuinfo_flags(path: str = "/proc/cpuinfo") -> set[str]:
    """The CPU feature flags the kernel reports (empty where there is no /proc/cpuinfo)."""
    if not os.path.isfile(path):
        return set()
    flags: set[str] = set()
    with open(path, encoding="utf-8", errors="replace") as f:
        for line in f:
            key, _, value = line.partition(":")
            if key.strip() in ("flags", "Features"):  # x86 | aarch64
                flags.update(value.split())
    return flags


def cpu_has_native_bf16() -> bool:
    """Whether this CPU computes in bf16 in hardware (x86 AVX512_BF16 / AMX, Arm BF16)."""
    cpu = getattr(torch, "cpu", None)
    for check in ("_is_avx512_bf16_supported", "_is_amx_tile_supported"):  # torch's own cpuinfo query
        fn = getattr(cpu, check, None)
        if fn is not None and fn():
            return True
    return bool(_cpuinfo_flags() & {"avx512_bf16", "amx_bf16", "bf16"})


def bf16_autocast_runs(device_type: str) -> str | None:
    """Run a tiny LSTM + linear layer forward and backward under bf16 autocast; None if it works, else why not.

    The LSTM is the op that breaks first (oneDNN's bf16 RNN primitive); the linear layer covers matmul.
    """
    try:
        dev = torch.device(device_type)
        lstm = torch.nn.LSTM(4, 4, batch_first=True).to(dev)
        head = torch.nn.Linear(4, 3).to(dev)
        with torch.autocast(device_type=device_type, dtype=torch.bfloat16):
            out = head(lstm(torch.randn(2, 3, 4, device=dev))[0])
        out.float().sum().backward()
    except RuntimeError as e:
        return str(e).strip().splitlines()[0][:160] if str(e).strip() else type(e).__name__
    return None


@functools.cache
def bf16_unsupported_reason(device_type: str) -> str | None:
    """None when bf16 autocast is native and works on ``device_type``, else a short reason (cached)."""
    if device_type == "cuda":
        if not torch.cuda.is_bf16_supported():
            return "this CUDA device has no bf16 support"
        return None
    if device_type == "cpu" and not cpu_has_native_bf16():
        return "this CPU has no native bf16 (no avx512_bf16/amx_bf16)"
    failure = bf16_autocast_runs(device_type)
    return f"bf16 autocast fails on {device_type}: {failure}" if failure else None


def resolve_precision(requested: str, device: torch.device) -> str:
    """The precision the run will actually use for ``train.precision = requested`` on ``device``.

    bf16 where the device cannot do it -> fp32 with one warning line; fp16 off CUDA -> ConfigError.
    """
    if requested not in PRECISIONS:
        raise ConfigError(f"train.precision: expected {'|'.join(PRECISIONS)}, got {requested!r}")
    if requested == "fp16" and device.type != "cuda":
        raise ConfigError(f"train.precision: fp16 needs a CUDA device (running on {device.type}); use bf16 or fp32")
    if requested == "bf16":
        reason = bf16_unsupported_reason(device.type)
        if reason is not None:
            info(f"warning: train.precision bf16 requested but {reason}; training in fp32")
            return "fp32"
    return requested


def autocast_context(precision: str, device: torch.device) -> AbstractContextManager:
    """The autocast region for a resolved ``precision`` (a no-op context for fp32)."""
    if precision == "fp32":
        return nullcontext()
    return torch.autocast(device_type=device.type, dtype=_DTYPES[precision])


class LossScaler:
    """fp16 loss scaling, one ``torch.amp.GradScaler`` per optimizer; a plain backward/step otherwise.

    Use as ``scaler.backward(loss, opt)`` in place of ``loss.backward()``, ``scaler.unscale_(opt)``
    before gradient clipping (so the clip sees true gradients), ``scaler.step(opt)`` in place of
    ``opt.step()`` (it skips the step when the scaled gradients overflowed, then updates the scale).
    Separate scalers per optimizer: G's and D's losses differ in size, and an overflow in one must
    not shrink the other's scale.
    """

    def __init__(self, precision: str, device: torch.device):
        self.enabled = precision == "fp16"
        self.device_type = device.type
        self._scalers: dict[int, torch.amp.GradScaler] = {}

    def _scaler(self, opt: torch.optim.Optimizer) -> torch.amp.GradScaler:
        if id(opt) not in self._scalers:
            self._scalers[id(opt)] = torch.amp.GradScaler(self.device_type)
        return self._scalers[id(opt)]

    def backward(self, loss: torch.Tensor, opt: torch.optim.Optimizer) -> None:
        if self.enabled:
            self._scaler(opt).scale(loss).backward()
        else:
            loss.backward()

    def unscale_(self, opt: torch.optim.Optimizer) -> None:
        if self.enabled:
            self._scaler(opt).unscale_(opt)

    def step(self, opt: torch.optim.Optimizer) -> None:
        if self.enabled:
            scaler = self._scaler(opt)
            scaler.step(opt)
            scaler.update()
        else:
            opt.step()

    def state_dict(self, optimizers: dict[str, torch.optim.Optimizer]) -> dict:
        """The scales by optimizer name (JSON-serialisable, for the checkpoint's state.json); {} unless fp16."""
        return {name: self._scalers[id(o)].state_dict() for name, o in optimizers.items() if id(o) in self._scalers}

    def load_state_dict(self, state: dict, optimizers: dict[str, torch.optim.Optimizer]) -> None:
        """Restore what :meth:`state_dict` gave, so a resumed fp16 run keeps its loss scales."""
        if not self.enabled:
            return
        for name, s in (state or {}).items():
            if name in optimizers:
                self._scaler(optimizers[name]).load_state_dict(s)
