#!/usr/bin/env bash
# epx-serve and epx-generate end to end, one scenario per ctest entry:
#   run_serve_test.sh BUILD_BIN_DIR SOURCE_DIR WORK_DIR SCENARIO
# Each scenario first trains a small checkpoint (tests/train/small.yaml, 200
# steps on 1 rank, about a second).
# ep      greedy and seeded outputs equal on 1 rank and EP over 2 and 4 ranks,
#         with and without --deterministic, decode in normal and low-latency
#         mode (with and without the two-batch overlap); chunked prefill; bad flags
# logits  the first token's logits against the training forward (serve_logits_check)
# http    the real server on a loopback port (low-latency decode, overlapped): against epx-generate, streaming,
#         stop strings, concurrent clients, metrics (http_checks.py); bad inputs with curl
# drain   a full queue answers 503 with Retry-After; a client that leaves mid-stream
#         frees its cache; SIGTERM drains (in flight finishes, new get 503) and exits 0
# dead    a rank killed mid-request (mpirun with orte_enable_recovery): 503 and a stream error
#         event naming it, the job exits non-zero within the timeout; no hang
# bench   epx-bench serve launches a 2-rank server, drives it at 1 and 4 clients, stops it
# balance the live balancer while serving (--set balancer.*): redundant experts, a
#         rebalance every 3 steps during decode, on 2 and 4 ranks, normal and low-latency
#         decode, epx-generate and 4 concurrent server requests: outputs bit for bit those
#         without it (--deterministic), rebalances logged and in /metrics; bad slot counts
# fp8     --fp8-dispatch on a hidden-128 model (small.yaml's shape otherwise, 20 steps):
#         greedy outputs equal on 1, 2 and 4 ranks, normal and low-latency decode, auto;
#         config = parallel.fp8_dispatch; the server's line and /metrics gauge; logits
#         against the training fp8 forward (serve_logits_check --fp8); bad values (exit 2)
#         and a hidden not a multiple of 128 (exit 1), each one line
set -uo pipefail
bin=$1 src=$2 work=$3 scenario=$4
rm -rf "$work" && mkdir -p "$work" && cd "$work" || exit 1
export EPX_TIMEOUT_S=${EPX_TIMEOUT_S:-30}

# Every process under pid $1 (epxrun runs mpirun, which runs the ranks).
descendants() {
  local p
  for p in $(ps -o pid= --ppid "$1"); do
    echo "$p"
    descendants "$p"
  done
}

# A server still running when the script ends (a failed check) goes with it:
# its ranks by pid, then mpirun and epxrun.
server_pid=
cleanup() {
  [[ -n $server_pid ]] && kill -0 "$server_pid" 2>/dev/null || return 0
  local ranks
  ranks=$(descendants "$server_pid" | tac)
  # shellcheck disable=SC2086
  kill -9 $ranks "$server_pid" 2>/dev/null
}
trap cleanup EXIT

fail() {
  echo "serve test $scenario: FAILED: $*"
  [[ -f server.log ]] && { echo "--- server.log"; cat server.log; }
  exit 1
}

train() {
  timeout 120 "$bin/epxrun" -n 1 -- "$bin/epx-train" "$src/tests/train/small.yaml" --set "train.checkpoint_dir=$work/ck" \
    --set train.max_steps=200 --set train.checkpoint_every=0 --set train.seq_len=64 >train.log 2>&1 ||
    { cat train.log; fail "training the checkpoint"; }
}

# generate OUT RANKS ARGS...: epx-generate's response JSON into OUT.
generate() {
  local out=$1 n=$2
  shift 2
  timeout 120 "$bin/epxrun" -n "$n" -- "$bin/epx-generate" --model "$work/ck" --json "$@" >"$out.raw" 2>"$out.err" ||
    { cat "$out.err"; fail "epx-generate -n $n $*"; }
  grep '^{' "$out.raw" >"$out" || fail "epx-generate -n $n $*: no JSON"
}

# train128: the same small model with hidden 128 (fp8 dispatch's 1x128 blocks), 20 steps, into $work/ck128.
train128() {
  timeout 120 "$bin/epxrun" -n 1 -- "$bin/epx-train" "$src/tests/train/small.yaml" --set "train.checkpoint_dir=$work/ck128" \
    --set model.hidden_size=128 --set train.max_steps=20 --set train.checkpoint_every=0 --set train.seq_len=64 \
    >train128.log 2>&1 || { cat train128.log; fail "training the hidden-128 checkpoint"; }
}

