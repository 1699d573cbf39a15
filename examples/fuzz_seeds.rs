//! Writes the seed corpora of the fuzz targets `member_record` and `http_request` (`fuzz/`):
//!
//! - `<out>/member_record/`: member records of both layouts, as this build writes them, and
//!   the records a node holds after opening the data directory recorded by commit 989adcb
//!   (`tests/fixtures/989adcb/data`): that build's record (protocol 1's layout) and the one
//!   this build rewrites it to.
//! - `<out>/http_request/`: requests a client of the agent's API sends, each after the options
//!   byte the target reads (`confmesh::fuzzing::HttpClient::from_byte`): every route with and
//!   without the token, a chunked body, two requests on one connection, a blocking query, an
//!   event stream.
//! - `<out>/wire_decode/`: messages of format 4 (versions with grounds: a policy context and
//!   an author's proof), which no recorded traffic holds yet.
//!
//! ```text
//! cargo run --example fuzz_seeds -- fuzz/corpus
//! ```

use std::{
    collections::BTreeMap,
    path::{Path, PathBuf},
};

use confmesh::{
    fuzzing::{HTTP_TOKEN, HttpClient, MemberRecord, encode_member_record},
    runtime::{Mesh, tls::DevCa},
};

const FIXTURE: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/989adcb/data");

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let out = PathBuf::from(
        std::env::args()
            .nth(1)
            .ok_or("usage: fuzz_seeds <out dir>")?,
    );
    let records = member_records().await?;
    write_all(&out.join("member_record"), &records)?;
    let requests = http_requests();
    write_all(&out.join("http_request"), &requests)?;
    write_all(&out.join("wire_decode"), &grounded_messages()?)?;
    println!(
        "wrote {} member records and {} HTTP requests into {}",
        records.len(),
        requests.len(),
        out.display()
    );
    Ok(())
}

/// Named inputs of one fuzz target.
type Seeds = Vec<(String, Vec<u8>)>;

/// A push and a snapshot chunk whose versions carry grounds (format 4).
fn grounded_messages() -> Result<Seeds, Box<dyn std::error::Error>> {
    use bytes::Bytes;
    use confmesh::proto::{
        AuthorProof, Grounds, Key, Message, Store, StoreConfig, VClock, WriterId,
        trust::WriterKey,
        wire::{self, Format},
    };
    let key = WriterKey::from_seed([0xc3; 32]);
    let mut store = Store::new(key.id(), StoreConfig::default());
    let mut context = VClock::new();
    context.dots.insert(WriterId(0x51), 3);
    let grounds = Grounds {
        context,
        proof: Some(AuthorProof {
            signature: [9; 64],
            certificate: Some(Bytes::from_static(b"0\x82\x01\x00")),
        }),
    };
    let put = store.put(1_000, Key::new("billing/rate")?, Bytes::from_static(b"7"))?;
    let grounded = key.sign_grounded(put, Some("admin:ops".into()), None, grounds);
    let plain = key.sign(
        store.put(1_001, Key::new("billing/cap")?, Bytes::from_static(b"9"))?,
        None,
        None,
    );
    let mut snapshot = Store::new(WriterId(2), StoreConfig::default());
    let _ = snapshot.apply(grounded.clone());
    let chunk = snapshot
        .snapshot_chunks(1 << 20)
        .into_iter()
        .next()
        .ok_or("a chunk")?;
    let messages = [
        (
            "grounded_push",
            Message::Push {
                versions: vec![grounded, plain],
            },
        ),
        ("grounded_snapshot", Message::SyncSnapshot(chunk)),
    ];
    messages
        .into_iter()
        .map(|(name, message)| {
            let bytes = wire::encode_as(&message, Format::Sealed, wire::MAX_MESSAGE_BYTES)?;
            Ok((name.to_owned(), bytes.to_vec()))
        })
        .collect()
}

fn write_all(dir: &Path, seeds: &[(String, Vec<u8>)]) -> std::io::Result<()> {
    std::fs::create_dir_all(dir)?;
    for (name, bytes) in seeds {
        std::fs::write(dir.join(format!("{name}.bin")), bytes)?;
    }
    Ok(())
}

