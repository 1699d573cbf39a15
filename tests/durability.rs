//! The replica on disk, through the public API: restart after a crash, a failing disk, a data
//! directory used twice. Real nodes on 127.0.0.1; every wait is bounded.

#![cfg(feature = "runtime")]

use std::{
    path::Path,
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    time::Duration,
};

use confmesh::{
    proto::WriterId,
    runtime::{
        Mesh, MeshBuilder, MeshError, StorageError, StorageFaultHook, WatchError, tls::DevCa,
    },
};

mod common;
use common::{eventually, everyone_sees_everyone, value_everywhere};

/// Starts `builder`, retrying while the data directory is still held by a node that was just
/// dropped (its task releases the directory once it has closed its endpoint).
async fn start_when_free(builder: MeshBuilder) -> Mesh {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        match builder.clone().start().await {
            Err(MeshError::Storage(StorageError::InUse(_)))
                if tokio::time::Instant::now() < deadline =>
            {
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            other => return other.expect("start"),
        }
    }
}

/// A storage fault hook and its switch: while the flag is set, every write and sync of the
/// data directory's file fails as on a full disk.
fn disk_switch() -> (Arc<AtomicBool>, StorageFaultHook) {
    let disk_full = Arc::new(AtomicBool::new(false));
    let hook = {
        let disk_full = Arc::clone(&disk_full);
        Arc::new(move || disk_full.load(Ordering::SeqCst))
    };
    (disk_full, hook)
}