# expect_bad RC WANT PROGRAM ARGS...: PROGRAM on 2 ranks exits RC and prints one line of its own,
# saying WANT (a FAILED line with RC 1).
expect_bad() {
  local want_rc=$1 want=$2 prog=$3 rc lines
  shift 3
  timeout 60 "$bin/epxrun" -n 2 -- "$bin/$prog" "$@" >bad.log 2>&1
  rc=$?
  ((rc == want_rc)) || { cat bad.log; fail "$prog $*: exit status $rc, expected $want_rc"; }
  grep -qF -- "$want" bad.log || { cat bad.log; fail "$prog $*: the error does not say '$want'"; }
  lines=$(grep -c "^$prog:" bad.log)
  ((lines == 1)) || { cat bad.log; fail "$prog $*: $lines lines from $prog, expected one"; }
  ((rc != 1)) || grep -q "^$prog: FAILED: " bad.log || { cat bad.log; fail "$prog $*: no FAILED line"; }
  echo "ok: exit $rc: $(grep "^$prog:" bad.log)"
}

ids() { python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["choices"][0]["token_ids"])' "$1"; }

# start_server RANKS ARGS...: epx-serve on a free port; sets port, server_pid (epxrun's), rank0_pid.
start_server() {
  local n=$1
  shift
  "$bin/epxrun" -n "$n" -- "$bin/epx-serve" --model "$work/ck" --port 0 "$@" >server.log 2>&1 &
  server_pid=$!
  for _ in $(seq 100); do
    grep -q "listening on" server.log && break
    kill -0 $server_pid 2>/dev/null || fail "epx-serve exited at start"
    sleep 0.2
  done
  port=$(grep -o 'http://127.0.0.1:[0-9]*' server.log | cut -d: -f3)
  rank0_pid=$(grep -o '(pid [0-9]*' server.log | cut -d' ' -f2)
  [[ -n $port && -n $rank0_pid ]] || fail "epx-serve did not say where it listens"
  echo "server: port $port, rank 0 pid $rank0_pid ($n ranks $*)"
}

# stop_server: SIGTERM to rank 0; every rank must exit 0 within 30 s.
stop_server() {
  kill -TERM "$rank0_pid"
  for _ in $(seq 150); do
    kill -0 $server_pid 2>/dev/null || break
    sleep 0.2
  done
  kill -0 $server_pid 2>/dev/null && { kill -9 $server_pid; fail "epx-serve did not exit after SIGTERM"; }
  wait $server_pid
  local rc=$?
  ((rc == 0)) || fail "epx-serve exited $rc after SIGTERM, expected 0"
  grep -q "epx-serve: stopped" server.log || fail "no 'stopped' line"
}

# wait_running: until /metrics shows a running request (10 s at most).
# running N: whether /metrics says N requests are running. The page is read
# whole before grep sees it: with pipefail, `curl | grep -q` fails when grep
# leaves at the first match and curl's next write meets a closed pipe.
running() {
  local m
  m=$(curl -s "http://127.0.0.1:$port/metrics")
  grep -q "^epx_requests_running $1\$" <<<"$m"
}

wait_running() {
  for _ in $(seq 100); do
    running 1 && return
    sleep 0.1
  done
  fail "no request started running"
}

