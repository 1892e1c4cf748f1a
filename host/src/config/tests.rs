use super::*;

/// SPEC.md section 2, verbatim.
const SPEC_EXAMPLE: &str = r#"hostname = "mail.example.net"          # Postfix myhostname; used in greeting, Received
domains  = ["example.net"]             # Postfix mydestination: delivered here
trusted_networks = ["127.0.0.0/8", "::1/128"]   # Postfix mynetworks
runtime = "smol"                       # blocking | smol | mio
data_dir = "/var/lib/tern"             # queue, state, generated certificate
log = "stderr"                         # stderr | a file path
syslog_name = "tern"                   # Postfix syslog_name: the tag in log lines (tern/smtpd);
                                       # "postfix-tern" lets stock fail2ban/pflogsumm filters match

[tls]                                  # needed by any listener with tls != "none"
certificate = "/etc/tern/cert.pem"     # PEM chain
private_key = "/etc/tern/key.pem"      # PEM key (PKCS#8, RSA or EC)

[accounts]
file = "/etc/tern/users"               # Dovecot passwd-file format
username_format = "%Ln"                # Dovecot auth_username_format
# dovecot_auth = "/run/dovecot/auth-client"    # check passwords with a running Dovecot
# dovecot_userdb = "/run/dovecot/auth-userdb"  # and look users up there (else in `file`)

[mailbox]
path = "~/Maildir"                     # ~ = the account's home; %u %n %d %Lu %Ln %Ld
                                       # e.g. "/var/vmail/%d/%n/Maildir"
recipient_delimiter = "+"              # bob+lists@ is delivered to bob ("" turns it off)

[aliases]                              # Postfix virtual_alias_maps / Dovecot-style aliases
postmaster = "alice"                   # a bare local part matches in every local domain
"sales@example.net" = ["bob@example.net", "carol@example.org"]

[delivery]
local = "maildir"                      # "maildir", or "lmtp:unix:/path" / "lmtp:inet:host:port"
                                       # to hand local mail to another LMTP server (Dovecot)
relay_host = ""                        # smarthost "host:port" for non-local mail; "" = MX lookup
relay_tls = "may"                      # Postfix smtp_tls_security_level: none | may | encrypt | verify
dns_servers = []                       # resolvers for MX lookups, "host:port"; [] = /etc/resolv.conf
queue_lifetime = "5d"                  # Postfix maximal_queue_lifetime; then a bounce (DSN)

[limits]
message_size = 10240000                # Postfix message_size_limit; advertised in SIZE
recipients = 100                       # per message; more get 452 4.5.3
command_timeout = "300s"               # idle time waiting for a command
data_timeout = "600s"                  # idle time inside DATA/BDAT
errors = 20                            # hard errors before the session is closed (421)
auth_failures = 3                      # failed AUTH before the session is closed (421)
auth_failure_delay = "2s"              # as Dovecot's auth_failure_delay
connections = 1000                     # concurrent sessions per listener; beyond: 421 and close
connections_per_ip = 50                # counted across all listeners, as Postfix's anvil does

[[listener]]
name = "smtp"
protocol = "smtp"
address = "0.0.0.0:25"                 # or path = "/run/tern/lmtp.sock" (+ mode = "0660")
tls = "may"                            # none | may | encrypt | implicit
auth = "optional"                      # none | optional | required
plaintext_auth = false                 # true allows AUTH without TLS (Dovecot disable_plaintext_auth = no)
restrictions = ["permit_mynetworks", "permit_sasl_authenticated",
                "reject_unauth_destination", "reject_unverified_recipient", "permit"]
"#;

/// Everything optional set to something other than its default.
const EVERYTHING: &str = r#"
hostname = "MX1.Example.NET"
domains = ["Example.NET.", "example.org", "example.net"]
trusted_networks = ["10.1.2.3/8", "2001:db8::/32", "192.0.2.7"]
runtime = "mio"
data_dir = "data"
log = "/var/log/tern.log"
syslog_name = "postfix-tern"

[tls]
certificate = "cert.pem"
private_key = "key.pem"

[accounts]
file = "users"
username_format = "%n@%d"
dovecot_auth = "/run/dovecot/auth-client"
dovecot_userdb = "/run/dovecot/auth-userdb"

[mailbox]
path = "/var/vmail/%Ld/%Ln/Maildir"
recipient_delimiter = ""

