//! Transcript tests for both machines, each fed whole, one byte at a time and split at every
//! offset, with identical output required.

use std::net::IpAddr;
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;

use super::*;
use crate::sasl::{
    AuthVerdict, Mechanism, ScramCredentials, ScramLookup, ScramNonce, ScramSecret, Secret,
};

/// Any origin will do: the virtual clock only moves when a test moves it.
fn origin() -> Instant {
    #[allow(clippy::disallowed_methods)]
    Instant::now()
}

fn pencil() -> ScramCredentials {
    static PENCIL: OnceLock<ScramCredentials> = OnceLock::new();
    PENCIL
        .get_or_init(|| {
            let salt = BASE64.decode("W22ZaJ0SNY7soEsUEjb6gQ==").unwrap();
            ScramCredentials::from_password("pencil", &salt, 4096)
        })
        .clone()
}

/// Runs `input` through fresh machines whole, byte by byte and split in two at every offset;
/// all transcripts must agree. Returns the whole run's.
fn split_invariant<H: Transcript>(make: impl Fn() -> H, input: &[u8]) -> H {
    let mut whole = make();
    whole.feed(input);
    whole.finish();

    let mut bytewise = make();
    for byte in input.chunks(1) {
        bytewise.feed(byte);
    }
    bytewise.finish();
    assert_eq!(bytewise.text(), whole.text(), "byte-by-byte differs");

    for split in 1..input.len() {
        let mut two = make();
        two.feed(&input[..split]);
        two.feed(&input[split..]);
        two.finish();
        assert_eq!(two.text(), whole.text(), "split at {split} differs");
    }
    whole
}

trait Transcript {
    fn feed(&mut self, input: &[u8]);
    fn finish(&mut self);
    fn text(&self) -> &str;
}

// ---- server ----

const HANDSHAKE: &str = "VERSION\t1\t2\nMECH\tPLAIN\tplaintext\nMECH\tLOGIN\tplaintext\n\
MECH\tSCRAM-SHA-256\tmutual-auth\nSPID\t4021\nCUID\t7\n\
COOKIE\t000102030405060708090a0b0c0d0e0f\nDONE\n";

/// What Postfix's xsasl_dovecot_server.c sends first.
const POSTFIX_HELLO: &str = "VERSION\t1\t0\nCPID\t31337\n";

fn server_config() -> ServerConfig {
    let mut config = ServerConfig::new(4021);
    config.mechanisms = vec![Mechanism::Plain, Mechanism::Login, Mechanism::ScramSha256];
    config.scram_secret = Some(ScramSecret::new(b"per-server secret".to_vec()));
    config
}

/// Plays tern's runtime behind the server: answers at once, records everything.
struct ServerHarness {
    server: Server,
    now: Instant,
    transcript: String,
    infos: Vec<RequestInfo>,
}

impl ServerHarness {
    fn new(config: ServerConfig) -> Self {
        let cookie: [u8; 16] = std::array::from_fn(|i| i as u8);
        let mut harness = ServerHarness {
            server: Server::new(Arc::new(config), 7, cookie),
            now: origin(),
            transcript: String::new(),
            infos: Vec::new(),
        };
        harness.drain();
        harness
    }

    fn drain(&mut self) {
        while let Some(output) = self.server.poll_output() {
            match output {
                ServerOutput::Send(bytes) => {
                    self.transcript.push_str(&String::from_utf8_lossy(&bytes));
                }
                ServerOutput::Authenticate {
                    id,
                    credentials,
                    info,
                } => {
                    self.infos.push(info);
                    let verdict = match (credentials.login.as_str(), credentials.password.expose())
                    {
                        ("alice", "secret") => AuthVerdict::Ok {
                            login: "alice@example.net".into(),
                        },
                        ("down", _) => AuthVerdict::TempFail,
                        _ => AuthVerdict::Fail,
                    };
                    self.server.handle_auth(self.now, id, verdict);
                }
                ServerOutput::LookupScram { id, login, info } => {
                    self.infos.push(info);
                    let lookup = match login.as_str() {
                        "user" => ScramLookup::Found {
                            account: "user@example.net".into(),
                            credentials: pencil(),
                        },
                        "down" => ScramLookup::TempFail,
                        _ => ScramLookup::UnknownUser,
                    };
                    let nonce = ScramNonce::new("%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0").unwrap();
                    self.server
                        .handle_scram_lookup(self.now, id, lookup, &nonce);
                }
                ServerOutput::Failed { mechanism, .. } => {
                    self.transcript.push_str(&format!("[failed {mechanism:?}]"));
                }
                ServerOutput::Close => self.transcript.push_str("[close]"),
            }
        }
    }
}