# curl_json BODY: sets status and body of POST /v1/completions.
curl_json() {
  body=$(curl -s -o - -w '\n%{http_code}' --max-time 30 -H 'Content-Type: application/json' \
    --data-binary "$1" "http://127.0.0.1:$port/v1/completions")
  status=${body##*$'\n'}
  body=${body%$'\n'*}
}

train
case "$scenario" in
ep)
  args=(--prompt "The 'tabstop' option" --max-tokens 40)
  sampled=(--prompt "When 'wrap' is set" --max-tokens 40 --temperature 0.9 --top-p 0.95 --seed 11)
  for n in 1 2 4; do
    generate "greedy$n.json" $n "${args[@]}"
    generate "greedy_det$n.json" $n "${args[@]}" --deterministic
    generate "sampled_det$n.json" $n "${sampled[@]}" --deterministic
    generate "chunked_det$n.json" $n "${args[@]}" --deterministic --prefill-chunk 3
    generate "greedy_ll$n.json" $n "${args[@]}" --decode-mode low-latency
    generate "sampled_ll$n.json" $n "${sampled[@]}" --decode-mode low-latency
    generate "greedy_ovl$n.json" $n "${args[@]}" --decode-mode low-latency --overlap on
    generate "greedy_auto$n.json" $n "${args[@]}" --decode-mode auto --batch 3 --deterministic
    grep -q "^epx-generate: decode mode by batch (start-up measurement" "greedy_auto$n.json.err" ||
      fail "--decode-mode auto on $n ranks logged no choice"
    echo "ok: $n ranks: $(grep -o 'decode mode by batch.*' "greedy_auto$n.json.err")"
  done
  for kind in greedy greedy_det sampled_det chunked_det greedy_ll sampled_ll greedy_ovl greedy_auto; do
    for n in 2 4; do
      [[ "$(ids $kind$n.json)" == "$(ids ${kind}1.json)" ]] ||
        fail "$kind: EP over $n ranks gives $(ids $kind$n.json), 1 rank $(ids ${kind}1.json)"
    done
    echo "ok: $kind: the same $(python3 -c 'import json,sys; print(len(json.load(open(sys.argv[1]))["choices"][0]["token_ids"]))' ${kind}1.json) tokens on 1, 2 and 4 ranks"
  done
  [[ "$(ids chunked_det1.json)" == "$(ids greedy_det1.json)" ]] || fail "prefill in chunks of 3 differs"
  [[ "$(ids greedy_ll1.json)" == "$(ids greedy1.json)" ]] || fail "low-latency decode differs from normal (greedy)"
  [[ "$(ids sampled_ll1.json)" == "$(ids sampled_det1.json)" ]] || fail "low-latency decode differs (sampled)"
  [[ "$(ids greedy_ovl1.json)" == "$(ids greedy1.json)" ]] || fail "two-batch overlap decode differs from normal (greedy)"
  [[ "$(ids greedy_auto1.json)" == "$(ids greedy_det1.json)" ]] || fail "--decode-mode auto (3 copies) differs from normal"
  echo "ok: low-latency decode, with and without the two-batch overlap, gives the normal mode's outputs"
  # The exported file with the config beside it: the same model.
  "$bin/epx-train" --export "$work/ck" "$work/model.safetensors" >/dev/null || fail "--export"
  python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["config"])' "$work/ck/step-200/state.json" >model.yaml
  timeout 120 "$bin/epxrun" -n 2 -- "$bin/epx-generate" --model "$work/model.safetensors" --config model.yaml \
    --json "${args[@]}" 2>exported.err | grep '^{' >exported.json || { cat exported.err; fail "the exported file"; }
  [[ "$(ids exported.json)" == "$(ids greedy1.json)" ]] || fail "the exported file with --config differs"
  echo "ok: an exported .safetensors with --config gives the checkpoint's output"
  generate again.json 2 "${sampled[@]}" --deterministic
  [[ "$(ids again.json)" == "$(ids sampled_det1.json)" ]] || fail "the same seed gave another output"
  generate other.json 2 "${sampled[@]/#11/12}" --deterministic
  [[ "$(ids other.json)" != "$(ids sampled_det1.json)" ]] || fail "seeds 11 and 12 gave the same output"
  echo "ok: a seed fixes the sampled output; another seed changes it"
  # Bad flags and models: one line, non-zero exit, before any work.
  bad=(
    "--max-tokens 0|--max-tokens = '0', expected an integer in [1,"
    "--max-batch x|--max-batch = 'x', expected an integer"
    "--frobnicate|unknown option '--frobnicate'"
    "--max-tokens 60|this model's context length is 64 tokens, but the prompt has 20 tokens and max_tokens is 60"
    "--kv-memory 1 --max-context 100000|fewer than the 6250 that one request of --max-context 100000 needs"
    "--temperature -1|temperature = -1, expected >= 0"
    "--model /nonexistent|--model /nonexistent: no such file or directory"
    "--decode-mode fast|--decode-mode = 'fast', expected normal, low-latency or auto"
    "--overlap sometimes|--overlap = 'sometimes', expected on, off or alternate"
  )
  for c in "${bad[@]}"; do
    flags=${c%%|*} want=${c#*|}
    # shellcheck disable=SC2086
    timeout 60 "$bin/epxrun" -n 2 -- "$bin/epx-generate" --model "$work/ck" --prompt "The 'tabstop' option" $flags \
      >bad.log 2>&1 && { cat bad.log; fail "$flags was accepted"; }
    grep -qF -- "$want" bad.log || { cat bad.log; fail "$flags: the error does not say '$want'"; }
    lines=$(grep -c "^epx-generate:" bad.log)
    ((lines == 1)) || { cat bad.log; fail "$flags: $lines lines from epx-generate, expected one"; }
    echo "ok: $flags -> $(grep "^epx-generate:" bad.log)"
  done
  ;;
balance)
  args=(--prompt "The 'tabstop' option" --max-tokens 40 --deterministic)
  on=(--set balancer.enabled=true --set balancer.every=3 --set balancer.window=4)
  export EPX_LOG_LEVEL=INFO EPX_LOG_SUBSYS=BALANCER
  for mode in normal low-latency; do
    generate "plain_$mode.json" 2 "${args[@]}" --decode-mode "$mode"
    for n in 2 4; do
      generate "bal${n}_$mode.json" $n "${args[@]}" --decode-mode "$mode" "${on[@]}" \
        --set balancer.redundant_experts=$n
      [[ "$(ids "bal${n}_$mode.json")" == "$(ids "plain_$mode.json")" ]] ||
        fail "$mode decode with the balancer on $n ranks gives $(ids "bal${n}_$mode.json"), without $(ids "plain_$mode.json")"
      moves=$(grep -c "epx-serve: rebalance at step" "bal${n}_$mode.json.err")
      ((moves >= 10)) || { cat "bal${n}_$mode.json.err"; fail "$mode on $n ranks: $moves rebalances, expected >= 10"; }
      echo "ok: $mode decode, $n ranks, $n redundant experts: the same tokens through $moves rebalances;" \
        "last: $(grep -o 'rebalance at step.*' "bal${n}_$mode.json.err" | tail -1)"
    done
  done
  # The server: 4 requests at once, each against epx-generate without the balancer.
  prompts=("The 'tabstop' option" "When 'wrap' is set" "'shiftwidth' 'sw'" "Vim option")
  for i in "${!prompts[@]}"; do
    generate "want$i.json" 1 --prompt "${prompts[$i]}" --max-tokens 30 --deterministic
  done
  start_server 2 --deterministic --decode-mode low-latency --max-batch 4 "${on[@]}" --set balancer.redundant_experts=2
  curls=()
  for i in "${!prompts[@]}"; do
    body=$(python3 -c 'import json,sys; print(json.dumps({"prompt": sys.argv[1], "max_tokens": 30, "temperature": 0}))' "${prompts[$i]}")
    curl -s --max-time 60 -H 'Content-Type: application/json' --data-binary "$body" \
      "http://127.0.0.1:$port/v1/completions" >"got$i.json" &
    curls+=($!)
  done
  wait "${curls[@]}"
  for i in "${!prompts[@]}"; do
    [[ "$(ids "got$i.json")" == "$(ids "want$i.json")" ]] ||
      fail "request $i through the balancing server: $(cat "got$i.json"), want $(ids "want$i.json")"
  done
  m=$(curl -s "http://127.0.0.1:$port/metrics")
  n=$(awk '/^epx_rebalances_total /{print $2}' <<<"$m")
  ((n >= 5)) || fail "/metrics: epx_rebalances_total = ${n:-none}, expected >= 5"
  grep -q '^epx_rebalance_moved_bytes_total [1-9]' <<<"$m" || fail "/metrics: no moved bytes"
  echo "ok: 4 concurrent requests through $n rebalances, each the same tokens as without the balancer"
  stop_server
  # Slots that do not split over the ranks: one line, before any work.
  timeout 60 "$bin/epxrun" -n 2 -- "$bin/epx-generate" --model "$work/ck" --prompt x "${on[@]}" \
    --set balancer.redundant_experts=1 >bad.log 2>&1 && { cat bad.log; fail "9 slots on 2 ranks were accepted"; }
  want="balancer.redundant_experts = 1 gives 9 expert slots per layer"
  grep -qF "$want" bad.log || { cat bad.log; fail "the error does not say '$want'"; }
  echo "ok: $(grep '^epx-generate:' bad.log)"
  ;;