[aliases]
zed = "alice"
"abuse@example.net" = ["bob@example.net", "carol"]
postmaster = ["alice"]

[delivery]
local = "lmtp:inet:[::1]:24"
relay_host = "[smtp.example.net]:587"
relay_tls = "verify"
dns_servers = ["192.0.2.53", "[2001:db8::53]:5353"]
queue_lifetime = "36h"
delay_warning = "0s"

[limits]
message_size = 52428800
recipients = 1000
command_timeout = "90s"
data_timeout = "1500ms"
errors = 5
auth_failures = 1
auth_failure_delay = "0s"
connections = 10
connections_per_ip = 2

[[listener]]
name = "lmtp"
protocol = "lmtp"
path = "/run/tern/lmtp.sock"
mode = "0660"
user = "tern"
group = "postfix"
tls = "may"
auth = "optional"
plaintext_auth = true
record_sessions = "/var/lib/tern/replay"

[[listener]]
name = "submissions"
protocol = "smtp"
address = "[::]:465"
tls = "implicit"
auth = "required"
restrictions = ["permit_sasl_authenticated", "reject_sender_login_mismatch", "reject"]
"#;

fn file() -> &'static Path {
    Path::new("tern.toml")
}

fn ok(text: &str) -> Config {
    parse(text, file()).unwrap_or_else(|e| panic!("{e}"))
}

fn err(text: &str) -> String {
    match parse(text, file()) {
        Ok(config) => panic!("parsed, expected an error:\n{text}\n{config:?}"),
        Err(e) => e.to_string(),
    }
}

fn net(s: &str) -> IpNet {
    s.parse().unwrap()
}

fn smtp_defaults() -> Vec<Restriction> {
    vec![
        Restriction::PermitMynetworks,
        Restriction::PermitSaslAuthenticated,
        Restriction::RejectUnauthDestination,
        Restriction::Permit,
    ]
}

#[test]
fn spec_example_parses() {
    let config = ok(SPEC_EXAMPLE);

    assert_eq!(config.hostname, "mail.example.net");
    assert_eq!(config.domains, ["example.net"]);
    assert_eq!(
        config.trusted_networks,
        [net("127.0.0.0/8"), net("::1/128")]
    );
    assert_eq!(config.runtime, RuntimeKind::Smol);
    assert_eq!(config.data_dir, Path::new("/var/lib/tern"));
    assert_eq!(config.log, LogTarget::Stderr);
    assert_eq!(config.syslog_name, "tern");
    assert_eq!(
        config.tls,
        Some(TlsFiles {
            certificate: "/etc/tern/cert.pem".into(),
            private_key: "/etc/tern/key.pem".into(),
        })
    );
    assert_eq!(
        config.accounts,
        AccountsConfig {
            file: Some("/etc/tern/users".into()),
            username_format: "%Ln".into(),
            dovecot_auth: None,
            dovecot_userdb: None,
        }
    );
    assert_eq!(config.mailbox.path, "~/Maildir");
    assert_eq!(config.mailbox.recipient_delimiter, "+");
    assert_eq!(
        config.aliases,
        [
            Alias {
                name: "postmaster".into(),
                targets: vec!["alice".into()]
            },
            Alias {
                name: "sales@example.net".into(),
                targets: vec!["bob@example.net".into(), "carol@example.org".into()],
            },
        ]
    );
    assert_eq!(config.delivery, DeliveryConfig::default());
    assert_eq!(config.limits, Limits::default());

    assert_eq!(
        config.listeners,
        [Listener {
            name: "smtp".into(),
            protocol: Protocol::Smtp,
            bind: Bind::Tcp("0.0.0.0:25".parse().unwrap()),
            tls: ListenerTls::May,
            auth: ListenerAuth::Optional,
            plaintext_auth: false,
            restrictions: vec![
                Restriction::PermitMynetworks,
                Restriction::PermitSaslAuthenticated,
                Restriction::RejectUnauthDestination,
                Restriction::RejectUnverifiedRecipient,
                Restriction::Permit,
            ],
            record_sessions: None,
        }]
    );
}

