//! A typed client of the agent's HTTP API: what the command line uses, and what a Rust
//! service that does not embed a node can use.

use std::pin::Pin;

use bytes::Bytes;
use eventsource_stream::Eventsource;
use futures_util::{Stream, StreamExt};
use http_body_util::{BodyDataStream, BodyExt, Full};
use hyper::{Method, Request, body::Incoming};
use hyper_rustls::HttpsConnector;
use hyper_util::{
    client::legacy::{Client as HyperClient, connect::HttpConnector},
    rt::TokioExecutor,
};
use serde::{Serialize, de::DeserializeOwned};

use super::{
    routes,
    types::{
        AclRequest, AclResponse, AclWritten, AuditParams, AuditResponse, DeleteParams,
        DeleteResponse, ErrorBody, GetParams, GetResponse, HealthResponse, HistoryResponse,
        ListEntry, ListParams, ListResponse, MembersResponse, PutParams, PutResponse,
        ResignResponse, RollbackParams, RollbackResponse, TrustResponse, WatchEvent, WatchParams,
    },
};

/// Why a request to the agent failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ClientError {
    /// The address is not `host:port` or an `http://` or `https://` URL.
    #[error("invalid agent address {0:?}")]
    Address(String),
    /// The TLS setup is unusable: an `https://` address without a CA certificate, or a CA
    /// file that holds no certificate.
    #[error("{0}")]
    Tls(String),
    /// The agent could not be reached, or the connection broke.
    #[error("cannot reach the agent at {addr}: {cause}")]
    Unreachable {
        /// The agent's address.
        addr: String,
        /// Why.
        cause: String,
    },
    /// The agent refused the request: its status and message.
    #[error("{message} ({status})")]
    Refused {
        /// The HTTP status (400 for a bad request, 404 for a missing key, ...).
        status: u16,
        /// The `error` of the body.
        message: String,
    },
    /// A conditional write found another version (409).
    #[error("{message} (409)")]
    Conflict {
        /// The key's current version; `None` if it has no value.
        current: Option<String>,
        /// The `error` of the body.
        message: String,
    },
    /// The answer was not what the API promises.
    #[error("unexpected answer from the agent: {0}")]
    Unexpected(String),
}

impl ClientError {
    /// Whether the request itself was at fault (a malformed address, or a 400), rather than
    /// the state of the agent or the data.
    pub fn is_usage(&self) -> bool {
        matches!(
            self,
            ClientError::Address(_)
                | ClientError::Tls(_)
                | ClientError::Refused { status: 400, .. }
        )
    }

    /// The status the agent answered with, if it answered.
    pub fn status(&self) -> Option<u16> {
        match self {
            ClientError::Refused { status, .. } => Some(*status),
            ClientError::Conflict { .. } => Some(409),
            _ => None,
        }
    }
}

/// An answer as it came: status and body.
#[derive(Debug)]
pub struct Reply {
    /// The HTTP status.
    pub status: u16,
    /// The body.
    pub body: Bytes,
}

impl Reply {
    /// The `error` field of a JSON error body, or the body as text.
    pub fn error_message(&self) -> String {
        serde_json::from_slice::<ErrorBody>(&self.body)
            .map(|b| b.error)
            .unwrap_or_else(|_| String::from_utf8_lossy(&self.body).into_owned())
    }

    /// The body as `T` if the status is a success, else the agent's error.
    fn into_typed<T: DeserializeOwned>(self) -> Result<T, ClientError> {
        let body = self.success()?;
        serde_json::from_slice(&body).map_err(|e| ClientError::Unexpected(e.to_string()))
    }

    /// The body if the status is a success, else the agent's error.
    fn success(self) -> Result<Bytes, ClientError> {
        if (200..300).contains(&self.status) {
            return Ok(self.body);
        }
        let parsed = serde_json::from_slice::<ErrorBody>(&self.body).ok();
        let message = self.error_message();
        Err(match parsed {
            Some(ErrorBody {
                current: Some(current),
                ..
            }) if self.status == 409 => ClientError::Conflict { current, message },
            _ => ClientError::Refused {
                status: self.status,
                message,
            },
        })
    }
}

/// A client of one agent.
#[derive(Clone, Debug)]
pub struct Client {
    base: String,
    token: Option<String>,
    http: HyperClient<HttpsConnector<HttpConnector>, Full<Bytes>>,
}

