#!/usr/bin/env bash
# Issue 33's question: does the loss on the answer alone let a memory carry a passkey across segments, where
# the loss on every token (the key's 5 tokens are 2 % of a 256-token document) did not? The same generated
# documents (400 passkey prompts of 200-250 tokens, so that the question and the answer share the last segment
# of 64 as at evaluation's 250; needle at a uniform depth, key as the answer; seed 1, apart from evaluation's
# keys), segment 64, 8 memory tokens, lr 1e-3, 200 steps, seed 0, for each loss:
#   rmt-all / rmt-answer   RMT (LoRA on q, v and the memory), --loss all / --loss answer
#   uio-answer             UIO (r16 encoder and transfer head), --loss answer
# then benchmarks/passkey_answer_loss.yaml scores passkey at 250 tokens (depths 0, 0.25, 0.5, 1; 6 each)
# beside the no-memory control (RMT's segments of 64 without memory) and full attention.
#   bash benchmarks/passkey_answer_loss.sh      # from the repository root
set -euo pipefail
data=out/passkey-answer/passkey-200-250.jsonl
[ -f "$data" ] || lch make-data passkey --out "$data" --n 400 --seed 1 --length 200,250
records=(--data "$data" --prompt-field prompt --answer-field answer --seq-len 320 --steps 200 --seed 0
         --segment 64 --memory-tokens 8 --lr 1e-3 --checkpoint-every 50 --quiet)
train() {  # $1: method, $2: name, then its own flags; resumes a run cut short
  local method=$1 out=out/passkey-answer/$2; shift 2
  [ -f "$out/train_log.jsonl" ] && [ "$(wc -l < "$out/train_log.jsonl")" -ge 200 ] && return
  lch train "$method" "${records[@]}" "$@" --out "$out" $([ -f "$out/trainer_state.pt" ] && echo --resume)
}
train rmt rmt-all --loss all
train rmt rmt-answer --loss answer
train uio uio-answer --loss answer --lora-rank 16 --lora-alpha 64
lch run benchmarks/passkey_answer_loss.yaml --quiet
