"""How far SeqGAN's CNN discriminator's training step is from its arithmetic floor on this CPU.

    python benchmarks/cnn_d_floor.py [--threads 1] [--repeats 15] [--write]

One D minibatch of SeqGAN's schedule (64 real + 64 fake sequences of 20 tokens, V = 5000, the paper's
filters and highway): forward, binary cross-entropy, backward, fused Adam. Compared against

* the floor: D's forward FLOPs per sequence (whole-window convolutions + highway + output) x 3 for
  forward + backward, at the GEMM rate this CPU reaches on the highway's and a convolution's shapes;
* the same step with the convolutions as im2col + GEMM and a dense custom backward (the one layout
  choice left after llmgan.models.discriminators.cnn's own measurements);
* the same step with mkldnn off (torch's native convolution).

``--write`` writes the ``cnn-d-floor`` section of docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import os
import sys
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "src"))

import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402

from llmgan.models.discriminators.cnn import CausalConvBank, CNNDiscriminator  # noqa: E402

B, T, V = 128, 20, 5000


class _Im2colDense(torch.autograd.Function):
    """Max over windows of cols (N, W, K) @ weight.T, backward as two dense GEMMs (autograd's own way)."""

    @staticmethod
    def forward(ctx, cols, weight, bias):
        n_rows, n_win, k = cols.shape
        y = (cols.reshape(-1, k) @ weight.t()).view(n_rows, n_win, -1)  # (N, W, n)
        out, idx = y.max(1)
        ctx.save_for_backward(cols, weight, idx)
        return out.add_(bias)

    @staticmethod
    def backward(ctx, grad):
        cols, weight, idx = ctx.saved_tensors
        n_rows, n_win, k = cols.shape
        gy = grad.new_zeros(n_rows, n_win, weight.size(0)).scatter_(1, idx.unsqueeze(1), grad.unsqueeze(1))
        gy = gy.view(n_rows * n_win, -1)  # (N*W, n): one non-zero per (row, filter)
        return (gy @ weight).view(n_rows, n_win, k), gy.t() @ cols.reshape(-1, k), grad.sum(0)


def _im2col_forward(bank: CausalConvBank, h, valid=None, per_step=False, full_windows=False):
    n, length, cin = h.shape
    pooled = []
    for k, conv in zip(bank.filter_sizes, bank.convs):
        cols = h.unfold(1, k, 1).reshape(n, length - k + 1, cin * k)
        w = conv.weight.reshape(conv.out_channels, cin * k)
        pooled.append(F.relu(_Im2colDense.apply(cols, w, conv.bias)))
    return torch.cat(pooled, dim=1)


def _step_time(d: CNNDiscriminator, repeats: int) -> float:
    opt = torch.optim.Adam(d.parameters(), 1e-4, fused=True)
    x = torch.randint(0, V, (B, T), generator=torch.Generator().manual_seed(0))
    y = torch.cat([torch.ones(B // 2), torch.zeros(B // 2)])

    def step():
        loss = F.binary_cross_entropy_with_logits(d(x), y)
        opt.zero_grad()
        loss.backward()
        opt.step()

    for _ in range(3):
        step()
    t = time.perf_counter()
    for _ in range(repeats):
        step()
    return (time.perf_counter() - t) / repeats


def _gemm_rate(m: int, k: int, n: int, repeats: int = 30) -> float:
    a, b = torch.randn(m, k), torch.randn(k, n)
    for _ in range(3):
        a @ b
    t = time.perf_counter()
    for _ in range(repeats):
        a @ b
    return 2 * m * k * n * repeats / (time.perf_counter() - t)


def forward_flops(d: CNNDiscriminator) -> float:
    """Forward FLOPs per sequence of length T: whole windows of each width, then highway and output."""
    e = d.embedding.weight.size(1)
    conv = sum(2 * c.out_channels * e * k * (T - k + 1) for k, c in zip(d.convs.filter_sizes, d.convs.convs))
    f = d.feature_dim
    return conv + 2 * 2 * f * f + 2 * f


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--repeats", type=int, default=15)
    p.add_argument("--write", action="store_true")
    a = p.parse_args()
    torch.set_num_threads(a.threads)
    torch.manual_seed(0)
    d = CNNDiscriminator(V)
    flops = 3 * B * forward_flops(d)
    rate = min(_gemm_rate(B, d.feature_dim, d.feature_dim), _gemm_rate(B * 16, 64 * 5, 200))
    rows = [("llmgan (one conv1d per width, mkldnn)", _step_time(d, a.repeats))]
    plain = CausalConvBank.forward
    CausalConvBank.forward = _im2col_forward
    try:
        rows.append(("im2col + GEMM, dense custom backward", _step_time(d, a.repeats)))
    finally:
        CausalConvBank.forward = plain
    torch.backends.mkldnn.enabled = False
    try:
        rows.append(("mkldnn off (native convolution)", _step_time(d, a.repeats)))
    finally:
        torch.backends.mkldnn.enabled = True
    floor = flops / rate
    lines = [f"| {name} | {t * 1e3:.0f} ms | {t / floor:.2f}x |" for name, t in rows]
    from _doc import command, machine

    body = "\n".join([
        "## SeqGAN's CNN D: one training minibatch against its arithmetic floor", "",
        f"Command: `{command()}`; machine: {machine()}. One minibatch of {B // 2} real + {B // 2} fake "
        f"sequences of {T} tokens (V = {V}), forward + BCE + backward + fused Adam, mean of {a.repeats}. "
        f"Floor: {flops / 1e9:.1f} GFLOP (3 x {forward_flops(d) / 1e6:.1f} MFLOP forward per sequence) at "
        f"{rate / 1e9:.0f} GFLOP/s, the slower of this CPU's GEMM rates on the highway's and a convolution's "
        f"shapes: {floor * 1e3:.0f} ms.", "",
        "| layout | step | / floor |", "|---|---|---|", *lines])
    print(body)
    if a.write:
        from _doc import update_section

        update_section("cnn-d-floor", body)
    return 0


if __name__ == "__main__":
    sys.exit(main())