logits)
  for n in 1 2; do
    timeout 120 "$bin/epxrun" -n $n -- "$bin/serve_logits_check" "$work/ck/step-200" >logits$n.log 2>&1
    rc=$?
    cat logits$n.log
    ((rc == 0)) || fail "serve_logits_check on $n ranks"
  done
  ;;
http)
  generate greedy.json 2 --prompt "The option" --max-tokens 40 --deterministic --max-context 256
  generate sampled.json 2 --prompt "When 'wrap' is set" --max-tokens 40 --temperature 0.9 --top-p 0.95 --seed 11 \
    --deterministic --max-context 256
  python3 -c 'import json,sys; json.dump({"greedy": json.load(open("greedy.json")), "sampled": json.load(open("sampled.json"))}, open("golden.json", "w"))'
  # epx-generate decodes in normal mode, the server in low-latency mode with the two-batch overlap.
  start_server 2 --deterministic --max-context 256 --decode-mode low-latency --overlap on
  # The listen backlog holds a burst of clients (Debian's httplib listens with 5).
  if command -v ss >/dev/null; then
    backlog=$(ss -Hltn "sport = :$port" | awk '{print $3; exit}')
    ((backlog >= 1024)) || fail "listen backlog $backlog on port $port, expected 1024"
    echo "ok: listen backlog $backlog"
  else
    echo "skipped: the listen backlog check (no ss: iproute2 is not installed)"
  fi
  python3 "$src/tests/serve/http_checks.py" "$port" golden.json || fail "http_checks.py"
  grep -q ", f32 dispatch" server.log || fail "the start-up line does not say 'f32 dispatch'"
  m=$(curl -s "http://127.0.0.1:$port/metrics")
  grep -q '^epx_fp8_dispatch 0$' <<<"$m" || fail "/metrics: $(grep fp8 <<<"$m"), expected epx_fp8_dispatch 0"
  # Bad inputs: each a body and the words the error must contain (param|message).
  bad=(
    '{"prompt": "x", "max_tokens": 4|the request body is not valid JSON'
    '[1, 2]|must be a JSON object'
    '{"max_tokens": 4}|prompt is required'
    '{"prompt": 42}|prompt must be a string or a list of token ids'
    '{"prompt": ""}|prompt is empty'
    '{"prompt": [1, 256]}|prompt[1] = 256 is not a token id of this model (0 <= id < 256)'
    '{"prompt": [-1]}|prompt[0] = -1 is not a token id'
    '{"prompt": [1.5]}|prompt[0] must be a token id (an integer)'
    '{"prompt": ["a", "b"]}|a list of prompts is not supported'
    '{"prompt": "x", "max_tokens": 0}|max_tokens = 0, expected >= 1'
    '{"prompt": "x", "max_tokens": -3}|max_tokens = -3, expected >= 1'
    '{"prompt": "x", "max_tokens": "8"}|max_tokens must be an integer, got string'
    '{"prompt": "x", "max_tokens": 100000}|max_tokens = 100000 is more than the context length of 256'
    '{"prompt": "'"$(printf 'a%.0s' $(seq 250))"'", "max_tokens": 10}|the prompt has 250 tokens and max_tokens is 10 (260 in all)'
    '{"prompt": "x", "temperature": "hot"}|temperature must be a number, got string'
    '{"prompt": "x", "temperature": 3}|temperature = 3, expected >= 0 and <= 2'
    '{"prompt": "x", "top_p": 0}|top_p = 0, expected > 0'
    '{"prompt": "x", "seed": 1.5}|seed must be an integer'
    '{"prompt": "x", "stop": 5}|stop must be a string or a list of strings'
    '{"prompt": "x", "stop": [""]}|stop strings must not be empty'
    '{"prompt": "x", "stop": ["a","b","c","d","e"]}|stop has 5 strings, at most 4'
    '{"prompt": "x", "stream": "yes"}|stream must be true or false'
    '{"prompt": "x", "n": 2}|only n = 1 is supported'
  )
  for c in "${bad[@]}"; do
    req=${c%|*} want=${c##*|}
    curl_json "$req"
    [[ $status == 400 ]] || fail "$req: status $status, expected 400 ($body)"
    python3 -c 'import json,sys; e=json.loads(sys.argv[1])["error"]; assert e["type"] == "invalid_request_error" and "param" in e and sys.argv[2] in e["message"], e' \
      "$body" "$want" || fail "$req: the error is $body, expected one saying '$want'"
    echo "ok: 400 for ${req:0:60}"
  done
  curl_json '{"prompt": "x", "max_tokens": 3, "temperature": 0}'
  [[ $status == 200 ]] || fail "the server stopped serving after the bad inputs ($status)"
  echo "ok: still serving after the bad inputs"
  [[ $(curl -s -o /dev/null -w '%{http_code}' "http://127.0.0.1:$port/nowhere") == 404 ]] || fail "an unknown path is not 404"
  # A second server on the same port: one line, exit status 1, the first one unharmed.
  timeout 60 "$bin/epxrun" -n 2 -- "$bin/epx-serve" --model "$work/ck" --port "$port" >second.log 2>&1 &&
    { cat second.log; fail "a second server on port $port started"; }
  grep -q "^epx-serve: FAILED: .*cannot listen on 127.0.0.1:$port" second.log || { cat second.log; fail "the second server's error"; }
  curl_json '{"prompt": "x", "max_tokens": 3, "temperature": 0}'
  [[ $status == 200 ]] || fail "the first server after the second one's attempt ($status)"
  echo "ok: a second server on the same port fails: $(grep '^epx-serve: FAILED' second.log)"
  stop_server
  ;;
drain)
  # One request at a time and no queue: a second request is refused at once.
  # A long request keeps this tiny model busy for a second or more.
  start_server 2 --max-batch 1 --max-queue 0 --max-context 5120
  long='{"prompt": "The option", "max_tokens": 5000, "temperature": 0}'
  curl -s --max-time 120 -H 'Content-Type: application/json' --data-binary "$long" \
    "http://127.0.0.1:$port/v1/completions" >long.json &
  curl_pid=$!
  wait_running
  hdr=$(curl -s -i --max-time 30 --data-binary '{"prompt": "x", "max_tokens": 2}' "http://127.0.0.1:$port/v1/completions")
  grep -q "^HTTP/1.1 503" <<<"$hdr" || fail "a request past the queue got: $hdr"
  grep -qi "^Retry-After: 1" <<<"$hdr" || fail "the 503 has no Retry-After: $hdr"
  grep -q '"type":"server_overloaded"' <<<"$hdr" || fail "the 503's error: $hdr"
  echo "ok: 503 with Retry-After past the queue"
  wait $curl_pid
  python3 -c 'import json,sys; c=json.load(open(sys.argv[1]))["choices"][0]; assert len(c["token_ids"]) == 5000 and c["finish_reason"] == "length"' long.json ||
    fail "the long request: $(head -c 300 long.json)"
  # A client that goes away mid-stream: its request is cancelled and its blocks freed.
  curl -sN --max-time 60 --data-binary '{"prompt": "The option", "max_tokens": 5000, "stream": true}' \
    "http://127.0.0.1:$port/v1/completions" >partial.txt &
  curl_pid=$!
  wait_running
  sleep 0.2
  kill $curl_pid
  wait $curl_pid 2>/dev/null
  grep -q '^data: {' partial.txt || fail "the stream sent nothing before the client left"
  for _ in $(seq 50); do
    m=$(curl -s "http://127.0.0.1:$port/metrics")
    grep -q 'epx_requests_total{finish_reason="cancelled"} 1' <<<"$m" && break
    sleep 0.2
  done
  grep -q 'epx_requests_total{finish_reason="cancelled"} 1' <<<"$m" || fail "the left stream was not cancelled: $m"
  grep -q 'epx_kv_blocks_used{rank="0"} 0' <<<"$m" && grep -q 'epx_kv_blocks_used{rank="1"} 0' <<<"$m" ||
    fail "the left stream's blocks are still held: $(grep kv_blocks <<<"$m")"
  echo "ok: a client that leaves mid-stream frees its cache"
  # SIGTERM while a request runs: it finishes, a new one gets 503, exit 0.
  curl -s --max-time 120 --data-binary "$long" "http://127.0.0.1:$port/v1/completions" >inflight.json &
  curl_pid=$!
  wait_running
  kill -TERM "$rank0_pid"
  sleep 0.2
  hdr=$(curl -s -i --max-time 30 --data-binary '{"prompt": "x", "max_tokens": 2}' "http://127.0.0.1:$port/v1/completions")
  grep -q "^HTTP/1.1 503" <<<"$hdr" || fail "a request while draining got: $hdr"
  echo "ok: 503 while draining"
  wait $curl_pid
  python3 -c 'import json,sys; c=json.load(open(sys.argv[1]))["choices"][0]; assert len(c["token_ids"]) == 5000' inflight.json ||
    fail "the request in flight at SIGTERM did not finish: $(head -c 300 inflight.json)"
  echo "ok: the request in flight at SIGTERM finished"
  stop_server
  echo "ok: every rank exited 0 after SIGTERM"
  ;;
