//! Allocation maps, in the shape of `qemu-img map --output=json`.

/// One run of the map.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MapEntry {
    pub start: u64,
    pub length: u64,
    /// Bytes are stored in some layer of the chain.
    pub data: bool,
    /// The range reads as zeros.
    pub zero: bool,
    /// Index in the chain of the layer that supplies the range (0 = top);
    /// for ranges no layer allocates, the chain length.
    pub depth: usize,
}

/// Appends `e` to `map`, merging it into the last entry when they are alike
/// and adjacent.
pub fn push_coalesced(map: &mut Vec<MapEntry>, e: MapEntry) {
    if let Some(last) = map.last_mut() {
        if last.start + last.length == e.start && last.data == e.data && last.zero == e.zero && last.depth == e.depth {
            last.length += e.length;
            return;
        }
    }
    map.push(e);
}