#[test]
fn empty_file_gives_every_default() {
    let config = ok("");
    let hostname = system_hostname();

    assert_eq!(config.hostname, hostname);
    let mut domains = vec![hostname.to_ascii_lowercase()];
    if domains[0] != "localhost" {
        domains.push("localhost".into());
    }
    assert_eq!(config.domains, domains);
    assert_eq!(
        config.trusted_networks,
        [net("127.0.0.0/8"), net("::1/128")]
    );
    assert_eq!(config.runtime, RuntimeKind::Smol);
    assert_eq!(config.data_dir, Path::new("/var/lib/tern"));
    assert_eq!(config.log, LogTarget::Stderr);
    assert_eq!(config.syslog_name, "tern");
    assert_eq!(config.tls, None);

    assert_eq!(config.accounts.file, None);
    assert_eq!(config.accounts.username_format, "%Ln");
    assert_eq!(config.accounts.dovecot_auth, None);
    assert_eq!(config.accounts.dovecot_userdb, None);
    assert_eq!(config.mailbox.path, "~/Maildir");
    assert_eq!(config.mailbox.recipient_delimiter, "+");
    assert!(config.aliases.is_empty());

    let delivery = &config.delivery;
    assert_eq!(delivery.local, LocalDelivery::Maildir);
    assert_eq!(delivery.relay_host, None);
    assert_eq!(delivery.relay_tls, RelayTls::May);
    assert!(delivery.dns_servers.is_empty());
    assert_eq!(delivery.queue_lifetime, Duration::from_secs(5 * 24 * 3600));
    assert_eq!(delivery.delay_warning, Duration::from_secs(4 * 3600));

    let limits = &config.limits;
    assert_eq!(limits.message_size, 10_240_000);
    assert_eq!(limits.recipients, 100);
    assert_eq!(limits.command_timeout, Duration::from_secs(300));
    assert_eq!(limits.data_timeout, Duration::from_secs(600));
    assert_eq!(limits.errors, 20);
    assert_eq!(limits.auth_failures, 3);
    assert_eq!(limits.auth_failure_delay, Duration::from_secs(2));
    assert_eq!(limits.connections, 1000);
    assert_eq!(limits.connections_per_ip, 50);

    assert!(config.listeners.is_empty());
}

