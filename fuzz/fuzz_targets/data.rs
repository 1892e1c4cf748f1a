//! The DATA decoder: any split of the same input gives the same output and status, and the
//! output never holds a bare CR or LF.
#![no_main]

use libfuzzer_sys::fuzz_target;
use tern_core::data::{DataDecoder, DataStatus};

fuzz_target!(|input: (u16, &[u8])| {
    let (split, bytes) = input;
    let whole = decode(bytes, &[bytes.len()]);
    let split = usize::from(split) % (bytes.len() + 1);
    let parts = decode(bytes, &[split, bytes.len()]);
    assert_eq!(whole, parts);

    let (out, status, _) = whole;
    if status != DataStatus::BareLineEnding {
        for (i, &b) in out.iter().enumerate() {
            match b {
                b'\r' => assert_eq!(out.get(i + 1), Some(&b'\n')),
                b'\n' => assert!(i > 0 && out[i - 1] == b'\r'),
                _ => {}
            }
        }
    }
});

fn decode(bytes: &[u8], cuts: &[usize]) -> (Vec<u8>, DataStatus, usize) {
    let mut decoder = DataDecoder::new();
    let mut out = Vec::new();
    let mut start = 0;
    let mut used_total = 0;
    let mut status = DataStatus::NeedMore;
    for &cut in cuts {
        let mut piece = &bytes[start..cut];
        while !piece.is_empty() && status == DataStatus::NeedMore {
            let (used, s) = decoder.decode(piece, &mut out);
            used_total += used;
            piece = &piece[used..];
            status = s;
            if used == 0 {
                break;
            }
        }
        start = cut;
    }
    (out, status, used_total)
}