impl Client {
    /// A client of the agent at `addr` (`host:port` or `http://host:port`), sending `token` as
    /// a bearer token if given.
    ///
    /// # Errors
    ///
    /// [`ClientError::Address`] for a malformed address, [`ClientError::Tls`] for an
    /// `https://` address (use [`Client::with_ca`]).
    pub fn new(addr: &str, token: Option<String>) -> Result<Client, ClientError> {
        Client::with_ca(addr, token, None)
    }

    /// A client of the agent at `addr` (`host:port`, `http://host:port` or
    /// `https://host:port`), sending `token` as a bearer token if given. An `https://` agent's
    /// certificate is checked against `ca_pem` (PEM: the cluster CA, which issued the node
    /// certificate the agent serves with `http_tls`), and only against it.
    ///
    /// # Errors
    ///
    /// [`ClientError::Address`] for a malformed address, [`ClientError::Tls`] for an
    /// `https://` address without `ca_pem`, or a `ca_pem` that holds no certificate.
    pub fn with_ca(
        addr: &str,
        token: Option<String>,
        ca_pem: Option<&[u8]>,
    ) -> Result<Client, ClientError> {
        let base = if addr.contains("://") {
            addr.trim_end_matches('/').to_string()
        } else {
            format!("http://{addr}")
        };
        let scheme_len = if base.starts_with("https://") {
            "https://".len()
        } else if base.starts_with("http://") {
            "http://".len()
        } else {
            return Err(ClientError::Address(addr.to_string()));
        };
        if base.len() <= scheme_len {
            return Err(ClientError::Address(addr.to_string()));
        }
        if base.starts_with("https://") && ca_pem.is_none() {
            return Err(ClientError::Tls(format!(
                "{base} serves TLS: give the cluster CA certificate (--ca-cert or CONFMESH_CA_CERT)"
            )));
        }
        let tls = tls_config(ca_pem)?;
        let connector = hyper_rustls::HttpsConnectorBuilder::new()
            .with_tls_config(tls)
            .https_or_http()
            .enable_http1()
            .build();
        Ok(Client {
            base,
            token,
            http: HyperClient::builder(TokioExecutor::new()).build(connector),
        })
    }

    /// The agent's base URL (`http://host:port` or `https://host:port`).
    pub fn base_url(&self) -> &str {
        &self.base
    }

    /// The bearer token this client sends, if any.
    pub fn token(&self) -> Option<&str> {
        self.token.as_deref()
    }

    /// A key's winning version and its siblings.
    ///
    /// # Errors
    ///
    /// [`ClientError::Refused`] with 404 if the key has no value.
    pub async fn get(&self, key: &str) -> Result<GetResponse, ClientError> {
        let path = routes::keyed(routes::KV, key);
        self.call("GET", &path, Bytes::new()).await?.into_typed()
    }

    /// A key's value, as bytes.
    ///
    /// # Errors
    ///
    /// [`ClientError::Refused`] with 404 if the key has no value.
    pub async fn get_raw(&self, key: &str) -> Result<Bytes, ClientError> {
        let params = GetParams {
            raw: Some(String::new()),
            ..GetParams::default()
        };
        let path = with_query(&routes::keyed(routes::KV, key), &params);
        self.call("GET", &path, Bytes::new()).await?.success()
    }

    /// Writes a value; with `if_version`, only if the key's version is that one (`none`: only
    /// if it has no value).
    ///
    /// # Errors
    ///
    /// [`ClientError::Conflict`] if `if_version` did not match; [`ClientError::Refused`] for
    /// an invalid key (400) or a value too large (413).
    pub async fn put(
        &self,
        key: &str,
        value: Bytes,
        if_version: Option<&str>,
    ) -> Result<PutResponse, ClientError> {
        let params = PutParams {
            if_version: if_version.map(String::from),
            ..PutParams::default()
        };
        self.put_with(key, value, &params).await
    }

    /// Writes a value with every parameter: a condition, an author and a change message.
    ///
    /// # Errors
    ///
    /// As [`Client::put`]; [`ClientError::Refused`] (400) for an author or message over its
    /// limit.
    pub async fn put_with(
        &self,
        key: &str,
        value: Bytes,
        params: &PutParams,
    ) -> Result<PutResponse, ClientError> {
        let path = with_query(&routes::keyed(routes::KV, key), params);
        self.call("PUT", &path, value).await?.into_typed()
    }

    /// Deletes a key.
    ///
    /// # Errors
    ///
    /// [`ClientError::Refused`] for an invalid key.
    pub async fn delete(&self, key: &str) -> Result<DeleteResponse, ClientError> {
        self.delete_with(key, &DeleteParams::default()).await
    }

