# Shared by the shell test suites (cli_test.sh, crash_test.sh, mpi_test.sh): counters, report
# lines, and run() capturing a command's status and output. Source it after setting CAP (a
# directory for captured output) and CMD_TIMEOUT (seconds one command may take).
PASS=0
FAILED=0
SKIPPED=0
ok() { echo "ok $1"; PASS=$((PASS + 1)); }
fail() { echo "FAIL $1: $2"; FAILED=$((FAILED + 1)); }
# a check that could not run here: neither passed nor failed
skip() { echo "skipped $1: $2"; SKIPPED=$((SKIPPED + 1)); }
# one line for the report: newlines shown as \n, cut to 300 characters
oneline() { printf '%s' "$1" | head -c 300 | tr '\n' '\001' | sed 's/\x01/\\n/g'; }

# run CMD...: sets RC, OUT (stdout) and ERR (stderr); $CAP/out and $CAP/err hold the raw bytes
# A CUDA build on a machine without a GPU says so on stderr ($NOTICE) before running on the
# CPU: that notice is not an error line, so run() sets NOTICE_SEEN and drops it from ERR.
NOTICE='upcycle: no CUDA device visible; running on the CPU'
run() {
  timeout "${CMD_TIMEOUT:-120}" "$@" >"$CAP/out" 2>"$CAP/err"
  RC=$?
  NOTICE_SEEN=0
  if grep -qxF "$NOTICE" "$CAP/err"; then
    NOTICE_SEEN=1
    grep -vxF "$NOTICE" "$CAP/err" >"$CAP/err.kept"
    mv "$CAP/err.kept" "$CAP/err"
  fi
  OUT=$(cat "$CAP/out")
  ERR=$(cat "$CAP/err")
}
