//! Precompressed variants: brotli and gzip forms of compressible files, made
//! once per source blob (whatever deploys use it) and kept only when smaller.

use std::io::Write;

use chanto_core::Encoding;

/// Compresses `bytes` with `encoding` at the given quality/level.
pub fn compress(bytes: &[u8], encoding: Encoding, brotli_quality: u32, gzip_level: u32) -> Vec<u8> {
    match encoding {
        Encoding::Br => {
            let mut out = Vec::with_capacity(bytes.len() / 3);
            let params = brotli::enc::BrotliEncoderParams {
                quality: brotli_quality.min(11) as i32,
                lgwin: brotli_window_bits(bytes.len()),
                size_hint: bytes.len(),
                ..Default::default()
            };
            let mut input = bytes;
            brotli::BrotliCompress(&mut input, &mut out, &params).expect("compressing into memory cannot fail");
            out
        }
        Encoding::Gzip => {
            let mut enc = flate2::write::GzEncoder::new(
                Vec::with_capacity(bytes.len() / 3),
                flate2::Compression::new(gzip_level.min(9)),
            );
            enc.write_all(bytes).expect("compressing into memory cannot fail");
            enc.finish().expect("compressing into memory cannot fail")
        }
    }
}

/// The smallest brotli window holding the whole input, from 17 to 22 bits:
/// the encoder allocates and clears a ring buffer of the window's size per
/// call, so a 4 MiB window for a 6 KB page costs more than compressing it.
/// Not below 17: at 16 bits and less the encoder switches to a hasher whose
/// tables cost several times more to set up (measured: 6× slower on pages).
fn brotli_window_bits(len: usize) -> i32 {
    let bits = usize::BITS - len.saturating_sub(1).leading_zeros();
    bits.clamp(17, 22) as i32
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Read;

    #[test]
    fn window_fits_the_input() {
        assert_eq!(brotli_window_bits(0), 17);
        assert_eq!(brotli_window_bits(6000), 17);
        assert_eq!(brotli_window_bits((1 << 17) + 1), 18);
        assert_eq!(brotli_window_bits(1 << 22), 22);
        assert_eq!(brotli_window_bits(100 << 20), 22);
    }

    #[test]
    fn round_trips() {
        let text = "<p>hello chanto</p>\n".repeat(200);
        let br = compress(text.as_bytes(), Encoding::Br, 9, 6);
        let mut back = Vec::new();
        brotli::BrotliDecompress(&mut &br[..], &mut back).unwrap();
        assert_eq!(back, text.as_bytes());
        assert!(br.len() < text.len() / 10);

        let gz = compress(text.as_bytes(), Encoding::Gzip, 9, 6);
        let mut back = String::new();
        flate2::read::GzDecoder::new(&gz[..]).read_to_string(&mut back).unwrap();
        assert_eq!(back, text);
    }

    #[test]
    fn round_trips_at_every_window_size() {
        // Text with long-distance repeats, so matches reach the window's edge.
        let mut seed = 7u64;
        let words: Vec<String> = (0..500)
            .map(|_| {
                seed = seed.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
                format!("w{:x} ", seed >> 40)
            })
            .collect();
        for len in [1, 1023, 1024, 1025, 4097, 65_537, 300_000, (1 << 22) + 3] {
            let text: Vec<u8> = words.iter().cycle().flat_map(|w| w.bytes()).take(len).collect();
            let br = compress(&text, Encoding::Br, 5, 6);
            let mut back = Vec::new();
            brotli::BrotliDecompress(&mut &br[..], &mut back).unwrap();
            assert_eq!(back, text, "brotli round trip at {len} bytes");
        }
    }
}
