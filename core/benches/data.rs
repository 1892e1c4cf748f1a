//! DATA decoding throughput: a 10 MB message of 76-character lines, some dot-stuffed, fed in
//! 64 KiB reads as a socket would deliver it.

use std::hint::black_box;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use tern_core::data::{DataDecoder, DataStatus};

const MESSAGE_SIZE: usize = 10 * 1024 * 1024;
const READ_SIZE: usize = 64 * 1024;

fn decode_message(c: &mut Criterion) {
    let input = message();
    let mut group = c.benchmark_group("data");
    group.throughput(Throughput::Bytes(input.len() as u64));
    group.sample_size(20);

    let mut out = Vec::with_capacity(input.len());
    group.bench_function("decode 10 MB in 64 KiB reads", |b| {
        b.iter(|| {
            out.clear();
            let mut decoder = DataDecoder::new();
            let mut status = DataStatus::NeedMore;
            for read in input.chunks(READ_SIZE) {
                let (_, s) = decoder.decode(black_box(read), &mut out);
                status = s;
            }
            assert_eq!(status, DataStatus::End);
            black_box(out.len())
        })
    });
    group.finish();
}

/// Headers, then base64-like body lines of 76 characters; every 50th line starts with a
/// stuffed dot, then the end-of-data line.
fn message() -> Vec<u8> {
    const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut text = Vec::with_capacity(MESSAGE_SIZE + 100);
    text.extend_from_slice(b"From: alice@example.org\r\nTo: bob@example.net\r\n");
    text.extend_from_slice(b"Subject: benchmark\r\n\r\n");

    let mut seed = 0x2545_f491_u32;
    let mut line = 0;
    while text.len() < MESSAGE_SIZE {
        if line % 50 == 0 {
            text.extend_from_slice(b"..");
        }
        for _ in 0..76 {
            // xorshift: varied bytes without a dependency on rand.
            seed ^= seed << 13;
            seed ^= seed >> 17;
            seed ^= seed << 5;
            text.push(ALPHABET[(seed % 64) as usize]);
        }
        text.extend_from_slice(b"\r\n");
        line += 1;
    }
    text.extend_from_slice(b".\r\n");
    text
}

criterion_group!(benches, decode_message);
criterion_main!(benches);
