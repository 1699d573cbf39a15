//! Rolling upgrades: a cluster of nodes speaking the previous and the current protocol, a
//! data directory and wire messages recorded by an older build (commit 989adcb,
//! `tests/fixtures/989adcb/`, made by the generator in its README), and a data directory from
//! a newer build.

#![cfg(feature = "runtime")]

use std::{
    path::Path,
    sync::{
        Arc,
        atomic::{AtomicUsize, Ordering},
    },
    time::Duration,
};

use confmesh::{
    proto::{
        WriterId,
        trust::{Mode, WriterKey, verifies},
        wire::{self, DecodeError, MAX_MESSAGE_BYTES, PROTOCOL_VERSION},
    },
    runtime::{
        DATABASE_FILE, Mesh, MeshBuilder, MeshError, STORAGE_FORMAT, StorageError,
        StorageFaultHook, tls::DevCa,
    },
};
use redb::{ReadableDatabase, TableDefinition};

mod common;
use common::{eventually, everyone_sees_everyone, value_everywhere};

const FIXTURES: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/989adcb");
/// What a build of protocol 3 and storage format 3 wrote.
const FIXTURES_PROTOCOL_3: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/03b59e4");
const META: TableDefinition<&str, &[u8]> = TableDefinition::new("meta");

/// A node of this build named `name`, treating unsigned versions as `mode` says.
fn builder(ca: &DevCa, name: &str, mode: Mode) -> MeshBuilder {
    Mesh::builder()
        .tls(ca.node_config(name).expect("cert"))
        .name(name)
        .trust_mode(mode)
}

/// The protocol of unsigned writers (before Trust I).
const UNSIGNED_PROTOCOL: u8 = 2;

