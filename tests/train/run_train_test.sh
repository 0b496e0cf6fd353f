#!/usr/bin/env bash
# epx-train end to end, one scenario per ctest entry:
#   run_train_test.sh BUILD_BIN_DIR SOURCE_DIR WORK_DIR SCENARIO
# grid      every dp x ep grid (1, 2, 4 ranks; ep 1, 2, 4; 2 virtual nodes) against 1 rank
# resume    a run resumed from its step-5 checkpoint repeats steps 6-10 bit for bit
# crossgrid a dp 2 x ep 2 checkpoint resumed on dp 1 and on dp 4 x ep 4
# badconfig each bad config fails on every rank with one clear line, before any work
# falls     configs/tiny.yaml: the loss falls well below the unigram entropy in 100 steps
# fp8       fp8 dispatch against the f32 run
# stall     a rank that stalls makes the others fail within the timeout, naming it
# kill      a rank killed mid-run: every rank exits non-zero, the last checkpoint resumes
# export    --export writes one safetensors file with every tensor
# torch     an independent PyTorch implementation (tests/reference) gives the same losses
# balancer  the live balancer with redundant experts (both policies, 1 and 2 virtual nodes):
#           losses as without it, every replica bit-identical after every step and
#           migration, logical checkpoints that resume on any grid
# pipeline  every schedule on pp 2 and 4, with and without dp and ep, against 1 rank;
#           zb-h1's split backward against 1f1b bit for bit; dualpipe(v)'s FB overlap against
#           sequential FB units bit for bit; layers_per_stage; pp checkpoints
#           resumed on other grids; the bench's pipeline split; bad pipeline settings
# killmigrate a rank killed as a migration begins: every rank exits non-zero, naming it,
#           and the last checkpoint resumes
# killfb    a rank stalled or killed inside a DualPipe FB unit: the others fail in time,
#           naming it, and the last checkpoint resumes
set -uo pipefail
bin=$1 src=$2 work=$3 scenario=$4
cfg=$src/tests/train/small.yaml
compare=$src/tests/train/compare_metrics.py
rm -rf "$work" && mkdir -p "$work" && cd "$work" || exit 1

fail() {
  echo "train test $scenario: FAILED: $*"
  exit 1
}

# epx's shared memory has no name, so an epx-* name that appeared during a run
# and is still there seconds after it is a leak (other builds' set-ups,
# running at the same time, may show names that come and go).
shm_before() { ls /dev/shm | grep '^epx-' | sort >"$work/shm.before"; }
shm_leaked() {
  sleep 3
  comm -13 "$work/shm.before" <(ls /dev/shm | grep '^epx-' | sort) >"$work/shm.new"
  sleep 3
  comm -12 "$work/shm.new" <(ls /dev/shm | grep '^epx-' | sort)
}

# train NAME RANKS [--set ...]...: a run into $work/NAME (metrics NAME.jsonl).
train() {
  local name=$1 n=$2
  shift 2
  timeout 300 "$bin/epxrun" -n "$n" -- "$bin/epx-train" "$cfg" --set "train.checkpoint_dir=$work/$name" \
    --set "log.metrics=$work/$name.jsonl" "$@" >"$work/$name.log" 2>&1
}

# The fault tests at one site (train/faults.hpp: SUFFIX _MIGRATION or _FB,
# WHERE its words in the message): rank 1 stalls at step STALL_STEP, and the
# others must fail within the timeout with an error matching WANT; then rank
# 2 is killed at step KILL_STEP (> 5), which must end the job and leave the
# step-5 checkpoint, which resumes. The rest: the runs' settings.
stall_then_kill() {
  local suffix=$1 where=$2 stall_step=$3 kill_step=$4 want=$5 start took leaked
  shift 5
  start=$SECONDS
  shm_before
  (export EPX_TIMEOUT_S=5 "EPX_TRAIN_STALL$suffix=1:$stall_step" && train stall 4 "$@") &&
    { cat stall.log; fail "the run with a stalled rank succeeded"; }
  took=$((SECONDS - start))
  grep -v '^step' stall.log
  grep -q "rank 1 stalls $where step $stall_step" stall.log || fail "the stall was not injected"
  grep -q "$want" stall.log || fail "no error matches '$want'"
  ((took < 40)) || fail "took $took s to fail, timeout 5 s"
  start=$SECONDS
  (export EPX_TIMEOUT_S=10 "EPX_TRAIN_KILL$suffix=2:$kill_step" && train kill 4 "$@") &&
    { cat kill.log; fail "the run with a killed rank succeeded"; }
  took=$((SECONDS - start))
  grep -v '^step' kill.log
  grep -q "rank 2 kills itself $where step $kill_step" kill.log || fail "the fault was not injected"
  ((took < 60)) || fail "took $took s to end after the kill"
  [[ "$(cat kill/latest)" == step-5 && -f kill/step-5/model.safetensors ]] || fail "the step-5 checkpoint is not the latest"
  leaked=$(shm_leaked)
  [[ -z $leaked ]] || fail "epx segments left in /dev/shm: $leaked"
  train kill 4 "$@" --resume auto || { cat kill.log; fail "resuming after the kill"; }
  grep -q "resumed from .*step-5 at step 5" kill.log || { cat kill.log; fail "did not resume at step 5"; }
  echo "ok: the stall failed in time; the kill ended the job $took s after it; step-5 resumed"
}

