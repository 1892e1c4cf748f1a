//! Configuration errors and start-up failures (SPEC.md sections 1 and 2): exit 2 with
//! `FILE:LINE:COLUMN: message`, exit 1 with one line naming the address or file.

mod common;

use std::fs;
use std::net::TcpListener;
use std::path::Path;
use std::process::Command;

use common::{Fixture, TIMEOUT, free_port, run_with_timeout, tern_bin};

/// Runs `tern ARGS... --config FILE` and returns (exit code, stdout, stderr).
fn tern_with_config(args: &[&str], config: &Path) -> (Option<i32>, String, String) {
    let (status, out, err) = run_with_timeout(
        Command::new(tern_bin())
            .args(args)
            .arg("--config")
            .arg(config),
        TIMEOUT,
    );
    (status.code(), out, err)
}

#[test]
fn bad_files_give_exit_2_and_one_located_line() {
    let dir = tempfile::tempdir().unwrap();
    let cases = [
        (
            "unknown-key.toml",
            "hostname = \"mx.test\"\nbogus = 1\n",
            "2:1: unknown key `bogus`, expected one of `hostname`, `domains`, \
             `trusted_networks`, `runtime`, `data_dir`, `log`, `syslog_name`, `tls`, \
             `accounts`, `mailbox`, `aliases`, `delivery`, `limits`, `listener`",
        ),
        (
            "bad-duration.toml",
            "[limits]\ncommand_timeout = \"5 minutes\"\n",
            "2:19: duration `5 minutes` has an unknown unit ` minutes`: use ms, s, m, h or d",
        ),
        (
            "no-unit.toml",
            "hostname = \"mx.test\"\n\n[limits]\ndata_timeout = \"600\"\n",
            "4:16: duration `600` has no unit: write \"600s\" (units ms, s, m, h, d)",
        ),
        (
            "listener-key.toml",
            "[[listener]]\nname = \"smtp\"\nprotocol = \"smtp\"\n\
             address = \"127.0.0.1:25\"\nport = 25\n",
            "5:1: unknown key `port`, expected one of `name`, `protocol`, `address`, `path`, \
             `mode`, `user`, `group`, `tls`, `auth`, `plaintext_auth`, `restrictions`, \
             `record_sessions`",
        ),
    ];

    for (name, text, message) in cases {
        let path = dir.path().join(name);
        fs::write(&path, text).unwrap();
        let expected = format!("{}:{message}\n", path.display());
        for command in [&["check-config"][..], &["serve"][..]] {
            let (code, out, err) = tern_with_config(command, &path);
            assert_eq!(code, Some(2), "tern {command:?} on {name}: stderr {err:?}");
            assert_eq!(err, expected, "tern {command:?} on {name}");
            assert_eq!(out, "", "tern {command:?} on {name} printed to stdout");
        }
    }
}

#[test]
fn check_config_prints_the_effective_config() {
    let fx = Fixture::new();
    let (code, out, err) = tern_with_config(&["check-config"], &fx.config);
    assert_eq!(code, Some(0), "stderr: {err}");
    assert!(out.starts_with("hostname = \"mx.test\"\n"), "{out}");
    assert!(
        out.contains("domains = [\"mx.test\", \"example.net\"]\n"),
        "{out}"
    );
    // Defaults are filled in.
    assert!(out.contains("message_size = 10240000\n"), "{out}");
    assert!(out.contains("command_timeout = \"5m\"\n"), "{out}");
}

#[test]
fn port_in_use_gives_exit_1_naming_the_address() {
    let fx = Fixture::new();
    let taken = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = taken.local_addr().unwrap().to_string();
    let mut listeners = 0;
    fx.edit_config(|text| {
        // The first listener gets the taken port; the others free ones.
        let mut out = String::new();
        for line in text.lines() {
            if line == "address = \"127.0.0.1:0\"" {
                listeners += 1;
                if listeners == 1 {
                    out.push_str(&format!("address = \"{addr}\"\n"));
                } else {
                    out.push_str(&format!("address = \"127.0.0.1:{}\"\n", free_port()));
                }
            } else {
                out.push_str(line);
                out.push('\n');
            }
        }
        out
    });
    assert_eq!(listeners, 3);

    let (code, _, err) = tern_with_config(&["serve"], &fx.config);
    assert_eq!(code, Some(1), "stderr: {err:?}");
    assert_eq!(err.lines().count(), 1, "one line on stderr: {err:?}");
    assert!(err.ends_with('\n'), "{err:?}");
    assert!(err.contains(&addr), "stderr names {addr}: {err:?}");
    drop(taken);
}

#[test]
fn unreadable_certificate_gives_exit_1_naming_the_file() {
    let fx = Fixture::new();
    let missing = fx.root().join("no-such-dir/cert.pem");
    let real = fx.root().join("tls/cert.pem");
    fx.edit_config(|text| {
        text.replace(
            &format!("certificate = \"{}\"", real.display()),
            &format!("certificate = \"{}\"", missing.display()),
        )
    });
    assert!(
        fs::read_to_string(&fx.config)
            .unwrap()
            .contains("no-such-dir")
    );

    let (code, _, err) = tern_with_config(&["serve"], &fx.config);
    assert_eq!(code, Some(1), "stderr: {err:?}");
    assert_eq!(err.lines().count(), 1, "one line on stderr: {err:?}");
    assert!(
        err.contains(&missing.display().to_string()),
        "stderr names {}: {err:?}",
        missing.display()
    );
}
