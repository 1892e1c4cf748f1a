//! The recording parser on arbitrary text, and replay of whatever parses. Checks: no panic,
//! whatever the header configures and whatever the events ask.
#![no_main]

use std::time::Instant;

use libfuzzer_sys::fuzz_target;
use tern_core::replay::Recording;

fuzz_target!(|text: &str| {
    if let Ok(recording) = Recording::parse(text) {
        // Replay only bounded work: a recording can name any timer or limit.
        if recording.len() <= 256 {
            let _ = recording.replay(Instant::now());
        }
    }
});
