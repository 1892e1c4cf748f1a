//! The Dovecot authentication protocol against the real binary, both sides:
//! - a `protocol = "dovecot-auth"` listener answers the exact lines Postfix's
//!   `smtpd_sasl_type = dovecot` sends (VERSION/CPID, AUTH PLAIN with `resp=`, AUTH LOGIN
//!   with CONT);
//! - a second tern with `[accounts] dovecot_auth` pointed at the first one's socket (tern as
//!   its own Dovecot) checks SMTP AUTH there: 235, 535, and 454 4.7.0 once the socket is gone.

mod common;

use std::fs;
use std::io::{BufRead, BufReader, Write};
use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;

use common::{Client, Server, TIMEOUT, tern_bin};

const DELAY: Duration = Duration::from_millis(400);

/// A config with one SMTP listener (plaintext AUTH allowed) and `extra` listeners/accounts.
fn write_config(root: &Path, accounts: &str, extra: &str) -> std::path::PathBuf {
    let r = root.display();
    let config = root.join("tern.toml");
    fs::write(
        &config,
        format!(
            r#"hostname = "mx.test"
domains = ["mx.test"]
trusted_networks = []
runtime = "{runtime}"
data_dir = "{r}/data"
log = "{r}/mail.log"

[accounts]
{accounts}

[mailbox]
path = "{r}/mail/%n/Maildir"

[limits]
auth_failure_delay = "{delay}ms"

[[listener]]
name = "submission"
protocol = "smtp"
address = "127.0.0.1:0"
auth = "required"
plaintext_auth = true
{extra}
"#,
            runtime = common::runtime(),
            delay = DELAY.as_millis(),
        ),
    )
    .unwrap();
    config
}

fn serve(config: &Path, root: &Path, listeners: usize) -> Server {
    Server::start(
        Command::new(tern_bin())
            .args(["serve", "--config"])
            .arg(config),
        root,
        listeners,
    )
}

/// Reads one LF-terminated line of the auth protocol.
fn line(reader: &mut BufReader<UnixStream>) -> String {
    let mut line = String::new();
    reader.read_line(&mut line).expect("read from auth socket");
    assert!(line.ends_with('\n'), "connection closed; got {line:?}");
    line.pop();
    line
}

fn plain(login: &str, password: &str) -> String {
    BASE64.encode(format!("\0{login}\0{password}"))
}

/// tern's first server: alice with a hashed password, carol marked `nologin`, dave with a
/// `{PLAIN}` one (SCRAM).
fn auth_server(dir: &Path) -> (Server, std::path::PathBuf) {
    let root = dir.join("a");
    fs::create_dir_all(&root).unwrap();
    let hash = common::tern_passwd("SHA512-CRYPT", "right pass");
    fs::write(
        root.join("users"),
        format!(
            "alice:{hash}::::::\ncarol:{{PLAIN}}carolpw::::::nologin\n\
                 dave:{{PLAIN}}davepw::::::\n"
        ),
    )
    .unwrap();
    let socket = root.join("auth.sock");
    let config = write_config(
        &root,
        &format!("file = \"{}/users\"", root.display()),
        &format!(
            "\n[[listener]]\nname = \"auth\"\nprotocol = \"dovecot-auth\"\npath = \"{}\"\n\
             mode = \"0666\"\n",
            socket.display()
        ),
    );
    let server = serve(&config, &root, 2);
    assert_eq!(server.addr("auth"), socket.display().to_string());
    (server, socket)
}

