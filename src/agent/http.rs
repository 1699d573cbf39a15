//! The HTTP/JSON API (axum). See README.md ("HTTP API") for the routes; every error is a JSON
//! body `{"error": "..."}` with a 4xx or 5xx status, and a refused request changes nothing.

use std::{convert::Infallible, sync::Arc, time::Duration};

use axum::{
    Json, Router,
    body::Bytes,
    extract::{Extension, FromRequest, Query, Request, State},
    http::{HeaderMap, HeaderValue, StatusCode, header},
    middleware::{self, Next},
    response::{
        IntoResponse, Response,
        sse::{Event as SseEvent, KeepAlive, Sse},
    },
    routing::get,
};
use tokio::sync::watch;

use super::{
    metrics::{self, Metrics, Scrape},
    server::{Limits, Streaming},
};
use crate::{
    api::{
        AuditEntry, AuditParams, AuditResponse, ChangeEvent, DeleteParams, DeleteResponse,
        ErrorBody, GetParams, GetResponse, HealthResponse, HistoryResponse, ListEntry, ListParams,
        ListResponse, MemberInfo, MemberStateText, MembersResponse, PutParams, PutResponse,
        ResignResponse, RollbackParams, RollbackResponse, StreamEnd, TrustResponse, VersionInfo,
        WatchEvent, WatchParams, routes, version, writer_text,
    },
    proto::{
        Version, WriteError,
        node::Audit,
        store::DEFAULT_MAX_VALUE_BYTES,
        trust::{
            policy::{Principal, Right, TokenEntry},
            token::{TOKEN_PREFIX, TokenSecret},
        },
    },
    runtime::{Cursor, Member, MemberState, Mesh, MeshError, WatchError},
};

/// The longest a blocking query waits.
const MAX_WAIT: Duration = Duration::from_secs(300);
/// The most keys one page of a listing returns.
const MAX_PAGE: usize = 1_000;

/// What every handler shares: one allocation, so that handing it to a request (axum clones
/// the state for each) is one reference count, not one per field.
#[derive(Clone)]
pub(crate) struct Api(Arc<ApiState>);

impl Api {
    /// The handle over `state`.
    pub(crate) fn new(state: ApiState) -> Api {
        Api(Arc::new(state))
    }
}

impl std::ops::Deref for Api {
    type Target = ApiState;

    fn deref(&self) -> &ApiState {
        &self.0
    }
}

/// The state behind an [`Api`].
pub(crate) struct ApiState {
    pub(crate) mesh: Mesh,
    pub(crate) token: Option<Arc<str>>,
    pub(crate) metrics: Arc<Metrics>,
    pub(crate) limits: Limits,
    /// Set when the agent shuts down: event streams and blocking queries end at once.
    pub(crate) stop: watch::Receiver<bool>,
}

impl ApiState {
    /// Resolves once the agent is shutting down.
    async fn stopping(&self) {
        let mut stop = self.stop.clone();
        let _ = stop.wait_for(|stopped| *stopped).await;
    }

    /// Resolves when a long answer (a stream, a blocking query) must end now: the agent is
    /// shutting down, or the connection is needed for another client.
    async fn interrupted(&self, streaming: Option<&Streaming>) -> Interruption {
        let yielded = async {
            match streaming {
                Some(streaming) => streaming.yielded().await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            () = self.stopping() => Interruption::Shutdown,
            () = yielded => Interruption::MakeRoom,
        }
    }
}

/// Why a long answer ended early.
enum Interruption {
    Shutdown,
    MakeRoom,
}

impl Interruption {
    /// The last event of a stream ended early: resume from `cursor` later.
    fn event(&self, cursor: Cursor) -> WatchEvent {
        let end = |why: &str| StreamEnd {
            error: format!("{why}; resume from the cursor"),
            cursor: Some(cursor.to_string()),
        };
        match self {
            Interruption::Shutdown => WatchEvent::Shutdown(end("the agent is shutting down")),
            Interruption::MakeRoom => WatchEvent::Closed(end(
                "the agent closed this stream to make room for other clients",
            )),
        }
    }
}

/// The key in the path, or a JSON 400 (a path that is not UTF-8, say).
struct KeyPath(String);

impl<S: Send + Sync> axum::extract::FromRequestParts<S> for KeyPath {
    type Rejection = Response;

