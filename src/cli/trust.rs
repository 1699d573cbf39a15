//! `confmesh trust status` and `confmesh trust resign` (docs/PROTOCOL.md §7.5).

use clap::Subcommand;

use super::{Failure, Target, output};

/// `trust`'s subcommands.
#[derive(Subcommand)]
pub(crate) enum Command {
    /// What the agent's node trusts: its mode, unsigned versions held, convicted writers.
    Status {
        #[command(flatten)]
        target: Target,
    },
    /// Write again, signed, every key holding an unsigned version (a protocol-2 writer's):
    /// run once on one node after the last protocol-2 node is upgraded, then switch every
    /// node to enforcing once `trust status` shows 0 unsigned versions on each.
    Resign {
        #[command(flatten)]
        target: Target,
    },
}

pub(crate) async fn run(command: Command) -> Result<(), Failure> {
    match command {
        Command::Status { target } => {
            let answer = target.client()?.trust().await?;
            output::print(&target, &answer, |a| {
                let mut lines = vec![
                    format!("mode\t{}", a.mode),
                    format!("unsigned versions\t{}", a.unsigned_versions),
                    format!("endorsed writers\t{}", a.endorsed_writers),
                ];
                lines.extend(
                    a.equivocated
                        .iter()
                        .map(|e| format!("equivocated\t{} at {}", e.writer, e.seq)),
                );
                lines.join("\n")
            })
        }
        Command::Resign { target } => {
            let answer = target.client()?.resign().await?;
            output::print(&target, &answer, |a| {
                let mut lines = vec![format!("{} keys written again, signed", a.rewritten)];
                let list = |what: &str, keys: &[String]| {
                    keys.iter()
                        .map(|k| format!("{what}\t{k}"))
                        .collect::<Vec<_>>()
                };
                lines.extend(list("siblings resolved", &a.siblings_resolved));
                lines.extend(list("legacy record deleted", &a.records_retired));
                lines.extend(list("left unsigned", &a.left));
                lines.join("\n")
            })
        }
    }
}
