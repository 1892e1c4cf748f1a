//! Tests of the accounts table, add_user and mailbox paths.

use super::*;

// From the reference argon2 CLI, htpasswd and glibc (see password.rs), all "correct horse".
const ARGON2ID: &str = "{ARGON2ID}$argon2id$v=19$m=64,t=1,p=1$dGVybi1zYWx0LTAxMjM$\
                        nnYaDeT3Xg94egg3+8+PsmZKH3SORaNAQlC9w/jOd0E";
const BCRYPT: &str = "{BLF-CRYPT}$2y$05$.u7.LNA3vQRf6NXKlctPduCiCqHMhIYEEw9tBWVdM.CNauhqN4KRy";
const SHA512: &str = "{SHA512-CRYPT}$6$kR4nd0mSalt$OSg8iet2TlDoUinPqe6YL14PTF5wLNIg5KWXczy98v\
                      DFd4KRUF8Z3tW70UIetrNnh.1.YmU4lOs3hirXhBinY0";
const SHA256: &str =
    "{SHA256-CRYPT}$5$abcdEFGH12345678$cn92Xf23wx7VRm3nt6JN7XIZE3drMVzpGPFFN1VvWc4";

fn write(dir: &Path, text: &str) -> PathBuf {
    let file = dir.join("users");
    fs::write(&file, text).unwrap();
    file
}

fn account(user: &str, home: Option<&str>) -> Account {
    Account {
        user: user.into(),
        password: "{PLAIN}x".into(),
        uid: None,
        gid: None,
        gecos: String::new(),
        home: home.map(PathBuf::from),
        shell: String::new(),
        extra: Vec::new(),
    }
}

#[test]
fn accounts_are_shareable() {
    fn shareable<T: Send + Sync + 'static>() {}
    shareable::<Accounts>();
}

#[test]
fn full_and_short_lines_comments_and_extra_fields() {
    let dir = tempfile::tempdir().unwrap();
    let file = write(
        dir.path(),
        "# a comment\n\
         \n\
         alice@example.net:{PLAIN}pw:1000:1001:Alice A:/home/alice:/bin/sh:\
         userdb_quota_rule=*:storage=1G nologin  userdb_mail=maildir:~/M\n\
         bob:{PLAIN}pw\n\
         carol:{PLAIN}pw::::::\n\
         \x20  # indented comment\n\
         dave:{PLAIN}pw:5:\r\n",
    );
    let accounts = Accounts::open(&file, "%u").unwrap();
    let users = accounts.users();
    assert_eq!(users.len(), 4);

    let alice = &users[0];
    assert_eq!(alice.user, "alice@example.net");
    assert_eq!(alice.password, "{PLAIN}pw");
    assert_eq!((alice.uid, alice.gid), (Some(1000), Some(1001)));
    assert_eq!(alice.gecos, "Alice A");
    assert_eq!(alice.home, Some(PathBuf::from("/home/alice")));
    assert_eq!(alice.shell, "/bin/sh");
    let extra: Vec<(&str, &str)> = alice
        .extra
        .iter()
        .map(|(k, v)| (k.as_str(), v.as_str()))
        .collect();
    assert_eq!(
        extra,
        [
            ("userdb_quota_rule", "*:storage=1G"),
            ("nologin", ""),
            ("userdb_mail", "maildir:~/M")
        ]
    );

    for short in &users[1..3] {
        assert_eq!(short.password, "{PLAIN}pw");
        assert_eq!(
            (short.uid, short.gid, short.home.as_ref()),
            (None, None, None)
        );
        assert!(short.gecos.is_empty() && short.shell.is_empty() && short.extra.is_empty());
    }
    assert_eq!(users[3].user, "dave");
    assert_eq!(users[3].password, "{PLAIN}pw");
    assert_eq!((users[3].uid, users[3].gid), (Some(5), None));
}

