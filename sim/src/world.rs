//! The simulated world: replicas, a network with latency, loss and duplication, and a clock.

use std::{cmp::Reverse, collections::BinaryHeap};

use bytes::Bytes;
use confmesh::proto::{
    Dot, Key, Message, Store, StoreConfig, SyncReply, WriterId,
    wire::{self, MAX_MESSAGE_BYTES},
};
use rand::{RngExt, SeedableRng, rngs::Xoshiro256PlusPlus};

/// What a run simulates. Every field is printed before the run starts.
#[derive(Clone, Debug)]
pub struct Params {
    pub seed: u64,
    pub replicas: usize,
    pub writes: usize,
    pub keys: usize,
    pub loss: f64,
    pub duplicate: f64,
    pub latency_ms_min: u64,
    pub latency_ms_max: u64,
    pub write_interval_ms: u64,
    pub anti_entropy_ms: u64,
    pub smoke: bool,
    pub check_replay: bool,
}

impl Params {
    pub const USAGE: &'static str = "usage: confmesh-sim [--seed N] [--replicas N] [--writes N] [--keys N] \
[--loss P] [--duplicate P] [--latency-ms MIN..MAX] [--anti-entropy-ms N] [--smoke] [--check-replay]";

    pub fn parse(args: &[String]) -> Result<Params, String> {
        let mut p = Params {
            seed: 1,
            replicas: 10,
            writes: 200,
            keys: 50,
            loss: 0.05,
            duplicate: 0.02,
            latency_ms_min: 1,
            latency_ms_max: 20,
            write_interval_ms: 10,
            anti_entropy_ms: 500,
            smoke: false,
            check_replay: false,
        };
        let mut it = args.iter();
        while let Some(flag) = it.next() {
            let mut value = || it.next().ok_or_else(|| format!("{flag} needs a value"));
            match flag.as_str() {
                "--seed" => p.seed = number(flag, value()?)?,
                "--replicas" => p.replicas = number(flag, value()?)?,
                "--writes" => p.writes = number(flag, value()?)?,
                "--keys" => p.keys = number(flag, value()?)?,
                "--loss" => p.loss = number(flag, value()?)?,
                "--duplicate" => p.duplicate = number(flag, value()?)?,
                "--anti-entropy-ms" => p.anti_entropy_ms = number(flag, value()?)?,
                "--latency-ms" => {
                    let v = value()?;
                    let (lo, hi) = v
                        .split_once("..")
                        .ok_or_else(|| format!("--latency-ms wants MIN..MAX, got {v:?}"))?;
                    (p.latency_ms_min, p.latency_ms_max) = (number(flag, lo)?, number(flag, hi)?);
                }
                "--smoke" => p.smoke = true,
                "--check-replay" => p.check_replay = true,
                other => return Err(format!("unknown argument {other:?}")),
            }
        }
        if p.replicas < 2
            || p.keys == 0
            || p.anti_entropy_ms == 0
            || p.latency_ms_min > p.latency_ms_max
        {
            return Err(
                "need --replicas >= 2, --keys >= 1, --anti-entropy-ms >= 1 and latency MIN <= MAX"
                    .into(),
            );
        }
        if !(0.0..1.0).contains(&p.loss) || !(0.0..1.0).contains(&p.duplicate) {
            return Err("--loss and --duplicate are probabilities in [0, 1)".into());
        }
        Ok(p)
    }

    pub fn describe(&self) -> String {
        format!(
            "seed={} replicas={} writes={} keys={} loss={} duplicate={} latency_ms={}..{} write_interval_ms={} anti_entropy_ms={}",
            self.seed,
            self.replicas,
            self.writes,
            self.keys,
            self.loss,
            self.duplicate,
            self.latency_ms_min,
            self.latency_ms_max,
            self.write_interval_ms,
            self.anti_entropy_ms
        )
    }

    pub fn command(&self) -> String {
        format!(
            "cargo run -p confmesh-sim --release -- --seed {} --replicas {} --writes {} --keys {} --loss {} --duplicate {} --latency-ms {}..{} --anti-entropy-ms {}",
            self.seed,
            self.replicas,
            self.writes,
            self.keys,
            self.loss,
            self.duplicate,
            self.latency_ms_min,
            self.latency_ms_max,
            self.anti_entropy_ms
        )
    }
}

fn number<T: std::str::FromStr>(flag: &str, v: &str) -> Result<T, String> {
    v.parse().map_err(|_| format!("{flag}: cannot parse {v:?}"))
}

