//! A three-node mesh in one process: put on one node, watch the change arrive on another,
//! and a conditional write that loses to a concurrent one.
//!
//! ```sh
//! cargo run --example embedded
//! ```

use std::time::Duration;

use confmesh::{
    proto::node::Event,
    runtime::{Mesh, MeshError, tls::DevCa},
};

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    // One cluster CA; every node gets a certificate it signed (production: `confmesh cert`).
    let ca = DevCa::generate("embedded example")?;
    let first = Mesh::builder()
        .tls(ca.node_config("node-0")?)
        .start()
        .await?;
    let seed = first.id().addr.to_string();
    let mut nodes = vec![first];
    for i in 1..3 {
        let node = Mesh::builder()
            .tls(ca.node_config(&format!("node-{i}"))?)
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
    println!(
        "three nodes: {:?}",
        nodes.iter().map(|n| n.id().addr).collect::<Vec<_>>()
    );

    // Watch on node 2, write on node 0.
    let mut watch = nodes[2].subscribe();
    nodes[0].put("payments/timeout-ms", &b"250"[..]).await?;
    let change = tokio::time::timeout(Duration::from_secs(5), async {
        loop {
            if let Ok(Event::KeyChanged {
                key, new, origin, ..
            }) = watch.recv().await
            {
                return (key, new, origin);
            }
        }
    })
    .await?;
    let value = change.1.as_ref().and_then(|v| v.payload.value()).cloned();
    println!(
        "node 2 saw {} = {:?} (written by {:?})",
        change.0, value, change.2
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
    Ok(())
}
