//! The Dovecot auth protocol's field escaping: any bytes survive escape then unescape, an
//! escaped field holds no TAB or LF (which would split the line), and unescape never panics
//! on arbitrary input.
#![no_main]

use libfuzzer_sys::fuzz_target;
use tern_core::dovecot::{escape, unescape};

fuzz_target!(|data: &[u8]| {
    let escaped = escape(data);
    assert!(
        !escaped.contains(&b'\t') && !escaped.contains(&b'\n'),
        "{escaped:?}"
    );
    assert_eq!(unescape(&escaped), data);
    let _ = unescape(data);
});
