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
                lgwin: 22,
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

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Read;

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
}
