# Shared by the interop scripts: the pass/fail bookkeeping, small helpers, the root check,
# the Debian packages (Postfix preseeded as "Local only", so no mail can leave) and the tern
# binary. A script sets PACKAGES, then sources this file, which sets ROOT and TERN.

set -u
set -o pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
PASSED=0
FAILED=0

say() { printf '%s\n' "$*"; }
pass() { PASSED=$((PASSED + 1)); say "ok   - $1"; }
fail() { FAILED=$((FAILED + 1)); say "FAIL - $1"; [ $# -gt 1 ] && printf '%s\n' "$2" | sed 's/^/       /' | head -40; }
# check NAME COMMAND...: passes when the command succeeds.
check() {
    local name=$1
    shift
    local out
    if out=$("$@" 2>&1); then pass "$name"; else fail "$name" "$out"; fi
}
# wait_for SECONDS COMMAND...: retries the command until it succeeds or time runs out.
wait_for() {
    local limit=$1
    shift
    local end=$((SECONDS + limit))
    while ! "$@" >/dev/null 2>&1; do
        [ $SECONDS -ge "$end" ] && return 1
        sleep 0.2
    done
}
free_port() {
    python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

if [ "$(id -u)" != 0 ]; then
    say "$(basename "$0") must run as root (it installs packages and starts Postfix)"
    exit 2
fi

# --- packages -------------------------------------------------------------------------------
missing=""
for p in $PACKAGES; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing="$missing $p"
done
if [ -n "$missing" ]; then
    say "installing:$missing"
    apt-get update -qq || { say "apt-get update failed"; exit 2; }
    echo 'postfix postfix/main_mailer_type select Local only' | debconf-set-selections
    # shellcheck disable=SC2086
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $PACKAGES >/dev/null ||
        { say "apt-get install failed"; exit 2; }
fi
command -v python3 >/dev/null || { say "python3 is needed"; exit 2; }

# --- tern -----------------------------------------------------------------------------------
if [ -n "${TERN_BIN:-}" ]; then
    TERN=$(realpath "$TERN_BIN")
else
    (cd "$ROOT" && cargo build -q -p tern) || { say "cargo build failed"; exit 2; }
    TERN="${CARGO_TARGET_DIR:-$ROOT/target}/debug/tern"
fi
[ -x "$TERN" ] || { say "no tern binary at $TERN"; exit 2; }
