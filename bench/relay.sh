#!/usr/bin/env bash
# Relaying N messages to Postfix's smtp-sink on loopback: tern against Postfix, in one run.
#
#   bench/relay.sh [TERN_BINARY]      (N=10000 by default; N=500 bench/relay.sh for a quick look)
#
# Both servers take the messages from smtp-source on a trusted loopback address and relay
# them to their own smtp-sink through a relay host (tern: delivery.relay_host; Postfix:
# relayhost). The time runs from the first message submitted until the sink has counted the
# last one, so it covers receiving, queueing (fsync) and relaying. Prints messages per
# second for each and the ratio. Needs root (smtp-sink -u, Postfix), postfix and python3;
# touches nothing outside a temporary directory: the Postfix instance runs with `-c` on a
# private configuration directory.
set -euo pipefail

N=${N:-10000}
TERN=${1:-target/release/tern}
SESSIONS=${SESSIONS:-10}
W=$(mktemp -d /tmp/tern-relay-bench.XXXXXX)
chmod 755 "$W"  # Postfix daemons (user postfix) must reach their data directory
PIDS=()
PF_STARTED=

cleanup() {
    for pid in "${PIDS[@]}"; do kill "$pid" 2>/dev/null || true; done
    [ -n "$PF_STARTED" ] && postfix -c "$W/postfix/etc" stop >/dev/null 2>&1 || true
    [ -n "${KEEP:-}" ] || rm -rf "$W"
}
trap cleanup EXIT

free_port() {
    python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

wait_port() {
    for _ in $(seq 100); do
        python3 -c "import socket; socket.create_connection(('127.0.0.1', $1), 1)" 2>/dev/null && return 0
        sleep 0.1
    done
    echo "nothing listens on $1" >&2
    return 1
}

# Starts a sink; prints its port. Its counter goes to $W/sink-NAME.
start_sink() {
    local port
    port=$(free_port)
    smtp-sink -u nobody -c "127.0.0.1:$port" 256 >"$W/sink-$1" 2>&1 &
    PIDS+=($!)
    wait_port "$port" >/dev/null
    echo "$port"
}

# Seconds until the sink NAME has counted N messages.
wait_sink() {
    local start=$1 name=$2
    while :; do
        local count
        count=$(tr '\r' '\n' <"$W/sink-$name" | sed -n 's/.*mesg=\([0-9]*\).*/\1/p' | tail -1)
        if [ "${count:-0}" -ge "$N" ]; then
            python3 -c "import time; print(round(time.time() - $start, 2))"
            return
        fi
        sleep 0.05
    done
}

submit() {  # submit PORT
    smtp-source -s "$SESSIONS" -m "$N" -l 2000 -f sender@bench.test -t rcpt@remote.test \
        "127.0.0.1:$1"
}

# --- tern ------------------------------------------------------------------------------
SINK_T=$(start_sink tern)
TPORT=$(free_port)
mkdir -p "$W/tern"
: >"$W/tern/users"
cat >"$W/tern/tern.toml" <<EOF
hostname = "tern.bench"
domains = ["bench.test"]
trusted_networks = ["127.0.0.0/8"]
runtime = "blocking"
data_dir = "$W/tern/data"
log = "$W/tern/mail.log"

[accounts]
file = "$W/tern/users"

[delivery]
relay_host = "[127.0.0.1]:$SINK_T"
relay_tls = "none"

[[listener]]
name = "smtp"
protocol = "smtp"
address = "127.0.0.1:$TPORT"
EOF
"$TERN" serve --config "$W/tern/tern.toml" >"$W/tern/stdout" 2>"$W/tern/stderr" &
PIDS+=($!)
wait_port "$TPORT"
start=$(python3 -c 'import time; print(time.time())')
submit "$TPORT"
echo "tern: accepted $N in $(python3 -c "import time; print(round(time.time() - $start, 2))") s"
tern_secs=$(wait_sink "$start" tern)

# --- Postfix ---------------------------------------------------------------------------
SINK_P=$(start_sink postfix)
PPORT=$(free_port)
PF="$W/postfix"
mkdir -p "$PF/etc" "$PF/queue" "$PF/data"
chown postfix "$PF/data"
cp /etc/postfix/master.cf "$PF/etc/master.cf"
cat >"$PF/etc/main.cf" <<EOF
compatibility_level = 3.6
queue_directory = $PF/queue
data_directory = $PF/data
myhostname = postfix.bench
mydestination =
inet_interfaces = loopback-only
inet_protocols = ipv4
mynetworks = 127.0.0.0/8
maillog_file = $PF/maillog
maillog_file_prefixes = /var, /dev/stdout, $W
alias_maps =
alias_database =
relayhost = [127.0.0.1]:$SINK_P
smtp_tls_security_level = none
EOF
postconf -c "$PF/etc" -F -e '*/*/chroot = n'
postconf -c "$PF/etc" -M -X 'smtp/inet'
postconf -c "$PF/etc" -M -e "127.0.0.1:$PPORT/inet = 127.0.0.1:$PPORT inet n - n - - smtpd"
postfix -c "$PF/etc" start >"$W/postfix-start" 2>&1 && PF_STARTED=1 || { cat "$W/postfix-start" >&2; exit 1; }
wait_port "$PPORT"
start=$(python3 -c 'import time; print(time.time())')
submit "$PPORT"
echo "postfix: accepted $N in $(python3 -c "import time; print(round(time.time() - $start, 2))") s"
postfix_secs=$(wait_sink "$start" postfix)

python3 - "$N" "$tern_secs" "$postfix_secs" <<'EOF'
import sys
n, tern, postfix = int(sys.argv[1]), float(sys.argv[2]), float(sys.argv[3])
print(f"relay {n} messages: tern {n / tern:.0f} msg/s ({tern} s), "
      f"postfix {n / postfix:.0f} msg/s ({postfix} s), ratio {postfix / tern:.2f}")
EOF
