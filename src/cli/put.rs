//! `confmesh put KEY [VALUE]`.

use bytes::Bytes;

use confmesh::api::PutParams;

use super::{AuditArgs, Failure, Target, output};

/// `put`'s arguments.
#[derive(clap::Args)]
pub(crate) struct Args {
    /// The key.
    key: String,
    /// The value.
    value: Option<String>,
    /// Only if the current version is this one (`none`: only if absent).
    #[arg(long)]
    if_version: Option<String>,
    #[command(flatten)]
    audit: AuditArgs,
    #[command(flatten)]
    target: Target,
}

pub(crate) async fn run(args: Args) -> Result<(), Failure> {
    let value = match args.value {
        Some(v) if v != "-" => Bytes::from(v),
        _ => {
            let mut buf = Vec::new();
            std::io::Read::read_to_end(&mut std::io::stdin(), &mut buf)
                .map_err(|e| Failure::failed(format!("cannot read standard input: {e}")))?;
            Bytes::from(buf)
        }
    };
    let client = args.target.client()?;
    let params = PutParams {
        if_version: args.if_version,
        author: args.audit.author,
        message: args.audit.message,
    };
    let answer = client.put_with(&args.key, value, &params).await?;
    output::print(&args.target, &answer, |a| {
        format!("{} = version {}", a.key, a.version)
    })
}