case "$scenario" in
grid)
  train ref 1 || { cat ref.log; fail "the 1-rank run"; }
  # The global batch stays 8 sequences: micro_batch_size x num_micro_batches x dp.
  runs=("dp2_ep1 2 2 2 1" "dp2_ep2 2 2 2 2" "dp4_ep1 4 2 1 1" "dp4_ep2 4 1 2 2" "dp4_ep4 4 2 1 4")
  for r in "${runs[@]}"; do
    read -r name n mbs nmb ep <<<"$r"
    train "$name" "$n" --set parallel.dp="$n" --set parallel.ep="$ep" --set train.micro_batch_size="$mbs" \
      --set train.num_micro_batches="$nmb" || { cat "$name.log"; fail "$name"; }
    echo "== $name against 1 rank"
    python3 "$compare" ref.jsonl "$name.jsonl" --steps 1:10 || fail "$name differs from the 1-rank run"
  done
  # Two virtual nodes of 2: the hierarchical dispatch and combine.
  EPX_RANKS_PER_NODE=2 OMPI_MCA_osc=ucx UCX_TLS=tcp,self train nodes2 4 --set parallel.dp=4 --set parallel.ep=4 \
    --set train.micro_batch_size=2 --set train.num_micro_batches=1 || { cat nodes2.log; fail "2 virtual nodes"; }
  echo "== 2 nodes x 2 ranks, ep 4, against 1 rank"
  python3 "$compare" ref.jsonl nodes2.jsonl --steps 1:10 || fail "2 virtual nodes differ from the 1-rank run"
  ;;
resume)
  train full 2 --set parallel.dp=2 --set parallel.ep=2 --set train.micro_batch_size=2 || { cat full.log; fail "the full run"; }
  [[ -f full/step-5/model.safetensors && -f full/step-5/optimizer.safetensors && -f full/step-5/state.json ]] ||
    fail "no complete checkpoint full/step-5"
  [[ "$(cat full/latest)" == step-10 ]] || fail "latest is '$(cat full/latest)', expected step-10"
  # As if the run had died after step 5's checkpoint (and mid-write of another).
  cp -r full resumed && rm -rf resumed/step-10 && echo step-5 >resumed/latest && mkdir -p resumed/.tmp-step-10
  train resumed 2 --set parallel.dp=2 --set parallel.ep=2 --set train.micro_batch_size=2 --resume auto ||
    { cat resumed.log; fail "the resumed run"; }
  grep -q "resumed from .*step-5 at step 5" resumed.log || { cat resumed.log; fail "the run did not resume at step 5"; }
  python3 "$compare" full.jsonl resumed.jsonl --exact --steps 6:10 || fail "resumed losses are not bit-identical"
  ;;
crossgrid)
  train full 2 --set parallel.dp=2 --set parallel.ep=2 --set train.micro_batch_size=2 || { cat full.log; fail "the full run"; }
  train one 1 --resume "$work/full/step-5" || { cat one.log; fail "resume on 1 rank"; }
  echo "== dp 2 x ep 2 checkpoint resumed on 1 rank"
  python3 "$compare" full.jsonl one.jsonl --steps 6:10 || fail "1-rank resume differs"
  train four 4 --set parallel.dp=4 --set parallel.ep=4 --set train.micro_batch_size=1 --resume "$work/full/step-5" ||
    { cat four.log; fail "resume on dp 4 x ep 4"; }
  echo "== dp 2 x ep 2 checkpoint resumed on dp 4 x ep 4"
  python3 "$compare" full.jsonl four.jsonl --steps 6:10 || fail "dp 4 x ep 4 resume differs"
  # dp 4 x ep 2 to dp 2 x ep 1.
  train big 4 --set parallel.dp=4 --set parallel.ep=2 --set train.micro_batch_size=1 || { cat big.log; fail "dp 4 x ep 2"; }
  train small 2 --set parallel.dp=2 --set parallel.ep=1 --set train.micro_batch_size=2 --resume "$work/big/step-5" ||
    { cat small.log; fail "resume on dp 2 x ep 1"; }
  echo "== dp 4 x ep 2 checkpoint resumed on dp 2 x ep 1"
  python3 "$compare" big.jsonl small.jsonl --steps 6:10 || fail "dp 2 x ep 1 resume differs"
  ;;