    /// Deletes a key, with an author and a change message.
    ///
    /// # Errors
    ///
    /// As [`Client::delete`].
    pub async fn delete_with(
        &self,
        key: &str,
        params: &DeleteParams,
    ) -> Result<DeleteResponse, ClientError> {
        let path = with_query(&routes::keyed(routes::KV, key), params);
        self.call("DELETE", &path, Bytes::new()).await?.into_typed()
    }

    /// One page of keys under `prefix`, after `after`.
    ///
    /// # Errors
    ///
    /// [`ClientError`] if the agent cannot be reached or refuses.
    pub async fn list(
        &self,
        prefix: &str,
        after: Option<&str>,
    ) -> Result<ListResponse, ClientError> {
        let params = ListParams {
            prefix: prefix.to_string(),
            after: after.map(String::from),
            limit: None,
        };
        let path = with_query(routes::LIST, &params);
        self.call("GET", &path, Bytes::new()).await?.into_typed()
    }

    /// Every key under `prefix`, page after page.
    ///
    /// # Errors
    ///
    /// [`ClientError`] if a page fails.
    pub async fn list_all(&self, prefix: &str) -> Result<Vec<ListEntry>, ClientError> {
        let mut all = Vec::new();
        let mut after = None;
        loop {
            let page = self.list(prefix, after.as_deref()).await?;
            all.extend(page.keys);
            match page.next {
                // A page that does not move forward would loop for ever.
                Some(next) if Some(&next) != after.as_ref() => after = Some(next),
                _ => return Ok(all),
            }
        }
    }

    /// The versions kept of a key.
    ///
    /// # Errors
    ///
    /// [`ClientError`] if the agent cannot be reached or refuses.
    pub async fn history(&self, key: &str) -> Result<HistoryResponse, ClientError> {
        let path = routes::keyed(routes::HISTORY, key);
        self.call("GET", &path, Bytes::new()).await?.into_typed()
    }

    /// The agent's audit trail: its newest `limit` changes (default 100) to keys under
    /// `prefix`, newest first, from its own bounded history.
    ///
    /// # Errors
    ///
    /// [`ClientError`] if the agent cannot be reached or refuses.
    pub async fn audit(
        &self,
        prefix: &str,
        limit: Option<usize>,
    ) -> Result<AuditResponse, ClientError> {
        let params = AuditParams {
            prefix: prefix.to_string(),
            limit,
        };
        let path = with_query(routes::AUDIT, &params);
        self.call("GET", &path, Bytes::new()).await?.into_typed()
    }

    /// Restores the value a key had at `version`.
    ///
    /// # Errors
    ///
    /// [`ClientError::Refused`] with 404 if that version is not kept.
    pub async fn rollback(
        &self,
        key: &str,
        version: &str,
    ) -> Result<RollbackResponse, ClientError> {
        let params = RollbackParams {
            version: Some(version.to_string()),
            ..RollbackParams::default()
        };
        let path = with_query(&routes::keyed(routes::ROLLBACK, key), &params);
        self.call("POST", &path, Bytes::new()).await?.into_typed()
    }

    /// The members.
    ///
    /// # Errors
    ///
    /// [`ClientError`] if the agent cannot be reached or refuses.
    pub async fn members(&self) -> Result<MembersResponse, ClientError> {
        self.call("GET", routes::MEMBERS, Bytes::new())
            .await?
            .into_typed()
    }

    /// What the agent's node trusts, and how many unsigned versions it holds.
    ///
    /// # Errors
    ///
    /// [`ClientError`] if the agent cannot be reached or refuses.
    pub async fn trust(&self) -> Result<TrustResponse, ClientError> {
        self.call("GET", routes::TRUST, Bytes::new())
            .await?
            .into_typed()
    }

    /// The policy the agent's node holds (docs/PROTOCOL.md §8).
    ///
    /// # Errors
    ///
    /// [`ClientError`] if the agent cannot be reached or refuses.
    pub async fn acl(&self) -> Result<AclResponse, ClientError> {
        self.call("GET", routes::ACL, Bytes::new())
            .await?
            .into_typed()
    }

    /// Writes a policy entry an admin proved (docs/PROTOCOL.md §8.7).
    ///
    /// # Errors
    ///
    /// [`ClientError::Refused`] with 403 if every replica would refuse it (not proven, not
    /// granted: the message says which), 409 if the cluster is not all on protocol 4 or the
    /// context names versions the agent has not seen, 400 for a malformed request.
    pub async fn acl_write(&self, request: &AclRequest) -> Result<AclWritten, ClientError> {
        let body =
            serde_json::to_vec(request).map_err(|e| ClientError::Unexpected(e.to_string()))?;
        self.call("POST", routes::ACL, Bytes::from(body))
            .await?
            .into_typed()
    }

