#!/usr/bin/env bash
# Benchmarks side by side with Postfix and Dovecot (issue 8). Run as root after
# `cargo build --release`:
#
#   bench/run.sh                       # tern from target/release/tern, loadgen built here
#   TERN_BIN=path/to/tern bench/run.sh
#
# Installs postfix, dovecot-core and dovecot-lmtpd from Debian if missing, then sets up,
# under one temp dir, a private Postfix (virtual Maildir delivery for the bench users, a
# loopback port, a submission port with STARTTLS and Dovecot SASL), a private Dovecot (LMTP
# and auth on Unix sockets, Maildir), smtp-sink, and tern once per runtime and run. Workloads
# (each run RUNS times; the table shows medians):
#   1. SMTP, 20 sessions, N1 messages of 1 KB to one user: tern x3 runtimes, Postfix, smtp-sink
#   2. the same with N2 messages of 100 KB
#   3. LMTP on a Unix socket (smtp-source -L), N3 messages of 1 KB: tern x3, Dovecot
#   4. submission, STARTTLS + AUTH PLAIN (bench/loadgen), N4 messages of 1 KB: tern x3,
#      Postfix with Dovecot SASL
#   5. SMTP, N5 messages of 1 KB with 10 recipients each (10 mailboxes): tern x3, Postfix
#   M. one 100 MB message through tern (each runtime): resident memory before and after
#   0. loadgen checked against smtp-source on plain SMTP (smtp-sink and tern)
#
# Measured per run: accepted msg/s (client's wall time), delivered msg/s (until the last
# file is in the Maildirs' new/, counted), server CPU seconds per 1,000 messages
# (utime+stime+cutime+cstime of every process in the server's process tree, from
# /proc/PID/stat, before and after), peak memory (the largest sum of PSS over the tree,
# from /proc/PID/smaps_rollup, sampled every 0.1 s: RSS with shared pages divided among
# the processes sharing them, so that Postfix's dozens of processes are not overcounted). Every daemon started here is stopped at
# exit, by pid or with `postfix -c DIR stop` / `doveadm -c FILE stop`.
#
# Environment: TERN_BIN, RUNS (3), SESSIONS (20), N1 (20000), N2 (1000), N3 (5000),
# N4 (2000), N5 (1000), RUNTIMES ("blocking smol mio"), WORKLOADS ("0 1 2 3 4 5 M"),
# KEEP=1 (keep the temp dir), OUT (where to write the Markdown table; default
# bench/results.md).

set -u
set -o pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
RUNS=${RUNS:-3}
SESSIONS=${SESSIONS:-20}
N1=${N1:-20000}
N2=${N2:-1000}
N3=${N3:-5000}
N4=${N4:-2000}
N5=${N5:-1000}
RUNTIMES=${RUNTIMES:-blocking smol mio}
WORKLOADS=${WORKLOADS:-0 1 2 3 4 5 M}
OUT=${OUT:-$ROOT/bench/results.md}
DELIVERY_TIMEOUT=600

say() { printf '%s\n' "$*" >&2; }
die() { say "bench: $*"; exit 2; }
wants() { case " $WORKLOADS " in *" $1 "*) return 0 ;; esac; return 1; }
wait_for() {  # wait_for SECONDS COMMAND...
    local limit=$1
    shift
    local end=$((SECONDS + limit))
    while ! "$@" >/dev/null 2>&1; do
        [ $SECONDS -ge "$end" ] && return 1
        sleep 0.1
    done
}
free_port() {
    python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}
port_open() { python3 -c "import socket; socket.create_connection(('127.0.0.1', $1), 1)"; }

[ "$(id -u)" = 0 ] || die "must run as root (it installs packages and starts Postfix)"
command -v python3 >/dev/null || die "python3 is needed"

# --- packages -------------------------------------------------------------------------------
PACKAGES="postfix dovecot-core dovecot-lmtpd"
missing=""
for p in $PACKAGES; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing="$missing $p"
done
if [ -n "$missing" ]; then
    say "installing:$missing"
    apt-get update -qq || die "apt-get update failed"
    echo 'postfix postfix/main_mailer_type select Local only' | debconf-set-selections
    # shellcheck disable=SC2086
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $PACKAGES >/dev/null ||
        die "apt-get install failed"
fi