badconfig)
  # Each: an override, and the words the error must contain.
  cases=(
    "model.top_k=7|model.top_k = 7"
    "model.n_group=8|model.n_group = 8 gives 1 expert per group"
    "model.hidden_size=30|model.hidden_size = 30 is not a multiple of model.num_heads"
    "model.num_heads=32|head_dim 1, expected even"
    "parallel.ep=3|parallel.ep = 3 does not divide parallel.dp = 2"
    "model.num_experts=6|parallel.ep = 4 does not divide model.num_experts = 6"
    "data.path=/nonexistent/data.bin|data.path = /nonexistent/data.bin: no such file"
    "model.vocab_size=300|model.vocab_size = 300, expected 256 with data.format = bytes"
    "model.no_such_key=1|unknown key model.no_such_key"
    "train.seq_len=abc|train.seq_len = abc, expected an integer"
    "train.lr=-1|train.lr = -1, expected >= 0"
    "parallel.dp=3|parallel.pp x parallel.dp = 1 x 3 = 3, expected the world size 2"
    "balancer.redundant_experts=1|balancer.redundant_experts = 1 gives 9 expert slots per layer"
    "balancer.policy=greedy|balancer.policy = greedy, expected one of balanced, eplb, incremental"
    "balancer.max_migration=1.5|balancer.max_migration = 1.5, expected in [0, 1]"
    "balancer.every=0|balancer.every = 0, expected >= 1"
  )
  for c in "${cases[@]}"; do
    set_arg=${c%%|*} want=${c#*|}
    extra=(--set parallel.dp=2 --set parallel.ep=2)
    [[ $set_arg == model.num_experts=* ]] && extra=(--set parallel.dp=4 --set parallel.ep=4 --set model.n_group=1 --set model.topk_group=1)
    [[ $set_arg == balancer.* ]] && extra+=(--set balancer.enabled=true)
    n=2
    [[ $set_arg == model.num_experts=* ]] && n=4
    start=$SECONDS
    if train bad "$n" "${extra[@]}" --set "$set_arg"; then
      cat bad.log
      fail "--set $set_arg was accepted"
    fi
    grep -qF -- "$want" bad.log || { cat bad.log; fail "--set $set_arg: the error does not say '$want'"; }
    lines=$(grep -c "epx-train: FAILED" bad.log)
    [[ $lines == 1 ]] || { cat bad.log; fail "--set $set_arg: $lines error lines, expected one"; }
    grep -q "^step " bad.log && fail "--set $set_arg: training started"
    echo "ok: --set $set_arg -> $(grep 'epx-train: FAILED' bad.log) ($((SECONDS - start)) s)"
  done
  ;;
falls)
  cfg=$src/configs/tiny.yaml
  train tiny 2 --set parallel.dp=2 --set parallel.ep=2 --set train.micro_batch_size=8 --set train.max_steps=100 \
    --set train.eval_every=50 || { cat tiny.log; fail "tiny.yaml"; }
  cat tiny.log
  python3 - tiny.jsonl "$(grep -o 'unigram entropy [0-9.]*' tiny.log | cut -d' ' -f3)" <<'PY' || fail "the loss did not fall"
import json, sys
rows = [json.loads(l) for l in open(sys.argv[1]) if l.strip()]
h = float(sys.argv[2])
first, last = rows[0]["loss"], sum(r["loss"] for r in rows[-10:]) / 10
print(f"loss: step 1 {first:.3f}, mean of the last 10 steps {last:.3f}, unigram entropy {h:.3f}")
sys.exit(0 if len(rows) == 100 and last < first - 2.0 and last < h - 0.3 else 1)
PY
  ;;
fp8)
  cfg=$src/configs/tiny.yaml
  args=(--set parallel.dp=2 --set parallel.ep=2 --set train.micro_batch_size=8 --set train.max_steps=200 --set train.eval_every=0
        --set train.checkpoint_every=0 --set log.every=50)
  train f32 2 "${args[@]}" || { cat f32.log; fail "the f32 run"; }
  train fp8 2 "${args[@]}" --set parallel.fp8_dispatch=true || { cat fp8.log; fail "the fp8 run"; }
  python3 - f32.jsonl fp8.jsonl <<'PY' || fail "fp8 dispatch is more than 2 % off"
import json, sys
a, b = ([json.loads(l) for l in open(p) if l.strip()] for p in sys.argv[1:3])
ma, mb = (sum(r["loss"] for r in x[-10:]) / 10 for x in (a, b))
print(f"loss after 200 steps (mean of the last 10): f32 {ma:.4f}, fp8 dispatch {mb:.4f}, {100 * (mb - ma) / ma:+.2f} %")
sys.exit(0 if abs(mb - ma) <= 0.02 * ma else 1)
PY
  ;;
