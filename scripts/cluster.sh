#!/usr/bin/env bash
# An emulated cluster on one host (root only), for epx's inter-node tests,
# faults and benchmarks (docs/internode.md, "The emulated cluster").
#
#   cluster.sh [--name NAME] up N [--ranks-per-node R] [--rate RATE]
#   cluster.sh [--name NAME] tc RATE|off        # every node link, both directions
#   cluster.sh [--name NAME] link NODE up|down  # cut node NODE's link (both ends), or restore it
#   cluster.sh [--name NAME] run [MPIRUN ARGS] PROGRAM [ARGS]   # e.g. run -np 8 epx-bench
#   cluster.sh [--name NAME] status             # nodes, rates, tc byte counters
#   cluster.sh [--name NAME] down
#
# Layout: a bridge in a namespace of its own; one namespace per node, joined to
# the bridge by a veth (the node's link, shaped with tc tbf in both directions:
# this kernel has no netem, so there is bandwidth but no delay); a head
# namespace on the bridge where mpirun runs (from the host namespace the orteds
# could not connect back). mpirun reaches a node through this script as its
# rsh agent, which starts the orted in the node's namespace under unshare with
# the node's own hostname (Open MPI's vader names its segments by host, and
# MPI_COMM_TYPE_SHARED groups by it) and its own tmpfs on /dev/shm (POSIX shm
# names are global otherwise). So vader carries traffic inside a node and tcp
# over the veths carries it between nodes.
#
# Everything lives in namespaces named epxcl-NAME-*, with 10.47.0.0/24 addresses
# that exist only on the cluster's own bridge: the host's interfaces, routes
# and files are not touched. NAME (default 0, or $EPX_CLUSTER) lets clusters
# coexist; one run at a time per cluster. Every command cleans up after itself
# on failure or signal; `down` kills what still runs inside the namespaces and
# removes them.
set -euo pipefail

SELF=$(readlink -f "${BASH_SOURCE[0]}")
readonly SELF
readonly SUBNET=10.47.0
NAME=${EPX_CLUSTER:-0}

die() {
  echo "cluster: $*" >&2
  exit 1
}

usage() {
  sed -n '2,10p' "$SELF" | sed 's/^# \{0,1\}//'
}

prefix() { echo "epxcl-$NAME-"; }
ns_bridge() { echo "$(prefix)br"; }
ns_head() { echo "$(prefix)head"; }
ns_node() { echo "$(prefix)n$1"; }

# Our namespaces, whatever state they are in.
our_namespaces() {
  ip netns list 2>/dev/null | awk '{print $1}' | grep -E "^$(prefix)" || true
}

is_up() { ip netns list 2>/dev/null | awk '{print $1}' | grep -qx "$(ns_bridge)"; }

need_root() {
  [[ $(id -u) == 0 ]] || die "must run as root (it creates network namespaces)"
}

# The cluster's shape is kept on the bridge itself (an interface alias), so
# the script keeps no files outside its namespaces.
shape() {
  is_up || die "cluster '$NAME' is not up (cluster.sh up N)"
  ip -n "$(ns_bridge)" -o link show br0 | grep -o 'alias epx nodes=[0-9]* ranks_per_node=[0-9]*' |
    sed 's/.*nodes=\([0-9]*\) ranks_per_node=\([0-9]*\)/\1 \2/'
}

# Kills every process inside our namespaces (orphaned ranks or orteds of an
# interrupted run), then removes the namespaces (their veths go with them).
teardown() {
  local ns pids
  for ns in $(our_namespaces); do
    pids=$(ip netns pids "$ns" 2>/dev/null || true)
    [[ -n $pids ]] && kill -KILL $pids 2>/dev/null || true
  done
  for ns in $(our_namespaces); do
    # A killed process may take a moment to leave the namespace.
    for _ in 1 2 3 4 5 6 7 8 9 10; do
      [[ -z $(ip netns pids "$ns" 2>/dev/null || true) ]] && break
      sleep 0.1
    done
    ip netns del "$ns" 2>/dev/null || true
  done
}

# RATE as tc writes it (2gbit, 100mbit, 500kbit, 1000000bit) in bits per second.
rate_bits() {
  local r=${1,,}
  [[ $r =~ ^([0-9]+)(bit|kbit|mbit|gbit)$ ]] || die "rate '$1': expected a number and bit, kbit, mbit or gbit"
  local n=${BASH_REMATCH[1]}
  case ${BASH_REMATCH[2]} in
    bit) echo "$n" ;;
    kbit) echo $((n * 1000)) ;;
    mbit) echo $((n * 1000000)) ;;
    gbit) echo $((n * 1000000000)) ;;
  esac
}

