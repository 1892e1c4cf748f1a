#!/usr/bin/env bash
# SASL interop with the real programs (issue 4): Debian's Postfix and Dovecot on either side
# of the Dovecot authentication protocol, on loopback ports and Unix sockets under one temp
# dir. Run as root:
#
#   interop/sasl.sh                 # builds tern with cargo (debug) unless TERN_BIN is set
#   TERN_BIN=target/release/tern interop/sasl.sh
#
# Scenarios:
#   A. Postfix (smtpd_sasl_type = dovecot) checks passwords on tern's dovecot-auth socket:
#      swaks AUTH PLAIN and LOGIN against Postfix get 235, a wrong password 535.
#   B. tern (accounts.dovecot_auth and dovecot_userdb) checks passwords and users on a
#      private Dovecot's auth-client and auth-userdb sockets: 235, 535, RCPT 550 for a user
#      Dovecot does not know, delivery into the home Dovecot's userdb gives; with Dovecot
#      stopped, AUTH gets 454 4.7.0.
#   C. One SCRAM-SHA-256 exchange from Python's scramp over tern's dovecot-auth socket.
#
# Nothing of the system's own Postfix or Dovecot instance is used or changed, except that
# Postfix 3.7 only starts an instance whose config directory the default instance lists in
# `alternate_config_directories`: that entry is added with `postconf -e` and removed again at
# exit. Every daemon started here is stopped at exit. The last line says
# `N passed, M failed`; the exit status is 1 if anything failed.
#
# Environment: TERN_BIN (tern binary), KEEP=1 (keep the temp dir for inspection).

PACKAGES="postfix dovecot-core swaks"
# shellcheck source=interop/lib.sh
. "$(dirname "$0")/lib.sh"

# expect NAME PATTERN COMMAND...: passes when the command's output matches the regex.
expect() {
    local name=$1 pattern=$2
    shift 2
    local out
    out=$("$@" 2>&1)
    if printf '%s\n' "$out" | grep -qE -- "$pattern"; then pass "$name"; else fail "$name" "$out"; fi
}
python3 -c 'import scramp' 2>/dev/null || python3 -m pip install --quiet scramp ||
    { say "python3 scramp is needed"; exit 2; }

# --- the temp dir and cleanup ---------------------------------------------------------------
W=$(mktemp -d /tmp/tern-sasl.XXXXXX)
chmod 755 "$W"  # Postfix's smtpd (user postfix) must reach tern's auth socket
PF="$W/postfix"
DV="$W/dovecot"
TA="$W/tern-auth"
TB="$W/tern-client"
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

PFPORT=$(free_port)
TBPORT=$(free_port)

start_tern() {  # start_tern DIR LISTENER
    local dir=$1 listener=$2
    "$TERN" serve --runtime blocking --config "$dir/tern.toml" >"$dir/stdout" 2>"$dir/stderr" &
    TERN_PIDS="$TERN_PIDS $!"
    wait_for 20 grep -q "^listening: $listener on " "$dir/stdout"
}

# --- tern A: the dovecot-auth listener for Postfix ------------------------------------------
# alice has a hashed password, dave a {PLAIN} one (which also serves SCRAM).
mkdir -p "$TA"
ALICE_HASH=$(printf 'alice pw\n' | "$TERN" passwd --scheme SHA512-CRYPT)
printf 'alice:%s::::::\ndave:{PLAIN}davepw::::::\n' "$ALICE_HASH" >"$TA/users"
cat >"$TA/tern.toml" <<EOF
hostname = "tern-a.test"
domains = ["tern.test"]
data_dir = "$TA/data"
log = "$TA/mail.log"

[accounts]
file = "$TA/users"

[mailbox]
path = "$TA/mail/%n/Maildir"

[limits]
auth_failure_delay = "200ms"

[[listener]]
name = "auth"
protocol = "dovecot-auth"
path = "$TA/auth.sock"
mode = "0666"
EOF
start_tern "$TA" auth || { cat "$TA/stderr"; say "tern A did not start"; exit 2; }

