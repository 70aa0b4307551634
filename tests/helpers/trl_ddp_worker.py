"""One rank of examples/trl_gad.py under ``accelerate launch``: trains, then writes this rank's
discriminator weights to OUT/d-rank<r>.safetensors (the test compares the ranks)."""

import os
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "examples"))

import torch  # noqa: E402

torch.set_num_threads(1)

from trl_gad import run  # noqa: E402

from llmgan.tensor_files import save_tensors  # noqa: E402

out = sys.argv[1]
trainer, reward, summary = run(["--out", out, *sys.argv[2:]])
rank = trainer.accelerator.process_index
save_tensors(reward.discriminator.state_dict(), os.path.join(out, f"d-rank{rank}.safetensors"))
print(f"rank {rank} of {trainer.accelerator.num_processes}: {summary}")
