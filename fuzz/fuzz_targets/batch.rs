//! The blob batch decoder on arbitrary bodies, fed in arbitrary chunks: never
//! panics, never hands out a frame larger than the limit, and every byte it
//! takes is accounted for (frames plus what is left equal what went in).
#![no_main]
use chanto_control::batch::{Decoder, HEADER_LEN, MAX_BLOB};

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let Some((&chunk, body)) = data.split_first() else { return };
    let chunk = chunk as usize + 1;
    let mut d = Decoder::default();
    let mut taken = 0usize;
    for c in body.chunks(chunk) {
        d.push(c);
        loop {
            match d.next_frame() {
                Ok(Some((_, bytes))) => {
                    assert!(bytes.len() as u64 <= MAX_BLOB);
                    taken += HEADER_LEN + bytes.len();
                }
                Ok(None) => break,
                Err(_) => return,
            }
        }
    }
    match d.finish() {
        Ok(()) => assert_eq!(taken, body.len()),
        Err(_) => assert!(taken < body.len()),
    }
});