# --- Postfix: a private instance whose smtpd asks tern A --------------------------------------
mkdir -p "$PF/etc" "$PF/queue" "$PF/data"
chown postfix "$PF/data"
cp /etc/postfix/master.cf "$PF/etc/master.cf"
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
smtpd_tls_security_level = none
smtpd_sasl_auth_enable = yes
smtpd_sasl_type = dovecot
smtpd_sasl_path = $TA/auth.sock
smtpd_tls_auth_only = no
transport_maps = texthash:$PF/etc/transport
EOF
# The one destination Postfix has throws mail away: nothing can leave the machine.
printf 'sink.test discard:interop\n' >"$PF/etc/transport"
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

auth_to() {  # auth_to PORT MECH USER PASSWORD [more swaks args]
    local port=$1 mech=$2 user=$3 password=$4
    shift 4
    swaks --server 127.0.0.1 --port "$port" --helo client.test --from "$user@tern.test" \
        --to "$user@tern.test" --auth "$mech" --auth-user "$user" --auth-password "$password" \
        --timeout 30 "$@"
}

say "# A. Postfix checks passwords on tern's dovecot-auth socket"
if [ -n "$PF_STARTED" ]; then
    expect "A1 Postfix offers the mechanisms tern's socket offers" \
        '^<-  250-AUTH PLAIN LOGIN SCRAM-SHA-256$' \
        swaks --server 127.0.0.1 --port "$PFPORT" --helo client.test --quit-after EHLO
    expect "A2 AUTH PLAIN against Postfix with a tern account: 235" '^<-  235 ' \
        auth_to "$PFPORT" PLAIN alice 'alice pw' --quit-after AUTH
    expect "A3 AUTH LOGIN against Postfix with a tern account: 235" '^<-  235 ' \
        auth_to "$PFPORT" LOGIN alice 'alice pw' --quit-after AUTH
    expect "A4 AUTH PLAIN with a {PLAIN} tern account: 235" '^<-  235 ' \
        auth_to "$PFPORT" PLAIN dave davepw --quit-after AUTH
    expect "A5 a wrong password: 535" '^<\*\* 535 ' \
        auth_to "$PFPORT" PLAIN alice 'wrong pw' --quit-after AUTH
    expect "A6 an unknown user: 535" '^<\*\* 535 ' \
        auth_to "$PFPORT" LOGIN nobody 'wrong pw' --quit-after AUTH
    expect "A7 after AUTH, Postfix queues a message" '^<-  250 2.0.0 Ok: queued as' \
        auth_to "$PFPORT" PLAIN alice 'alice pw' --to someone@sink.test
    check "A8 Postfix logs sasl_method=PLAIN, sasl_username=alice for it" \
        wait_for 10 grep -q 'sasl_method=PLAIN, sasl_username=alice' "$PF/maillog"
    check "A9 tern logs the failure as tern/auth, without the password" sh -c \
        "grep -q 'tern/auth\\[[0-9]*\\]: warning: unknown\\[127.0.0.1\\]: SASL PLAIN authentication failed: authentication failure' '$TA/mail.log' &&
         ! grep -q 'wrong pw' '$TA/mail.log'"
else
    fail "A  Postfix is not running" "$(tail -5 "$PF/maillog" 2>/dev/null)"
fi

say "# C. SCRAM-SHA-256 from scramp over tern's dovecot-auth socket"
expect "C1 the right password: OK, and the server's signature verifies" \
    '^OK user=dave, server signature verified$' \
    python3 "$ROOT/interop/dovecot_scram.py" "$TA/auth.sock" dave davepw
expect "C2 a wrong password: FAIL" '^FAIL	1	user=dave$' \
    python3 "$ROOT/interop/dovecot_scram.py" "$TA/auth.sock" dave wrong