    /// Writes again, signed, every key holding an unsigned version (docs/PROTOCOL.md §7.5).
    ///
    /// # Errors
    ///
    /// [`ClientError::Refused`] with 409 if the agent's node does not sign.
    pub async fn resign(&self) -> Result<ResignResponse, ClientError> {
        self.call("POST", routes::TRUST_RESIGN, Bytes::new())
            .await?
            .into_typed()
    }

    /// The agent's health.
    ///
    /// # Errors
    ///
    /// [`ClientError`] if the agent cannot be reached.
    pub async fn health(&self) -> Result<HealthResponse, ClientError> {
        self.call("GET", routes::HEALTH, Bytes::new())
            .await?
            .into_typed()
    }

    /// Changes under `prefix` as they happen, after the cursor `from` if given.
    ///
    /// # Errors
    ///
    /// [`ClientError`] if the agent cannot be reached or refuses the watch (a malformed
    /// cursor is a 400).
    pub async fn watch(
        &self,
        prefix: &str,
        from: Option<&str>,
    ) -> Result<WatchStream, ClientError> {
        let params = WatchParams {
            prefix: prefix.to_string(),
            from: None,
        };
        let headers: Vec<(&str, &str)> = from.map(|c| ("last-event-id", c)).into_iter().collect();
        let response = self
            .open(
                "GET",
                &with_query(routes::WATCH, &params),
                Bytes::new(),
                &headers,
            )
            .await?;
        let status = response.status().as_u16();
        if !(200..300).contains(&status) {
            let body = response
                .into_body()
                .collect()
                .await
                .map(|b| b.to_bytes())
                .unwrap_or_default();
            return Err(Reply { status, body }
                .success()
                .err()
                .unwrap_or_else(|| ClientError::Unexpected(format!("status {status}"))));
        }
        let mut limit = EventLimit::default();
        let body = BodyDataStream::new(response.into_body()).map(move |chunk| {
            let chunk = chunk.map_err(|e| StreamError::Transport(e.to_string()))?;
            limit.check(&chunk)?;
            Ok::<_, StreamError>(chunk)
        });
        Ok(WatchStream {
            events: Box::pin(body.eventsource()),
            addr: self.base.clone(),
        })
    }

    /// Sends a request (`method` such as `GET`) and reads the whole answer, whatever its
    /// status: for callers that check the wire format themselves.
    ///
    /// # Errors
    ///
    /// [`ClientError`] if the agent cannot be reached.
    pub async fn call(
        &self,
        method: &str,
        path_and_query: &str,
        body: Bytes,
    ) -> Result<Reply, ClientError> {
        let response = self.open(method, path_and_query, body, &[]).await?;
        let status = response.status().as_u16();
        let body = response
            .into_body()
            .collect()
            .await
            .map_err(|e| self.unreachable(e))?
            .to_bytes();
        Ok(Reply { status, body })
    }

    async fn open(
        &self,
        method: &str,
        path_and_query: &str,
        body: Bytes,
        headers: &[(&str, &str)],
    ) -> Result<hyper::Response<Incoming>, ClientError> {
        let uri = format!("{}{path_and_query}", self.base);
        let method = Method::from_bytes(method.as_bytes())
            .map_err(|_| ClientError::Unexpected(format!("invalid method {method:?}")))?;
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

    fn unreachable(&self, e: impl std::error::Error) -> ClientError {
        // The connector's own message ("client error (Connect)") says little; its sources say
        // why (refused, a certificate the CA did not issue, ...).
        let mut cause = e.to_string();
        let mut source = e.source();
        while let Some(inner) = source {
            cause.push_str(": ");
            cause.push_str(&inner.to_string());
            source = inner.source();
        }
        ClientError::Unreachable {
            addr: self.base.clone(),
            cause,
        }
    }
}

/// `path` with `params` as its query string (nothing if they are all absent).
fn with_query(path: &str, params: &impl Serialize) -> String {
    match serde_urlencoded::to_string(params) {
        Ok(query) if !query.is_empty() => format!("{path}?{query}"),
        _ => path.to_string(),
    }
}

type EventResults = Pin<
    Box<
        dyn Stream<
                Item = Result<
                    eventsource_stream::Event,
                    eventsource_stream::EventStreamError<StreamError>,
                >,
            > + Send,
    >,
>;

/// The most bytes one server-sent event may take: a change carries two values of at most
/// 1 MiB, each in base64 and as text, so 8 MiB is ample; past it the stream is refused
/// rather than buffered without end.
const MAX_EVENT_BYTES: usize = 8 << 20;

/// Why an event stream's body failed.
#[derive(Debug)]
enum StreamError {
    Transport(String),
    TooLarge,
}

impl std::fmt::Display for StreamError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            StreamError::Transport(e) => f.write_str(e),
            StreamError::TooLarge => write!(f, "an event over {MAX_EVENT_BYTES} bytes"),
        }
    }
}