# --- binaries -------------------------------------------------------------------------------
TERN=$(realpath "${TERN_BIN:-${CARGO_TARGET_DIR:-$ROOT/target}/release/tern}")
[ -x "$TERN" ] || die "no tern binary at $TERN: run cargo build --release -p tern, or set TERN_BIN"
(cd "$ROOT/bench/loadgen" && cargo build -q --release) || die "cannot build bench/loadgen"
LOADGEN="$ROOT/bench/loadgen/target/release/tern-loadgen"

# --- the temp dir and cleanup ---------------------------------------------------------------
W=$(mktemp -d /tmp/tern-bench.XXXXXX)
chmod 755 "$W"
PF="$W/postfix"
DV="$W/dovecot"
TERN_PID=""
SINK_PID=""
SAMPLER_PID=""
PF_STARTED=""
DV_STARTED=""
ALT_ADDED=""
MAIL_UID=$(id -u nobody)
MAIL_GID=$(id -g nobody)

cleanup() {
    [ -n "$SAMPLER_PID" ] && kill "$SAMPLER_PID" 2>/dev/null
    [ -n "$TERN_PID" ] && kill -TERM "$TERN_PID" 2>/dev/null && wait "$TERN_PID" 2>/dev/null
    [ -n "$SINK_PID" ] && kill -TERM "$SINK_PID" 2>/dev/null && wait "$SINK_PID" 2>/dev/null
    [ -n "$PF_STARTED" ] && postfix -c "$PF/etc" stop >/dev/null 2>&1
    [ -n "$DV_STARTED" ] && doveadm -c "$DV/dovecot.conf" stop >/dev/null 2>&1
    if [ -n "$ALT_ADDED" ]; then
        local now
        now=$(postconf -h alternate_config_directories | tr ', ' '\n\n' | grep -v -x -F "$PF/etc" | grep . | paste -sd' ')
        postconf -e "alternate_config_directories = $now"
    fi
    if [ "${KEEP:-}" = 1 ]; then say "kept $W"; else rm -rf "$W"; fi
}
trap cleanup EXIT
trap 'exit 2' INT TERM

# The /proc helper: CPU seconds of a process tree, a sampler of its resident memory, file
# counts.
cat >"$W/proc.py" <<'EOF'
import os, sys, time

TICK = os.sysconf("SC_CLK_TCK")

def stat(pid):
    with open(f"/proc/{pid}/stat") as f:
        text = f.read()
    # The command name may hold spaces; the fields after its closing parenthesis do not.
    fields = text[text.rindex(")") + 2:].split()
    return int(fields[1]), sum(int(x) for x in fields[11:15])  # ppid, u+s+cu+cs ticks

def tree(root):
    children = {}
    for name in os.listdir("/proc"):
        if name.isdigit():
            try:
                ppid, _ = stat(name)
            except (OSError, ValueError):
                continue
            children.setdefault(ppid, []).append(int(name))
    out, todo = [], [root]
    while todo:
        pid = todo.pop()
        out.append(pid)
        todo.extend(children.get(pid, []))
    return out

def cpu(root):
    total = 0
    for pid in tree(root):
        try:
            total += stat(pid)[1]
        except (OSError, ValueError):
            pass
    return total / TICK

def status(pid, key):
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith(key + ":"):
                    return int(line.split()[1])
    except OSError:
        pass
    return 0

def rss(root):
    return sum(status(pid, "VmRSS") for pid in tree(root))

def pss(root):
    # Proportional set size: shared pages (libraries, Postfix's many processes of one
    # binary) are divided among the processes sharing them instead of counted in each.
    total = 0
    for pid in tree(root):
        try:
            with open(f"/proc/{pid}/smaps_rollup") as f:
                for line in f:
                    if line.startswith("Pss:"):
                        total += int(line.split()[1])
        except OSError:
            pass
    return total

def count(dirs):
    n = 0
    for d in dirs:
        try:
            n += len(os.listdir(d))
        except FileNotFoundError:
            pass
    return n

cmd = sys.argv[1]
if cmd == "cpu":
    print(sum(cpu(int(p)) for p in sys.argv[2:]))
elif cmd == "rss":
    print(sum(rss(int(p)) for p in sys.argv[2:]))
elif cmd == "hwm":
    print(status(int(sys.argv[2]), "VmHWM"))