fn value(v: Option<confmesh::proto::Version>) -> Option<Vec<u8>> {
    v.and_then(|v| v.payload.value().map(|b| b.to_vec()))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_crashed_node_restarts_with_its_acknowledged_writes_and_pulls_only_what_it_missed() {
    let ca = DevCa::generate("test cluster").expect("ca");
    let dir = tempfile::tempdir().expect("tempdir");
    let a = Mesh::builder()
        .tls(ca.node_config("a").expect("cert"))
        .start()
        .await
        .expect("start a");
    let seeds = [a.id().addr.to_string()];
    let b = Mesh::builder()
        .tls(ca.node_config("b").expect("cert"))
        .seeds(seeds.clone())
        .start()
        .await
        .expect("start b");
    let c_builder = Mesh::builder()
        .tls(ca.node_config("c").expect("cert"))
        .seeds(seeds.clone())
        .data_dir(dir.path());
    let c = c_builder.clone().start().await.expect("start c");
    let nodes = [a.clone(), b.clone(), c.clone()];
    assert!(everyone_sees_everyone(&nodes).await, "no full mesh");

    // 200 writes of 1 KiB acknowledged by c, and one from a that c received.
    let payload = vec![b'x'; 1024];
    for i in 0..200 {
        c.put(&format!("app/c/{i:03}"), payload.clone())
            .await
            .expect("put on c");
    }
    a.put("app/from-a", &b"1"[..]).await.expect("put on a");
    assert!(
        eventually(Duration::from_secs(10), || value_everywhere(
            &nodes,
            "app/from-a",
            b"1"
        ))
        .await
    );
    let writer = c.id().writer;

    // Crash: every handle dropped, no leave, no final flush.
    drop(c);
    drop(nodes);
    for i in 0..20 {
        a.put(&format!("app/missed/{i:02}"), &b"m"[..])
            .await
            .expect("put while c is down");
    }

    let c = start_when_free(c_builder).await;
    assert_eq!(
        c.id().writer,
        writer,
        "the writer id is kept in the data dir"
    );
    // Before any peer could have sent anything: its own acknowledged writes are there.
    let own = c.list("app/c/").await.expect("list");
    assert_eq!(own.len(), 200, "acknowledged writes lost in the crash");
    assert!(own.iter().all(|v| v.dot.actor == writer));

    let caught_up = eventually(Duration::from_secs(20), || {
        let c = c.clone();
        async move { c.list("app/missed/").await.map_or(0, |l| l.len()) == 20 }
    })
    .await;
    assert!(caught_up, "the restarted node did not catch up");
    assert_eq!(
        value(c.get("app/from-a").await.expect("get")).as_deref(),
        Some(&b"1"[..])
    );
    // The replica is over 200 KiB; catching up should cost a small delta, not a snapshot.
    let received = c.stats().await.expect("stats").stream_bytes_received;
    assert!(
        received < 64 * 1024,
        "the restarted node received {received} bytes to catch up"
    );

    // Its next write continues its own sequence: peers accept it.
    let next = c.put("app/c/after", &b"ok"[..]).await.expect("put after");
    assert!(next.dot.counter > 200);
    let nodes = [a.clone(), b.clone(), c.clone()];
    assert!(
        eventually(Duration::from_secs(10), || value_everywhere(
            &nodes,
            "app/c/after",
            b"ok"
        ))
        .await,
        "a write after the restart did not spread"
    );
    for node in nodes {
        node.shutdown().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_disk_refuses_writes_and_leaves_the_replica_consistent() {
    let ca = DevCa::generate("test cluster").expect("ca");
    let dir = tempfile::tempdir().expect("tempdir");
    let (disk_full, hook) = disk_switch();
    let peer = Mesh::builder()
        .tls(ca.node_config("peer").expect("cert"))
        .start()
        .await
        .expect("start peer");
    let builder = Mesh::builder()
        .tls(ca.node_config("node").expect("cert"))
        .seeds([peer.id().addr.to_string()])
        .data_dir(dir.path())
        .storage_fault_hook(hook);
    let node = builder.clone().start().await.expect("start");
    assert!(everyone_sees_everyone(&[peer.clone(), node.clone()]).await);

    node.put("app/mode", &b"v1"[..]).await.expect("put v1");
    disk_full.store(true, Ordering::SeqCst);
    let refused = node.put("app/mode", &b"v2"[..]).await;
    assert!(
        matches!(refused, Err(MeshError::Storage(_))),
        "a write on a full disk must fail, got {refused:?}"
    );
    // Nothing changed, here or anywhere.
    let versions = node.get_versions("app/mode").await.expect("versions");
    assert_eq!(versions.len(), 1);
    assert_eq!(
        versions[0].payload.value().map(|b| &b[..]),
        Some(&b"v1"[..])
    );
    tokio::time::sleep(Duration::from_millis(1_500)).await;
    assert_eq!(
        value(peer.get("app/mode").await.expect("get")).as_deref(),
        Some(&b"v1"[..])
    );
    // Reads keep working while the disk is full, and so does replication: a write from the
    // peer is applied here (and kept for the disk until it recovers).
    assert!(node.get("app/mode").await.expect("get").is_some());
    peer.put("app/remote", &b"r1"[..]).await.expect("peer put");
    let arrived = eventually(Duration::from_secs(10), || {
        let node = node.clone();
        async move { node.get("app/remote").await.expect("get").is_some() }
    })
    .await;
    assert!(
        arrived,
        "the peer's write did not arrive while the disk was full"
    );

    // Space again: writes are accepted (the database is reopened).
    disk_full.store(false, Ordering::SeqCst);
    let accepted = eventually(Duration::from_secs(5), || {
        let node = node.clone();
        async move { node.put("app/mode", &b"v3"[..]).await.is_ok() }
    })
    .await;
    assert!(accepted, "writes still refused after the disk recovered");
    node.shutdown().await;
    // Without the peer, the node restarts from its disk alone.
    peer.shutdown().await;

    let node = start_when_free(builder).await;
    assert_eq!(
        value(node.get("app/mode").await.expect("get")).as_deref(),
        Some(&b"v3"[..])
    );
    assert_eq!(
        value(node.get("app/remote").await.expect("get")).as_deref(),
        Some(&b"r1"[..]),
        "the remote write applied while the disk was full was lost"
    );
    let history = node.history("app/mode").await.expect("history");
    let values: Vec<_> = history
        .iter()
        .filter_map(|v| v.payload.value().map(|b| b.to_vec()))
        .collect();
    assert!(
        !values.contains(&b"v2".to_vec()),
        "the refused write is in the history: {values:?}"
    );
    assert_eq!(
        values.first().map(Vec::as_slice),
        Some(&b"v1"[..]),
        "{history:?}"
    );
    node.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_data_directory_serves_one_node_and_one_writer() {
    let ca = DevCa::generate("test cluster").expect("ca");
    let dir = tempfile::tempdir().expect("tempdir");
    let builder = |path: &Path| {
        Mesh::builder()
            .tls(ca.node_config("n").expect("cert"))
            .data_dir(path)
    };
    let first = builder(dir.path()).start().await.expect("start");
    let second = builder(dir.path()).start().await;
    assert!(
        matches!(second, Err(MeshError::Storage(StorageError::InUse(_)))),
        "a second node on the same data dir: {second:?}"
    );
    let writer = first.id().writer;
    first.shutdown().await;

    let other = WriterId(writer.0.wrapping_add(1));
    let mismatch = builder(dir.path()).writer(other).start().await;
    assert!(
        matches!(
            mismatch,
            Err(MeshError::Storage(StorageError::WriterMismatch { .. }))
        ),
        "a data dir reused under another writer id: {mismatch:?}"
    );
    let again = builder(dir.path()).start().await.expect("restart");
    assert_eq!(again.id().writer, writer);
    again.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cursor_resumes_across_restarts_but_not_across_a_restore() {
    let ca = DevCa::generate("test cluster").expect("ca");
    let dir = tempfile::tempdir().expect("tempdir");
    let backup = tempfile::tempdir().expect("tempdir");
    let start = || {
        Mesh::builder()
            .tls(ca.node_config("n").expect("cert"))
            .data_dir(dir.path())
    };
    let node = start_when_free(start()).await;
    let mut watch = node.watch("app/", None).expect("watch");
    node.put("app/mode", "blue").await.expect("put");
    let before_restart = watch.next().await.expect("a change").expect("no error");
    node.shutdown().await;
    // A backup, then changes a client watched and that the backup does not hold.
    let file = confmesh::runtime::DATABASE_FILE;
    std::fs::copy(dir.path().join(file), backup.path().join(file)).expect("backup");
    let node = start_when_free(start()).await;
    let mut watch = node
        .watch("app/", Some(before_restart.cursor))
        .expect("watch");
    node.put("app/mode", "green").await.expect("put");
    let seen = watch
        .next()
        .await
        .expect("a change")
        .expect("a cursor of the last start resumes");
    assert_eq!(seen.new_value(), Some(&b"green"[..]));
    node.shutdown().await;
    // Restored: "green" is gone; the node takes new writes.
    std::fs::copy(backup.path().join(file), dir.path().join(file)).expect("restore");
    let node = start_when_free(start()).await;
    for value in ["red", "yellow", "white"] {
        node.put("app/mode", value).await.expect("put");
    }
    let mut resumed = node.watch("app/", Some(seen.cursor)).expect("watch");
    match resumed.next().await {
        Some(Err(WatchError::UnknownCursor(cursor))) => assert_eq!(cursor, seen.cursor),
        other => panic!("a cursor from the lost state resumed: {other:?}"),
    }
    node.shutdown().await;
}

/// The environment variable that makes the kill -9 test run as the child it kills.
const CRASH_CHILD: &str = "CONFMESH_TEST_CRASH_CHILD_DIR";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acknowledged_writes_survive_kill_9() {
    use std::io::BufRead;

    if let Ok(dir) = std::env::var(CRASH_CHILD) {
        // The child: write until killed (bounded), printing each acknowledged key.
        let ca = DevCa::generate("child").expect("ca");
        let node = Mesh::builder()
            .tls(ca.node_config("child").expect("cert"))
            .data_dir(dir)
            .start()
            .await
            .expect("start child");
        for i in 0..20_000 {
            node.put(&format!("app/k{i:05}"), vec![b'v'; 256])
                .await
                .expect("put");
            println!("acked app/k{i:05}");
        }
        return;
    }

    let dir = tempfile::tempdir().expect("tempdir");
    let mut child = std::process::Command::new(std::env::current_exe().expect("test binary"))
        .args([
            "--exact",
            "acknowledged_writes_survive_kill_9",
            "--nocapture",
            "--test-threads=1",
        ])
        .env(CRASH_CHILD, dir.path())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("spawn child");
    let stdout = child.stdout.take().expect("stdout");
    let acked = tokio::task::spawn_blocking(move || {
        let mut acked = Vec::new();
        for line in std::io::BufReader::new(stdout).lines() {
            let Ok(line) = line else { break };
            if let Some(key) = line.strip_prefix("acked ") {
                acked.push(key.to_string());
                if acked.len() == 300 {
                    break;
                }
            }
        }
        acked
    });
    let acked = tokio::time::timeout(Duration::from_secs(60), acked)
        .await
        .expect("the child acknowledged 300 writes within 60 s")
        .expect("reader");
    // SIGKILL while the child keeps writing: no shutdown, no checkpoint.
    child.kill().expect("kill -9");
    let _ = child.wait();
    assert_eq!(acked.len(), 300, "the child stopped early");

    let ca = DevCa::generate("parent").expect("ca");
    let node = start_when_free(
        Mesh::builder()
            .tls(ca.node_config("restarted").expect("cert"))
            .data_dir(dir.path()),
    )
    .await;
    let stored = node.list("app/").await.expect("list");
    let keys: std::collections::BTreeSet<_> = stored.iter().map(|v| v.key.to_string()).collect();
    let lost: Vec<_> = acked.iter().filter(|k| !keys.contains(*k)).collect();
    assert!(lost.is_empty(), "acknowledged writes lost: {lost:?}");
    // The write after a kill continues the writer's sequence past everything it issued.
    let max = stored.iter().map(|v| v.dot.counter).max().unwrap_or(0);
    let next = node.put("app/after", "x").await.expect("put");
    assert!(next.dot.counter > max);
    node.shutdown().await;
}

/// The write path's invariant, end to end: a local version is neither readable nor sent to a
/// peer before it is on disk, so a crash can never make a node reissue a version id it pushed.
/// Sixteen clients write concurrently (their writes share commits); the disk fails in the
/// middle, the node crashes (every handle dropped, nothing more written), and restarts. Every
/// id the peer ever saw, and every id the node acknowledged, names one write only, and every
/// acknowledged write is still there.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_crash_under_concurrent_writes_never_reuses_a_version_id() {
    use std::collections::BTreeMap;

    use confmesh::proto::{Payload, node::Event};

    let ca = DevCa::generate("test cluster").expect("ca");
    let dir = tempfile::tempdir().expect("tempdir");
    let (disk_full, hook) = disk_switch();
    let peer = Mesh::builder()
        .tls(ca.node_config("peer").expect("cert"))
        .start()
        .await
        .expect("start peer");
    let mut seen_by_peer = peer.subscribe();
    let builder = Mesh::builder()
        .tls(ca.node_config("node").expect("cert"))
        .seeds([peer.id().addr.to_string()])
        .data_dir(dir.path())
        .storage_fault_hook(hook);
    let node = builder.clone().start().await.expect("start");
    assert!(everyone_sees_everyone(&[peer.clone(), node.clone()]).await);

    let acknowledged = Arc::new(std::sync::Mutex::new(Vec::new()));
    let mut clients = Vec::new();
    for client in 0..16 {
        let node = node.clone();
        let acknowledged = Arc::clone(&acknowledged);
        clients.push(tokio::spawn(async move {
            for i in 0..40 {
                let key = format!("c{client}/k{}", i % 5);
                let value = format!("{client}-{i}");
                if let Ok(version) = node.put(&key, value.into_bytes()).await {
                    acknowledged.lock().expect("lock").push(version);
                }
            }
        }));
    }
    let failing = eventually(Duration::from_secs(20), || {
        let acknowledged = Arc::clone(&acknowledged);
        async move { acknowledged.lock().expect("lock").len() >= 200 }
    })
    .await;
    assert!(failing, "the clients did not get 200 writes through");
    disk_full.store(true, Ordering::SeqCst);
    for client in clients {
        client.await.expect("client");
    }
    // The crash: every handle dropped without a shutdown, the disk still failing.
    drop(node);
    disk_full.store(false, Ordering::SeqCst);
    let node = start_when_free(builder).await;
    let mut after = Vec::new();
    for i in 0..20 {
        let key = format!("c{}/k{}", i % 16, i % 5);
        after.push(
            node.put(&key, format!("after-{i}").into_bytes())
                .await
                .expect("put after restart"),
        );
    }
    assert!(value_everywhere(&[peer.clone(), node.clone()], "c3/k3", b"after-3").await);

    let acknowledged = std::mem::take(&mut *acknowledged.lock().expect("lock"));
    assert!(acknowledged.len() >= 200);
    // Every id names one write: what the node acknowledged before and after the crash, and
    // every version the peer applied.
    let mut writes: BTreeMap<(u64, u64), (String, Payload)> = BTreeMap::new();
    let mut note = |v: &confmesh::proto::Version| {
        let write = (v.key.as_str().to_string(), v.payload.clone());
        let id = (v.dot.actor.0, v.dot.counter);
        let earlier = writes.entry(id).or_insert_with(|| write.clone());
        assert_eq!(*earlier, write, "version id {:?} names two writes", v.dot);
    };
    acknowledged.iter().chain(&after).for_each(&mut note);
    let mut from_peer = 0;
    // What the peer's subscription holds: it is drained once nothing comes for 200 ms.
    while let Ok(Some(Ok(event))) =
        tokio::time::timeout(Duration::from_millis(200), seen_by_peer.next()).await
    {
        if let Event::KeyChanged { new: Some(v), .. } = event {
            note(&v);
            from_peer += 1;
        }
    }
    assert!(from_peer >= 200, "the peer saw only {from_peer} writes");
    // Every acknowledged write survived the crash.
    for version in &acknowledged {
        let history = node.history(version.key.as_str()).await.expect("history");
        assert!(
            history.iter().any(|v| v.dot == version.dot),
            "acknowledged write {:?} of {} lost in the crash",
            version.dot,
            version.key
        );
    }
    node.shutdown().await;
    peer.shutdown().await;
}

/// The node task never waits on the disk: with the storage writer stuck in a write (the
/// fault hook holds it), a node on a single-threaded runtime still answers reads and other
/// nodes' writes still arrive; the write waiting for the disk is answered once the disk moves
/// again, together with one made meanwhile.
#[tokio::test(flavor = "current_thread")]
async fn a_stalled_disk_stalls_no_reads_and_no_replication() {
    use std::sync::{Condvar, Mutex};

    let ca = DevCa::generate("test cluster").expect("ca");
    let dir = tempfile::tempdir().expect("tempdir");
    // (stall armed, writer stuck in the hook)
    let gate = Arc::new((Mutex::new((false, false)), Condvar::new()));
    let hook = {
        let gate = Arc::clone(&gate);
        Arc::new(move || {
            let (lock, turn) = &*gate;
            let mut state = lock.lock().expect("gate");
            while state.0 {
                state.1 = true;
                turn.notify_all();
                state = turn.wait(state).expect("gate");
            }
            false
        })
    };
    let peer = Mesh::builder()
        .tls(ca.node_config("peer").expect("cert"))
        .start()
        .await
        .expect("start peer");
    let node = Mesh::builder()
        .tls(ca.node_config("node").expect("cert"))
        .seeds([peer.id().addr.to_string()])
        .data_dir(dir.path())
        .storage_fault_hook(hook)
        .start()
        .await
        .expect("start");
    assert!(everyone_sees_everyone(&[peer.clone(), node.clone()]).await);
    node.put("app/before", &b"1"[..]).await.expect("put");

    gate.0.lock().expect("gate").0 = true;
    let first = tokio::spawn({
        let node = node.clone();
        async move { node.put("app/slow", &b"1"[..]).await }
    });
    // Wait (on another thread: this one runs the node) until the writer is stuck.
    let stuck = {
        let gate = Arc::clone(&gate);
        tokio::task::spawn_blocking(move || {
            let (lock, turn) = &*gate;
            let state = lock.lock().expect("gate");
            let (state, _) = turn
                .wait_timeout_while(state, Duration::from_secs(10), |s| !s.1)
                .expect("gate");
            state.1
        })
    };
    assert!(
        stuck.await.expect("join"),
        "the writer never reached the disk"
    );
    let second = tokio::spawn({
        let node = node.clone();
        async move { node.put("app/slow", &b"2"[..]).await }
    });
    // Reads are answered, and a peer's write arrives, while the disk holds the writer.
    let answered = tokio::time::timeout(Duration::from_secs(10), node.get("app/before")).await;
    assert!(
        matches!(answered, Ok(Ok(Some(_)))),
        "a read waited for the disk: {answered:?}"
    );
    peer.put("app/remote", &b"r"[..]).await.expect("peer put");
    let arrived = eventually(Duration::from_secs(10), || {
        let node = node.clone();
        async move { node.get("app/remote").await.expect("get").is_some() }
    })
    .await;
    assert!(arrived, "replication waited for the disk");
    assert!(
        !first.is_finished(),
        "a write was answered before it was durable"
    );
    assert_eq!(
        node.get("app/slow").await.expect("get"),
        None,
        "a write not yet durable is readable"
    );

    {
        let (lock, turn) = &*gate;
        lock.lock().expect("gate").0 = false;
        turn.notify_all();
    }
    let first = first.await.expect("join").expect("first put");
    let second = second.await.expect("join").expect("second put");
    assert!(
        second.supersedes(&first.dot),
        "the second write must follow the first"
    );
    assert_eq!(
        value(node.get("app/slow").await.expect("get")).as_deref(),
        Some(&b"2"[..])
    );
    node.shutdown().await;
    peer.shutdown().await;
}

/// A disk outage right after a commit made without an fsync (the rows of an acknowledged
/// write) must not lose it: redb refuses a database after an I/O error, the reopened one no
/// longer holds that commit, so the writer keeps such commits until they are written again
/// (and the write-ahead log entry is removed only with them).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_disk_outage_after_a_commit_without_fsync_loses_no_acknowledged_write() {
    let ca = DevCa::generate("test cluster").expect("ca");
    let dir = tempfile::tempdir().expect("tempdir");
    let (disk_full, hook) = disk_switch();
    let builder = Mesh::builder()
        .tls(ca.node_config("node").expect("cert"))
        .data_dir(dir.path())
        .storage_fault_hook(hook);
    let node = builder.clone().start().await.expect("start");
    node.put("app/first", &b"1"[..]).await.expect("put");
    // The commit after it (its row, without an fsync) is written once history answers.
    node.history("app/first").await.expect("history");
    disk_full.store(true, Ordering::SeqCst);
    // Checkpoints and retries fail, each after reopening the database, for a few seconds.
    tokio::time::sleep(Duration::from_millis(3_500)).await;
    disk_full.store(false, Ordering::SeqCst);
    let accepted = eventually(Duration::from_secs(10), || {
        let node = node.clone();
        async move { node.put("app/second", &b"2"[..]).await.is_ok() }
    })
    .await;
    assert!(accepted, "writes still refused after the disk recovered");
    node.history("app/second").await.expect("history");
    node.shutdown().await;

    let node = start_when_free(builder).await;
    assert_eq!(
        value(node.get("app/first").await.expect("get")).as_deref(),
        Some(&b"1"[..]),
        "an acknowledged write was lost in the reopen"
    );
    assert_eq!(
        value(node.get("app/second").await.expect("get")).as_deref(),
        Some(&b"2"[..])
    );
    node.shutdown().await;
}

/// A node's age identity (docs/PROTOCOL.md §9.2) lives in its data directory: the same
/// recipient after a restart, published in its member record to its peers, a new one in a
/// wiped directory, and a corrupt identity file stops the start instead of being replaced.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_nodes_age_recipient_is_kept_with_its_data_directory_and_reaches_its_peers() {
    let ca = DevCa::generate("test cluster").expect("ca");
    let peer = Mesh::builder()
        .tls(ca.node_config("peer").expect("cert"))
        .start()
        .await
        .expect("peer");
    let dir = tempfile::tempdir().expect("tempdir");
    let builder = |path: &Path| {
        Mesh::builder()
            .tls(ca.node_config("n").expect("cert"))
            .name("n")
            .data_dir(path)
            .seeds([peer.id().addr.to_string()])
    };
    let first = builder(dir.path()).start().await.expect("start");
    let recipient = first.recipient();
    assert!(recipient.starts_with("age1"), "{recipient}");
    assert_ne!(recipient, peer.recipient());
    first.shutdown().await;

    let again = start_when_free(builder(dir.path())).await;
    assert_eq!(again.recipient(), recipient, "kept across a restart");
    let published = eventually(Duration::from_secs(10), || async {
        peer.members().await.expect("members").iter().any(|m| {
            m.name == "n"
                && m.id.writer == again.id().writer
                && m.recipient.as_deref() == Some(recipient.as_str())
        })
    })
    .await;
    assert!(published, "the peer never saw the node's recipient");
    again.shutdown().await;

    let identity = dir.path().join(confmesh::runtime::secrets::IDENTITY_FILE);
    std::fs::write(&identity, "not a key\n").expect("write");
    let mut corrupt = builder(dir.path()).start().await;
    for _ in 0..200 {
        if !matches!(corrupt, Err(MeshError::Storage(StorageError::InUse(_)))) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
        corrupt = builder(dir.path()).start().await;
    }
    assert!(
        matches!(corrupt, Err(MeshError::Secret(_))),
        "a corrupt identity file: {corrupt:?}"
    );

    let wiped = tempfile::tempdir().expect("tempdir");
    let fresh = builder(wiped.path()).start().await.expect("start");
    assert_ne!(
        fresh.recipient(),
        recipient,
        "a wiped directory gets a new identity"
    );
    fresh.shutdown().await;
    peer.shutdown().await;
}
