//! The command line against a live agent, and certificate issuing.

use std::process::Command;

use serde_json::Value;

use crate::{Agent, BIN};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_command_line_against_a_live_agent() {
    let dir = tempfile::tempdir().expect("tempdir");
    let agent = Agent::start(dir.path(), &["--name", "cli-test"]);
    let cli = |args: &[&str]| {
        let out = Command::new(BIN)
            .args(args)
            .args(["--addr", &agent.http])
            .output()
            .expect("run cli");
        (
            out.status.code(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };
    let (code, out, _) = cli(&["put", "app/mode", "blue"]);
    assert_eq!(code, Some(0));
    assert!(out.starts_with("app/mode = version "), "{out}");
    cli(&["put", "app/mode", "green"]);
    let (code, out, _) = cli(&["get", "app/mode"]);
    assert_eq!(code, Some(0));
    assert!(out.starts_with("green\n"), "{out}");
    let (_, raw, _) = cli(&["get", "app/mode", "--raw"]);
    assert_eq!(raw, "green");
    let (_, listing, _) = cli(&["ls", "app/"]);
    assert!(listing.starts_with("app/mode\t"), "{listing}");
    let (_, history, _) = cli(&["history", "app/mode"]);
    let first = history
        .lines()
        .next()
        .and_then(|l| l.split('\t').next())
        .expect("a version");
    assert!(
        history.contains("blue") && history.contains("green"),
        "{history}"
    );
    let (code, out, _) = cli(&["rollback", "app/mode", first]);
    assert_eq!(code, Some(0), "{out}");
    let (_, raw, _) = cli(&["get", "app/mode", "--raw"]);
    assert_eq!(raw, "blue");
    let (code, json_out, _) = cli(&["get", "app/mode", "--json"]);
    assert_eq!(code, Some(0));
    assert_eq!(
        serde_json::from_str::<Value>(&json_out).expect("json")["value"],
        "blue"
    );
    let (_, members, _) = cli(&["members"]);
    assert!(members.starts_with("cli-test\t"), "{members}");
    // trust: an agent of protocol 3 and later signs everything, so resign finds nothing to replace.
    let (code, status, _) = cli(&["trust", "status"]);
    assert_eq!(code, Some(0), "{status}");
    assert!(
        status.contains("mode\tenforcing") && status.contains("unsigned versions\t0"),
        "{status}"
    );
    let (code, resigned, _) = cli(&["trust", "resign", "--json"]);
    assert_eq!(code, Some(0), "{resigned}");
    assert_eq!(
        serde_json::from_str::<Value>(&resigned).expect("json")["rewritten"],
        0
    );
    let (code, _, _) = cli(&["del", "app/mode"]);
    assert_eq!(code, Some(0));
    let (code, _, err) = cli(&["get", "app/mode"]);
    assert_eq!(code, Some(1), "a missing key fails");
    assert!(err.contains("no value"), "{err}");
    let (code, _, err) = cli(&["put", "bad//key", "x"]);
    assert_eq!(code, Some(2), "bad input is a usage error");
    assert!(err.contains("segment"), "{err}");

    // Keys travel percent-encoded: `?`, `#` and spaces are part of the key (which the agent
    // refuses), never a query or a fragment cutting it short.
    cli(&["put", "cli/inj", "kept"]);
    cli(&["put", "cli/frag", "kept"]);
    let (code, _, err) = cli(&["del", "cli/inj?x=1"]);
    assert_eq!(code, Some(2), "{err}");
    let (code, _, err) = cli(&["put", "cli/frag#x", "v"]);
    assert_eq!(code, Some(2), "{err}");
    let (code, _, err) = cli(&["put", "bad key", "x"]);
    assert_eq!(code, Some(2), "{err}");
    assert!(err.contains("character"), "{err}");
    for key in ["cli/inj", "cli/frag"] {
        let (_, raw, _) = cli(&["get", key, "--raw"]);
        assert_eq!(raw, "kept", "{key} was changed through another key");
    }
    // `x/history` is a key like any other, not the history of `x`.
    let (code, out, err) = cli(&["get", "cli/inj/history"]);
    assert_eq!(code, Some(1), "{out}");
    assert!(err.contains("no value"), "{err}");
    cli(&["put", "cli/inj/history", "a key"]);
    let (_, raw, _) = cli(&["get", "cli/inj/history", "--raw"]);
    assert_eq!(raw, "a key");
    let (code, history, _) = cli(&["history", "cli/inj/history"]);
    assert_eq!(code, Some(0));
    assert!(
        history.contains("a key") && !history.contains("kept"),
        "{history}"
    );

    // watch: changes as they happen, each with a cursor to resume after.
    let watch = |from: Option<&str>| {
        let mut command = Command::new(BIN);
        command.args(["watch", "cli/w/", "--addr", &agent.http]);
        if let Some(cursor) = from {
            command.args(["--from", cursor]);
        }
        Watcher::spawn(command)
    };
    let mut first = watch(None);
    std::thread::sleep(std::time::Duration::from_millis(300));
    cli(&["put", "cli/w/a", "one"]);
    let line = first.line();
    assert!(line.starts_with("cli/w/a = one\t(cursor "), "{line}");
    let cursor = line
        .trim_end()
        .trim_end_matches(')')
        .rsplit(' ')
        .next()
        .expect("cursor")
        .to_string();
    drop(first);
    cli(&["put", "cli/w/b", "two"]);
    cli(&["del", "cli/w/a"]);
    let mut resumed = watch(Some(&cursor));
    assert!(resumed.line().starts_with("cli/w/b = two\t"));
    assert!(resumed.line().starts_with("cli/w/a = <deleted>\t"));

    // cert: a CA, then a node certificate an agent accepts.
    let certs = tempfile::tempdir().expect("tempdir");
    let out = certs.path().to_str().expect("utf-8");
    let ca = Command::new(BIN)
        .args(["cert", "ca", "--out", out])
        .output()
        .expect("cert ca");
    assert!(ca.status.success());
    let node = Command::new(BIN)
        .args([
            "cert",
            "node",
            "--name",
            "n1",
            "--ip",
            "127.0.0.1",
            "--dns",
            "n1.local",
        ])
        .args(["--ca-dir", out, "--out", out])
        .output()
        .expect("cert node");
    assert!(
        node.status.success(),
        "{}",
        String::from_utf8_lossy(&node.stderr)
    );
    let tls = confmesh::runtime::tls::TlsConfig::from_files(
        &certs.path().join("ca.pem"),
        &certs.path().join("n1.pem"),
        &certs.path().join("n1.key"),
    );
    assert!(tls.is_ok(), "the issued files load: {tls:?}");
}

/// A `confmesh watch` running in the background, read line by line; killed when dropped.
struct Watcher {
    child: std::process::Child,
    lines: std::sync::mpsc::Receiver<String>,
}

impl Watcher {
    fn spawn(mut command: Command) -> Watcher {
        let mut child = command
            .stdout(std::process::Stdio::piped())
            .spawn()
            .expect("run watch");
        let stdout = child.stdout.take().expect("stdout");
        let (tx, lines) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            use std::io::BufRead;
            for line in std::io::BufReader::new(stdout)
                .lines()
                .map_while(Result::ok)
            {
                if tx.send(line).is_err() {
                    return;
                }
            }
        });
        Watcher { child, lines }
    }

    /// The next line, waiting at most 20 s.
    fn line(&mut self) -> String {
        self.lines
            .recv_timeout(std::time::Duration::from_secs(20))
            .expect("watch printed a line")
    }
}

impl Drop for Watcher {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