dead)
  # A rank killed mid-request. mpirun then ends the job, giving the other
  # ranks odls_base_sigkill_timeout seconds after its SIGTERM (docs/serve.md):
  # with more than EPX_TIMEOUT_S, rank 0 notices within the timeout, answers
  # 503 to the request in flight and an error event to the stream in flight,
  # both naming rank 1, and exits; the job exits non-zero naming rank 1. No hang.
  OMPI_MCA_odls_base_sigkill_timeout=6 EPX_TIMEOUT_S=3 start_server 2 --max-context 8192
  curl -s --max-time 60 -o dead.json -w '%{http_code}' --data-binary '{"prompt": "The option", "max_tokens": 8000}' \
    "http://127.0.0.1:$port/v1/completions" >dead.status &
  curl_pid=$!
  curl -sN --max-time 60 --data-binary '{"prompt": "The option", "max_tokens": 8000, "stream": true}' \
    "http://127.0.0.1:$port/v1/completions" >dead.stream &
  stream_pid=$!
  for _ in $(seq 100); do
    running 2 && break
    sleep 0.1
  done
  running 2 || fail "the two requests did not start"
  # The ranks are mpirun's children, and mpirun is epxrun's.
  victim=$(for p in $(descendants "$server_pid"); do
    [[ $(ps -o comm= -p "$p") == epx-serve && $p != "$rank0_pid" ]] && echo "$p"
  done | head -1)
  [[ -n $victim ]] || fail "no rank 1 process under mpirun $server_pid"
  start=$SECONDS
  kill -9 "$victim"
  for _ in $(seq 150); do
    kill -0 $server_pid 2>/dev/null || break
    sleep 0.2
  done
  kill -0 $server_pid 2>/dev/null && { kill -9 $server_pid; fail "the job still runs 30 s after rank 1 died"; }
  wait $server_pid && fail "the job exited 0 after rank 1 died"
  took=$((SECONDS - start))
  ((took <= 20)) || fail "the job took $took s to end after rank 1 died (timeout 3 s, sigkill 6 s)"
  grep -q "rank 1" server.log || fail "the job's output does not name rank 1"
  wait $curl_pid
  wait $stream_pid
  [[ $(cat dead.status) == 503 ]] || fail "the request in flight got status $(cat dead.status): $(head -c 300 dead.json)"
  python3 -c 'import json,sys; e=json.load(open(sys.argv[1]))["error"]; assert e["type"] == "server_error" and "rank 1" in e["message"], e' dead.json ||
    fail "the 503's body: $(head -c 300 dead.json)"
  grep -q '^data: {"error":.*rank 1' dead.stream || fail "the stream in flight got no error event naming rank 1: $(tail -c 300 dead.stream)"
  echo "ok: rank 1 killed: 503 and an error event naming it, the job ended in $took s (timeout 3 s, sigkill 6 s), exit non-zero"
  echo "  $(grep -m1 'FAILED' server.log)"
  ;;
