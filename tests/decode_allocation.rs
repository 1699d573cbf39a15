//! Hostile length fields must not make the decoder allocate what they claim.
//!
//! This is its own test binary because it installs a counting global allocator.
#![allow(clippy::unwrap_used)]

use std::{
    alloc::{GlobalAlloc, Layout, System},
    cell::Cell,
};

use confmesh::proto::wire::{self, MAX_MESSAGE_BYTES, Message};

struct Counting;

thread_local! {
    /// The largest single allocation made on this thread since the last reset.
    static LARGEST: Cell<usize> = const { Cell::new(0) };
}

// SAFETY: delegates to the system allocator; only records sizes in a const-initialised
// thread local, which never allocates.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        LARGEST.with(|l| l.set(l.get().max(layout.size())));
        unsafe { System.alloc(layout) }
    }
    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        LARGEST.with(|l| l.set(l.get().max(layout.size())));
        unsafe { System.alloc_zeroed(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        unsafe { System.dealloc(ptr, layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        LARGEST.with(|l| l.set(l.get().max(new_size)));
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static ALLOCATOR: Counting = Counting;

/// Decodes `bytes` and returns the largest single allocation the decode made.
fn largest_allocation_decoding(bytes: &[u8]) -> usize {
    LARGEST.with(|l| l.set(0));
    let result = wire::decode(bytes, MAX_MESSAGE_BYTES);
    assert!(result.is_err(), "hostile input decoded: {result:?}");
    LARGEST.with(Cell::get)
}

#[test]
fn a_byte_buffer_claiming_a_terabyte_allocates_almost_nothing() {
    // Message::Membership (tag 0) whose length prefix claims 2^40 bytes.
    let mut hostile = vec![wire::FORMAT_VERSION, 0, 253];
    hostile.extend_from_slice(&(1u64 << 40).to_le_bytes());
    hostile.extend_from_slice(b"abc");
    let largest = largest_allocation_decoding(&hostile);
    assert!(
        largest <= 4096,
        "allocated {largest} bytes for a {}-byte message",
        hostile.len()
    );
}

#[test]
fn a_key_claiming_sixty_megabytes_allocates_almost_nothing() {
    // Message::Push (tag 2), one version, whose key claims 60 MiB.
    let mut hostile = vec![wire::FORMAT_VERSION, 2, 1, 252];
    hostile.extend_from_slice(&(60u32 << 20).to_le_bytes());
    hostile.extend_from_slice(b"app/key");
    let largest = largest_allocation_decoding(&hostile);
    assert!(
        largest <= 4096,
        "allocated {largest} bytes for a {}-byte message",
        hostile.len()
    );
}

#[test]
fn a_long_message_may_claim_at_most_its_tier() {
    // A 100 KiB message whose buffer claims 60 MiB: its tier (256 KiB) allows 8 x 256 KiB.
    let mut hostile = vec![wire::FORMAT_VERSION, 0, 252];
    hostile.extend_from_slice(&(60u32 << 20).to_le_bytes());
    hostile.resize(100 << 10, 7);
    let largest = largest_allocation_decoding(&hostile);
    assert!(
        largest <= 1 << 20,
        "allocated {largest} bytes for a {}-byte message",
        hostile.len()
    );
}

#[test]
fn valid_large_messages_still_decode() {
    // Integer-heavy content claims up to 8 bytes per encoded byte: a long list of small dots.
    let dots = (1..=400_000u64)
        .map(|s| confmesh::proto::Dot::new(confmesh::proto::WriterId(s % 7), s % 100 + 1))
        .collect();
    let message = Message::IHave { dots };
    let bytes = wire::encode(&message, MAX_MESSAGE_BYTES).unwrap();
    assert_eq!(wire::decode(&bytes, MAX_MESSAGE_BYTES).unwrap(), message);
    let message = Message::Membership(vec![9u8; 3 << 20].into());
    let bytes = wire::encode(&message, MAX_MESSAGE_BYTES).unwrap();
    assert_eq!(wire::decode(&bytes, MAX_MESSAGE_BYTES).unwrap(), message);
}
