//! `confmesh del KEY`.

use super::{Failure, Target, output};

/// `del`'s arguments.
#[derive(clap::Args)]
pub(crate) struct Args {
    /// The key.
    key: String,
    #[command(flatten)]
    target: Target,
}

pub(crate) async fn run(args: Args) -> Result<(), Failure> {
    let answer = args.target.client()?.delete(&args.key).await?;
    output::print(&args.target, &answer, |a| {
        if a.deleted {
            format!(
                "deleted {} (version {})",
                a.key,
                output::or_dash(a.version.as_deref())
            )
        } else {
            format!("{} was not there", a.key)
        }
    })
}