bench)
  # Small sizes: this checks that the benchmark runs end to end and loses no
  # request, not its numbers (docs/performance.md has those).
  timeout 120 "$bin/epx-bench" serve --model "$work/ck" --ranks 2 --clients 1,4 --requests 6 \
    --prompt-max 16 --output-max 12 --prefill-tokens 40 --decode-tokens 8 --roofline-iters 1 \
    --gemm-n 256 --bandwidth-mib 16 --json >bench.json 2>bench.err || { cat bench.err bench.json; fail "epx-bench serve"; }
  python3 -c '
import json, sys
r = json.loads([l for l in open("bench.json") if l.startswith("{")][-1])
assert r["ranks"] == 2 and r["server_exit"] == 0, r
assert [l["clients"] for l in r["levels"]] == [1, 4], r["levels"]
for l in r["levels"]:
    assert l["requests"] == 6 and l["failed"] == 0 and l["output_tokens_per_s"] > 0, l
    # Events that arrive in one read share a time: a TPOT of 0 is possible here.
    assert 0 < l["ttft_p50"] <= l["ttft_p99"] and 0 <= l["tpot_p50"] <= l["tpot_p99"], l
assert r["gemm"]["flops"] > 0 and r["bandwidth"]["bytes_per_s"] > 0, r
assert r["prefill"]["flops"] > 0 and r["decode_batch1"]["bytes_per_token"] > r["active_weight_bytes"], r
print("ok: epx-bench serve:", {k: r[k] for k in ("gemm", "bandwidth", "prefill", "decode_batch1")})
' || { cat bench.err; fail "the benchmark's report"; }
  grep -q "epx-serve: stopped" bench.err || fail "the launched server did not drain and stop"
  ;;