impl Transcript for ServerHarness {
    /// Feeds like a runtime: what the server leaves while it waits is fed again after the
    /// answers.
    fn feed(&mut self, mut input: &[u8]) {
        while !input.is_empty() {
            let used = self.server.receive(self.now, input);
            input = &input[used..];
            self.drain();
            assert!(used > 0 || !self.server.is_waiting(), "stuck");
        }
    }

    /// Lets every held failure go out.
    fn finish(&mut self) {
        while let Some(at) = self.server.poll_timeout() {
            self.now = self.now.max(at);
            self.server.handle_timeout(self.now);
            self.drain();
        }
    }

    fn text(&self) -> &str {
        &self.transcript
    }
}

fn serve(input: &str) -> ServerHarness {
    split_invariant(|| ServerHarness::new(server_config()), input.as_bytes())
}

#[test]
fn postfix_conversation() {
    // The lines xsasl_dovecot_server.c writes: AUTH with service, nologin, lip, rip, then
    // secured under TLS, and resp= last; CONT for each further response.
    let h = serve(&format!(
        "{POSTFIX_HELLO}\
         AUTH\t1\tPLAIN\tservice=smtp\tnologin\tlip=192.0.2.1\trip=203.0.113.9\tsecured\t\
         resp=AGFsaWNlAHNlY3JldA==\n\
         AUTH\t2\tLOGIN\tservice=smtp\tnologin\tlip=192.0.2.1\trip=203.0.113.9\n\
         CONT\t2\tYWxpY2U=\nCONT\t2\tc2VjcmV0\n\
         AUTH\t3\tPLAIN\tservice=smtp\tnologin\tlip=192.0.2.1\trip=203.0.113.9\t\
         resp=AGFsaWNlAHdyb25n\n\
         AUTH\t4\tPLAIN\tservice=smtp\tnologin\tresp=AGRvd24AeA==\n\
         AUTH\t5\tPLAIN\tservice=smtp\tnologin\n\
         CONT\t5\tAGFsaWNlAHNlY3JldA==\n"
    ));
    assert_eq!(
        h.transcript,
        format!(
            "{HANDSHAKE}OK\t1\tuser=alice@example.net\n\
             CONT\t2\tVXNlcm5hbWU6\nCONT\t2\tUGFzc3dvcmQ6\nOK\t2\tuser=alice@example.net\n\
             FAIL\t4\tuser=down\tcode=temp_fail\ttemp\n\
             CONT\t5\t\nOK\t5\tuser=alice@example.net\n\
             FAIL\t3\tuser=alice\n"
        )
    );
    assert_eq!(
        h.infos[0],
        RequestInfo {
            service: "smtp".into(),
            local_ip: Some("192.0.2.1".into()),
            remote_ip: Some("203.0.113.9".into()),
            secured: true,
        }
    );
    assert!(!h.infos[1].secured);
}

#[test]
fn failures_wait_for_the_delay() {
    let mut h = ServerHarness::new(server_config());
    h.feed(
        format!("{POSTFIX_HELLO}AUTH\t1\tPLAIN\tservice=smtp\tresp=AGFsaWNlAHdyb25n\n").as_bytes(),
    );
    // The failure is held; a success for another request does not wait behind it.
    h.feed(b"AUTH\t2\tPLAIN\tservice=smtp\tresp=AGFsaWNlAHNlY3JldA==\n");
    assert!(
        h.transcript
            .ends_with("DONE\nOK\t2\tuser=alice@example.net\n")
    );
    let start = h.now;
    assert_eq!(
        h.server.poll_timeout(),
        Some(start + Duration::from_secs(2))
    );
    h.server.handle_timeout(start + Duration::from_millis(1999));
    h.drain();
    assert!(!h.transcript.contains("FAIL"));
    h.server.handle_timeout(start + Duration::from_secs(2));
    h.drain();
    assert!(h.transcript.ends_with("FAIL\t1\tuser=alice\n"));
    assert_eq!(h.server.poll_timeout(), None);

    // With no delay configured, at once.
    let mut config = server_config();
    config.failure_delay = Duration::ZERO;
    let mut h = ServerHarness::new(config);
    h.feed(
        format!("{POSTFIX_HELLO}AUTH\t1\tPLAIN\tservice=smtp\tresp=AGFsaWNlAHdyb25n\n").as_bytes(),
    );
    assert!(h.transcript.ends_with("DONE\nFAIL\t1\tuser=alice\n"));
}

