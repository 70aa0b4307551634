"""Out of memory while sampling a large n (issue 15): token steps run in slices of rows that fit, with
bitwise the same samples as one full-width step at the same seed; when not even one row fits, one line.

Memory is exhausted on purpose by a patched step that fails like the allocator does (the CPU allocator's
"not enough memory" RuntimeError, CUDA's torch.OutOfMemoryError) above a number of rows, and by a
patched free-memory figure for the up-front estimate."""

from __future__ import annotations

import random

import pytest
import torch

from llmgan.cli import main
from llmgan.config import config_from_dict
from llmgan.data import build_tokenizer
from llmgan.errors import ResourceError
from llmgan.models import memory
from llmgan.models.factory import make_generator
from llmgan.training.engine import Trainer

CPU_OOM = "[enforce fail at alloc_cpu.cpp:117] data. DefaultCPUAllocator: not enough memory: you tried to allocate"


def tiny_generator(name: str):
    tok = build_tokenizer("word", [" ".join(f"w{i}" for i in range(40))])
    kwargs = {"lstm": {"embed_dim": 8, "hidden_dim": 8}, "gpt": {"d_model": 16, "n_layers": 2, "n_heads": 2}}[name]
    from llmgan.config import ModelConfig

    torch.manual_seed(0)
    return make_generator(ModelConfig(name=name, kwargs=kwargs), tok).eval()


class AllocatorLimit:
    """Makes every token step wider than ``rows`` rows fail as an allocation would; records the widths.

    ``at="step"``: the model's forward step fails (before any random number is drawn); ``at="draw"``:
    the sampler's second block of rows fails, after the first block drew its random numbers (so a
    retry must rewind the random stream)."""

    def __init__(self, g, rows: int, error: type = RuntimeError, at: str = "step", monkeypatch=None):
        self.g, self.rows, self.error, self.at, self.widths, self.ran = g, rows, error, at, [], []
        self.real = g.step_hidden
        self.width, self.draws = 0, 0
        if at == "draw":
            from llmgan.models import sampling

            real_draw = sampling._draw_rows

            def draw(logits, block, generator):
                self.draws += 1
                if self.width > self.rows and self.draws > 1:
                    self.fail()
                return real_draw(logits, block, generator)

            monkeypatch.setattr(sampling, "_draw_rows", draw)

    def fail(self):
        msg = CPU_OOM if self.error is RuntimeError else "CUDA out of memory. Tried to allocate 2.00 GiB"
        raise self.error(f"{msg} {self.width * 10**9} bytes.")

    def __call__(self, token, state):
        self.width, self.draws = token.size(0), 0
        self.widths.append(self.width)
        if self.at == "step" and self.width > self.rows:
            self.fail()
        self.ran.append(self.width)
        return self.real(token, state)


OOM_ERRORS = [RuntimeError] + ([torch.OutOfMemoryError] if hasattr(torch, "OutOfMemoryError") else [])


@pytest.mark.parametrize("at", ["step", "draw"])
@pytest.mark.parametrize("error", OOM_ERRORS, ids=lambda e: e.__name__)
@pytest.mark.parametrize("name", ["lstm", "gpt"])
@pytest.mark.parametrize("options", [{}, {"top_k": 5}, {"top_p": 0.8, "temperature": 0.7}], ids=["plain", "top_k",
                                                                                                   "top_p"])
def test_out_of_memory_in_a_step_is_retried_in_slices_with_bitwise_the_same_samples(name, options, error, at,
                                                                                    monkeypatch):
    g = tiny_generator(name)
    n, max_len = 700, 8
    expected = g.sample(n, max_len, generator=torch.Generator().manual_seed(3), **options)
    limit = AllocatorLimit(g, rows=300, error=error, at=at, monkeypatch=monkeypatch)
    monkeypatch.setattr(g, "step_hidden", limit)
    got = g.sample(n, max_len, generator=torch.Generator().manual_seed(3), **options)
    assert limit.widths[:2] == [n, 256], limit.widths  # it failed, then ran in 256-row slices
    assert max(w for w in limit.widths[1:]) == 256
    assert torch.equal(got.tokens, expected.tokens) and torch.equal(got.log_probs, expected.log_probs)
    assert torch.equal(got.lengths, expected.lengths)


def test_slices_narrower_than_a_block_draw_the_same_tokens(monkeypatch):
    """A model where not even 256 rows fit: slices of a few rows draw the same random numbers in the
    same order (same tokens at this seed); log-probabilities agree to float rounding."""
    g = tiny_generator("gpt")
    n, max_len = 45, 10
    expected = g.sample(n, max_len, generator=torch.Generator().manual_seed(3), top_p=0.9)
    limit = AllocatorLimit(g, rows=7)
    monkeypatch.setattr(g, "step_hidden", limit)
    got = g.sample(n, max_len, generator=torch.Generator().manual_seed(3), top_p=0.9)
    assert max(limit.ran) <= 7
    assert torch.equal(got.tokens, expected.tokens)
    torch.testing.assert_close(got.log_probs, expected.log_probs)


