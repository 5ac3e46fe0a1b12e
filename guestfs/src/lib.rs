//! `guestfs`: read-only access to virtual disks, volumes and guest filesystems.
//!
//! Data flows one way: block sources ([`block`]) → virtual disks ([`disk`]) →
//! volumes → filesystems. Nothing in this crate can write to a source: every
//! file is opened read-only and no trait here has a write method.
//!
//! The crate knows nothing of LUNs, jobs or command lines; the `vbproxy`
//! binary composes it.
#![forbid(unsafe_code)]

pub mod block;
pub mod cache;
pub mod datastore;
pub mod disk;
pub mod error;
pub mod fs;
pub mod le;
pub mod namespace;
pub mod os;
pub mod tree;
pub mod vm;
pub mod vmfs;
pub mod volume;

pub use error::{Error, Result};
