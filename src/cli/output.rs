//! Printing answers: the agent's JSON with `--json`, else text.

use confmesh::api::VersionInfo;
use serde::Serialize;

use super::{Failure, Target};

/// Prints `answer` as JSON with `--json`, else as `text` makes it.
pub(crate) fn print<T: Serialize>(
    target: &Target,
    answer: &T,
    text: impl FnOnce(&T) -> String,
) -> Result<(), Failure> {
    if target.json {
        let json = serde_json::to_string(answer).map_err(|e| Failure::failed(e.to_string()))?;
        println!("{json}");
    } else {
        println!("{}", text(answer));
    }
    Ok(())
}

/// A value as text: itself if it is UTF-8, else its size and base64.
pub(crate) fn value_text(v: &VersionInfo) -> String {
    if let (Some(generation), None) = (&v.sealed, &v.value_base64) {
        // A secret shown without its value (docs/PROTOCOL.md §9.6): never as deleted.
        return format!("<sealed, {generation}>");
    }
    match (&v.value, &v.value_base64) {
        (_, None) => "<deleted>".to_string(),
        (Some(text), _) => text.clone(),
        (None, Some(b64)) => format!("<{} bytes, base64 {b64}>", v.bytes().len()),
    }
}

/// An optional field as text (`-` when absent).
pub(crate) fn or_dash(v: Option<&str>) -> &str {
    v.unwrap_or("-")
}