stall)
  start=$SECONDS
  shm_before
  EPX_TIMEOUT_S=5 EPX_TRAIN_STALL=1:3 train stall 2 --set parallel.dp=2 --set parallel.ep=2 --set train.micro_batch_size=2 &&
    { cat stall.log; fail "the run with a stalled rank succeeded"; }
  took=$((SECONDS - start))
  cat stall.log
  grep -q "rank 1" stall.log || fail "no message names rank 1"
  ((took < 40)) || fail "took $took s to fail, timeout 5 s"
  [[ -d stall/step-5 ]] && fail "a checkpoint after the stall exists"
  leaked=$(shm_leaked)
  [[ -z $leaked ]] || fail "epx segments left in /dev/shm: $leaked"
  echo "ok: failed in $took s, naming rank 1"
  ;;
kill)
  start=$SECONDS
  shm_before
  EPX_TIMEOUT_S=20 EPX_TRAIN_KILL=1:8 train kill 4 --set parallel.dp=4 --set parallel.ep=2 --set train.micro_batch_size=1 &&
    { cat kill.log; fail "the run with a killed rank succeeded"; }
  took=$((SECONDS - start))
  cat kill.log
  ((took < 60)) || fail "took $took s to end after the kill"
  grep -q "rank 1 kills itself" kill.log || fail "the fault was not injected"
  [[ "$(cat kill/latest)" == step-5 && -f kill/step-5/model.safetensors ]] || fail "the step-5 checkpoint is not the latest"
  leaked=$(shm_leaked)
  [[ -z $leaked ]] || fail "epx segments left in /dev/shm: $leaked"
  train kill 4 --set parallel.dp=4 --set parallel.ep=2 --set train.micro_batch_size=1 --resume auto ||
    { cat kill.log; fail "resuming after the kill"; }
  grep -q "resumed from .*step-5 at step 5" kill.log || { cat kill.log; fail "did not resume at step 5"; }
  # The metrics keep steps 1-5 of the killed run and 6-10 of the resumed one, each once.
  steps=$(python3 -c 'import json,sys; print(" ".join(str(json.loads(l)["step"]) for l in open(sys.argv[1])))' kill.jsonl)
  [[ $steps == "1 2 3 4 5 6 7 8 9 10" ]] || fail "metrics after the resume list steps '$steps'"
  echo "ok: ended $took s after the kill; resumed from step-5"
  ;;
export)
  train run 2 --set parallel.dp=2 --set parallel.ep=2 --set train.micro_batch_size=2 || { cat run.log; fail "the run"; }
  "$bin/epx-train" --export "$work/run" "$work/model.safetensors" || fail "--export"
  python3 - model.safetensors <<'PY' || fail "the exported file"
import json, struct, sys
data = open(sys.argv[1], "rb").read()
n = struct.unpack("<Q", data[:8])[0]
h = json.loads(data[8:8 + n])
names = [k for k in h if k != "__metadata__"]
need = ["model.embed_tokens.weight", "lm_head.weight", "model.norm.weight",
        "model.layers.0.mlp.gate_proj.weight", "model.layers.1.mlp.gate.weight",
        "model.layers.2.mlp.gate.e_score_correction_bias",
        "model.layers.2.mlp.experts.7.down_proj.weight", "model.layers.1.mlp.shared_experts.up_proj.weight"]
missing = [x for x in need if x not in h]
end = max(v["data_offsets"][1] for k, v in h.items() if k != "__metadata__")
print(f"{len(names)} tensors, {end} data bytes, metadata {h.get('__metadata__')}")
sys.exit(1 if missing or 8 + n + end != len(data) or h["__metadata__"].get("format") != "pt" else 0)
PY
  ;;
torch)
  # The reference re-runs itself under the Debian python3 that has torch.
  ref=$src/tests/reference
  if ! /usr/bin/python3 -c 'import torch, yaml' 2>/dev/null; then
    echo "train test torch: SKIPPED: python3-torch or python3-yaml is not installed"
    exit 77
  fi
  /usr/bin/python3 "$ref/make_init.py" --config "$cfg" --seed 7 --out init.safetensors || fail "make_init.py"
  /usr/bin/python3 "$ref/torch_moe.py" --config "$cfg" --init init.safetensors --steps 10 --out torch.jsonl \
    >torch.log 2>&1 || { cat torch.log; fail "torch_moe.py"; }
  train one 1 --set model.init_from="$work/init.safetensors" || { cat one.log; fail "epx-train on 1 rank"; }
  train grid 4 --set model.init_from="$work/init.safetensors" --set parallel.dp=4 --set parallel.ep=2 \
    --set train.micro_batch_size=1 || { cat grid.log; fail "epx-train on dp 4 x ep 2"; }
  echo "== PyTorch against epx-train, 1 rank"
  python3 "$ref/compare_losses.py" torch.jsonl one.jsonl --rtol 1e-5 --steps 10 || fail "1 rank differs from PyTorch"
  echo "== PyTorch against epx-train, dp 4 x ep 2"
  python3 "$ref/compare_losses.py" torch.jsonl grid.jsonl --rtol 1e-5 --steps 10 || fail "dp 4 x ep 2 differs from PyTorch"
  ;;
