//! The agent under HTTP load: one `confmesh agent` process with a data directory on a real
//! filesystem, alone or with peers joined, driven by keep-alive clients from this process. Prints PUT and GET
//! throughput and latency per concurrency level, and the agent's resident memory as writes
//! accumulate.
//!
//! ```sh
//! cargo bench --bench agent_load                                   # PUT and GET at c = 1, 16, 64
//! cargo bench --bench agent_load -- --rss --puts 250000 --clients 64  # memory over 250k PUTs
//! cargo bench --bench agent_load -- --peers 4                        # with 4 agents joined
//! ```
//!
//! Options: `--puts N` (per concurrency level, default 20,000), `--clients 1,16,64`, `--keys
//! N` (distinct keys, default 10,000), `--value-bytes N` (default 100), `--rss` (print the
//! agent's RSS every 10% of the PUTs), `--cache-mb N` (the agent's `cache_mb`), `--dir PATH`
//! (where the data directory goes; default a temporary directory under `target/`), `--peers N`
//! (agents joined to the measured one, each with its own data directory; the load goes to
//! the first only), `--ops put,get` (which rows to run), `--agent-bin PATH` (another build's
//! `confmesh` binary to run the agents with: an older commit's, driven by the same load).
//! `--versus PATH --rounds N` compares two builds in one run: an agent of this build and one
//! of the build at PATH run side by side (each alone on its own data directory), and N rounds
//! of `--puts` PUTs at the first `--clients` level go to each in turn (the order swapping
//! every round), so both see the same machine: a shared machine's stolen time and the disk's
//! fsync swings fall on both alike. It prints each round and the ratio of the summed rates.
//! Each row also prints the agent's CPU time per request (every thread's, from
//! `/proc/<pid>/task/*/schedstat`, in µs): unlike throughput, it does not depend on how fast
//! the disk syncs.
//! `--idle SECONDS` (with `--peers N`) runs no load: once the N + 1 agents see each other and
//! have settled for 20 s, it reads every agent's CPU time (schedstat, ns) over the window and
//! prints the share of a core each used, as the idle-cost target of issue 23 is stated:
//!
//! ```sh
//! cargo bench --bench agent_load -- --peers 49 --idle 60      # 50 idle agents, 60 s
//! ```
//!
//! `--chitchat N --idle SECONDS` measures the comparison system the same way: N chitchat
//! nodes (Quickwit's scuttlebutt gossip, at its defaults: a 1 s gossip interval, or
//! `--chitchat-interval-ms`), each a process of its own (this bench started again as one
//! node), on 127.0.0.1 with the first as the seed:
//!
//! ```sh
//! cargo bench --bench agent_load -- --chitchat 50 --idle 60   # 50 idle chitchat processes
//! ```
//!
//! `--secret` makes `secret/` a secret prefix (docs/PROTOCOL.md §9) and prints PUT and GET
//! rows for `plain/` and `secret/` keys side by side, with the first (cold) secret read alone:
//!
//! ```sh
//! cargo bench --bench agent_load -- --secret --clients 1,16 --puts 5000
//! ```
//!
//! It asserts nothing.

#[path = "common/schedstat.rs"]
mod schedstat;

use std::{
    io::{BufRead, BufReader},
    path::PathBuf,
    process::{Child, Command, Stdio},
    sync::Arc,
    time::Duration,
};

use anyhow::{Context, bail};
use bytes::Bytes;
use confmesh::api::Client;
use hyper::Method;

const BIN: &str = env!("CARGO_BIN_EXE_confmesh");

struct Options {
    puts: usize,
    clients: Vec<usize>,
    keys: usize,
    value_bytes: usize,
    rss: bool,
    cache_mb: Option<usize>,
    dir: Option<PathBuf>,
    /// Agents joined to the measured one (each with a data directory of its own).
    peers: usize,
    /// The rows to run.
    ops: Vec<Method>,
    /// The `confmesh` binary the agents run.
    agent_bin: PathBuf,
    /// Another build's binary to compare with, round by round.
    versus: Option<PathBuf>,
    /// Rounds of the comparison.
    rounds: usize,
    /// `--idle SECONDS`: measure the idle agents' CPU over this window instead of loading.
    idle: Option<u64>,
    /// `--secret`: rows for a secret prefix beside plain ones.
    secret: bool,
    /// `--chitchat N`: with `--idle`, N chitchat processes instead of agents.
    chitchat: Option<usize>,
    /// chitchat's gossip interval.
    chitchat_interval: Duration,
}