    async fn from_request_parts(
        parts: &mut axum::http::request::Parts,
        state: &S,
    ) -> Result<Self, Response> {
        axum::extract::Path::<String>::from_request_parts(parts, state)
            .await
            .map(|p| KeyPath(p.0))
            .map_err(|r| error(r.status(), r.body_text()))
    }
}

/// Query parameters, or a JSON 400 naming the bad one.
struct ApiQuery<T>(T);

impl<S: Send + Sync, T: serde::de::DeserializeOwned> axum::extract::FromRequestParts<S>
    for ApiQuery<T>
{
    type Rejection = Response;

    async fn from_request_parts(
        parts: &mut axum::http::request::Parts,
        state: &S,
    ) -> Result<Self, Response> {
        Query::<T>::from_request_parts(parts, state)
            .await
            .map(|q| ApiQuery(q.0))
            .map_err(|r| error(r.status(), r.body_text()))
    }
}

/// A request body, read in full within the body timeout and the value size limit, or a JSON
/// error (413 when too large, 408 when too slow; both close the connection).
struct BodyBytes(Bytes);

impl FromRequest<Api> for BodyBytes {
    type Rejection = Response;

    async fn from_request(request: Request, api: &Api) -> Result<Self, Response> {
        let limited = axum::body::to_bytes(request.into_body(), DEFAULT_MAX_VALUE_BYTES);
        match tokio::time::timeout(api.limits.body_timeout, limited).await {
            Ok(Ok(bytes)) => Ok(BodyBytes(bytes)),
            Ok(Err(e)) => {
                let too_large = std::error::Error::source(&e)
                    .is_some_and(|s| s.is::<http_body_util::LengthLimitError>());
                Err(closing(if too_large {
                    too_large_body()
                } else {
                    error(
                        StatusCode::BAD_REQUEST,
                        format!("cannot read the body: {e}"),
                    )
                }))
            }
            Err(_) => Err(closing(error(
                StatusCode::REQUEST_TIMEOUT,
                format!(
                    "the request body did not arrive within {}",
                    humantime::format_duration(api.limits.body_timeout)
                ),
            ))),
        }
    }
}

fn too_large_body() -> Response {
    error(
        StatusCode::PAYLOAD_TOO_LARGE,
        format!("values are at most {DEFAULT_MAX_VALUE_BYTES} bytes"),
    )
}

/// `response`, closing the connection after it (its request's body was not read in full).
fn closing(mut response: Response) -> Response {
    response
        .headers_mut()
        .insert(header::CONNECTION, HeaderValue::from_static("close"));
    response
}

/// Refuses a body declared larger than any request may carry, before reading any of it.
async fn refuse_oversized(request: Request, next: Next) -> Response {
    let declared = request
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|n| n > DEFAULT_MAX_VALUE_BYTES as u64) {
        return closing(too_large_body());
    }
    next.run(request).await
}

/// The router for `api`.
pub(crate) fn router(api: Api) -> Router {
    let keyed = |prefix: &str| format!("{prefix}{{*key}}");
    let mut router = Router::new()
        .route(routes::LIST, get(list))
        .route(
            &keyed(routes::KV),
            get(get_key).put(put_key).delete(delete_key),
        )
        .route(&keyed(routes::HISTORY), get(history))
        .route(&keyed(routes::ROLLBACK), axum::routing::post(rollback))
        .route(routes::WATCH, get(watch))
        .route(routes::AUDIT, get(audit))
        .route(routes::MEMBERS, get(members))
        .route(routes::TRUST, get(trust))
        .route(routes::TRUST_RESIGN, axum::routing::post(resign))
        .route(routes::ACL, get(acl).post(acl_write))
        .route(routes::HEALTH, get(health))
        .route(routes::METRICS, get(metrics));
    for prefix in routes::KEYED {
        router = router.route(prefix, axum::routing::any(empty_key));
    }
    router
        .fallback(|| async { error(StatusCode::NOT_FOUND, "no such route") })
        .method_not_allowed_fallback(|| async {
            error(
                StatusCode::METHOD_NOT_ALLOWED,
                "method not allowed on this route",
            )
        })
        .layer(middleware::from_fn(refuse_oversized))
        .layer(middleware::from_fn_with_state(api.clone(), authorize))
        .with_state(api)
}

/// A JSON error response.
pub(crate) fn error(status: StatusCode, message: impl std::fmt::Display) -> Response {
    (status, Json(ErrorBody::new(message))).into_response()
}

async fn empty_key() -> Response {
    error(StatusCode::BAD_REQUEST, "the key is empty")
}

fn mesh_error(e: &MeshError) -> Response {
    let status = match e {
        MeshError::Key(_) => StatusCode::BAD_REQUEST,
        MeshError::Reserved | MeshError::SecretUnreadable { .. } => StatusCode::FORBIDDEN,
        MeshError::Write(
            WriteError::Denied(_) | WriteError::Refused(_) | WriteError::TokenUnproven { .. },
        ) => StatusCode::FORBIDDEN,
        MeshError::Write(
            WriteError::ContextUnknown | WriteError::Unsigned | WriteError::EntryKeyTaken { .. },
        ) => StatusCode::CONFLICT,
        MeshError::Write(_) => StatusCode::PAYLOAD_TOO_LARGE,
        MeshError::Conflict { current } => {
            let body = ErrorBody {
                error: e.to_string(),
                current: Some(current.map(version::format)),
            };
            return (StatusCode::CONFLICT, Json(body)).into_response();
        }
        // A value its client sealed to another generation or for another key: bad input.
        MeshError::Secret(
            crate::runtime::secrets::SecretError::WrongGeneration { .. }
            | crate::runtime::secrets::SecretError::WrongKey,
        ) => StatusCode::BAD_REQUEST,
        MeshError::UnknownVersion(_) => StatusCode::NOT_FOUND,
        MeshError::Resign(_) => StatusCode::CONFLICT,
        MeshError::Watch(_) => StatusCode::GONE,
        MeshError::Config(_)
        | MeshError::Transport(_)
        | MeshError::Storage(_)
        | MeshError::Secret(_)
        | MeshError::Thread(_)
        | MeshError::Stopped => StatusCode::SERVICE_UNAVAILABLE,
    };
    error(status, e)
}

