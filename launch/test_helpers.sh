# Shared helpers of the launch/ test scripts (sourced): run a command and
# capture its output and status, and count failed expectations.
failures=0
out=""
status=0

run() {  # run CMD...: captures stdout+stderr in $out and the exit status in $status
  out=$("$@" 2>&1)
  status=$?
}
fail() {
  echo "FAIL: $*"
  echo "  output: $out"
  failures=$((failures + 1))
}
expect_status() {  # expect_status N description
  [[ $status -eq $1 ]] || fail "$2: exit status $status, expected $1"
}
expect_in() {  # expect_in TEXT description
  [[ "$out" == *"$1"* ]] || fail "$2: output lacks '$1'"
}
expect_not_in() {
  [[ "$out" != *"$1"* ]] || fail "$2: output has '$1'"
}
