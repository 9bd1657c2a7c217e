#!/usr/bin/env bash
# GPU smoke test: a short GPT run on every local GPU, with the Transformer Engine layer spec
# (when transformer_engine imports) and with the local megatron-core spec; prints the
# Megatron-LM log lines (iteration time, model TFLOP/s per GPU) of each.
#
#   bash scripts/gpu_smoke.sh                 # all GPUs of this machine
#   NPROC=1 ITERS=50 bash scripts/gpu_smoke.sh
#
# Needs: CUDA torch, megatron-core, this package (pip install -e '.[te]' for the TE run).
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-python}
NPROC=${NPROC:-$($PY -c 'import torch; print(max(1, torch.cuda.device_count()))')}
ITERS=${ITERS:-30}
OUT=${OUT:-gpu_smoke_run}
mkdir -p "$OUT"

$PY -c 'import torch, sys; sys.exit(0 if torch.cuda.is_available() else "gpu_smoke.sh: no CUDA device (torch.cuda.is_available() is False)")'

# A 350M-class GPT in bf16 on mock data: big enough that GPU time is not launch overhead.
COMMON=(
  --nproc-per-node "$NPROC"
  --model.num_layers=24 --model.hidden_size=1024 --model.num_attention_heads=16
  --model.ffn_hidden_size=4096 --model.seq_length=2048 --model.vocab_size=50257
  --mixed_precision=bf16_mixed
  --train.micro_batch_size=4 --train.global_batch_size=$((4 * NPROC * 2))
  --train.train_iters="$ITERS" --train.eval_interval="$ITERS" --train.eval_iters=2
  --scheduler.lr_warmup_iters=2 --logger.log_interval=5
  --tokenizer.tokenizer_type=NullTokenizer --dataset=mock
)

run() {  # name, extra flags...
  local name=$1; shift
  echo "=== $name ==="
  $PY -m megatron_bridge_cli "${COMMON[@]}" "$@" \
      --checkpoint.save="$OUT/$name/ckpt" --logger.tensorboard_dir="$OUT/$name/tb" 2>&1 | tee "$OUT/$name.log"
  grep -E "^iteration" "$OUT/$name.log" | tail -1
}

if $PY -c 'import transformer_engine.pytorch' 2>/dev/null; then
  run te --model.layer_spec=transformer_engine
else
  echo "=== te: skipped (transformer_engine does not import; pip install -e '.[te]') ==="
fi
run local --model.layer_spec=local

echo
echo "summary (last log line of each run):"
for f in "$OUT"/*.log; do
  echo "$(basename "$f" .log): $(grep -E '^iteration' "$f" | tail -1 | grep -oE 'elapsed time per iteration \(ms\): [0-9.]+|TFLOP/s/GPU\): [0-9.]+' | tr '\n' ' ')"
done