/// Who makes a request, once [`authorize`] let it through.
#[derive(Clone, Debug)]
pub(crate) enum Caller {
    /// The operator: the bearer of the agent's own `api_token`, or anyone where none is set.
    /// It acts as the agent's node, within what the node may do.
    Operator,
    /// The bearer of an API token of the policy (docs/PROTOCOL.md §8.7): it reads only what
    /// the token may read, and writes as the token (its author, proved with the token's
    /// derived key), within what both the token and the node may write.
    Token(Principal, TokenSecret),
}

impl Caller {
    fn token(&self) -> Option<&Principal> {
        match self {
            Caller::Operator => None,
            Caller::Token(principal, _) => Some(principal),
        }
    }

    /// The audit fields of a write: the token is its author, else the one the operator names.
    fn audit(&self, author: Option<String>, message: Option<String>) -> Audit {
        match self {
            Caller::Operator => Audit {
                author,
                message,
                token: None,
            },
            Caller::Token(principal, secret) => Audit {
                author: Some(principal.to_string()),
                message,
                token: Some(secret.clone()),
            },
        }
    }
}

fn unauthorized(why: &str) -> Response {
    let mut response = error(StatusCode::UNAUTHORIZED, why);
    response
        .headers_mut()
        .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
    response
}

async fn authorize(State(api): State<Api>, mut request: Request, next: Next) -> Response {
    api.metrics.record_request();
    if request.uri().path() == routes::HEALTH {
        return next.run(request).await;
    }
    let presented = request
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .map(str::to_owned);
    let caller = match (presented, &api.token) {
        (Some(p), _) if p.starts_with(TOKEN_PREFIX) => match authenticate(&api, &p).await {
            Ok((principal, secret)) => Caller::Token(principal, secret),
            Err(response) => return response,
        },
        (Some(p), Some(token)) if constant_time_eq(p.as_bytes(), token.as_bytes()) => {
            Caller::Operator
        }
        (_, None) => Caller::Operator,
        (_, Some(_)) => return unauthorized("missing or wrong bearer token"),
    };
    request.extensions_mut().insert(caller);
    next.run(request).await
}

/// The principal of the API token `presented`, if the policy holds it, live and unexpired;
/// else a 401 saying which.
async fn authenticate(api: &Api, presented: &str) -> Result<(Principal, TokenSecret), Response> {
    let Ok(secret) = TokenSecret::parse(presented) else {
        return Err(unauthorized("not a confmesh token"));
    };
    match check_token(api, &secret).await {
        Ok(entry) => Ok((entry.principal, secret)),
        Err(TokenRefused::Unauthorized(why)) => Err(unauthorized(&why)),
        Err(TokenRefused::Mesh(e)) => Err(mesh_error(&e)),
    }
}

/// Why a token is not let through.
enum TokenRefused {
    /// Unknown, revoked or expired: why, for a 401.
    Unauthorized(String),
    /// The mesh did not answer.
    Mesh(MeshError),
}

/// The policy's entry for `secret`, if it holds one with its hash, live and unexpired.
async fn check_token(api: &Api, secret: &TokenSecret) -> Result<TokenEntry, TokenRefused> {
    let entry = api
        .mesh
        .token(&secret.id())
        .await
        .map_err(TokenRefused::Mesh)?;
    let Some(entry) = entry.filter(|e| constant_time_eq(&e.hash, &secret.hash())) else {
        return Err(TokenRefused::Unauthorized("unknown token".to_owned()));
    };
    if !entry.live {
        return Err(TokenRefused::Unauthorized(format!(
            "{} was revoked",
            entry.principal
        )));
    }
    if entry.expires_ms.is_some_and(|at| at <= now_ms()) {
        return Err(TokenRefused::Unauthorized(format!(
            "{} has expired",
            entry.principal
        )));
    }
    Ok(entry)
}

/// The agent's wall clock, in Unix milliseconds: what a token's expiry is checked against.
fn now_ms() -> u64 {
    #[allow(
        clippy::disallowed_methods,
        reason = "the agent checks expiry against its own clock"
    )]
    let now = std::time::SystemTime::now();
    now.duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

