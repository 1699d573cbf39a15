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