#[test]
fn scram_over_the_dovecot_protocol() {
    let client_first = "biwsbj11c2VyLHI9ck9wck5HZndFYmVSV2diTkVrcU8=";
    let server_first = "cj1yT3ByTkdmd0ViZVJXZ2JORWtxTyVodllEcFdVYTJSYVRDQWZ1eEZJbGopaE5sRiRrMCxzPVcyMlphSjBTTlk3c29Fc1VFamI2Z1E9PSxpPTQwOTY=";
    let client_final = "Yz1iaXdzLHI9ck9wck5HZndFYmVSV2diTkVrcU8laHZZRHBXVWEyUmFUQ0FmdXhGSWxqKWhObEYkazAscD1kSHpiWmFwV0lrNGpVaE4rVXRlOXl0YWc5empmTUhnc3FtbWl6N0FuZFZRPQ==";
    let server_final = "dj02cnJpVFJCaTIzV3BSUi93dHVwK21NaFVaVW4vZEI1bkxUSlJzamw5NUc0PQ==";
    let unknown_first = "biwsbj1ub2JvZHkscj1yT3ByTkdmd0ViZVJXZ2JORWtxTw==";
    let h = serve(&format!(
        "{POSTFIX_HELLO}\
         AUTH\t1\tSCRAM-SHA-256\tservice=smtp\n\
         CONT\t1\t{client_first}\nCONT\t1\t{client_final}\n\
         AUTH\t2\tSCRAM-SHA-256\tservice=smtp\tresp={unknown_first}\n\
         CONT\t2\t{client_final}\n\
         AUTH\t3\tSCRAM-SHA-256\tservice=smtp\tresp=biwsbj1kb3duLHI9YWJj\n"
    ));
    let rest = h.transcript.strip_prefix(HANDSHAKE).unwrap();
    let lines: Vec<&str> = rest.lines().collect();
    assert_eq!(
        lines[..3],
        [
            "CONT\t1\t".to_owned(),
            format!("CONT\t1\t{server_first}"),
            format!("OK\t1\tuser=user@example.net\tresp={server_final}")
        ]
    );
    // The unknown user gets a server-first of the same shape, with a stand-in salt.
    let unknown = lines[3].strip_prefix("CONT\t2\t").unwrap();
    let unknown = String::from_utf8(BASE64.decode(unknown).unwrap()).unwrap();
    assert!(
        unknown.starts_with("r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,s=")
            && unknown.ends_with("==,i=4096"),
        "{unknown}"
    );
    assert!(!unknown.contains("W22ZaJ0SNY7soEsUEjb6gQ"));
    // The wrong proof of the unknown user is reported for the log before its delayed FAIL.
    assert_eq!(
        lines[4..],
        [
            "[failed ScramSha256]FAIL\t3\tuser=down\tcode=temp_fail\ttemp",
            "FAIL\t2\tuser=nobody"
        ]
    );

    // Without a secret for unknown users, SCRAM is neither announced nor accepted.
    let mut config = server_config();
    config.scram_secret = None;
    let t = split_invariant(
        || ServerHarness::new(config.clone()),
        format!("{POSTFIX_HELLO}AUTH\t1\tSCRAM-SHA-256\tservice=smtp\nCPID\t1\n").as_bytes(),
    )
    .transcript;
    assert!(!t.contains("SCRAM"));
    assert!(t.ends_with("DONE\n[close]"), "{t}");
}

#[test]
fn concurrent_requests_interleave() {
    let h = serve(&format!(
        "{POSTFIX_HELLO}\
         AUTH\t7\tLOGIN\tservice=smtp\n\
         AUTH\t8\tLOGIN\tservice=smtp\tresp=YWxpY2U=\n\
         CONT\t7\tYWxpY2U=\n\
         AUTH\t9\tPLAIN\tservice=smtp\tresp=AGFsaWNlAHNlY3JldA==\n\
         CONT\t8\tc2VjcmV0\nCONT\t7\tc2VjcmV0\n"
    ));
    assert_eq!(
        h.transcript,
        format!(
            "{HANDSHAKE}CONT\t7\tVXNlcm5hbWU6\nCONT\t8\tUGFzc3dvcmQ6\nCONT\t7\tUGFzc3dvcmQ6\n\
             OK\t9\tuser=alice@example.net\nOK\t8\tuser=alice@example.net\n\
             OK\t7\tuser=alice@example.net\n"
        )
    );
}