#[test]
fn malformed_lines_are_skipped_and_the_first_duplicate_wins() {
    let dir = tempfile::tempdir().unwrap();
    let mut text = b"no-password-field\n:{PLAIN}x\nerin:{PLAIN}pw:abc\n".to_vec();
    text.extend_from_slice(b"bad\xff:{PLAIN}x\nfrank:{PLAIN}first\nfrank:{PLAIN}second\n");
    text.extend_from_slice(b"gina:{PLAIN}pw");
    let file = dir.path().join("users");
    fs::write(&file, text).unwrap();

    let accounts = Accounts::open(&file, "%u").unwrap();
    let names: Vec<String> = accounts.users().into_iter().map(|a| a.user).collect();
    assert_eq!(names, ["frank", "gina"]);
    assert_eq!(accounts.lookup("frank").unwrap().password, "{PLAIN}first");
    assert!(accounts.lookup("erin").is_none());
}

#[test]
fn missing_file_error_names_it() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("nope");
    let error = Accounts::open(&file, "%u")
        .err()
        .expect("missing file must fail");
    assert_eq!(error.source.kind(), io::ErrorKind::NotFound);
    assert!(
        error.to_string().contains(&file.display().to_string()),
        "{error}"
    );
}

#[test]
fn username_format_variants() {
    let dir = tempfile::tempdir().unwrap();
    let file = write(dir.path(), "alice:{PLAIN}a\nbob@example.net:{PLAIN}b\n");
    let key = |format: &str, login: &str| Accounts::open(&file, format).unwrap().lookup_key(login);

    assert_eq!(key("%Ln", "Alice@Example.NET"), "alice");
    assert_eq!(key("%n", "Alice@Example.NET"), "Alice");
    assert_eq!(key("%n@%d", "bob@example.net"), "bob@example.net");
    assert_eq!(key("%n@%d", "bob"), "bob@");
    assert_eq!(key("%Lu", "Bob@Example.Net"), "bob@example.net");
    assert_eq!(key("%u", "Bob@Example.Net"), "Bob@Example.Net");
    assert_eq!(key("%Ld", "Bob@Example.Net"), "example.net");
    assert_eq!(key("%n@%Ld", "a@b@C"), "a@b@c");
    assert_eq!(key("100%% %x %L %Lq %", "u@d"), "100% %x %L %Lq %");
    assert_eq!(key("ÄÖ-%Lu", "ÉMILE@x"), "ÄÖ-émile@x");

    let accounts = Accounts::open(&file, "%Ln").unwrap();
    assert_eq!(
        accounts.lookup("ALICE@anywhere.example").unwrap().user,
        "alice"
    );
    assert!(accounts.lookup("bob@example.net").is_none());
    let accounts = Accounts::open(&file, "%Lu").unwrap();
    assert_eq!(
        accounts.lookup("Bob@Example.NET").unwrap().user,
        "bob@example.net"
    );
    assert!(accounts.lookup("alice@example.net").is_none());
}

#[test]
fn verify_each_scheme() {
    let dir = tempfile::tempdir().unwrap();
    let text = format!(
        "argon:{ARGON2ID}\nblf:{BCRYPT}\nsha512:{SHA512}\nsha256:{SHA256}\n\
         crypt:{}\nplain:{{PLAIN}}correct horse\n",
        SHA512.trim_start_matches("{SHA512-CRYPT}")
    );
    let file = write(dir.path(), &text);
    let accounts = Accounts::open(&file, "%Ln").unwrap();

    for user in ["argon", "blf", "sha512", "sha256", "crypt", "plain"] {
        let login = format!("{}@example.net", user.to_uppercase());
        match accounts.verify(&login, "correct horse") {
            Verdict::Ok(account) => assert_eq!(account.user, user),
            other => panic!("{user}: {other:?}"),
        }
        assert_eq!(
            accounts.verify(&login, "correct horsE"),
            Verdict::Fail,
            "{user}"
        );
        assert_eq!(accounts.verify(&login, ""), Verdict::Fail, "{user}");
    }
    assert_eq!(accounts.verify("nobody", "correct horse"), Verdict::Fail);
}

#[test]
fn broken_hashes_are_tempfail_and_nologin_or_locked_fail() {
    let dir = tempfile::tempdir().unwrap();
    let file = write(
        dir.path(),
        "md5:{MD5}abc\nbroken:{SHA512-CRYPT}$6$x\nlocked:!\nempty:\n\
         closed:{PLAIN}pw::::::nologin\n",
    );
    let accounts = Accounts::open(&file, "%u").unwrap();
    assert_eq!(accounts.verify("md5", "abc"), Verdict::TempFail);
    assert_eq!(accounts.verify("broken", "x"), Verdict::TempFail);
    assert_eq!(accounts.verify("locked", ""), Verdict::Fail);
    assert_eq!(accounts.verify("empty", ""), Verdict::Fail);
    assert_eq!(accounts.verify("closed", "pw"), Verdict::Fail);
    assert_eq!(accounts.verify("closed", "wrong"), Verdict::Fail);
}