elif cmd == "sample":  # sample OUTFILE PID...: the peak sum of PSS (kB) until killed
    out, pids, peak = sys.argv[2], [int(p) for p in sys.argv[3:]], 0
    while True:
        peak = max(peak, sum(pss(p) for p in pids))
        with open(out + ".tmp", "w") as f:
            f.write(str(peak))
        os.replace(out + ".tmp", out)
        time.sleep(0.1)
elif cmd == "count":
    print(count(sys.argv[2:]))
elif cmd == "wait":  # wait N TIMEOUT DIR...: until DIRs hold N files; prints the time
    n, limit, dirs = int(sys.argv[2]), float(sys.argv[3]), sys.argv[4:]
    end = time.time() + limit
    if count(dirs) >= n:
        print("done")  # all there when the client finished
        sys.exit(0)
    while count(dirs) < n:
        if time.time() > end:
            print("timeout")
            sys.exit(1)
        time.sleep(0.02)
    print(f"{time.time():.6f}")
elif cmd == "median":
    xs = sorted(float(x) for x in sys.argv[2:])
    m = len(xs)
    print(xs[m // 2] if m % 2 else (xs[m // 2 - 1] + xs[m // 2]) / 2)
EOF
proc() { python3 "$W/proc.py" "$@"; }
now() { date +%s.%N; }

# --- users and certificate ------------------------------------------------------------------
# bob, and 2bob .. 10bob for the 10-recipient workload (smtp-source's -r names).
USERS="bob 2bob 3bob 4bob 5bob 6bob 7bob 8bob 9bob 10bob"
mkdir -p "$W/tls"
"$TERN" cert --hostname localhost --out "$W/tls" >/dev/null || die "tern cert failed"
chmod 644 "$W/tls/key.pem"  # Postfix's smtpd (user postfix) reads it too

# --- Dovecot: LMTP and auth ------------------------------------------------------------------
mkdir -p "$DV/run" "$DV/state" "$DV/mail"
chown "$MAIL_UID:$MAIL_GID" "$DV/mail"
: >"$DV/users"
for u in $USERS; do
    echo "$u:{PLAIN}benchpw:$MAIL_UID:$MAIL_GID::$DV/mail/$u::" >>"$DV/users"
done
cat >"$DV/dovecot.conf" <<EOF
base_dir = $DV/run
state_dir = $DV/state
log_path = $DV/dovecot.log
protocols = lmtp
listen = 127.0.0.1
ssl = no
disable_plaintext_auth = no
auth_mechanisms = plain login
mail_location = maildir:$DV/mail/%n/Maildir
auth_username_format = %Ln
passdb {
  driver = passwd-file
  args = scheme=PLAIN $DV/users
}
userdb {
  driver = passwd-file
  args = $DV/users
}
service lmtp {
  unix_listener $DV/lmtp.sock {
    mode = 0666
  }
}
service auth {
  unix_listener $DV/auth-client {
    mode = 0666
  }
}
EOF
dovecot -c "$DV/dovecot.conf" || die "dovecot did not start"
DV_STARTED=1
wait_for 20 test -S "$DV/lmtp.sock" || die "no Dovecot LMTP socket"
wait_for 20 test -f "$DV/run/master.pid" || die "no Dovecot master.pid"
DV_PID=$(cat "$DV/run/master.pid")

# --- Postfix: virtual Maildir delivery, smtp and submission on loopback ----------------------
PFPORT=$(free_port)
PFSUB=$(free_port)
mkdir -p "$PF/etc" "$PF/queue" "$PF/data" "$PF/mail"
chown postfix "$PF/data"
chown "$MAIL_UID:$MAIL_GID" "$PF/mail"
cp /etc/postfix/master.cf "$PF/etc/master.cf"
: >"$PF/etc/vmailbox"
for u in $USERS; do echo "$u@bench.test $u/Maildir/" >>"$PF/etc/vmailbox"; done
cat >"$PF/etc/main.cf" <<EOF
compatibility_level = 3.6
queue_directory = $PF/queue
data_directory = $PF/data
myhostname = postfix.test
mydomain = postfix.test
myorigin = postfix.test
mydestination =
inet_interfaces = loopback-only
inet_protocols = ipv4
mynetworks = 127.0.0.0/8
maillog_file = $PF/maillog
maillog_file_prefixes = /var, /dev/stdout, $W
alias_maps =
alias_database =
biff = no
local_transport = error:local delivery is disabled
default_transport = error:no outbound mail
relay_transport = error:no outbound mail
virtual_mailbox_domains = bench.test
virtual_mailbox_base = $PF/mail
virtual_mailbox_maps = texthash:$PF/etc/vmailbox
virtual_uid_maps = static:$MAIL_UID
virtual_gid_maps = static:$MAIL_GID
smtpd_tls_cert_file = $W/tls/cert.pem
smtpd_tls_key_file = $W/tls/key.pem
smtpd_tls_security_level = may
smtpd_sasl_type = dovecot
smtpd_sasl_path = $DV/auth-client
EOF
postconf -c "$PF/etc" -F -e '*/*/chroot = n'
postconf -c "$PF/etc" -M -X 'smtp/inet'
postconf -c "$PF/etc" -M -e "127.0.0.1:$PFPORT/inet = 127.0.0.1:$PFPORT inet n - n - - smtpd"
postconf -c "$PF/etc" -M -e "127.0.0.1:$PFSUB/inet = 127.0.0.1:$PFSUB inet n - n - - smtpd \
-o syslog_name=postfix/submission -o smtpd_tls_security_level=encrypt \
-o smtpd_sasl_auth_enable=yes -o smtpd_tls_auth_only=yes \
-o smtpd_client_restrictions=permit_sasl_authenticated,reject"
current=$(postconf -h alternate_config_directories)
case " $(echo "$current" | tr ',' ' ') " in
*" $PF/etc "*) ;;
*)
    postconf -e "alternate_config_directories = ${current:+$current }$PF/etc"
    ALT_ADDED=1
    ;;
