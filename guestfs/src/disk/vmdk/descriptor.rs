//! VMDK text descriptors.

/// Whether the start of a file looks like a VMDK text descriptor.
pub fn looks_like_descriptor(head: &[u8]) -> bool {
    let text = String::from_utf8_lossy(head);
    text.contains("# Disk DescriptorFile") || (text.contains("createType") && text.contains("version="))
}
