//! `confmesh cert admin` and `confmesh acl` against a live agent: an admin certificate of the
//! cluster CA makes the policy root, grants and revokes; the agent's node then writes only
//! where it is granted, and the command line says which grant is missing.

use std::process::Command;

use crate::{Agent, BIN};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_admin_roots_the_policy_and_grants_and_revokes_from_the_command_line() {
    let dir = tempfile::tempdir().expect("tempdir");
    let data = dir.path().join("data");
    let agent = Agent::start(&data, &["--name", "billing-1"]);
    let run = |args: &[&str], with_agent: bool| {
        let mut command = Command::new(BIN);
        command.args(args);
        if with_agent {
            command.args(["--addr", &agent.http]);
        }
        let out = command.output().expect("run cli");
        (
            out.status.code(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };
    let cli = |args: &[&str]| run(args, true);
    // The admin certificate, issued by the CA `--dev` made.
    let (cert, key) = crate::issue_admin(&data, dir.path());
    let admin = [
        "--admin-cert",
        cert.to_str().expect("utf-8"),
        "--admin-key",
        key.to_str().expect("utf-8"),
    ];
    let with_admin = |args: &[&str]| {
        let mut all: Vec<&str> = args.to_vec();
        all.extend(admin);
        cli(&all)
    };

    let (code, out, _) = cli(&["acl", "show"]);
    assert_eq!(code, Some(0));
    assert!(out.starts_with("no policy root"), "{out}");
    assert_eq!(cli(&["put", "app/x", "before"]).0, Some(0), "no policy yet");

    // A node certificate is not an admin's.
    let (code, _, err) = cli(&[
        "acl",
        "init",
        "--admin-cert",
        data.join("tls/node.pem").to_str().expect("utf-8"),
        "--admin-key",
        data.join("tls/node.key").to_str().expect("utf-8"),
    ]);
    assert_ne!(code, Some(0));
    assert!(err.contains("admin"), "{err}");

    let (code, out, err) = with_admin(&["acl", "init", "-m", "first root"]);
    assert_eq!(code, Some(0), "{out}{err}");
    assert!(out.contains("root, admins admin:ops"), "{out}");
    let (code, _, err) = with_admin(&["acl", "init"]);
    assert_ne!(code, Some(0), "a second root");
    assert!(err.contains("already has a policy root"), "{err}");

    // Rooted, with no grant: the node may write nothing, and is told what is missing.
    let (code, _, err) = cli(&["put", "app/x", "after"]);
    assert_ne!(code, Some(0));
    assert!(
        err.contains("node:billing-1 holds no write grant over \"app/x\""),
        "{err}"
    );
    let (code, out, err) = with_admin(&["acl", "grant", "node:billing-1", "write", "app/"]);
    assert_eq!(code, Some(0), "{out}{err}");
    let (code, out, err) = cli(&["put", "app/x", "granted"]);
    assert_eq!(code, Some(0), "{out}{err}");
    assert_ne!(
        cli(&["put", "other/y", "1"]).0,
        Some(0),
        "outside the grant"
    );
    let (code, _, err) = with_admin(&["acl", "grant", "node:billing-1", "fly", "app/"]);
    assert_ne!(code, Some(0));
    assert!(err.contains("not a right"), "{err}");

    let (_, out, _) = cli(&["acl", "show"]);
    assert!(out.starts_with("rooted"), "{out}");
    assert!(
        out.contains("admin:ops\tgrant node:billing-1 write over \"app/\""),
        "{out}"
    );
    let (code, json, _) = cli(&["acl", "show", "--json"]);
    assert_eq!(code, Some(0));
    let json: serde_json::Value = serde_json::from_str(&json).expect("json");
    assert_eq!(json["entries"].as_array().map(Vec::len), Some(2));
    // The agent's node wrote both entries: its next one is its third position.
    let next = json["next_key"].as_str().expect("next_key");
    assert!(
        next.starts_with("_confmesh/policy/") && next.ends_with("-3"),
        "{next}"
    );

    // Revoked: its later writes are refused here, and the value it wrote stays.
    let (code, out, err) = with_admin(&["acl", "revoke", "node:billing-1", "write", "app/"]);
    assert_eq!(code, Some(0), "{out}{err}");
    let (code, _, err) = cli(&["put", "app/x", "revoked"]);
    assert_ne!(code, Some(0));
    assert!(err.contains("revoked"), "{err}");
    let (code, _, err) = cli(&["del", "app/x"]);
    assert_ne!(code, Some(0), "deletes are writes");
    assert!(err.contains("revoked"), "{err}");
    let (_, raw, _) = cli(&["get", "app/x", "--raw"]);
    assert_eq!(raw, "granted");
}