esac
out=$(script -qc "postfix -c '$PF/etc' check" /dev/null 2>&1) || die "postfix check: $out"
postfix -c "$PF/etc" start >/dev/null 2>&1 || die "postfix did not start: $(tail -5 "$PF/maillog")"
PF_STARTED=1
wait_for 20 port_open "$PFPORT" || die "Postfix does not answer on $PFPORT"
wait_for 20 test -f "$PF/queue/pid/master.pid" || die "no Postfix master.pid"
PF_PID=$(tr -d ' ' <"$PF/queue/pid/master.pid")

# --- tern, one instance per run ---------------------------------------------------------------
T=""
TERN_RUNS=0
TSMTP=$(free_port)
TSUB=$(free_port)
start_tern() {  # start_tern RUNTIME [MESSAGE_SIZE]: a fresh tern with empty Maildirs
    local runtime=$1 size=${2:-10240000}
    # A new directory each time: removing thousands of files between runs would slow the
    # next run's file creation (ext4 skips recently freed inodes), whoever runs next.
    TERN_RUNS=$((TERN_RUNS + 1))
    T="$W/tern-$TERN_RUNS"
    mkdir -p "$T"
    : >"$T/users"
    for u in $USERS; do echo "$u:{PLAIN}benchpw::::::" >>"$T/users"; done
    cat >"$T/tern.toml" <<EOF
hostname = "tern.test"
domains = ["bench.test"]
data_dir = "$T/data"
log = "$T/mail.log"

[tls]
certificate = "$W/tls/cert.pem"
private_key = "$W/tls/key.pem"

[accounts]
file = "$T/users"

[mailbox]
path = "$T/mail/%n/Maildir"

[limits]
message_size = $size
connections_per_ip = 200

[[listener]]
name = "smtp"
protocol = "smtp"
address = "127.0.0.1:$TSMTP"

[[listener]]
name = "submission"
protocol = "smtp"
address = "127.0.0.1:$TSUB"
tls = "encrypt"
auth = "required"

[[listener]]
name = "lmtp"
protocol = "lmtp"
path = "$T/lmtp.sock"
EOF
    "$TERN" serve --runtime "$runtime" --config "$T/tern.toml" >"$T/stdout" 2>"$T/stderr" &
    TERN_PID=$!
    wait_for 20 grep -q '^listening: lmtp on ' "$T/stdout" || {
        cat "$T/stderr" >&2
        die "tern ($runtime) did not start"
    }
    wait_for 20 port_open "$TSMTP" || die "tern does not answer on $TSMTP"
}
stop_tern() {
    kill -TERM "$TERN_PID" 2>/dev/null
    wait "$TERN_PID" 2>/dev/null
    TERN_PID=""
}
tern_maildirs() {  # the new/ directories of the first N bench users in tern's Maildirs
    local n=$1 u i=0
    for u in $USERS; do
        i=$((i + 1))
        [ $i -le "$n" ] && echo "$T/mail/$u/Maildir/new"
    done
}
pf_maildirs() {
    local n=$1 u i=0
    for u in $USERS; do
        i=$((i + 1))
        [ $i -le "$n" ] && echo "$PF/mail/$u/Maildir/new"
    done
}
dv_maildirs() {
    local n=$1 u i=0
    for u in $USERS; do
        i=$((i + 1))
        [ $i -le "$n" ] && echo "$DV/mail/$u/Maildir/new"
    done
}
# Moves the delivered mail aside (see start_tern for why not remove it).
OLD_MAIL=0
clean_pf_mail() {
    OLD_MAIL=$((OLD_MAIL + 1))
    mkdir -p "$W/old-$OLD_MAIL"
    find "$PF/mail" -mindepth 1 -maxdepth 1 -exec mv {} "$W/old-$OLD_MAIL/" \;
}
clean_dv_mail() {
    OLD_MAIL=$((OLD_MAIL + 1))
    mkdir -p "$W/old-$OLD_MAIL"
    find "$DV/mail" -mindepth 1 -maxdepth 1 -exec mv {} "$W/old-$OLD_MAIL/" \;
    for u in $USERS; do install -d -o "$MAIL_UID" -g "$MAIL_GID" "$DV/mail/$u"; done
}

