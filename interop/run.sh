#!/usr/bin/env bash
# Interop with the real programs (issue 6): Debian's Postfix and Dovecot beside tern, on
# loopback ports and Unix sockets under one temp dir. Run as root:
#
#   interop/run.sh                 # builds tern with cargo (debug) unless TERN_BIN is set
#   TERN_BIN=target/release/tern interop/run.sh
#
# Scenarios:
#   A. Postfix (virtual_transport = lmtp:unix:<tern's socket>) hands mail to tern; also
#      Postfix -> tern's LMTP listener -> Dovecot.
#   B. tern (delivery.local = "lmtp:unix:<dovecot's socket>") hands mail to Dovecot.
#   C. The Maildir tern wrote, read by doveadm, s-nail and Python's mailbox.Maildir.
#
# Nothing of the system's own Postfix or Dovecot instance is used or changed, except
# that Postfix 3.7 only starts an instance whose config directory the default instance lists
# in `alternate_config_directories`: that entry is added with `postconf -e` and removed
# again at exit. Every daemon started here is stopped at exit. The last line says
# `N passed, M failed`; the exit status is 1 if anything failed.
#
# Environment: TERN_BIN (tern binary), KEEP=1 (keep the temp dir for inspection).

PACKAGES="postfix dovecot-core dovecot-lmtpd dovecot-imapd swaks s-nail"
# shellcheck source=interop/lib.sh
. "$(dirname "$0")/lib.sh"
TOKEN="interop-$$-$(date +%s)"

# --- the temp dir and cleanup ---------------------------------------------------------------
W=$(mktemp -d /tmp/tern-interop.XXXXXX)
chmod 755 "$W"  # Postfix's lmtp client (user postfix) must reach tern's socket
PF="$W/postfix"
DV="$W/dovecot"
T1="$W/tern1"
T2="$W/tern2"
TERN_PIDS=""
PF_STARTED=""
DV_STARTED=""
ALT_ADDED=""

