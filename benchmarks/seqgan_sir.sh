#!/bin/bash
# SeqGAN + SIR on the oracle frontier (issue 11, item 3; docs/benchmarks.md "density-ratio" sections):
# SeqGAN from a 10-epoch MLE run of benchmarks/oracle_frontier.py (same train/test data), a light schedule
# (small CNN D at d_lr 1e-3, 6 D pre-training refreshes of 2,000 x 2 epochs, 10 rounds of 1 G step + 1
# refresh), then SIR with its own (Platt-calibrated) D as the density ratio at T = 1.
#     bash benchmarks/seqgan_sir.sh MLE_RUN OUT_RUN [CSV]
# Re-run, it resumes the SeqGAN run from its checkpoint.
set -eu
M=${1:?the MLE run directory, e.g. the mle_s0 of benchmarks/oracle_frontier.py}
OUT=${2:?output run directory}
CSV=${3:-benchmarks/results/density_ratio_frontier_seqgan.csv}
cd "$(dirname "$0")/.."
export OMP_NUM_THREADS=1 TORCH_NUM_THREADS=1 PYTHONPATH=$PWD/src
PY=${PYTHON:-.venv/bin/python}
$PY -m llmgan.cli train configs/seqgan_oracle.yaml --out "$OUT" --threads 1 --device cpu --no-progress \
  --set seed=0 --set train.init_from="$M" --set train.epochs=0 \
  --set data.train="$M/data/train.txt" --set data.test="$M/data/test.txt" \
  --set "discriminator.kwargs={emb_dim: 32, filter_sizes: [2, 3, 4, 5], num_filters: [32, 32, 32, 32]}" \
  --set adversarial.rounds=10 --set adversarial.d_pretrain_steps=6 --set adversarial.d_samples=2000 \
  --set adversarial.d_steps=1 --set adversarial.d_epochs=2 --set adversarial.d_lr=0.001 --set adversarial.eval_every=5 \
  --set adversarial.checkpoint_every=5 --set eval.n_samples=1000 $( [ -d "$OUT/checkpoints" ] && echo --resume )
$PY benchmarks/density_ratio.py "$OUT" --ratio-from d --temperatures 1.0 --candidates 1,2,4,8 --rejection 0 \
  --n-samples 500 --n-proposal 2000 --out "$CSV"
