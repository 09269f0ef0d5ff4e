#!/usr/bin/env bash
# On a machine with a GPU, in one go: the device tests, a quick build on the CPU and on CUDA with the largest
# difference between their numbers, and the CPU-vs-GPU benchmarks (attribution, zoo, loss landscape).
# On a machine without one it runs the device tests on the CPU, says that no GPU is present, times the CPU
# alone and exits 0: the same script runs unchanged where a GPU is.
#
#   bash benchmarks/gpu_check.sh            # from the repository root, in talkgen's environment
#   GPU_CHECK_OUT=/tmp/x bash benchmarks/gpu_check.sh   # where the two builds go (default: a temporary folder)
#   PYTHON=/opt/venv/bin/python3 PYTHONPATH=. bash benchmarks/gpu_check.sh   # talkgen from the checkout
set -euo pipefail
cd "$(dirname "$0")/.."
out="${GPU_CHECK_OUT:-$(mktemp -d)}"
mkdir -p "$out"
py="${PYTHON:-python3}"

gpu=$("$py" -c 'from talkgen.devices import present; print(next((d for d in present() if d != "cpu"), ""))')
"$py" - <<'PY'
import torch
from talkgen.devices import present
print(f"torch {torch.__version__}, CUDA build {torch.version.cuda or 'none'}; devices present: {', '.join(present())}")
for i in range(torch.cuda.device_count()):
    p = torch.cuda.get_device_properties(i)
    print(f"  cuda:{i} {p.name}, {p.total_memory / 2**30:.0f} GiB")
PY

echo "== device tests (every analysis, sample training, zoo, boundary; on each device present)"
"$py" -m pytest -q -p no:randomly -p no:cacheprovider -n 0 tests/test_devices.py

if [ -z "$gpu" ]; then
  echo "== no GPU present: the quick builds on CUDA and their comparison are skipped"
else
  echo "== quick build of the built-in talk: CPU, then $gpu (fresh caches)"
  for d in cpu "$gpu"; do
    start=$(date +%s.%N)
    "$py" -m talkgen build --profile quick --device "$d" --format slides --out "$out/build-$d" --quiet
    end=$(date +%s.%N)
    "$py" -c "print(f'  talkgen build --device $d: {$end - $start:.1f} s')"
  done
  echo "== the two builds' numbers (largest relative difference per analysis)"
  "$py" benchmarks/devices.py --compare "$out/build-cpu" "$out/build-$gpu"
fi

echo "== CPU against the GPU: attribution, zoo, loss landscape"
"$py" benchmarks/devices.py
echo "gpu_check: done"
