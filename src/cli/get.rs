//! `confmesh get KEY`.

use super::{Failure, Target, output};

/// `get`'s arguments.
#[derive(clap::Args)]
pub(crate) struct Args {
    /// The key.
    key: String,
    /// Print only the value's bytes.
    #[arg(long)]
    raw: bool,
    #[command(flatten)]
    target: Target,
}

pub(crate) async fn run(args: Args) -> Result<(), Failure> {
    let client = args.target.client()?;
    if args.raw {
        let bytes = client.get_raw(&args.key).await?;
        return std::io::Write::write_all(&mut std::io::stdout(), &bytes)
            .map_err(|e| Failure::failed(e.to_string()));
    }
    let answer = client.get(&args.key).await?;
    output::print(&args.target, &answer, |a| {
        let w = &a.winner;
        let mut out = format!(
            "{}\n(version {}, writer {}, time {} ms)",
            output::value_text(w),
            w.version,
            w.writer,
            w.time_ms
        );
        for sibling in &a.siblings {
            out.push_str(&format!(
                "\nsibling: {} (version {})",
                output::value_text(sibling),
                sibling.version
            ));
        }
        out
    })
}