/// How often a long answer (a watch stream, a blocking query) for a token checks that the
/// token still stands, besides at its expiry.
const TOKEN_RECHECK: Duration = Duration::from_secs(5);

/// Resolves, with why, once `caller`'s token no longer stands (revoked, expired, or the mesh
/// gone): a long answer for it ends then. Never for the operator.
async fn token_ends(api: &Api, caller: &Caller) -> String {
    let Caller::Token(_, secret) = caller else {
        return std::future::pending().await;
    };
    loop {
        let wait = match check_token(api, secret).await {
            Ok(entry) => entry.expires_ms.map_or(TOKEN_RECHECK, |at| {
                Duration::from_millis(at.saturating_sub(now_ms()).saturating_add(1))
                    .min(TOKEN_RECHECK)
            }),
            Err(TokenRefused::Unauthorized(why)) => return why,
            Err(TokenRefused::Mesh(e)) => return e.to_string(),
        };
        tokio::time::sleep(wait).await;
    }
}

/// Passes if `caller` may take `right` over `key` (an operator may do anything its node may);
/// else a 403 naming the missing grant.
async fn require(api: &Api, caller: &Caller, right: Right, key: &str) -> Result<(), Response> {
    let Some(principal) = caller.token() else {
        return Ok(());
    };
    match api
        .mesh
        .rights(principal.clone(), right, vec![key.to_owned()])
        .await
    {
        Ok(denials) => match denials.into_iter().next().flatten() {
            None => Ok(()),
            Some(denial) => Err(error(
                StatusCode::FORBIDDEN,
                format!("refused by the policy: {denial}"),
            )),
        },
        Err(e) => Err(mesh_error(&e)),
    }
}

