//! A small HTTP client for the agent's API: what the command line uses.

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::{Method, Request, StatusCode, body::Incoming};
use hyper_util::{
    client::legacy::{Client as HyperClient, connect::HttpConnector},
    rt::TokioExecutor,
};

/// Why a request to the agent failed before an answer came.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ClientError {
    /// The address is not `host:port` or an `http://` URL.
    #[error("invalid agent address {0:?}")]
    Address(String),
    /// The agent could not be reached.
    #[error("cannot reach the agent at {addr}: {cause}")]
    Unreachable {
        /// The agent's address.
        addr: String,
        /// Why.
        cause: String,
    },
}

/// An answer: status and body.
#[derive(Debug)]
pub struct Reply {
    /// The HTTP status.
    pub status: StatusCode,
    /// The body.
    pub body: Bytes,
}

impl Reply {
    /// The `error` field of a JSON error body, or the body as text.
    pub fn error_message(&self) -> String {
        serde_json::from_slice::<serde_json::Value>(&self.body)
            .ok()
            .and_then(|v| v.get("error").and_then(|e| e.as_str()).map(String::from))
            .unwrap_or_else(|| String::from_utf8_lossy(&self.body).into_owned())
    }
}

/// A client of one agent.
#[derive(Clone, Debug)]
pub struct Client {
    base: String,
    token: Option<String>,
    http: HyperClient<HttpConnector, Full<Bytes>>,
}

impl Client {
    /// A client of the agent at `addr` (`host:port` or `http://host:port`), sending `token` as
    /// a bearer token if given.
    ///
    /// # Errors
    ///
    /// [`ClientError::Address`] for a malformed address.
    pub fn new(addr: &str, token: Option<String>) -> Result<Client, ClientError> {
        let base = if addr.contains("://") {
            addr.trim_end_matches('/').to_string()
        } else {
            format!("http://{addr}")
        };
        if !base.starts_with("http://") || base.len() <= "http://".len() {
            return Err(ClientError::Address(addr.to_string()));
        }
        Ok(Client {
            base,
            token,
            http: HyperClient::builder(TokioExecutor::new()).build_http(),
        })
    }

    /// Sends a request and reads the whole answer.
    ///
    /// # Errors
    ///
    /// [`ClientError`] if the agent cannot be reached.
    pub async fn send(
        &self,
        method: Method,
        path_and_query: &str,
        body: Bytes,
    ) -> Result<Reply, ClientError> {
        let response = self.open(method, path_and_query, body, &[]).await?;
        let status = response.status();
        let body = response
            .into_body()
            .collect()
            .await
            .map_err(|e| self.unreachable(e))?
            .to_bytes();
        Ok(Reply { status, body })
    }

    /// Sends a request and returns the response with its body unread (for event streams).
    ///
    /// # Errors
    ///
    /// [`ClientError`] if the agent cannot be reached.
    pub async fn open(
        &self,
        method: Method,
        path_and_query: &str,
        body: Bytes,
        headers: &[(&str, &str)],
    ) -> Result<hyper::Response<Incoming>, ClientError> {
        let uri = format!("{}{path_and_query}", self.base);
        let mut request = Request::builder().method(method).uri(&uri);
        if let Some(token) = &self.token {
            request = request.header("authorization", format!("Bearer {token}"));
        }
        for (name, value) in headers {
            request = request.header(*name, *value);
        }
        let request = request
            .body(Full::new(body))
            .map_err(|_| ClientError::Address(uri.clone()))?;
        self.http
            .request(request)
            .await
            .map_err(|e| self.unreachable(e))
    }

    fn unreachable(&self, e: impl std::fmt::Display) -> ClientError {
        ClientError::Unreachable {
            addr: self.base.clone(),
            cause: e.to_string(),
        }
    }
}

/// Percent-encodes a query-string value.
pub fn encode_query(value: &str) -> String {
    percent_encode(value)
}

/// Percent-encodes a key for a path such as `/v1/kv/{key}`: its `/` stay separators, every
/// other byte that is not unreserved is escaped, so `?`, `#`, `%` or a space in a key reach
/// the agent as part of the key (which then refuses it as invalid) and never as a query,
/// a fragment or a malformed request.
pub fn encode_path(key: &str) -> String {
    percent_encode(key)
}

fn percent_encode(value: &str) -> String {
    let mut out = String::with_capacity(value.len());
    for b in value.bytes() {
        match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' | b'/' => {
                out.push(char::from(b));
            }
            _ => out.push_str(&format!("%{b:02X}")),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_are_escaped_for_paths() {
        assert_eq!(encode_path("app/db/url"), "app/db/url");
        assert_eq!(encode_path("cli/inj?x=1"), "cli/inj%3Fx%3D1");
        assert_eq!(encode_path("cli/frag#x"), "cli/frag%23x");
        assert_eq!(encode_path("bad key%"), "bad%20key%25");
        assert_eq!(encode_path("é"), "%C3%A9");
    }
}
