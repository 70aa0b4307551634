"""SeqGAN's CNN discriminator (Yu et al. 2017), with dense per-prefix scores.

Architecture (SeqGAN defaults): embedding 64 -> one Conv1d per filter width
(widths 1..10, 15, 20 with 100/200/.../160 filters, 1720 in all) -> ReLU -> max-over-time pooling ->
highway -> dropout 0.25 (keep 0.75) -> Linear(1720, 1).

Differences from the reference TF code, and why:

* Convolutions are *causal* (left-padded with ``width - 1`` zero vectors) instead of VALID. This lets
  sequences shorter than a filter width work, and makes the pooled features of every prefix available
  in one pass: the conv output at position ``t`` depends only on ``x[:, :t+1]``, so a cumulative max
  over time (``torch.cummax``) gives each prefix's max-pooled features. ``forward(x)`` therefore equals
  ``forward(x, per_step=True)[:, -1]`` (up to float rounding).
* Padding (``pad_id``) positions get a zero embedding (like the causal zero padding) and are excluded
  from pooling, so right-padding never changes a score and left-padding a prompt is harmless.

Speed (CPU, 1 thread, V=5000, batch 64 x 20 tokens, default config): forward+backward ~80 ms; one
epoch over 20k sequences with Adam ~37 s; ``per_step=True`` costs ~5x more (the highway then runs on
B*T rows). bf16 autocast (``torch.autocast("cpu", dtype=torch.bfloat16)``, the caller's choice) gives
~1.5x on the plain forward+backward and ~2.7x with ``per_step``. One ``conv1d`` per width (all filters
of a width in one call) was the fastest fp32 layout measured; a single GEMM over all taps followed by
shift-adds (~8x slower with autograd) and unfold+matmul (~1.5x slower) lost with 64 input channels.
Pooling happens in the conv layout before ReLU (relu and max commute), which avoids copying the big
(B, C, L) activations.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from llmgan import interrupt
from llmgan.errors import ConfigError

from .base import Discriminator, Highway, check_dropout, check_positive, masked_max_pool

SEQGAN_FILTER_SIZES: tuple[int, ...] = (1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 15, 20)
SEQGAN_NUM_FILTERS: tuple[int, ...] = (100, 200, 200, 200, 200, 100, 100, 100, 100, 100, 160, 160)


def check_filters(filter_sizes: Sequence[int], num_filters: Sequence[int]) -> None:
    """Raise :class:`ConfigError` for empty/mismatched/non-positive filter configs."""
    if len(filter_sizes) == 0:
        raise ConfigError("filter_sizes must not be empty")
    if len(filter_sizes) != len(num_filters):
        raise ConfigError(
            f"num_filters must have one entry per filter size ({len(filter_sizes)}), got {len(num_filters)}"
        )
    for k in filter_sizes:
        check_positive("filter_sizes[i]", k)
    for n in num_filters:
        check_positive("num_filters[i]", n)


def _full_window_pool(pre: Tensor, k: int, valid: Tensor | None, per_step: bool) -> Tensor:
    """Full-window pooling of causal conv outputs pre (N, C, L): positions t < k-1 (windows hanging
    off the start) count only for prefixes/rows shorter than k."""
    L = pre.size(-1)
    if valid is not None:
        pre = pre.masked_fill(~valid.unsqueeze(1), float("-inf"))
    if L < k:
        return F.relu(pre.cummax(-1).values if per_step else pre.max(-1).values)
    if per_step:
        return F.relu(torch.cat([pre[..., : k - 1].cummax(-1).values, pre[..., k - 1 :].cummax(-1).values], -1))
    n_real = valid.sum(1) if valid is not None else torch.full((pre.size(0),), L, device=pre.device)
    full = pre[..., k - 1 :].max(-1).values
    early = pre[..., : k - 1].max(-1).values if k > 1 else full
    return F.relu(torch.where((n_real < k)[:, None], early, full))


class _WindowLinearMax(torch.autograd.Function):
    """Max over windows of a linear map: cols (N, W, K), weight (n, K), bias (n,) -> (N, n), i.e. one
    conv filter bank in im2col form followed by max-over-time pooling.

    Why a custom backward: max pooling passes each filter's gradient to ONE window per row, so the
    gradient of the (N, W, n) pre-activations is almost all zeros. Autograd would still build it densely
    and run two GEMMs over it (for the weights and the input); here the winning windows are gathered
    (weights) and scattered into (input): N x n x K work instead of N x W x n x K. On RelGAN's D
    (4096 rows of one channel, widths 2-5 x 300) the bank's forward + backward is ~1.6x faster.
    """

    @staticmethod
    def forward(ctx, cols: Tensor, weight: Tensor, bias: Tensor) -> Tensor:
        n_rows, n_win, k = cols.shape
        n = weight.size(0)
        wt = weight.t()
        out_dtype = (cols[:1, :1].reshape(-1, k) @ wt).dtype  # the GEMM's dtype (bf16 under autocast)
        out = cols.new_empty(n_rows, n, dtype=out_dtype)
        idx = torch.empty(n_rows, n, dtype=torch.long, device=cols.device)
        # Row chunks whose (rows, W, n) pre-activations (~4 MB) stay in cache between the GEMM that
        # writes them and the max that reads them: ~1.8x faster than one pass over all rows here.
        step = max(1, (1 << 20) // max(1, n_win * n))
        for start in range(0, n_rows, step):
            rows = slice(start, start + step)
            y = (cols[rows].reshape(-1, k) @ wt).view(-1, n_win, n)  # (rows, W, n), no bias yet
            torch.max(y, 1, out=(out[rows], idx[rows]))  # the winning window of every filter
        ctx.save_for_backward(cols, weight, idx)
        # the bias is the same for every window, so it is added after the max (the same value exactly)
        return out.add_(bias)

    @staticmethod
    def backward(ctx, grad: Tensor) -> tuple[Tensor | None, Tensor | None, Tensor | None]:
        cols, weight, idx = ctx.saved_tensors
        grad = grad.to(weight.dtype)  # under autocast cols/grad may be bf16: accumulate in the weights' dtype
        n_rows, _, k = cols.shape
        sel = idx.unsqueeze(-1).expand(n_rows, weight.size(0), k)  # (N, n, K)
        grad_cols = grad_weight = grad_bias = None
        if ctx.needs_input_grad[0]:
            src = (grad.unsqueeze(-1) * weight.unsqueeze(0)).to(cols.dtype)  # (N, n, K)
            grad_cols = torch.zeros_like(cols).scatter_add_(1, sel, src)
        if ctx.needs_input_grad[1]:
            grad_weight = torch.einsum("rc,rck->ck", grad, cols.gather(1, sel).to(weight.dtype))
        if ctx.needs_input_grad[2]:
            grad_bias = grad.sum(0)
        return grad_cols, grad_weight, grad_bias


class CausalConvBank(nn.Module):
    """Parallel causal Conv1d's of several widths with ReLU + max-over-time pooling.

    (N, L, Cin) -> (N, C) pooled features, or (N, L, C) per-prefix pooled features with ``per_step``,
    C = sum(num_filters). The conv output at position ``t`` sees only inputs ``t-k+1 .. t`` (zeros
    before the start), so a cumulative max gives every prefix's pooled features. Each width is pooled
    in the conv layout before concatenating, so the big (N, C, L) activation is never copied.
    """

    def __init__(self, in_dim: int, filter_sizes: Sequence[int], num_filters: Sequence[int]) -> None:
        super().__init__()
        self.filter_sizes = tuple(int(k) for k in filter_sizes)
        self.convs = nn.ModuleList(nn.Conv1d(in_dim, n, k) for k, n in zip(filter_sizes, num_filters))
        self.out_dim = int(sum(num_filters))
        # Implementation choice only (same parameters and results): see _unfold_convs.
        self.use_unfold = in_dim <= 4

    def forward(
        self, h: Tensor, valid: Tensor | None = None, per_step: bool = False, full_windows: bool = False
    ) -> Tensor:
        """h: (N, L, Cin); valid: (N, L) bool or None -> (N, C), or (N, L, C) with per_step; >= 0.

        ``full_windows`` (rows start at position 0, no left padding): a width-k filter pools only
        windows lying wholly inside the sequence (SeqGAN's VALID convolution) once the sequence has
        k tokens; shorter sequences (prefixes) pool the causal windows that end on their tokens.
        The plain forward then computes L-k+1 windows per width instead of L, about half the FLOPs of
        the SeqGAN CNN on length-20 data, and per_step keeps the same semantics for every prefix.
        """
        if full_windows and not self.use_unfold:
            return self._forward_full_windows(h, valid, per_step)
        if full_windows and valid is None and not per_step and h.size(1) >= max(self.filter_sizes):
            return self._unfold_whole_windows(h)
        if self.use_unfold:
            pre = self._unfold_convs(h)
            if full_windows:  # same semantics as _forward_full_windows, from the causal outputs
                pooled = [_full_window_pool(p, k, valid, per_step) for p, k in zip(pre, self.filter_sizes)]
                out = torch.cat(pooled, dim=1)
                return out.transpose(1, 2) if per_step else out
        else:
            ht = h.transpose(1, 2)  # conv1d wants (N, Cin, L)
            pre = [conv(F.pad(ht, (k - 1, 0))) for k, conv in zip(self.filter_sizes, self.convs)]
        pooled = [masked_max_pool(p, valid, per_step) for p in pre]
        out = torch.cat(pooled, dim=1)  # (N, C) or (N, C, L)
        return out.transpose(1, 2) if per_step else out

    def _forward_full_windows(self, h: Tensor, valid: Tensor | None, per_step: bool) -> Tensor:
        ht = h.transpose(1, 2)  # (N, Cin, L)
        N, _, L = ht.shape
        n_real = valid.sum(1) if valid is not None else torch.full((N,), L, device=h.device)
        pooled = []
        for k, conv in zip(self.filter_sizes, self.convs):
            if per_step:
                pooled.append(_full_window_pool(conv(F.pad(ht, (k - 1, 0))), k, valid, True))
                continue
            if L < k:  # every row is shorter than the filter: causal windows
                pooled.append(masked_max_pool(conv(F.pad(ht, (k - 1, 0))), valid, False))
                continue
            pre = conv(ht)  # (N, C, L-k+1): window j covers positions j .. j+k-1
            vmask = valid[:, k - 1 :] if valid is not None else None
            out = masked_max_pool(pre, vmask, False)
            short = n_real < k
            if bool(short.any()):  # rows with fewer than k tokens: their causal windows instead
                idx = short.nonzero().squeeze(1)
                sub = conv(F.pad(ht.index_select(0, idx)[..., :k], (k - 1, 0)))[..., :k]  # (S, C, k)
                smask = valid.index_select(0, idx)[:, :k] if valid is not None else None
                out = out.index_copy(0, idx, masked_max_pool(sub, smask, False))
            pooled.append(out)
        out = torch.cat(pooled, dim=1)
        return out.transpose(1, 2) if per_step else out

    def _unfold_whole_windows(self, h: Tensor) -> Tensor:
        """Pooled features over whole windows as im2col + GEMM, pooled in the GEMM's own layout.

        h: (N, L, Cin), L >= every width -> (N, C). The few-channel path (RelGAN: 4096 rows of one
        channel each) spent more time copying transposed (N, C, L) outputs and pooling over their
        strided last axis than in the GEMMs; here each width is one GEMM + max over its windows with
        a sparse backward (:class:`_WindowLinearMax`), and the VALID windows skip the k-1 windows
        hanging off the start.
        """
        n, length, cin = h.shape
        pooled = []
        for k, conv in zip(self.filter_sizes, self.convs):
            cols = h.unfold(1, k, 1).reshape(n, length - k + 1, cin * k)  # (N, L-k+1, Cin*k)
            w = conv.weight.reshape(conv.out_channels, cin * k)  # (n_k, Cin*k), same (Cin, k) order
            pooled.append(F.relu(_WindowLinearMax.apply(cols, w, conv.bias)))
        return torch.cat(pooled, dim=1)

    def _unfold_convs(self, h: Tensor) -> list[Tensor]:
        """Same convs as im2col + GEMM: list of (N, n_k, L) (transposed views).

        With very few input channels (RelGAN: 1 per representation) mkldnn's conv, and above all its
        backward, is slower than unfold + matmul (conv part ~1.5x faster on RelGAN default shapes, whole
        RelGAN forward+backward ~5-10%; for the SeqGAN CNN, 64 input channels, conv1d is faster).
        """
        n, length, cin = h.shape
        out = []
        for k, conv in zip(self.filter_sizes, self.convs):
            cols = F.pad(h, (0, 0, k - 1, 0)).unfold(1, k, 1)  # (N, L, Cin, k)
            w = conv.weight.reshape(conv.out_channels, cin * k)  # (n_k, Cin*k), same (Cin, k) order
            y = torch.addmm(conv.bias, cols.reshape(n * length, cin * k), w.t())  # (N*L, n_k)
            out.append(y.view(n, length, -1).transpose(1, 2))
        return out


class CNNDiscriminator(Discriminator):
    """SeqGAN CNN discriminator.

    Args:
        vocab_size: V.
        emb_dim: embedding size (64).
        filter_sizes / num_filters: conv widths and filter counts (SeqGAN defaults).
        dropout: dropout before the output layer (0.25, i.e. keep 0.75).
        pad_id: optional padding id (masked out of pooling).
    """

    def __init__(
        self,
        vocab_size: int,
        emb_dim: int = 64,
        filter_sizes: Sequence[int] = SEQGAN_FILTER_SIZES,
        num_filters: Sequence[int] = SEQGAN_NUM_FILTERS,
        dropout: float = 0.25,
        pad_id: int | None = None,
    ) -> None:
        super().__init__(vocab_size, emb_dim, pad_id)
        check_filters(filter_sizes, num_filters)
        check_dropout(dropout)
        self.convs = CausalConvBank(emb_dim, filter_sizes, num_filters)
        self.feature_dim = self.convs.out_dim
        self.highway = Highway(self.feature_dim)
        self.dropout = nn.Dropout(dropout)
        self.out = nn.Linear(self.feature_dim, 1)

    def _features(self, x: Tensor, prompt: Tensor | None, per_step: bool) -> tuple[Tensor, int]:
        """Highway features: (B, F), or (B, P+T, F) with per_step; also returns the prompt length P."""
        emb, valid, p_len = self.embed_inputs(x, prompt)  # (B, L, E)
        if valid is not None:
            # Pads look like the causal zero padding, so left-padded prompts do not shift anything.
            emb = emb * valid.unsqueeze(-1).to(emb.dtype)
        # Without a prompt, rows start at position 0: pool whole windows (SeqGAN's VALID convolutions).
        full = p_len == 0 and (valid is None or bool(valid[:, 0].all()))
        pooled = self.convs(emb, valid, per_step, full_windows=full)  # (B, C) or (B, L, C)
        return self.highway(pooled), p_len

    def forward(self, x: Tensor, prompt: Tensor | None = None, *, per_step: bool = False) -> Tensor:
        """x: (B, T) ids or (B, T, V) soft -> logits (B,), or (B, T) per prefix of x with per_step."""
        feats, p_len = self._features(x, prompt, per_step)
        logits = self.out(self.dropout(feats)).squeeze(-1)
        return logits[:, p_len:] if per_step else logits

    def features(self, x: Tensor, prompt: Tensor | None = None) -> Tensor:
        """Highway output before dropout: (B, sum(num_filters)) = (B, 1720) by default."""
        return self._features(x, prompt, per_step=False)[0]


# Vocabulary tables bigger than this fall back to the convolution scorer (V = 5000 with SeqGAN's filters: 250 MB).
TABLE_BYTES_LIMIT = 1 << 30


def window_tables(d: CNNDiscriminator, fold_bias: bool = True) -> list[Tensor]:
    """Per filter width w: a (V*w, n_w) fp32 table whose row ``v*w + j`` is token v's contribution
    ``conv.weight[:, :, j] @ embedding[v]`` to a window in which v sits at tap j (bias folded into tap 0).

    Why: the convolution of an embedded sequence is linear in the one-hot tokens, so a window's
    pre-activation is the sum of w table rows, one per tap. With a frozen D (a rollout step) the tables
    cost one GEMM (V x E x sum(w*n) MACs: ~4 GMAC for SeqGAN's D, V = 5000) and every window after that
    is a fused gather-and-sum (``F.embedding_bag``) instead of a w x E x n_w dot product.
    """
    emb = d.embedding.weight.float()  # (V, E)
    V, E = emb.shape
    tables = []
    with torch.autocast(emb.device.type, enabled=False):
        for w, conv in zip(d.convs.filter_sizes, d.convs.convs):
            n = conv.out_channels
            taps = conv.weight.float().permute(1, 2, 0).reshape(E, w * n)  # (E, w*n): [e, j*n + c] = W[c, e, j]
            tab = (emb @ taps).view(V, w, n)  # one GEMM, already in the (token, tap) row order
            if fold_bias:
                tab[:, 0] += conv.bias.float()
            tables.append(tab.view(V * w, n))
    return tables


def _window_sums(tokens: Tensor, w: int, table: Tensor) -> Tensor:
    """Pre-activations of every whole width-w window of tokens (N, L), L >= w: (N, L-w+1, n_w) fp32."""
    idx = tokens.unfold(1, w, 1) * w + torch.arange(w, device=tokens.device)  # (N, L-w+1, w): rows v*w + j
    n, c, _ = idx.shape
    return F.embedding_bag(idx.reshape(n * c, w), table, mode="sum").view(n, c, -1)


@torch.no_grad()
def score_completions(
    d: CNNDiscriminator, tokens: Tensor, completions: Tensor, method: str = "auto"
) -> Tensor | None:
    """Logits of Monte-Carlo rollout completions, reusing the windows they share with their prefix.

    tokens: (B, T) the sampled sequences; completions: (T-1, B, k, T), where ``completions[t-1, b]``
    keeps ``tokens[b, :t]`` and continues it (``llmgan.rewards.rollout_completions``).
    Returns logits (T-1, B, k), equal to ``d(completions.reshape(-1, T))`` in eval mode (up to float
    rounding), or None when this shortcut does not apply (padding present, training mode, or a
    sequence shorter than a filter).

    Why: a width-w window that ends before position t lies inside the shared prefix, so its
    activation is the same for all k rollouts and equals the original sequence's; only windows that
    reach into the continuation are computed per rollout. ``method`` says how those windows are
    computed: "table" sums rows of :func:`window_tables` (about 4x less time than convolving on
    SeqGAN's setup), "conv" convolves, "auto" takes "table" unless the tables would exceed
    ``TABLE_BYTES_LIMIT``. The highway and output layer then run on the pooled features under the
    caller's autocast; the window sums stay fp32.
    """
    Tm1, B, k, T = completions.shape
    if d.training or d.convs.use_unfold or T < max(d.convs.filter_sizes):
        return None
    if d.pad_id is not None and bool((completions == d.pad_id).any()):
        return None
    if method not in ("auto", "table", "conv"):
        raise ValueError(f"method must be 'auto', 'table' or 'conv', got {method!r}")
    sizes = d.convs.filter_sizes
    if method == "auto":
        table_bytes = 4 * d.vocab_size * sum(w * c.out_channels for w, c in zip(sizes, d.convs.convs))
        method = "table" if table_bytes <= TABLE_BYTES_LIMIT else "conv"
    comp = completions.reshape(Tm1, B * k, T)
    # windows(x, i): pre-activations of every whole width-w window of x, with the windows along `axis`
    # (each method's contiguous layout: reducing along it is what keeps pooling cheap)
    if method == "table":
        tables = window_tables(d)

        def windows(x: Tensor, i: int) -> Tensor:  # (N, L) ids -> (N, L-w+1, n_w)
            return _window_sums(x, sizes[i], tables[i])

        axis, orig = 1, tokens
    else:
        convs = d.convs.convs

        def windows(x: Tensor, i: int) -> Tensor:  # (N, E, L) embeddings -> (N, n_w, L-w+1)
            return convs[i](x)

        axis, orig = -1, d.embed(tokens).transpose(1, 2)  # (B, E, T)
        comp = d.embed(comp.reshape(-1, T)).transpose(1, 2).reshape(Tm1, B * k, -1, T)  # (T-1, B*k, E, T)
    # running max of the original sequence's whole windows: entry j = max over windows ending w-1 .. w-1+j
    prefix_max = [windows(orig, i).cummax(axis).values for i in range(len(sizes))]
    pooled = prefix_max[0].new_empty(Tm1, B * k, d.feature_dim)  # (T-1, B*k, F), filled in place
    for t in range(1, T):  # prefix length t: group t-1
        interrupt.point()  # SIGTERM during a SeqGAN G step: scoring 19 x 1,024 rollouts takes seconds
        x = comp[t - 1]  # (B*k, T) ids or (B*k, E, T) embeddings
        col = 0
        for i, w in enumerate(sizes):
            first = max(t, w - 1)  # first window end reaching into the continuation
            cont = windows(x[..., first - w + 1 :], i).amax(axis)  # (B*k, n_w): windows ending first .. T-1
            n_w = cont.size(1)
            if t - 1 >= w - 1:  # whole windows inside the prefix, shared by the k rollouts
                shared = prefix_max[i].select(axis, t - w)  # (B, n_w)
                cont = torch.maximum(cont.view(B, k, n_w), shared.unsqueeze(1)).view(B * k, n_w)
            pooled[t - 1, :, col : col + n_w] = cont.relu_()
            col += n_w
    # the highway on every completion's features is the bulk of the arithmetic (SeqGAN's D: two
    # 1,720 x 1,720 layers over 19 x 1,024 rows, seconds of CPU): one prefix group at a time, each
    # behind an interruption point, so a stop need not wait for all of it
    logits = pooled.new_empty(Tm1, B * k)
    for g in range(Tm1):
        interrupt.point()
        logits[g] = d.out(d.dropout(d.highway(pooled[g]))).squeeze(-1)
    return logits.view(Tm1, B, k)


class PrefixFeatureStepper:
    """D's highway features of prefixes that grow one token at a time (LeakGAN's leaked features while
    it samples), without re-convolving the prefix at every step.

    A width-w filter of the causal CNN pools, for a prefix of length L, its whole windows once L >= w
    and its causal (zero-padded) windows before that. Both running maxima ride along in a carry
    (B, 2F) tensor: each step sums the table rows (:func:`window_tables`, rebuilt whenever D's weights
    change) of the one new window per width, and only the highway does real arithmetic per step.
    ``step(prefix, carry)`` equals ``d.features(prefix)`` in eval mode, up to float rounding.

    Only for prefixes without padding: ``applies`` is False for a D that masks a pad id (pads appear
    after EOS), and callers then recompute features from the whole prefix.
    """

    def __init__(self, d: CNNDiscriminator) -> None:
        self.d = d
        self._key: tuple | None = None
        self._tables: list[Tensor] = []

    @property
    def applies(self) -> bool:
        return self.d.pad_id is None and not self.d.convs.use_unfold

    def init_carry(self, batch: int, device: torch.device) -> Tensor:
        """(B, 2F) running maxima of whole and causal windows, -inf before any token."""
        return torch.full((batch, 2 * self.d.feature_dim), float("-inf"), device=device)

    def _current_tables(self) -> list[Tensor]:
        key = tuple((p.data_ptr(), p._version) for p in self.d.parameters())
        if key != self._key:  # D was updated (or moved): rebuild, bias kept out of the rows
            with torch.no_grad():  # bias added per window: a causal window may lack its tap-0 token
                self._tables, self._key = window_tables(self.d, fold_bias=False), key
        return self._tables

    @torch.no_grad()
    def step(self, prefix: Tensor, carry: Tensor) -> tuple[Tensor, Tensor]:
        """prefix (B, L >= 1) ids whose last column is new; carry (B, 2F) -> features (B, F), new carry."""
        d, L = self.d, prefix.size(1)
        Fd = d.feature_dim
        whole, causal = carry[:, :Fd].clone(), carry[:, Fd:].clone()
        pooled, col = [], 0
        for w, conv, tab in zip(d.convs.filter_sizes, d.convs.convs, self._current_tables()):
            n = conv.out_channels
            m = min(w, L)  # taps of the new window that hold tokens (the rest are the causal zero padding)
            idx = prefix[:, L - m :] * w + torch.arange(w - m, w, device=prefix.device)  # (B, m)
            pre = F.embedding_bag(idx, tab, mode="sum") + conv.bias.float()  # (B, n)
            target = whole if L >= w else causal
            target[:, col : col + n] = torch.maximum(target[:, col : col + n], pre)
            pooled.append(target[:, col : col + n])
            col += n
        feats = d.highway(F.relu(torch.cat(pooled, dim=1)))  # (B, F)
        return feats, torch.cat([whole, causal], dim=1)