/// What a run measured, and the first check that failed, if any.
pub struct Report {
    pub convergence_ms: Vec<u64>,
    pub messages: u64,
    pub bytes: u64,
    pub end_ms: u64,
    pub trace_hash: u64,
    pub failure: Option<String>,
}

impl Report {
    pub fn summary(&self) -> String {
        let mut c = self.convergence_ms.clone();
        c.sort_unstable();
        let pct = |p: f64| {
            c.get(((c.len() as f64 * p).ceil() as usize).saturating_sub(1))
                .copied()
                .unwrap_or(0)
        };
        format!(
            "  convergence_ms p50={} p99={} max={} over {} writes; messages={} bytes={} sim_end_ms={} trace_hash={:016x} {}",
            pct(0.5),
            pct(0.99),
            c.last().copied().unwrap_or(0),
            c.len(),
            self.messages,
            self.bytes,
            self.end_ms,
            self.trace_hash,
            if self.failure.is_some() {
                "FAILED"
            } else {
                "ok"
            }
        )
    }
}

enum Event {
    Write {
        replica: usize,
    },
    Deliver {
        to: usize,
        from: usize,
        bytes: Bytes,
    },
    AntiEntropy {
        replica: usize,
    },
}

/// Replicas, the event heap ordered by (time, sequence), one RNG for everything.
pub struct World {
    params: Params,
    rng: Xoshiro256PlusPlus,
    now_ms: u64,
    seq: u64,
    heap: BinaryHeap<Reverse<(u64, u64)>>,
    events: std::collections::BTreeMap<u64, Event>,
    replicas: Vec<Store>,
    /// Writes not yet on every replica: (dot, written at).
    pending: Vec<(Dot, u64)>,
    report: Report,
}

impl World {
    pub fn new(params: Params) -> World {
        let replicas = (0..params.replicas)
            .map(|i| Store::new(WriterId(i as u64 + 1), StoreConfig::default()))
            .collect();
        World {
            rng: Xoshiro256PlusPlus::seed_from_u64(params.seed),
            params,
            now_ms: 0,
            seq: 0,
            heap: BinaryHeap::new(),
            events: Default::default(),
            replicas,
            pending: Vec::new(),
            report: Report {
                convergence_ms: Vec::new(),
                messages: 0,
                bytes: 0,
                end_ms: 0,
                trace_hash: FNV_OFFSET,
                failure: None,
            },
        }
    }

    pub fn run(mut self) -> Report {
        for replica in 0..self.params.replicas {
            let first = self.rng.random_range(0..self.params.anti_entropy_ms);
            self.schedule(first, Event::AntiEntropy { replica });
        }
        for i in 0..self.params.writes {
            let replica = self.rng.random_range(0..self.params.replicas);
            self.schedule(
                i as u64 * self.params.write_interval_ms,
                Event::Write { replica },
            );
        }
        let writes_end = self.params.writes as u64 * self.params.write_interval_ms;
        let deadline = writes_end + 60 * self.params.anti_entropy_ms;
        while let Some(Reverse((at, seq))) = self.heap.pop() {
            if at > deadline || (at > writes_end && self.pending.is_empty() && self.converged()) {
                break;
            }
            self.now_ms = at;
            let Some(event) = self.events.remove(&seq) else {
                continue;
            };
            self.step(event);
        }
        self.report.end_ms = self.now_ms;
        self.report.failure = self.check();
        self.report
    }

    fn step(&mut self, event: Event) {
        match event {
            Event::Write { replica } => {
                let key = Key::new(&format!(
                    "app/key-{}",
                    self.rng.random_range(0..self.params.keys)
                ))
                .expect("valid key");
                let store = &mut self.replicas[replica];
                let version = if self.rng.random_bool(0.1) {
                    store.delete(self.now_ms, key)
                } else {
                    let value = Bytes::from(self.rng.random::<u64>().to_le_bytes().to_vec());
                    Some(
                        store
                            .put(self.now_ms, key, value)
                            .expect("value within limits"),
                    )
                };
                if let Some(version) = version {
                    self.trace(1, replica as u64, version.dot.counter);
                    self.pending.push((version.dot, self.now_ms));
                    let message = Message::Push {
                        versions: vec![version],
                    };
                    for to in (0..self.params.replicas).filter(|&to| to != replica) {
                        self.send(replica, to, &message);
                    }
                }
            }
            Event::Deliver { to, from, bytes } => {
                self.trace(2, to as u64, bytes.len() as u64);
                match wire::decode(&bytes, MAX_MESSAGE_BYTES) {
                    Ok(message) => self.receive(to, from, message),
                    Err(e) => {
                        let problem = format!("replica {to} could not decode: {e}");
                        self.report.failure.get_or_insert(problem);
                    }
                }
                self.note_convergence();
            }
            Event::AntiEntropy { replica } => {
                let peer = (replica + self.rng.random_range(1..self.params.replicas))
                    % self.params.replicas;
                let digest = self.replicas[replica].digest().clone();
                self.send(replica, peer, &Message::SyncRequest { digest });
                let next = self.params.anti_entropy_ms;
                self.schedule(next, Event::AntiEntropy { replica });
            }
        }
    }

