#!/bin/bash
# Everything a GPU machine should confirm, in one run (about 5 minutes on an H100):
# the CUDA tests, each ingest stage alone, end-to-end ingest and encode against the naive
# pipeline. Logs land in $OUT (or ./gpu-results). Run from the repository root with vizdex's
# dependencies importable, e.g. `bash benchmarks/gpu_check.sh`.
set -o pipefail
out=${OUT:-gpu-results}
mkdir -p "$out"
export PYTHONUNBUFFERED=1 TRANSFORMERS_VERBOSITY=error HF_HUB_DISABLE_PROGRESS_BARS=1
python=${PYTHON:-python3}
step() { echo "=== $(date +%T) $*"; }

step "GPU"
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader | tee "$out/gpu.txt"
step "CUDA tests"
timeout 300 "$python" -m pytest -q -rs -p no:cacheprovider tests/unit/test_gpu_encoders.py \
  tests/unit/test_device_jpeg.py tests/unit/test_streaming.py tests/unit/test_fused_clip.py \
  tests/unit/test_device_path_units.py tests/unit/test_indexer_units.py \
  tests/integration/test_indexer_pipeline.py tests/unit/test_index.py 2>&1 | tail -15 | tee "$out/tests.log"
step "FAISS GPU"
# The CUDA tests above include the FAISS GPU test, which skips without a FAISS GPU build (pip's
# faiss-cpu has none; `pip install 'vizdex[gpu]'` brings faiss-gpu-cu12). Say so loudly: a skip
# here means GPU search was not checked at all.
"$python" -c "
import faiss
build = hasattr(faiss, 'StandardGpuResources')
seen = faiss.get_num_gpus() if build else 0
print(f'faiss {faiss.__version__}: GPU build: {\"yes\" if build else \"no\"}; GPUs it sees: {seen}')
" 2>&1 | tee "$out/faiss_gpu.txt"
timeout 120 "$python" -m pytest -q -p no:cacheprovider -rs -m gpu tests/unit/test_index.py \
  2>&1 | tee "$out/faiss_gpu_test.log" | tail -5
if grep -q "SKIPPED" "$out/faiss_gpu_test.log"; then
  why=$(grep -m1 "SKIPPED" "$out/faiss_gpu_test.log" | sed 's/^SKIPPED \[[0-9]*\] [^ ]* //')
  echo "!!! FAISS GPU TEST SKIPPED: ${why} -- GPU search NOT checked (install faiss-gpu-cu12)" \
    | tee -a "$out/faiss_gpu.txt"
elif grep -qE "[0-9]+ passed" "$out/faiss_gpu_test.log" && ! grep -q "failed" "$out/faiss_gpu_test.log"; then
  echo "FAISS GPU test passed" | tee -a "$out/faiss_gpu.txt"
else
  echo "!!! FAISS GPU TEST FAILED or did not run: see $out/faiss_gpu_test.log" | tee -a "$out/faiss_gpu.txt"
fi
step "photos"
"$python" -c "from benchmarks.common import photo_set; photo_set(4000, 3000, 512); photo_set(640, 480, 4096)"
step "ingest (issue goals: 600 img/s at 12 MP, 5,000 img/s at 640x480)"
timeout 300 "$python" -m benchmarks.ingest --device cuda --large 512 --small 4096 --batch 256 \
  2>&1 | tee "$out/ingest.log"
step "stages"
timeout 150 "$python" -m benchmarks.stages --device cuda --large 128 --small 1024 --batch 256 \
  2>&1 | grep -v Loading | tee "$out/stages.log"
step "encode"
timeout 200 "$python" -m benchmarks.encode --device cuda --large 128 --small 1024 --batch 256 \
  2>&1 | grep -v Loading | tee "$out/encode.log"
step "done"