#[test]
fn listener_defaults_depend_on_the_protocol() {
    let config = ok(r#"
        [[listener]]
        name = "smtp"
        protocol = "smtp"
        address = "127.0.0.1:25"

        [[listener]]
        name = "lmtp"
        protocol = "lmtp"
        path = "lmtp.sock"

        [[listener]]
        name = "auth"
        protocol = "dovecot-auth"
        path = "/run/tern/auth"
    "#);
    let [smtp, lmtp, auth] = config.listeners.as_slice() else {
        panic!("three listeners expected: {:?}", config.listeners);
    };

    assert_eq!(smtp.bind, Bind::Tcp("127.0.0.1:25".parse().unwrap()));
    assert_eq!(smtp.tls, ListenerTls::None);
    assert_eq!(smtp.auth, ListenerAuth::Optional);
    assert!(!smtp.plaintext_auth);
    assert_eq!(smtp.restrictions, smtp_defaults());
    assert_eq!(smtp.record_sessions, None);

    let unix = |path: &str| Bind::Unix {
        path: path.into(),
        mode: 0o600,
        user: None,
        group: None,
    };
    assert_eq!(lmtp.bind, unix("lmtp.sock"));
    assert_eq!(lmtp.tls, ListenerTls::None);
    assert_eq!(lmtp.auth, ListenerAuth::None);
    assert!(lmtp.restrictions.is_empty());

    assert_eq!(auth.protocol, Protocol::DovecotAuth);
    assert_eq!(auth.bind, unix("/run/tern/auth"));
    assert_eq!(auth.auth, ListenerAuth::None);
    assert!(auth.restrictions.is_empty());
}

#[test]
fn everything_set_is_kept() {
    let config = ok(EVERYTHING);

    assert_eq!(config.hostname, "MX1.Example.NET");
    assert_eq!(config.domains, ["example.net", "example.org"]);
    assert_eq!(
        config.trusted_networks,
        [net("10.0.0.0/8"), net("2001:db8::/32"), net("192.0.2.7/32")]
    );
    assert_eq!(config.runtime, RuntimeKind::Mio);
    assert_eq!(config.data_dir, Path::new("data"));
    assert_eq!(config.log, LogTarget::File("/var/log/tern.log".into()));
    assert_eq!(config.syslog_name, "postfix-tern");
    assert_eq!(
        config.accounts.dovecot_auth,
        Some("/run/dovecot/auth-client".into())
    );
    assert_eq!(
        config.accounts.dovecot_userdb,
        Some("/run/dovecot/auth-userdb".into())
    );
    assert_eq!(config.mailbox.recipient_delimiter, "");

    // File order, not sorted; a one-element array and a string mean the same.
    let names: Vec<_> = config.aliases.iter().map(|a| a.name.as_str()).collect();
    assert_eq!(names, ["zed", "abuse@example.net", "postmaster"]);
    assert_eq!(config.aliases[2].targets, ["alice"]);

    let delivery = &config.delivery;
    assert_eq!(
        delivery.local,
        LocalDelivery::Lmtp(LmtpTarget::Inet {
            host: "::1".into(),
            port: 24
        })
    );
    assert_eq!(
        delivery.relay_host.as_deref(),
        Some("[smtp.example.net]:587")
    );
    assert_eq!(delivery.relay_tls, RelayTls::Verify);
    assert_eq!(delivery.dns_servers, ["192.0.2.53", "[2001:db8::53]:5353"]);
    assert_eq!(delivery.queue_lifetime, Duration::from_secs(36 * 3600));
    assert_eq!(delivery.delay_warning, Duration::ZERO);

    assert_eq!(config.limits.data_timeout, Duration::from_millis(1500));
    assert_eq!(config.limits.auth_failure_delay, Duration::ZERO);

    let lmtp = &config.listeners[0];
    assert_eq!(
        lmtp.bind,
        Bind::Unix {
            path: "/run/tern/lmtp.sock".into(),
            mode: 0o660,
            user: Some("tern".into()),
            group: Some("postfix".into()),
        }
    );
    assert_eq!(lmtp.auth, ListenerAuth::Optional);
    assert!(lmtp.plaintext_auth);
    assert_eq!(lmtp.record_sessions, Some("/var/lib/tern/replay".into()));
    assert_eq!(
        config.listeners[1].restrictions,
        [
            Restriction::PermitSaslAuthenticated,
            Restriction::RejectSenderLoginMismatch,
            Restriction::Reject
        ]
    );
}

#[test]
fn to_toml_round_trips() {
    let configs = [
        ok(SPEC_EXAMPLE),
        ok(""),
        ok(EVERYTHING),
        embedded_default(Path::new("./tern-data")),
        embedded_default(Path::new("/srv/tern data/\"quoted\"")),
    ];
    for config in configs {
        let text = config.to_toml();
        let again = parse(&text, file()).unwrap_or_else(|e| panic!("{e}\n{text}"));
        assert_eq!(again, config, "{text}");
        // Writing is stable: the second generation is the same text.
        assert_eq!(again.to_toml(), text);
    }
}

#[test]
fn to_toml_writes_every_default_in_spec_order() {
    let text = ok("").to_toml();
    let keys: Vec<&str> = text
        .lines()
        .filter_map(|line| line.split(" = ").next().filter(|_| line.contains(" = ")))
        .collect();
    assert_eq!(
        keys,
        [
            "hostname",
            "domains",
            "trusted_networks",
            "runtime",
            "data_dir",
            "log",
            "syslog_name",
            "username_format",
            "path",
            "recipient_delimiter",
            "local",
            "relay_host",
            "relay_tls",
            "dns_servers",
            "queue_lifetime",
            "delay_warning",
            "message_size",
            "recipients",
            "command_timeout",
            "data_timeout",
            "errors",
            "auth_failures",
            "auth_failure_delay",
            "connections",
            "connections_per_ip",
        ]
    );
    let headers: Vec<&str> = text.lines().filter(|l| l.starts_with('[')).collect();
    assert_eq!(
        headers,
        [
            "[accounts]",
            "[mailbox]",
            "[aliases]",
            "[delivery]",
            "[limits]"
        ]
    );
    assert!(text.contains("queue_lifetime = \"5d\"\n"), "{text}");
    assert!(text.contains("delay_warning = \"4h\"\n"), "{text}");
    assert!(text.contains("command_timeout = \"5m\"\n"), "{text}");
    assert!(text.contains("auth_failure_delay = \"2s\"\n"), "{text}");
}

#[test]
fn bad_files_are_reported_at_the_key_or_value() {
    let listener = "[[listener]]\nname = \"smtp\"\nprotocol = \"smtp\"\n";
    let cases: Vec<(String, &str)> = vec![
        (
            "hostname = \"a\"\nbogus = 1\n".into(),
            "2:1: unknown key `bogus`, expected one of `hostname`, `domains`, \
             `trusted_networks`, `runtime`, `data_dir`, `log`, `syslog_name`, `tls`, \
             `accounts`, `mailbox`, `aliases`, `delivery`, `limits`, `listener`",
        ),
        (
            "[limits]\nerrors = 3\n  timeout = \"5s\"\n".into(),
            "3:3: unknown key `timeout`, expected one of `message_size`, `recipients`, \
             `command_timeout`, `data_timeout`, `errors`, `auth_failures`, \
             `auth_failure_delay`, `connections`, `connections_per_ip`",
        ),
        (
            format!("{listener}address = \"127.0.0.1:25\"\nport = 25\n"),
            "5:1: unknown key `port`, expected one of `name`, `protocol`, `address`, `path`, \
             `mode`, `user`, `group`, `tls`, `auth`, `plaintext_auth`, `restrictions`, \
             `record_sessions`",
        ),
        (
            "[limits]\ncommand_timeout = \"5 minutes\"\n".into(),
            "2:19: duration `5 minutes` has an unknown unit ` minutes`: use ms, s, m, h or d",
        ),
        (
            "[limits]\ndata_timeout = \"600\"\n".into(),
            "2:16: duration `600` has no unit: write \"600s\" (units ms, s, m, h, d)",
        ),
        (
            "[delivery]\nqueue_lifetime = 5\n".into(),
            "2:18: duration 5 has no unit: write \"5s\" (units ms, s, m, h, d)",
        ),
        (
            "[delivery]\nqueue_lifetime = \"2d\"\ndelay_warning = \"4 hours\"\n".into(),
            "3:17: duration `4 hours` has an unknown unit ` hours`: use ms, s, m, h or d",
        ),
        (
            "[limits]\nauth_failure_delay = \"s\"\n".into(),
            "2:22: `s` is not a duration: write a number and a unit, such as \"300s\"",
        ),
        (
            "trusted_networks = [\"127.0.0.0/8\", \"10.0.0.0/33\"]\n".into(),
            "1:36: `10.0.0.0/33` is not a network: prefix length 33 is longer than 32",
        ),
        (
            "trusted_networks = [\"localhost\"]\n".into(),
            "1:21: `localhost` is not a network: `localhost` is not an IP address",
        ),
        (
            format!(
                "{listener}address = \"127.0.0.1:25\"\n\
                 restrictions = [\"permit\", \"reject_rbl\"]\n"
            ),
            "5:27: unknown restriction `reject_rbl`",
        ),
        (
            format!("{listener}address = \"127.0.0.1:25\"\npath = \"/run/smtp\"\n"),
            "5:8: `address` and `path` are mutually exclusive; give one",
        ),
        (
            format!("{listener}address = \"127.0.0.1:25\"\ntls = \"may\"\n"),
            "5:7: tls = \"may\" needs a [tls] section with certificate and private_key",
        ),
        (
            format!("{listener}path = \"s\"\nmode = \"0988\"\n"),
            "5:8: mode `0988` is not an octal mode such as \"0660\"",
        ),
        (
            format!("{listener}path = \"s\"\nmode = 660\n"),
            "5:8: write the mode as a string of octal digits, such as \"0660\", not a number",
        ),
        (
            format!("{listener}path = \"s\"\nmode = \"10000\"\n"),
            "5:8: mode `10000` is not an octal mode such as \"0660\"",
        ),
        (
            "hostname = 5\n".into(),
            "1:12: invalid type: integer `5`, expected a string",
        ),
        (
            "[limits]\nrecipients = \"100\"\n".into(),
            "2:14: invalid type: string \"100\", expected usize",
        ),
        (
            "[limits]\nerrors = -1\n".into(),
            "2:10: invalid value: integer `-1`, expected u32",
        ),
        (
            "domains = \"example.net\"\n".into(),
            "1:11: invalid type: string \"example.net\", expected a sequence",
        ),
        (
            "hostname = \"a\"\ndomains = [\"x\"\n".into(),
            "2:15: unclosed array, expected `]`",
        ),
        (
            "hostname \"a\"\n".into(),
            "1:10: key with no value, expected `=`",
        ),
        (
            "runtime = \"tokio\"\n".into(),
            "1:11: unknown runtime `tokio`, expected `blocking`, `smol`, `mio`",
        ),
    ];
    for (text, want) in cases {
        assert_eq!(err(&text), format!("tern.toml:{want}"), "for:\n{text}");
    }
}

#[test]
fn cross_field_errors() {
    let tls = "[tls]\ncertificate = \"c\"\nprivate_key = \"k\"\n";
    let cases: Vec<(String, &str)> = vec![
        (
            "\n[[listener]]\nname = \"a\"\nprotocol = \"smtp\"\n".into(),
            "2:1: listener `a` needs `address` (TCP) or `path` (Unix socket)",
        ),
        (
            "[[listener]]\nname = \"a\"\nprotocol = \"smtp\"\naddress = \"127.0.0.1:25\"\n\
             mode = \"0660\"\n"
                .into(),
            "5:8: `mode` applies only to a Unix socket (`path`)",
        ),
        (
            "[[listener]]\nname = \"a\"\nprotocol = \"smtp\"\naddress = \"127.0.0.1:25\"\n\
             group = \"postfix\"\n"
                .into(),
            "5:9: `group` applies only to a Unix socket (`path`)",
        ),
        (
            format!(
                "{tls}[[listener]]\nname = \"a\"\nprotocol = \"lmtp\"\naddress = \"127.0.0.1:24\"\n\
                 tls = \"implicit\"\n"
            ),
            "8:7: tls = \"implicit\" is only for smtp listeners on a TCP `address`",
        ),
        (
            format!(
                "{tls}[[listener]]\nname = \"a\"\nprotocol = \"smtp\"\npath = \"s\"\n\
                 tls = \"implicit\"\n"
            ),
            "8:7: tls = \"implicit\" is only for smtp listeners on a TCP `address`",
        ),
        (
            format!(
                "{tls}[[listener]]\nname = \"a\"\nprotocol = \"dovecot-auth\"\npath = \"s\"\n\
                 tls = \"may\"\n"
            ),
            "8:7: the dovecot-auth protocol has no TLS; use tls = \"none\"",
        ),
        (
            "[[listener]]\nname = \"a\"\nprotocol = \"smtp\"\naddress = \"127.0.0.1:25\"\n\
             [[listener]]\nname = \"a\"\nprotocol = \"lmtp\"\npath = \"l\"\n"
                .into(),
            "6:8: a listener named `a` is already defined",
        ),
        (
            "[accounts]\ndovecot_auth = \"/run/dovecot/auth-client\"\n".into(),
            "2:16: dovecot_auth needs dovecot_userdb or file too, to know the local users at \
             RCPT time",
        ),
        (
            "[[listener]]\nname = \"a\"\nprotocol = \"dovecot-auth\"\npath = \"s\"\n\
             auth = \"required\"\n"
                .into(),
            "5:8: `auth` has no meaning on a dovecot-auth listener: it answers the auth \
             requests itself",
        ),
        (
            "[[listener]]\nname = \"a\"\nprotocol = \"lmtp\"\npath = \"s\"\n\
             restrictions = [\"permit\"]\n"
                .into(),
            "5:16: restrictions do not apply to lmtp listeners",
        ),
        (
            "[[listener]]\nname = \"a b\"\nprotocol = \"smtp\"\naddress = \"127.0.0.1:25\"\n"
                .into(),
            "2:8: a listener name may contain only letters, digits, `-`, `_` and `.`",
        ),
        (
            "[[listener]]\nname = \"a\"\naddress = \"127.0.0.1:25\"\n".into(),
            "1:1: missing key `protocol`",
        ),
        (
            "[[listener]]\nname = \"a\"\nprotocol = \"imap\"\naddress = \"127.0.0.1:25\"\n".into(),
            "3:12: unknown protocol `imap`, expected `smtp`, `lmtp`, `dovecot-auth`",
        ),
        (
            "[[listener]]\nname = \"a\"\nprotocol = \"smtp\"\naddress = \"localhost:25\"\n".into(),
            "4:11: `localhost:25` is not a socket address: write \"IP:port\", such as \
             \"0.0.0.0:25\" or \"[::]:25\"",
        ),
        (
            "[tls]\ncertificate = \"c\"\n".into(),
            "1:1: missing key `private_key`",
        ),
        (
            "[aliases]\npostmaster = \"alice\"\nPostmaster = \"bob\"\n".into(),
            "3:1: alias `Postmaster` is given twice",
        ),
        (
            "[aliases]\nabuse = []\n".into(),
            "2:9: alias `abuse` has no target",
        ),
        (
            "[aliases]\nabuse = [\"bob\", \"a b\"]\n".into(),
            "2:9: `a b` is not an address or local part",
        ),
        (
            "[aliases]\nabuse = 1\n".into(),
            "2:9: invalid type: integer `1`, expected an address or a list of addresses",
        ),
        (
            "domains = [\"example..net\"]\n".into(),
            "1:12: `example..net` is not a valid domain",
        ),
        (
            "hostname = \"\"\n".into(),
            "1:12: `` is not a valid hostname",
        ),
        (
            "[limits]\nrecipients = 0\n".into(),
            "2:14: recipients must be at least 1",
        ),
        (
            "[limits]\ncommand_timeout = \"0s\"\n".into(),
            "2:19: command_timeout may not be zero",
        ),
        ("data_dir = \"\"\n".into(), "1:12: a path may not be empty"),
        (
            "[mailbox]\npath = \"/var/vmail/%x/Maildir\"\n".into(),
            "2:8: unknown expansion `%x/` in the mailbox path: use %u %n %d %Lu %Ln %Ld or %%",
        ),
        (
            "[delivery]\nlocal = \"lmtp:tcp:host:24\"\n".into(),
            "2:9: `lmtp:tcp:host:24` is not a local delivery: use \"maildir\", \
             \"lmtp:unix:/path\" or \"lmtp:inet:host:port\"",
        ),
        (
            "[delivery]\nrelay_host = \"smtp.example.net:99999\"\n".into(),
            "2:14: `smtp.example.net:99999` is not a relay host: write \"host\", \"host:port\" \
             or \"[host]:port\"",
        ),
        (
            "[delivery]\ndns_servers = [\"dns.example\"]\n".into(),
            "2:16: `dns.example` is not a resolver address: write an IP address, optionally \
             with a port",
        ),
        (
            "[delivery]\nrelay_tls = \"dane\"\n".into(),
            "2:13: unknown relay_tls `dane`, expected `none`, `may`, `encrypt`, `verify`",
        ),
    ];
    for (text, want) in cases {
        assert_eq!(err(&text), format!("tern.toml:{want}"), "for:\n{text}");
    }
}

#[test]
fn dovecot_auth_with_a_user_list_is_accepted() {
    for users in [
        "file = \"users\"",
        "dovecot_userdb = \"/run/dovecot/auth-userdb\"",
    ] {
        let text = format!("[accounts]\ndovecot_auth = \"/run/dovecot/auth-client\"\n{users}\n");
        assert_eq!(
            ok(&text).accounts.dovecot_auth,
            Some(PathBuf::from("/run/dovecot/auth-client"))
        );
    }
}

#[test]
fn embedded_default_contents() {
    let config = embedded_default(Path::new("./tern-data"));

    assert_eq!(config.hostname, "localhost");
    assert_eq!(config.domains, ["localhost"]);
    assert_eq!(
        config.trusted_networks,
        [net("127.0.0.0/8"), net("::1/128")]
    );
    assert_eq!(config.runtime, RuntimeKind::Smol);
    assert_eq!(config.data_dir, Path::new("./tern-data"));
    assert_eq!(config.log, LogTarget::Stderr);
    assert_eq!(
        config.tls,
        Some(TlsFiles {
            certificate: "./tern-data/tls/cert.pem".into(),
            private_key: "./tern-data/tls/key.pem".into(),
        })
    );
    assert_eq!(config.accounts.file, Some("./tern-data/users".into()));
    assert_eq!(config.accounts.dovecot_auth, None);
    assert_eq!(config.mailbox.path, "./tern-data/mail/%n/Maildir");
    assert!(config.aliases.is_empty());
    assert_eq!(config.delivery, DeliveryConfig::default());
    assert_eq!(config.limits, Limits::default());

    let summary: Vec<_> = config
        .listeners
        .iter()
        .map(|l| (l.name.as_str(), l.protocol, l.bind.clone(), l.tls, l.auth))
        .collect();
    let tcp = |port| Bind::Tcp(SocketAddr::from(([127, 0, 0, 1], port)));
    let unix = |path: &str| Bind::Unix {
        path: path.into(),
        mode: 0o600,
        user: None,
        group: None,
    };
    use {ListenerAuth as A, ListenerTls as T, Protocol as P};
    assert_eq!(
        summary,
        [
            ("smtp", P::Smtp, tcp(2525), T::May, A::Optional),
            ("submission", P::Smtp, tcp(2587), T::Encrypt, A::Required),
            ("submissions", P::Smtp, tcp(2465), T::Implicit, A::Required),
            (
                "lmtp",
                P::Lmtp,
                unix("./tern-data/lmtp.sock"),
                T::None,
                A::None
            ),
            (
                "auth",
                P::DovecotAuth,
                unix("./tern-data/auth.sock"),
                T::None,
                A::None
            ),
        ]
    );
    for listener in &config.listeners[..3] {
        assert_eq!(listener.restrictions, smtp_defaults(), "{}", listener.name);
    }
    assert!(
        config.listeners[3..]
            .iter()
            .all(|l| l.restrictions.is_empty())
    );
    assert!(
        config
            .listeners
            .iter()
            .all(|l| !l.plaintext_auth && l.record_sessions.is_none())
    );

    let absolute = embedded_default(Path::new("/home/u/tern-data"));
    assert_eq!(absolute.mailbox.path, "/home/u/tern-data/mail/%n/Maildir");
}

#[test]
fn durations() {
    let cases = [
        ("100ms", Duration::from_millis(100), "100ms"),
        ("300s", Duration::from_secs(300), "5m"),
        ("90s", Duration::from_secs(90), "90s"),
        ("5m", Duration::from_secs(300), "5m"),
        ("2h", Duration::from_secs(7200), "2h"),
        ("48h", Duration::from_secs(2 * 86400), "2d"),
        ("5d", Duration::from_secs(5 * 86400), "5d"),
        ("1500ms", Duration::from_millis(1500), "1500ms"),
        ("0ms", Duration::ZERO, "0s"),
    ];
    for (text, duration, written) in cases {
        assert_eq!(parse_duration(text), Ok(duration), "{text}");
        assert_eq!(format_duration(duration), written, "{text}");
    }
    for bad in [
        "",
        "5",
        "s",
        "5 s",
        "-5s",
        "+5s",
        "5S",
        "1.5h",
        "5w",
        "99999999999999999999d",
    ] {
        assert!(parse_duration(bad).is_err(), "{bad}");
    }
}

#[test]
fn local_delivery_strings() {
    let cases = [
        ("maildir", LocalDelivery::Maildir),
        (
            "lmtp:unix:/run/dovecot/lmtp",
            LocalDelivery::Lmtp(LmtpTarget::Unix("/run/dovecot/lmtp".into())),
        ),
        (
            "lmtp:inet:mail.example.net:24",
            LocalDelivery::Lmtp(LmtpTarget::Inet {
                host: "mail.example.net".into(),
                port: 24,
            }),
        ),
        (
            "lmtp:inet:[2001:db8::1]:24",
            LocalDelivery::Lmtp(LmtpTarget::Inet {
                host: "2001:db8::1".into(),
                port: 24,
            }),
        ),
    ];
    for (text, delivery) in cases {
        assert_eq!(
            text.parse::<LocalDelivery>().as_ref(),
            Ok(&delivery),
            "{text}"
        );
        assert_eq!(delivery.to_string(), text);
    }
    for bad in [
        "Maildir",
        "lmtp:unix:",
        "lmtp:inet:host",
        "lmtp:inet:host:0",
        "lmtp:inet::24",
    ] {
        assert!(bad.parse::<LocalDelivery>().is_err(), "{bad}");
    }
}

#[test]
fn positions_count_characters_not_bytes() {
    let text = "# é\nhostname = \"ü\"\n";
    assert_eq!(err(text), "tern.toml:2:12: `ü` is not a valid hostname");
    assert_eq!(line_column("ab\ncd", 4), (2, 2));
    assert_eq!(line_column("ab", 99), (1, 3));
}

#[test]
fn unreadable_file_has_no_position() {
    let missing = Path::new("/nonexistent/tern.toml");
    let e = load(missing).unwrap_err();
    assert_eq!((e.line, e.column), (0, 0));
    assert!(
        e.to_string()
            .starts_with("/nonexistent/tern.toml: cannot read: "),
        "{e}"
    );
}