async fn member_records() -> Result<Vec<(String, Vec<u8>)>, Box<dyn std::error::Error>> {
    let record = |name: &str, tags: &[(&str, &str)], protocol| MemberRecord {
        name: name.to_string(),
        tags: tags
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect::<BTreeMap<_, _>>(),
        protocol,
        recipient: None,
    };
    let many: Vec<(String, String)> = (0..40)
        .map(|i| (format!("tag-{i:02}"), "x".repeat(i)))
        .collect();
    let many: Vec<(&str, &str)> = many.iter().map(|(k, v)| (&k[..], &v[..])).collect();
    let mut seeds = vec![
        ("v1-empty", record("", &[], 1)),
        ("v2-empty", record("", &[], 2)),
        ("v1-named", record("n1", &[("zone", "eu")], 1)),
        ("v2-named", record("n1", &[("zone", "eu")], 2)),
        (
            "v2-unicode",
            record("nœud-β", &[("région", "eu-ouest"), ("", "")], 2),
        ),
        ("v2-many-tags", record("big", &many, 2)),
    ]
    .into_iter()
    .map(|(name, r)| (name.to_string(), encode_member_record(&r)))
    .collect::<Vec<_>>();
    // A later protocol's record: this build's fields, its version, then fields it does not know.
    let mut later = encode_member_record(&record("n3", &[("zone", "us")], 3));
    later.extend_from_slice(b"\x05more!");
    seeds.push(("v3-later".to_string(), later));
    // A record with the node's age recipient after its version (docs/PROTOCOL.md §9.2).
    let with_recipient = MemberRecord {
        recipient: Some(confmesh::runtime::secrets::NodeIdentity::ephemeral().recipient()),
        ..record("n4", &[("zone", "eu")], 4)
    };
    seeds.push((
        "v4-recipient".to_string(),
        encode_member_record(&with_recipient),
    ));

    // What a node holds after opening 989adcb's data directory: the old build's record, then
    // the record this build writes under its directory's new, key-derived writer id.
    let dir = tempfile::tempdir()?;
    for entry in std::fs::read_dir(FIXTURE)? {
        let entry = entry?;
        std::fs::copy(entry.path(), dir.path().join(entry.file_name()))?;
    }
    let ca = DevCa::generate("fuzz seeds")?;
    let mesh = Mesh::builder()
        .tls(ca.node_config("fixture")?)
        .data_dir(dir.path())
        .name("fixture")
        .tag("zone", "eu")
        .start()
        .await?;
    let old = mesh
        .history("_confmesh/members/000000000000f1f1")
        .await?
        .first()
        .cloned()
        .ok_or("no old record")?;
    let key = format!("_confmesh/members/{}", mesh.id().writer);
    // The new record is a write like any other: it lands shortly after the start.
    let mut new = None;
    for _ in 0..100 {
        new = mesh.get(&key).await?;
        if new.is_some() {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    mesh.shutdown().await;
    let new = new.ok_or("this build's record was not written")?;
    for (name, version) in [("989adcb-v1", old), ("989adcb-rewritten-v2", new)] {
        let value = version.payload.value().ok_or("a deleted record")?;
        seeds.push((name.to_string(), value.to_vec()));
    }
    Ok(seeds)
}

fn http_requests() -> Vec<(String, Vec<u8>)> {
    let auth = format!("authorization: Bearer {HTTP_TOKEN}\r\n");
    let open = HttpClient::default();
    let guarded = HttpClient {
        token_required: true,
        ..HttpClient::default()
    };
    let stopping = HttpClient {
        stop_ends_long_answers: true,
        ..guarded
    };
    let half_close = HttpClient {
        half_close: true,
        ..HttpClient::default()
    };
    let get = |path: &str, extra: &str| format!("GET {path} HTTP/1.1\r\nhost: x\r\n{extra}\r\n");
    let put = |path: &str, extra: &str, body: &str| {
        format!(
            "PUT {path} HTTP/1.1\r\nhost: x\r\n{extra}content-length: {}\r\n\r\n{body}",
            body.len()
        )
    };
    let seeds: Vec<(&str, HttpClient, String)> = vec![
        ("health", open, get("/v1/health", "")),
        ("health-no-token", guarded, get("/v1/health", "")),
        (
            "put",
            open,
            put("/v1/kv/app/db/url", "", "postgres://a"),
        ),
        (
            "put-token",
            guarded,
            put("/v1/kv/app/mode", &auth, "blue"),
        ),
        (
            "put-wrong-token",
            guarded,
            put("/v1/kv/app/mode", "authorization: Bearer nope\r\n", "red"),
        ),
        (
            "put-if-none",
            open,
            put("/v1/kv/app/new?if_version=none", "", "1"),
        ),
        (
            "put-chunked",
            open,
            "PUT /v1/kv/app/chunked HTTP/1.1\r\nhost: x\r\ntransfer-encoding: chunked\r\n\r\n5\r\nhello\r\n6\r\n world\r\n0\r\n\r\n".to_string(),
        ),
        (
            "put-expect-continue",
            open,
            put("/v1/kv/app/expect", "expect: 100-continue\r\n", "v"),
        ),
        ("get", open, get("/v1/kv/app/db/url", "")),
        ("get-token", guarded, get("/v1/kv/app/mode", &auth)),
        ("get-raw", open, get("/v1/kv/app/db/url?raw=1", "")),
        (
            "get-blocking",
            open,
            get("/v1/kv/app/mode?index=none&wait=5s", ""),
        ),
        (
            "get-blocking-stop",
            stopping,
            get("/v1/kv/app/absent?index=none", &auth),
        ),
        ("head", open, "HEAD /v1/kv/app/db/url HTTP/1.1\r\nhost: x\r\n\r\n".to_string()),
        (
            "delete",
            open,
            "DELETE /v1/kv/app/mode HTTP/1.1\r\nhost: x\r\n\r\n".to_string(),
        ),
        (
            "delete-token",
            guarded,
            format!("DELETE /v1/kv/app/old HTTP/1.1\r\nhost: x\r\n{auth}\r\n"),
        ),
        ("list", open, get("/v1/kv?prefix=app/&limit=2&after=app/a", "")),
        ("list-token", guarded, get("/v1/kv", &auth)),
        ("history", open, get("/v1/history/app/mode", "")),
        (
            "rollback",
            open,
            "POST /v1/rollback/app/mode?version=0000000000000001-1 HTTP/1.1\r\nhost: x\r\ncontent-length: 0\r\n\r\n".to_string(),
        ),
        ("watch", open, get("/v1/watch?prefix=app/", "")),
        (
            "watch-from",
            stopping,
            get("/v1/watch?prefix=app/", &format!("{auth}last-event-id: 0-0\r\n")),
        ),
        ("members", guarded, get("/v1/members", &auth)),
        ("metrics", open, get("/metrics", "")),
        ("not-found", open, get("/v2/nothing", "")),
        ("empty-key", open, get("/v1/kv/", "")),
        ("reserved", open, put("/v1/kv/_confmesh/members/x", "", "forged")),
        (
            "keep-alive-two",
            open,
            format!(
                "{}{}",
                put("/v1/kv/app/pair", "", "first"),
                get("/v1/kv/app/pair?raw=1", "")
            ),
        ),
        (
            "keep-alive-two-token",
            guarded,
            format!("{}{}", get("/v1/health", ""), get("/v1/kv/app/pair", &auth)),
        ),
        (
            "connection-close",
            open,
            get("/v1/health", "connection: close\r\n"),
        ),
        ("http10", open, "GET /v1/health HTTP/1.0\r\n\r\n".to_string()),
        ("garbage", open, "GARBAGE\r\n\r\n".to_string()),
        (
            "body-cut-short",
            open,
            "PUT /v1/kv/app/short HTTP/1.1\r\nhost: x\r\ncontent-length: 10\r\n\r\nabc".to_string(),
        ),
        ("half-close", half_close, get("/v1/kv/app/db/url", "")),
    ];
    seeds
        .into_iter()
        .map(|(name, client, request)| {
            let mut bytes = vec![client.to_byte()];
            bytes.extend_from_slice(request.as_bytes());
            (name.to_string(), bytes)
        })
        .collect()
}
