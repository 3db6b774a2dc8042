#!/usr/bin/env bash
# Fails when ptxas reports register spills in any kernel or device function of one nvcc
# compilation. Usage: check_ptxas.sh LOG SOURCE, LOG being nvcc's stderr with -Xptxas -v.
# A spill is local-memory traffic the register allocator added; it is never intended in our
# hand-written kernels, so the build stops and names the kernel (demangled), the architecture
# and the byte counts.
set -euo pipefail
log=$1
src=$2
demangle=cat
command -v c++filt >/dev/null 2>&1 && demangle=c++filt
awk -v src="$src" '
    /Compiling entry function/ {
        match($0, /function .*\x27 for/); fn = substr($0, RSTART + 10, RLENGTH - 15)
        match($0, /for \x27sm_[0-9a-z]+\x27/); arch = substr($0, RSTART + 5, RLENGTH - 6)
    }
    /Function properties for/ { sub(/.*Function properties for /, ""); fn = $0 }
    /bytes spill stores/ {
        stores = $0; sub(/ bytes spill stores.*/, "", stores); sub(/.*, /, "", stores)
        loads = $0; sub(/ bytes spill loads.*/, "", loads); sub(/.*, /, "", loads)
        if (stores + 0 > 0 || loads + 0 > 0) {
            printf "%s: register spills in %s (%s): %d bytes stored, %d bytes loaded\n", src, fn, arch, stores, loads
            bad = 1
        }
    }
    END { exit bad }
' "$log" | $demangle >&2
exit "${PIPESTATUS[0]}"
