//! The embedded default (SPEC.md section 3): `tern serve` with no config, in an empty
//! directory, on the fixed ports 2525/2587/2465.

mod common;

use std::fs;
use std::net::TcpListener;
use std::process::Command;

use lettre::transport::smtp::authentication::{Credentials, Mechanism};
use lettre::transport::smtp::client::{Certificate, Tls, TlsParameters};
use lettre::transport::smtp::extension::ClientId;
use lettre::{Message, SmtpTransport, Transport};

use common::{Server, TIMEOUT, Trace, assert_stored, tern_bin, tool, wait_files};

const USER: &str = "e2euser";

#[test]
fn embedded_default_delivers_to_postmaster() {
    let _lock = common::fixed_ports_lock();
    for port in [2525, 2587, 2465] {
        if let Err(e) = TcpListener::bind(("127.0.0.1", port)) {
            panic!(
                "port {port} is busy ({e}): the embedded-default test needs 2525, 2587 and \
                 2465 free on 127.0.0.1; stop whatever holds it"
            );
        }
    }

    let dir = tempfile::tempdir().unwrap();
    // Four listeners first; the Dovecot-protocol one is checked at the end, so a missing one
    // does not hide the rest.
    let mut server = Server::start(
        Command::new(tern_bin())
            .arg("serve")
            .current_dir(dir.path())
            .env("USER", USER),
        dir.path(),
        4,
    );
    server.more_stdout(std::time::Duration::from_millis(300));
    let data = dir.path().join("tern-data");
    assert_eq!(server.addr("smtp"), "127.0.0.1:2525");
    assert_eq!(server.addr("submission"), "127.0.0.1:2587");
    assert_eq!(server.addr("submissions"), "127.0.0.1:2465");
    // A printed socket path may be relative to tern's working directory.
    let socket = |name: &str| fs::canonicalize(dir.path().join(server.addr(name))).ok();
    assert_eq!(
        socket("lmtp"),
        fs::canonicalize(data.join("lmtp.sock")).ok()
    );

    let password = server
        .stdout
        .iter()
        .find_map(|l| l.split_once("password: ").map(|(_, rest)| rest))
        .and_then(|rest| rest.split_whitespace().next())
        .unwrap_or_else(|| panic!("no `password: ` line in stdout: {:?}", server.stdout))
        .to_string();
    assert!(password.len() >= 12, "a short first password: {password:?}");
    let users = fs::read_to_string(data.join("users")).expect("tern-data/users");
    assert!(
        users.starts_with(&format!("{USER}:{{")),
        "the account is named after $USER: {users:?}"
    );
    assert!(!users.contains(&password), "the password is stored hashed");

    let message = dir.path().join("message.txt");
    fs::write(
        &message,
        "From: someone@localhost\nTo: postmaster@localhost\nSubject: default\n\nhello",
    )
    .unwrap();
    let (status, out, err) = common::run_with_timeout(
        tool("swaks")
            .args(["--server", "127.0.0.1:2525", "--to", "postmaster@localhost"])
            .args(["--from", "someone@localhost", "--helo", "client.test"])
            .arg("--data")
            .arg(format!("@{}", message.display())),
        TIMEOUT,
    );
    assert!(status.success(), "swaks failed: {status}\n{out}\n{err}");

    let new = data.join(format!("mail/{USER}/Maildir/new"));
    let files = wait_files(&new, 1);
    let rcpt = format!("{USER}@localhost");
    assert_stored(
        &files[0],
        &Trace {
            return_path: "someone@localhost",
            by: "localhost",
            delivered_to: &rcpt,
            from: "client.test (unknown [127.0.0.1])",
            protocol: "ESMTP",
            tls: false,
            queue_id: None,
            recipient: "postmaster@localhost",
        },
        b"From: someone@localhost\nTo: postmaster@localhost\nSubject: default\n\nhello\n",
    );

    // The printed password works on the submission port, whose certificate is the one
    // generated under tern-data/tls/.
    let cert = fs::read(data.join("tls/cert.pem")).expect("tern-data/tls/cert.pem");
    let tls = TlsParameters::builder("localhost".into())
        .add_root_certificate(Certificate::from_pem(&cert).unwrap())
        .build_rustls()
        .unwrap();
    let mailer = SmtpTransport::builder_dangerous("127.0.0.1")
        .port(2587)
        .tls(Tls::Required(tls))
        .hello_name(ClientId::Domain("client.test".into()))
        .credentials(Credentials::new(USER.into(), password))
        .authentication(vec![Mechanism::Plain])
        .timeout(Some(TIMEOUT))
        .build();
    let msg = Message::builder()
        .from(rcpt.parse().unwrap())
        .to(rcpt.parse().unwrap())
        .subject("submitted")
        .body("with the printed password\n".to_string())
        .unwrap();
    mailer
        .send(&msg)
        .expect("submission with the printed password");
    wait_files(&new, 2);

    assert!(
        server.listeners.contains_key("auth"),
        "no `listening: auth` line for the Dovecot-protocol listener; stdout {:?}, stderr {}",
        server.stdout,
        server.stderr()
    );
    assert_eq!(
        socket("auth"),
        fs::canonicalize(data.join("auth.sock")).ok()
    );
}