/// Counts the bytes of the event being received: an empty line (after `\n`, `\r` or
/// `\r\n`) ends an event.
#[derive(Debug, Default)]
struct EventLimit {
    event: usize,
    line: usize,
    after_cr: bool,
}

impl EventLimit {
    fn check(&mut self, chunk: &[u8]) -> Result<(), StreamError> {
        for &b in chunk {
            let after_cr = std::mem::replace(&mut self.after_cr, b == b'\r');
            match b {
                // The `\n` of a `\r\n`: the line already ended.
                b'\n' if after_cr => {}
                b'\n' | b'\r' if self.line == 0 => self.event = 0,
                b'\n' | b'\r' => self.line = 0,
                _ => {
                    self.line += 1;
                    self.event += 1;
                    if self.event > MAX_EVENT_BYTES {
                        return Err(StreamError::TooLarge);
                    }
                }
            }
        }
        Ok(())
    }
}

/// The events of a watch ([`Client::watch`]).
pub struct WatchStream {
    events: EventResults,
    addr: String,
}

impl std::fmt::Debug for WatchStream {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WatchStream")
            .field("addr", &self.addr)
            .finish_non_exhaustive()
    }
}

impl WatchStream {
    /// The next event; `None` once the agent ended the stream. A `change` event is a
    /// change; the others end the stream ([`WatchEvent`]).
    pub async fn next(&mut self) -> Option<Result<WatchEvent, ClientError>> {
        let event = match self.events.next().await? {
            Ok(event) => event,
            Err(e) => {
                return Some(Err(ClientError::Unreachable {
                    addr: self.addr.clone(),
                    cause: format!("watch interrupted: {e}"),
                }));
            }
        };
        let kind = if event.event.is_empty() {
            "message"
        } else {
            event.event.as_str()
        };
        Some(
            WatchEvent::parse(kind, &event.data)
                .map_err(|e| ClientError::Unexpected(e.to_string())),
        )
    }
}

/// The client's TLS setup: trusts only the certificates in `ca_pem` (none: no `https://`
/// agent is trusted, and [`Client::with_ca`] refuses one before connecting).
fn tls_config(ca_pem: Option<&[u8]>) -> Result<rustls::ClientConfig, ClientError> {
    use rustls::pki_types::{CertificateDer, pem::PemObject};
    let mut roots = rustls::RootCertStore::empty();
    if let Some(pem) = ca_pem {
        for cert in CertificateDer::pem_slice_iter(pem) {
            let cert = cert.map_err(|e| ClientError::Tls(format!("the CA certificate: {e}")))?;
            roots
                .add(cert)
                .map_err(|e| ClientError::Tls(format!("the CA certificate: {e}")))?;
        }
        if roots.is_empty() {
            return Err(ClientError::Tls(
                "the CA certificate file holds no certificate".into(),
            ));
        }
    }
    let provider = std::sync::Arc::new(rustls::crypto::ring::default_provider());
    // No ALPN here: the connector sets it (`enable_http1`), and refuses a preset one.
    Ok(rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| ClientError::Tls(e.to_string()))?
        .with_root_certificates(roots)
        .with_no_client_auth())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_event_without_end_is_refused_and_ended_events_reset_the_count() {
        let mut limit = EventLimit::default();
        let line = vec![b'a'; 1 << 20];
        for terminator in [&b"\n\n"[..], b"\r\n\r\n", b"\r\r"] {
            for _ in 0..6 {
                assert!(limit.check(&line).is_ok());
                assert!(limit.check(b"\n").is_ok());
            }
            assert!(limit.check(terminator).is_ok());
        }
        let mut endless = EventLimit::default();
        let refused =
            (0..10).any(|_| endless.check(&line).is_err() || endless.check(b"\r\n").is_err());
        assert!(refused, "9 MiB in one event was accepted");
    }
}
