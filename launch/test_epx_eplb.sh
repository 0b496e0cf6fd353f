#!/usr/bin/env bash
# Checks epx-eplb end to end: DeepSeek's published example (exact phy2log with
# --policy eplb), the balanced default, --help, and one-line errors with a
# non-zero exit. Run by ctest: test_epx_eplb.sh path/to/epx-eplb
set -u
eplb=$1
dir=$(mktemp -d)
trap 'rm -rf "$dir"' EXIT
# run, fail, expect_status, expect_in; $failures counts.
source "$(dirname "${BASH_SOURCE[0]}")/test_helpers.sh"
expect_one_line() { [[ $(printf '%s\n' "$out" | wc -l) -eq 1 ]] || fail "$1: more than one line"; }

cat >"$dir/example.json" <<'JSON'
{"weight": [[90, 132, 40, 61, 104, 165, 39, 4, 73, 56, 183, 86],
            [20, 107, 104, 64, 19, 197, 187, 157, 172, 86, 16, 27]]}
JSON
example=(--input "$dir/example.json" --replicas 16 --groups 4 --nodes 2 --gpus 8)

# 1. The published example, exactly, to stdout.
run "$eplb" "${example[@]}" --policy eplb
expect_status 0 "example"
expect_in '"phy2log":[[5,6,5,7,8,4,3,4,10,9,10,2,0,1,11,1],[7,10,6,8,6,11,8,9,2,4,5,1,5,0,3,1]]' "example phy2log"
expect_in '"logcnt":[[1,2,1,1,2,2,1,1,1,1,2,1],' "example logcnt"
expect_in '"policy":"eplb"' "example policy"
expect_in '"gpu_max_over_mean":[' "example quality"

# 2. The default policy, to a file: valid counts (16 slots per layer).
run "$eplb" "${example[@]}" --output "$dir/out.json"
expect_status 0 "balanced to file"
[[ -z "$out" ]] || fail "balanced to file: printed '$out'"
out=$(cat "$dir/out.json")
expect_in '"policy":"balanced"' "balanced policy"
expect_in '"phy2log":[[' "balanced phy2log"

# 3. --help documents every flag.
run "$eplb" --help
expect_status 0 "--help"
for flag in --input --replicas --groups --nodes --gpus --policy --output --help; do
  expect_in "$flag" "--help documents $flag"
done

# 4. Errors: one line, non-zero exit, naming the problem.
run "$eplb" "${example[@]}" --replicas 10
expect_status 2 "duplicate flag"
expect_one_line "duplicate flag"
run "$eplb" --input "$dir/example.json" --replicas 12 --groups 4 --nodes 2 --gpus 8
expect_status 1 "replicas not a multiple of gpus"
expect_in "num_replicas = 12" "replicas not a multiple of gpus"
expect_one_line "replicas not a multiple of gpus"
echo '{"weight": [[1, 2, -3, 4]]}' >"$dir/negative.json"
run "$eplb" --input "$dir/negative.json" --replicas 4 --groups 1 --nodes 1 --gpus 1
expect_status 1 "negative load"
expect_in "load[0,2] = -3" "negative load"
expect_one_line "negative load"
echo '{"weight": [[1, 2], [3]]}' >"$dir/ragged.json"
run "$eplb" --input "$dir/ragged.json" --replicas 2 --groups 1 --nodes 1 --gpus 1
expect_status 1 "ragged rows"
expect_in "weight[1]" "ragged rows"
run "$eplb" --input "$dir/missing.json" --replicas 2 --groups 1 --nodes 1 --gpus 1
expect_status 1 "missing file"
expect_in "cannot read" "missing file"
run "$eplb" "${example[@]}" --policy best
expect_status 2 "bad policy"
expect_in "--policy = 'best'" "bad policy"
run "$eplb" --input "$dir/example.json" --replicas 16
expect_status 2 "missing flags"
expect_in "missing --groups" "missing flags"

# 5. Hostile input: one short line and exit 1, never a crash or the input echoed.
expect_short() { ((${#out} < 400)) || fail "$1: ${#out} characters of message"; }
{ printf '{"weight": '; head -c 100000 /dev/zero | tr '\0' '['; } >"$dir/deep.json"
run "$eplb" --input "$dir/deep.json" --replicas 4 --groups 1 --nodes 1 --gpus 1
expect_status 1 "100000 deep"; expect_in "input: nested deeper than" "100000 deep"
expect_one_line "100000 deep"; expect_short "100000 deep"
{ printf '{"weight": [[1, "'; head -c 100000 /dev/zero | tr '\0' 'x'; printf '"]]}'; } >"$dir/long.json"
run "$eplb" --input "$dir/long.json" --replicas 2 --groups 1 --nodes 1 --gpus 1
expect_status 1 "long string"; expect_in "weight[0][1] is string, not a number" "long string"
expect_short "long string"
{ printf '{"weight": [[1, "'; head -c 100000 /dev/zero | tr '\0' 'x'; } >"$dir/unterminated.json"
run "$eplb" --input "$dir/unterminated.json" --replicas 2 --groups 1 --nodes 1 --gpus 1
expect_status 1 "unterminated"; expect_in "input: not JSON" "unterminated"
expect_one_line "unterminated"; expect_short "unterminated"
echo '{"weight": [[1, 18446744073709551615]]}' >"$dir/u64.json"
run "$eplb" --input "$dir/u64.json" --replicas 2 --groups 1 --nodes 1 --gpus 1
expect_status 1 "2^64-1"; expect_in "input: weight[0][1] = 18446744073709551615" "2^64-1"
expect_not_in "= -1" "2^64-1"; expect_one_line "2^64-1"
echo '{"weight": [[1.5, 1e308]]}' >"$dir/big.json"
run "$eplb" --input "$dir/big.json" --replicas 2 --groups 1 --nodes 1 --gpus 1
expect_status 1 "1e308"; expect_in "input: weight[0][1] = 1e+308" "1e308"
expect_not_in "inf" "1e308"; expect_one_line "1e308"
echo '{"weight": [[1, 1e309]]}' >"$dir/huge.json"
run "$eplb" --input "$dir/huge.json" --replicas 2 --groups 1 --nodes 1 --gpus 1
expect_status 1 "1e309"; expect_in "input: not JSON" "1e309"; expect_in "1e309" "1e309"
expect_one_line "1e309"

# 6. Sizes are bounded, and the error says by what.
for flag in --replicas --groups --nodes --gpus; do
  args=("${example[@]}")
  for i in "${!args[@]}"; do [[ ${args[$i]} == "$flag" ]] && args[i + 1]=1000000; done
  run "$eplb" "${args[@]}"
  expect_status 2 "$flag 1000000"; expect_in "$flag = '1000000', expected" "$flag 1000000"
  expect_in "65536" "$flag 1000000"; expect_one_line "$flag 1000000"
done

if ((failures > 0)); then
  echo "test_epx_eplb: $failures failure(s)"
  exit 1
fi
echo "test_epx_eplb: OK"
