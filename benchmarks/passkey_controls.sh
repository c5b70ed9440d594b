#!/usr/bin/env bash
# Positive control 3 (issue 34): a passkey only memory can hold, trained longer than
# benchmarks/passkey_curriculum.sh (whose 1,200-step UIO found 6 of 18 keys 1-3 segments back).
# The same 2,000 generated passkey prompts of 68-250 tokens and recipe (answer-only loss, segment 64,
# 8 memory tokens, lr 1e-3, curriculum 1-2 -> 1-3 -> 1-4 segments), the last stage 2,400 steps instead
# of 600, the end of stage 2 and two points inside stage 3 kept (OUT@600, OUT@1200, OUT@2000) to score them; then
# benchmarks/passkey_controls.yaml scores passkey at 250 tokens and passkey_controls_8.yaml at 500, 24 samples
# per depth.
#   bash benchmarks/passkey_controls.sh       # from the repository root
set -euo pipefail
data=out/passkey-curriculum/passkey-68-250.jsonl
[ -f "$data" ] || lch make-data passkey --out "$data" --n 2000 --seed 2 --length 68,250
out=out/controls/uio-passkey-3000
if [ ! -f "$out/train_log.jsonl" ] || [ "$(wc -l < "$out/train_log.jsonl")" -lt 3000 ]; then
  lch train uio --data "$data" --prompt-field prompt --answer-field answer --loss answer --seed 0 --segment 64 \
    --memory-tokens 8 --lora-rank 16 --lora-alpha 64 --lr 1e-3 --stages 128:300,192:300,256:2400 \
    --checkpoint-every 100 --keep-at 600,1200,2000 --quiet --out "$out" $([ -f "$out/trainer_state.pt" ] && echo --resume)
fi
lch run benchmarks/passkey_controls.yaml --quiet
lch run benchmarks/passkey_controls_8.yaml --quiet
