#!/usr/bin/env bash
# Runs one libFuzzer harness for a bounded time (what `make fuzz` and `make test` do):
#   tests/fuzz/run.sh BINARY SEED_DIR WORK_DIR SECONDS
# The seeds are copied to WORK_DIR/corpus, which libFuzzer grows; the committed seed directory
# is never written. Any crash, leak, timeout (one input over 10 s) or out-of-memory (over 2 GB
# in use) fails the run: the log's tail is printed with the input that did it and the command
# that reproduces it. A clean run prints one summary line.
set -euo pipefail

if [ $# -ne 4 ]; then
  echo "usage: $0 BINARY SEED_DIR WORK_DIR SECONDS" >&2
  exit 2
fi
bin=$1 seeds=$2 work=$3 seconds=$4
name=$(basename "$bin")

rm -rf "$work"
mkdir -p "$work/corpus"
if [ -d "$seeds" ]; then cp "$seeds"/* "$work/corpus/" 2>/dev/null || true; fi
n_seeds=$(find "$work/corpus" -type f | wc -l)
# A libFuzzer dictionary beside the sources (NAME.dict) is used when there is one.
dict=$(dirname "$0")/$name.dict
extra=()
[ -f "$dict" ] && extra+=(-dict="$dict")

log=$work/log
rc=0
# One allocation over 64 MB fails (NULL), as it would on a machine without the memory, and the
# code must report that. Inputs stay within 4 KB, but what they claim is believed: libmatio
# allocates a 4 GB name that a 400-byte file asks for (ASan's shadow work for it takes seconds
# and could reach the 2 GB limit on memory in use, which still holds), and a 184-byte JPEG whose
# data ends early decodes, grey-padded by libjpeg, into 154 Mpixels (a harness that decodes it
# several times could pass the 10 s limit on a busy machine). UBSan aborts on its first report.
export ASAN_OPTIONS=${ASAN_OPTIONS:-symbolize=1:detect_leaks=1:allocator_may_return_null=1:max_allocation_size_mb=64}
export UBSAN_OPTIONS=${UBSAN_OPTIONS:-print_stacktrace=1:halt_on_error=1}
"$bin" -max_total_time="$seconds" -max_len=4096 -timeout=10 -rss_limit_mb=2048 \
  -print_final_stats=1 -artifact_prefix="$work/" "${extra[@]}" "$work/corpus" >"$log" 2>&1 || rc=$?

stat() { sed -n "s/^stat::$1: *//p" "$log" | tail -n 1; }
if [ $rc -ne 0 ]; then
  echo "fuzz $name: FAILED (exit $rc); the end of $log:"
  tail -n 60 "$log"
  for a in "$work"/crash-* "$work"/leak-* "$work"/timeout-* "$work"/oom-* "$work"/slow-unit-*; do
    [ -e "$a" ] || continue
    echo "fuzz $name: input $a; reproduce with:"
    echo "  ASAN_OPTIONS=$ASAN_OPTIONS UBSAN_OPTIONS=$UBSAN_OPTIONS $bin $a"
  done
  exit 1
fi
runs=$(stat number_of_executed_units)
rate=$(stat average_exec_per_sec)
rss=$(stat peak_rss_mb)
n_corpus=$(find "$work/corpus" -type f | wc -l)
echo "fuzz $name: ${runs:-?} runs in ${seconds} s (${rate:-?}/s), corpus $n_seeds -> $n_corpus," \
  "peak RSS ${rss:-?} MB: no crash, leak, timeout or OOM"
