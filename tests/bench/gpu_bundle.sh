#!/usr/bin/env bash
# gpu_bundle.sh (make gpu-bundle): run here, before a GPU session, to pack what tests/bench/gpu_session.sh needs
# into .gpu-bundle/ (ignored by git; the device tool's run call carries it: carry [".gpu-bundle"]). The GPU
# machine's image has CUDA, PyTorch and NumPy but none of the C libraries the tools link (HDF5, zstd, OpenBLAS,
# libjpeg, Open MPI) and cannot install any, so the tools are built here, CUDA backend included (CUDA 13 here
# and there), and travel with those libraries:
#   build.tar.xz  build/config.mk, the HDF5 filter plugin, the tools that do not decode video (FFmpeg's
#                 libraries are large and nothing on the GPU decodes), test_kernels, test_cuda_arith, train_step;
#                 each program's library path (DT_RPATH, patchelf) names build/gpu-lib, then CUDA's
#                 /usr/local/cuda/lib64; the copies in build/ here are left as they are;
#   lib.tar.xz    for build/gpu-lib: every shared library these load, except the C runtime (glibc, libstdc++,
#                 libgcc_s: the machine's are at least as new) and CUDA's (cudart, cuBLAS(Lt), NCCL, the
#                 driver: the machine's own, matching its driver); each one's path names its own folder, so
#                 nothing in them is looked up in the machine's /usr/lib;
#   MANIFEST      the commit, the files and the libraries, for the session log.
# Before it packs, it unpacks the bundle into a scratch folder and runs each tool's --version there with
# LD_DEBUG=libs: it fails if any library other than the C runtime's and CUDA's would come from this machine.
# The bundle must stay under the device tool's 64 MiB with the working tree: the script says the size.
# Usage: tests/bench/gpu_bundle.sh [OUTDIR]   (default .gpu-bundle; needs patchelf)
set -euo pipefail
cd "$(dirname "$0")/../.."
out=${1:-.gpu-bundle}
command -v patchelf >/dev/null || { echo "gpu_bundle: needs patchelf (apt-get install patchelf)" >&2; exit 1; }
make -j"$(nproc)" all build/rel/tests/test_kernels build/rel/tests/test_cuda_arith build/bench/train_step
grep -q '^HAVE_CUBLAS := 1' build/config.mk || {
    echo "gpu_bundle: this build has no CUDA backend (build/config.mk): nothing to send to a GPU" >&2
    exit 1
}
progs=(build/rel/tests/test_kernels build/rel/tests/test_cuda_arith build/bench/train_step build/plugin/*.so)
for t in build/bin/*; do
    ldd "$t" | grep -q 'libavcodec' || progs+=("$t")
done
system='/(ld-linux[^/]*|libc|libm|libpthread|libdl|librt|libresolv|libutil|libgcc_s|libstdc\+\+)\.so'
cuda='/lib(cudart|cublas|cublasLt|nccl|cuda)\.so'
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
mkdir -p "$tmp/tree/build/gpu-lib"
cp --parents -a build/config.mk "${progs[@]}" "$tmp/tree/"
for p in "${progs[@]}"; do
    ldd "$p" | awk '$2 == "=>" && $3 ~ /^\// {print $3}'
done | sort -u | grep -v -E "$system" | grep -v -E "$cuda" >"$tmp/libs" || true
while read -r l; do
    cp -L "$l" "$tmp/tree/build/gpu-lib/"
    patchelf --force-rpath --set-rpath '$ORIGIN' "$tmp/tree/build/gpu-lib/$(basename "$l")"
done <"$tmp/libs"
for p in "${progs[@]}"; do # $ORIGIN/.. up to build/, then gpu-lib
    up=$(dirname "${p#build/}" | sed 's|[^/][^/]*|..|g')
    patchelf --force-rpath --set-rpath "\$ORIGIN/$up/gpu-lib:/usr/local/cuda/lib64" "$tmp/tree/$p"
done
# The check: what each tool loads, and from where.
bad=0
for t in "$tmp"/tree/build/bin/*; do
    from=$(LD_DEBUG=libs "$t" --version 2>&1 >/dev/null | sed -n 's/.*calling init: //p' | sort -u)
    stray=$(grep -v -E "$system|$cuda" <<<"$from" | grep -v "^$tmp/tree/build/.*gpu-lib/[^/]*$" || true)
    if [ -n "$stray" ]; then
        echo "gpu_bundle: $(basename "$t") loads from this machine: $stray" >&2
        bad=1
    fi
done
[ $bad = 0 ] || exit 1
rm -rf "$out"
mkdir -p "$out"
tar -C "$tmp/tree" -cf - build/config.mk "${progs[@]}" | xz -6 -T"$(nproc)" >"$out/build.tar.xz"
tar -C "$tmp/tree/build/gpu-lib" -cf - . | xz -9 -T"$(nproc)" >"$out/lib.tar.xz"
{
    echo "commit $(git describe --tags --always --dirty)"
    echo "built on $(. /etc/os-release && echo "$PRETTY_NAME"), $(ldd --version | head -1)"
    echo "files: ${progs[*]}"
    echo "libraries: $(xargs -n1 basename <"$tmp/libs" | tr '\n' ' ')"
} >"$out/MANIFEST"
size=$(du -cb "$out"/* | tail -1 | cut -f1)
tree=$(git ls-files -z | du -cb --files0-from=- | tail -1 | cut -f1)
echo "gpu_bundle: $out: $((size / 1048576)) MiB ($(wc -l <"$tmp/libs") libraries, each tool checked), working" \
    "tree $((tree / 1048576)) MiB; the device tool carries 64 MiB in all"
[ $((size + tree)) -lt $((64 * 1048576)) ] || { echo "gpu_bundle: over 64 MiB" >&2; exit 1; }