def test_the_up_front_estimate_slices_steps_to_the_free_memory(monkeypatch):
    """Little free memory: the steps are planned in slices from the model's per-row state, before any
    allocation fails; the samples are still bitwise those of full-width steps."""
    g = tiny_generator("gpt")
    n, max_len = 900, 6
    expected = g.sample(n, max_len, generator=torch.Generator().manual_seed(5))
    limit = AllocatorLimit(g, rows=10**9)  # never fails: only the estimate slices
    monkeypatch.setattr(g, "step_hidden", limit)
    monkeypatch.setattr(type(g), "SLICE_CHECK_BYTES", 0)
    per_row = memory.step_row_bytes(2000, 40, False)
    monkeypatch.setattr(memory, "free_memory_bytes", lambda device: int(600 * per_row / memory.STEP_MEMORY_SHARE))
    got = g.sample(n, max_len, generator=torch.Generator().manual_seed(5))
    # planned, never failed: whole 256-row blocks, fewer than all rows
    assert max(limit.widths) < n and all(w % 256 == 0 for w in limit.widths[::2]), limit.widths
    assert torch.equal(got.tokens, expected.tokens) and torch.equal(got.log_probs, expected.log_probs)


def test_when_not_even_one_row_fits_it_is_one_line_not_a_traceback(monkeypatch):
    g = tiny_generator("lstm")
    monkeypatch.setattr(g, "step_hidden", AllocatorLimit(g, rows=0))
    with pytest.raises(ResourceError, match=r"out of memory sampling 1000 sequences of up to 10 tokens.*fewer"):
        g.sample(1000, 10, generator=torch.Generator().manual_seed(0))


def test_an_allocation_outside_the_steps_is_one_line_too(monkeypatch):
    g = tiny_generator("lstm")

    def init_state(n, **kwargs):
        raise RuntimeError(f"{CPU_OOM} {n * 10**9} bytes.")

    monkeypatch.setattr(g, "init_state", init_state)
    with pytest.raises(ResourceError, match="out of memory sampling 10000000 sequences"):
        g.sample(10_000_000, 10)


def test_other_errors_in_a_step_are_not_mistaken_for_out_of_memory(monkeypatch):
    g = tiny_generator("lstm")

    def broken(token, state):
        raise RuntimeError("shape mismatch")

    monkeypatch.setattr(g, "step_hidden", broken)
    with pytest.raises(RuntimeError, match="shape mismatch"):
        g.sample(4, 5)


@pytest.fixture(scope="module")
def word_run(tmp_path_factory):
    d = tmp_path_factory.mktemp("oom")
    rng = random.Random(0)
    words = ["red", "big", "cat", "dog", "sees", "the"]
    (d / "train.txt").write_text("\n".join(" ".join(rng.choice(words) for _ in range(5)) for _ in range(100)) + "\n")
    cfg = {"name": "oom", "seed": 1, "data": {"train": str(d / "train.txt"), "tokenizer": "word", "max_len": 8},
           "generator": {"name": "lstm", "kwargs": {"embed_dim": 8, "hidden_dim": 8}},
           "train": {"epochs": 1, "batch_size": 32, "progress": False}, "eval": {"n_samples": 10, "batch_size": 10}}
    Trainer(config_from_dict(cfg), str(d / "run")).run()
    return str(d / "run")


def test_generate_cli_gives_the_same_lines_under_memory_pressure_and_one_line_when_nothing_fits(word_run, capsys,
                                                                                                 monkeypatch):
    from llmgan.models.generators.lstm import LSTMGenerator

    argv = ["generate", word_run, "--device", "cpu", "-n", "600", "--seed", "4"]
    assert main(argv) == 0
    expected = capsys.readouterr().out
    real = LSTMGenerator.step_hidden

    def limited(self, token, state, rows=300):
        if token.size(0) > rows:
            raise RuntimeError(f"{CPU_OOM} 4000000000 bytes.")
        return real(self, token, state)

    monkeypatch.setattr(LSTMGenerator, "step_hidden", limited)
    assert main(argv) == 0
    assert capsys.readouterr().out == expected
    monkeypatch.setattr(LSTMGenerator, "step_hidden", lambda self, token, state: limited(self, token, state, rows=0))
    assert main(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("llmgan: error: out of memory sampling 600 sequences"), err
