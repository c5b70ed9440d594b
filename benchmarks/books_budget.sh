#!/usr/bin/env bash
# Positive control 5 (issue 34): where memory starts to pay on books. UIO and RMT (segments of 512, 16 memory
# tokens, the comparison's recipe) trained on the non-test books at 4K with next-token loss (lm) and with
# distillation from the base model reading the whole document (distill), checkpoints kept at 25 and 100
# steps and the run's end (STEPS, default 400); benchmarks/books_budget.yaml then scores each at 16K on the
# two PG19 test books beside the no-memory control and StreamingLLM 4 + 508, and the report's "Score vs
# training budget" section draws perplexity against steps per run. A UIO lm step at 4K took 25.6-36.8 s on 2
# idle cores (two machines), a distill step 62.9 s (the teacher 19.6 of it): 400 steps are 3-7 h a run. Each
# run checkpoints every 25 steps and resumes exactly, across sessions: stop it after a kept checkpoint rather
# than lowering STEPS, which would change the cosine schedule. One run at a time (2 threads):
#   bash benchmarks/books_budget.sh uio lm; bash benchmarks/books_budget.sh uio distill
#   bash benchmarks/books_budget.sh rmt lm; bash benchmarks/books_budget.sh rmt distill
#   bash benchmarks/books_budget.sh eval
set -euo pipefail
books=${LCH_DATA_DIR:-../shared/data}/books
steps=${STEPS:-400}
case ${1:?uio, rmt or eval} in
  uio|rmt)
    objective=${2:?lm or distill}
    out=out/controls/books-$1-$objective
    lch train "$1" --data "$books" --objective "$objective" --seq-len 4096 --segment 512 --memory-tokens 16 \
      --steps "$steps" --checkpoint-every 25 --keep-at 25,100 --quiet --out "$out" \
      $([ -f "$out/trainer_state.pt" ] && echo --resume) ;;
  eval) lch run benchmarks/books_budget.yaml --quiet ;;
  *) echo "usage: $0 uio|rmt lm|distill, or $0 eval" >&2; exit 2 ;;
esac