#[test]
fn unknown_user_is_checked_against_a_real_hash() {
    let dir = tempfile::tempdir().unwrap();
    let file = write(
        dir.path(),
        &format!("p:{{PLAIN}}x\nbad:{{MD5}}y\nb:{BCRYPT}\n"),
    );
    let accounts = Accounts::open(&file, "%u").unwrap();
    let dummy = accounts.state.read().unwrap().table.dummy.clone();
    assert_eq!(dummy.as_deref(), Some(BCRYPT));
    assert_eq!(accounts.verify("nobody", "correct horse"), Verdict::Fail);

    // No hashed password in the file: the Argon2id fallback, at hash_password's costs.
    let file = write(dir.path(), "p:{PLAIN}x\n");
    let accounts = Accounts::open(&file, "%u").unwrap();
    assert!(accounts.state.read().unwrap().table.dummy.is_none());
    assert_eq!(accounts.verify("nobody", "x"), Verdict::Fail);
    let fallback = fallback_dummy();
    assert!(
        fallback.starts_with("{ARGON2ID}$argon2id$v=19$m=65536,t=3,p=1$"),
        "{fallback}"
    );
}

#[test]
fn file_is_reread_when_it_changes() {
    let dir = tempfile::tempdir().unwrap();
    let file = write(dir.path(), "alice:{PLAIN}a\n");
    let accounts = Accounts::open(&file, "%u").unwrap();
    assert!(accounts.lookup("alice").is_some());
    assert!(accounts.lookup("bob").is_none());

    // Replaced by rename, as editors and add_user do.
    let next = dir.path().join("users.new");
    fs::write(&next, "alice:{PLAIN}a\nbob:{PLAIN}b\n").unwrap();
    fs::rename(&next, &file).unwrap();
    assert_eq!(accounts.lookup("bob").unwrap().password, "{PLAIN}b");

    // Rewritten in place with the same size: only the mtime tells.
    fs::write(&file, "alice:{PLAIN}A\nbob:{PLAIN}B\n").unwrap();
    assert_eq!(accounts.lookup("bob").unwrap().password, "{PLAIN}B");
    assert_eq!(
        accounts.verify("alice", "A"),
        Verdict::Ok(accounts.lookup("alice").unwrap())
    );

    // Gone or unreadable: the accounts loaded before stay.
    fs::remove_file(&file).unwrap();
    assert!(accounts.lookup("bob").is_some());
    assert_eq!(accounts.users().len(), 2);
    fs::create_dir(&file).unwrap();
    assert!(accounts.lookup("bob").is_some());
    fs::remove_dir(&file).unwrap();

    fs::write(&file, "carol:{PLAIN}c\n").unwrap();
    assert!(accounts.lookup("carol").is_some());
    assert!(accounts.lookup("bob").is_none());
}

#[test]
fn add_user_creates_the_file_with_mode_0600() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("users");
    add_user(&file, "alice", "{PLAIN}a").unwrap();
    assert_eq!(fs::read_to_string(&file).unwrap(), "alice:{PLAIN}a\n");
    assert_eq!(
        fs::metadata(&file).unwrap().permissions().mode() & 0o777,
        0o600
    );

    add_user(&file, "bob@example.net", SHA256).unwrap();
    let accounts = Accounts::open(&file, "%Lu").unwrap();
    assert!(matches!(
        accounts.verify("Bob@example.net", "correct horse"),
        Verdict::Ok(_)
    ));
    let leftovers = fs::read_dir(dir.path()).unwrap().count();
    assert_eq!(leftovers, 1, "temporary file left behind");
}