cleanup() {
    for pid in $TERN_PIDS; do
        kill -TERM "$pid" 2>/dev/null && wait "$pid" 2>/dev/null
    done
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

SMTP1=$(free_port)
SMTP2=$(free_port)
PFPORT=$(free_port)

# --- tern1: Maildir delivery, LMTP socket for Postfix ----------------------------------------
# tern1 runs as `nobody`, as a mail server runs as its mail user: the Maildir it writes
# belongs to that user, whom Dovecot's userdb then names to read it.
MAIL_UID=$(id -u nobody)
MAIL_GID=$(id -g nobody)
start_tern() {  # start_tern DIR [setpriv args]
    local dir=$1
    shift
    "$@" "$TERN" serve --runtime blocking --config "$dir/tern.toml" >"$dir/stdout" 2>"$dir/stderr" &
    TERN_PIDS="$TERN_PIDS $!"
    wait_for 20 grep -q '^listening: smtp on ' "$dir/stdout"
}

mkdir -p "$T1"
printf 'bob:{PLAIN}bobpw::::::\nalice:{PLAIN}alicepw::::::\n' >"$T1/users"
cat >"$T1/tern.toml" <<EOF
hostname = "tern1.test"
domains = ["tern.test"]
data_dir = "$T1/data"
log = "$T1/mail.log"

[accounts]
file = "$T1/users"

[mailbox]
path = "$T1/mail/%n/Maildir"

[[listener]]
name = "smtp"
protocol = "smtp"
address = "127.0.0.1:$SMTP1"

[[listener]]
name = "lmtp"
protocol = "lmtp"
path = "$T1/lmtp.sock"
mode = "0666"
EOF
chown -R "$MAIL_UID:$MAIL_GID" "$T1"
start_tern "$T1" setpriv --reuid="$MAIL_UID" --regid="$MAIL_GID" --clear-groups || { cat "$T1/stderr"; say "tern1 did not start"; exit 2; }

# --- Dovecot: LMTP for tern2, and doveadm on tern1's Maildir ----------------------------------
# dbob, deve: not used; bob: Dovecot's own mailbox; tbob: tern1's Maildir of bob.
mkdir -p "$DV/run" "$DV/state" "$DV/mail" "$DV/home" "$DV/index"
chown "$MAIL_UID:$MAIL_GID" "$DV/mail" "$DV/home" "$DV/index"
cat >"$DV/users" <<EOF
bob:{PLAIN}bobpw:$MAIL_UID:$MAIL_GID::$DV/home/bob::
tbob:{PLAIN}x:$MAIL_UID:$MAIL_GID::$DV/home/tbob::userdb_mail=maildir:$T1/mail/bob/Maildir:INDEX=$DV/index/tbob
EOF
cat >"$DV/dovecot.conf" <<EOF
base_dir = $DV/run
state_dir = $DV/state
log_path = $DV/dovecot.log
protocols = lmtp
listen = 127.0.0.1
ssl = no
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
EOF
if dovecot -c "$DV/dovecot.conf"; then
    DV_STARTED=1
    wait_for 20 test -S "$DV/lmtp.sock" || say "warning: no Dovecot LMTP socket yet"
else
    say "dovecot did not start"
fi

# --- tern2: local mail to Dovecot over LMTP --------------------------------------------------
mkdir -p "$T2"
# eve is known to tern2 but not to Dovecot.
printf 'bob:{PLAIN}bobpw::::::\neve:{PLAIN}evepw::::::\n' >"$T2/users"
cat >"$T2/tern.toml" <<EOF
hostname = "tern2.test"
domains = ["dove.test"]
data_dir = "$T2/data"
log = "$T2/mail.log"

[accounts]
file = "$T2/users"

[delivery]
local = "lmtp:unix:$DV/lmtp.sock"

[[listener]]
name = "smtp"
protocol = "smtp"
address = "127.0.0.1:$SMTP2"

[[listener]]
name = "lmtp"
protocol = "lmtp"
path = "$T2/lmtp.sock"
mode = "0666"
EOF
start_tern "$T2" || { cat "$T2/stderr"; say "tern2 did not start"; exit 2; }

# --- Postfix: a private instance relaying tern.test to tern1 over LMTP -----------------------
mkdir -p "$PF/etc" "$PF/queue" "$PF/data"
chown postfix "$PF/data"
cp /etc/postfix/master.cf "$PF/etc/master.cf"
printf 'bob@tern.test ok\ncarol@tern.test ok\nbob@dove.test ok\n' >"$PF/etc/vmailbox"
# dove.test goes through tern2's LMTP listener on to Dovecot: Postfix -> tern -> Dovecot.
printf 'dove.test lmtp:unix:%s\n' "$T2/lmtp.sock" >"$PF/etc/transport"
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
virtual_mailbox_domains = tern.test, dove.test
transport_maps = texthash:$PF/etc/transport
virtual_mailbox_maps = texthash:$PF/etc/vmailbox
virtual_transport = lmtp:unix:$T1/lmtp.sock
EOF
postconf -c "$PF/etc" -F -e '*/*/chroot = n'
postconf -c "$PF/etc" -M -X 'smtp/inet'
postconf -c "$PF/etc" -M -e "127.0.0.1:$PFPORT/inet = 127.0.0.1:$PFPORT inet n - n - - smtpd"
current=$(postconf -h alternate_config_directories)
case " $(echo "$current" | tr ',' ' ') " in
*" $PF/etc "*) ;;
*)
    postconf -e "alternate_config_directories = ${current:+$current }$PF/etc"
    ALT_ADDED=1
    ;;
esac
if out=$(script -qc "postfix -c '$PF/etc' check" /dev/null 2>&1) && postfix -c "$PF/etc" start >/dev/null 2>&1; then
    PF_STARTED=1
    wait_for 20 python3 -c "import socket; socket.create_connection(('127.0.0.1', $PFPORT), 1)" ||
        say "warning: Postfix does not answer on $PFPORT yet"
else
    say "postfix did not start: $out"
fi

swaks_to() {  # swaks_to SERVER PORT RCPT[,RCPT] SUBJECT [more swaks args]
    local server=$1 port=$2 to=$3 subject=$4
    shift 4
    swaks --server "$server" --port "$port" --from bob@tern.test --to "$to" \
        --h-Subject "$subject" --body "$TOKEN $subject
.a line that starts with a dot
last line" --timeout 30 "$@"
}
maildir_has() {  # maildir_has DIR TEXT
    grep -rqsF -- "$2" "$1/new" "$1/cur"
}

