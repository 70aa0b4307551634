"""DistributedDataParallel under torchrun (2 gloo processes on CPU) against one process on the same
global batch: after k steps the weights are equal to float tolerance, for MLE and for one algorithm of
each family (policy gradient: MaliGAN; Gumbel-softmax: GSGAN). And a NaN on one rank stops every rank
with the one-line error, quickly, instead of leaving the others blocked in a collective."""

from __future__ import annotations

import os
import random
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from llmgan.tensor_files import load_tensors

WORKER = str(Path(__file__).parent / "helpers" / "ddp_worker.py")
SRC = str(Path(__file__).resolve().parents[1] / "src")


def corpus(path: Path, n: int = 64) -> str:
    """Lines of 2..8 words: shards of a batch hold different token counts (the normalisation matters)."""
    rng = random.Random(0)
    words = [f"w{i}" for i in range(12)]
    path.write_text("\n".join(" ".join(rng.choice(words) for _ in range(rng.randint(2, 8))) for _ in range(n)) + "\n")
    return str(path)


def env() -> dict:
    return {**os.environ, "OMP_NUM_THREADS": "1", "TORCH_NUM_THREADS": "1",
            "PYTHONPATH": SRC + os.pathsep + os.environ.get("PYTHONPATH", "")}


def torchrun(args: list[str], port: int, timeout: float = 240) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2", f"--master_port={port}", WORKER, *args],
        capture_output=True, text=True, timeout=timeout, env=env(),
    )


def single(args: list[str]) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, WORKER, *args], capture_output=True, text=True, timeout=240, env=env())


@pytest.mark.parametrize("algo,port", [("mle", 29531), ("maligan", 29533), ("gsgan", 29535)])
def test_ddp_equals_one_process_on_the_global_batch(tmp_path, algo, port):
    data = corpus(tmp_path / "train.txt")
    proc = torchrun(["ddp", algo, data, str(tmp_path)], port)
    assert proc.returncode == 0, proc.stderr[-3000:]
    proc = single(["single", algo, data, str(tmp_path)])
    assert proc.returncode == 0, proc.stderr[-3000:]
    ddp, ref = load_tensors(str(tmp_path / "ddp.safetensors")), load_tensors(str(tmp_path / "single.safetensors"))
    assert ddp.keys() == ref.keys()
    for k in ref:
        torch.testing.assert_close(ddp[k], ref[k], rtol=1e-4, atol=1e-5, msg=f"{algo}: {k} differs")
    # the runs did train: the weights moved well past the tolerance from any fixed point
    moved = max(float((ref[k] - ddp[k].mean()).abs().max()) for k in ref if ref[k].is_floating_point())
    assert moved > 1e-3


def test_fsdp_hf_generator_equals_one_process_and_checkpoints_unsharded(tmp_path):
    """train.fsdp: a tiny Llama (no dropout) sharded over 2 gloo ranks by FSDP2 trains to the weights of
    one unsharded process on the global batch; its checkpoint holds full tensors (loads on one process,
    as `llmgan generate` does) and a resumed sharded run reads it back into its shards."""
    from llmgan.models.hf import make_tiny_hf_model
    from llmgan.run import load_run

    data = corpus(tmp_path / "train.txt")
    lines = [ln for ln in open(data).read().splitlines() if ln]
    make_tiny_hf_model(str(tmp_path / "hf"), "llama", lines, hidden=16, layers=2, heads=2, max_positions=32)
    proc = torchrun(["ddp", "mle_fsdp", data, str(tmp_path)], 29539)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "generator sharded over 2 ranks (2 blocks)" in proc.stderr
    proc = single(["single", "mle_fsdp", data, str(tmp_path)])
    assert proc.returncode == 0, proc.stderr[-3000:]
    ddp, ref = load_tensors(str(tmp_path / "ddp.safetensors")), load_tensors(str(tmp_path / "single.safetensors"))
    assert ddp.keys() == ref.keys() and len(ref) > 10
    for k in ref:
        torch.testing.assert_close(ddp[k], ref[k], rtol=1e-4, atol=1e-5, msg=f"fsdp: {k} differs")
    run = load_run(str(tmp_path / "run"))  # one process, unsharded
    for k, v in run.generator.state_dict().items():
        torch.testing.assert_close(v, ddp[f"generator.{k}"], msg=f"checkpoint: {k}")
    proc = torchrun(["resume", "mle_fsdp", data, str(tmp_path)], 29541)
    assert proc.returncode == 0, proc.stderr[-3000:]
    resumed = load_tensors(str(tmp_path / "resume.safetensors"))
    for k in ref:
        torch.testing.assert_close(resumed[k], ddp[k], rtol=0, atol=0, msg=f"resume: {k}")


def test_nan_on_one_rank_stops_every_rank_with_one_line(tmp_path):
    data = corpus(tmp_path / "train.txt")
    t0 = time.time()
    proc = torchrun(["nan", "mle", data, str(tmp_path)], 29537, timeout=120)
    elapsed = time.time() - t0
    assert proc.returncode != 0
    assert elapsed < 60, f"took {elapsed:.0f}s"
    lines = [ln for ln in proc.stderr.splitlines() if ln.startswith("llmgan: error:")]
    # each rank prints one whole line naming rank 1 (the bad rank gives the value); no traceback
    assert len(lines) == 2, proc.stderr[-3000:]
    assert all("MLE loss became" in ln and "on rank 1" in ln for ln in lines), lines
    # torchrun's launcher reports the failed children with its own traceback; none of it is ours
    assert 'llmgan' not in "".join(ln for ln in proc.stderr.splitlines() if ln.lstrip().startswith("File "))
