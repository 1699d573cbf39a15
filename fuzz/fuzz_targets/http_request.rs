//! Raw bytes from an HTTP client to the agent's API: one connection per input, served by the
//! listener's own per-connection code (hyper, `ConnIo`, the limits) in front of the API's
//! router and a real single-node mesh (`confmesh::fuzzing::HttpServer`, started once per
//! process).
//!
//! Input: `[options: u8][bytes the client sends]`; the options byte picks whether the server
//! requires a token (`fuzzing::HTTP_TOKEN`), how long answers are ended (making room or
//! shutting down) and whether the client closes its sending side right after its bytes
//! (`HttpClient::from_byte`).
//!
//! No input panics the server, and:
//! - the server closes the connection within `HTTP_DEADLINE` (real time);
//! - what it sends is a sequence of complete HTTP/1.x answers, each framed as its headers say
//!   (a `HEAD` request's answer has no body);
//! - every 4xx and 5xx answer, hyper's own included, is the API's JSON error: a JSON content
//!   type and, unless it answers a `HEAD`, a JSON object body with an `error` string;
//! - every answer after the client's requests is hyper's for a request it could not parse:
//!   at most one, which ends the connection.
#![no_main]

use std::sync::OnceLock;

use confmesh::fuzzing::{HTTP_DEADLINE, HttpClient, HttpExchange, HttpServer};
use libfuzzer_sys::fuzz_target;

static SERVER: OnceLock<HttpServer> = OnceLock::new();

fuzz_target!(|data: &[u8]| {
    let Some((&options, request)) = data.split_first() else {
        return;
    };
    let server = SERVER.get_or_init(|| HttpServer::start().expect("the server starts"));
    let exchange = server.exchange(HttpClient::from_byte(options), request);
    assert!(
        exchange.closed,
        "the connection was still open after {HTTP_DEADLINE:?}; sent so far: {:?}",
        String::from_utf8_lossy(&exchange.output)
    );
    if !exchange.truncated {
        check_answers(&exchange);
    }
});

/// Reads the answers in `exchange.output` one by one and checks each.
fn check_answers(exchange: &HttpExchange) {
    let all = String::from_utf8_lossy(&exchange.output);
    let mut rest: &[u8] = &exchange.output;
    let mut answered = 0;
    while !rest.is_empty() {
        assert!(
            rest.starts_with(b"HTTP/1.1 ") || rest.starts_with(b"HTTP/1.0 "),
            "not an HTTP/1.x answer at byte {} of {all:?}",
            exchange.output.len() - rest.len()
        );
        let mut headers = [httparse::EMPTY_HEADER; 64];
        let mut response = httparse::Response::new(&mut headers);
        let head_len = match response.parse(rest) {
            Ok(httparse::Status::Complete(n)) => n,
            other => panic!("an answer's head is cut short or malformed ({other:?}): {all:?}"),
        };
        let status = response.code.expect("a complete head has a status");
        let header = |name: &str| {
            response
                .headers
                .iter()
                .find(|h| h.name.eq_ignore_ascii_case(name))
                .map(|h| String::from_utf8_lossy(h.value).to_ascii_lowercase())
        };
        let content_type = header("content-type");
        let chunked = header("transfer-encoding").is_some_and(|t| t.ends_with("chunked"));
        let length = header("content-length");
        rest = &rest[head_len..];
        if (100..200).contains(&status) {
            continue;
        }
        // Answers go in the order of requests; one after them is hyper's own.
        let to_head = exchange
            .head_requests
            .get(answered)
            .copied()
            .unwrap_or(false);
        answered += 1;
        let body = if to_head || status == 204 || status == 304 {
            None
        } else if chunked {
            Some(dechunk(&mut rest, &all))
        } else if let Some(length) = length {
            let length: usize = length.trim().parse().expect("a numeric content-length");
            assert!(rest.len() >= length, "a body cut short: {all:?}");
            let (body, after) = rest.split_at(length);
            rest = after;
            Some(body.to_vec())
        } else {
            // Delimited by the end of the connection.
            Some(std::mem::take(&mut rest).to_vec())
        };
        if status >= 400 {
            assert!(
                content_type.is_some_and(|t| t.starts_with("application/json")),
                "an error answer without a JSON content type: {all:?}"
            );
            if let Some(body) = body {
                let json: serde_json::Value = serde_json::from_slice(&body)
                    .unwrap_or_else(|e| panic!("an error body that is not JSON ({e}): {all:?}"));
                assert!(
                    json["error"].is_string(),
                    "an error body without an error: {all:?}"
                );
            }
        }
    }
    assert!(
        answered <= exchange.head_requests.len() + 1,
        "{answered} answers to {} requests: {all:?}",
        exchange.head_requests.len()
    );
}

/// A chunked body read off the front of `rest`.
fn dechunk(rest: &mut &[u8], all: &str) -> Vec<u8> {
    let mut body = Vec::new();
    loop {
        let line_end = rest
            .windows(2)
            .position(|w| w == b"\r\n")
            .unwrap_or_else(|| panic!("a chunk size line cut short: {all:?}"));
        let line = std::str::from_utf8(&rest[..line_end]).expect("a chunk size is text");
        let size = line.split(';').next().unwrap_or_default().trim();
        let size = usize::from_str_radix(size, 16).expect("a hexadecimal chunk size");
        *rest = &rest[line_end + 2..];
        if size == 0 {
            // No trailers: the empty line that ends the body.
            assert!(
                rest.starts_with(b"\r\n"),
                "a chunked body's end cut short: {all:?}"
            );
            *rest = &rest[2..];
            return body;
        }
        assert!(rest.len() >= size + 2, "a chunk cut short: {all:?}");
        body.extend_from_slice(&rest[..size]);
        assert_eq!(&rest[size..size + 2], b"\r\n", "a chunk not ended: {all:?}");
        *rest = &rest[size + 2..];
    }
}
