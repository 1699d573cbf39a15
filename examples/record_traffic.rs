//! Records real protocol traffic, as seed corpora for the fuzz targets (`fuzz/`): three
//! sans-IO nodes join, write, delete, and sync through an in-process network for a minute of
//! simulated time, and every message one of them sends is written to
//! `<out>/wire_decode/<n>.bin` (the message) and `<out>/node_input/<n>.bin` (a frame of the
//! `node_input` target).
//!
//! ```text
//! cargo run --example record_traffic -- fuzz/corpus
//! ```

use std::{
    collections::VecDeque,
    net::SocketAddr,
    path::PathBuf,
    time::{Duration, Instant},
};

use bytes::Bytes;
use confmesh::proto::{
    Key, WriterId,
    node::{Channel, Config, Node, NodeId},
};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let out = PathBuf::from(
        std::env::args()
            .nth(1)
            .ok_or("usage: record_traffic <out dir>")?,
    );
    for dir in ["wire_decode", "node_input"] {
        std::fs::create_dir_all(out.join(dir))?;
    }
    #[allow(
        clippy::disallowed_methods,
        reason = "the origin of simulated time; nothing reads the clock after it"
    )]
    let mut now = Instant::now();
    let addr = |i: u16| SocketAddr::from(([127, 0, 0, 1], 7000 + i));
    let mut nodes: Vec<Node> = (0..3u16)
        .map(|i| {
            let id = NodeId {
                addr: addr(i),
                writer: WriterId(u64::from(i) + 1),
                generation: 1,
            };
            Node::new(Config::lan(id, 3, u64::from(i)), now, 1_000)
        })
        .collect();
    for node in nodes.iter_mut().skip(1) {
        node.join(now, &[addr(0)]);
    }
    let mut recorded = 0usize;
    let mut in_flight: VecDeque<(usize, SocketAddr, Channel, Bytes)> = VecDeque::new();
    for tick in 0..600u64 {
        now += Duration::from_millis(100);
        if tick % 50 == 10 {
            let writer = (tick / 50) as usize % 3;
            let key = Key::new(&format!("app/key-{}", tick % 7))?;
            let _ = nodes[writer].put(now, key, Bytes::from(format!("value {tick}")));
        }
        if tick == 400 {
            nodes[1].delete(now, Key::new("app/key-3")?);
        }
        for (i, node) in nodes.iter_mut().enumerate() {
            node.handle_timeout(now);
            while let Some(version) = node.poll_persist() {
                let _ = node.handle_persisted(now, version.dot.counter);
            }
            while node.poll_event().is_some() {}
            while let Some(t) = node.poll_transmit() {
                if i == 0 && recorded < 400 {
                    std::fs::write(
                        out.join("wire_decode").join(format!("{recorded}.bin")),
                        &t.bytes,
                    )?;
                    let kind = u8::from(matches!(t.channel, Channel::Stream));
                    let len = u16::try_from(t.bytes.len()).unwrap_or(u16::MAX);
                    let mut frame = vec![kind];
                    frame.extend_from_slice(&len.to_le_bytes());
                    frame.extend_from_slice(&t.bytes[..usize::from(len)]);
                    std::fs::write(
                        out.join("node_input").join(format!("{recorded}.bin")),
                        frame,
                    )?;
                    recorded += 1;
                }
                in_flight.push_back((i, t.to, t.channel, t.bytes));
            }
        }
        while let Some((from, to, channel, bytes)) = in_flight.pop_front() {
            let Some(target) = (0..3u16).position(|j| addr(j) == to) else {
                continue;
            };
            let node = &mut nodes[target];
            match channel {
                Channel::Datagram => node.handle_datagram(now, addr(from as u16), &bytes),
                Channel::Stream => node.handle_stream_message(now, addr(from as u16), &bytes),
            }
        }
    }
    println!("recorded {recorded} messages into {}", out.display());
    Ok(())
}
