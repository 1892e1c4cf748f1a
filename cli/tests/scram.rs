//! SCRAM-SHA-256 (RFC 7677) against the real binary, with Python's `scramp` as the client:
//! accounts stored as `{SCRAM-SHA-256}` (made by `tern passwd`) and as `{PLAIN}` log in, and
//! a wrong password gets the delayed 535 like any other mechanism.

use std::fs;
use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};

/// The client: speaks SMTP by hand around scramp's `ScramClient`, prints every server line.
const CLIENT: &str = r#"
import base64, socket, sys
from scramp import ScramClient

port, user, password = int(sys.argv[1]), sys.argv[2], sys.argv[3]
sock = socket.create_connection(("127.0.0.1", port), timeout=10)
f = sock.makefile("rb")

def reply():
    lines = []
    while True:
        line = f.readline().decode()
        lines.append(line.rstrip("\r\n"))
        if line[3:4] != "-":
            break
    for line in lines:
        print(line)
    return lines[-1]

def send(text):
    sock.sendall(text.encode() + b"\r\n")

reply()
send("EHLO client.example")
reply()
client = ScramClient(["SCRAM-SHA-256"], user, password)
send("AUTH SCRAM-SHA-256 " + base64.b64encode(client.get_client_first().encode()).decode())
line = reply()
if not line.startswith("334 "):
    sys.exit(0)
client.set_server_first(base64.b64decode(line[4:]).decode())
send(base64.b64encode(client.get_client_final().encode()).decode())
line = reply()
if line.startswith("334 "):
    client.set_server_final(base64.b64decode(line[4:]).decode())
    print("server signature verified")
    send("")
    reply()
send("QUIT")
reply()
"#;

#[test]
fn scram_logins_with_stored_keys_and_plain_passwords() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    let tern = env!("CARGO_BIN_EXE_tern");

    let hashed = Command::new(tern)
        .args(["passwd", "--scheme", "SCRAM-SHA-256"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .and_then(|mut child| {
            use std::io::Write as _;
            child.stdin.take().unwrap().write_all(b"pencil\n")?;
            child.wait_with_output()
        })
        .unwrap();
    assert!(hashed.status.success());
    let stored = String::from_utf8(hashed.stdout).unwrap();
    assert!(stored.starts_with("{SCRAM-SHA-256}4096,"), "{stored}");

    fs::write(
        root.join("users"),
        format!(
            // carol's password holds a soft hyphen, which SASLprep maps to nothing.
            "alice:{}::::::\nbob:{{PLAIN}}hunter2::::::\ncarol:{{PLAIN}}I\u{AD}X::::::\n",
            stored.trim()
        ),
    )
    .unwrap();
    let config = root.join("tern.toml");
    fs::write(
        &config,
        format!(
            "hostname = \"mx.test\"\ndomains = [\"mx.test\"]\ndata_dir = \"{root}/data\"\n\
             log = \"{root}/mail.log\"\n\n[accounts]\nfile = \"{root}/users\"\n\n\
             [mailbox]\npath = \"{root}/mail/%n/Maildir\"\n\n\
             [limits]\nauth_failure_delay = \"200ms\"\n\n\
             [[listener]]\nname = \"submission\"\nprotocol = \"smtp\"\n\
             address = \"127.0.0.1:0\"\nauth = \"required\"\nplaintext_auth = true\n",
            root = root.display()
        ),
    )
    .unwrap();

    let mut server = Server(
        Command::new(tern)
            .args(["serve", "--runtime", "blocking", "--config"])
            .arg(&config)
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    let mut stdout = BufReader::new(server.0.stdout.take().unwrap());
    let port = loop {
        let mut line = String::new();
        assert!(
            stdout.read_line(&mut line).unwrap() > 0,
            "tern exited before listening"
        );
        if let Some(address) = line.trim().strip_prefix("listening: submission on ") {
            break address.rsplit(':').next().unwrap().to_owned();
        }
    };

    let login = |user: &str, password: &str| {
        let out = Command::new("python3")
            .args(["-c", CLIENT, &port, user, password])
            .output()
            .expect("python3 must be installed (run .ci/run)");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(
            out.status.success(),
            "client failed (pip install scramp: run .ci/run):\n{stderr}"
        );
        String::from_utf8(out.stdout).unwrap()
    };

    let alice = login("alice", "pencil");
    assert!(
        alice.contains("250-AUTH PLAIN LOGIN SCRAM-SHA-256\n"),
        "{alice}"
    );
    assert!(
        alice.contains("server signature verified\n235 2.7.0 "),
        "{alice}"
    );

    let bob = login("bob", "hunter2");
    assert!(
        bob.contains("server signature verified\n235 2.7.0 "),
        "{bob}"
    );

    // The client prepares its password with SASLprep as RFC 5802 asks, and so does tern
    // with the stored one: "IX", and ROMAN NUMERAL NINE, are carol's password.
    for password in ["IX", "\u{2168}"] {
        let carol = login("carol", password);
        assert!(
            carol.contains("server signature verified\n235 2.7.0 "),
            "{password:?}: {carol}"
        );
    }

    for (user, password) in [("alice", "wrong"), ("nobody", "pencil")] {
        let out = login(user, password);
        assert!(out.contains("\n535 5.7.8 "), "{user}: {out}");
        assert!(!out.contains("235 "), "{user}: {out}");
    }

    let log = fs::read_to_string(root.join("mail.log")).unwrap();
    assert!(
        log.contains("SASL SCRAM-SHA-256 authentication failed"),
        "{log}"
    );
    assert!(!log.contains("pencil") && !log.contains("hunter2"), "{log}");
}

/// Kills the server when the test ends, whatever happened.
struct Server(Child);

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}