#[test]
fn unknown_ids_bad_data_and_escaping() {
    let h = serve(&format!(
        "{POSTFIX_HELLO}\
         CONT\t99\tYWxpY2U=\n\
         AUTH\t1\tLOGIN\tservice=smtp\nCANCEL\t1\nCONT\t1\tYWxpY2U=\n\
         AUTH\t2\tLOGIN\tservice=smtp\nCONT\t2\t!!!\n\
         AUTH\t3\tPLAIN\tservice=smtp\tresp=%%%\n\
         AUTH\t4\tPLAIN\tservice=sm\x01ttp\trip=1\x01t2\tresp=AGFsCWljZQB4\n\
         AUTH\t5\tPLAIN\tservice=smtp\tresp=Ym9iAGFsaWNlAHNlY3JldA==\n\
         AUTH\t6\tPLAIN\tservice=smtp\tresp=AGFsaWNl\n\
         AUTH\t7\tplain\tservice=smtp\tfuture-flag\tx=y\tresp=\n"
    ));
    assert_eq!(
        h.transcript,
        format!(
            "{HANDSHAKE}FAIL\t99\treason=Authentication request timed out\n\
             CONT\t1\tVXNlcm5hbWU6\nFAIL\t1\treason=Authentication request timed out\n\
             CONT\t2\tVXNlcm5hbWU6\nFAIL\t2\treason=Invalid base64 data in continued response\n\
             FAIL\t3\treason=Invalid base64 data in initial response\n\
             [failed Plain][failed Plain]CONT\t7\t\n\
             FAIL\t4\tuser=al\x01tice\nFAIL\t5\tuser=alice\nFAIL\t6\n"
        )
    );
    // Requests 5 (acting as another user) and 6 (no password) were failed by the machine,
    // and reported; request 4's wrong password was the runtime's verdict, and is not.
    // Escaped parameters arrive unescaped.
    assert_eq!(h.infos[0].service, "sm\ttp");
    assert_eq!(h.infos[0].remote_ip.as_deref(), Some("1\t2"));
}

#[test]
fn protocol_violations_close_the_connection() {
    let auth = "AUTH\t1\tPLAIN\tservice=smtp\tresp=AGFsaWNlAHNlY3JldA==\n";
    for bad in [
        format!("CPID\t1\n{auth}"),
        format!("VERSION\t2\t0\nCPID\t1\n{auth}"),
        format!("VERSION\t1\t0\nCPID\t0\n{auth}"),
        "VERSION\t1\t0\nAUTH\t1\tPLAIN\tservice=smtp\n".to_owned(),
        format!("{POSTFIX_HELLO}FOO\t1\n{auth}"),
        format!("{POSTFIX_HELLO}AUTH\t1\tPLAIN\tresp=AGFsaWNlAHNlY3JldA==\n{auth}"),
        format!("{POSTFIX_HELLO}AUTH\t1\tCRAM-MD5\tservice=smtp\n{auth}"),
        format!("{POSTFIX_HELLO}AUTH\tx\tPLAIN\tservice=smtp\n{auth}"),
        format!("{POSTFIX_HELLO}AUTH\t1\n{auth}"),
        format!("{POSTFIX_HELLO}AUTH\t1\tPLAIN\tresp=AA==\tservice=smtp\n{auth}"),
        format!(
            "{POSTFIX_HELLO}AUTH\t1\tLOGIN\tservice=smtp\nAUTH\t1\tLOGIN\tservice=smtp\n{auth}"
        ),
        format!("{POSTFIX_HELLO}CONT\t1\n{auth}"),
        format!("{POSTFIX_HELLO}CANCEL\tx\n{auth}"),
        format!("{POSTFIX_HELLO}\n{auth}"),
    ] {
        let t = serve(&bad).transcript;
        assert!(
            t.ends_with("[close]") && !t.contains("OK\t1"),
            "{bad:?} gave {t:?}"
        );
    }

    // An overlong line; nothing after it is read.
    let long = "A".repeat(MAX_LINE + 1);
    let mut h = ServerHarness::new(server_config());
    h.feed(
        format!(
            "{POSTFIX_HELLO}AUTH\t1\tPLAIN\tservice=smtp\tresp={long}\n{}",
            "AUTH\t2\tPLAIN\tservice=smtp\tresp=AGFsaWNlAHNlY3JldA==\n"
        )
        .as_bytes(),
    );
    assert!(h.transcript.ends_with("DONE\n[close]"));
    assert!(h.server.is_closed());
}