fp8)
  train128
  ck128=(--model "$work/ck128")
  args=(--prompt "The 'tabstop' option" --max-tokens 24)
  for n in 1 2 4; do
    generate "fp8_$n.json" $n "${ck128[@]}" "${args[@]}" --fp8-dispatch on
    generate "fp8_det$n.json" $n "${ck128[@]}" "${args[@]}" --fp8-dispatch on --deterministic --prefill-chunk 5
    generate "fp8_ll$n.json" $n "${ck128[@]}" "${args[@]}" --fp8-dispatch on --decode-mode low-latency
    generate "fp8_ovl$n.json" $n "${ck128[@]}" "${args[@]}" --fp8-dispatch on --decode-mode low-latency --overlap on
    generate "fp8_auto$n.json" $n "${ck128[@]}" "${args[@]}" --fp8-dispatch on --decode-mode auto --batch 3 --deterministic
    grep -q "fp8 dispatch)" "fp8_$n.json.err" || { cat "fp8_$n.json.err"; fail "epx-generate -n $n does not say 'fp8 dispatch'"; }
    grep -q "^epx-generate: decode mode by batch (start-up measurement of dispatch + combine, fp8 dispatch" \
      "fp8_auto$n.json.err" || { cat "fp8_auto$n.json.err"; fail "--decode-mode auto on $n ranks did not measure fp8"; }
  done
  for kind in fp8 fp8_det fp8_ll fp8_ovl fp8_auto; do
    for n in 2 4; do
      [[ "$(ids $kind$n.json)" == "$(ids ${kind}1.json)" ]] ||
        fail "$kind: EP over $n ranks gives $(ids $kind$n.json), 1 rank $(ids ${kind}1.json)"
    done
    echo "ok: $kind: the same tokens on 1, 2 and 4 ranks: $(ids ${kind}1.json)"
  done
  [[ "$(ids fp8_ll1.json)" == "$(ids fp8_1.json)" ]] || fail "fp8: low-latency decode differs from normal"
  [[ "$(ids fp8_ovl1.json)" == "$(ids fp8_1.json)" ]] || fail "fp8: the two-batch overlap differs from normal"
  [[ "$(ids fp8_auto1.json)" == "$(ids fp8_det1.json)" ]] || fail "fp8: --decode-mode auto (3 copies) differs"
  echo "ok: fp8: low-latency decode (with and without the overlap) and auto give the normal mode's tokens"
  # config: the config's parallel.fp8_dispatch (after --set); off: f32.
  generate cfg_on.json 2 "${ck128[@]}" "${args[@]}" --set parallel.fp8_dispatch=true
  [[ "$(ids cfg_on.json)" == "$(ids fp8_1.json)" ]] || fail "--set parallel.fp8_dispatch=true differs from --fp8-dispatch on"
  grep -q "fp8 dispatch)" cfg_on.json.err || fail "--fp8-dispatch config with parallel.fp8_dispatch=true: not fp8"
  generate cfg_off.json 2 "${ck128[@]}" "${args[@]}" --set parallel.fp8_dispatch=true --fp8-dispatch off
  grep -q "f32 dispatch)" cfg_off.json.err || fail "--fp8-dispatch off does not say 'f32 dispatch'"
  generate default.json 2 "${ck128[@]}" "${args[@]}"
  grep -q "f32 dispatch)" default.json.err || fail "the default (config, false) does not say 'f32 dispatch'"
  [[ "$(ids cfg_off.json)" == "$(ids default.json)" ]] || fail "--fp8-dispatch off differs from the default"
  echo "ok: --fp8-dispatch config follows parallel.fp8_dispatch; off and the default dispatch f32"
  # The logits against the training code's fp8 forward; LL and normal decode bit for bit.
  step=$(cat "$work/ck128/latest")
  for n in 1 2 4; do
    timeout 120 "$bin/epxrun" -n $n -- "$bin/serve_logits_check" "$work/ck128/$step" --fp8 >logits$n.log 2>&1
    rc=$?
    cat logits$n.log
    ((rc == 0)) || fail "serve_logits_check --fp8 on $n ranks"
  done
  # The server: its start-up line, the gauge, a request against epx-generate.
  start_server 2 "${ck128[@]}" --fp8-dispatch on --decode-mode low-latency --deterministic
  grep -q "listening on .*, fp8 dispatch" server.log || fail "the start-up line does not say 'fp8 dispatch'"
  m=$(curl -s "http://127.0.0.1:$port/metrics")
  grep -q '^epx_fp8_dispatch 1$' <<<"$m" || fail "/metrics: $(grep fp8 <<<"$m"), expected epx_fp8_dispatch 1"
  curl_json '{"prompt": "The '"'"'tabstop'"'"' option", "max_tokens": 24, "temperature": 0}'
  [[ $status == 200 ]] || fail "the fp8 server answered $status: $body"
  got=$(python3 -c 'import json,sys; print(json.loads(sys.argv[1])["choices"][0]["token_ids"])' "$body")
  [[ "$got" == "$(ids fp8_det1.json)" ]] || fail "the fp8 server gives $got, epx-generate $(ids fp8_det1.json)"
  echo "ok: the fp8 server: $(grep -o 'listening on.*' server.log); epx_fp8_dispatch 1; epx-generate's tokens"
  stop_server
  # Bad values: a usage line, exit 2; fp8 on a hidden-32 model: one FAILED line, exit 1.
  for prog in epx-generate epx-serve; do
    more=()
    [[ $prog == epx-generate ]] && more=(--prompt x)
    expect_bad 2 "--fp8-dispatch = 'maybe', expected config, on or off" $prog --model "$work/ck" "${more[@]}" --fp8-dispatch maybe
    expect_bad 1 "--fp8-dispatch on: model.hidden_size = 32 is not a multiple of 128" \
      $prog --model "$work/ck" "${more[@]}" --fp8-dispatch on
  done
  expect_bad 2 "--fp8-dispatch needs a value" epx-generate --model "$work/ck" --prompt x --fp8-dispatch
  expect_bad 1 "--fp8-dispatch config (parallel.fp8_dispatch = true): model.hidden_size = 32 is not a multiple of 128" \
    epx-generate --model "$work/ck" --prompt x --set parallel.fp8_dispatch=true
  ;;
*) fail "unknown scenario" ;;
esac
echo "serve test $scenario: OK"
