//! The routes, as the server registers them and the client builds them.
//!
//! A key is the tail of its path (`/v1/kv/app/db/url`). A sub-resource of a key has its own
//! prefix (`/v1/history/{key}`), never a suffix on `/v1/kv/{key}`, so that no key (say one
//! ending in `/history`) can collide with one.

/// `GET`: one page of keys under a prefix ([`ListParams`](super::ListParams)).
pub const LIST: &str = "/v1/kv";
/// `GET`, `PUT`, `DELETE` `/v1/kv/{key}`: a key's value.
pub const KV: &str = "/v1/kv/";
/// `GET /v1/history/{key}`: the versions kept of a key.
pub const HISTORY: &str = "/v1/history/";
/// `POST /v1/rollback/{key}?version=V`: restores a kept version.
pub const ROLLBACK: &str = "/v1/rollback/";
/// `GET`: server-sent events of changes under a prefix.
pub const WATCH: &str = "/v1/watch";
/// `GET`: this node's audit trail (`?prefix=&limit=`).
pub const AUDIT: &str = "/v1/audit";
/// `GET`: the members.
pub const MEMBERS: &str = "/v1/members";
/// `GET`: liveness and sync state; never needs the token.
pub const HEALTH: &str = "/v1/health";
/// `GET`: what this node trusts, and how many unsigned versions it holds.
pub const TRUST: &str = "/v1/trust";
/// `POST`: writes again, signed, every key holding an unsigned version (docs/PROTOCOL.md §7.5).
pub const TRUST_RESIGN: &str = "/v1/trust/resign";
/// `GET`: the policy this node holds; `POST`: writes a policy entry an admin proved
/// (docs/PROTOCOL.md §8).
pub const ACL: &str = "/v1/acl";
/// `GET`: Prometheus metrics.
pub const METRICS: &str = "/metrics";

/// The routes that take a key as their path's tail.
pub const KEYED: [&str; 3] = [KV, HISTORY, ROLLBACK];

/// `prefix` followed by `key`, escaped ([`encode_key`]).
pub fn keyed(prefix: &str, key: &str) -> String {
    format!("{prefix}{}", encode_key(key))
}

/// Percent-encodes a key for a path: its `/` stay separators, every other byte that is not
/// unreserved is escaped, so `?`, `#`, `%` or a space in a key reach the agent as part of the
/// key (which then refuses it as invalid) and never as a query, a fragment or a malformed
/// request.
pub fn encode_key(key: &str) -> String {
    let mut out = String::with_capacity(key.len());
    for b in key.bytes() {
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
        assert_eq!(encode_key("app/db/url"), "app/db/url");
        assert_eq!(encode_key("cli/inj?x=1"), "cli/inj%3Fx%3D1");
        assert_eq!(encode_key("cli/frag#x"), "cli/frag%23x");
        assert_eq!(encode_key("bad key%"), "bad%20key%25");
        assert_eq!(encode_key("é"), "%C3%A9");
        assert_eq!(keyed(HISTORY, "a/history"), "/v1/history/a/history");
    }
}
