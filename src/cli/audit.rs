//! `confmesh audit [PREFIX]`.

use super::{Failure, Target, output};

/// `audit`'s arguments.
#[derive(clap::Args)]
pub(crate) struct Args {
    /// Changes to keys under this prefix (default: every key).
    #[arg(default_value = "")]
    prefix: String,
    /// At most this many changes, newest first (the agent allows up to 10,000).
    #[arg(long, default_value_t = 100)]
    limit: usize,
    #[command(flatten)]
    target: Target,
}

pub(crate) async fn run(args: Args) -> Result<(), Failure> {
    let answer = args
        .target
        .client()?
        .audit(&args.prefix, Some(args.limit))
        .await?;
    output::print(&args.target, &answer, |a| {
        a.changes
            .iter()
            .map(|c| {
                format!(
                    "{}\t{}\t{}\t{}\t{}\t{}",
                    c.time_ms,
                    c.key,
                    c.version,
                    if c.deleted { "deleted" } else { "written" },
                    output::or_dash(c.author.as_deref()),
                    output::or_dash(c.message.as_deref()),
                )
            })
            .collect::<Vec<_>>()
            .join("\n")
    })
}