#[test]
fn add_user_replaces_the_password_and_keeps_fields_mode_and_other_lines() {
    let dir = tempfile::tempdir().unwrap();
    let before = "# users\r\nalice:{PLAIN}old:1000:1000:Alice:/home/alice::nologin\r\n\
                  #bob:{PLAIN}commented\n\
                  bob:{PLAIN}b\n\
                  alice:{PLAIN}duplicate\n\
                  carol";
    let file = write(dir.path(), before);
    fs::set_permissions(&file, fs::Permissions::from_mode(0o640)).unwrap();

    add_user(&file, "alice", "{PLAIN}new").unwrap();
    add_user(&file, "bob", "{PLAIN}b2").unwrap();
    add_user(&file, "carol", "{PLAIN}c").unwrap();
    add_user(&file, "dave", "{PLAIN}d").unwrap();
    assert_eq!(
        fs::read_to_string(&file).unwrap(),
        "# users\r\nalice:{PLAIN}new:1000:1000:Alice:/home/alice::nologin\r\n\
         #bob:{PLAIN}commented\n\
         bob:{PLAIN}b2\n\
         alice:{PLAIN}duplicate\n\
         carol:{PLAIN}c\n\
         dave:{PLAIN}d\n"
    );
    assert_eq!(
        fs::metadata(&file).unwrap().permissions().mode() & 0o777,
        0o640
    );
}

#[test]
fn add_user_follows_a_symlink_and_refuses_bad_input() {
    let dir = tempfile::tempdir().unwrap();
    let real = write(dir.path(), "alice:{PLAIN}a\n");
    let link = dir.path().join("link");
    std::os::unix::fs::symlink(&real, &link).unwrap();
    add_user(&link, "bob", "{PLAIN}b").unwrap();
    assert!(
        fs::symlink_metadata(&link)
            .unwrap()
            .file_type()
            .is_symlink()
    );
    assert_eq!(
        fs::read_to_string(&real).unwrap(),
        "alice:{PLAIN}a\nbob:{PLAIN}b\n"
    );

    for (name, password) in [
        ("", "{PLAIN}x"),
        ("a:b", "{PLAIN}x"),
        ("a b", "{PLAIN}x"),
        ("#a", "{PLAIN}x"),
        ("a\nb", "{PLAIN}x"),
        ("a", "{PLAIN}x:y"),
        ("a", "{PLAIN}x\ny"),
    ] {
        let error = add_user(&real, name, password).unwrap_err();
        assert_eq!(error.kind(), io::ErrorKind::InvalidInput, "{name:?}");
    }
    assert_eq!(
        fs::read_to_string(&real).unwrap(),
        "alice:{PLAIN}a\nbob:{PLAIN}b\n"
    );
}

#[test]
fn mailbox_path_templates() {
    let homed = account("alice", Some("/home/alice"));
    let homeless = account("bob", None);
    let path = |template: &str, account: &Account, user: &str, domain: &str| {
        expand_mailbox_path(template, account, user, domain).map(|p| p.display().to_string())
    };

    assert_eq!(
        path("~/Maildir", &homed, "alice", "example.net").unwrap(),
        "/home/alice/Maildir"
    );
    assert_eq!(
        path("~", &homed, "alice", "example.net").unwrap(),
        "/home/alice"
    );
    assert_eq!(
        path("/var/vmail/%d/%n/Maildir", &homeless, "Bob", "Example.net").unwrap(),
        "/var/vmail/Example.net/Bob/Maildir"
    );
    assert_eq!(
        path("/var/vmail/%Ld/%Ln", &homeless, "Bob", "Example.net").unwrap(),
        "/var/vmail/example.net/bob"
    );
    assert_eq!(
        path("/m/%u", &homeless, "Bob", "Ex.net").unwrap(),
        "/m/Bob@Ex.net"
    );
    assert_eq!(
        path("/m/%Lu", &homeless, "Bob", "Ex.net").unwrap(),
        "/m/bob@ex.net"
    );
    assert_eq!(path("/m/%u", &homeless, "bob", "").unwrap(), "/m/bob");
    assert_eq!(
        path("./tern-data/mail/%n/Maildir", &homed, "alice", "localhost").unwrap(),
        "./tern-data/mail/alice/Maildir"
    );
    assert_eq!(
        path("~%n/100%%", &homeless, "bob", "d").unwrap(),
        "~bob/100%"
    );

    let error = path("~/Maildir", &homeless, "bob", "example.net").unwrap_err();
    assert!(error.contains("bob") && error.contains("home"), "{error}");
    for (user, domain) in [
        ("..", "d"),
        ("a/b", "d"),
        ("a", ".."),
        ("a", "x/y"),
        ("a\0", "d"),
    ] {
        assert!(
            path("/m/%d/%n", &homed, user, domain).is_err(),
            "{user:?} {domain:?}"
        );
    }
}

