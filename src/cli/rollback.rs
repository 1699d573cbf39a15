//! `confmesh rollback KEY VERSION`.

use super::{Failure, Target, output};

/// `rollback`'s arguments.
#[derive(clap::Args)]
pub(crate) struct Args {
    /// The key.
    key: String,
    /// The version to restore.
    version: String,
    #[command(flatten)]
    target: Target,
}

pub(crate) async fn run(args: Args) -> Result<(), Failure> {
    let answer = args
        .target
        .client()?
        .rollback(&args.key, &args.version)
        .await?;
    output::print(&args.target, &answer, |a| {
        format!(
            "{} restored to {} (new version {})",
            a.key,
            a.restored,
            output::or_dash(a.version.as_deref())
        )
    })
}