#[test]
fn no_secret_in_debug_output() {
    let mut server = Server::new(Arc::new(server_config()), 1, [0; 16]);
    let now = origin();
    server.receive(
        now,
        format!("{POSTFIX_HELLO}AUTH\t1\tPLAIN\tservice=smtp\tresp=AGFsaWNlAHRvcHNlY3JldA==\n")
            .as_bytes(),
    );
    let outputs: Vec<ServerOutput> = std::iter::from_fn(|| server.poll_output()).collect();
    let text = format!("{outputs:?} {server:?}");
    assert!(text.contains("Authenticate"));
    assert!(!text.contains("topsecret"), "{text}");
}

// ---- client ----

const SERVER_HELLO: &str = "VERSION\t1\t2\nMECH\tPLAIN\tplaintext\nMECH\tLOGIN\tplaintext\n\
SPID\t123\nCUID\t9\nCOOKIE\t0123456789abcdef0123456789abcdef\nDONE\n";

fn request(login: &str, password: &str) -> AuthRequest {
    AuthRequest {
        login: login.into(),
        password: Secret::new(password.into()),
        authzid: String::new(),
        local_ip: None,
        remote_ip: None,
        secured: false,
    }
}

/// Plays tern's runtime in front of the client; requests are made before any input.
struct ClientHarness {
    client: Client,
    now: Instant,
    transcript: String,
}

impl ClientHarness {
    fn new(requests: &[AuthRequest]) -> Self {
        let now = origin();
        let mut client = Client::new(ClientConfig::new(4242), now);
        for (n, request) in requests.iter().enumerate() {
            assert_eq!(
                client.authenticate(now, request.clone()),
                RequestId(n as u32 + 1)
            );
        }
        let mut harness = ClientHarness {
            client,
            now,
            transcript: String::new(),
        };
        harness.drain();
        harness
    }

    fn drain(&mut self) {
        while let Some(output) = self.client.poll_output() {
            let text = match output {
                ClientOutput::Send(bytes) => String::from_utf8_lossy(&bytes).into_owned(),
                ClientOutput::Ready { mechanisms } => format!("[ready {}]", mechanisms.join(" ")),
                ClientOutput::Result { id, result } => format!("[{id}: {result:?}]"),
                ClientOutput::Error(error) => format!("[error: {error}]"),
                ClientOutput::Close => "[close]".into(),
            };
            self.transcript.push_str(&text);
        }
    }
}

impl Transcript for ClientHarness {
    fn feed(&mut self, input: &[u8]) {
        assert_eq!(self.client.receive(self.now, input), input.len());
        self.drain();
    }

    fn finish(&mut self) {}

    fn text(&self) -> &str {
        &self.transcript
    }
}

fn ask(requests: &[AuthRequest], server_says: &str) -> String {
    split_invariant(|| ClientHarness::new(requests), server_says.as_bytes()).transcript
}

