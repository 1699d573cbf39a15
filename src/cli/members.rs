//! `confmesh members`.

use super::{Failure, Target, output};

/// `members`' arguments.
#[derive(clap::Args)]
pub(crate) struct Args {
    #[command(flatten)]
    target: Target,
}

pub(crate) async fn run(args: Args) -> Result<(), Failure> {
    let answer = args.target.client()?.members().await?;
    output::print(&args.target, &answer, |a| {
        a.members
            .iter()
            .map(|m| {
                let tags = serde_json::to_string(&m.tags).unwrap_or_default();
                let state = serde_json::to_value(m.state)
                    .ok()
                    .and_then(|s| s.as_str().map(String::from))
                    .unwrap_or_default();
                format!("{}\t{}\t{state}\t{tags}", m.name, m.addr)
            })
            .collect::<Vec<_>>()
            .join("\n")
    })
}