fn options() -> anyhow::Result<Options> {
    let mut o = Options {
        puts: 20_000,
        clients: vec![1, 16, 64],
        keys: 10_000,
        value_bytes: 100,
        rss: false,
        cache_mb: None,
        dir: None,
        peers: 0,
        ops: vec![Method::PUT, Method::GET],
        agent_bin: PathBuf::from(BIN),
        versus: None,
        rounds: 10,
        idle: None,
        secret: false,
        chitchat: None,
        chitchat_interval: Duration::from_secs(1),
    };
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        let mut value = || args.next().context(format!("{arg} needs a value"));
        match arg.as_str() {
            "--puts" => o.puts = value()?.parse()?,
            "--clients" => {
                o.clients = value()?
                    .split(',')
                    .map(str::parse)
                    .collect::<Result<_, _>>()?;
            }
            "--keys" => o.keys = value()?.parse()?,
            "--value-bytes" => o.value_bytes = value()?.parse()?,
            "--rss" => o.rss = true,
            "--cache-mb" => o.cache_mb = Some(value()?.parse()?),
            "--dir" => o.dir = Some(value()?.into()),
            "--peers" => o.peers = value()?.parse()?,
            "--ops" => {
                o.ops = value()?
                    .split(',')
                    .map(|op| match op {
                        "put" => Ok(Method::PUT),
                        "get" => Ok(Method::GET),
                        other => bail!("unknown op {other} (put, get)"),
                    })
                    .collect::<Result<_, _>>()?;
            }
            "--agent-bin" => o.agent_bin = value()?.into(),
            "--versus" => o.versus = Some(value()?.into()),
            "--rounds" => o.rounds = value()?.parse()?,
            "--idle" => o.idle = Some(value()?.parse()?),
            "--secret" => o.secret = true,
            "--chitchat" => o.chitchat = Some(value()?.parse()?),
            "--chitchat-interval-ms" => {
                o.chitchat_interval = Duration::from_millis(value()?.parse()?);
            }
            "--bench" => {}
            other => bail!("unknown option {other}"),
        }
    }
    Ok(o)
}

/// The agent process; killed when dropped.
struct Agent {
    child: Child,
    http: String,
    gossip: String,
}

impl Drop for Agent {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Agent {
    /// Starts an agent on `dir` (a `--dev` agent, whose certificates are made there unless
    /// already present), joining `join` if given.
    fn start(
        bin: &std::path::Path,
        dir: &std::path::Path,
        cache_mb: Option<usize>,
        join: Option<&str>,
    ) -> anyhow::Result<Agent> {
        let mut command = Command::new(bin);
        command
            .args(["agent", "--dev", "--gossip-addr", "127.0.0.1:0"])
            .args(["--http-addr", "127.0.0.1:0", "--data-dir"])
            .arg(dir)
            .env("RUST_LOG", "warn")
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit());
        if let Some(mb) = cache_mb {
            command.env("CONFMESH_CACHE_MB", mb.to_string());
        }
        if let Some(seed) = join {
            command.args(["--join", seed]);
        }
        let mut child = command.spawn().context("start the agent")?;
        let stdout = child.stdout.take().context("stdout")?;
        let mut lines = BufReader::new(stdout).lines();
        let (mut http, mut gossip) = (None, None);
        for line in lines.by_ref() {
            let line = line?;
            if let Some(addr) = line.trim().strip_prefix("gossip:") {
                gossip = addr.split_whitespace().next().map(str::to_string);
            }
            if let Some(addr) = line.trim().strip_prefix("http:") {
                http = Some(addr.trim().trim_start_matches("http://").to_string());
                break;
            }
        }
        let http = http.context("the agent printed no HTTP address")?;
        let gossip = gossip.context("the agent printed no gossip address")?;
        // Keep reading, so the agent's output never blocks.
        std::thread::spawn(move || lines.for_each(drop));
        Ok(Agent {
            child,
            http,
            gossip,
        })
    }

