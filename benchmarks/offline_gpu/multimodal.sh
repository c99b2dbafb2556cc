#!/usr/bin/env bash
# The multimodal benchmark on a lent GPU machine, in one command after the pack's earlier parts were sent.
#   here:  .venv/bin/python benchmarks/offline_gpu/pack.py --minilm --mobilenet --data /tmp/metaembed-multimodal-benchmark/data-8000
#          (ignore .dev/ in .git/info/exclude; send each part with the device tool's carry=[".dev/pack/N"], one call per part)
#   there: bash benchmarks/offline_gpu/unpack.sh .dev/pack/1   ... then, for the last part N:
#          STEPS=1500 MAX_IMAGES=8000 bash benchmarks/offline_gpu/multimodal.sh .dev/pack/N
#          (EXTRA="--image-readout" adds run.py options to every call, e.g. the image readout)
# Trains arms a, c, i (and b) in parallel processes, then evaluates every arm with paired intervals; the results
# (multimodal.json/.md/.png) and the logs land in $OUT.
set -uo pipefail
bash benchmarks/offline_gpu/unpack.sh "${1:?usage: multimodal.sh LAST_PART_FOLDER}" || exit 1
eval "$(cat /tmp/offline-gpu/env)"
nvidia-smi --query-gpu=name,memory.total --format=csv,noheader
COMMON="--language-model-path $MINILM --learning-rate 1e-4 --projector-learning-rate 1e-3 --eval-batch-size 128
        --steps ${STEPS:-1500} --max-images ${MAX_IMAGES:-8000} --work $DATA --dataloader-workers 4 ${EXTRA:-}"
start=$(date +%s)
for arm in ${TRAIN_ARMS:-a_mmr c_single_vector i_mmr_no_warm_start b_largest_group_only}; do
  python3 benchmarks/multimodal/run.py $COMMON --arms $arm --train-only > "$OUT/train_$arm.log" 2>&1 &
done
wait
echo "trained in $(( $(date +%s) - start )) s"
python3 benchmarks/multimodal/run.py $COMMON --reuse-trained --results "$OUT/multimodal.json" \
  --arms e_text_only f_frozen_linear h_warm_start_only a_mmr c_single_vector i_mmr_no_warm_start b_largest_group_only \
  --note "Run on a lent GPU ($(nvidia-smi --query-gpu=name --format=csv,noheader)), bf16 mixed precision; trained arms in parallel processes (--train-only), then --reuse-trained evaluates every arm. all-MiniLM-L6-v2 travelled with its weights rounded to bf16 and loaded back as fp32 (every arm, baselines included, uses the same rounded weights)." \
  > "$OUT/eval.log" 2>&1
echo "rc $? after $(( $(date +%s) - start )) s"
tail -n 80 "$OUT/eval.log"
