#!/usr/bin/env bash
# Receive one part of what benchmarks/offline_gpu/pack.py packed; the last part (its folder holds the manifest)
# checks the sha256, unpacks to /tmp/offline-gpu, installs the wheels into /tmp/offline-gpu/site, turns the
# bf16-rounded MiniLM back into fp32 and writes /tmp/offline-gpu/env (eval it: PYTHONPATH and paths).
set -euo pipefail
part=${1:?usage: unpack.sh PART_FOLDER}
root=/tmp/offline-gpu
mkdir -p $root
[ "$(basename "$part")" = 1 ] && rm -f $root/pack.tar
cat "$part/part" >> $root/pack.tar
echo "received $(basename "$part"): $(du -m $root/pack.tar | cut -f1) MiB so far"
[ -f "$part/manifest" ] || exit 0
read -r parts digest < "$part/manifest"
[ "$(sha256sum $root/pack.tar | cut -d' ' -f1)" = "$digest" ] || { echo "pack.tar differs from the manifest: a part is missing or out of order" >&2; exit 1; }
rm -rf $root/unpacked && mkdir $root/unpacked && tar -xzf $root/pack.tar -C $root/unpacked
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target $root/site $root/unpacked/wheels/*.whl
[ -d $root/unpacked/site ] && cp -r $root/unpacked/site/. $root/site/
env="export PYTHONPATH=$root/site:$PWD/src HF_HUB_OFFLINE=1 TOKENIZERS_PARALLELISM=false PYTHONUNBUFFERED=1"
if [ -d $root/unpacked/minilm ]; then
  PYTHONPATH=$root/site python3 - "$root/unpacked/minilm/model.safetensors" <<'PY'
import sys
from safetensors.torch import load_file, save_file
path = sys.argv[1]
weights = load_file(path)
save_file({k: v.float() if v.is_floating_point() else v for k, v in weights.items()}, path, metadata={"format": "pt"})
PY
  env="$env MINILM=$root/unpacked/minilm"
fi
[ -d $root/unpacked/data ] && env="$env DATA=$root/unpacked/data"
echo "$env" > $root/env
echo "unpacked $parts part(s); eval \"\$(cat $root/env)\" gives: $env"
