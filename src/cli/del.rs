//! `confmesh del KEY`.

use confmesh::api::DeleteParams;

use super::{AuditArgs, Failure, Target, output};

/// `del`'s arguments.
#[derive(clap::Args)]
pub(crate) struct Args {
    /// The key.
    key: String,
    #[command(flatten)]
    audit: AuditArgs,
    #[command(flatten)]
    target: Target,
}

pub(crate) async fn run(args: Args) -> Result<(), Failure> {
    let params = DeleteParams {
        author: args.audit.author,
        message: args.audit.message,
    };
    let answer = args
        .target
        .client()?
        .delete_with(&args.key, &params)
        .await?;
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