# What the disk allows: SESSIONS threads each storing N 1 KB files the way a durable Maildir
# delivery must (write in tmp/, fsync, link into new/, fsync new/), and nothing else. No mail
# server storing each message durably on its own can deliver faster than this.
cat >"$W/ceiling.py" <<'EOF'
import os, sys, threading, time
base, threads, total = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
for sub in ("tmp", "new"):
    os.makedirs(os.path.join(base, sub), exist_ok=True)
payload = b"x" * 1024
counter = iter(range(total))
lock = threading.Lock()
def work(t):
    while True:
        with lock:
            n = next(counter, None)
        if n is None:
            return
        tmp = os.path.join(base, "tmp", f"{t}.{n}")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        os.write(fd, payload)
        os.fsync(fd)
        os.close(fd)
        os.link(tmp, os.path.join(base, "new", f"{t}.{n}"))
        os.unlink(tmp)
        d = os.open(os.path.join(base, "new"), os.O_RDONLY)
        os.fsync(d)
        os.close(d)
start = time.time()
ts = [threading.Thread(target=work, args=(t,)) for t in range(threads)]
for t in ts: t.start()
for t in ts: t.join()
print(f"{total / (time.time() - start):.1f}")
EOF
CEILING="$W/ceiling"
: >"$CEILING"
fsync_ceiling() {  # fsync_ceiling RUN
    local n=$((N1 / 4))
    python3 "$W/ceiling.py" "$W/ceiling-$1" "$SESSIONS" "$n" >>"$CEILING"
    say "  1|fsync ceiling|$1|$(tail -1 "$CEILING")"
}

# --- one measured run ------------------------------------------------------------------------
RESULTS="$W/results"  # workload|server|run|accepted/s|delivered/s|cpu s/1000|peak RSS MB
: >"$RESULTS"

