#!/bin/sh
# Run a testbed command under netem and under the no-netem emulation (userspace delay stage, nft
# loss), interleaved, N times each, on one kernel and one CPU; meant for inside a guest:
#   testbed vm run --rwdir OUT -- scripts/emulation_ab.sh OUT 3 testbed satellite --short --stack kernel
# Each run gets --out OUT/netem<i> or OUT/no-netem<i>, and its log beside it.
set -eu
if [ $# -lt 3 ]; then
  echo "usage: $0 OUT_DIR RUNS TESTBED_COMMAND..." >&2
  exit 2
fi
out=$1 runs=$2 command=$3
shift 3
cd "$(dirname "$0")/.."
mkdir -p "$out"
i=1
while [ "$i" -le "$runs" ]; do
  TESTBED_EMULATION=auto ".venv/bin/$command" "$@" --out "$out/netem$i" > "$out/netem$i.log" 2>&1 || echo "netem run $i failed: $out/netem$i.log" >&2
  TESTBED_EMULATION=no-netem ".venv/bin/$command" "$@" --out "$out/no-netem$i" > "$out/no-netem$i.log" 2>&1 || echo "no-netem run $i failed: $out/no-netem$i.log" >&2
  i=$((i + 1))
done
