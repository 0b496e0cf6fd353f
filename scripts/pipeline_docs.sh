#!/usr/bin/env bash
# Regenerates the pipeline pictures of docs/pipeline.md (one SVG timeline per
# schedule, drawn by `epx-bench pipeline --svg`) and prints the comparison
# table of docs/performance.md. Needs a built epx-bench.
#
# Usage: scripts/pipeline_docs.sh [build-dir]     (default: <repo>/build)
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
bench="${1:-$root/build}/bin/epx-bench"
img="$root/docs/img/pipeline"
mkdir -p "$img"

# The published costs: F = 1, B = 2, W = 1, F&B = 3 (no compute overlap).
costs=(--cost-f 1 --cost-b 2 --cost-w 1 --cost-fb 3)
for s in gpipe 1f1b zb-h1 dualpipe dualpipev; do
  "$bench" pipeline --schedule "$s" --ranks 4 --microbatches 10 "${costs[@]}" \
    --svg "$img/$s.svg" > /dev/null
done
# The DeepSeek-V3 example: 8 ranks, 20 micro-batches.
"$bench" pipeline --schedule dualpipe --ranks 8 --microbatches 20 "${costs[@]}" \
  --svg "$img/dualpipe_8x20.svg" > /dev/null

# Comparison: makespan / max bubble / peak activations (micro-batches x 1/P of
# the model) / weight copies, per schedule and shape, with and without comm.
row() {  # ranks microbatches extra-options...
  local p=$1 m=$2
  shift 2
  local line="| $p | $m | $* |"
  for s in gpipe 1f1b zb-h1 dualpipe dualpipev; do
    if out=$("$bench" pipeline --schedule "$s" --ranks "$p" --microbatches "$m" "${costs[@]}" \
      "$@" --json 2> /dev/null); then
      line+=$(python3 -c 'import json,sys; r=json.loads(sys.argv[1]);
print(" %g / %g / %g / %d |" % (r["makespan"], r["max_bubble"], max(r["peak_activations"]),
      r["param_copies"]), end="")' "$out")
    else
      line+=" - |"
    fi
  done
  echo "$line"
}
echo "| ranks | micro-batches | extra costs | gpipe | 1f1b | zb-h1 | dualpipe | dualpipev |"
echo "| --- | --- | --- | --- | --- | --- | --- | --- |"
row 4 8
row 4 16
row 8 20
row 8 20 --cost-comm 1
row 8 20 --cost-comm 1 --cost-p2p 0.1
row 8 64
row 16 32
row 6 12 --cost-comm 0.5