# measure WORKLOAD SERVER RUN MESSAGES FILES "PIDS" "DIRS" "" -- CLIENT...
# FILES is how many Maildir files the run must leave (messages x recipients); DIRS empty
# means no storage (smtp-sink): delivered = accepted.
measure() {
    local workload=$1 server=$2 run=$3 messages=$4 files=$5 pids=$6 dirs=$7 hwm_pid=$8
    shift 9
    local before cpu0 t0 t1 t2 cpu1 peak hwm status
    # shellcheck disable=SC2086
    before=$(proc count $dirs)
    # shellcheck disable=SC2086
    cpu0=$(proc cpu $pids)
    # shellcheck disable=SC2086
    python3 "$W/proc.py" sample "$W/peak" $pids &
    SAMPLER_PID=$!
    t0=$(now)
    timeout 900 "$@" >"$W/client.out" 2>&1
    status=$?
    t1=$(now)
    if [ -n "$dirs" ]; then
        # shellcheck disable=SC2086
        t2=$(proc wait $((before + files)) "$DELIVERY_TIMEOUT" $dirs) || {
            say "  $workload $server run $run: only $(proc count $dirs) of $((before + files)) files delivered"
            t2=""
        }
        [ "$t2" = done ] && t2=$t1
    else
        t2=$t1
    fi
    # shellcheck disable=SC2086
    cpu1=$(proc cpu $pids)
    kill "$SAMPLER_PID" 2>/dev/null
    wait "$SAMPLER_PID" 2>/dev/null
    SAMPLER_PID=""
    peak=$(cat "$W/peak" 2>/dev/null || echo 0)
    if [ $status != 0 ]; then
        say "  $workload $server run $run: client failed ($status): $(tail -3 "$W/client.out")"
        return 1
    fi
    [ -n "$t2" ] || return 1
    python3 - "$workload" "$server" "$run" "$messages" "$t0" "$t1" "$t2" "$cpu0" "$cpu1" "$peak" >>"$RESULTS" <<'EOF'
import sys
w, s, r, n, t0, t1, t2, c0, c1, peak = sys.argv[1:]
n, t0, t1, t2, c0, c1 = int(n), float(t0), float(t1), float(t2), float(c0), float(c1)
print(f"{w}|{s}|{r}|{n / (t1 - t0):.1f}|{n / (t2 - t0):.1f}|{(c1 - c0) * 1000 / n:.3f}|{int(peak) / 1024:.1f}")
EOF
    say "  $(tail -1 "$RESULTS")"
}

# smtp_workload WORKLOAD MESSAGES SIZE RCPTS: tern x runtimes, Postfix, smtp-sink (1 rcpt)
smtp_workload() {
    local workload=$1 n=$2 size=$3 rcpts=$4 run rt dirs
    local src=(smtp-source -d -s "$SESSIONS" -m "$n" -l "$size" -r "$rcpts" -f alice@example.org -t bob@bench.test)
    for run in $(seq 1 "$RUNS"); do
        for rt in $RUNTIMES; do
            start_tern "$rt"
            dirs=$(tern_maildirs "$rcpts" | tr '\n' ' ')
            measure "$workload" "tern-$rt" "$run" "$n" $((n * rcpts)) "$TERN_PID" "$dirs" "$TERN_PID" -- \
                "${src[@]}" "127.0.0.1:$TSMTP"
            stop_tern
        done
        clean_pf_mail
        dirs=$(pf_maildirs "$rcpts" | tr '\n' ' ')
        measure "$workload" postfix "$run" "$n" $((n * rcpts)) "$PF_PID" "$dirs" "" -- \
            "${src[@]}" "127.0.0.1:$PFPORT"
        if [ "$rcpts" = 1 ]; then
            local port
            port=$(free_port)
            smtp-sink -u nobody -c "127.0.0.1:$port" 256 >/dev/null 2>&1 &
            SINK_PID=$!
            wait_for 10 port_open "$port" || die "smtp-sink did not start"
            measure "$workload" smtp-sink "$run" "$n" "$n" "$SINK_PID" "" "" -- "${src[@]}" "127.0.0.1:$port"
            kill -TERM "$SINK_PID"
            wait "$SINK_PID" 2>/dev/null
            SINK_PID=""
        fi
        [ "$workload" = 1 ] && fsync_ceiling "$run"
    done
}

lmtp_workload() {
    local n=$1 run rt
    local src=(smtp-source -L -d -s "$SESSIONS" -m "$n" -l 1024 -f alice@example.org -t bob@bench.test)
    for run in $(seq 1 "$RUNS"); do
        for rt in $RUNTIMES; do
            start_tern "$rt"
            measure 3 "tern-$rt" "$run" "$n" "$n" "$TERN_PID" "$(tern_maildirs 1)" "$TERN_PID" -- \
                "${src[@]}" "unix:$T/lmtp.sock"
            stop_tern
        done
        clean_dv_mail
        measure 3 dovecot "$run" "$n" "$n" "$DV_PID" "$(dv_maildirs 1)" "" -- \
            "${src[@]}" "unix:$DV/lmtp.sock"
    done
}