balancer)
  check=$src/tests/train/compare_checkpoints.py
  bal=(--set balancer.enabled=true)
  train ref 1 || { cat ref.log; fail "the 1-rank run"; }
  train plain 4 --set parallel.dp=4 --set parallel.ep=2 --set train.micro_batch_size=1 || { cat plain.log; fail "dp 4 x ep 2"; }
  # name ranks balancer-settings...: each run checks its replicas after every step.
  runs=("dp4ep2 4 1 2 1 4 2 2 balanced" "dp2ep2 2 2 2 1 2 3 5 balanced" "dp4ep4eplb 4 1 4 1 4 3 5 eplb" "dp4ep2inc 4 1 2 1 2 2 3 incremental")
  for r in "${runs[@]}"; do
    read -r name n mbs ep nodes red every window policy <<<"$r"
    EPX_TRAIN_CHECK_REPLICAS=1 train "$name" "$n" --set parallel.dp="$n" --set parallel.ep="$ep" \
      --set train.micro_batch_size="$mbs" "${bal[@]}" --set balancer.redundant_experts="$red" \
      --set balancer.every="$every" --set balancer.window="$window" --set balancer.policy="$policy" ||
      { cat "$name.log"; fail "$name with the balancer"; }
    want=$((10 / every))
    got=$(grep -c "^rebalance at step .*replicas checked" "$name.log")
    [[ $got == "$want" ]] || { cat "$name.log"; fail "$name: $got checked rebalances, expected $want"; }
    grep "^rebalance at step" "$name.log" | tail -n 1
    echo "== $name ($red redundant, every $every, $policy) against 1 rank"
    python3 "$compare" ref.jsonl "$name.jsonl" --steps 1:10 || fail "$name differs from the 1-rank run"
  done
  python3 - dp4ep2.jsonl <<'PY' || fail "metrics.jsonl lacks the rebalance figures"
import json, sys
rows = [json.loads(l) for l in open(sys.argv[1]) if l.strip()]
reb = [r["rebalance"] for r in rows if "rebalance" in r]
need = ("gpu_load_max_over_mean_before", "gpu_load_max_over_mean_after", "gpu_load_max_over_mean_eplb",
        "moved_bytes", "naive_bytes", "ms")
ok = len(reb) == 5 and all(all(k in b for k in need) for b in reb)
ok = ok and all(0 < b["moved_bytes"] <= b["naive_bytes"] for b in reb)
ok = ok and all("rank_pairs_max_over_mean" in r and "expert_ms" in r for r in rows)
print(f"{len(reb)} rebalances in metrics.jsonl, bytes moved {[b['moved_bytes'] for b in reb]}")
sys.exit(0 if ok else 1)
PY
  # Two virtual nodes of 2: hierarchical placement, replicas routed on the token's node.
  EPX_RANKS_PER_NODE=2 OMPI_MCA_osc=ucx UCX_TLS=tcp,self EPX_TRAIN_CHECK_REPLICAS=1 train nodes2 4 \
    --set parallel.dp=4 --set parallel.ep=4 --set train.micro_batch_size=1 "${bal[@]}" \
    --set balancer.redundant_experts=4 --set balancer.every=3 || { cat nodes2.log; fail "2 virtual nodes"; }
  echo "== 2 nodes x 2 ranks, ep 4, 4 redundant, against 1 rank"
  python3 "$compare" ref.jsonl nodes2.jsonl --steps 1:10 || fail "2 virtual nodes differ from the 1-rank run"
  # The checkpoint holds logical experts: the same names as the plain run's,
  # and values as close to them as any change of grid gives.
  echo "== the dp 4 x ep 2 checkpoints with and without the balancer"
  python3 "$check" plain/step-10 dp4ep2/step-10 --rtol 1e-4 || fail "the balancer's checkpoint differs"
  # A balancer checkpoint resumes without it, and a plain one with it.
  train back 1 --resume "$work/dp4ep2/step-5" || { cat back.log; fail "resume of a balancer checkpoint on 1 rank"; }
  python3 "$compare" dp4ep2.jsonl back.jsonl --steps 6:10 || fail "the 1-rank resume differs"
  EPX_TRAIN_CHECK_REPLICAS=1 train forth 2 --set parallel.dp=2 --set parallel.ep=2 --set train.micro_batch_size=2 \
    "${bal[@]}" --set balancer.redundant_experts=2 --set balancer.every=2 --resume "$work/ref/step-5" ||
    { cat forth.log; fail "resume of a plain checkpoint with the balancer"; }
  python3 "$compare" ref.jsonl forth.jsonl --steps 6:10 || fail "the balancer resume differs"
  ;;