#[test]
fn the_auth_listener_answers_postfix() {
    let dir = tempfile::tempdir().unwrap();
    let (server, socket) = auth_server(dir.path());
    let mode = fs::metadata(&socket).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o666, "the socket has the configured mode");

    let stream = UnixStream::connect(&socket).unwrap();
    stream.set_read_timeout(Some(TIMEOUT)).unwrap();
    let mut writer = stream.try_clone().unwrap();
    let mut reader = BufReader::new(stream);

    // What Postfix 3.7's xsasl_dovecot_server.c writes first.
    writer.write_all(b"VERSION\t1\t0\nCPID\t4242\n").unwrap();
    let mut handshake = Vec::new();
    loop {
        let l = line(&mut reader);
        let done = l == "DONE";
        handshake.push(l);
        if done {
            break;
        }
    }
    assert_eq!(handshake[0], "VERSION\t1\t2");
    assert_eq!(handshake[1], "MECH\tPLAIN\tplaintext");
    assert_eq!(handshake[2], "MECH\tLOGIN\tplaintext");
    // dave's {PLAIN} password can give SCRAM keys, as on the SMTP side.
    assert_eq!(handshake[3], "MECH\tSCRAM-SHA-256\tmutual-auth");
    assert_eq!(handshake[4], format!("SPID\t{}", server.pid()));
    assert_eq!(handshake[5], "CUID\t1");
    let cookie = handshake[6].strip_prefix("COOKIE\t").unwrap();
    assert!(
        cookie.len() == 32 && cookie.bytes().all(|b| b.is_ascii_hexdigit()),
        "{cookie}"
    );
    assert_eq!(handshake.len(), 8, "{handshake:?}");

    // Postfix: AUTH id mech service=smtp nologin lip= rip= [secured] resp=.
    let auth = |id: u32, mech: &str, resp: Option<String>| {
        let mut l = format!(
            "AUTH\t{id}\t{mech}\tservice=smtp\tnologin\tlip=127.0.0.1\trip=192.0.2.9\tsecured"
        );
        if let Some(resp) = resp {
            l.push_str(&format!("\tresp={resp}"));
        }
        l.push('\n');
        l
    };
    writer
        .write_all(auth(1, "PLAIN", Some(plain("alice", "right pass"))).as_bytes())
        .unwrap();
    assert_eq!(line(&mut reader), "OK\t1\tuser=alice");

    let started = Instant::now();
    writer
        .write_all(auth(2, "PLAIN", Some(plain("alice", "wrong pass"))).as_bytes())
        .unwrap();
    assert_eq!(line(&mut reader), "FAIL\t2\tuser=alice");
    assert!(
        started.elapsed() >= DELAY,
        "the failure waits out the delay"
    );

    // An unknown user gets the same line and the same wait.
    let started = Instant::now();
    writer
        .write_all(auth(3, "PLAIN", Some(plain("nobody", "x"))).as_bytes())
        .unwrap();
    assert_eq!(line(&mut reader), "FAIL\t3\tuser=nobody");
    assert!(started.elapsed() >= DELAY);

    // The right password of a `nologin` account is no success.
    writer
        .write_all(auth(4, "PLAIN", Some(plain("carol", "carolpw"))).as_bytes())
        .unwrap();
    assert_eq!(line(&mut reader), "FAIL\t4\tuser=carol");

    // LOGIN: Postfix sends no initial response and answers each CONT.
    writer.write_all(auth(5, "LOGIN", None).as_bytes()).unwrap();
    assert_eq!(
        line(&mut reader),
        format!("CONT\t5\t{}", BASE64.encode("Username:"))
    );
    writer
        .write_all(format!("CONT\t5\t{}\n", BASE64.encode("alice")).as_bytes())
        .unwrap();
    assert_eq!(
        line(&mut reader),
        format!("CONT\t5\t{}", BASE64.encode("Password:"))
    );
    writer
        .write_all(format!("CONT\t5\t{}\n", BASE64.encode("right pass")).as_bytes())
        .unwrap();
    assert_eq!(line(&mut reader), "OK\t5\tuser=alice");

    // SCRAM-SHA-256 from Python's scramp, with the server's signature checked.
    let scram = |user: &str, password: &str| {
        let script = concat!(env!("CARGO_MANIFEST_DIR"), "/../interop/dovecot_scram.py");
        let out = Command::new("python3")
            .arg(script)
            .arg(&socket)
            .args([user, password])
            .output()
            .expect("python3 must be installed (run .ci/run)");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(out.status.success(), "scramp client failed: {stderr}");
        String::from_utf8(out.stdout).unwrap()
    };
    assert_eq!(
        scram("dave", "davepw"),
        "OK user=dave, server signature verified\n"
    );
    assert_eq!(scram("dave", "wrong"), "FAIL\t1\tuser=dave\n");
    assert_eq!(scram("carol", "carolpw"), "FAIL\t1\tuser=carol\n");

    // Each connection gets the next CUID (this is the fifth); a broken line ends it.
    let mut second = UnixStream::connect(&socket).unwrap();
    second.set_read_timeout(Some(TIMEOUT)).unwrap();
    second
        .write_all(b"VERSION\t1\t0\nCPID\t4243\nBOGUS\n")
        .unwrap();
    let mut all = String::new();
    std::io::Read::read_to_string(&mut second, &mut all).unwrap();
    assert!(all.contains("\nCUID\t5\n"), "{all:?}");
    assert!(
        all.ends_with("DONE\n"),
        "closed after the handshake: {all:?}"
    );

    drop(server);
    let log = fs::read_to_string(dir.path().join("a/mail.log")).unwrap();
    assert!(
        log.contains(
            "tern/auth[",
        ) && log.contains(
            "warning: unknown[192.0.2.9]: SASL PLAIN authentication failed: authentication failure"
        ),
        "{log}"
    );
    // The wrong SCRAM proofs (dave's wrong password, carol's `nologin`, which gets no
    // keys) are decided inside the machine, and logged all the same.
    assert_eq!(
        log.matches("SASL SCRAM-SHA-256 authentication failed: authentication failure")
            .count(),
        2,
        "{log}"
    );
    for secret in [
        "right pass",
        "wrong pass",
        "carolpw",
        &plain("alice", "wrong pass"),
    ] {
        assert!(!log.contains(secret), "{secret:?} in the log:\n{log}");
    }
}

