//! Resource files (`.fdc.sf` file descriptors, `.sbc.sf` sub-blocks,
//! `.pbc.sf`/`.pb2.sf` pointer blocks, `.fbb.sf` file-block bitmap): each
//! starts with a metadata header describing how its resources are grouped.
//! Resources are organised in clusters of `resourcesPerCluster`, clusters in
//! cluster groups of `clustersPerGroup`; a group starts with one lock +
//! metadata header pair per cluster, then the clusters' resource data.
//! A (cluster, resource) address becomes an offset in the resource file.

use crate::le::u32le;

pub const RES_META_SIZE: u64 = 0x58;
const RFMD_SIGNATURE: u32 = 0x7266_6D64;

#[derive(Clone, Debug)]
pub struct ResourceMeta {
    pub resources_per_cluster: u64,
    pub clusters_per_group: u64,
    pub cluster_group_offset: u64,
    pub resource_size: u64,
    pub cluster_group_size: u64,
    pub num_cluster_groups: u64,
    pub child_meta_offset: u64,
    /// Bytes of per-cluster headers at the start of a cluster group, per
    /// cluster: two metadata blocks (lock + cluster metadata).
    pub cluster_header_size: u64,
}

impl ResourceMeta {
    /// Parses the header; `Err` says what is wrong (the caller adds where).
    pub fn parse(b: &[u8], vmfs6: bool, cluster_header_size: u64) -> Result<ResourceMeta, String> {
        let m = ResourceMeta {
            resources_per_cluster: u64::from(u32le(b, 0)),
            clusters_per_group: u64::from(u32le(b, 4)),
            cluster_group_offset: u64::from(u32le(b, 8)),
            resource_size: u64::from(u32le(b, 0xc)),
            cluster_group_size: u64::from(u32le(b, 0x10)),
            num_cluster_groups: u64::from(u32le(b, 0x18)),
            child_meta_offset: u64::from(u32le(b, 0x34)),
            cluster_header_size,
        };
        if vmfs6 && u32le(b, 0x20) != RFMD_SIGNATURE {
            return Err(format!("bad resource metadata signature {:#010x}", u32le(b, 0x20)));
        }
        if m.resources_per_cluster == 0 || m.resources_per_cluster > 1 << 16 {
            return Err(format!("{} resources per cluster", m.resources_per_cluster));
        }
        if m.clusters_per_group == 0 || m.clusters_per_group > 1 << 16 {
            return Err(format!("{} clusters per group", m.clusters_per_group));
        }
        if m.resource_size == 0 || m.resource_size > 1 << 30 {
            return Err(format!("resource size {}", m.resource_size));
        }
        Ok(m)
    }

    /// Offset of resource `resource` of cluster `cluster` in the resource
    /// file; `None` when the address lies outside what the header declares.
    pub fn resource_offset(&self, cluster: u64, resource: u64) -> Option<u64> {
        if resource >= self.resources_per_cluster || cluster >= self.num_cluster_groups.checked_mul(self.clusters_per_group)? {
            return None;
        }
        let group = cluster / self.clusters_per_group;
        let in_group = cluster % self.clusters_per_group;
        let cluster_bytes = self.resources_per_cluster.checked_mul(self.resource_size)?;
        self.cluster_group_offset
            .checked_add(group.checked_mul(self.cluster_group_size)?)?
            .checked_add(self.clusters_per_group.checked_mul(self.cluster_header_size)?)?
            .checked_add(in_group.checked_mul(cluster_bytes)?)?
            .checked_add(resource.checked_mul(self.resource_size)?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn meta(rpc: u32, cpg: u32, cgo: u32, rs: u32, cgs: u32, ncg: u32) -> Vec<u8> {
        let mut b = vec![0u8; RES_META_SIZE as usize];
        for (i, v) in [rpc, cpg, cgo, rs, cgs, 0, ncg].iter().enumerate() {
            b[i * 4..i * 4 + 4].copy_from_slice(&v.to_le_bytes());
        }
        b
    }

    #[test]
    fn offsets() {
        // The sample's .fdc.sf: 512 FDs of 2 KiB per cluster, 64 clusters per group.
        let m = ResourceMeta::parse(&meta(512, 64, 0x10000, 2048, 64 * 1024 + 64 * 512 * 2048, 1), false, 1024).unwrap();
        assert_eq!(m.resource_offset(0, 0), Some(0x10000 + 64 * 1024));
        assert_eq!(m.resource_offset(1, 3), Some(0x10000 + 64 * 1024 + 512 * 2048 + 3 * 2048));
        assert_eq!(m.resource_offset(64, 0), None, "cluster beyond the declared groups");
        assert_eq!(m.resource_offset(0, 512), None, "resource beyond the cluster");
    }

    #[test]
    fn rejects_absurd_headers() {
        assert!(ResourceMeta::parse(&meta(0, 1, 0, 1, 1, 1), false, 1024).is_err());
        assert!(ResourceMeta::parse(&meta(1, 1, 0, 0, 1, 1), false, 1024).is_err());
        assert!(ResourceMeta::parse(&meta(1, 1, 0, 1, 1, 1), true, 1024).is_err(), "VMFS 6 needs the signature");
    }
}