    fn receive(&mut self, to: usize, from: usize, message: Message) {
        let store = &mut self.replicas[to];
        match message {
            Message::Push { versions } => {
                for v in versions {
                    store.apply(v).expect("valid version");
                }
            }
            Message::SyncRequest { digest } => match store.delta_for(&digest, 64 << 10) {
                SyncReply::Delta(delta) if delta.is_empty() => {}
                SyncReply::Delta(delta) => self.send(to, from, &Message::SyncDelta(delta)),
                SyncReply::SnapshotNeeded => {
                    for chunk in store.snapshot_chunks(64 << 10) {
                        self.send(to, from, &Message::SyncSnapshot(chunk));
                    }
                }
            },
            Message::SyncDelta(delta) => {
                store.apply_delta(delta).expect("valid delta");
            }
            Message::SyncSnapshot(chunk) => {
                store.merge_snapshot(chunk).expect("valid snapshot");
            }
            _ => {}
        }
    }

    fn send(&mut self, from: usize, to: usize, message: &Message) {
        let bytes = wire::encode(message, MAX_MESSAGE_BYTES).expect("encodable");
        self.report.messages += 1;
        self.report.bytes += bytes.len() as u64;
        if self.rng.random_bool(self.params.loss) {
            return;
        }
        let copies = if self.rng.random_bool(self.params.duplicate) {
            2
        } else {
            1
        };
        for _ in 0..copies {
            let latency = self
                .rng
                .random_range(self.params.latency_ms_min..=self.params.latency_ms_max);
            self.schedule(
                latency,
                Event::Deliver {
                    to,
                    from,
                    bytes: bytes.clone(),
                },
            );
        }
    }

    fn schedule(&mut self, after_ms: u64, event: Event) {
        self.seq += 1;
        self.heap.push(Reverse((self.now_ms + after_ms, self.seq)));
        self.events.insert(self.seq, event);
    }

    /// Records the convergence time of every write that has now reached every replica.
    fn note_convergence(&mut self) {
        let replicas = &self.replicas;
        let now = self.now_ms;
        let report = &mut self.report;
        self.pending.retain(|(dot, at)| {
            let everywhere = replicas.iter().all(|r| r.digest().contains(dot));
            if everywhere {
                report.convergence_ms.push(now - at);
            }
            !everywhere
        });
    }

    fn converged(&self) -> bool {
        self.replicas
            .windows(2)
            .all(|w| w[0].digest() == w[1].digest())
    }

    /// The checks every run must pass.
    fn check(&self) -> Option<String> {
        if let Some(f) = &self.report.failure {
            return Some(f.clone());
        }
        if !self.pending.is_empty() {
            return Some(format!(
                "{} writes never reached every replica",
                self.pending.len()
            ));
        }
        let first = &self.replicas[0];
        for (i, r) in self.replicas.iter().enumerate().skip(1) {
            if r.digest() != first.digest() {
                return Some(format!("replica {i} has a different digest from replica 0"));
            }
            let (a, b): (Vec<_>, Vec<_>) = (first.list("").collect(), r.list("").collect());
            if a != b {
                return Some(format!("replica {i} reads differently from replica 0"));
            }
        }
        None
    }

    fn trace(&mut self, kind: u64, node: u64, detail: u64) {
        for word in [self.now_ms, kind, node, detail] {
            for byte in word.to_le_bytes() {
                self.report.trace_hash =
                    (self.report.trace_hash ^ u64::from(byte)).wrapping_mul(FNV_PRIME);
            }
        }
    }
}

const FNV_OFFSET: u64 = 0xcbf2_9ce4_8422_2325;
const FNV_PRIME: u64 = 0x0000_0100_0000_01b3;
