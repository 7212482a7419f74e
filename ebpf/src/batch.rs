//! Batched map writes (`BPF_MAP_UPDATE_BATCH`, `BPF_MAP_DELETE_BATCH`, Linux 5.6), which
//! aya does not wrap: a full sync of 100,000 backends is a few system calls, not 100,000.

use std::os::fd::{AsRawFd, BorrowedFd};

const BPF_MAP_UPDATE_BATCH: libc::c_long = 26;
const BPF_MAP_DELETE_BATCH: libc::c_long = 27;

/// The `batch` member of the kernel's `union bpf_attr`.
#[repr(C)]
#[derive(Default)]
struct BatchAttr {
    in_batch: u64,
    out_batch: u64,
    keys: u64,
    values: u64,
    count: u32,
    map_fd: u32,
    elem_flags: u64,
    flags: u64,
}

/// Elements per system call: the kernel copies each batch from user memory in one go.
const CHUNK: usize = 16384;

/// Writes `keys[i] -> values[i]` for every i. `K` and `V` must be the map's exact key and
/// value layouts (aya's `Pod` types of `crate`), which the caller's typed map has checked.
pub fn update<K: aya::Pod, V: aya::Pod>(
    map: BorrowedFd<'_>,
    keys: &[K],
    values: &[V],
) -> std::io::Result<()> {
    assert_eq!(keys.len(), values.len(), "one value per key");
    for (k, v) in keys.chunks(CHUNK).zip(values.chunks(CHUNK)) {
        let mut attr = BatchAttr {
            keys: k.as_ptr() as u64,
            values: v.as_ptr() as u64,
            count: k.len() as u32,
            map_fd: map.as_raw_fd() as u32,
            ..Default::default()
        };
        call(BPF_MAP_UPDATE_BATCH, &mut attr)?;
    }
    Ok(())
}

/// Deletes every key of `keys`; keys already absent fail the call (ENOENT), so callers
/// pass only keys they know are there.
pub fn delete<K: aya::Pod>(map: BorrowedFd<'_>, keys: &[K]) -> std::io::Result<()> {
    for k in keys.chunks(CHUNK) {
        let mut attr = BatchAttr {
            keys: k.as_ptr() as u64,
            count: k.len() as u32,
            map_fd: map.as_raw_fd() as u32,
            ..Default::default()
        };
        call(BPF_MAP_DELETE_BATCH, &mut attr)?;
    }
    Ok(())
}

#[expect(
    unsafe_code,
    reason = "the bpf(2) system call has no safe wrapper for batches"
)]
fn call(cmd: libc::c_long, attr: &mut BatchAttr) -> std::io::Result<()> {
    // SAFETY: `attr` is a valid, fully initialised prefix of `union bpf_attr` for the batch
    // commands (the kernel accepts a shorter size and zero-fills the rest); the key and
    // value pointers it holds point into slices that outlive this call and hold `count`
    // elements of the map's layouts; the kernel writes back only `attr.count`.
    let rc = unsafe {
        libc::syscall(
            libc::SYS_bpf,
            cmd,
            attr as *mut BatchAttr,
            size_of::<BatchAttr>() as libc::c_uint,
        )
    };
    if rc < 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(())
}
