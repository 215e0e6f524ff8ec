#!/usr/bin/env bash
# Fuzzes the safetensors parser with libFuzzer (clang, ASan + UBSan).
#   tests/fuzz/run.sh [seconds]      default 180
# New inputs that add coverage are merged into tests/fuzz/corpus (kept small:
# -max_len 4096); crashes land in build-fuzz/crash-*. The normal test suite
# replays the corpus (test fuzz_corpus_replay) without clang.
set -euo pipefail
cd "$(dirname "$0")/../.."
SECS=${1:-180}
OUT=${WSISEG_FUZZ_DIR:-build-fuzz}
CC=${CLANG:-clang}
if ! command -v "$CC" >/dev/null; then
  echo "clang not found: apt-get install clang libclang-rt-14-dev" >&2
  exit 1
fi
mkdir -p "$OUT/new"
# shellcheck disable=SC2046
"$CC" -g -O1 -fsanitize=fuzzer,address,undefined -fno-sanitize-recover=undefined \
  -DWSI_LIBFUZZER -Imodels/engine $(pkg-config --cflags json-glib-1.0 glib-2.0) \
  tests/fuzz/fuzz_safetensors.c models/engine/safetensors.c \
  $(pkg-config --libs json-glib-1.0 glib-2.0) -lm -o "$OUT/fuzz_safetensors"
[ -n "$(ls -A tests/fuzz/corpus 2>/dev/null)" ] || /usr/bin/python3 tests/fuzz/make_seeds.py
"$OUT/fuzz_safetensors" -max_total_time="$SECS" -max_len=4096 -timeout=10 \
  -rss_limit_mb=2048 -dict=tests/fuzz/safetensors.dict -artifact_prefix="$OUT/" \
  -print_final_stats=1 "$OUT/new" tests/fuzz/corpus
"$OUT/fuzz_safetensors" -merge=1 -max_len=4096 tests/fuzz/corpus "$OUT/new"
echo "corpus: $(ls tests/fuzz/corpus | wc -l) files, $(du -sb tests/fuzz/corpus | cut -f1) bytes"