/// A cluster in the middle of an upgrade from protocol `old_protocol`: `new-1` and `new-2` of
/// this build, permissive (they accept an old node's unsigned versions), and `old`, a node of
/// that protocol: it offers only the ALPNs up to it and writes its member record in that
/// protocol's layout (and, below protocol 3, writes unsigned versions).
async fn mixed_cluster(ca: &DevCa, old_protocol: u8) -> (Mesh, Mesh, Mesh) {
    let new = builder(ca, "new-1", Mode::Permissive)
        .start()
        .await
        .expect("start");
    let seed = [new.id().addr.to_string()];
    let old = Mesh::builder()
        .tls(ca.node_config("old").expect("cert"))
        .name("old")
        .advertise_protocol(old_protocol)
        .seeds(seed.clone())
        .start()
        .await
        .expect("start");
    let other = builder(ca, "new-2", Mode::Permissive)
        .seeds(seed)
        .start()
        .await
        .expect("start");
    (new, old, other)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_mixed_version_cluster_converges_and_the_new_protocol_waits_for_the_last_old_node() {
    let ca = DevCa::generate("test cluster").expect("ca");
    let (new, old, other) = mixed_cluster(&ca, PROTOCOL_VERSION - 1).await;
    let nodes = [new.clone(), old.clone(), other.clone()];
    assert!(everyone_sees_everyone(&nodes).await, "no cluster formed");

    // Writes from either version reach every node.
    old.put("app/from-old", &b"1"[..]).await.expect("put");
    other.put("app/from-new", &b"2"[..]).await.expect("put");
    let converged = eventually(Duration::from_secs(20), || async {
        value_everywhere(&nodes, "app/from-old", b"1").await
            && value_everywhere(&nodes, "app/from-new", b"2").await
    })
    .await;
    assert!(converged, "a mixed-version cluster did not converge");

    // While the old node is alive, the cluster speaks its version, and says who holds it back.
    let held_back = eventually(Duration::from_secs(20), || async {
        let health = new.health().await.expect("health");
        health.protocol == PROTOCOL_VERSION - 1 && health.held_back_by == ["old"]
    })
    .await;
    assert!(held_back, "{:?}", new.health().await);
    let health = new.health().await.expect("health");
    assert!(!health.supports(PROTOCOL_VERSION));
    // Each member's version, once its record (which names it) has arrived.
    let versions = || async {
        let members = new.members().await.expect("members");
        let protocol_of = |name: &str| members.iter().find(|m| m.name == name).map(|m| m.protocol);
        (protocol_of("old"), protocol_of("new-2"))
    };
    let listed = eventually(Duration::from_secs(20), || async {
        versions().await == (Some(PROTOCOL_VERSION - 1), Some(PROTOCOL_VERSION))
    })
    .await;
    assert!(listed, "{:?}", new.members().await);

    // The last old node leaves (upgraded): the new version turns on.
    old.shutdown().await;
    let upgraded = eventually(Duration::from_secs(20), || async {
        let health = new.health().await.expect("health");
        health.supports(PROTOCOL_VERSION) && health.held_back_by.is_empty()
    })
    .await;
    assert!(upgraded, "{:?}", new.health().await);
    new.shutdown().await;
    other.shutdown().await;
}

/// After the last node of protocol 2 is gone, `resign` on one node replaces every unsigned
/// version (the old writer's value, written again signed; its member record, deleted and
/// collected), so a node that enforces signatures joins and takes everything, refusing
/// nothing. Without it, the joiner would count the old writer's versions as forged.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn resign_leaves_no_unsigned_version_and_an_enforcing_node_then_joins_cleanly() {
    let ca = DevCa::generate("test cluster").expect("ca");
    let (new, old, other) = mixed_cluster(&ca, UNSIGNED_PROTOCOL).await;
    let seed = [new.id().addr.to_string()];
    let nodes = [new.clone(), old.clone(), other.clone()];
    assert!(everyone_sees_everyone(&nodes).await, "no cluster formed");
    old.put("app/from-old", &b"1"[..]).await.expect("put");
    new.put("app/from-new", &b"2"[..]).await.expect("put");
    let old_record = format!("_confmesh/members/{:016x}", old.id().writer.0);
    assert!(
        eventually(Duration::from_secs(20), || async {
            value_everywhere(&nodes, "app/from-old", b"1").await
                && other.get(&old_record).await.expect("get").is_some()
        })
        .await
    );
    old.shutdown().await;
    let unsigned = |node: &Mesh| {
        let node = node.clone();
        async move { node.trust().await.expect("trust").unsigned_versions }
    };
    assert!(
        unsigned(&new).await >= 2,
        "the old writer's value and record"
    );
    // The control: a node enforcing signatures that joins now refuses the old writer's
    // versions as forged (and would ban peers that kept sending them).
    let early = builder(&ca, "early", Mode::Enforcing)
        .seeds(seed.clone())
        .start()
        .await
        .expect("start");
    assert!(
        eventually(Duration::from_secs(20), || async {
            let trust = early.trust().await.expect("trust");
            trust.by_peer.iter().any(|(_, s)| s.forged > 0)
        })
        .await,
        "{:?}",
        early.trust().await
    );
    early.shutdown().await;

    let resigned = new.resign().await.expect("resign");
    assert!(
        resigned
            .rewritten
            .iter()
            .any(|k| k.as_str() == "app/from-old"),
        "{resigned:?}"
    );
    assert!(
        resigned
            .records_retired
            .iter()
            .any(|k| k.as_str() == old_record),
        "{resigned:?}"
    );
    assert!(resigned.left.is_empty(), "{resigned:?}");
    // The new versions spread, the record's tombstone is collected: nothing unsigned is left.
    assert!(
        eventually(Duration::from_secs(60), || async {
            unsigned(&new).await == 0 && unsigned(&other).await == 0
        })
        .await,
        "unsigned versions left: {} and {}",
        unsigned(&new).await,
        unsigned(&other).await
    );

    let late = builder(&ca, "late", Mode::Enforcing)
        .seeds(seed)
        .start()
        .await
        .expect("start");
    let all = [new.clone(), other.clone(), late.clone()];
    assert!(
        eventually(Duration::from_secs(20), || async {
            value_everywhere(&all, "app/from-old", b"1").await
                && value_everywhere(&all, "app/from-new", b"2").await
        })
        .await,
        "the enforcing node did not take the re-signed value"
    );
    let version = late.get("app/from-old").await.expect("get").expect("value");
    assert_eq!(version.dot.actor, new.id().writer, "written again by new");
    assert!(version.seal.is_some());
    let trust = late.trust().await.expect("trust");
    assert!(
        trust.by_peer.iter().all(|(_, s)| s.forged == 0),
        "the enforcing node refused something: {trust:?}"
    );
    assert_eq!(trust.unsigned_versions, 0);
    for node in all {
        node.shutdown().await;
    }
}

