#!/usr/bin/env bash
# Positive control 4 (issue 34): UIO-LLMs' auto-encoding at small scale. The paper's objective (each
# segment decoded back from its own memory after the repeat token, methods/uio/autoencode.py) on 128-token
# windows of the non-test books (two a document: UIO trains on at least 2 segments), at 8x (16 memory
# tokens) and 32x (4), checkpoints kept along the way;
# benchmarks/uio_autoencode_small.yaml then measures BLEU-4 and ROUGE-L of the greedy reconstruction of 100
# windows of the PG19 test books at each (paper, Llama-2-7B at 1K tokens: 0.985 / 0.993 at 8x, 0.595 /
# 0.762 at 32x; the untrained memory is the curve's start).
# The two trainings use one thread each and can run side by side on 2 cores (from the repository root;
# STEPS=... to shorten):
#   bash benchmarks/uio_autoencode_small.sh 16 & bash benchmarks/uio_autoencode_small.sh 4; wait
#   bash benchmarks/uio_autoencode_small.sh eval
set -euo pipefail
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-1}
books=${LCH_DATA_DIR:-../shared/data}/books
steps=${STEPS:-1500}
case ${1:?16, 4 or eval} in
  16|4)
    out=out/controls/uio-ae-128-m$1
    lch train uio --data "$books" --objective autoencode --seq-len 256 --segment 128 --memory-tokens "$1" \
      --lora-rank 16 --lora-alpha 64 --lr 1e-3 --warmup 0.05 --steps "$steps" --checkpoint-every 100 \
      --keep-at 100,300,700,1000 --quiet --out "$out" $([ -f "$out/trainer_state.pt" ] && echo --resume) ;;
  eval) lch run benchmarks/uio_autoencode_small.yaml --quiet ;;
  *) echo "usage: $0 16|4|eval" >&2; exit 2 ;;
esac
