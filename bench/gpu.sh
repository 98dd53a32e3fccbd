#!/usr/bin/env bash
# One prepared GPU run (issue 15): device ceilings, training steps at batch 4 and 8, inference at
# 524,288 bp, the longest input, and Figure 1 at paper size (Borzoi in bf16 and fp32), in one
# device call of at most 9 minutes. The stages are `flashrna bench gpu` (flashrna/bench/gpu.py);
# each writes gpu-<stage>.json and rewrites gpu-summary.md as it finishes, so a run stopped at
# its limit keeps what it measured.
#
#   bench/gpu.sh wheels              here, with internet: the packages the device lacks, as
#                                    wheels in .whl/ (ignored by git; carry it to the device)
#   bench/gpu.sh [--dry-run] [OUT]   run the stages (OUT: $OUT on the device, else bench/);
#                                    --dry-run: every stage at tiny sizes, on a CPU too
#
# On the device (one call, with .whl carried):
#   run(command="bash bench/gpu.sh", carry=[".whl"], timeout_s=560)
# then copy gpu-*.json and gpu-summary.md from the returned files into bench/.
set -euo pipefail
python=${PYTHON:-python3}
cd "$(dirname "$0")/.."

# Not on the device image (see /work/.library/device/KINDS.md): Borzoi's package and what it
# and the trainer's data module import. intervaltree ships no wheel: pip builds one.
WHEELS=(borzoi-pytorch==0.5.1 intervaltree==3.1.0 crc32c==2.9.post0)

if [[ "${1:-}" == wheels ]]; then
    grep -qx '/.whl/' .git/info/exclude 2>/dev/null || echo '/.whl/' >> .git/info/exclude
    mkdir -p .whl
    "$python" -m pip wheel --no-deps -w .whl intervaltree==3.1.0
    "$python" -m pip download --no-deps --only-binary=:all: --python-version 3.12 \
        --implementation cp --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 \
        --platform manylinux2014_x86_64 -d .whl "${WHEELS[0]}" "${WHEELS[2]}"
    ls -l .whl
    exit 0
fi

dry=()
if [[ "${1:-}" == --dry-run ]]; then
    dry=(--dry-run)
    shift
fi
out=${1:-${OUT:-bench}}

if compgen -G ".whl/*.whl" > /dev/null; then
    "$python" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
        --target /tmp/flashrna-site .whl/*.whl
    export PYTHONPATH="/tmp/flashrna-site:${PYTHONPATH:-}"
fi
export PYTHONPATH="$PWD:${PYTHONPATH:-}" PYTHONUNBUFFERED=1

device=auto
if [[ ${#dry[@]} -gt 0 ]] && ! "$python" -c 'import torch, sys; sys.exit(not torch.cuda.is_available())'; then
    device=cpu
fi
command -v nvidia-smi > /dev/null && nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv
mkdir -p "$out"
set -o pipefail
"$python" -m flashrna.cli bench gpu --out "$out" --device "$device" "${dry[@]}" 2>&1 | tee "$out/gpu-log.txt"
