#!/usr/bin/env bash
# The GPU check in one short call (at most 7.5 minutes: each part has its own time limit, model loading included), every result
# under bench/results/NAME/ (default gpu_quick):
#   1. tests/test_gpu.py: the evaluator, the exact pruners and the CLI on the GPU against the CPU;
#   2. the evaluator against a plain forward at LLaMA-2-7B layer shapes (2 random blocks; masking in
#      place, forward, block): bench/memory.py;
#   3. the SparseGPT level database's one-candidate time, cold and warm, against a plain forward:
#      bench/leveldb_cost.py (built under $TMPDIR, not returned);
#   4. the 2:4 kernels against dense on the dense-or-2:4 model: bench/speed_24.py;
#   5. one short search on the model (population 8, 2 generations).
# Needs nothing from outside the working tree: MODEL is a path (SmolLM2-135M's GGUF or an HF folder). A
# GGUF brought in parts (uploads below 64 MiB; docs/gpu.md) is assembled from MODEL.part-* and checked
# against MODEL.sha256 first. On a machine without a CUDA GPU it refuses in one line (exit 2).
#     bash bench/gpu_quick.sh MODEL [NAME]
set -euo pipefail
cd "$(dirname "$0")/.."
fail() { echo "gpu_quick: $*" >&2; exit 2; }
[ $# -ge 1 ] && [ $# -le 2 ] || fail "usage: bash bench/gpu_quick.sh MODEL [NAME]"
model="$1"; name="${2:-gpu_quick}"
[[ "$name" =~ ^[A-Za-z0-9_.-]+$ ]] || fail "NAME must be letters, digits, '_', '.' or '-', got '$name'"
python3 -c 'import sys, torch; sys.exit(0 if torch.cuda.is_available() else 1)' \
  || fail "needs a CUDA GPU (torch sees none): nothing run"
if [ ! -e "$model" ] && compgen -G "$model.part-*" > /dev/null; then
  [ -f "$model.sha256" ] || fail "$model.part-* found but no $model.sha256 to check the assembled file against"
  cat "$model".part-* > "$model.tmp"
  [ "$(sha256sum < "$model.tmp" | cut -d' ' -f1)" = "$(cut -d' ' -f1 < "$model.sha256")" ] \
    || { rm -f "$model.tmp"; fail "$model assembled from its parts does not match $model.sha256"; }
  mv "$model.tmp" "$model"
fi
[ -e "$model" ] || fail "model not found: $model"
out="bench/results/$name"
scratch="${TMPDIR:-/tmp}/dsa_gpu_quick"
mkdir -p "$out" "$scratch"
step() {  # step LABEL SECONDS COMMAND…: run one part with its own time limit; a failed part does not stop the rest
  local label="$1" limit="$2"; shift 2
  local start=$SECONDS rc=0
  timeout "$limit" "$@" > "$out/$label.log" 2>&1 || rc=$?
  echo "$label: exit $rc, $((SECONDS - start)) s" | tee -a "$out/steps.txt"
}
: > "$out/steps.txt"
step test_gpu 120 python3 -m pytest -q -p no:cacheprovider tests/test_gpu.py
step memory_7b_shapes 60 python3 -m bench.memory --device cuda --layers 2 --repeats 3 --name "$name/memory_7b_shapes"
step leveldb_cost 120 python3 -m bench.leveldb_cost --model "$model" --device cuda --method sparsegpt \
  --sparsity 0.7 --leveldb-root "$scratch/leveldb" --name "$name/leveldb_cost"
step speed_24 60 bash -c "python3 -m dsa.cli prune --model '$model' --allocation uniform --nm 2:4 --sparsity 0.4 \
  --method wanda --dtype fp16 --device cuda --save '$scratch/pruned_24' --no-progress \
  && python3 -m bench.speed_24 '$scratch/pruned_24' --repeats 5 --name '$name/speed_24'"
step search 90 python3 -m dsa.cli search --model "$model" --device cuda --population 8 --generations 2 \
  --no-progress --run-dir "$out/search"
cat "$out/steps.txt"
