//! Compressed clusters: one guest cluster compressed with raw deflate
//! (qemu's "zlib" type, RFC 1951 without zlib framing) or zstd.
//!
//! The stored length is rounded up to whole sectors and the last
//! compressed cluster may even be counted past the end of the file, so the
//! input is cut at the end of the file and decompression stops once a full
//! cluster is produced. Anything less than a full cluster is an error:
//! padding the rest with zeros would hand out wrong data.

use super::header::Compression;
use crate::block::ImageFile;
use crate::Result;
use std::io::Read;

/// Largest zstd window accepted. qemu compresses one cluster (at most
/// 2 MiB) per frame; the limit stops a hostile frame header from making the
/// decoder reserve its own maximum (100 MiB).
const MAX_ZSTD_WINDOW: u64 = 8 << 20;

/// Reads and decompresses the cluster stored as `len` bytes at `host`.
/// `structure` names the L2 entry for error messages.
pub fn read_cluster(
    file: &ImageFile,
    compression: Compression,
    structure: &str,
    host: u64,
    len: u64,
    cluster_size: u64,
) -> Result<Vec<u8>> {
    let available = file.size().saturating_sub(host).min(len);
    let input = file.read_vec(&format!("compressed cluster ({structure})"), host, available)?;
    let mut out = vec![0u8; cluster_size as usize];
    let fail = |why: String| {
        file.corrupt(
            &format!("compressed cluster ({structure})"),
            host,
            format!("{} data does not decompress to a full cluster of {cluster_size} bytes: {why}", name(compression)),
        )
    };
    match compression {
        Compression::Deflate => inflate(&input, &mut out).map_err(fail)?,
        Compression::Zstd => unzstd(&input, &mut out).map_err(fail)?,
    }
    Ok(out)
}

fn name(c: Compression) -> &'static str {
    match c {
        Compression::Deflate => "deflate",
        Compression::Zstd => "zstd",
    }
}

fn inflate(input: &[u8], out: &mut [u8]) -> std::result::Result<(), String> {
    let mut d = flate2::Decompress::new(false);
    let status = d.decompress(input, out, flate2::FlushDecompress::Finish).map_err(|e| e.to_string())?;
    let produced = d.total_out();
    if produced != out.len() as u64 {
        return Err(format!("only {produced} bytes produced ({status:?})"));
    }
    Ok(())
}

fn unzstd(input: &[u8], out: &mut [u8]) -> std::result::Result<(), String> {
    let mut src = input;
    let mut filled = 0usize;
    // One frame per cluster is what qemu writes; following frames are
    // accepted as the specification only says "decompress a cluster".
    while filled < out.len() {
        let window = zstd_window(src).ok_or("no valid zstd frame header")?;
        if window > MAX_ZSTD_WINDOW {
            return Err(format!("zstd window of {window} bytes exceeds {MAX_ZSTD_WINDOW}"));
        }
        let mut dec = ruzstd::decoding::StreamingDecoder::new(&mut src).map_err(|e| e.to_string())?;
        let before = filled;
        loop {
            let rest = out.get_mut(filled..).unwrap_or_default();
            if rest.is_empty() {
                break;
            }
            let n = dec.read(rest).map_err(|e| e.to_string())?;
            if n == 0 {
                break;
            }
            filled += n;
        }
        if filled == before {
            return Err(format!("only {filled} bytes produced"));
        }
    }
    Ok(())
}

/// Window size declared by the zstd frame header at the start of `frame`
/// (RFC 8878, 3.1.1.1), or `None` when it is not a frame header.
fn zstd_window(frame: &[u8]) -> Option<u64> {
    if frame.get(0..4)? != [0x28, 0xb5, 0x2f, 0xfd] {
        return None;
    }
    let descriptor = *frame.get(4)?;
    let single_segment = descriptor & 0x20 != 0;
    if !single_segment {
        let wd = *frame.get(5)?;
        let base = 1u64 << (10 + u32::from(wd >> 3));
        return Some(base + (base / 8) * u64::from(wd & 7));
    }
    // Single segment: the window is the frame content size, which follows
    // the dictionary id.
    let dict_len = [0usize, 1, 2, 4][usize::from(descriptor & 3)];
    let fcs_len = [1usize, 2, 4, 8][usize::from(descriptor >> 6)];
    let start = 5 + dict_len;
    let bytes = frame.get(start..start + fcs_len)?;
    let mut v = [0u8; 8];
    v.get_mut(..fcs_len)?.copy_from_slice(bytes);
    let size = u64::from_le_bytes(v);
    Some(if fcs_len == 2 { size + 256 } else { size })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::disk::qcow2::tests::deflate;

    fn sample() -> Vec<u8> {
        (0..65536u32).map(|i| (i.wrapping_mul(2654435761) >> 13) as u8 & 0x0f).collect()
    }

    #[test]
    fn deflate_roundtrip_with_sector_padding() {
        let data = sample();
        let mut stored = deflate(&data);
        stored.resize(stored.len().div_ceil(512) * 512, 0xaa);
        let mut out = vec![0u8; data.len()];
        inflate(&stored, &mut out).unwrap();
        assert_eq!(out, data);
    }

    #[test]
    fn deflate_short_or_damaged_is_an_error() {
        let data = sample();
        let stored = deflate(&data);
        let mut out = vec![0u8; data.len()];
        assert!(inflate(&stored[..stored.len() / 2], &mut out).is_err());
        let mut bad = stored.clone();
        bad.iter_mut().take(64).for_each(|b| *b = 0xff);
        assert!(inflate(&bad, &mut out).is_err());
        // A stream of fewer bytes than a cluster.
        let short = deflate(&data[..1000]);
        assert!(inflate(&short, &mut out).is_err());
        assert!(inflate(&[], &mut out).is_err());
    }

    #[test]
    fn zstd_roundtrip_and_errors() {
        let data = sample();
        let mut stored = ruzstd::encoding::compress_to_vec(&data[..], ruzstd::encoding::CompressionLevel::Fastest);
        let mut out = vec![0u8; data.len()];
        stored.extend_from_slice(&[0u8; 300]);
        unzstd(&stored, &mut out).unwrap();
        assert_eq!(out, data);
        let short = ruzstd::encoding::compress_to_vec(&data[..1000], ruzstd::encoding::CompressionLevel::Fastest);
        assert!(unzstd(&short, &mut out).is_err());
        assert!(unzstd(&stored[..stored.len() / 3], &mut out).is_err());
        assert!(unzstd(&[0u8; 512], &mut out).is_err());
    }

    #[test]
    fn zstd_window_limits() {
        // Not single segment, window descriptor exponent 31: 2 TiB.
        let hostile = [0x28, 0xb5, 0x2f, 0xfd, 0x00, 31 << 3, 0, 0];
        assert_eq!(zstd_window(&hostile), Some(1 << 41));
        let mut out = vec![0u8; 4096];
        assert!(unzstd(&hostile, &mut out).unwrap_err().contains("window"));
    }
}
