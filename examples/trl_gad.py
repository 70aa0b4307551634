"""GAD (Generative Adversarial Distillation) on TRL's GRPOTrainer: the student is trained with GRPO on
the reward of an online discriminator that learns, on every batch, to rank the reference (teacher)
response of each prompt above the student's completions -- llmgan.integrations.trl.

Offline and small by default: a tiny randomly initialised GPT-2-config student with a word-level
tokenizer, a tiny CNN discriminator, llmgan's synthetic translation data set (prompt = a sentence of
the source language, response = its reference translation), a few steps on CPU:

    python examples/trl_gad.py --out /tmp/trl_gad --steps 8

A real student (any causal LM on the Hub or on disk) and real prompt/response JSONL, on GPUs, with
vLLM generating the completions (``pip install vllm``; colocated in the training processes):

    accelerate launch --num_processes 4 examples/trl_gad.py --student Qwen/Qwen2.5-0.5B-Instruct \\
        --data train.jsonl --discriminator hf:Qwen/Qwen2.5-0.5B --use-vllm --bf16 --steps 500

It prints one JSON line: the discriminator's pair accuracy over the first and the last calls, and
where the checkpoints went. ``--resume`` continues from the last checkpoint, discriminator included.
"""

from __future__ import annotations

import argparse
import json
import os
import sys


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--out", required=True, help="trainer output directory (checkpoints, logs)")
    p.add_argument("--student", default=None, help="causal LM path or hub name (default: a tiny GPT-2 built here)")
    p.add_argument("--data", default=None, help='JSONL of {"prompt", "response"} (default: synthetic translation)')
    p.add_argument("--n", type=int, default=256, help="synthetic records (without --data)")
    p.add_argument("--discriminator", default="cnn", help="llmgan discriminator name or hf:<encoder> (default cnn)")
    p.add_argument("--steps", type=int, default=8, help="GRPO optimizer steps")
    p.add_argument("--batch-size", type=int, default=8, help="completions per device and step")
    p.add_argument("--num-generations", type=int, default=4, help="completions per prompt (GRPO group)")
    p.add_argument("--max-completion-length", type=int, default=12)
    p.add_argument("--lr", type=float, default=5e-4, help="student learning rate")
    p.add_argument("--d-lr", type=float, default=1e-3, help="discriminator learning rate")
    p.add_argument("--d-steps", type=int, default=1, help="discriminator updates per reward call")
    p.add_argument("--save-steps", type=int, default=4)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--use-vllm", action="store_true", help="generate with vLLM (GPU; colocated)")
    p.add_argument("--bf16", action="store_true", help="bf16 mixed precision (GPU)")
    p.add_argument("--resume", action="store_true", help="continue from the last checkpoint in --out")
    return p


def tiny_student(out_dir: str, texts: list[str], seed: int) -> str:
    from llmgan.models.hf import make_tiny_hf_model

    path = os.path.join(out_dir, "student")
    if not os.path.isfile(os.path.join(path, "config.json")):
        make_tiny_hf_model(path, "gpt2", texts, hidden=32, layers=2, heads=2, max_positions=64, seed=seed)
    return path


def run(argv: list[str] | None = None) -> tuple:
    """Train as the command line says; returns (trainer, reward, summary dict)."""
    args = build_parser().parse_args(argv)
    import torch
    from datasets import Dataset
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from trl import GRPOConfig, GRPOTrainer

    from llmgan.integrations.trl import OnlineDiscriminatorReward

    torch.manual_seed(args.seed)
    if args.data:
        from llmgan.data import read_jsonl

        records = [{"prompt": r["prompt"], "response": r["response"]}
                   for r in read_jsonl(args.data, fields=("prompt", "response"))]
    else:
        from llmgan.apps.translation import make_records

        records = make_records(args.n, seed=args.seed)
    from accelerate import PartialState

    os.makedirs(args.out, exist_ok=True)
    with PartialState(cpu=not torch.cuda.is_available()).main_process_first():  # one writer of the tiny student
        student = args.student or tiny_student(args.out, [r["prompt"] + " " + r["response"] for r in records],
                                               args.seed)
    tokenizer = AutoTokenizer.from_pretrained(student)
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    model = AutoModelForCausalLM.from_pretrained(student)

    # D reads the student's tokenizer; small sizes for the tiny default, ignored for hf: encoders
    d_kwargs = {"emb_dim": 16, "filter_sizes": [2, 3], "num_filters": [16, 16]} if args.discriminator == "cnn" else {}
    reward = OnlineDiscriminatorReward(args.discriminator, tokenizer, reference_column="response", lr=args.d_lr,
                                       steps_per_call=args.d_steps, loss="bt", discriminator_kwargs=d_kwargs,
                                       name="gad_discriminator")
    config = GRPOConfig(
        output_dir=args.out, max_steps=args.steps, per_device_train_batch_size=args.batch_size,
        num_generations=args.num_generations, max_completion_length=args.max_completion_length,
        learning_rate=args.lr, beta=0.001, temperature=1.0, logging_steps=1, save_steps=args.save_steps,
        report_to="none", seed=args.seed, bf16=args.bf16, use_cpu=not torch.cuda.is_available(),
        use_vllm=args.use_vllm, **({"vllm_mode": "colocate"} if args.use_vllm else {}),
        dataloader_num_workers=0, disable_tqdm=True,
    )
    trainer = GRPOTrainer(model=model, reward_funcs=[reward], args=config, train_dataset=Dataset.from_list(records),
                          processing_class=tokenizer, callbacks=[reward.callback()])
    trainer.train(resume_from_checkpoint=True if args.resume else None)
    acc = [h["pair_accuracy"] for h in reward.history]
    k = max(1, len(acc) // 4)
    summary = {"calls": reward.calls, "d_updates": reward.updates,
               "pair_accuracy_first": sum(acc[:k]) / k if acc else None,
               "pair_accuracy_last": sum(acc[-k:]) / k if acc else None,
               "output_dir": args.out, "global_step": trainer.state.global_step}
    return trainer, reward, summary


def main(argv: list[str] | None = None) -> dict:
    trainer, _, summary = run(argv)
    if trainer.is_world_process_zero():
        print(json.dumps(summary))
    return summary


if __name__ == "__main__":
    sys.exit(0 if main() else 1)
