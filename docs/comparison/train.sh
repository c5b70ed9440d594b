#!/usr/bin/env bash
# The comparison's one training budget (examples/compare.yaml): every trained method sees the same books
# (../shared/data/books; the PG19 test books are refused by name and content), in the same order (seed 0),
# the same number of tokens and the same longest document: stages 4096:16,16384:6 = 16 documents of 4K
# then 6 of 16K, 163,840 tokens. Each method keeps its own recipe's optimizer and options (docs/training.md,
# "Training"); LongLoRA trains LoRA and the norms, not the input embedding (`trainable_params=norm`: on
# SmolLM2-135M the embedding is 21% of the weights, and its copy would make the checkpoint 113 MB).
# Estimated on 2 idle cores from the recipes' logged step times: UIO ~34 min, RMT ~29 min, LongLoRA ~45 min.
# Each run checkpoints every 2 steps into out/compare/METHOD (`--resume` goes on exactly after a kill);
# the shipped folder (checkpoints/METHOD-compare, beside the small recipes' checkpoints) gets the weights,
# training.json and the loss log, not the optimizer state: add its row to docs/training.md's shipped-checkpoints table.
#   bash docs/comparison/train.sh            # from the repository root, with ../shared/data present
set -euo pipefail
budget=(--data ../shared/data/books --stages 4096:16,16384:6 --seed 0 --checkpoint-every 2)
# a kill during a checkpoint swap leaves the previous checkpoint in METHOD.old: lch train resumes from it too
resume() { [ -f "$1/trainer_state.pt" ] || [ -f "$1.old/trainer_state.pt" ] && echo --resume || true; }
ship() {
  rm -rf "checkpoints/$2" && mkdir -p "checkpoints/$2"
  cp "$1"/*.safetensors "$1"/*.json "$1/train_log.jsonl" "checkpoints/$2/"
}

out=out/compare/uio
lch train uio "${budget[@]}" --segment 512 --memory-tokens 16 --lora-rank 16 --lora-alpha 64 --lr 1e-3 \
  --warmup 0.05 --out "$out" $(resume "$out")
ship "$out" uio-compare

out=out/compare/rmt
lch train rmt "${budget[@]}" --segment 512 --memory-tokens 16 --activation-checkpointing --out "$out" $(resume "$out")
ship "$out" rmt-compare

out=out/compare/longlora
lch train longlora "${budget[@]}" --method-opt trainable_params=norm --lr 1e-4 --warmup 0.1 \
  --activation-checkpointing --out "$out" $(resume "$out")
ship "$out" longlora-compare
