//! The config file parser on arbitrary text: no panic; an error names a position inside the
//! text; what parses is written back by `to_toml` and parses again to the same config.
//!
//! This is the one target that depends on `host` (where the config parser lives); every
//! other target depends on `core` alone, as DESIGN.md asks.
#![no_main]

use std::path::Path;

use libfuzzer_sys::fuzz_target;
use tern_host::config;

fuzz_target!(|text: &str| {
    let path = Path::new("fuzz.toml");
    match config::parse(text, path) {
        Ok(parsed) => {
            let written = parsed.to_toml();
            let again = config::parse(&written, path)
                .unwrap_or_else(|e| panic!("to_toml wrote what does not parse: {e}\n{written}"));
            assert_eq!(again.to_toml(), written);
        }
        Err(error) => {
            let lines = text.lines().count().max(1);
            assert!(
                error.line <= lines + 1,
                "{error} is past the end ({lines} lines)"
            );
            assert!(!error.to_string().contains('\n'), "{error}");
        }
    }
});
