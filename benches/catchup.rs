//! Catch-up on loopback: a new node joins a mesh that holds 100,000 keys and is timed until
//! it holds them all; the bytes it received are counted.
//!
//! ```sh
//! cargo bench --bench catchup                          # 100,000 keys of 100 bytes, 5 joins
//! cargo bench --bench catchup --features mimalloc      # the allocator the binary ships with
//! cargo bench --bench catchup -- --disk                # the joiner keeps a data directory
//! cargo bench --bench catchup -- --disk --cache-mb 1024 # ... with a 1 GiB page cache
//! cargo bench --bench catchup -- --keys 10000 --value-bytes 1000 --joins 3
//! ```
//!
//! Two nodes (QUIC, mutual TLS, 127.0.0.1) hold the keys (`bench/key-NNNNNNN`, values of
//! `--value-bytes` bytes). Then, `--joins` times, a fresh node starts with the first as its
//! seed and is timed from just before `start` until its replica holds every application key
//! (member records aside; it serves them from then on), and until its storage has written
//! them too (the writer thread trails the merge); it then leaves. Prints each join and the medians. Nothing here is asserted:
//! the figures go to BENCHMARKS.md.

use std::time::{Duration, Instant};

use confmesh::runtime::{Mesh, tls::DevCa};

type Error = Box<dyn std::error::Error + Send + Sync>;

/// How long one join may take before the bench gives up.
const JOIN_DEADLINE: Duration = Duration::from_secs(120);

#[cfg(feature = "mimalloc")]
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[allow(clippy::disallowed_methods, reason = "a benchmark measures wall time")]
fn now() -> Instant {
    Instant::now()
}

struct Args {
    keys: usize,
    value_bytes: usize,
    joins: usize,
    disk: bool,
    /// The joiner's page cache (`--cache-mb`), with `--disk`.
    cache_mb: Option<usize>,
}

impl Args {
    fn parse() -> Result<Args, String> {
        let mut args = Args {
            keys: 100_000,
            value_bytes: 100,
            joins: 5,
            disk: false,
            cache_mb: None,
        };
        let mut it = std::env::args().skip(1);
        while let Some(flag) = it.next() {
            let mut number = || {
                let v = it.next().ok_or(format!("{flag} needs a value"))?;
                v.parse::<usize>().map_err(|_| format!("{flag}: {v:?}"))
            };
            match flag.as_str() {
                "--keys" => args.keys = number()?,
                "--value-bytes" => args.value_bytes = number()?,
                "--joins" => args.joins = number()?.max(1),
                "--disk" => args.disk = true,
                "--cache-mb" => args.cache_mb = Some(number()?),
                // What cargo bench passes to every bench binary.
                "--bench" => {}
                other => return Err(format!("unknown argument {other:?}")),
            }
        }
        Ok(args)
    }
}

/// One timed join.
struct Join {
    ms: f64,
    /// Until storage had written every key.
    written_ms: f64,
    protocol_bytes: u64,
    wire_bytes: u64,
}

async fn load(node: &Mesh, keys: usize, value_bytes: usize) -> Result<(), Error> {
    // A few writers at once: the node task batches what arrives together.
    let tasks: Vec<_> = (0..8)
        .map(|t| {
            let node = node.clone();
            tokio::spawn(async move {
                for i in (t..keys).step_by(8) {
                    let mut value = format!("value-{i:07}-").into_bytes();
                    value.resize(value_bytes, b'x');
                    node.put(&format!("bench/key-{i:07}"), value).await?;
                }
                Ok::<(), Error>(())
            })
        })
        .collect();
    for task in tasks {
        task.await??;
    }
    Ok(())
}

async fn wait_for_keys(node: &Mesh, keys: usize) -> Result<(), Error> {
    let started = now();
    while node.health().await?.keys < keys {
        if started.elapsed() > JOIN_DEADLINE {
            return Err(format!("the node holds fewer than {keys} keys after 120 s").into());
        }
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    Ok(())
}

async fn run(args: &Args) -> Result<Vec<Join>, Error> {
    let ca = DevCa::generate("catch-up bench")?;
    let holder = Mesh::builder()
        .tls(ca.node_config("holder-0")?)
        .start()
        .await?;
    let loading = now();
    load(&holder, args.keys, args.value_bytes).await?;
    let second = Mesh::builder()
        .tls(ca.node_config("holder-1")?)
        .seeds([holder.id().addr.to_string()])
        .start()
        .await?;
    let total = holder.health().await?.keys;
    wait_for_keys(&second, total).await?;
    println!(
        "mesh of 2 holds {} keys of {} bytes (loaded and replicated in {:.1} s)",
        args.keys,
        args.value_bytes,
        loading.elapsed().as_secs_f64()
    );
    // Let membership settle so joins start from a quiet mesh.
    tokio::time::sleep(Duration::from_secs(2)).await;

    let root = tempfile::tempdir()?;
    let mut joins = Vec::new();
    for j in 0..args.joins {
        // Every application key the mesh holds (health does not count member records).
        let target = holder.health().await?.keys;
        let mut builder = Mesh::builder()
            .tls(ca.node_config(&format!("joiner-{j}"))?)
            .seeds([holder.id().addr.to_string()]);
        if args.disk {
            builder = builder.data_dir(root.path().join(format!("joiner-{j}")));
        }
        if let Some(mb) = args.cache_mb {
            builder = builder.cache_bytes(mb << 20);
        }
        let started = now();
        let joiner = builder.start().await?;
        wait_for_keys(&joiner, target).await?;
        let ms = started.elapsed().as_secs_f64() * 1e3;
        // A history read waits until storage has written what the node holds.
        joiner.history("bench/key-0000000").await?;
        let written_ms = started.elapsed().as_secs_f64() * 1e3;
        let join = Join {
            ms,
            written_ms,
            protocol_bytes: joiner.stats().await?.stream_bytes_received,
            wire_bytes: joiner.wire_stats().udp_bytes_received,
        };
        println!(
            "join {j}: caught up in {:.0} ms (written in {:.0} ms); received {} bytes of \
             messages, {} bytes of UDP",
            join.ms, join.written_ms, join.protocol_bytes, join.wire_bytes
        );
        joins.push(join);
        joiner.shutdown().await;
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
    second.shutdown().await;
    holder.shutdown().await;
    Ok(joins)
}

fn main() -> Result<(), Error> {
    let args = Args::parse().map_err(|e| format!("catch-up bench: {e}"))?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    let mut joins = runtime.block_on(run(&args))?;
    let mut written: Vec<f64> = joins.iter().map(|j| j.written_ms).collect();
    written.sort_by(f64::total_cmp);
    joins.sort_by(|a, b| a.ms.total_cmp(&b.ms));
    let median = &joins[joins.len() / 2];
    println!(
        "| {} keys × {} B | {} | {:.0} ms | {:.0} ms | {:.0} ms | {:.0} ms | {:.1} MB | {:.1} MB |",
        args.keys,
        args.value_bytes,
        if args.disk { "data dir" } else { "in memory" },
        joins[0].ms,
        median.ms,
        joins[joins.len() - 1].ms,
        written[written.len() / 2],
        median.protocol_bytes as f64 / 1e6,
        median.wire_bytes as f64 / 1e6,
    );
    Ok(())
}
