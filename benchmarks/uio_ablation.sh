#!/usr/bin/env bash
# Issue 18's question, what would make UIO's memory help: four UIO recipes on one small budget (12 steps of
# 4,096-token documents, seed 0, the small recipe's options otherwise), each changing one thing:
#   base         the small recipe (docs/training.md) cut to 12 steps at 4K
#   official     --compensation false: the official train.py's gradient (no max(1, k/S) factor)
#   transfer-x10 --transfer-lr-scale 10: the transfer head at 10x the learning rate
#   compress-8x  --memory-tokens 64: 8x compression instead of 32x
# then benchmarks/uio_ablation.yaml scores them at 4K beside the shipped 44-step checkpoint (more steps)
# and the no-memory controls. About 45 min on 2 idle cores (~9 min per recipe, ~8 min for the sweep).
#   bash benchmarks/uio_ablation.sh      # from the repository root, with ../shared/data present
set -euo pipefail
common=(--data ../shared/data/books --stages 4096:12 --seed 0 --segment 512 --lora-rank 16 --lora-alpha 64
        --lr 1e-3 --warmup 0.05 --checkpoint-every 4 --quiet)
train() {  # $1: name, then the recipe's own flags; resumes a run cut short
  local out=out/uio-ablation/$1; shift
  [ -f "$out/trainer_state.pt" ] && [ "$(wc -l < "$out/train_log.jsonl")" -ge 12 ] && return
  lch train uio "${common[@]}" "$@" --out "$out" $([ -f "$out/trainer_state.pt" ] && echo --resume)
}
train base --memory-tokens 16
train official --memory-tokens 16 --compensation false
train transfer-x10 --memory-tokens 16 --transfer-lr-scale 10
train compress-8x --memory-tokens 64
lch run benchmarks/uio_ablation.yaml --quiet
