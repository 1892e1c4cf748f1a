#!/usr/bin/env bash
# Relaying N messages to Postfix's smtp-sink on loopback: tern against Postfix, in one run.
#
#   bench/relay.sh [TERN_BINARY]      (N=10000, RUNS=3, RUNTIME=smol by default)
#
# Both servers take the messages from smtp-source on a trusted loopback address and relay
# them to their own smtp-sink through a relay host (tern: delivery.relay_host; Postfix:
# relayhost). The time runs from the first message submitted until the sink has counted the
# last one, so it covers receiving, queueing (fsync) and relaying. Both servers start once;
# the rounds then alternate between them (tern, Postfix, tern, ...), each after a `sync`, so
# a slow spell of the disk falls on both. Prints each round and the medians: messages per
# second for each and the ratio of the medians. Needs root (smtp-sink -u, Postfix), postfix and python3;
# touches nothing outside a temporary directory: the Postfix instance runs with `-c` on a
# private configuration directory.
set -euo pipefail

N=${N:-10000}
RUNS=${RUNS:-3}
RUNTIME=${RUNTIME:-smol}  # tern's default
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

# Starts a sink and sets SINK_PORT. Its counter goes to $W/sink-NAME. Not run in a command
# substitution: the pid must reach PIDS in this shell, or cleanup would miss the sink.
start_sink() {
    SINK_PORT=$(free_port)
    smtp-sink -u nobody -c "127.0.0.1:$SINK_PORT" 256 >"$W/sink-$1" 2>&1 &
    PIDS+=($!)
    wait_port "$SINK_PORT" >/dev/null
}

# Seconds since START until the sink NAME has counted TOTAL messages (its count runs on
# across rounds).
wait_sink() {
    local start=$1 name=$2 total=$3
    while :; do
        local count
        count=$(tr '\r' '\n' <"$W/sink-$name" | sed -n 's/.*mesg=\([0-9]*\).*/\1/p' | tail -1)
        if [ "${count:-0}" -ge "$total" ]; then
            python3 -c "import time; print(round(time.time() - $start, 2))"
            return
        fi
        sleep 0.05
    done
}

# Writes back what earlier runs left dirty (a previous run's removed queue, for one), so
# neither server's time includes the other's disk work.
settle() {
    sync
    sleep 1
}

submit() {  # submit PORT
    smtp-source -s "$SESSIONS" -m "$N" -l 2000 -f sender@bench.test -t rcpt@remote.test \
        "127.0.0.1:$1"
}

# --- tern ------------------------------------------------------------------------------
start_sink tern
SINK_T=$SINK_PORT
TPORT=$(free_port)
mkdir -p "$W/tern"
: >"$W/tern/users"
cat >"$W/tern/tern.toml" <<EOF
hostname = "tern.bench"
domains = ["bench.test"]
trusted_networks = ["127.0.0.0/8"]
runtime = "$RUNTIME"
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

# --- Postfix ---------------------------------------------------------------------------
start_sink postfix
SINK_P=$SINK_PORT
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

# One timed round: submit N messages to PORT, wait until sink NAME has them all; prints the
# seconds.
round() {
    local name=$1 port=$2 total=$3 start
    settle
    start=$(python3 -c 'import time; print(time.time())')
    submit "$port" >&2
    echo "$name: accepted $N in $(python3 -c "import time; print(round(time.time() - $start, 2))") s" >&2
    wait_sink "$start" "$name" "$total"
}

TERN_SECS=()
POSTFIX_SECS=()
for run in $(seq "$RUNS"); do
    TERN_SECS+=("$(round tern "$TPORT" $((run * N)))")
    POSTFIX_SECS+=("$(round postfix "$PPORT" $((run * N)))")
    echo "round $run: tern ${TERN_SECS[-1]} s, postfix ${POSTFIX_SECS[-1]} s"
done

python3 - "$N" "${TERN_SECS[*]}" "${POSTFIX_SECS[*]}" <<'EOF'
import statistics, sys
n = int(sys.argv[1])
tern = statistics.median(float(x) for x in sys.argv[2].split())
postfix = statistics.median(float(x) for x in sys.argv[3].split())
print(f"relay {n} messages, median of {len(sys.argv[2].split())}: tern {n / tern:.0f} msg/s "
      f"({tern:.2f} s), postfix {n / postfix:.0f} msg/s ({postfix:.2f} s), ratio {postfix / tern:.2f}")
EOF
