//! LZNT1, the compression of NTFS compressed attributes ([MS-XCA] 2.5).
//!
//! A compression unit (usually 16 clusters = 64 KiB) is a sequence of
//! chunks, each standing for 4096 bytes of data. A chunk header is a u16:
//! bits 0-11 are the chunk's stored size minus 3, bit 15 says whether the
//! chunk is compressed. A zero header ends the unit early (the rest reads
//! as zeros). Inside a compressed chunk, a flag byte precedes every eight
//! tokens; a set bit is a back-reference (u16) whose split between offset
//! and length depends on how far into the chunk we are.

pub const CHUNK: usize = 4096;

/// Decompresses one compression unit `src` into `out` (whose length is the
/// unit's uncompressed size). Bytes not produced by the stream are zero.
pub fn decompress(src: &[u8], out: &mut [u8]) -> Result<(), String> {
    out.fill(0);
    let mut sp = 0usize;
    let mut op = 0usize;
    while op < out.len() {
        let Some(h) = src.get(sp..sp + 2) else { break };
        let header = u16::from_le_bytes([h[0], h[1]]);
        if header == 0 {
            break;
        }
        let stored = usize::from(header & 0x0FFF) + 1;
        let data = src.get(sp + 2..sp + 2 + stored).ok_or_else(|| format!("chunk at {sp} runs past the compressed data"))?;
        let end = (op + CHUNK).min(out.len());
        let dst = &mut out[op..end];
        if header & 0x8000 == 0 {
            // Stored uncompressed: the chunk is the 4096 bytes themselves.
            if data.len() != CHUNK && data.len() != dst.len() {
                return Err(format!("uncompressed chunk at {sp} has {} bytes, not {CHUNK}", data.len()));
            }
            let n = data.len().min(dst.len());
            dst[..n].copy_from_slice(&data[..n]);
        } else {
            decompress_chunk(data, dst).map_err(|e| format!("chunk at {sp}: {e}"))?;
        }
        sp += 2 + stored;
        op = end;
    }
    Ok(())
}

/// One compressed chunk into `dst` (at most 4096 bytes). A chunk that ends
/// early leaves the rest of `dst` zero, as Windows does.
fn decompress_chunk(src: &[u8], dst: &mut [u8]) -> Result<(), String> {
    let mut sp = 0usize;
    let mut dp = 0usize;
    while sp < src.len() {
        let flags = src[sp];
        sp += 1;
        for bit in 0..8 {
            if sp >= src.len() {
                return Ok(());
            }
            if flags & (1 << bit) == 0 {
                let d = dst.get_mut(dp).ok_or("literal past the end of the chunk")?;
                *d = src[sp];
                sp += 1;
                dp += 1;
            } else {
                let t = src.get(sp..sp + 2).ok_or("back-reference truncated")?;
                let token = u16::from_le_bytes([t[0], t[1]]);
                sp += 2;
                if dp == 0 {
                    return Err("back-reference at the start of a chunk".into());
                }
                // The offset field is as wide as needed to reach the start
                // of the chunk: 4 bits up to position 16, then one more bit
                // each time the position doubles.
                let mut len_bits = 12u32;
                let mut p = dp - 1;
                while p >= 0x10 {
                    p >>= 1;
                    len_bits -= 1;
                }
                let length = usize::from(token & ((1u16 << len_bits) - 1)) + 3;
                let back = usize::from(token >> len_bits) + 1;
                if back > dp {
                    return Err(format!("back-reference {back} bytes before position {dp}"));
                }
                if dp + length > dst.len() {
                    return Err("back-reference past the end of the chunk".into());
                }
                // Byte by byte: references may overlap what they produce.
                for _ in 0..length {
                    dst[dp] = dst[dp - back];
                    dp += 1;
                }
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn literal_and_overlapping_reference() {
        // "abc" then back 3, length 9 -> "abcabcabcabc".
        // flags: 3 literals (bits 0-2 clear), bit 3 set.
        let token: u16 = ((3 - 1) << 12) | (9 - 3);
        let mut chunk = vec![0b0000_1000, b'a', b'b', b'c'];
        chunk.extend_from_slice(&token.to_le_bytes());
        let mut unit = Vec::new();
        unit.extend_from_slice(&(0x8000u16 | (chunk.len() as u16 - 1)).to_le_bytes());
        unit.extend_from_slice(&chunk);
        unit.extend_from_slice(&[0, 0]);
        let mut out = vec![0xFFu8; 8192];
        decompress(&unit, &mut out).unwrap();
        assert_eq!(&out[..12], b"abcabcabcabc");
        assert!(out[12..].iter().all(|&b| b == 0));
    }

    #[test]
    fn stored_chunk_and_corruption() {
        let mut unit = Vec::new();
        unit.extend_from_slice(&(0x0FFFu16).to_le_bytes());
        unit.extend((0..4096).map(|i| (i % 251) as u8));
        let mut out = vec![0u8; 4096];
        decompress(&unit, &mut out).unwrap();
        assert_eq!(out[300], (300 % 251) as u8);
        // Reference before the start of the chunk.
        let bad = [0x03, 0x80, 0b0000_0010, b'a', 0x00, 0xF0];
        assert!(decompress(&bad, &mut out).is_err());
        // Chunk longer than the data.
        assert!(decompress(&[0x10, 0x80, 0x00], &mut out).is_err());
    }
}