#[test]
fn client_conversation() {
    let mut first = request("alice", "secret");
    first.remote_ip = Some("203.0.113.9".parse::<IpAddr>().unwrap());
    first.local_ip = Some("192.0.2.1".parse::<IpAddr>().unwrap());
    first.secured = true;
    let requests = [
        first,
        request("bob", "wrong"),
        request("carol", "x"),
        request("dave", "x"),
        request("erin", "x"),
        request("al\tice", "x"),
    ];
    let t = ask(
        &requests,
        &format!(
            "{SERVER_HELLO}OK\t1\tuser=alice@example.net\tsome=extra\n\
             FAIL\t2\tuser=bob\treason=Password mismatch\n\
             FAIL\t3\tuser=carol\tcode=temp_fail\n\
             OK\t4\tuser=dave\tnologin\treason=Account disabled\n\
             OK\t99\tuser=mallory\nUNKNOWN\tx\n\
             FAIL\t5\ttemp\nCONT\t6\t\nCONT\t6\t\n"
        ),
    );
    let auth =
        |id: u32, b64: &str| format!("AUTH\t{id}\tPLAIN\tservice=smtp\tnologin\tresp={b64}\n");
    assert_eq!(
        t,
        format!(
            "VERSION\t1\t2\nCPID\t4242\n[ready PLAIN LOGIN]\
             AUTH\t1\tPLAIN\tservice=smtp\tnologin\tlip=192.0.2.1\trip=203.0.113.9\tsecured\t\
             resp=AGFsaWNlAHNlY3JldA==\n{}{}{}{}{}\
             [1: Ok {{ user: \"alice@example.net\" }}]\
             [2: Fail {{ reason: Some(\"Password mismatch\") }}]\
             [3: TempFail {{ reason: None }}]\
             [4: Fail {{ reason: Some(\"Account disabled\") }}]\
             [5: TempFail {{ reason: None }}]\
             CONT\t6\tAGFsCWljZQB4\nCANCEL\t6\n\
             [6: TempFail {{ reason: Some(\"unexpected challenge for PLAIN\") }}]",
            auth(2, "AGJvYgB3cm9uZw=="),
            auth(3, "AGNhcm9sAHg="),
            auth(4, "AGRhdmUAeA=="),
            auth(5, "AGVyaW4AeA=="),
            auth(6, "AGFsCWljZQB4"),
        )
    );
    let verdicts: Vec<AuthVerdict> = [
        AuthResult::Ok { user: "a".into() },
        AuthResult::Fail { reason: None },
        AuthResult::TempFail { reason: None },
    ]
    .iter()
    .map(AuthResult::verdict)
    .collect();
    assert_eq!(
        verdicts,
        [
            AuthVerdict::Ok { login: "a".into() },
            AuthVerdict::Fail,
            AuthVerdict::TempFail
        ]
    );
}

#[test]
fn client_connection_failures_fail_every_open_request() {
    let two = [request("alice", "secret"), request("bob", "x")];
    let temp = |id: u32, why: &str| format!("[{id}: TempFail {{ reason: {:?} }}]", Some(why));

    // Another major version, before the handshake finished: the queued requests fail.
    let t = ask(&two, "VERSION\t2\t0\nDONE\n");
    let why = "auth server speaks another protocol version";
    assert_eq!(
        t,
        format!(
            "VERSION\t1\t2\nCPID\t4242\n{}{}[error: {why}][close]",
            temp(1, why),
            temp(2, why)
        )
    );

    // No PLAIN.
    let t = ask(
        &two,
        "VERSION\t1\t2\nMECH\tLOGIN\tplaintext\nDONE\nOK\t1\tuser=x\n",
    );
    assert!(
        t.ends_with("[error: auth server does not offer PLAIN][close]"),
        "{t}"
    );
    assert!(!t.contains("AUTH"));

    // A reply without an id, after the requests went out.
    let t = ask(&two, &format!("{SERVER_HELLO}OK\t1\tuser=alice\nFAIL\tx\n"));
    let why = "malformed \"FAIL\" line from auth server";
    assert!(
        t.ends_with(&format!(
            "[1: Ok {{ user: \"alice\" }}]{}[error: {why}][close]",
            temp(2, why)
        )),
        "{t}"
    );

    // An overlong line.
    let t = ask(
        &two,
        &format!("{SERVER_HELLO}{}\n", "X".repeat(MAX_LINE + 1)),
    );
    assert!(
        t.ends_with("[error: auth server sent an overlong line][close]"),
        "{t}"
    );

    // The server closes; later requests fail at once.
    let mut h = ClientHarness::new(&two);
    h.feed(SERVER_HELLO.as_bytes());
    h.client.handle_eof();
    let id = h.client.authenticate(h.now, request("carol", "x"));
    h.drain();
    let why = "auth server closed the connection";
    assert!(
        h.transcript.ends_with(&format!(
            "{}{}[error: {why}][close]{}",
            temp(1, why),
            temp(2, why),
            temp(id.0, "connection to auth server closed")
        )),
        "{}",
        h.transcript
    );
    assert!(h.client.is_closed());
}