/// Copies the fixture's data directory into `to`.
fn copy_fixture_data(to: &Path) {
    copy_data_of(FIXTURES, to);
}

/// Copies the data directory of the fixtures in `fixtures` into `to`.
fn copy_data_of(fixtures: &str, to: &Path) {
    let from = Path::new(fixtures).join("data");
    for entry in std::fs::read_dir(&from).expect("fixture data") {
        let entry = entry.expect("entry");
        std::fs::copy(entry.path(), to.join(entry.file_name())).expect("copy");
    }
}

/// The storage format recorded in the data directory `dir`.
fn format_of(dir: &Path) -> u64 {
    let db = redb::Database::open(dir.join(DATABASE_FILE)).expect("open");
    let txn = db.begin_read().expect("read");
    let meta = txn.open_table(META).expect("meta");
    let bytes = meta.get("format").expect("get").expect("a format");
    u64::from_le_bytes(bytes.value().try_into().expect("8 bytes"))
}

/// Whether the data directory `dir` has the table format 2 added.
fn has_local_writes(dir: &Path) -> bool {
    use redb::TableHandle;
    let db = redb::Database::open(dir.join(DATABASE_FILE)).expect("open");
    let txn = db.begin_read().expect("read");
    let tables: Vec<String> = txn
        .list_tables()
        .expect("tables")
        .map(|t| t.name().to_string())
        .collect();
    tables.iter().any(|t| t == "local_writes")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_data_directory_from_989adcb_opens_migrated_with_every_value() {
    let dir = tempfile::tempdir().expect("tempdir");
    copy_fixture_data(dir.path());
    assert_eq!(format_of(dir.path()), 1, "the fixture is of the old layout");
    assert!(!has_local_writes(dir.path()));
    let ca = DevCa::generate("test cluster").expect("ca");
    let start = || {
        Mesh::builder()
            .tls(ca.node_config("fixture").expect("cert"))
            .data_dir(dir.path())
            .start()
    };
    let mesh = start().await.expect("the old directory opens");
    // The directory gets a writer key: the node writes under the key's id from now on, and
    // the old id stays a legacy writer whose versions still read (PROTOCOL.md §7.5).
    let writer = mesh.id().writer;
    assert_ne!(writer, WriterId(0xf1f1), "a new, key-derived writer id");
    let record = mesh
        .get("_confmesh/members/000000000000f1f1")
        .await
        .expect("get")
        .expect("the old record");
    assert_eq!(record.dot.actor, WriterId(0xf1f1));
    assert!(
        record.seal.is_none(),
        "the old build's versions are unsigned"
    );
    // The new writer's first version is its endorsement, then its member record, in this
    // protocol's layout (the version after the tags, then the node's age recipient), both
    // signed.
    let endorsement = eventually(Duration::from_secs(10), || async {
        mesh.get(&format!("_confmesh/writers/{writer}"))
            .await
            .expect("get")
            .is_some_and(|v| v.dot.counter == 1 && v.seal.is_some())
    })
    .await;
    assert!(endorsement, "the new writer was not endorsed");
    let record_key = format!("_confmesh/members/{writer}");
    let signed_record = eventually(Duration::from_secs(10), || async {
        mesh.get(&record_key)
            .await
            .expect("get")
            .is_some_and(|v| v.seal.is_some())
    })
    .await;
    assert!(signed_record, "the new writer's record was not written");
    let new_record = mesh
        .get(&record_key)
        .await
        .expect("get")
        .and_then(|v| v.payload.value().cloned())
        .expect("the new record");
    let recipient = mesh.recipient();
    assert!(
        new_record.ends_with(recipient.as_bytes()),
        "the recipient comes last"
    );
    let before = new_record.len() - recipient.len() - 1;
    assert_eq!(
        new_record[before - 1],
        PROTOCOL_VERSION,
        "the version before it"
    );
    let value = |key: &'static str| {
        let mesh = mesh.clone();
        async move {
            mesh.get(key)
                .await
                .expect("get")
                .and_then(|v| v.payload.value().map(|b| b.to_vec()))
        }
    };
    assert_eq!(
        value("app/db/url").await.as_deref(),
        Some(&b"postgres://a"[..])
    );
    assert_eq!(value("app/mode").await.as_deref(), Some(&b"green"[..]));
    assert_eq!(value("app/old").await, None, "a delete stays a delete");
    assert_eq!(
        value("app/binary").await.as_deref(),
        Some(&[0, 159, 146, 150, 255][..])
    );
    let history = mesh.history("app/mode").await.expect("history");
    assert!(history.len() >= 2, "history kept: {history:?}");
    // New writes are the new writer's, signed, and supersede the old ones.
    let before = mesh.get("app/mode").await.expect("get").expect("value");
    assert!(before.seal.is_none());
    let after = mesh.put("app/mode", &b"purple"[..]).await.expect("put");
    assert_eq!(after.dot.actor, writer);
    assert!(after.seal.is_some() && after.supersedes(&before.dot));
    mesh.shutdown().await;
    assert_eq!(format_of(dir.path()), STORAGE_FORMAT, "migrated at start");
    assert!(has_local_writes(dir.path()));
    let reopened = start().await.expect("the migrated directory opens again");
    assert_eq!(
        reopened
            .get("app/mode")
            .await
            .expect("get")
            .and_then(|v| v.payload.value().cloned()),
        Some(bytes::Bytes::from_static(b"purple"))
    );
    reopened.shutdown().await;
}