submission_workload() {
    local n=$1 run rt
    local gen=("$LOADGEN" -s "$SESSIONS" -m "$n" -l 1024 -f bob@bench.test -t bob@bench.test
        --starttls --auth bob:benchpw)
    for run in $(seq 1 "$RUNS"); do
        for rt in $RUNTIMES; do
            start_tern "$rt"
            measure 4 "tern-$rt" "$run" "$n" "$n" "$TERN_PID" "$(tern_maildirs 1)" "$TERN_PID" -- \
                "${gen[@]}" "127.0.0.1:$TSUB"
            stop_tern
        done
        clean_pf_mail
        # Postfix's server here is Postfix and the Dovecot that checks its passwords.
        measure 4 postfix "$run" "$n" "$n" "$PF_PID $DV_PID" "$(pf_maildirs 1)" "" -- \
            "${gen[@]}" "127.0.0.1:$PFSUB"
    done
}

# The loadgen against smtp-source on plain SMTP: the same rates within noise mean the
# loadgen's figures for workload 4 measure the server, not the client.
loadgen_check() {
    local n=5000 port
    port=$(free_port)
    smtp-sink -u nobody -c "127.0.0.1:$port" 256 >/dev/null 2>&1 &
    SINK_PID=$!
    wait_for 10 port_open "$port" || die "smtp-sink did not start"
    measure 0 "smtp-source>smtp-sink" 1 "$n" "$n" "$SINK_PID" "" "" -- \
        smtp-source -d -s "$SESSIONS" -m "$n" -l 1024 -f alice@example.org -t bob@bench.test "127.0.0.1:$port"
    measure 0 "loadgen>smtp-sink" 1 "$n" "$n" "$SINK_PID" "" "" -- \
        "$LOADGEN" -s "$SESSIONS" -m "$n" -l 1024 -f alice@example.org -t bob@bench.test "127.0.0.1:$port"
    kill -TERM "$SINK_PID"
    wait "$SINK_PID" 2>/dev/null
    SINK_PID=""
    start_tern smol
    measure 0 "smtp-source>tern-smol" 1 "$n" "$n" "$TERN_PID" "$(tern_maildirs 1)" "$TERN_PID" -- \
        smtp-source -d -s "$SESSIONS" -m "$n" -l 1024 -f alice@example.org -t bob@bench.test "127.0.0.1:$TSMTP"
    measure 0 "loadgen>tern-smol" 1 "$n" "$n" "$TERN_PID" "$(tern_maildirs 1)" "$TERN_PID" -- \
        "$LOADGEN" -s "$SESSIONS" -m "$n" -l 1024 -f alice@example.org -t bob@bench.test "127.0.0.1:$TSMTP"
    stop_tern
}

# One 100 MB message: tern's VmRSS before (after a small warm-up message) and its VmHWM after.
MEMORY="$W/memory"
: >"$MEMORY"
memory_check() {
    local rt before after size=$((100 * 1024 * 1024))
    for rt in $RUNTIMES; do
        start_tern "$rt" $((size * 2))
        smtp-source -s 1 -m 1 -l 1024 -f alice@example.org -t bob@bench.test "127.0.0.1:$TSMTP" ||
            die "warm-up message failed"
        before=$(python3 "$W/proc.py" rss "$TERN_PID")
        if smtp-source -s 1 -m 1 -l "$size" -f alice@example.org -t bob@bench.test "127.0.0.1:$TSMTP"; then
            after=$(proc hwm "$TERN_PID")
            local stored
            stored=$(find "$T/mail/bob/Maildir/new" -type f -size +100000k | wc -l)
            echo "$rt|$before|$after|$stored" >>"$MEMORY"
            say "  memory $rt: VmRSS before $before kB, VmHWM after $after kB, big files stored: $stored"
        else
            say "  memory $rt: the 100 MB message failed"
            echo "$rt|$before|failed|0" >>"$MEMORY"
        fi
        stop_tern
    done
}

say "bench: temp dir $W, tern $TERN, $RUNS runs, $SESSIONS sessions"
wants 0 && { say "# 0. loadgen vs smtp-source"; loadgen_check; }
wants 1 && { say "# 1. SMTP, $N1 x 1 KB"; smtp_workload 1 "$N1" 1024 1; }
wants 2 && { say "# 2. SMTP, $N2 x 100 KB"; smtp_workload 2 "$N2" 102400 1; }
wants 3 && { say "# 3. LMTP, $N3 x 1 KB"; lmtp_workload "$N3"; }
wants 4 && { say "# 4. submission, STARTTLS + AUTH, $N4 x 1 KB"; submission_workload "$N4"; }
wants 5 && { say "# 5. SMTP, $N5 x 1 KB, 10 recipients"; smtp_workload 5 "$N5" 1024 10; }
wants M && { say "# M. one 100 MB message"; memory_check; }

