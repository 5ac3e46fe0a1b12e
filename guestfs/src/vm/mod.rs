//! VMware virtual machine configuration files: the `.vmx` (devices and
//! their disk files) and the `.vmsd` (snapshot tree). Pure parsers over
//! bytes: opening the files and the disks they name is the caller's job.

pub mod dict;
pub mod vmsd;
pub mod vmx;

/// Largest `.vmx` / `.vmsd` accepted. Real ones are a few KiB; a larger
/// file is not a VM configuration.
pub const MAX_CONFIG_BYTES: usize = 1 << 20;