pipeline)
  # 4 layers (dualpipev on pp 2 needs 4 stages); the global batch stays 8 sequences.
  L4=(--set model.num_layers=4)
  train ref 1 "${L4[@]}" || { cat ref.log; fail "the 1-rank run"; }
  runs=()
  for s in gpipe 1f1b zb-h1 dualpipe dualpipev; do runs+=("pp2_$s 2 2 1 1 2 4 $s"); done
  for s in 1f1b zb-h1 dualpipe; do runs+=("pp4_$s 4 4 1 1 1 8 $s"); done
  for s in 1f1b dualpipe dualpipev; do runs+=("pp2dp2ep2_$s 4 2 2 2 1 4 $s"); done
  runs+=("pp2auto 2 2 1 1 2 4 auto")
  for r in "${runs[@]}"; do
    read -r name n pp dp ep mbs nmb sched <<<"$r"
    train "$name" "$n" "${L4[@]}" --set parallel.pp="$pp" --set parallel.dp="$dp" --set parallel.ep="$ep" \
      --set parallel.schedule="$sched" --set train.micro_batch_size="$mbs" --set train.num_micro_batches="$nmb" ||
      { cat "$name.log"; fail "$name"; }
    echo "== $name against 1 rank"
    python3 "$compare" ref.jsonl "$name.jsonl" --steps 1:10 || fail "$name differs from the 1-rank run"
    grep -q "eval loss $(grep -o 'eval loss [0-9.]*' ref.log | cut -d' ' -f3)" "$name.log" ||
      fail "$name: the eval loss differs ($(grep -o 'eval loss [0-9.]*' "$name.log"))"
  done
  # An uneven split of the layers (parallel.layers_per_stage).
  for split in "1f1b [1,3]" "zb-h1 [3,1]"; do
    read -r sched layers <<<"$split"
    name="split_$sched"
    train "$name" 2 "${L4[@]}" --set parallel.pp=2 --set parallel.schedule="$sched" --set parallel.layers_per_stage="$layers" \
      --set train.micro_batch_size=2 --set train.num_micro_batches=4 || { cat "$name.log"; fail "$name"; }
    grep -q "layers_per_stage" "$name/step-10/state.json" || fail "$name: the checkpoint's config lacks the split"
    echo "== pp 2, $sched, layers $layers, against 1 rank"
    python3 "$compare" ref.jsonl "$name.jsonl" --steps 1:10 || fail "$name differs from the 1-rank run"
  done
  # The zero-bubble split backward (Bi now, W later) gives the full
  # backward's bits: losses, weights and AdamW moments equal to 1F1B's.
  # same_bits A B WHAT: runs A and B gave the same losses, weights and moments.
  same_bits() {
    python3 "$compare" "$1.jsonl" "$2.jsonl" --exact || fail "$3: the losses differ"
    for f in model.safetensors optimizer.safetensors; do
      cmp "$1/step-10/$f" "$2/step-10/$f" || fail "$3: $f differs"
    done
  }
  for pp in 2 4; do
    echo "== pp $pp: zb-h1 against 1f1b, bit for bit"
    same_bits "pp${pp}_1f1b" "pp${pp}_zb-h1" "pp $pp: zb-h1 against 1f1b"
  done
  # DualPipe's FB overlap (two threads taking turns) against its FB units run
  # half after half: the same losses, weights and AdamW moments, bit for bit.
  for sched in dualpipe dualpipev; do
    name="pp2dp2ep2_${sched}_sequential"
    train "$name" 4 "${L4[@]}" --set parallel.pp=2 --set parallel.dp=2 --set parallel.ep=2 \
      --set parallel.schedule="$sched" --set train.micro_batch_size=1 --set train.num_micro_batches=4 \
      --set parallel.fb_overlap=false || { cat "$name.log"; fail "$name"; }
    grep -q "MPI_THREAD_MULTIPLE" "pp2dp2ep2_$sched.log" && fail "$sched: the overlap fell back (no MPI_THREAD_MULTIPLE)"
    echo "== pp 2 x dp 2 x ep 2, $sched: FB units overlapped against sequential, bit for bit"
    same_bits "$name" "pp2dp2ep2_$sched" "$sched: the FB overlap against sequential"
  done
  # The live balancer on a pipeline: every replica and both DualPipe copies checked.
  bal=(--set balancer.enabled=true --set balancer.redundant_experts=2 --set balancer.every=2 --set balancer.window=2)
  for sched in dualpipe dualpipev; do
    EPX_TRAIN_CHECK_REPLICAS=1 train "bal_$sched" 4 "${L4[@]}" "${bal[@]}" --set parallel.pp=2 --set parallel.dp=2 \
      --set parallel.ep=2 --set parallel.schedule="$sched" --set train.micro_batch_size=1 --set train.num_micro_batches=4 ||
      { cat "bal_$sched.log"; fail "the balancer on pp 2 x dp 2 with $sched"; }
    got=$(grep -c "^rebalance at step .*replicas checked" "bal_$sched.log")
    [[ $got == 5 ]] || { cat "bal_$sched.log"; fail "bal_$sched: $got checked rebalances, expected 5"; }
    echo "== the balancer on pp 2 x dp 2 x ep 2, $sched, against 1 rank"
    python3 "$compare" ref.jsonl "bal_$sched.jsonl" --steps 1:10 || fail "bal_$sched differs from the 1-rank run"
  done
  # One step's timeline, measured (with its EP comm calls) and simulated from its op costs.
  for sched in zb-h1 dualpipe; do
    train "tl_$sched" 4 "${L4[@]}" --set parallel.pp=2 --set parallel.dp=2 --set parallel.ep=2 \
      --set parallel.schedule="$sched" --set train.micro_batch_size=1 --set train.num_micro_batches=4 \
      --set train.max_steps=3 --set log.timeline="$work/tl_$sched.svg" || { cat "tl_$sched.log"; fail "log.timeline"; }
    grep "^timeline of step 2: .* ms measured, .* ms simulated .* ms replayed from each op.s measured time (the rest: .* ms per hand-off)" "tl_$sched.log" || { cat "tl_$sched.log"; fail "no timeline line"; }
    python3 - "$work/tl_$sched.svg" <<'PY' || fail "tl_$sched.svg is not the two timelines"