# --- the table --------------------------------------------------------------------------------
python3 - "$RESULTS" "$MEMORY" "$RUNS" "$SESSIONS" "$N1" "$N2" "$N3" "$N4" "$N5" "$CEILING" >"$OUT" <<'EOF'
import os, statistics, sys
results, memory, runs, sessions, n1, n2, n3, n4, n5, ceiling = sys.argv[1:]
rows = {}
for line in open(results):
    w, s, r, acc, dlv, cpu, rss = line.strip().split("|")
    rows.setdefault((w, s), []).append((float(acc), float(dlv), float(cpu), float(rss)))

def med(w, s, i):
    xs = [x[i] for x in rows.get((w, s), [])]
    return statistics.median(xs) if xs else None

titles = {
    "0": "0. loadgen checked against smtp-source, plain SMTP, 5000 x 1 KB (one run)",
    "1": f"1. SMTP, {sessions} sessions, {n1} x 1 KB, one user",
    "2": f"2. SMTP, {sessions} sessions, {n2} x 100 KB, one user",
    "3": f"3. LMTP on a Unix socket, {sessions} sessions, {n3} x 1 KB",
    "4": f"4. submission: STARTTLS + AUTH PLAIN, {sessions} sessions, {n4} x 1 KB (tern-loadgen)",
    "5": f"5. SMTP, {sessions} sessions, {n5} x 1 KB, 10 recipients each (10 Maildirs)",
}
baselines = {"1": ["postfix", "smtp-sink"], "2": ["postfix", "smtp-sink"], "3": ["dovecot"],
             "4": ["postfix"], "5": ["postfix"]}
print(f"Medians of {runs} runs. Ratios compare delivered msg/s (for CPU: CPU per message).\n")
for w in ["0", "1", "2", "3", "4", "5"]:
    servers = [s for (ww, s) in rows if ww == w]
    if not servers:
        continue
    print(f"### {titles[w]}\n")
    base = baselines.get(w, [])
    head = "| server | accepted msg/s | delivered msg/s | CPU s / 1000 msg | peak PSS MB |"
    sep = "|---|---:|---:|---:|---:|"
    for b in base:
        head += f" delivered / {b} | CPU / {b} |"
        sep += "---:|---:|"
    print(head)
    print(sep)
    for s in servers:
        acc, dlv, cpu, rss = (med(w, s, i) for i in range(4))
        line = f"| {s} | {acc:.0f} | {dlv:.0f} | {cpu:.3f} | {rss:.1f} |"
        for b in base:
            bd, bc = med(w, b, 1), med(w, b, 2)
            if s.startswith("tern") and bd:
                line += f" {dlv / bd:.2f} | " + (f"{cpu / bc:.2f} |" if bc else "– |")
            else:
                line += " | |"
        print(line)
    print()
    if w == "1" and os.path.getsize(ceiling):
        c = statistics.median(float(x) for x in open(ceiling))
        best = med("1", "tern-smol", 1)
        print(f"The disk's ceiling for durable 1 KB files ({sessions} threads: write, fsync, link, "
              f"fsync the directory; `ceiling.py` in bench/run.sh): {c:.0f} files/s (median)"
              + (f"; tern-smol delivered {best / c:.0%} of it." if best else "."))
        print()
if os.path.getsize(memory):
    print("### M. one 100 MB message through tern (SMTP, message_size 200 MiB)\n")
    print("| runtime | VmRSS before kB | VmHWM after kB | growth MB | stored |")
    print("|---|---:|---:|---:|---:|")
    for line in open(memory):
        rt, before, after, stored = line.strip().split("|")
        growth = f"{(int(after) - int(before)) / 1024:.1f}" if after.isdigit() else "failed"
        print(f"| tern-{rt} | {before} | {after} | {growth} | {stored} |")
    print()
EOF
cat "$OUT"
say "bench: table written to $OUT"
