#!/usr/bin/env bash
# One command for a CUDA machine: the CUDA-only tests, then the paper schedules that fit, within ~12
# minutes, appending to benchmarks/results/reproduce.jsonl with "device": "cuda" (benchmarks/reproduce.py).
#
#   benchmarks/gpu_suite.sh            # run it (needs a CUDA device)
#   benchmarks/gpu_suite.sh --dry-run  # print what it would do and each part's time cap (works on CPU)
#
# Every part runs under `timeout` with the cap shown; a cut run keeps its checkpoints, and running the
# suite again resumes each schedule where it stopped (reproduce.py resumes from the latest checkpoint).
# The caps are allotments, not measurements: no GPU has run this suite yet (none was lent when it was
# written), so the first real run's reproduce.jsonl lines are the measurement.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-.venv/bin/python}
RUNS=${RUNS:-runs/gpu}
DRY=0
[[ "${1:-}" == "--dry-run" ]] && DRY=1

# part | cap (s) | command
PARTS=(
  "CUDA-only tests|60|$PY -m pytest -q tests/test_cuda.py tests/test_rmc_step.py"
  "RelGAN (RMC, Tmax 1): 150 MLE epochs + 3,000 adversarial steps|330|$PY benchmarks/reproduce.py relgan --device cuda --run-dir $RUNS/relgan"
  "MLE: 120 epochs|90|$PY benchmarks/reproduce.py mle --device cuda --run-dir $RUNS/mle"
  "SeqGAN: 120 MLE epochs, 50 D pre-training steps, 200 rounds (D batch 512)|240|$PY benchmarks/reproduce.py seqgan --device cuda --run-dir $RUNS/seqgan --set adversarial.d_batch_size=512"
)

total=0
for p in "${PARTS[@]}"; do IFS='|' read -r _ cap _ <<<"$p"; total=$((total + cap)); done
echo "gpu_suite: ${#PARTS[@]} parts, at most ${total} s ($((total / 60)) min $((total % 60)) s) in all"
if [[ $DRY -eq 0 ]]; then
  "$PY" -c "import torch, sys; sys.exit(0 if torch.cuda.is_available() else 'gpu_suite: no CUDA device here (use --dry-run on CPU)')"
fi
for p in "${PARTS[@]}"; do
  IFS='|' read -r what cap cmd <<<"$p"
  if [[ $DRY -eq 1 ]]; then
    printf '  [cap %4ss] %s\n      $ timeout %s %s\n' "$cap" "$what" "$cap" "$cmd"
  else
    echo "== $what (cap ${cap} s)"
    start=$(date +%s)
    timeout "$cap" $cmd || echo "   stopped (exit $?) after $(( $(date +%s) - start )) s; rerun the suite to resume"
  fi
done
[[ $DRY -eq 1 ]] && echo "dry run: nothing was started"
exit 0