import sys, xml.dom.minidom
d = xml.dom.minidom.parse(sys.argv[1])
texts = " ".join(t.firstChild.data for t in d.getElementsByTagName("text") if t.firstChild)
ok = len(d.getElementsByTagName("svg")) == 3 and "measured: one step" in texts and "simulated from the op costs measured per rank and chunk" in texts
# The measured chart draws every EP comm call as a bar inside an op of its rank's row.
measured = d.getElementsByTagName("svg")[1]
rects = [{k: float(r.getAttribute(k)) for k in ("x", "y", "width", "height")} | {"fill": r.getAttribute("fill")}
         for r in measured.getElementsByTagName("rect") if r.getAttribute("x")]
ops = [r for r in rects if r["height"] == 26]
legend_y = max(r["y"] for r in ops)
marks = [r for r in rects if r["fill"] == "#222222" and r["y"] < legend_y]
inside = all(any(abs(m["y"] + m["height"] - o["y"] - o["height"]) < 0.2 and o["x"] - 0.2 <= m["x"] and
                 m["x"] + m["width"] <= o["x"] + o["width"] + 0.6 for o in ops) for m in marks)
print(f"{len(marks)} EP comm calls drawn, all inside their ops: {inside}")
sys.exit(0 if ok and len(marks) >= 8 and inside else 1)
PY
  done
  # The bench's pipeline split: pp, schedule and balancer from its flags.
  timeout 300 "$bin/epxrun" -n 4 -- "$bin/epx-train" "$cfg" "${L4[@]}" --set train.micro_batch_size=1 \
    --set train.num_micro_batches=4 --set parallel.ep=2 --bench --bench-steps 2 --bench-warmup 1 --pp 2 --schedule dualpipe \
    --balancer on --json >bench.log 2>&1 || { cat bench.log; fail "epx-train --bench --pp 2"; }
  cat bench.log
  grep -q "pp 2 (dualpipe) x dp 2 x ep 2, balancer on" bench.log || fail "the bench did not take --pp/--schedule/--balancer"
  grep -q "step split (ms, slowest rank): compute .*, EP comm exposed .*, PP bubble .*, DP all-reduce" bench.log ||
    fail "no step split"
  grep -q "dualpipe: .* ms measured in the executor, .* ms simulated from the op costs measured per rank and chunk .* with one cost per kind for every stage" bench.log ||
    fail "no simulator comparison"
  grep -q "the executor's .* ms: its ops .* ms, the sum of DualPipe's two weight copies .* ms, agreements and last sends" bench.log ||
    fail "no split of the executor's step"
  grep -q "the ops replayed at their measured times, no latency between ranks: .* ms per hand-off between ranks" bench.log ||
    fail "no replay of the measured op times"
  grep -q "hand-offs measured between ranks (.*): median .* ms over .* per step; simulated with that latency: .* ms, .* against the executor; between ops with only local inputs: .* ms each" bench.log ||
    fail "no measured hand-offs"
  grep -q "FB units (overlapped): .* ms each.*of which hidden behind the other half's compute" bench.log ||
    fail "no FB unit line"
  python3 -c 'import json,sys; j=json.loads(open(sys.argv[1]).read().strip().splitlines()[-1]); sys.exit(0 if j["ms_simulated"] > 0 and j["ms_simulated_one_cost"] > 0 and j["ms_replayed"] > 0 and j["ms_simulated_measured_handoff"] > 0 and j["ms_copy_sum"] > 0 and j["ms_pipeline"] > 0 and j["schedule"] == "dualpipe" else 1)' bench.log ||
    fail "the bench JSON lacks the pipeline fields"
  if "$bin/epx-train" "$cfg" --pp 2 >usage.log 2>&1; then fail "--pp without --bench was accepted"; fi
  grep -q "go with --bench" usage.log || { cat usage.log; fail "--pp without --bench: no clear error"; }
  # A timeline that cannot be written stops every rank of the pipeline with the reason.
  start=$SECONDS
  train tl_bad 2 "${L4[@]}" --set parallel.pp=2 --set train.micro_batch_size=2 --set train.num_micro_batches=4 \
    --set log.timeline=/nonexistent/dir/t.svg && { cat tl_bad.log; fail "an unwritable log.timeline was accepted"; }
  took=$((SECONDS - start))
  # (The other rank's line, "log.timeline: rank 0 failed", may be cut short
  # by mpirun ending the job as soon as rank 0 exits.)
  grep -q "epx-train: FAILED.*log.timeline: cannot create /nonexistent/dir/t.svg" tl_bad.log ||
    { cat tl_bad.log; fail "no error names log.timeline and the file"; }
  ((took < 60)) || fail "an unwritable log.timeline took $took s to fail"
  # Checkpoints: DualPipe's on 1 rank, a 1-rank one on pp 4 with 1F1B.
  train back 1 "${L4[@]}" --resume "$work/pp2dp2ep2_dualpipe/step-5" || { cat back.log; fail "pp resume on 1 rank"; }
  python3 "$compare" pp2dp2ep2_dualpipe.jsonl back.jsonl --steps 6:10 || fail "the 1-rank resume differs"
  train forth 4 "${L4[@]}" --set parallel.pp=4 --set parallel.dp=1 --set train.micro_batch_size=1 \
    --set train.num_micro_batches=8 --resume "$work/ref/step-5" || { cat forth.log; fail "resume on pp 4"; }
  python3 "$compare" ref.jsonl forth.jsonl --steps 6:10 || fail "the pp 4 resume differs"
  # Bad settings: one line on every rank, before any work.
  cases=(
    "3|parallel.pp=3 parallel.dp=1 parallel.schedule=dualpipe train.num_micro_batches=6|dualpipe needs an even number of ranks"
    "2|parallel.pp=2 parallel.dp=1 parallel.schedule=dualpipe train.num_micro_batches=2|train.num_micro_batches = 2"
    "2|parallel.pp=2 parallel.dp=2|parallel.pp x parallel.dp = 2 x 2 = 4, expected the world size 2"
    "2|parallel.pp=1 parallel.dp=2 log.timeline=t.svg|log.timeline = t.svg draws a pipeline's step"
    "2|parallel.pp=2 parallel.dp=1 parallel.schedule=dualpipev train.num_micro_batches=4 model.num_layers=3|model.num_layers = 3 is fewer than the 4 pipeline stages"
    "2|parallel.pp=2 parallel.dp=1 train.num_micro_batches=4 parallel.layers_per_stage=[1,3]|parallel.layers_per_stage = [1, 3] adds up to 4, expected model.num_layers = 3"
  )
  for c in "${cases[@]}"; do
    IFS='|' read -r n sets want <<<"$c"
    args=()
    for kv in $sets; do args+=(--set "$kv"); done
    if train bad "$n" "${args[@]}"; then cat bad.log; fail "$sets was accepted"; fi
    grep -qF -- "$want" bad.log || { cat bad.log; fail "$sets: the error does not say '$want'"; }
    [[ $(grep -c "epx-train: FAILED" bad.log) == 1 ]] || { cat bad.log; fail "$sets: not one error line"; }
    grep -q "^step " bad.log && fail "$sets: training started"
    echo "ok: $sets -> $(grep 'epx-train: FAILED' bad.log)"
  done
  ;;
killfb)
  # A rank that stalls or dies inside a DualPipe FB unit (between its forward
  # and its backward, its EP peer inside the same unit's dispatch).
  stall_then_kill _FB "inside an FB unit of" 3 7 "FAILED.*rank 1" --set model.num_layers=4 --set parallel.pp=2 \
    --set parallel.dp=2 --set parallel.ep=2 --set parallel.schedule=dualpipe --set train.micro_batch_size=1 \
    --set train.num_micro_batches=4
  ;;
killmigrate)
  # Its EP group peer waits in the migration and names it.
  stall_then_kill _MIGRATION "before the migration of" 6 6 "FAILED.*the rebalance at step 6.*waiting for rank 1" \
    --set parallel.dp=4 --set parallel.ep=2 --set train.micro_batch_size=1 --set balancer.enabled=true \
    --set balancer.redundant_experts=4 --set balancer.every=3
  ;;
*) fail "unknown scenario" ;;
esac
echo "train test $scenario: OK"