    /// CPU time of every thread of the agent so far, in ns (from each thread's schedstat).
    fn cpu_ns(&self) -> u64 {
        schedstat::threads_cpu_ns(&format!("/proc/{}/task", self.child.id()))
    }

    /// Resident memory in kB, from /proc.
    fn rss_kb(&self) -> Option<u64> {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.child.id())).ok()?;
        status
            .lines()
            .find_map(|l| l.strip_prefix("VmRSS:"))
            .and_then(|v| v.split_whitespace().next())
            .and_then(|v| v.parse().ok())
    }
}

/// Runs `total` requests from `clients` concurrent keep-alive clients; returns the latencies.
#[allow(
    clippy::too_many_arguments,
    reason = "one load row: each argument is one of its dimensions"
)]
async fn run(
    client: &Client,
    method: Method,
    total: usize,
    clients: usize,
    keys: usize,
    value: Bytes,
    offset: usize,
    prefix: &'static str,
) -> anyhow::Result<(Duration, Vec<Duration>)> {
    #[allow(clippy::disallowed_methods, reason = "a benchmark measures wall time")]
    let started = std::time::Instant::now();
    let next = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..clients {
        let (client, method, value, next) = (
            client.clone(),
            method.clone(),
            value.clone(),
            Arc::clone(&next),
        );
        tasks.spawn(async move {
            let mut latencies = Vec::new();
            loop {
                let i = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                if i >= total {
                    return Ok::<_, anyhow::Error>(latencies);
                }
                let path = format!("/v1/kv/{prefix}key-{}", (offset + i) % keys);
                let body = if method == Method::PUT {
                    value.clone()
                } else {
                    Bytes::new()
                };
                #[allow(clippy::disallowed_methods, reason = "a benchmark measures wall time")]
                let sent = std::time::Instant::now();
                let reply = client.call(method.as_str(), &path, body).await?;
                if !(200..300).contains(&reply.status) {
                    bail!("{method} {path}: {}", reply.status);
                }
                latencies.push(sent.elapsed());
            }
        });
    }
    let mut all = Vec::with_capacity(total);
    while let Some(result) = tasks.join_next().await {
        all.extend(result??);
    }
    all.sort();
    Ok((started.elapsed(), all))
}

/// Times 100 rounds of a 4 KiB write and an fdatasync of a file in `dir`; p50 and p99 in ms.
fn fsync_latency(dir: &std::path::Path) -> anyhow::Result<(f64, f64)> {
    use std::io::Write;
    let path = dir.join("fsync-probe");
    let mut file = std::fs::File::create(&path)?;
    let block = [0u8; 4096];
    let mut samples = Vec::with_capacity(100);
    for _ in 0..100 {
        #[allow(clippy::disallowed_methods, reason = "a benchmark measures wall time")]
        let started = std::time::Instant::now();
        file.write_all(&block)?;
        file.sync_data()?;
        samples.push(started.elapsed());
    }
    std::fs::remove_file(&path)?;
    samples.sort();
    Ok((percentile(&samples, 0.5), percentile(&samples, 0.99)))
}