#[test]
fn client_timeouts() {
    // No handshake within the timeout.
    let mut h = ClientHarness::new(&[request("alice", "secret")]);
    let deadline = h.client.poll_timeout().unwrap();
    assert_eq!(deadline, h.now + Duration::from_secs(30));
    h.client.handle_timeout(deadline - Duration::from_millis(1));
    h.drain();
    assert!(!h.transcript.contains("error"));
    h.client.handle_timeout(deadline);
    h.drain();
    assert!(
        h.transcript
            .ends_with("[error: auth server did not answer in time][close]")
    );

    // A request that is never answered.
    let mut h = ClientHarness::new(&[]);
    h.feed(SERVER_HELLO.as_bytes());
    assert_eq!(h.client.poll_timeout(), None);
    h.now += Duration::from_secs(10);
    let id = h.client.authenticate(h.now, request("alice", "secret"));
    assert_eq!(
        h.client.poll_timeout(),
        Some(h.now + Duration::from_secs(30))
    );
    h.feed(format!("OK\t{id}\tuser=alice\n").as_bytes());
    assert_eq!(h.client.poll_timeout(), None);
    let id = h.client.authenticate(h.now, request("alice", "secret"));
    h.client.handle_timeout(h.now + Duration::from_secs(30));
    h.drain();
    assert!(h.transcript.contains(&format!("[{id}: TempFail")));
}

#[test]
fn client_debug_output_has_no_password() {
    let now = origin();
    let mut client = Client::new(ClientConfig::new(1), now);
    client.authenticate(now, request("alice", "topsecret"));
    client.receive(now, SERVER_HELLO.as_bytes());
    let text = format!("{client:?} {:?}", request("alice", "topsecret"));
    assert!(!text.contains("topsecret"), "{text}");
    // The bytes on the wire carry it in base64: Debug shows only their length.
    let outputs: Vec<ClientOutput> = std::iter::from_fn(|| client.poll_output()).collect();
    let ClientOutput::Send(bytes) = &outputs[2] else {
        panic!("expected the AUTH line, got {outputs:?}");
    };
    assert!(String::from_utf8_lossy(bytes).contains(&BASE64.encode(b"\0alice\0topsecret")));
    assert_eq!(
        format!("{outputs:?}"),
        format!(
            "[Send(19 bytes), Ready {{ mechanisms: [\"PLAIN\", \"LOGIN\"] }}, Send({} bytes)]",
            bytes.len()
        )
    );
}

// ---- anything a peer may send ----

/// Lines built from the protocol's own words, so random input reaches the deeper states.
fn protocol_noise() -> impl proptest::strategy::Strategy<Value = Vec<u8>> {
    use proptest::prelude::*;
    let token = prop_oneof![
        Just("AUTH\t"),
        Just("CONT\t"),
        Just("CANCEL\t"),
        Just("OK\t"),
        Just("FAIL\t"),
        Just("MECH\t"),
        Just("DONE\n"),
        Just("1\t"),
        Just("2\t"),
        Just("PLAIN\t"),
        Just("LOGIN\t"),
        Just("SCRAM-SHA-256\t"),
        Just("service=smtp\t"),
        Just("user=alice\t"),
        Just("nologin\t"),
        Just("code=temp_fail\t"),
        Just("resp="),
        Just("AGFsaWNlAHNlY3JldA=="),
        Just("biwsbj11c2VyLHI9YWJj"),
        Just("YWxpY2U="),
        Just("\x01"),
        Just("\t"),
        Just("\n"),
        Just("\r\n"),
        Just("\u{0}"),
    ];
    proptest::collection::vec(token, 0..60).prop_map(|tokens| tokens.concat().into_bytes())
}

proptest::proptest! {
    #[test]
    fn server_never_panics(noise in protocol_noise(), raw in proptest::collection::vec(0u8.., 0..200)) {
        for input in [noise.clone(), raw] {
            let mut h = ServerHarness::new(server_config());
            h.feed(POSTFIX_HELLO.as_bytes());
            h.feed(&input);
            h.finish();
            proptest::prop_assert!(h.transcript.starts_with(HANDSHAKE));
        }
    }

    #[test]
    fn client_never_panics(noise in protocol_noise(), raw in proptest::collection::vec(0u8.., 0..200)) {
        for (hello, input) in [("", noise.clone()), (SERVER_HELLO, noise), ("", raw)] {
            let mut h = ClientHarness::new(&[request("alice", "secret"), request("bob", "x")]);
            h.feed(hello.as_bytes());
            h.feed(&input);
            h.client.handle_eof();
            h.drain();
            // Every request is answered exactly once, whatever the server said.
            for id in [1, 2] {
                proptest::prop_assert_eq!(h.transcript.matches(&format!("[{id}: ")).count(), 1);
            }
        }
    }
}
