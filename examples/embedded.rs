//! A three-node mesh in one process: put on one node and watch the change arrive on another,
//! resume a watch from its cursor, roll a key back to an earlier version, and a conditional
//! write that fails against a stale version. Node 0 keeps its replica in a data directory.
//!
//! ```sh
//! cargo run --example embedded
//! ```

use std::time::Duration;

use confmesh::runtime::{Mesh, MeshError, tls::DevCa};

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    // One cluster CA; every node gets a certificate it signed (production: `confmesh cert`).
    let ca = DevCa::generate("embedded example")?;
    let data_dir = std::env::temp_dir().join(format!("confmesh-embedded-{}", std::process::id()));
    let first = Mesh::builder()
        .tls(ca.node_config("node-0")?)
        .name("node-0")
        .tag("role", "payments")
        .data_dir(&data_dir)
        .start()
        .await?;
    let seed = first.id().addr.to_string();
    let mut nodes = vec![first];
    for i in 1..3 {
        let node = Mesh::builder()
            .tls(ca.node_config(&format!("node-{i}"))?)
            .name(format!("node-{i}"))
            .seeds([seed.clone()])
            .start()
            .await?;
        nodes.push(node);
    }
    for _ in 0..100 {
        let mut sizes = Vec::new();
        for node in &nodes {
            sizes.push(node.members().await?.len());
        }
        if sizes.iter().all(|&s| s == 3) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    for member in nodes[2].members().await? {
        println!(
            "member {} at {} tags {:?}",
            member.name, member.id.addr, member.tags
        );
    }

    // Watch `payments/` on node 2, write on node 0.
    let mut watch = nodes[2].watch("payments/", None)?;
    nodes[0].put("payments/timeout-ms", &b"250"[..]).await?;
    let change = tokio::time::timeout(Duration::from_secs(5), watch.next())
        .await?
        .ok_or("watch ended")??;
    println!(
        "node 2 saw {} = {:?} (written by {:?}, cursor {})",
        change.key,
        String::from_utf8_lossy(change.new_value().unwrap_or_default()),
        change.origin,
        change.cursor
    );

    // A watch resumes from a cursor: nothing after it is missed.
    let cursor = watch.cursor();
    drop(watch);
    nodes[0].put("payments/retries", &b"3"[..]).await?;
    nodes[0].put("payments/timeout-ms", &b"500"[..]).await?;
    let mut resumed = nodes[2].watch("payments/", Some(cursor))?;
    for _ in 0..2 {
        let change = tokio::time::timeout(Duration::from_secs(5), resumed.next())
            .await?
            .ok_or("watch ended")??;
        println!(
            "resumed watch: {} = {:?}",
            change.key,
            String::from_utf8_lossy(change.new_value().unwrap_or_default())
        );
    }

    // History and rollback: once node 1 has the 500, restore the first timeout from it.
    for _ in 0..100 {
        let now = nodes[1].get("payments/timeout-ms").await?;
        if now.and_then(|v| v.payload.value().cloned()).as_deref() == Some(&b"500"[..]) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let history = nodes[1].history("payments/timeout-ms").await?;
    let values: Vec<_> = history
        .iter()
        .map(|v| String::from_utf8_lossy(v.payload.value().map_or(&b""[..], |b| b)).into_owned())
        .collect();
    println!("history of payments/timeout-ms on node 1: {values:?}");
    let restored = nodes[1]
        .rollback("payments/timeout-ms", history[0].dot)
        .await?;
    println!(
        "rolled back to 250 with a new version {:?}",
        restored.map(|v| v.dot)
    );

    // A conditional write: succeed against the version we read, then fail against it.
    let current = nodes[1].get("payments/timeout-ms").await?.map(|v| v.dot);
    let updated = nodes[1]
        .put_if("payments/timeout-ms", &b"300"[..], current)
        .await?;
    println!("node 1 put_if against {current:?}: now {:?}", updated.dot);
    match nodes[1]
        .put_if("payments/timeout-ms", &b"400"[..], current)
        .await
    {
        Err(MeshError::Conflict { current }) => {
            println!("stale put_if refused; winner is {current:?}")
        }
        other => println!("unexpected: {other:?}"),
    }

    for node in nodes {
        node.shutdown().await;
    }
    let _ = std::fs::remove_dir_all(&data_dir);
    Ok(())
}
