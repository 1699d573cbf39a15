//! A node receiving whatever a peer sends, in any order: SWIM datagrams (foca's codec),
//! stream messages (pushes, digests, deltas, snapshot chunks), interleaved with timers. No
//! input panics the node.
//!
//! Input: a sequence of frames `[kind: u8][len: u16 LE][len bytes]`; kind's low bit picks a
//! datagram or a stream message, bit 1 advances time by a second before it.
#![no_main]

use std::{
    net::SocketAddr,
    time::{Duration, Instant},
};

use confmesh::proto::{
    WriterId,
    node::{Config, Node, NodeId},
};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let me: SocketAddr = "127.0.0.1:7000".parse().expect("addr");
    let peer: SocketAddr = "127.0.0.1:7001".parse().expect("addr");
    let id = NodeId {
        addr: me,
        writer: WriterId(1),
        generation: 1,
    };
    let start = Instant::now();
    let mut now = start;
    let mut node = Node::new(Config::lan(id, 8, 7), now, 1_000);
    node.join(now, &[peer]);
    let mut rest = data;
    while let [kind, lo, hi, tail @ ..] = rest {
        let len = usize::from(u16::from_le_bytes([*lo, *hi])).min(tail.len());
        let (bytes, after) = tail.split_at(len);
        rest = after;
        if kind & 2 != 0 {
            now += Duration::from_secs(1);
            node.handle_timeout(now);
        }
        if kind & 1 == 0 {
            node.handle_datagram(now, peer, bytes);
        } else {
            node.handle_stream_message(now, peer, bytes);
        }
        while node.poll_transmit().is_some() {}
        while node.poll_event().is_some() {}
        while let Some(version) = node.poll_persist() {
            let _ = node.handle_persisted(now, version.dot.counter);
        }
    }
});
