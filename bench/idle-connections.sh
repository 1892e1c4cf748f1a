#!/usr/bin/env bash
# Holds N idle SMTP connections (default 10000) open against `tern serve`, each having read
# its greeting, then reports the server's resident memory (VmRSS), checks that a new client
# is still served promptly meanwhile, and that SIGTERM tells every one of them 421 and the
# server exits 0. Loopback only; stops by itself.
#
#   bench/idle-connections.sh [N]          RUNTIME=smol|mio|blocking (default smol)
#   TERN=path/to/tern                      a binary to use instead of building one
#   PROFILE=release                        build in release mode (default: debug)
#
# Needs python3. Clients bind to 127.0.0.2..127.0.0.17 in turn so that no source address
# runs short of ephemeral ports; the config sets `connections_per_ip` above N.
set -euo pipefail

n=${1:-10000}
runtime=${RUNTIME:-smol}
profile=${PROFILE:-debug}
root=$(cd "$(dirname "$0")/.." && pwd)

if [[ -z ${TERN:-} ]]; then
    if [[ $profile == release ]]; then
        cargo build --quiet --release -p tern --manifest-path "$root/Cargo.toml"
    else
        cargo build --quiet -p tern --manifest-path "$root/Cargo.toml"
    fi
    TERN=$root/target/$profile/tern
fi

# Both the server and the client hold N descriptors.
ulimit -n "$(ulimit -Hn)"
if (($(ulimit -n) < n + 100)); then
    echo "idle-connections: ulimit -n is $(ulimit -n); $n connections need more" >&2
    exit 1
fi

dir=$(mktemp -d)
pid=
cleanup() {
    if [[ -n $pid ]] && kill -0 "$pid" 2>/dev/null; then
        kill -KILL "$pid"
    fi
    rm -rf "$dir"
}
trap cleanup EXIT

echo "bob:{PLAIN}secret::::::" >"$dir/users"
cat >"$dir/tern.toml" <<EOF
hostname = "mail.example.net"
domains = ["example.net"]
data_dir = "$dir/data"
log = "$dir/mail.log"

[accounts]
file = "$dir/users"

[mailbox]
path = "$dir/mail/%n/Maildir"

[limits]
connections = $((n + 100))
connections_per_ip = $((n + 100))

[[listener]]
name = "smtp"
protocol = "smtp"
address = "127.0.0.1:0"
EOF

"$TERN" serve --runtime "$runtime" --config "$dir/tern.toml" >"$dir/stdout" 2>"$dir/stderr" &
pid=$!
for _ in $(seq 100); do
    grep -q '^listening: smtp on ' "$dir/stdout" 2>/dev/null && break
    sleep 0.1
done
address=$(sed -n 's/^listening: smtp on //p' "$dir/stdout")
if [[ -z $address ]]; then
    echo "idle-connections: tern did not start:" >&2
    cat "$dir/stderr" >&2
    exit 1
fi

python3 - "$n" "$address" "$pid" <<'EOF'
import os
import signal
import socket
import sys
import time

n, address, pid = int(sys.argv[1]), sys.argv[2], sys.argv[3]
host, port = address.rsplit(":", 1)
port = int(port)


def rss_kib():
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    raise SystemExit("no VmRSS")


def read_reply(sock):
    data = b""
    while True:
        chunk = sock.recv(4096)
        if not chunk:
            raise SystemExit(f"connection closed after {data!r}")
        data += chunk
        lines = data.split(b"\r\n")
        if len(lines) > 1 and len(lines[-2]) >= 4 and lines[-2][3:4] == b" ":
            return data


def served_promptly():
    """A whole conversation with a message, timed."""
    start = time.monotonic()
    sock = socket.create_connection((host, port), timeout=10)
    replies = [read_reply(sock)]
    for command in [b"EHLO probe.example\r\n", b"MAIL FROM:<probe@example.org>\r\n",
                    b"RCPT TO:<bob@example.net>\r\n", b"DATA\r\n",
                    b"Subject: probe\r\n\r\nstill served\r\n.\r\n", b"QUIT\r\n"]:
        sock.sendall(command)
        replies.append(read_reply(sock))
    sock.close()
    codes = [reply[:3] for reply in replies]
    if codes != [b"220", b"250", b"250", b"250", b"354", b"250", b"221"]:
        raise SystemExit(f"probe conversation failed: {replies!r}")
    return time.monotonic() - start


before = rss_kib()
started = time.monotonic()
socks = []
batch = 100  # below the listen backlog of 128
for first in range(0, n, batch):
    opened = []
    for i in range(first, min(first + batch, n)):
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.bind((f"127.0.0.{2 + i % 16}", 0))
        sock.settimeout(30)
        sock.connect((host, port))
        opened.append(sock)
    for sock in opened:
        greeting = read_reply(sock)
        if not greeting.startswith(b"220 "):
            raise SystemExit(f"connection {len(socks)} got {greeting!r}")
        socks.append(sock)
connected = time.monotonic() - started

time.sleep(1)
after = rss_kib()
probe = served_promptly()
print(f"connections: {len(socks)} idle, each greeted, in {connected:.1f} s")
print(f"server VmRSS: {before} KiB before, {after} KiB with them "
      f"({(after - before) / len(socks):.1f} KiB a connection)")
print(f"new client served in {probe * 1000:.0f} ms while they are held")
if after > 200 * 1024:
    raise SystemExit("over the 200 MB target")
if probe > 1.0:
    raise SystemExit("the new client was not served within a second")

# SIGTERM with every connection open: each idle session is told 421 and closed.
started = time.monotonic()
os.kill(int(pid), signal.SIGTERM)
for sock in socks:
    reply = read_reply(sock)
    if not reply.startswith(b"421 4.3.2 "):
        raise SystemExit(f"at shutdown got {reply!r}")
    sock.close()
print(f"SIGTERM: all {len(socks)} told 421 in {time.monotonic() - started:.1f} s")
EOF

status=0
wait "$pid" || status=$?
echo "tern ($runtime) exited with $status after SIGTERM"
exit "$status"
