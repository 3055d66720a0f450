#!/usr/bin/env bash
# Build one point on the GPU (--backend cupy --cluster cuda) and on the CPU
# (--backend numpy --cluster local), then compare the two stores: X must be
# identical bit for bit, the kernels equal to the rounding of the GEMM.
#
# Needs the GPU extra (pip install '.[gpu]': CuPy and dask-cuda) and a CUDA device.
# Sizes can be changed through the environment: N, DIM, TILE, PYTHON.
set -euo pipefail

PYTHON=${PYTHON:-python}
N=${N:-8192}
DIM=${DIM:-2048}
TILE=${TILE:-2048}

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

if command -v nvidia-smi >/dev/null; then
    nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
fi
"$PYTHON" -c 'import cupy, dask_cuda; print("cupy", cupy.__version__, "dask-cuda", dask_cuda.__version__, "devices", cupy.cuda.runtime.getDeviceCount())'

common=(--n "$N" --dim "$DIM" --seed 0 --kernels ck,ntk --tile "$TILE" --progress log)

start=$(date +%s.%N)
"$PYTHON" -m implicit_rmt build "${common[@]}" --backend cupy --cluster cuda \
    --out "$work/gpu.zarr"
gpu_seconds=$(awk -v a="$start" -v b="$(date +%s.%N)" 'BEGIN { printf "%.1f", b - a }')

start=$(date +%s.%N)
"$PYTHON" -m implicit_rmt build "${common[@]}" --backend numpy --cluster local \
    --out "$work/cpu.zarr"
cpu_seconds=$(awk -v a="$start" -v b="$(date +%s.%N)" 'BEGIN { printf "%.1f", b - a }')

echo "build wall time: gpu ${gpu_seconds} s, cpu ${cpu_seconds} s (n=$N d=$DIM tile=$TILE)"

"$PYTHON" - "$work" "$DIM" <<'PYTHON'
import sys

import numpy as np

from implicit_rmt.store import open_store

work, dim = sys.argv[1], int(sys.argv[2])
gpu, cpu = open_store(f"{work}/gpu.zarr"), open_store(f"{work}/cpu.zarr")
same_x = np.array_equal(gpu["X"][:], cpu["X"][:])
print(f"X identical: {same_x}")
failed = not same_x
# cuBLAS and the host BLAS sum the d products of an entry in different orders:
# |Δt| <= d eps; the entry maps have slope < 2 away from t = 1 and are certified
# to 1e-13 of max|f|.
tolerance = 2 * dim * np.finfo(np.float64).eps + 1e-13
for name in cpu.spec.kernels:
    a, b = cpu[name][:], gpu[name][:]
    error = np.abs(a - b).max() / np.abs(a).max()
    ok = error <= tolerance
    failed |= not ok
    print(f"{name}: max |gpu - cpu| / max |cpu| = {error:.3e} (tolerance {tolerance:.1e}) {'ok' if ok else 'FAIL'}")
sys.exit(1 if failed else 0)
PYTHON