#[test]
fn warnings_name_the_line_and_never_show_a_password() {
    let dir = tempfile::tempdir().unwrap();
    let file = write(
        dir.path(),
        "alice:{PLAIN}SECRET-A\nbroken line\nbob:{PLAIN}SECRET-B\nbob:{PLAIN}x\n\
         md5:{MD5}SECRET-C\n",
    );
    fs::write(
        &file,
        format!("{}c:{ARGON2ID}\n", fs::read_to_string(&file).unwrap()),
    )
    .unwrap();
    let (accounts, logged) = capture(|| Accounts::open(&file, "%u").unwrap());
    let at = |line: u32| format!("{}:{line}:", file.display());
    assert_eq!(logged.len(), 3, "{logged:#?}");
    assert!(logged[0].contains(&at(2)), "{}", logged[0]);
    assert!(
        logged[1].contains(&at(4)) && logged[1].contains("line 3"),
        "{}",
        logged[1]
    );
    assert!(
        logged[2].contains("2 account(s) with {PLAIN}"),
        "{}",
        logged[2]
    );

    let (verdicts, logged) = capture(|| {
        [
            accounts.verify("alice", "SECRET-WRONG"),
            accounts.verify("md5", "SECRET-TRIED"),
            accounts.verify("nobody", "SECRET-NOBODY"),
        ]
    });
    assert_eq!(verdicts, [Verdict::Fail, Verdict::TempFail, Verdict::Fail]);
    assert_eq!(logged.len(), 1, "{logged:#?}");
    assert!(
        logged[0].contains("md5") && logged[0].contains("{MD5}"),
        "{}",
        logged[0]
    );
    assert!(!logged.concat().contains("SECRET"), "{logged:#?}");

    // A failed re-read is reported once, not at every lookup.
    fs::remove_file(&file).unwrap();
    let (_, logged) = capture(|| {
        for _ in 0..3 {
            assert!(accounts.lookup("alice").is_some());
        }
    });
    assert_eq!(logged.len(), 1, "{logged:#?}");
    assert!(logged[0].contains("keeping the accounts"), "{}", logged[0]);
}

#[test]
fn debug_output_hides_the_password() {
    let text = format!("{:?}", account("alice", None));
    assert!(
        text.contains("alice") && !text.contains("{PLAIN}x"),
        "{text}"
    );
}

/// Runs `f` and returns what it logged at WARN and above, one string per event.
fn capture<T>(f: impl FnOnce() -> T) -> (T, Vec<String>) {
    let collector = Collector::default();
    let logged = collector.events.clone();
    let value = tracing::subscriber::with_default(collector, f);
    let logged = logged.lock().unwrap().clone();
    (value, logged)
}

#[derive(Default)]
struct Collector {
    events: std::sync::Arc<std::sync::Mutex<Vec<String>>>,
}

struct Fields(String);

impl tracing::field::Visit for Fields {
    fn record_debug(&mut self, field: &tracing::field::Field, value: &dyn fmt::Debug) {
        self.0.push_str(&format!(" {}={value:?}", field.name()));
    }
}

impl tracing::Subscriber for Collector {
    fn register_callsite(
        &self,
        _: &'static tracing::Metadata<'static>,
    ) -> tracing::subscriber::Interest {
        tracing::subscriber::Interest::sometimes()
    }
    fn enabled(&self, _: &tracing::Metadata<'_>) -> bool {
        true
    }
    fn new_span(&self, _: &tracing::span::Attributes<'_>) -> tracing::span::Id {
        tracing::span::Id::from_u64(1)
    }
    fn record(&self, _: &tracing::span::Id, _: &tracing::span::Record<'_>) {}
    fn record_follows_from(&self, _: &tracing::span::Id, _: &tracing::span::Id) {}
    fn event(&self, event: &tracing::Event<'_>) {
        if *event.metadata().level() <= tracing::Level::WARN {
            let mut fields = Fields(String::new());
            event.record(&mut fields);
            self.events.lock().unwrap().push(fields.0);
        }
    }
    fn enter(&self, _: &tracing::span::Id) {}
    fn exit(&self, _: &tracing::span::Id) {}
}
