//! `confmesh watch [PREFIX]`: changes as they happen, until the agent ends the stream.

use confmesh::api::WatchEvent;

use super::{Failure, Target, output};

/// `watch`'s arguments.
#[derive(clap::Args)]
pub(crate) struct Args {
    /// The prefix (default: every key).
    #[arg(default_value = "")]
    prefix: String,
    /// Resume after this cursor (printed with each change).
    #[arg(long)]
    from: Option<String>,
    #[command(flatten)]
    target: Target,
}

pub(crate) async fn run(args: Args) -> Result<(), Failure> {
    let client = args.target.client()?;
    let mut events = client.watch(&args.prefix, args.from.as_deref()).await?;
    while let Some(event) = events.next().await {
        match event? {
            WatchEvent::Change(change) => output::print(&args.target, &change, |c| {
                let text = c
                    .new
                    .as_ref()
                    .map_or_else(|| "<deleted>".to_string(), output::value_text);
                format!("{} = {text}\t(cursor {})", c.key, c.cursor)
            })?,
            WatchEvent::Shutdown(end)
            | WatchEvent::Closed(end)
            | WatchEvent::Gap(end)
            | WatchEvent::Error(end) => return Err(Failure::failed(end.error)),
        }
    }
    Ok(())
}
