//! The `lettre` client library against `tern serve`: plain SMTP, submission with STARTTLS and
//! AUTH PLAIN / LOGIN, implicit TLS; every stored file checked byte for byte.

mod common;

use lettre::transport::smtp::authentication::{Credentials, Mechanism};
use lettre::transport::smtp::client::{Certificate, Tls, TlsParameters};
use lettre::transport::smtp::extension::ClientId;
use lettre::transport::smtp::response::Response;
use lettre::{Message, SmtpTransport, Transport};

use common::{Fixture, PASSWORD, TIMEOUT, Trace, assert_file_name, assert_stored, lf, wait_files};

/// The client trusts exactly the certificate `tern cert` made for mx.test.
fn tls_parameters(fx: &Fixture) -> TlsParameters {
    let cert = Certificate::from_pem(&fx.cert_pem).expect("parse cert.pem");
    TlsParameters::builder("mx.test".into())
        .add_root_certificate(cert)
        .build_rustls()
        .expect("TLS parameters")
}

fn transport(port: u16, tls: Tls) -> lettre::transport::smtp::SmtpTransportBuilder {
    SmtpTransport::builder_dangerous("127.0.0.1")
        .port(port)
        .tls(tls)
        .hello_name(ClientId::Domain(common::HELO.into()))
        .timeout(Some(TIMEOUT))
}

fn message(from: &str, to: &str, subject: &str) -> Message {
    Message::builder()
        .from(from.parse().unwrap())
        .to(to.parse().unwrap())
        .subject(subject)
        .body(format!(
            "Hello from lettre.\n.a line starting with a dot\n\n-- \n{subject}\n"
        ))
        .unwrap()
}

/// The message as tern must store it: lettre ends the data with `CRLF . CRLF` after the
/// formatted message, which itself ends in CRLF, so the stored copy has one more empty line.
fn stored_form(msg: &Message) -> Vec<u8> {
    let mut wire = msg.formatted();
    wire.extend_from_slice(b"\r\n");
    lf(&wire)
}

/// The id in `250 2.0.0 Ok: queued as ID`, as lettre hands the reply over.
fn queued_id(response: &Response) -> String {
    let text = response.message().collect::<Vec<_>>().join("\n");
    let id = text
        .trim_start_matches("2.0.0 ")
        .strip_prefix("Ok: queued as ")
        .unwrap_or_else(|| panic!("unexpected final reply {:?} {text:?}", response.code()));
    id.to_string()
}

#[test]
fn plain_smtp_to_the_mx_listener() {
    let fx = Fixture::new();
    let server = fx.serve();
    let mailer = transport(server.port("smtp"), Tls::None).build();

    let msg = message(
        "Sender <sender@example.org>",
        "bob@example.net",
        "plain smtp",
    );
    let response = mailer.send(&msg).expect("lettre send");
    let id = queued_id(&response);

    let files = wait_files(&fx.new_dir("bob"), 1);
    assert_file_name(&files[0], server.pid(), "mx.test");
    assert_stored(
        &files[0],
        &Trace {
            return_path: "sender@example.org",
            by: "mx.test",
            delivered_to: "bob@example.net",
            from: "client.test (unknown [127.0.0.1])",
            protocol: "ESMTP",
            tls: false,
            queue_id: Some(&id),
            recipient: "bob@example.net",
        },
        &stored_form(&msg),
    );
}

#[test]
fn submission_starttls_auth_plain() {
    let fx = Fixture::new();
    let server = fx.serve();
    let mailer = transport(
        server.port("submission"),
        Tls::Required(tls_parameters(&fx)),
    )
    .credentials(Credentials::new("alice".into(), PASSWORD.into()))
    .authentication(vec![Mechanism::Plain])
    .build();

    let msg = message("Alice <alice@mx.test>", "bob@example.net", "starttls plain");
    let id = queued_id(&mailer.send(&msg).expect("lettre send"));

    let files = wait_files(&fx.new_dir("bob"), 1);
    assert_file_name(&files[0], server.pid(), "mx.test");
    assert_stored(
        &files[0],
        &Trace {
            return_path: "alice@mx.test",
            by: "mx.test",
            delivered_to: "bob@example.net",
            from: "client.test (unknown [127.0.0.1])",
            protocol: "ESMTPSA",
            tls: true,
            queue_id: Some(&id),
            recipient: "bob@example.net",
        },
        &stored_form(&msg),
    );
}

/// bob's account has a `{PLAIN}` hash; he logs in with his full address.
#[test]
fn submission_starttls_auth_login() {
    let fx = Fixture::new();
    let server = fx.serve();
    let mailer = transport(
        server.port("submission"),
        Tls::Required(tls_parameters(&fx)),
    )
    .credentials(Credentials::new("bob@example.net".into(), PASSWORD.into()))
    .authentication(vec![Mechanism::Login])
    .build();

    let msg = message("Bob <bob@example.net>", "alice@mx.test", "starttls login");
    let id = queued_id(&mailer.send(&msg).expect("lettre send"));

    let files = wait_files(&fx.new_dir("alice"), 1);
    assert_stored(
        &files[0],
        &Trace {
            return_path: "bob@example.net",
            by: "mx.test",
            delivered_to: "alice@mx.test",
            from: "client.test (unknown [127.0.0.1])",
            protocol: "ESMTPSA",
            tls: true,
            queue_id: Some(&id),
            recipient: "alice@mx.test",
        },
        &stored_form(&msg),
    );
}

#[test]
fn submission_wrong_password_is_refused() {
    let fx = Fixture::new();
    let server = fx.serve();
    let mailer = transport(
        server.port("submission"),
        Tls::Required(tls_parameters(&fx)),
    )
    .credentials(Credentials::new("alice".into(), "wrong".into()))
    .authentication(vec![Mechanism::Plain])
    .build();

    let msg = message("Alice <alice@mx.test>", "bob@example.net", "wrong password");
    let err = mailer
        .send(&msg)
        .expect_err("a wrong password must not send");
    assert!(err.is_permanent(), "{err}");
    assert_eq!(err.status().map(u16::from), Some(535), "{err}");
    assert!(common::read_files(&fx.new_dir("bob")).is_empty());
}

#[test]
fn implicit_tls_with_auth() {
    let fx = Fixture::new();
    let server = fx.serve();
    let mailer = transport(
        server.port("submissions"),
        Tls::Wrapper(tls_parameters(&fx)),
    )
    .credentials(Credentials::new("alice".into(), PASSWORD.into()))
    .authentication(vec![Mechanism::Plain])
    .build();

    let msg = message("Alice <alice@mx.test>", "alice@mx.test", "implicit tls");
    let id = queued_id(&mailer.send(&msg).expect("lettre send"));

    let files = wait_files(&fx.new_dir("alice"), 1);
    assert_file_name(&files[0], server.pid(), "mx.test");
    assert_stored(
        &files[0],
        &Trace {
            return_path: "alice@mx.test",
            by: "mx.test",
            delivered_to: "alice@mx.test",
            from: "client.test (unknown [127.0.0.1])",
            protocol: "ESMTPSA",
            tls: true,
            queue_id: Some(&id),
            recipient: "alice@mx.test",
        },
        &stored_form(&msg),
    );
}