# One qdisc on one link end: tbf at RATE, or a plain fifo ("off"), which
# still counts bytes (a veth's default noqueue has no counters).
shape_link() {
  local ns=$1 dev=$2 rate=$3
  if [[ $rate == off ]]; then
    ip netns exec "$ns" tc qdisc replace dev "$dev" root pfifo limit 1000
    return
  fi
  local bits burst
  bits=$(rate_bits "$rate")
  # 4 ms of tokens (at least 64 KiB, one GSO packet): enough for the timer
  # granularity at any rate, small enough that the rate holds over a run.
  burst=$((bits / 8 / 250))
  ((burst < 65536)) && burst=65536
  ip netns exec "$ns" tc qdisc replace dev "$dev" root tbf rate "$rate" burst "$burst" latency 20ms
}

cmd_tc() {
  need_root
  [[ $# == 1 ]] || die "usage: cluster.sh tc RATE|off"
  local nodes rpn i
  read -r nodes rpn < <(shape)
  for ((i = 0; i < nodes; i++)); do
    shape_link "$(ns_node "$i")" eth0 "$1"  # the node's sends
    shape_link "$(ns_bridge)" "n$i" "$1"     # what the node receives
  done
}

cmd_link() {
  need_root
  [[ $# == 2 && $1 =~ ^[0-9]+$ && ($2 == up || $2 == down) ]] || die "usage: cluster.sh link NODE up|down"
  local nodes rpn
  read -r nodes rpn < <(shape)
  (($1 < nodes)) || die "link: node $1, the cluster has nodes 0 to $((nodes - 1))"
  # Both ends: nothing leaves the node and nothing reaches it. Its TCP
  # connections stay open, as on a pulled cable, and time out on their own.
  ip -n "$(ns_node "$1")" link set eth0 "$2"
  ip -n "$(ns_bridge)" link set "n$1" "$2"
}

cmd_up() {
  need_root
  local nodes="" rpn=1 rate=off
  while (($#)); do
    case $1 in
      --ranks-per-node) rpn=${2:?}; shift 2 ;;
      --rate) rate=${2:?}; shift 2 ;;
      -*) die "up: unknown option $1" ;;
      *) nodes=$1; shift ;;
    esac
  done
  [[ $nodes =~ ^[0-9]+$ ]] && ((nodes >= 1 && nodes <= 200)) || die "up: N = '$nodes', expected 1 to 200 nodes"
  [[ $rpn =~ ^[0-9]+$ ]] && ((rpn >= 1)) || die "up: --ranks-per-node '$rpn', expected a positive count"
  [[ $rate == off ]] || rate_bits "$rate" >/dev/null
  is_up && die "cluster '$NAME' is already up (cluster.sh --name $NAME down first)"
  ip netns add "$(prefix)probe" 2>/dev/null && ip netns del "$(prefix)probe" ||
    die "cannot create network namespaces here"
  # Half-built clusters do not stay.
  trap teardown EXIT
  trap 'exit 130' INT TERM

  local br
  br=$(ns_bridge)
  ip netns add "$br"
  ip -n "$br" link set lo up
  ip -n "$br" link add br0 type bridge
  ip -n "$br" link set br0 alias "epx nodes=$nodes ranks_per_node=$rpn"
  ip -n "$br" link set br0 up
  # Endpoint names on the bridge side: head, n0, n1, ...; eth0 inside.
  local i ns port addr
  for ((i = -1; i < nodes; i++)); do
    if ((i < 0)); then ns=$(ns_head) port=head addr=$SUBNET.1
    else ns=$(ns_node "$i") port=n$i addr=$SUBNET.$((10 + i)); fi
    ip netns add "$ns"
    ip -n "$br" link add "$port" type veth peer name eth0 netns "$ns"
    ip -n "$br" link set "$port" master br0 up
    ip -n "$ns" link set lo up
    ip -n "$ns" addr add "$addr/24" dev eth0
    ip -n "$ns" link set eth0 up
  done
  cmd_tc "$rate"
  trap - EXIT INT TERM
  echo "cluster: '$NAME' up: $nodes nodes of $rpn ranks, node links at $rate; head $SUBNET.1, nodes $SUBNET.10+"
}

cmd_down() {
  need_root
  teardown
  [[ -z $(our_namespaces) ]] || die "namespaces left: $(our_namespaces | tr '\n' ' ')"
}

# "OUT IN" bytes of node i's link, from the tc counters of its two ends
# (they restart when `tc` replaces the qdisc, e.g. a rate changed mid-run).
link_bytes() {
  local out in
  out=$(ip netns exec "$(ns_node "$1")" tc -s qdisc show dev eth0 | awk '/Sent/ {print $2; exit}')
  in=$(ip netns exec "$(ns_bridge)" tc -s qdisc show dev "n$1" | awk '/Sent/ {print $2; exit}')
  echo "${out:-0} ${in:-0}"
}

link_rate() {
  ip netns exec "$(ns_node "$1")" tc qdisc show dev eth0 | awk '{for (i = 1; i < NF; i++) if ($i == "rate") {print $(i + 1); exit}} END {}'
}

cmd_status() {
  need_root
  if ! is_up; then
    echo "cluster '$NAME': down"
    return 0
  fi
  local nodes rpn i out in rate
  read -r nodes rpn < <(shape)
  echo "cluster '$NAME': $nodes nodes of $rpn ranks"
  for ((i = 0; i < nodes; i++)); do
    read -r out in < <(link_bytes "$i")
    rate=$(link_rate "$i")
    echo "  $(ns_node "$i")  $SUBNET.$((10 + i))  rate ${rate:-off}  sent $out bytes  received $in bytes"
  done
}

# mpirun calls this as its rsh agent: `cluster.sh --name NAME agent HOST CMD...`.
# Like ssh, it runs CMD with a shell, here inside HOST's namespace, with HOST
# as the host name and a private tmpfs on /dev/shm, which goes when the node's
# last process does.
cmd_agent() {
  local host=${1:?agent: no host}
  shift
  [[ $host == "$(prefix)"n* ]] && ip netns list | awk '{print $1}' | grep -qx "$host" ||
    die "agent: '$host' is not a node of cluster '$NAME'"
  exec ip netns exec "$host" unshare --uts --ipc --mount --propagation private -- /bin/sh -c '
    hostname "$1" && mount -t tmpfs -o mode=1777 epx-node-shm /dev/shm || exit 1
    shift
    exec /bin/sh -c "$*"' sh "$host" "$@"
}

cmd_run() {
  need_root
  (($#)) || die "usage: cluster.sh run [MPIRUN ARGS] PROGRAM [ARGS]"
  local nodes rpn i hosts=""
  read -r nodes rpn < <(shape)
  for ((i = 0; i < nodes; i++)); do hosts+="${hosts:+,}$(ns_node "$i"):$rpn"; done
  local args=(--allow-run-as-root --host "$hosts"
    --mca plm_rsh_agent "$SELF --name $NAME agent" --mca plm_rsh_no_tree_spawn 1
    --mca oob_tcp_if_include "$SUBNET.0/24" --mca btl_tcp_if_include "$SUBNET.0/24")
  # Debian's /etc/openmpi/openmpi-mca-params.conf sets osc = ^ucx,pt2pt, which
  # leaves no one-sided component that works over TCP between nodes (osc/rdma
  # needs a btl with RDMA): epx's mpi transport could not create its windows.
  # osc/pt2pt (one-sided over the point-to-point transports) works everywhere;
  # an osc given here (or OMPI_MCA_osc) wins.
  if [[ " $* " != *" osc "* && -z ${OMPI_MCA_osc:-} ]]; then args+=(--mca osc pt2pt); fi
  # UCX (osc/ucx, pml/ucx) would otherwise also use each node's loopback,
  # whose addresses every node shares.
  export UCX_NET_DEVICES=${UCX_NET_DEVICES:-eth0}

  local before=() after=()
  for ((i = 0; i < nodes; i++)); do before+=("$(link_bytes "$i")"); done
  local pid rc=0
  ip netns exec "$(ns_head)" mpirun "${args[@]}" "$@" &
  pid=$!
  trap 'kill -TERM $pid 2>/dev/null || true' INT TERM
  wait "$pid" || rc=$?
  # A signal interrupts the first wait; mpirun then stops its orteds.
  kill -0 "$pid" 2>/dev/null && { wait "$pid" || rc=$?; }
  trap - INT TERM
  # Ranks or orteds that outlived mpirun (a killed run) go now.
  local ns pids
  for ((i = 0; i < nodes; i++)); do
    ns=$(ns_node "$i")
    pids=$(ip netns pids "$ns" 2>/dev/null || true)
    [[ -n $pids ]] && kill -KILL $pids 2>/dev/null || true
  done
  local b_out b_in a_out a_in
  for ((i = 0; i < nodes; i++)); do
    after+=("$(link_bytes "$i")")
    read -r b_out b_in <<<"${before[i]}"
    read -r a_out a_in <<<"${after[i]}"
    echo "cluster: link of node $i: sent $((a_out - b_out)) bytes, received $((a_in - b_in)) bytes" >&2
  done
  return "$rc"
}

main() {
  if [[ ${1:-} == --name ]]; then
    NAME=${2:?--name NAME}
    shift 2
  fi
  [[ $NAME =~ ^[a-z0-9]{1,16}$ ]] || die "name '$NAME': expected 1 to 16 of a-z, 0-9"
  local cmd=${1:-}
  (($#)) && shift
  case $cmd in
    up) cmd_up "$@" ;;
    tc) cmd_tc "$@" ;;
    link) cmd_link "$@" ;;
    run) cmd_run "$@" ;;
    status) cmd_status "$@" ;;
    down) cmd_down "$@" ;;
    agent) cmd_agent "$@" ;;
    -h | --help | help) usage ;;
    *) usage >&2; exit 2 ;;
  esac
}

main "$@"
