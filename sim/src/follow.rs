//! `--follow N`: what the mesh believes of one node, told as it changes, to explain a false
//! positive. Reads node state only: a followed run keeps the trace hash of the same run
//! unfollowed.
//!
//! Lines, all prefixed `follow`:
//! - `view`: a node's membership view of the followed node changed (and how many nodes
//!   now hold each view);
//! - `send` / `recv`: a SWIM datagram to or from the followed node (kind, the sender's
//!   incarnation, updates about the followed node it carries, whether the network dropped it);
//! - `event`: a membership event the followed node reported about itself or others reported
//!   about it.

use std::{collections::BTreeMap, fmt::Write as _, net::SocketAddr, time::Duration};

use confmesh::proto::node::{self, MemberState, MemberView, Node};

/// The followed node and every node's last view of it.
pub struct Follow {
    /// The followed node's index.
    pub node: usize,
    addr: SocketAddr,
    views: Vec<Option<MemberView>>,
    /// How many nodes hold each (generation, state, incarnation) view.
    census: BTreeMap<(u64, u8, u16), usize>,
}

fn state_code(s: MemberState) -> u8 {
    match s {
        MemberState::Alive => 0,
        MemberState::Suspect => 1,
        MemberState::Down => 2,
    }
}

fn state_name(code: u8) -> &'static str {
    ["Alive", "Suspect", "Down"][usize::from(code.min(2))]
}

fn show(view: Option<MemberView>) -> String {
    view.map_or("unknown".into(), |v| {
        format!(
            "{}@{} gen {}",
            state_name(state_code(v.state)),
            v.incarnation,
            v.id.generation
        )
    })
}

impl Follow {
    pub fn new(node: usize, addr: SocketAddr, nodes: usize) -> Follow {
        Follow {
            node,
            addr,
            views: vec![None; nodes],
            census: BTreeMap::new(),
        }
    }

    /// Node `j` just handled something: records its view of the followed node if it changed.
    pub fn observe(&mut self, t: Duration, j: usize, node: &Node) {
        if j == self.node {
            return;
        }
        let view = node.membership_view(self.addr);
        let old = self.views[j];
        if view == old {
            return;
        }
        let key = |v: MemberView| (v.id.generation, state_code(v.state), v.incarnation);
        if let Some(o) = old
            && let Some(count) = self.census.get_mut(&key(o))
        {
            *count -= 1;
        }
        if let Some(v) = view {
            *self.census.entry(key(v)).or_default() += 1;
        }
        self.views[j] = view;
        // Restored views (unknown -> Alive@0) are the start, not news.
        if old.is_none() && view.is_some_and(|v| v.state == MemberState::Alive) {
            return;
        }
        let mut census = String::new();
        for (&(generation, state, inc), &count) in self.census.iter().filter(|(_, c)| **c > 0) {
            let _ = write!(census, " {}@{inc}/g{generation}={count}", state_name(state));
        }
        println!(
            "follow t={:.3} view node {j}: {} -> {} |{census}",
            t.as_secs_f64(),
            show(old),
            show(view)
        );
    }

    /// A datagram between `from` and `to` was sent (`dropped`: lost on the way) or delivered.
    pub fn datagram(&self, t: Duration, what: &str, from: usize, to: usize, bytes: &[u8]) {
        if from != self.node && to != self.node {
            return;
        }
        let Some(packet) = node::describe_membership_datagram(bytes) else {
            return;
        };
        let about: Vec<String> = packet
            .updates
            .iter()
            .filter(|u| u.id.addr == self.addr)
            .map(|u| show(Some(*u)))
            .collect();
        let kind = packet.kind.split([' ', '(', '{']).next().unwrap_or("");
        println!(
            "follow t={:.3} {what} {from} -> {to}: {kind} src@{} ({} updates{}{}) sender's view {}",
            t.as_secs_f64(),
            packet.src_incarnation,
            packet.updates.len(),
            if about.is_empty() { "" } else { ", about it: " },
            about.join(", "),
            show(self.views[from]),
        );
    }

    /// A membership event node `j` reported.
    pub fn event(&self, t: Duration, j: usize, event: &node::Event) {
        let about_it = match event {
            node::Event::MemberDown(id)
            | node::Event::MemberLeft(id)
            | node::Event::MemberUp(id) => id.addr == self.addr,
            node::Event::Rejoined(_) => j == self.node,
            node::Event::KeyChanged { .. } => false,
        };
        if about_it {
            println!(
                "follow t={:.3} event at node {j}: {event:?}",
                t.as_secs_f64()
            );
        }
    }
}