say "# A. Postfix hands mail to tern over LMTP"
if [ -n "$PF_STARTED" ]; then
    check "A1 swaks to Postfix for bob@tern.test is accepted" swaks_to 127.0.0.1 "$PFPORT" bob@tern.test A1
    check "A2 Postfix logs status=sent to tern's LMTP socket" \
        wait_for 30 grep -qE "to=<bob@tern.test>, relay=.*lmtp.sock.*status=sent" "$PF/maillog"
    check "A3 the message is in tern's Maildir" \
        wait_for 10 maildir_has "$T1/mail/bob/Maildir" "$TOKEN A1"
    out=$(swaks_to 127.0.0.1 "$PFPORT" nobody@tern.test A4 2>&1)
    if echo "$out" | grep -qE '^<\*\* +5[0-9][0-9] '; then
        pass "A4 a user unknown to Postfix is refused with 5xx at RCPT"
    else
        fail "A4 a user unknown to Postfix is refused with 5xx at RCPT" "$out"
    fi
    check "A5 a user tern does not know (carol) is accepted by Postfix" \
        swaks_to 127.0.0.1 "$PFPORT" carol@tern.test A5
    check "A6 Postfix logs carol as status=bounced with tern's 550 5.1.1" \
        wait_for 30 grep -qE "to=<carol@tern.test>, relay=.*status=bounced .*550 5.1.1" "$PF/maillog"
    check "A7 the bounce reaches the sender (bob) in tern's Maildir" \
        wait_for 30 grep -rqsl "Undelivered Mail Returned to Sender" "$T1/mail/bob/Maildir/new"
    if [ -n "$DV_STARTED" ]; then
        check "A8 Postfix -> tern's LMTP -> Dovecot: swaks to Postfix for bob@dove.test" \
            swaks_to 127.0.0.1 "$PFPORT" bob@dove.test A8
        check "A9 Postfix logs status=sent to tern2's LMTP socket" \
            wait_for 30 grep -qE "to=<bob@dove.test>, relay=.*tern2/lmtp.sock.*status=sent" "$PF/maillog"
        check "A10 the message is in Dovecot's mailbox, with Postfix's and tern's Received" sh -c \
            "doveadm -c '$DV/dovecot.conf' fetch -u bob hdr mailbox INBOX header Subject A8 |
             grep -q 'by tern2.test (tern) with LMTP' &&
             doveadm -c '$DV/dovecot.conf' fetch -u bob hdr mailbox INBOX header Subject A8 |
             grep -q 'by postfix.test (Postfix) with ESMTP'"
    fi
else
    fail "A  Postfix is not running" "$(tail -5 "$PF/maillog" 2>/dev/null)"
fi

say "# B. tern hands mail to Dovecot over LMTP"
if [ -n "$DV_STARTED" ]; then
    out=$(swaks_to 127.0.0.1 "$SMTP2" bob@dove.test,eve@dove.test B1 2>&1)
    if echo "$out" | grep -qE '^<- +250 2.0.0 Ok: queued as'; then
        pass "B1 tern answers 250 when Dovecot takes bob and refuses eve"
    else
        fail "B1 tern answers 250 when Dovecot takes bob and refuses eve" "$out"
    fi
    check "B2 doveadm fetch finds the message in Dovecot's mailbox" \
        sh -c "doveadm -c '$DV/dovecot.conf' fetch -u bob text mailbox INBOX all | grep -qF '$TOKEN B1'"
    check "B3 the copy carries tern2's Received and Dovecot's Delivered-To" \
        sh -c "doveadm -c '$DV/dovecot.conf' fetch -u bob hdr mailbox INBOX all |
               grep -q 'by tern2.test (tern) with ESMTP' &&
               doveadm -c '$DV/dovecot.conf' fetch -u bob hdr mailbox INBOX all |
               grep -qi '^Delivered-To: bob@dove.test'"
    check "B4 tern logs bob as status=sent by Dovecot" \
        grep -qE "to=<bob@dove.test>, relay=lmtp\[$DV/lmtp.sock\], .*status=sent \(250 2.0.0" "$T2/mail.log"
    check "B5 tern logs eve as status=bounced with Dovecot's 550 5.1.1" \
        grep -qE "to=<eve@dove.test>, relay=lmtp\[$DV/lmtp.sock\], .*dsn=5.1.1, status=bounced \(host .* said: 550 5.1.1" "$T2/mail.log"
    out=$(swaks_to 127.0.0.1 "$SMTP2" eve@dove.test B6 2>&1)
    if echo "$out" | grep -qE '^<\*\* +451 4.3.0'; then
        pass "B6 a message Dovecot takes for nobody is answered 451 4.3.0"
    else
        fail "B6 a message Dovecot takes for nobody is answered 451 4.3.0" "$out"
    fi
    out=$(swaks --socket "$T2/lmtp.sock" --protocol LMTP --from alice@example.org \
        --to bob@dove.test,eve@dove.test --h-Subject B7 --body "$TOKEN B7" --timeout 30 2>&1)
    if echo "$out" | grep -qE '^<- +250 2.1.5 ' && echo "$out" | grep -qE '^<\*\* +550 5.1.1 '; then
        pass "B7 tern's LMTP listener passes Dovecot's answer per recipient (250 bob, 550 eve)"
    else
        fail "B7 tern's LMTP listener passes Dovecot's answer per recipient (250 bob, 550 eve)" "$out"
    fi
    python3 - "$W/big.txt" "$TOKEN" <<'EOF2'
