//! `confmesh ls [PREFIX]`.

use super::{Failure, Target, output};

/// `ls`'s arguments.
#[derive(clap::Args)]
pub(crate) struct Args {
    /// The prefix (default: every key).
    #[arg(default_value = "")]
    prefix: String,
    #[command(flatten)]
    target: Target,
}

pub(crate) async fn run(args: Args) -> Result<(), Failure> {
    let keys = args.target.client()?.list_all(&args.prefix).await?;
    output::print(&args.target, &keys, |keys| {
        keys.iter()
            .map(|k| format!("{}\t{}", k.key, k.version))
            .collect::<Vec<_>>()
            .join("\n")
    })
}