/// A data directory of protocol 3 and storage format 3 (a signing node) opens in this build:
/// the same writer id and key, every value with its seal and audit fields, history kept, new
/// writes signed by the same writer; the format is 4 afterwards and it opens again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_data_directory_from_03b59e4_opens_with_its_writer_its_signatures_and_its_history() {
    let dir = tempfile::tempdir().expect("tempdir");
    copy_data_of(FIXTURES_PROTOCOL_3, dir.path());
    assert_eq!(
        format_of(dir.path()),
        3,
        "the fixture is of storage format 3"
    );
    let ca = DevCa::generate("test cluster").expect("ca");
    let start = || {
        Mesh::builder()
            .tls(ca.node_config("fixture").expect("cert"))
            .data_dir(dir.path())
            .start()
    };
    let mesh = start().await.expect("the directory opens");
    let writer = mesh.id().writer;
    let mode = mesh.get("app/mode").await.expect("get").expect("a value");
    assert_eq!(mode.dot.actor, writer, "the directory keeps its writer");
    assert_eq!(mode.payload.value().map(|b| &b[..]), Some(&b"green"[..]));
    let seal = mode.seal.as_deref().expect("signed");
    assert_eq!(
        (seal.author.as_deref(), seal.message.as_deref()),
        (Some("ops@example"), Some("blue to green"))
    );
    assert!(seal.grounds.is_none());
    let url = mesh.get("app/db/url").await.expect("get").expect("a value");
    assert_eq!(
        url.payload.value().map(|b| &b[..]),
        Some(&b"postgres://a"[..])
    );
    assert!(
        mesh.get("app/old").await.expect("get").is_none(),
        "still deleted"
    );
    let binary = mesh.get("app/binary").await.expect("get").expect("a value");
    assert_eq!(
        binary.payload.value().map(|b| &b[..]),
        Some(&[0, 159, 146, 150, 255][..])
    );
    let history = mesh.history("app/mode").await.expect("history");
    assert!(history.len() >= 2, "history kept: {history:?}");
    // The trust state reads the old signatures as this build's: nothing unsigned, nothing forged.
    let trust = mesh.trust().await.expect("trust");
    assert_eq!(trust.unsigned_versions, 0, "{trust:?}");
    let after = mesh.put("app/mode", &b"purple"[..]).await.expect("put");
    assert_eq!(after.dot.actor, writer);
    assert!(after.seal.is_some() && after.supersedes(&mode.dot));
    mesh.shutdown().await;
    assert_eq!(format_of(dir.path()), STORAGE_FORMAT, "recorded at start");
    let reopened = start().await.expect("the directory opens again");
    assert_eq!(reopened.id().writer, writer);
    let mode = reopened
        .get("app/mode")
        .await
        .expect("get")
        .expect("a value");
    assert_eq!(mode.payload.value().map(|b| &b[..]), Some(&b"purple"[..]));
    reopened.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_migration_cut_short_at_any_write_leaves_the_old_layout_and_runs_again() {
    let ca = DevCa::generate("test cluster").expect("ca");
    let mut failed_starts = 0;
    for writes_before_the_fault in [0, 1, 2, 3, 4, 6, 8, 12, 16] {
        let dir = tempfile::tempdir().expect("tempdir");
        copy_fixture_data(dir.path());
        // The disk fails (as when full, or when the machine dies) from the n-th write of the
        // start on: somewhere inside the migration's transaction, or before it.
        let writes = Arc::new(AtomicUsize::new(0));
        let hook: StorageFaultHook = {
            let writes = Arc::clone(&writes);
            Arc::new(move || writes.fetch_add(1, Ordering::SeqCst) >= writes_before_the_fault)
        };
        let start = Mesh::builder()
            .tls(ca.node_config("cut").expect("cert"))
            .data_dir(dir.path())
            .storage_fault_hook(hook)
            .start()
            .await;
        match start {
            Err(_) => {
                failed_starts += 1;
                assert_eq!(
                    (format_of(dir.path()), has_local_writes(dir.path())),
                    (1, false),
                    "a migration cut short after {writes_before_the_fault} writes left a mix"
                );
            }
            // The fault came after the migration committed (from about 8 writes on, here).
            Ok(mesh) => mesh.shutdown().await,
        }
        let mesh = Mesh::builder()
            .tls(ca.node_config("cut").expect("cert"))
            .data_dir(dir.path())
            .start()
            .await
            .expect("the next start opens the directory");
        let mode = mesh.get("app/mode").await.expect("get");
        assert_eq!(
            mode.and_then(|v| v.payload.value().cloned()),
            Some(bytes::Bytes::from_static(b"green"))
        );
        mesh.shutdown().await;
        assert_eq!(format_of(dir.path()), STORAGE_FORMAT);
    }
    assert!(failed_starts > 0, "no fault hit the migration");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_data_directory_from_a_newer_build_is_refused_unchanged() {
    let dir = tempfile::tempdir().expect("tempdir");
    copy_fixture_data(dir.path());
    {
        let db = redb::Database::open(dir.path().join(DATABASE_FILE)).expect("open");
        let txn = db.begin_write().expect("write");
        txn.open_table(META)
            .expect("meta")
            .insert("format", 99u64.to_le_bytes().as_slice())
            .expect("insert");
        txn.commit().expect("commit");
    }
    let ca = DevCa::generate("test cluster").expect("ca");
    let result = Mesh::builder()
        .tls(ca.node_config("newer").expect("cert"))
        .data_dir(dir.path())
        .start()
        .await;
    match result {
        Err(MeshError::Storage(StorageError::NewerFormat { found, supported })) => {
            assert_eq!((found, supported), (99, STORAGE_FORMAT));
        }
        other => panic!("a newer directory was not refused: {other:?}"),
    }
    assert_eq!(
        format_of(dir.path()),
        99,
        "the refused directory was changed"
    );

    // The agent says so and exits 2, naming the option.
    #[cfg(feature = "agent")]
    {
        let data_dir = dir.path().to_str().expect("utf-8");
        let mut agent = std::process::Command::new(env!("CARGO_BIN_EXE_confmesh"))
            .args(["agent", "--dev", "--data-dir", data_dir])
            .args(["--gossip-addr", "127.0.0.1:0", "--http-addr", "127.0.0.1:0"])
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .expect("run the agent");
        for _ in 0..400 {
            if agent.try_wait().expect("try_wait").is_some() {
                break;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = agent.kill();
        let out = agent.wait_with_output().expect("wait");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{stderr}");
        assert!(
            stderr.contains("data_dir") && stderr.contains("newer"),
            "{stderr}"
        );
        assert_eq!(format_of(dir.path()), 99);
    }
}

/// Decodes every message recorded in `fixtures/wire`, checks it encodes back to the same bytes
/// in the format it was written in, and hands it to `check`; returns how many there were.
fn recorded_messages(fixtures: &str, mut check: impl FnMut(&Path, &wire::Message)) -> usize {
    let dir = Path::new(fixtures).join("wire");
    let mut kinds = 0;
    for entry in std::fs::read_dir(&dir).expect("fixture wire") {
        let path = entry.expect("entry").path();
        if path.extension().and_then(|e| e.to_str()) != Some("bin") {
            continue;
        }
        let bytes = std::fs::read(&path).expect("read");
        let message = wire::decode(&bytes, MAX_MESSAGE_BYTES)
            .unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        let format = match bytes[0] {
            wire::FORMAT_VERSION => wire::Format::Plain,
            wire::SEALED_FORMAT_VERSION => wire::Format::Sealed,
            other => panic!("{}: format {other}", path.display()),
        };
        let again = wire::encode_as(&message, format, MAX_MESSAGE_BYTES).expect("encode");
        assert_eq!(&again[..], &bytes[..], "{}", path.display());
        // A message in a format this build does not know is refused, not misread.
        let mut future = bytes.clone();
        future[0] = 200;
        assert!(matches!(
            wire::decode(&future, MAX_MESSAGE_BYTES),
            Err(DecodeError::UnknownVersion(200))
        ));
        check(&path, &message);
        kinds += 1;
    }
    kinds
}

#[test]
fn messages_recorded_from_989adcb_decode_and_encode_back_to_the_same_bytes() {
    let kinds = recorded_messages(FIXTURES, |_, _| {});
    assert_eq!(kinds, 10, "one recorded message per kind");
}

/// Protocol 3's messages (signed versions, format 3) read in this build, byte for byte, and
/// their signatures still verify: protocol 4 signs a version without grounds as protocol 3 did.
#[test]
fn messages_recorded_from_03b59e4_decode_encode_back_and_their_signatures_verify() {
    let keys = [0xa1, 0xb2].map(|seed| WriterKey::from_seed([seed; 32]));
    let mut signed = 0;
    let kinds = recorded_messages(FIXTURES_PROTOCOL_3, |path, message| {
        for version in message.versions() {
            let key = keys
                .iter()
                .find(|k| k.id() == version.dot.actor)
                .unwrap_or_else(|| panic!("{}: writer {}", path.display(), version.dot.actor));
            assert!(
                verifies(version, &key.public()),
                "{}: {version:?}",
                path.display()
            );
            assert!(version.seal.as_ref().is_some_and(|s| s.grounds.is_none()));
            signed += 1;
        }
    });
    assert_eq!(kinds, 10, "one recorded message per kind");
    assert_eq!(
        signed, 5,
        "the recorded versions: push 2, delta 1, snapshot 2"
    );
}