/// Which of `keys` `caller` may read.
async fn readable(api: &Api, caller: &Caller, keys: Vec<String>) -> Result<Vec<bool>, Response> {
    let Some(principal) = caller.token() else {
        return Ok(vec![true; keys.len()]);
    };
    match api.mesh.rights(principal.clone(), Right::Read, keys).await {
        Ok(denials) => Ok(denials.iter().map(Option::is_none).collect()),
        Err(e) => Err(mesh_error(&e)),
    }
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

async fn get_key(
    State(api): State<Api>,
    Extension(caller): Extension<Caller>,
    streaming: Option<Extension<Streaming>>,
    KeyPath(key): KeyPath,
    ApiQuery(params): ApiQuery<GetParams>,
) -> Response {
    if let Err(response) = require(&api, &caller, Right::Read, &key).await {
        return response;
    }
    let current = match api.mesh.get(&key).await {
        Ok(current) => current,
        Err(e) => return mesh_error(&e),
    };
    let current = match params.index {
        Some(index) => {
            let wait = match params.wait.as_deref().map(parse_wait).transpose() {
                Ok(wait) => wait.unwrap_or(Duration::from_secs(60)).min(MAX_WAIT),
                Err(e) => return error(StatusCode::BAD_REQUEST, e),
            };
            let streaming = streaming.map(|Extension(s)| s);
            let streaming = streaming.as_ref();
            let blocked =
                block_until_changed(&api, &caller, streaming, &key, &index, current, wait);
            match blocked.await {
                Ok(current) => current,
                Err(response) => return response,
            }
        }
        None => current,
    };
    let Some(winner) = current else {
        return error(StatusCode::NOT_FOUND, format!("key {key} has no value"));
    };
    let mut headers = HeaderMap::new();
    if let Ok(v) = HeaderValue::from_str(&version::format(winner.dot)) {
        headers.insert("x-confmesh-version", v);
    }
    // A secret's value is opened here, for a caller who may read the key (checked above), on
    // a node that is one of its readers; anyone else gets a 403, never the ciphertext.
    let winner_info = match revealed(&api, &winner).await {
        Ok(info) => info,
        Err(e) => return mesh_error(&e),
    };
    if params.raw.is_some() {
        return (StatusCode::OK, headers, winner_info.bytes()).into_response();
    }
    let versions = match api.mesh.get_versions(&key).await {
        Ok(all) => all,
        Err(e) => return mesh_error(&e),
    };
    let mut siblings = Vec::new();
    for sibling in versions.iter().filter(|v| v.dot != winner.dot) {
        siblings.push(shown(&api, sibling).await);
    }
    let body = GetResponse {
        key,
        winner: winner_info,
        siblings,
    };
    (StatusCode::OK, headers, Json(body)).into_response()
}

/// `version` as the API shows it to a caller who may read its key: a sealed value opened where
/// this node is one of its readers, else shown sealed without a value (docs/PROTOCOL.md §9.6).
async fn shown(api: &Api, version: &Version) -> VersionInfo {
    revealed(api, version)
        .await
        .unwrap_or_else(|_| VersionInfo::from(version))
}

/// `version` as the API shows it, its value opened if it is sealed (docs/PROTOCOL.md §9.6).
async fn revealed(api: &Api, version: &Version) -> Result<VersionInfo, MeshError> {
    let info = VersionInfo::from(version);
    let Some(value) = version.payload.value().filter(|_| info.sealed.is_some()) else {
        return Ok(info);
    };
    let plain = api.mesh.reveal(version.key.as_str(), value.clone()).await?;
    Ok(VersionInfo::revealed(version, &plain))
}

/// Waits until `key`'s winner is no longer the version `index` (or `wait` passes, or the
/// answer is interrupted).
async fn block_until_changed(
    api: &Api,
    caller: &Caller,
    streaming: Option<&Streaming>,
    key: &str,
    index: &str,
    current: Option<Version>,
    wait: Duration,
) -> Result<Option<Version>, Response> {
    let mesh = &api.mesh;
    let wanted = parse_expected(index).map_err(|e| error(StatusCode::BAD_REQUEST, e))?;
    if current.as_ref().map(|v| v.dot) != wanted {
        return Ok(current);
    }
    let mut watch = mesh.watch(key, None).map_err(|e| mesh_error(&e))?;
    // Between the read above and the watch a change may have landed: read again.
    let current = mesh.get(key).await.map_err(|e| mesh_error(&e))?;
    if current.as_ref().map(|v| v.dot) != wanted {
        return Ok(current);
    }
    // Timing out is an answer too: the current value, unchanged. So is an interruption.
    let _long = streaming.map(Streaming::begin);
    let changed = async {
        loop {
            match watch.next().await {
                Some(Ok(change)) if change.key.as_str() == key => return,
                Some(Ok(_)) => {}
                Some(Err(_)) | None => return,
            }
        }
    };
    tokio::select! {
        _ = tokio::time::timeout(wait, changed) => {}
        _ = api.interrupted(streaming) => {}
        // A token revoked or expired while its query waits gets no answer after all.
        why = token_ends(api, caller) => return Err(unauthorized(&why)),
    }
    mesh.get(key).await.map_err(|e| mesh_error(&e))
}

/// An expected version: `none` (or empty) for "no live value", else a version.
fn parse_expected(s: &str) -> Result<Option<crate::proto::Dot>, String> {
    if s.is_empty() || s == "none" {
        return Ok(None);
    }
    version::parse(s).map(Some).map_err(|e| e.to_string())
}

/// `30s`, `500ms`, `2m`, or a number of seconds.
fn parse_wait(s: &str) -> Result<Duration, String> {
    let bad = || format!("wait={s:?} is not a duration such as 30s, 500ms or 2m");
    let (number, unit) = s
        .find(|c: char| !c.is_ascii_digit())
        .map_or((s, "s"), |i| s.split_at(i));
    let n: u64 = number.parse().map_err(|_| bad())?;
    match unit {
        "ms" => Ok(Duration::from_millis(n)),
        "s" => Ok(Duration::from_secs(n)),
        "m" => Ok(Duration::from_secs(n.saturating_mul(60))),
        _ => Err(bad()),
    }
}

async fn put_key(
    State(api): State<Api>,
    Extension(caller): Extension<Caller>,
    KeyPath(key): KeyPath,
    ApiQuery(params): ApiQuery<PutParams>,
    BodyBytes(body): BodyBytes,
) -> Response {
    // Before anything that reads the key: a token may not learn what it may not write.
    if let Err(response) = require(&api, &caller, Right::Write, &key).await {
        return response;
    }
    let len = body.len();
    let audit = caller.audit(params.author, params.message);
    let result = match params.if_version.as_deref() {
        None => api.mesh.put_audited(&key, body, audit).await,
        Some(expected) => {
            let expected = match parse_expected(expected) {
                Ok(expected) => expected,
                Err(e) => return error(StatusCode::BAD_REQUEST, e),
            };
            api.mesh.put_if_audited(&key, body, expected, audit).await
        }
    };
    match result {
        Ok(v) => {
            api.metrics.record_write(len);
            Json(PutResponse {
                key,
                version: version::format(v.dot),
            })
            .into_response()
        }
        Err(e) => mesh_error(&e),
    }
}

async fn delete_key(
    State(api): State<Api>,
    Extension(caller): Extension<Caller>,
    KeyPath(key): KeyPath,
    ApiQuery(params): ApiQuery<DeleteParams>,
) -> Response {
    // Before anything that reads the key: a token may not learn what it may not write.
    if let Err(response) = require(&api, &caller, Right::Write, &key).await {
        return response;
    }
    let audit = caller.audit(params.author, params.message);
    match api.mesh.delete_audited(&key, audit).await {
        Ok(v) => {
            if v.is_some() {
                api.metrics.record_write(0);
            }
            Json(DeleteResponse {
                key,
                deleted: v.is_some(),
                version: v.map(|v| version::format(v.dot)),
            })
            .into_response()
        }
        Err(e) => mesh_error(&e),
    }
}

async fn rollback(
    State(api): State<Api>,
    Extension(caller): Extension<Caller>,
    KeyPath(key): KeyPath,
    ApiQuery(params): ApiQuery<RollbackParams>,
) -> Response {
    // Rolling back reads an old value: both rights.
    if let Err(response) = require(&api, &caller, Right::Read, &key).await {
        return response;
    }
    let Some(version) = params.version else {
        return error(StatusCode::BAD_REQUEST, "rollback needs ?version=V");
    };
    let dot = match version::parse(&version) {
        Ok(dot) => dot,
        Err(e) => return error(StatusCode::BAD_REQUEST, e),
    };
    let audit = caller.audit(params.author, params.message);
    match api.mesh.rollback_audited(&key, dot, audit).await {
        Ok(v) => {
            api.metrics.record_write(0);
            Json(RollbackResponse {
                key,
                restored: version,
                version: v.map(|v| version::format(v.dot)),
            })
            .into_response()
        }
        Err(e) => mesh_error(&e),
    }
}

async fn trust(State(api): State<Api>) -> Response {
    match api.mesh.trust().await {
        Ok(t) => Json(TrustResponse {
            mode: match t.mode {
                crate::proto::trust::Mode::Enforcing => "enforcing",
                _ => "permissive",
            }
            .to_string(),
            unsigned_versions: t.unsigned_versions,
            endorsed_writers: t.endorsed_writers,
            equivocated: t
                .equivocated
                .into_iter()
                .map(|(writer, seq)| crate::api::Equivocated {
                    writer: writer_text(writer),
                    seq,
                })
                .collect(),
        })
        .into_response(),
        Err(e) => mesh_error(&e),
    }
}

async fn acl(State(api): State<Api>) -> Response {
    match api.mesh.policy().await {
        Ok(p) => Json(crate::api::AclResponse {
            rooted: p.rooted,
            protocol: p.protocol,
            context: crate::api::clock_text(&p.context),
            next_key: p.next_key,
            version_vector: crate::api::clock_text(&p.version_vector),
            entries: p
                .entries
                .iter()
                .map(|(dot, author, rule)| crate::api::AclEntry {
                    version: version::format(*dot),
                    author: author.to_string(),
                    rule: rule.to_string(),
                })
                .collect(),
            masked: p.masked,
            waiting: p.waiting,
            tokens: p
                .tokens
                .iter()
                .map(|t| crate::api::AclToken {
                    principal: t.principal.to_string(),
                    name: t.name.clone(),
                    expires_ms: t.expires_ms,
                    live: t.live,
                    author: t.author.to_string(),
                })
                .collect(),
            keyrings: p
                .keyrings
                .iter()
                .map(|k| crate::api::AclKeyring {
                    generation: k.generation.clone(),
                    prefix: k.prefix.clone(),
                    readers: k.readers.iter().map(ToString::to_string).collect(),
                    recipient: k.recipient.clone(),
                    current: k.current,
                    author: k.author.to_string(),
                })
                .collect(),
            recipients: p.recipients.clone(),
            node: p.node.clone(),
        })
        .into_response(),
        Err(e) => mesh_error(&e),
    }
}

async fn acl_write(State(api): State<Api>, body: Bytes) -> Response {
    use base64::Engine as _;
    let request: crate::api::AclRequest = match serde_json::from_slice(&body) {
        Ok(request) => request,
        Err(e) => return error(StatusCode::BAD_REQUEST, format!("the request: {e}")),
    };
    let b64 = base64::engine::general_purpose::STANDARD;
    let decoded = (|| {
        let payload = b64
            .decode(&request.payload)
            .map_err(|e| format!("payload: {e}"))?;
        let rule = crate::proto::trust::policy::Rule::decode(&payload)
            .ok_or("the payload is not a rule")?;
        let signature: [u8; 64] = b64
            .decode(&request.signature)
            .map_err(|e| format!("signature: {e}"))?
            .try_into()
            .map_err(|_| "the signature is not 64 bytes")?;
        let certificate = b64
            .decode(&request.certificate)
            .map_err(|e| format!("certificate: {e}"))?;
        let context = crate::api::parse_clock(&request.context)?;
        let key = crate::proto::Key::new(&request.key).map_err(|e| format!("key: {e}"))?;
        Ok::<_, String>((key, rule, signature, certificate, context))
    })();
    let (key, rule, signature, certificate, context) = match decoded {
        Ok(decoded) => decoded,
        Err(e) => return error(StatusCode::BAD_REQUEST, e),
    };
    let audit = crate::proto::node::Audit {
        author: Some(request.author),
        message: request.message,
        token: None,
    };
    let proof = crate::proto::AuthorProof {
        signature,
        certificate: Some(Bytes::from(certificate)),
    };
    match api.mesh.write_rule(key, rule, audit, context, proof).await {
        Ok(v) => Json(crate::api::AclWritten {
            version: version::format(v.dot),
            key: v.key.as_str().to_owned(),
        })
        .into_response(),
        Err(MeshError::Config(e)) => error(StatusCode::CONFLICT, e),
        Err(e) => mesh_error(&e),
    }
}

async fn resign(State(api): State<Api>, Extension(caller): Extension<Caller>) -> Response {
    // It writes every key again: a token needs admin over all of them.
    if let Err(response) = require(&api, &caller, Right::Admin, "").await {
        return response;
    }
    let keys = |keys: Vec<crate::proto::Key>| -> Vec<String> {
        keys.iter().map(|k| k.as_str().to_owned()).collect()
    };
    match api.mesh.resign().await {
        Ok(r) => Json(ResignResponse {
            rewritten: r.rewritten.len(),
            siblings_resolved: keys(r.siblings_resolved),
            records_retired: keys(r.records_retired),
            left: keys(r.left),
        })
        .into_response(),
        Err(e) => mesh_error(&e),
    }
}

async fn history(
    State(api): State<Api>,
    Extension(caller): Extension<Caller>,
    KeyPath(key): KeyPath,
) -> Response {
    if let Err(response) = require(&api, &caller, Right::Read, &key).await {
        return response;
    }
    match api.mesh.history(&key).await {
        Ok(versions) => {
            let mut shown_versions = Vec::with_capacity(versions.len());
            for version in &versions {
                shown_versions.push(shown(&api, version).await);
            }
            Json(HistoryResponse {
                key,
                versions: shown_versions,
            })
            .into_response()
        }
        Err(e) => mesh_error(&e),
    }
}

/// The most changes `GET /v1/audit` returns, and how many by default.
const MAX_AUDIT: usize = 10_000;
const DEFAULT_AUDIT: usize = 100;

async fn audit(
    State(api): State<Api>,
    Extension(caller): Extension<Caller>,
    ApiQuery(params): ApiQuery<AuditParams>,
) -> Response {
    let limit = params.limit.unwrap_or(DEFAULT_AUDIT).clamp(1, MAX_AUDIT);
    let versions = match api.mesh.audit(&params.prefix, limit).await {
        Ok(versions) => versions,
        Err(e) => return mesh_error(&e),
    };
    let keys = versions.iter().map(|v| v.key.to_string()).collect();
    let shown = match readable(&api, &caller, keys).await {
        Ok(shown) => shown,
        Err(response) => return response,
    };
    Json(AuditResponse {
        changes: versions
            .iter()
            .zip(shown)
            .filter(|(_, shown)| *shown)
            .map(|(v, _)| AuditEntry::from(v))
            .collect(),
    })
    .into_response()
}

async fn list(
    State(api): State<Api>,
    Extension(caller): Extension<Caller>,
    ApiQuery(params): ApiQuery<ListParams>,
) -> Response {
    let limit = params.limit.unwrap_or(MAX_PAGE).clamp(1, MAX_PAGE);
    let mut all = match api.mesh.list(&params.prefix).await {
        Ok(all) => all,
        Err(e) => return mesh_error(&e),
    };
    if caller.token().is_some() {
        // Only what the token may read: a key it may not read is not even named.
        let keys = all.iter().map(|v| v.key.to_string()).collect();
        match readable(&api, &caller, keys).await {
            Ok(shown) => {
                let mut shown = shown.into_iter();
                all.retain(|_| shown.next().unwrap_or(false));
            }
            Err(response) => return response,
        }
    }
    let start = params
        .after
        .as_deref()
        .map_or(0, |after| all.partition_point(|v| v.key.as_str() <= after));
    let page: Vec<_> = all.iter().skip(start).take(limit).collect();
    let next = (start + page.len() < all.len())
        .then(|| page.last().map(|v| v.key.to_string()))
        .flatten();
    Json(ListResponse {
        keys: page
            .iter()
            .map(|v| ListEntry {
                key: v.key.to_string(),
                version: version::format(v.dot),
            })
            .collect(),
        next,
    })
    .into_response()
}

async fn watch(
    State(api): State<Api>,
    Extension(caller): Extension<Caller>,
    streaming: Option<Extension<Streaming>>,
    headers: HeaderMap,
    ApiQuery(params): ApiQuery<WatchParams>,
) -> Response {
    let from = match headers.get("last-event-id").map(HeaderValue::to_str) {
        Some(Ok(id)) => Some(id.to_string()),
        Some(Err(_)) => {
            return error(
                StatusCode::BAD_REQUEST,
                "Last-Event-ID: not a cursor (it is not even text)",
            );
        }
        None => params.from,
    };
    let from = match from.map(|c| c.parse::<Cursor>()).transpose() {
        Ok(from) => from,
        Err(e) => return error(StatusCode::BAD_REQUEST, format!("Last-Event-ID: {e}")),
    };
    let watch = match api.mesh.watch(&params.prefix, from) {
        Ok(watch) => watch,
        Err(e) => return mesh_error(&e),
    };
    let streaming = streaming.map(|Extension(s)| s);
    let long = streaming.as_ref().map(Streaming::begin);
    let state = Some((watch, streaming, long));
    let stream = futures_util::stream::unfold(state, move |state| {
        let api = api.clone();
        let caller = caller.clone();
        async move {
            let (mut watch, streaming, long) = state?;
            let next = loop {
                let next = tokio::select! {
                    next = watch.next() => next,
                    why = api.interrupted(streaming.as_ref()) => {
                        return Some((Ok(sse(&why.event(watch.cursor()))), None));
                    }
                    // A stream for a token ends once the token is revoked or expires.
                    why = token_ends(&api, &caller) => {
                        let end = StreamEnd { error: format!("{why}; this stream ends"), cursor: None };
                        return Some((Ok(sse(&WatchEvent::Error(end))), None));
                    }
                };
                // A change to a key the caller may not read is not shown, nor named.
                if let Some(Ok(change)) = &next {
                    match readable(&api, &caller, vec![change.key.to_string()]).await {
                        Ok(shown) if shown.first() == Some(&false) => continue,
                        Ok(_) => {}
                        Err(_) => return None,
                    }
                }
                break next;
            };
            let state = Some((watch, streaming, long));
            match next {
                Some(Ok(change)) => {
                    let cursor = change.cursor.to_string();
                    let old = match &change.old {
                        Some(version) => Some(shown(&api, version).await),
                        None => None,
                    };
                    let new = match &change.new {
                        Some(version) => Some(shown(&api, version).await),
                        None => None,
                    };
                    let event = WatchEvent::Change(Box::new(ChangeEvent {
                        key: change.key.to_string(),
                        cursor: cursor.clone(),
                        origin: writer_text(change.origin),
                        old,
                        new,
                    }));
                    Some((Ok::<_, Infallible>(sse(&event).id(cursor)), state))
                }
                Some(Err(e)) => {
                    let end = StreamEnd {
                        error: e.to_string(),
                        cursor: None,
                    };
                    let event = match e {
                        WatchError::Gap { .. }
                        | WatchError::CursorLost { .. }
                        | WatchError::UnknownCursor(_) => WatchEvent::Gap(end),
                        _ => WatchEvent::Error(end),
                    };
                    Some((Ok(sse(&event)), None))
                }
                None => None,
            }
        }
    });
    Sse::new(stream)
        .keep_alive(KeepAlive::new().interval(Duration::from_secs(15)))
        .into_response()
}

/// An event as server-sent events carry it.
fn sse(event: &WatchEvent) -> SseEvent {
    SseEvent::default().event(event.kind()).data(event.data())
}

fn member_info(m: &Member) -> MemberInfo {
    MemberInfo {
        name: m.name.clone(),
        addr: m.id.addr.to_string(),
        writer: writer_text(m.id.writer),
        tags: m.tags.clone(),
        state: match m.state {
            MemberState::Alive => MemberStateText::Alive,
            MemberState::Down => MemberStateText::Down,
            MemberState::Left => MemberStateText::Left,
        },
        protocol: m.protocol,
        recipient: m.recipient.clone(),
    }
}

async fn members(State(api): State<Api>) -> Response {
    match api.mesh.members().await {
        Ok(members) => Json(MembersResponse {
            members: members.iter().map(member_info).collect(),
        })
        .into_response(),
        Err(e) => mesh_error(&e),
    }
}

async fn health(State(api): State<Api>) -> Response {
    match api.mesh.health().await {
        Ok(h) => Json(HealthResponse {
            status: "ok".to_string(),
            joined: h.joined,
            peers: h.peers,
            keys: h.keys,
            last_sync_ms_ago: h
                .since_in_sync
                .map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX)),
            replication_lag_ms: api.metrics.last_lag_ms(),
            protocol: h.protocol,
            held_back_by: h.held_back_by,
            policy_root: h.policy_root,
        })
        .into_response(),
        Err(e) => mesh_error(&e),
    }
}

async fn metrics(State(api): State<Api>) -> Response {
    let (stats, health, trust) = match (
        api.mesh.stats().await,
        api.mesh.health().await,
        api.mesh.trust().await,
    ) {
        (Ok(stats), Ok(health), Ok(trust)) => (stats, health, trust),
        (Err(e), _, _) | (_, Err(e), _) | (_, _, Err(e)) => return mesh_error(&e),
    };
    let scrape = Scrape {
        stats,
        wire: api.mesh.wire_stats(),
        health,
        trust,
    };
    (
        [(header::CONTENT_TYPE, metrics::CONTENT_TYPE)],
        api.metrics.render(scrape),
    )
        .into_response()
}
