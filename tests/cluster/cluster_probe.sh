# Sourced by the emulated-cluster tests: exits 77 (ctest: skipped), saying
# why, where this machine cannot make the cluster (not root, no iproute2, no
# network namespaces, no unshare of uts/ipc/mount). $1: a name for the probe.
skip() {
  echo "skipped: $*"
  exit 77
}
[[ $(id -u) == 0 ]] || skip "the emulated cluster needs root"
command -v ip >/dev/null && command -v tc >/dev/null || skip "no ip/tc (iproute2)"
probe="epxcl-$1-probe"
ip netns add "$probe" 2>/dev/null || skip "this machine cannot create network namespaces"
ip netns exec "$probe" unshare --uts --ipc --mount --propagation private true 2>/dev/null
unshare_rc=$?
ip netns del "$probe"
((unshare_rc == 0)) || skip "unshare --uts --ipc --mount is not allowed here"