/// Waits (up to 30 s) until the agent lists `n` members, itself included.
async fn wait_for_members(client: &Client, n: usize) -> anyhow::Result<()> {
    for _ in 0..1_200 {
        let reply = client.call("GET", "/v1/members", Bytes::new()).await?;
        let members: serde_json::Value = serde_json::from_slice(&reply.body)?;
        if members["members"].as_array().is_some_and(|m| m.len() >= n) {
            return Ok(());
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    bail!("the peers did not join within 120 s")
}

/// One table row: `label`, then requests/s, p50, p99 and max latency (ms) and the agent's CPU
/// per request (µs) over `requests` requests.
fn print_row(label: &str, requests: usize, elapsed: Duration, sorted: &[Duration], cpu_ns: u64) {
    println!(
        "{label}\t{:.0}\t{:.2}\t{:.2}\t{:.2}\t{:.1}",
        requests as f64 / elapsed.as_secs_f64(),
        percentile(sorted, 0.5),
        percentile(sorted, 0.99),
        percentile(sorted, 1.0),
        cpu_ns as f64 / 1e3 / requests as f64,
    );
}

fn percentile(sorted: &[Duration], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let i = ((sorted.len() as f64 * p).ceil() as usize).clamp(1, sorted.len()) - 1;
    sorted[i].as_secs_f64() * 1e3
}

/// `--idle`: the share of a core each of the processes `pids` (`what`: agents, chitchat
/// nodes) uses over `seconds` with nothing to do (after 20 s to settle: joins, first
/// anti-entropy rounds, member records).
async fn idle(what: &str, pids: &[u32], seconds: u64) -> anyhow::Result<()> {
    let cpu_ns = |pid: &u32| schedstat::threads_cpu_ns(&format!("/proc/{pid}/task"));
    tokio::time::sleep(Duration::from_secs(20)).await;
    let before: Vec<u64> = pids.iter().map(cpu_ns).collect();
    #[allow(clippy::disallowed_methods, reason = "a benchmark measures wall time")]
    let started = std::time::Instant::now();
    tokio::time::sleep(Duration::from_secs(seconds)).await;
    let wall_ns = started.elapsed().as_nanos() as f64;
    let mut shares: Vec<f64> = pids
        .iter()
        .zip(before)
        .map(|(pid, b)| cpu_ns(pid).saturating_sub(b) as f64 / wall_ns * 100.0)
        .collect();
    shares.sort_by(f64::total_cmp);
    let mean = shares.iter().sum::<f64>() / shares.len().max(1) as f64;
    println!(
        "agent_load --idle: {} {what}, {seconds} s window: % of a core per process: mean {mean:.3}, min {:.3}, median {:.3}, max {:.3}",
        pids.len(),
        shares.first().copied().unwrap_or(0.0),
        shares.get(shares.len() / 2).copied().unwrap_or(0.0),
        shares.last().copied().unwrap_or(0.0),
    );
    Ok(())
}

/// `--secret`: makes `secret/` a secret prefix of the agent's node (a policy root, a grant of
/// `write` over every key to the node, and a keyring entry naming it as the reader, all with
/// an admin certificate of the agent's CA), then measures PUT and GET on `plain/` and
/// `secret/` keys alike, interleaved per concurrency level. The first GET of a secret, which
/// opens the generation's key, is timed alone (cold), then the first read of every value
/// (each opened once); the rows read values already opened (warm, from the agent's
/// in-memory cache). Values are sealed at the agent on PUT.
async fn secret_rows(
    o: &Options,
    agent: &Agent,
    client: &Client,
    dir: &std::path::Path,
) -> anyhow::Result<()> {
    let cli = |args: &[&str]| -> anyhow::Result<()> {
        let out = Command::new(BIN)
            .args(args)
            .args(["--addr", &agent.http])
            .output()?;
        if !out.status.success() {
            bail!(
                "confmesh {}: {}",
                args.join(" "),
                String::from_utf8_lossy(&out.stderr)
            );
        }
        Ok(())
    };
    let made = Command::new(BIN)
        .args(["cert", "admin", "--name", "bench", "--ca-dir"])
        .arg(dir.join("tls"))
        .arg("--out")
        .arg(dir)
        .output()?;
    if !made.status.success() {
        bail!("cert admin: {}", String::from_utf8_lossy(&made.stderr));
    }
    let cert = dir.join("admin-bench.pem");
    let key = dir.join("admin-bench.key");
    let (cert, key) = (
        cert.to_str().context("path")?,
        key.to_str().context("path")?,
    );
    let admin = ["--admin-cert", cert, "--admin-key", key];
    let with_admin = |args: &[&str]| {
        let mut all = args.to_vec();
        all.extend(admin);
        cli(&all)
    };
    with_admin(&["acl", "init"])?;
    with_admin(&["acl", "grant", "node:dev", "write", ""])?;
    with_admin(&["secret", "init", "secret/", "--reader", "node:dev"])?;
    let value = Bytes::from(vec![b'v'; o.value_bytes]);
    println!(
        "agent_load --secret: one agent, {} keys per prefix, {}-byte values, {} requests per row, keep-alive clients",
        o.keys, o.value_bytes, o.puts
    );
    for prefix in ["plain/", "secret/"] {
        run(
            client,
            Method::PUT,
            o.keys,
            16,
            o.keys,
            value.clone(),
            0,
            prefix,
        )
        .await?;
    }
    let (_, cold) = run(
        client,
        Method::GET,
        1,
        1,
        o.keys,
        value.clone(),
        0,
        "secret/",
    )
    .await?;
    println!(
        "secret GET cold (opens the generation's key): {:.2} ms",
        percentile(&cold, 1.0)
    );
    println!("op\tprefix\tclients\trequests/s\tp50 ms\tp99 ms\tmax ms\tagent CPU µs/request");
    for method in o.ops.clone() {
        if method == Method::GET {
            // Each value's first read opens it (the PUT rows wrote new ones); the GET rows
            // after it read values opened before, from the agent's in-memory cache.
            let (elapsed, first) = run(
                client,
                Method::GET,
                o.keys,
                1,
                o.keys,
                value.clone(),
                0,
                "secret/",
            )
            .await?;
            println!(
                "GET\tsecret/ first read\t1\t{:.0}\t{:.2}\t{:.2}\t{:.2}\t-",
                o.keys as f64 / elapsed.as_secs_f64(),
                percentile(&first, 0.5),
                percentile(&first, 0.99),
                percentile(&first, 1.0),
            );
        }
        for &clients in &o.clients {
            for prefix in ["plain/", "secret/"] {
                let cpu_before = agent.cpu_ns();
                let (elapsed, latencies) = run(
                    client,
                    method.clone(),
                    o.puts,
                    clients,
                    o.keys,
                    value.clone(),
                    0,
                    prefix,
                )
                .await?;
                let cpu_ns = agent.cpu_ns().saturating_sub(cpu_before);
                let row = format!("{method}\t{prefix}\t{clients}");
                print_row(&row, o.puts, elapsed, &latencies, cpu_ns);
            }
        }
    }
    Ok(())
}

/// `--versus`: rounds of PUTs to an agent of each build in turn.
async fn versus(
    o: &Options,
    other: &std::path::Path,
    base: &std::path::Path,
) -> anyhow::Result<()> {
    let clients = o.clients.first().copied().unwrap_or(64);
    let value = Bytes::from(vec![b'v'; o.value_bytes]);
    let mut agents = Vec::new();
    for bin in [o.agent_bin.as_path(), other] {
        let dir = tempfile::tempdir_in(base)?;
        let agent = Agent::start(bin, dir.path(), o.cache_mb, None)?;
        let client = Client::new(&agent.http, None)?;
        run(
            &client,
            Method::PUT,
            o.keys,
            16,
            o.keys,
            value.clone(),
            0,
            "load/",
        )
        .await?;
        agents.push((dir, agent, client, 0.0f64, 0u64));
    }
    println!(
        "agent_load --versus: {} rounds of {} PUTs at {clients} clients to each agent in turn; {}-byte values, {} keys",
        o.rounds, o.puts, o.value_bytes, o.keys
    );
    println!("round\tthis build PUT/s\tCPU µs/PUT\tother build PUT/s\tCPU µs/PUT\tratio");
    for round in 0..o.rounds {
        let mut rates = [0.0f64; 2];
        let mut cpus = [0.0f64; 2];
        let order: [usize; 2] = if round % 2 == 0 { [0, 1] } else { [1, 0] };
        for i in order {
            let (_, agent, client, seconds, cpu_ns) = &mut agents[i];
            let before = agent.cpu_ns();
            let (elapsed, _) = run(
                client,
                Method::PUT,
                o.puts,
                clients,
                o.keys,
                value.clone(),
                round * o.puts,
                "load/",
            )
            .await?;
            let used = agent.cpu_ns().saturating_sub(before);
            *seconds += elapsed.as_secs_f64();
            *cpu_ns += used;
            rates[i] = o.puts as f64 / elapsed.as_secs_f64();
            cpus[i] = used as f64 / 1e3 / o.puts as f64;
        }
        println!(
            "{round}\t{:.0}\t{:.1}\t{:.0}\t{:.1}\t{:.2}",
            rates[0],
            cpus[0],
            rates[1],
            cpus[1],
            rates[0] / rates[1]
        );
    }
    let total = |i: usize| (o.rounds * o.puts) as f64 / agents[i].3;
    let cpu = |i: usize| agents[i].4 as f64 / 1e3 / (o.rounds * o.puts) as f64;
    println!(
        "all\t{:.0}\t{:.1}\t{:.0}\t{:.1}\t{:.2}",
        total(0),
        cpu(0),
        total(1),
        cpu(1),
        total(0) / total(1)
    );
    Ok(())
}

/// One chitchat node, a process of its own ([`chitchat_node`]); killed when dropped.
struct ChitchatProcess(Child);

impl Drop for ChitchatProcess {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// `--chitchat N --idle SECONDS`: N chitchat processes joined through the first, measured as
/// idle agents are.
async fn chitchat_idle(o: &Options, n: usize, seconds: u64) -> anyhow::Result<()> {
    let exe = std::env::current_exe()?;
    let mut nodes = Vec::new();
    let mut seed: Option<String> = None;
    for i in 0..n {
        // chitchat advertises the address it is given, so a free port is picked here.
        let addr = std::net::UdpSocket::bind("127.0.0.1:0")?.local_addr()?;
        let mut command = Command::new(&exe);
        command
            .args(["--chitchat-node", &format!("node-{i}"), &addr.to_string()])
            .arg(o.chitchat_interval.as_millis().to_string())
            .args(seed.iter())
            .stdin(Stdio::piped())
            .stdout(Stdio::null());
        nodes.push(ChitchatProcess(
            command.spawn().context("start a chitchat node")?,
        ));
        seed.get_or_insert_with(|| addr.to_string());
    }
    let pids: Vec<u32> = nodes.iter().map(|n| n.0.id()).collect();
    idle("chitchat nodes", &pids, seconds).await
}

/// The child side of [`chitchat_idle`]: `--chitchat-node ID ADDR INTERVAL_MS [SEED]` runs one
/// chitchat node (its defaults otherwise, as `benches/convergence.rs` runs them) until the
/// parent closes its standard input.
async fn chitchat_node(args: &[String]) -> anyhow::Result<()> {
    use chitchat::{
        ChitchatConfig, ChitchatId, FailureDetectorConfig, ProtocolVersion, spawn_chitchat,
        transport::UdpTransport,
    };
    let [id, addr, interval, seeds @ ..] = args else {
        bail!("--chitchat-node ID ADDR INTERVAL_MS [SEED]");
    };
    let addr: std::net::SocketAddr = addr.parse()?;
    let config = ChitchatConfig {
        chitchat_id: ChitchatId::new(id.clone(), 0, addr),
        cluster_id: "agent-load-idle".into(),
        gossip_interval: Duration::from_millis(interval.parse()?),
        listen_addr: addr,
        seed_nodes: seeds.to_vec(),
        failure_detector_config: FailureDetectorConfig::default(),
        marked_for_deletion_grace_period: Duration::from_secs(15 * 60),
        catchup_callback: None,
        extra_liveness_predicate: None,
        protocol_version: ProtocolVersion::V0,
    };
    let _handle = spawn_chitchat(config, Vec::new(), &UdpTransport).await?;
    tokio::task::spawn_blocking(|| {
        let mut line = String::new();
        while std::io::stdin()
            .read_line(&mut line)
            .is_ok_and(|read| read > 0)
        {
            line.clear();
        }
    })
    .await?;
    Ok(())
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.first().map(String::as_str) == Some("--chitchat-node") {
        return chitchat_node(&args[1..]).await;
    }
    let o = options()?;
    if let Some(n) = o.chitchat {
        let seconds = o
            .idle
            .context("--chitchat measures idle nodes: add --idle SECONDS")?;
        return chitchat_idle(&o, n, seconds).await;
    }
    let base = match &o.dir {
        Some(dir) => dir.clone(),
        None => PathBuf::from(env!("CARGO_TARGET_TMPDIR")),
    };
    std::fs::create_dir_all(&base)?;
    if let Some(other) = &o.versus {
        return versus(&o, other, &base).await;
    }
    let dir = tempfile::tempdir_in(&base)?;
    let agent = Agent::start(&o.agent_bin, dir.path(), o.cache_mb, None)?;
    let client = Client::new(&agent.http, None)?;
    // Peers share the agent's throwaway CA and certificate (all on 127.0.0.1).
    let mut peers = Vec::new();
    for i in 0..o.peers {
        let peer_dir = dir.path().join(format!("peer-{i}"));
        std::fs::create_dir_all(peer_dir.join("tls"))?;
        for file in ["ca.pem", "ca.key", "node.pem", "node.key"] {
            let from = dir.path().join("tls").join(file);
            if from.exists() {
                std::fs::copy(&from, peer_dir.join("tls").join(file))?;
            }
        }
        peers.push(Agent::start(
            &o.agent_bin,
            &peer_dir,
            o.cache_mb,
            Some(&agent.gossip),
        )?);
    }
    if !peers.is_empty() {
        wait_for_members(&client, peers.len() + 1).await?;
    }
    if let Some(seconds) = o.idle {
        let pids: Vec<u32> = std::iter::once(&agent)
            .chain(&peers)
            .map(|a| a.child.id())
            .collect();
        return idle("agents", &pids, seconds).await;
    }
    if o.secret {
        return secret_rows(&o, &agent, &client, dir.path()).await;
    }
    let value = Bytes::from(vec![b'v'; o.value_bytes]);
    println!(
        "agent_load: one agent and {} peers, data directories in {}, {} keys, {}-byte values, keep-alive clients",
        peers.len(),
        base.display(),
        o.keys,
        o.value_bytes
    );
    // What the disk gives right now: every durable PUT waits for at least one fdatasync, so
    // throughput is bounded by clients / fsync latency whatever the code does.
    let (sync_p50, sync_p99) = fsync_latency(dir.path())?;
    println!(
        "disk: 4 KiB write + fdatasync in the data directory, p50 {sync_p50:.2} ms, p99 {sync_p99:.2} ms (100 samples)"
    );
    // Every key exists before GETs are measured.
    run(
        &client,
        Method::PUT,
        o.keys,
        16,
        o.keys,
        value.clone(),
        0,
        "load/",
    )
    .await?;
    if o.rss {
        let clients = o.clients.first().copied().unwrap_or(64);
        let step = (o.puts / 10).max(1);
        println!("PUTs\tRSS (MB)\tPUT/s in the step");
        println!("0\t{:.1}\t-", agent.rss_kb().unwrap_or(0) as f64 / 1024.0);
        let mut done = 0;
        while done < o.puts {
            let (elapsed, _) = run(
                &client,
                Method::PUT,
                step,
                clients,
                o.keys,
                value.clone(),
                done,
                "load/",
            )
            .await?;
            done += step;
            println!(
                "{done}\t{:.1}\t{:.0}",
                agent.rss_kb().unwrap_or(0) as f64 / 1024.0,
                step as f64 / elapsed.as_secs_f64()
            );
        }
        return Ok(());
    }
    println!("op\tclients\trequests/s\tp50 ms\tp99 ms\tmax ms\tagent CPU µs/request");
    for method in o.ops.clone() {
        for &clients in &o.clients {
            let cpu_before = agent.cpu_ns();
            let (elapsed, latencies) = run(
                &client,
                method.clone(),
                o.puts,
                clients,
                o.keys,
                value.clone(),
                0,
                "load/",
            )
            .await?;
            let cpu_ns = agent.cpu_ns().saturating_sub(cpu_before);
            print_row(
                &format!("{method}\t{clients}"),
                o.puts,
                elapsed,
                &latencies,
                cpu_ns,
            );
        }
    }
    Ok(())
}
