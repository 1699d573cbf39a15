//! `confmesh history KEY`.

use super::{Failure, Target, output};

/// `history`'s arguments.
#[derive(clap::Args)]
pub(crate) struct Args {
    /// The key.
    key: String,
    #[command(flatten)]
    target: Target,
}

pub(crate) async fn run(args: Args) -> Result<(), Failure> {
    let answer = args.target.client()?.history(&args.key).await?;
    output::print(&args.target, &answer, |a| {
        a.versions
            .iter()
            .map(|v| {
                format!(
                    "{}\t{}\t{}\t{}\t{}",
                    v.version,
                    v.time_ms,
                    output::or_dash(v.author.as_deref()),
                    output::or_dash(v.message.as_deref()),
                    output::value_text(v)
                )
            })
            .collect::<Vec<_>>()
            .join("\n")
    })
}