# --- Dovecot: auth-client and auth-userdb sockets for tern B ---------------------------------
mkdir -p "$DV/run" "$DV/state" "$DV/home/bob"
MAIL_UID=$(id -u nobody)
MAIL_GID=$(id -g nobody)
cat >"$DV/users" <<EOF
bob:{PLAIN}bobpw:$MAIL_UID:$MAIL_GID::$DV/home/bob::
carol:{PLAIN}carolpw:$MAIL_UID:$MAIL_GID::$DV/home/carol::
EOF
cat >"$DV/dovecot.conf" <<EOF
base_dir = $DV/run
state_dir = $DV/state
log_path = $DV/dovecot.log
protocols =
listen = 127.0.0.1
ssl = no
disable_plaintext_auth = no
auth_mechanisms = plain login
auth_username_format = %Ln
auth_failure_delay = 1s
passdb {
  driver = passwd-file
  args = scheme=PLAIN $DV/users
}
userdb {
  driver = passwd-file
  args = $DV/users
}
service auth {
  unix_listener $DV/auth-client {
    mode = 0666
  }
  unix_listener $DV/auth-userdb {
    mode = 0666
  }
}
EOF
if dovecot -c "$DV/dovecot.conf"; then
    DV_STARTED=1
    wait_for 20 test -S "$DV/auth-client" || say "warning: no Dovecot auth socket yet"
else
    say "dovecot did not start"
fi

# --- tern B: no accounts file, Dovecot is the account source ---------------------------------
mkdir -p "$TB"
cat >"$TB/tern.toml" <<EOF
hostname = "tern-b.test"
domains = ["tern.test"]
trusted_networks = []
data_dir = "$TB/data"
log = "$TB/mail.log"

[accounts]
dovecot_auth = "$DV/auth-client"
dovecot_userdb = "$DV/auth-userdb"

[mailbox]
path = "~/Maildir"

[[listener]]
name = "submission"
protocol = "smtp"
address = "127.0.0.1:$TBPORT"
plaintext_auth = true
EOF

say "# B. tern checks passwords and users with a real Dovecot"
if [ -n "$DV_STARTED" ] && start_tern "$TB" submission; then
    check "B0 doveadm agrees that bob's password is bobpw" \
        doveadm -c "$DV/dovecot.conf" auth test -a "$DV/auth-client" bob bobpw
    expect "B1 tern does not offer SCRAM when Dovecot checks the passwords" \
        '^<-  250-AUTH PLAIN LOGIN$' \
        swaks --server 127.0.0.1 --port "$TBPORT" --helo client.test --quit-after EHLO
    expect "B2 AUTH PLAIN against tern with a Dovecot account: 235, and the mail is taken" \
        '^<-  250 2.0.0 Ok: queued as' \
        auth_to "$TBPORT" PLAIN bob bobpw --h-Subject B2
    expect "B3 AUTH LOGIN against tern with a Dovecot account: 235" '^<-  235 ' \
        auth_to "$TBPORT" LOGIN carol carolpw --quit-after AUTH
    expect "B4 a wrong password: 535" '^<\*\* 535 5.7.8 ' \
        auth_to "$TBPORT" PLAIN bob wrongpw --quit-after AUTH
    check "B5 the mail for bob is in the home Dovecot's userdb gives" \
        wait_for 10 grep -rqs '^Subject: B2' "$DV/home/bob/Maildir/new"
    expect "B6 RCPT for a user Dovecot's userdb does not know: 550 5.1.1" '^<\*\* +550 5.1.1 ' \
        auth_to "$TBPORT" PLAIN bob bobpw --to nobody@tern.test
    check "B7 no password in tern's log" sh -c "! grep -q -e bobpw -e wrongpw -e carolpw '$TB/mail.log'"
    doveadm -c "$DV/dovecot.conf" stop >/dev/null 2>&1 && DV_STARTED=""
    wait_for 10 sh -c "! test -S '$DV/auth-client' || ! python3 -c \"import socket; s=socket.socket(socket.AF_UNIX); s.connect('$DV/auth-client')\""
    expect "B8 Dovecot stopped: AUTH gets 454 4.7.0" '^<\*\* 454 4.7.0 ' \
        auth_to "$TBPORT" PLAIN bob bobpw --quit-after AUTH
    expect "B9 Dovecot stopped: RCPT gets a temporary failure" '^<\*\* +4[0-9][0-9] ' \
        swaks --server 127.0.0.1 --port "$TBPORT" --helo client.test --from x@example.org \
        --to bob@tern.test --timeout 30
else
    fail "B  Dovecot or tern B is not running" "$(tail -5 "$DV/dovecot.log" "$TB/stderr" 2>/dev/null)"
fi

say "$PASSED passed, $FAILED failed"
[ "$FAILED" -eq 0 ]