#[test]
fn dovecot_auth_checks_passwords_on_another_servers_socket() {
    let dir = tempfile::tempdir().unwrap();
    let (first, socket) = auth_server(dir.path());

    // The second tern knows alice in its own file with another password: only the answer
    // from the socket can let the right one in.
    let root = dir.path().join("b");
    fs::create_dir_all(&root).unwrap();
    fs::write(root.join("users"), "alice:{PLAIN}local only::::::\n").unwrap();
    let config = write_config(
        &root,
        &format!(
            "file = \"{}/users\"\ndovecot_auth = \"{}\"",
            root.display(),
            socket.display()
        ),
        "",
    );
    let second = serve(&config, &root, 1);
    let addr = second.addr("submission");

    let login = |user: &str, password: &str| {
        let mut client = Client::tcp(&addr);
        client.expect_prefix("220 ");
        let ehlo = client.cmd("EHLO client.test");
        assert!(ehlo.contains("250-AUTH PLAIN LOGIN\r\n"), "{ehlo}");
        let reply = client.cmd(&format!("AUTH PLAIN {}", plain(user, password)));
        client.cmd("QUIT");
        reply
    };
    assert!(login("alice", "right pass").starts_with("235 2.7.0 "));
    assert!(login("alice", "wrong pass").starts_with("535 5.7.8 "));
    assert!(login("alice", "local only").starts_with("535 5.7.8 "));
    assert!(login("carol", "carolpw").starts_with("535 5.7.8 "));

    // LOGIN goes the same way.
    let mut client = Client::tcp(&addr);
    client.expect_prefix("220 ");
    client.cmd("EHLO client.test");
    client.send(b"AUTH LOGIN\r\n");
    client.expect_prefix("334 ");
    client.send(format!("{}\r\n", BASE64.encode("alice")).as_bytes());
    client.expect_prefix("334 ");
    client.send(format!("{}\r\n", BASE64.encode("right pass")).as_bytes());
    client.expect_prefix("235 2.7.0 ");

    // The first server gone (and its socket with it): a temporary failure, never a success.
    assert!(first.terminate().success());
    let _ = fs::remove_file(&socket);
    let reply = login("alice", "right pass");
    assert!(reply.starts_with("454 4.7.0 "), "{reply}");

    drop(second);
    let log = fs::read_to_string(root.join("mail.log")).unwrap();
    assert!(
        log.contains("SASL PLAIN authentication temporarily unavailable"),
        "{log}"
    );
    assert!(
        !log.contains("right pass") && !log.contains("wrong pass"),
        "{log}"
    );
}
