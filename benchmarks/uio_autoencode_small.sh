#!/usr/bin/env bash
# Positive control 4 (issue 34): UIO-LLMs' auto-encoding at small scale. The paper's objective (each
# segment decoded back from its own memory after the repeat token, methods/uio/autoencode.py) on 128-token
# windows of the non-test books (two a document: UIO trains on at least 2 segments), at 8x (16 memory
# tokens) and 32x (4), checkpoints kept along the way;
# benchmarks/uio_autoencode_small.yaml then measures BLEU-4 and ROUGE-L of the greedy reconstruction of 100
# windows of the PG19 test books at each (paper, Llama-2-7B at 1K tokens: 0.985 / 0.993 at 8x, 0.595 /
# 0.762 at 32x; the untrained memory is the curve's start).
#   bash benchmarks/uio_autoencode_small.sh        # from the repository root; STEPS=... to shorten
set -euo pipefail
books=${LCH_DATA_DIR:-../shared/data}/books
steps=${STEPS:-1500}
for m in 16 4; do
  out=out/controls/uio-ae-128-m$m
  [ -f "$out/train_log.jsonl" ] && [ "$(wc -l < "$out/train_log.jsonl")" -ge "$steps" ] && continue
  lch train uio --data "$books" --objective autoencode --seq-len 256 --segment 128 --memory-tokens "$m" \
    --lora-rank 16 --lora-alpha 64 --lr 1e-3 --warmup 0.05 --steps "$steps" --checkpoint-every 100 \
    --keep-at 100,300,700 --quiet --out "$out" $([ -f "$out/trainer_state.pt" ] && echo --resume)
done
lch run benchmarks/uio_autoencode_small.yaml --quiet
