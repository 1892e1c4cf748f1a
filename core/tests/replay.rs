//! Every recording under `tests/replay/` replays with all outputs matching: conversations
//! kept as regression tests, fuzzing finds included.

use std::path::Path;
use std::time::Instant;

#[test]
fn every_recording_replays() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/replay");
    let mut count = 0;
    for entry in std::fs::read_dir(&dir).expect("tests/replay exists") {
        let path = entry.unwrap().path();
        if path.extension().is_none_or(|e| e != "replay") {
            continue;
        }
        let text = std::fs::read_to_string(&path).unwrap();
        #[allow(clippy::disallowed_methods)]
        let start = Instant::now();
        if let Err(e) = tern_core::replay::replay(&text, start) {
            panic!("{}: {e}", path.display());
        }
        count += 1;
    }
    assert!(count >= 6, "only {count} recordings in {}", dir.display());
}
