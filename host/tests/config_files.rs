//! `load` against real files: the path in errors, unreadable files, and the effective
//! configuration written to disk and read back, as `tern check-config` users would.

use std::fs;
use std::path::Path;

use tern_host::config::{self, Bind, ConfigError, ListenerTls};

fn write(dir: &Path, name: &str, text: &[u8]) -> std::path::PathBuf {
    let path = dir.join(name);
    fs::write(&path, text).unwrap();
    path
}

#[test]
fn load_reads_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let text = "hostname = \"mx.example.net\"\ndomains = [\"example.net\"]\n\n\
                [tls]\ncertificate = \"c.pem\"\nprivate_key = \"k.pem\"\n\n\
                [[listener]]\nname = \"smtp\"\nprotocol = \"smtp\"\naddress = \"127.0.0.1:2525\"\n\
                tls = \"may\"\n";
    let path = write(dir.path(), "tern.toml", text.as_bytes());

    let config = config::load(&path).unwrap();
    assert_eq!(config, config::parse(text, &path).unwrap());
    assert_eq!(config.hostname, "mx.example.net");
    assert_eq!(config.listeners[0].tls, ListenerTls::May);
    assert_eq!(
        config.listeners[0].bind,
        Bind::Tcp("127.0.0.1:2525".parse().unwrap())
    );
}

#[test]
fn errors_name_the_file_and_position() {
    let dir = tempfile::tempdir().unwrap();
    let path = write(
        dir.path(),
        "bad.toml",
        b"hostname = \"a\"\n\n[limits]\nerors = 3\n",
    );

    let e = config::load(&path).unwrap_err();
    assert_eq!((e.file.as_path(), e.line, e.column), (path.as_path(), 4, 1));
    assert!(
        e.to_string()
            .starts_with(&format!("{}:4:1: unknown key `erors`", path.display())),
        "{e}"
    );
}

#[test]
fn duplicate_keys_and_tables_are_syntax_errors() {
    let cases = [
        ("hostname = \"a\"\nhostname = \"b\"\n", 2, 1),
        ("[limits]\nerrors = 1\n[limits]\nrecipients = 2\n", 3, 2),
    ];
    for (text, line, column) in cases {
        let e = config::parse(text, Path::new("t.toml")).unwrap_err();
        assert_eq!((e.line, e.column), (line, column), "{e}\n{text}");
    }
}

#[test]
fn unreadable_files_have_no_position() {
    let dir = tempfile::tempdir().unwrap();
    let not_utf8 = write(dir.path(), "latin1.toml", b"hostname = \"caf\xe9\"\n");

    for path in [
        dir.path().to_path_buf(),
        not_utf8,
        dir.path().join("missing.toml"),
    ] {
        let e: ConfigError = config::load(&path).unwrap_err();
        assert_eq!((e.line, e.column), (0, 0), "{e}");
        let prefix = format!("{}: cannot read: ", path.display());
        assert!(e.to_string().starts_with(&prefix), "{e}");
    }
}

#[test]
fn effective_config_on_disk_reads_back_equal() {
    let dir = tempfile::tempdir().unwrap();
    let data_dir = dir.path().join("tern-data");
    let embedded = config::embedded_default(&data_dir);
    assert!(
        embedded
            .mailbox
            .path
            .starts_with(dir.path().to_str().unwrap())
    );

    let path = write(dir.path(), "effective.toml", embedded.to_toml().as_bytes());
    assert_eq!(config::load(&path).unwrap(), embedded);
}
