//! Measures how long a write takes to reach every node, with N real nodes (QUIC, mutual TLS)
//! in one process on 127.0.0.1.
//!
//! ```sh
//! cargo run --release --example loopback -- --nodes 25 --writes 200 [--disk]
//! ```
//!
//! Every node subscribes to its events; a write's convergence time is from just before `put`
//! until the last node reports the key changed. Writes go one at a time from random nodes,
//! 20 ms apart. Prints p50, p99 and max.

use std::{
    collections::HashMap,
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use confmesh::{
    proto::node::Event,
    runtime::{Mesh, tls::DevCa},
};

fn arg(name: &str, default: usize) -> usize {
    let args: Vec<String> = std::env::args().collect();
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

type Arrivals = Arc<Mutex<HashMap<String, Vec<Instant>>>>;

#[allow(clippy::disallowed_methods, reason = "a benchmark measures wall time")]
fn now() -> Instant {
    Instant::now()
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let n = arg("--nodes", 10).max(2);
    let writes = arg("--writes", 100).max(1);
    // `--disk`: every node keeps its replica in a data directory (under the system temp dir),
    // so each write is fsynced before it is acknowledged.
    let disk = std::env::args().any(|a| a == "--disk");
    let root = std::env::temp_dir().join(format!("confmesh-loopback-{}", std::process::id()));
    let ca = DevCa::generate("loopback bench")?;
    let mut nodes: Vec<Mesh> = Vec::new();
    for i in 0..n {
        let mut builder = Mesh::builder()
            .tls(ca.node_config(&format!("node-{i}"))?)
            .expected_members(n);
        if disk {
            builder = builder.data_dir(root.join(format!("node-{i}")));
        }
        if let Some(first) = nodes.first() {
            builder = builder.seeds([first.id().addr.to_string()]);
        }
        nodes.push(builder.start().await?);
    }
    let started = now();
    loop {
        let mut full = 0;
        for node in &nodes {
            full += usize::from(node.members().await?.len() == n);
        }
        if full == n {
            break;
        }
        if started.elapsed() > Duration::from_secs(60) {
            return Err(format!("only {full}/{n} nodes see everyone after 60 s").into());
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    println!(
        "{n} nodes joined in {:.2} s",
        started.elapsed().as_secs_f64()
    );
    // Let views settle, as a running cluster's have.
    tokio::time::sleep(Duration::from_secs(2)).await;

    let arrivals: Arrivals = Arc::default();
    for node in &nodes {
        let mut events = node.subscribe();
        let arrivals = arrivals.clone();
        tokio::spawn(async move {
            while let Ok(event) = events.recv().await {
                if let Event::KeyChanged { key, .. } = event {
                    let at = now();
                    arrivals
                        .lock()
                        .map(|mut a| a.entry(key.as_str().to_string()).or_default().push(at))
                        .ok();
                }
            }
        });
    }

    let mut issued = Vec::new();
    for w in 0..writes {
        let key = format!("bench/key-{w}");
        let from = &nodes[w * 7919 % n];
        let at = now();
        from.put(&key, format!("value-{w}").into_bytes()).await?;
        issued.push((key, at));
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let deadline = now() + Duration::from_secs(30);
    let everywhere = |arrivals: &HashMap<String, Vec<Instant>>, key: &str| {
        arrivals.get(key).filter(|a| a.len() >= n).cloned()
    };
    loop {
        let done = {
            let arrivals = arrivals.lock().map_err(|_| "poisoned")?;
            issued
                .iter()
                .all(|(k, _)| everywhere(&arrivals, k).is_some())
        };
        if done || now() > deadline {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let mut times = Vec::new();
    {
        let arrivals = arrivals.lock().map_err(|_| "poisoned")?;
        for (key, at) in &issued {
            match everywhere(&arrivals, key).and_then(|a| a.into_iter().max()) {
                Some(last) => times.push(last.duration_since(*at).as_secs_f64() * 1e3),
                None => println!("{key} did not reach every node"),
            }
        }
    }
    times.sort_by(f64::total_cmp);
    let pct = |q: f64| times[((times.len() as f64 * q).ceil() as usize).clamp(1, times.len()) - 1];
    if times.is_empty() {
        return Err("no write reached every node".into());
    }
    println!(
        "nodes={n} writes={} converged={} p50={:.1} ms p99={:.1} ms max={:.1} ms",
        writes,
        times.len(),
        pct(0.5),
        pct(0.99),
        pct(1.0)
    );
    for node in nodes {
        node.shutdown().await;
    }
    let _ = std::fs::remove_dir_all(&root);
    Ok(())
}
