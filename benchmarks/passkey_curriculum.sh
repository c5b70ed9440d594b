#!/usr/bin/env bash
# The next step after benchmarks/passkey_answer_loss.sh (answer-only loss, one length, 200 steps: 0 of 18
# keys 1-3 segments back): BABILong's recipe on the same task, a curriculum of growing documents whose
# length varies inside each stage (--vary_n_segments). 2,000 generated passkey prompts of 68-250 tokens
# (seed 2, apart from evaluation's keys; 68 is the shortest the prompt allows), the loss on the answer, and
# stages that take the records up to 128 tokens (1-2 segments of 64), then 192, then 256 (1-4 segments):
#   rmt-curriculum   RMT, segment 64, 8 memory tokens, LoRA on q, v, lr 1e-3, 300 + 300 + 600 steps
#   uio-curriculum   UIO, the same, LoRA r16/a64
#   uio-4-segments   its ablation: UIO on the same budget (1,200 steps, one stage) without the short documents,
#                    2,000 prompts of 200-250 tokens (every one 4 segments, as at evaluation)
# then benchmarks/passkey_curriculum.yaml scores passkey at 250 tokens as passkey_answer_loss.yaml does.
#   bash benchmarks/passkey_curriculum.sh      # from the repository root
set -euo pipefail
data=out/passkey-curriculum/passkey-68-250.jsonl
[ -f "$data" ] || lch make-data passkey --out "$data" --n 2000 --seed 2 --length 68,250
records=(--prompt-field prompt --answer-field answer --loss answer --seed 0 --segment 64 --memory-tokens 8 --lr 1e-3
         --checkpoint-every 100 --quiet)
curriculum=(--data "$data" --stages 128:300,192:300,256:600)
train() {  # $1: method, $2: name, then its own flags; resumes a run cut short
  local method=$1 out=out/passkey-curriculum/$2; shift 2
  [ -f "$out/train_log.jsonl" ] && [ "$(wc -l < "$out/train_log.jsonl")" -ge 1200 ] && return
  lch train "$method" "${records[@]}" "$@" --out "$out" $([ -f "$out/trainer_state.pt" ] && echo --resume)
}
train rmt rmt-curriculum "${curriculum[@]}"
train uio uio-curriculum "${curriculum[@]}" --lora-rank 16 --lora-alpha 64
long=out/passkey-curriculum/passkey-200-250.jsonl
[ -f "$long" ] || lch make-data passkey --out "$long" --n 2000 --seed 2 --length 200,250
train uio uio-4-segments --lora-rank 16 --lora-alpha 64 --data "$long" --stages 256:1200
lch run benchmarks/passkey_curriculum.yaml --quiet
