//! A logical volume's bytes: a sorted list of segments, each mapping a
//! range of the LV onto one area (linear) or several areas read round-robin
//! in `stripe_size` chunks (striped), possibly on different disks.

use crate::block::ReadAt;
use std::io;
use std::sync::Arc;

/// One physical area of a segment: a PV and the byte offset of the area on it.
#[derive(Clone)]
pub(crate) struct Stripe {
    pub pv: Arc<dyn ReadAt>,
    pub offset: u64,
}

#[derive(Clone)]
pub(crate) struct Segment {
    /// Byte range of the LV this segment covers.
    pub start: u64,
    pub len: u64,
    /// Chunk size in bytes; ignored for a single stripe. The constructor of
    /// a striped segment checks `len` is a multiple of
    /// `stripe_size * stripes.len()` (as device-mapper requires).
    pub stripe_size: u64,
    pub stripes: Vec<Stripe>,
}

pub(crate) struct SegmentSource {
    segments: Vec<Segment>,
    size: u64,
}

impl SegmentSource {
    /// `segments` must be sorted, contiguous from 0, each with at least one
    /// stripe and a non-zero stripe size when striped (checked by the caller,
    /// which reports which segment is wrong); `None` if they are not.
    pub(crate) fn new(segments: Vec<Segment>) -> Option<SegmentSource> {
        let mut next = 0u64;
        for s in &segments {
            let n = s.stripes.len() as u64;
            if s.start != next || s.len == 0 || n == 0 || (n > 1 && (s.stripe_size == 0 || s.len % (s.stripe_size * n) != 0)) {
                return None;
            }
            next = next.checked_add(s.len)?;
        }
        Some(SegmentSource { segments, size: next })
    }

    /// Where LV byte `offset` lies: the PV, the byte offset on it, and how
    /// many bytes from there are contiguous on that PV.
    fn locate(&self, offset: u64) -> Option<(&Arc<dyn ReadAt>, u64, u64)> {
        let i = self.segments.partition_point(|s| s.start + s.len <= offset);
        let seg = self.segments.get(i)?;
        let o = offset.checked_sub(seg.start)?;
        let left_in_segment = seg.len.checked_sub(o).filter(|&n| n > 0)?;
        let n = seg.stripes.len() as u64;
        if n == 1 {
            let s = seg.stripes.first()?;
            return Some((&s.pv, s.offset.checked_add(o)?, left_in_segment));
        }
        let chunk = o / seg.stripe_size;
        let within = o % seg.stripe_size;
        let stripe = seg.stripes.get(usize::try_from(chunk % n).ok()?)?;
        let row = chunk / n;
        let pv_offset = stripe.offset.checked_add(row.checked_mul(seg.stripe_size)?)?.checked_add(within)?;
        Some((&stripe.pv, pv_offset, (seg.stripe_size - within).min(left_in_segment)))
    }
}

impl ReadAt for SegmentSource {
    fn read_exact_at(&self, buf: &mut [u8], offset: u64) -> io::Result<()> {
        let end = offset.checked_add(buf.len() as u64).ok_or(io::ErrorKind::UnexpectedEof)?;
        if end > self.size {
            return Err(io::ErrorKind::UnexpectedEof.into());
        }
        let mut done = 0usize;
        while done < buf.len() {
            let pos = offset + done as u64;
            let (pv, pv_offset, run) = self.locate(pos).ok_or(io::ErrorKind::UnexpectedEof)?;
            let n = usize::try_from(run).unwrap_or(usize::MAX).min(buf.len() - done);
            let part = buf.get_mut(done..done + n).ok_or(io::ErrorKind::UnexpectedEof)?;
            pv.read_exact_at(part, pv_offset)?;
            done += n;
        }
        Ok(())
    }

    fn size(&self) -> u64 {
        self.size
    }

    fn extent_at(&self, offset: u64) -> Option<(bool, u64)> {
        let (pv, pv_offset, run) = self.locate(offset)?;
        let (data, n) = pv.extent_at(pv_offset)?;
        Some((data, n.min(run)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::block::MemSource;

    #[test]
    fn striped_and_linear_mapping() {
        let a: Arc<dyn ReadAt> = Arc::new(MemSource((0..64u8).collect()));
        let b: Arc<dyn ReadAt> = Arc::new(MemSource((100..164u8).collect()));
        let src = SegmentSource::new(vec![
            Segment { start: 0, len: 16, stripe_size: 4, stripes: vec![Stripe { pv: a.clone(), offset: 8 }, Stripe { pv: b.clone(), offset: 0 }] },
            Segment { start: 16, len: 4, stripe_size: 0, stripes: vec![Stripe { pv: b, offset: 60 }] },
        ])
        .unwrap();
        let mut buf = vec![0u8; 20];
        src.read_exact_at(&mut buf, 0).unwrap();
        assert_eq!(buf, [8, 9, 10, 11, 100, 101, 102, 103, 12, 13, 14, 15, 104, 105, 106, 107, 160, 161, 162, 163]);
        let mut one = [0u8; 3];
        src.read_exact_at(&mut one, 6).unwrap();
        assert_eq!(one, [102, 103, 12]);
        assert!(src.read_exact_at(&mut one, 18).is_err());
        assert!(SegmentSource::new(vec![Segment { start: 0, len: 10, stripe_size: 4, stripes: vec![Stripe { pv: a.clone(), offset: 0 }, Stripe { pv: a, offset: 0 }] }]).is_none());
    }
}
