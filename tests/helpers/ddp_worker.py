"""Worker for tests/test_ddp.py: the same training, under torchrun (DDP) or in one process on the
global batch, writing the final weights so the test can compare them.

    python ddp_worker.py MODE ALGO DATA OUT       MODE: ddp (under torchrun) | single | nan
    ALGO: mle | maligan | gsgan | mle_fsdp (an hf: generator at DATA's sibling hf/, FSDP2 under torchrun)

``single`` is the ground truth DDP must equal: ONE process, whose every optimizer step sees the
gradient of the global batch -- the micro-batches rank 0 and rank 1 would draw (their own sampling
and data RNG streams, as the engine seeds them), each weighted 1/2, summed, then one step.
``nan``: under torchrun, rank 1's loss becomes NaN at its 3rd step; every rank must stop.
"""

from __future__ import annotations

import os
import sys

import torch

from llmgan.algorithms.base import GANContext
from llmgan.config import config_from_dict
from llmgan.tensor_files import save_tensors
from llmgan.training.engine import Trainer

ROUNDS = 3


def config(algo: str, data: str, world_batch: int, sharded: bool = False) -> dict:
    raw = {
        "data": {"train": data, "max_len": 10, "valid": data, "test": data},
        "train": {"epochs": 2, "batch_size": world_batch, "progress": False, "grad_clip": 1.0},
        "generator": {"kwargs": {"embed_dim": 8, "hidden_dim": 8}},
        "eval": {"n_samples": 8},
        "threads": 1,
        "seed": 3,
    }
    if algo == "mle_fsdp":
        raw["generator"] = {"name": "hf:" + os.path.join(os.path.dirname(data), "hf"), "kwargs": {}}
        raw["data"]["tokenizer"] = "hf"
        raw["train"].update(lr=1e-3, fsdp=sharded, epochs=1)
    elif algo != "mle":
        raw["discriminator"] = {"kwargs": {"emb_dim": 8, "filter_sizes": [2, 3], "num_filters": [6, 6],
                                           "dropout": 0.0}}
        raw["adversarial"] = {"algorithm": algo, "rounds": ROUNDS, "d_pretrain_steps": 0, "d_steps": 1,
                              "d_epochs": 1, "d_samples": 8, "d_batch_size": 8, "g_batch_size": 8,
                              "eval_every": 100}
        if algo == "maligan":
            raw["adversarial"]["params"] = {"d_pretrain_epochs": None}
    return raw


def weights(tr: Trainer) -> dict[str, torch.Tensor]:
    return {f"{name}.{k}": v for name, m in tr.models().items() for k, v in m.state_dict().items()}


def virtual_rank_contexts(tr: Trainer, world: int) -> list[GANContext]:
    """One GANContext per would-be rank, sharing models and optimizers, each with that rank's RNG
    streams, and a step function that sums the micro-batches' gradients (each 1/world) before ONE step."""
    adv, seed = tr.adversarial, tr.cfg.seed
    pending = {"n": 0}

    def accumulate(loss, opt, module, clip, what):
        if pending["n"] == 0:
            opt.zero_grad(set_to_none=True)
        (loss / world).backward()
        pending["n"] += 1
        if pending["n"] == world:
            if clip:
                torch.nn.utils.clip_grad_norm_(module.parameters(), clip)
            opt.step()
            pending["n"] = 0
        return float(loss.detach())

    out = []
    for r in range(world):
        out.append(GANContext(
            generator=tr.generator, discriminator=adv.discriminator, g_opt=adv.g_opt, d_opt=adv.d_opt,
            cfg=tr.cfg.adversarial, device=tr.device, max_len=tr.max_len,
            rng=torch.Generator().manual_seed(seed * 1009 + 17 + r),
            data_rng=torch.Generator().manual_seed(seed * 1013 + 29 + r),
            data=tr.data, progress=tr.state, step_fn=accumulate, autocast=tr.autocast,
            grad_clip=tr.cfg.train.grad_clip,
        ))
    return out


def main() -> int:
    mode, algo, data, out = sys.argv[1:5]
    world = 2
    if mode == "nan":
        from llmgan.cli import main as cli_main
        from llmgan.models.generators.lstm import LSTMGenerator

        calls = {"n": 0}
        inner = LSTMGenerator.weighted_nll

        def poisoned(self, *a, **k):  # rank 1 only: its 3rd loss is NaN
            loss = inner(self, *a, **k)
            calls["n"] += 1
            return loss * float("nan") if os.environ.get("RANK") == "1" and calls["n"] == 3 else loss

        LSTMGenerator.weighted_nll = poisoned
        import yaml

        cfg_path = os.path.join(out, f"c{os.environ.get('RANK')}.yaml")
        with open(cfg_path, "w", encoding="utf-8") as f:
            yaml.safe_dump(config("mle", data, 4), f)
        return cli_main(["train", cfg_path, "--out", os.path.join(out, "run"), "--device", "cpu"])

    if mode == "resume":  # mle_fsdp under torchrun: load the checkpoint the ddp mode wrote into the shards
        cfg = config_from_dict(config(algo, data, 4, True))
        tr = Trainer(cfg, os.path.join(out, "run"), resume=True)
        tr.setup()
    elif algo in ("mle", "mle_fsdp"):
        # DDP/FSDP: batch_size per rank; single: the global batch (both ranks' rows) in one step
        per_rank = 4
        cfg = config_from_dict(config(algo, data, per_rank if mode == "ddp" else per_rank * world, mode == "ddp"))
        tr = Trainer(cfg, os.path.join(out, "run"))
        tr.setup()
        tr.mle_phase()
        if algo == "mle_fsdp" and mode == "ddp":
            tr.save()  # a collective under FSDP: gathered on every rank, written by rank 0
    else:
        cfg = config_from_dict(config(algo, data, 4))
        cfg.train.epochs = 0
        tr = Trainer(cfg, os.path.join(out, "run"))
        tr.setup()
        algo_obj = tr.adversarial.algorithm
        algo_obj.start(tr.adversarial.ctx)
        contexts = [tr.adversarial.ctx] if mode == "ddp" else virtual_rank_contexts(tr, world)
        for _ in range(ROUNDS):
            for ctx in contexts:
                algo_obj.g_step(ctx)
            for ctx in contexts:
                algo_obj.d_step(ctx)
            tr.state["round"] += 1
    if tr.sharded:  # gathered on every rank (collective); the checkpoint the run wrote holds the same
        from llmgan.training.distributed import FullModelState

        full = {f"generator.{k}": v for k, v in FullModelState(tr.generator).state_dict().items()}
        if tr.rank == 0:
            save_tensors(full, os.path.join(out, f"{mode}.safetensors"))
    elif tr.rank == 0:
        save_tensors(weights(tr), os.path.join(out, f"{mode}.safetensors"))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
