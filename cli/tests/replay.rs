//! `tern replay FILE`: exit 0 and a summary when every output matches, 1 and the first
//! differing event otherwise, 2 for a file that is not a recording.

use std::path::Path;
use std::process::{Command, Output};

fn tern_replay(file: &Path) -> Output {
    Command::new(env!("CARGO_BIN_EXE_tern"))
        .arg("replay")
        .arg(file)
        .output()
        .unwrap()
}

fn recording() -> String {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../core/tests/replay/lmtp.replay");
    std::fs::read_to_string(path).unwrap()
}

#[test]
fn a_matching_recording_exits_0() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("s.replay");
    let text = recording();
    std::fs::write(&file, &text).unwrap();
    let out = tern_replay(&file);
    let events = text.lines().skip_while(|l| *l != "events").count() - 1;
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        format!("replay: {events} events, all outputs matched\n")
    );
}

#[test]
fn a_differing_output_exits_1_with_both_sides() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("s.replay");
    let text = recording().replacen("250 2.1.0 Ok", "250 2.1.0 Sure", 1);
    std::fs::write(&file, text).unwrap();
    let out = tern_replay(&file);
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        stdout.contains("expected: send 250-mx.example.net"),
        "{stdout}"
    );
    assert!(stdout.contains("250 2.1.0 Sure\\r\\n\n"), "{stdout}");
    assert!(
        stdout.contains("actual:   send 250-mx.example.net"),
        "{stdout}"
    );
    assert!(stdout.ends_with("250 2.1.0 Ok\\r\\n\n"), "{stdout}");
}

#[test]
fn a_file_that_is_no_recording_exits_2() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("s.replay");
    std::fs::write(&file, "hello\n").unwrap();
    assert_eq!(tern_replay(&file).status.code(), Some(2));
    let out = Command::new(env!("CARGO_BIN_EXE_tern"))
        .arg("replay")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
}