import sys
with open(sys.argv[1], "w") as f:
    for i in range(40000):
        f.write(("." if i % 7 == 0 else "") + "%06d " % i + "x" * 70 + "\n")
    f.write(sys.argv[2] + " big end\n")
EOF2
    check "B8 a 3 MB message with dotted lines goes through tern to Dovecot" \
        swaks_to 127.0.0.1 "$SMTP2" bob@dove.test big --body "@$W/big.txt"
    check "B9 Dovecot has it whole: every line, dots unstuffed, the last line" python3 - "$W/big.txt" "$DV/dovecot.conf" <<'EOF2'
import subprocess, sys
want = open(sys.argv[1]).read()
out = subprocess.run(["doveadm", "-c", sys.argv[2], "fetch", "-u", "bob", "body",
                      "mailbox", "INBOX", "header", "Subject", "big"],
                     check=True, capture_output=True).stdout.decode()
assert want in out.replace("\r\n", "\n"), len(out)
EOF2
    check "B10 Dovecot's log has no errors" sh -c "! grep -E ': (Error|Panic|Fatal):' '$DV/dovecot.log'"
else
    fail "B  Dovecot is not running" "$(tail -5 "$DV/dovecot.log" 2>/dev/null)"
fi

say "# C. tern's Maildir read by doveadm, s-nail and Python"
MD="$T1/mail/bob/Maildir"
check "C1 swaks to tern directly (a dotted line, a long header) is accepted" \
    swaks_to 127.0.0.1 "$SMTP1" bob@tern.test C1 --add-header "X-Long: $(printf 'x%.0s' $(seq 1 300))"
check "C2 Python's mailbox.Maildir parses every message, byte for byte" python3 - "$MD" <<'EOF'
import mailbox, os, sys
md = mailbox.Maildir(sys.argv[1], factory=None, create=False)
keys = md.keys()
files = [os.path.join(sys.argv[1], d, f) for d in ("new", "cur") for f in os.listdir(os.path.join(sys.argv[1], d))]
assert len(keys) == len(files) >= 2, (len(keys), files)
for key in keys:
    msg = md.get_message(key)
    assert msg["Return-Path"] and msg["Delivered-To"] and msg["Received"], key
    raw = md.get_bytes(key)
    with open(os.path.join(sys.argv[1], md._lookup(key)), "rb") as f:
        assert raw == f.read(), key
    size = int(key.split(",S=")[1]) if ",S=" in key else None
    assert size == len(raw), (key, len(raw))
EOF
check "C3 s-nail opens the Maildir (-N -e, exit 0)" s-nail -n -R -N -e -f "maildir://$MD"
check "C4 s-nail prints a message with its text" sh -c \
    "echo 'p 1' | s-nail -n -R -N -f 'maildir://$MD' | grep -qF '$TOKEN'"
if [ -n "$DV_STARTED" ]; then
    check "C5 doveadm lists every message" sh -c \
        "test \"\$(doveadm -c '$DV/dovecot.conf' search -u tbob mailbox INBOX all | wc -l)\" = \
              \"\$(ls '$MD/new' '$MD/cur' | grep -c '^[0-9]')\""
    check "C6 doveadm's physical and virtual sizes match the files" python3 - "$MD" "$DV/dovecot.conf" <<'EOF'
import os, subprocess, sys
md, conf = sys.argv[1], sys.argv[2]
out = subprocess.run(["doveadm", "-f", "tab", "-c", conf, "fetch", "-u", "tbob",
                      "size.physical size.virtual", "mailbox", "INBOX", "all"],
                     check=True, capture_output=True, text=True).stdout.splitlines()[1:]
got = sorted(tuple(int(x) for x in line.split("\t")) for line in out if line)
want = []
for d in ("new", "cur"):
    for name in os.listdir(os.path.join(md, d)):
        data = open(os.path.join(md, d, name), "rb").read()
        want.append((len(data), len(data) + data.count(b"\n")))
want.sort()
assert got == want and len(got) >= 2, (got, want)
EOF
    check "C7 doveadm fetches the text of tern's message" sh -c \
        "doveadm -c '$DV/dovecot.conf' fetch -u tbob text mailbox INBOX all | grep -qF '$TOKEN C1'"
    check "C8 Dovecot's log has no errors after reading tern's Maildir" \
        sh -c "! grep -E ': (Error|Panic|Fatal):' '$DV/dovecot.log'"
else
    fail "C5-C8 Dovecot is not running"
fi

check "D1 tern1 logged nothing as a warning or error" sh -c "! grep -iE 'warning|error' '$T1/mail.log'"
say "$PASSED passed, $FAILED failed"
[ "$FAILED" = 0 ]
