#!/bin/sh
# install.sh PREFIX VARIANT -- the image's install step, runnable anywhere (no Docker needed).
#
# Run from a vizdex source tree: creates a virtual environment at PREFIX and installs torch, then
# vizdex with exactly one FAISS build (VARIANT: gpu = faiss-gpu-cu12, cpu = faiss-cpu; the two
# cannot be installed together). torch goes first, pinned, so that resolving vizdex never picks
# another torch. Environment:
#   PYTHON           interpreter that creates the environment (default: python3)
#   TORCH_INDEX_URL  index for torch/torchvision only, e.g. https://download.pytorch.org/whl/cpu
#                    for CPU-only wheels (a much smaller image); empty = pip's configured index
set -eu

if [ "$#" -ne 2 ]; then
    echo "usage: $0 PREFIX gpu|cpu" >&2
    exit 2
fi
prefix=$1
variant=$2
case "$variant" in
    gpu | cpu) ;;
    *)
        echo "$0: VARIANT must be gpu or cpu, not '$variant'" >&2
        exit 2
        ;;
esac

"${PYTHON:-python3}" -m venv "$prefix"
if [ -n "${TORCH_INDEX_URL:-}" ]; then
    "$prefix/bin/pip" install --index-url "$TORCH_INDEX_URL" "torch==2.14.1" "torchvision==0.29.1"
else
    "$prefix/bin/pip" install "torch==2.14.1" "torchvision==0.29.1"
fi
# A build/ left by an earlier in-tree build would be reused by setuptools, and one from before
# vizdex 0.2 holds the old top-level packages (web, search, ...): build from a clean slate.
rm -rf build
# Not editable: the environment must work once the source tree is gone (the image drops it).
# psycopg (the postgres extra) and pymilvus (the milvus extra, the client only) are small and let
# the same image join the distributed profile, with FAISS or Milvus as its vector store.
"$prefix/bin/pip" install ".[$variant,postgres,milvus]"
