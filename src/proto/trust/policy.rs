//! Trust II's grant rule (docs/PROTOCOL.md §8): who may write which key, decided by every
//! replica from policy entries held in the mesh, with the same verdict in every delivery order.
//!
//! Pure, like the rest of `trust`: no I/O, no clock. An [`Act`] is what a version asks for (a
//! write of a key, or a policy rule), who asks (the signing node and the author it writes for)
//! and the policy context it was made in (per writer of policy entries, how many of its entries
//! its own writer held: entries are numbered by their writer, 1, 2, 3…, and the number, its
//! *position*, is in the entry's key). The caller hands an act over once every dot of its context has been seen here;
//! [`Book::judge`] gives its verdict in that context (final, the same at every replica);
//! [`Book::admit`] records a policy entry judged granted; [`Book::masked`] says whether a
//! granted act is undone by what is known now (a revocation or a policy root it did not see).
//! Masking only ever grows as entries arrive, so every replica ends with the same masks.

use std::{collections::BTreeMap, fmt};

use bytes::Bytes;
use serde::{Deserialize, Serialize};

use super::POLICY_PREFIX;
use crate::proto::{Dot, Key, VClock, WriterId};

/// How many grants deep a chain of authority is followed (a grant is effective only while its
/// grantor held `admin` where it applies, which may rest on another grant, and so on). Past it
/// the grant counts as not effective.
pub const MAX_GRANT_DEPTH: usize = 8;

/// The longest principal, in bytes.
pub const MAX_PRINCIPAL_BYTES: usize = 128;

/// The most writers a context or a cutoff may name.
pub const MAX_CLOCK_WRITERS: usize = 65_536;

/// What a principal is.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Kind {
    /// A node, named by its certificate: `node:<name>`.
    Node,
    /// An API token: `token:<id>`.
    Token,
    /// A holder of an admin certificate the cluster CA issued: `admin:<name>`.
    Admin,
}

impl Kind {
    fn tag(self) -> &'static str {
        match self {
            Kind::Node => "node",
            Kind::Token => "token",
            Kind::Admin => "admin",
        }
    }
}

/// Who acts, or, in a grant or a revocation, whom it is about: `kind:name`, where a rule may
/// name `kind:*` for every principal of a kind. Names are 1 to 120 characters of letters,
/// digits, `.`, `-`, `_` and `@`.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct Principal {
    kind: Kind,
    /// `None` for the pattern `kind:*`.
    name: Option<String>,
}

/// Why a principal, a prefix or a rule is not well formed.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum PolicyError {
    /// Not `node:`, `token:` or `admin:` followed by a name.
    #[error("principal {0:?} is not node:NAME, token:ID or admin:NAME")]
    Principal(String),
    /// A pattern (`kind:*`) where one principal is needed.
    #[error("{0} names every principal of a kind; one principal is needed here")]
    Pattern(String),
}

impl Principal {
    /// Reads `kind:name` or `kind:*`.
    pub fn parse(text: &str) -> Result<Principal, PolicyError> {
        let bad = || PolicyError::Principal(text.chars().take(64).collect());
        if text.len() > MAX_PRINCIPAL_BYTES {
            return Err(bad());
        }
        let (kind, name) = text.split_once(':').ok_or_else(bad)?;
        let kind = match kind {
            "node" => Kind::Node,
            "token" => Kind::Token,
            "admin" => Kind::Admin,
            _ => return Err(bad()),
        };
        if name == "*" {
            return Ok(Principal { kind, name: None });
        }
        let fits = !name.is_empty()
            && name.len() <= 120
            && name
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"._-@".contains(&b));
        if !fits {
            return Err(bad());
        }
        Ok(Principal {
            kind,
            name: Some(name.to_owned()),
        })
    }

    /// One principal of `kind` (not a pattern).
    pub fn one(kind: Kind, name: &str) -> Result<Principal, PolicyError> {
        let principal = Principal::parse(&format!("{}:{name}", kind.tag()))?;
        if principal.name.is_none() {
            return Err(PolicyError::Pattern(principal.to_string()));
        }
        Ok(principal)
    }

    /// What it is.
    pub fn kind(&self) -> Kind {
        self.kind
    }

    /// Its name (`None` for a pattern).
    pub fn name(&self) -> Option<&str> {
        self.name.as_deref()
    }

    /// The node principal of a writer whose certificate names no node: a principal no rule can
    /// name (its name is empty, which no rule can spell), so no grant ever applies to it, and
    /// a verdict does not depend on whether a replica knew the name was missing.
    pub fn nameless_node() -> Principal {
        Principal {
            kind: Kind::Node,
            name: Some(String::new()),
        }
    }

    /// Whether it is a pattern (`kind:*`), which only rules may name.
    pub fn is_pattern(&self) -> bool {
        self.name.is_none()
    }

    /// Whether this principal, or pattern, names `who`.
    pub fn matches(&self, who: &Principal) -> bool {
        self.kind == who.kind && (self.name.is_none() || self.name == who.name)
    }
}

impl fmt::Display for Principal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}:{}",
            self.kind.tag(),
            self.name.as_deref().unwrap_or("*")
        )
    }
}

impl From<Principal> for String {
    fn from(principal: Principal) -> String {
        principal.to_string()
    }
}

impl TryFrom<String> for Principal {
    type Error = PolicyError;
    fn try_from(text: String) -> Result<Principal, PolicyError> {
        Principal::parse(&text)
    }
}

/// A right over the keys under a prefix. Each includes the ones before it: `admin` may write
/// and grant, `write` may read.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum Right {
    /// Read keys (API tokens; a node holds the whole replica, so for nodes read is all or
    /// nothing: a node is in the cluster or revoked).
    Read,
    /// Write keys.
    Write,
    /// Grant and revoke rights under the prefix, and write.
    Admin,
}

impl fmt::Display for Right {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Right::Read => "read",
            Right::Write => "write",
            Right::Admin => "admin",
        })
    }
}

/// A policy entry's content. Each entry is its own key, written once and never superseded or
/// collected (PROTOCOL.md §8.2).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Rule {
    /// The policy root: from it on, nothing is allowed that no grant allows. Its admins hold
    /// `admin` over every key. Made by a holder of an admin certificate (`confmesh acl
    /// init`); acts made before it and not seen by its maker (outside `cutoff`) and that
    /// relied on there being no root are masked.
    Root {
        /// Who holds `admin` over every key (admin principals, not patterns).
        admins: Vec<Principal>,
        /// The maker's version vector when it made the root.
        cutoff: VClock,
    },
    /// `grantee` holds `right` over the keys under `prefix`.
    Grant {
        /// Whom (or which kind, as a pattern) it grants.
        grantee: Principal,
        /// The right granted.
        right: Right,
        /// The keys it covers: those that start with it (`""` is every key).
        prefix: String,
    },
    /// `grantee` no longer holds `right` (nor any right that includes it; revoking `read`
    /// revokes everything) under `prefix`: every grant that did not see this revocation stops
    /// applying there, for every act of the grantee outside `cutoff`.
    Revoke {
        /// Whom (or which kind, as a pattern) it revokes.
        grantee: Principal,
        /// The least right revoked.
        right: Right,
        /// The keys it covers.
        prefix: String,
        /// The revoking admin's version vector: the grantee's acts it had seen stand.
        cutoff: VClock,
    },
    /// An API token (PROTOCOL.md §8.7): the principal `token:<id>` is whoever presents a
    /// secret whose SHA-256 is `hash`. Made by a holder of `admin` over every key; what the
    /// token may do is granted to its principal like any other's. Revoking its `read` over
    /// every key revokes it outright.
    Token {
        /// The first 8 bytes of `hash`, in hex (checked when decoded).
        id: String,
        /// A name for people (`ci-deploy`): 1 to 64 letters, digits, `.`, `-`, `_`, `@`.
        name: String,
        /// The SHA-256 of the token's secret.
        hash: [u8; 32],
        /// The public key derived from the secret (`TokenSecret::public`).
        public: [u8; 32],
        /// Unix time in milliseconds from which agents refuse the token; `None`: never.
        expires_ms: Option<u64>,
    },
    /// A generation of a secret prefix's key (PROTOCOL.md §9.3, §9.4): `prefix` is secret,
    /// and a value under it written in a context that holds this entry must be sealed to one
    /// of the prefix's generations in that context. Its name is its position
    /// (`<writer>-<n>`, [`sealed::generation_name`](super::sealed::generation_name)). Made
    /// by a holder of `admin` over the prefix, and written by one of its `readers` (only
    /// readers make keys).
    Keyring {
        /// The keys it covers (not empty, not reserved).
        prefix: String,
        /// The generation's public key, an age X25519 recipient (`age1…`).
        recipient: String,
        /// The nodes its private key is sealed to (`node:<name>`, no patterns, at most
        /// [`MAX_READERS`]).
        readers: Vec<Principal>,
        /// Its private key, sealed to the readers' recipients: an age file.
        sealed: Vec<u8>,
    },
}

/// The most readers one generation of a secret prefix's key may name.
pub const MAX_READERS: usize = 256;

/// What an act asks for.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Deed {
    /// Writing (or deleting) an application key.
    Write {
        /// The key.
        key: String,
    },
    /// Adding a policy entry.
    Rule(Rule),
}

/// One version, as the grant rule sees it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Act {
    /// The version's dot.
    pub dot: Dot,
    /// For a policy entry, its position: its writer and its number among that writer's
    /// entries (from its key, [`entry_key`]). `None` for a write.
    pub position: Option<Dot>,
    /// The node that signed it (its writer's endorsement names the node's certificate).
    pub node: Principal,
    /// The principal it was made for, whose own proof it carries; required for policy
    /// entries.
    pub author: Option<Principal>,
    /// The policy its writer held: every entry whose position is at or below this vector.
    pub context: VClock,
    /// What it asks for.
    pub deed: Deed,
}

impl Act {
    /// Whether this act's context includes the entry at `position`.
    pub fn saw(&self, position: Dot) -> bool {
        covers(&self.context, position)
    }
}

/// Why an act is refused (in its context) or masked (by what is known now).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Denial {
    /// No grant the act saw gives `principal` the `right` over `key`.
    NotGranted {
        /// Who lacks it.
        principal: Principal,
        /// The right needed.
        right: Right,
        /// Where (for a rule, its prefix).
        key: String,
    },
    /// The grants that gave it were revoked by the entry at `by`, which had not seen the act.
    Revoked {
        /// Who lost it.
        principal: Principal,
        /// The right needed.
        right: Right,
        /// Where.
        key: String,
        /// The revocation's dot.
        by: Dot,
    },
    /// The act relied on there being no policy root, and the root at `by` did not see it.
    RootCreated {
        /// The root's dot.
        by: Dot,
    },
    /// A grant or revocation made with no policy root in its context (nobody is an admin).
    NoRoot,
    /// A second policy root made by someone who had seen the first.
    RootExists,
    /// A root whose author is not an admin principal it lists, or that lists a pattern or a
    /// principal that is not an admin.
    NotAnAdmin,
    /// A policy entry without an author.
    NoAuthor,
    /// A keyring entry written by a node that is not among its readers (PROTOCOL.md §9.4).
    NotAReader,
    /// A context or cutoff too large, a context that includes the act itself, or a pattern
    /// (`token:*`) as the node or the author.
    Malformed,
}

impl fmt::Display for Denial {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Denial::NotGranted {
                principal,
                right,
                key,
            } => write!(f, "{principal} holds no {right} grant over {key:?}"),
            Denial::Revoked {
                principal,
                right,
                key,
                by,
            } => write!(
                f,
                "{principal}'s {right} over {key:?} was revoked by {}.{}",
                by.actor, by.counter
            ),
            Denial::RootCreated { by } => write!(
                f,
                "made without a policy root, and the root {}.{} did not see it",
                by.actor, by.counter
            ),
            Denial::NoRoot => f.write_str("a rule made with no policy root: nobody is an admin"),
            Denial::RootExists => f.write_str("a policy root made after another was seen"),
            Denial::NotAnAdmin => f.write_str("a policy root not made by an admin it lists"),
            Denial::NoAuthor => f.write_str("a policy entry with no author"),
            Denial::NotAReader => {
                f.write_str("a secret prefix's key made by a node that is not one of its readers")
            }
            Denial::Malformed => f.write_str("a malformed context or cutoff"),
        }
    }
}

/// The most bytes a policy entry's payload (an encoded [`Rule`]) may have.
pub const MAX_RULE_BYTES: usize = 1 << 20;

impl Rule {
    /// Its encoding: a policy entry's payload (bincode, standard configuration).
    pub fn encode(&self) -> Bytes {
        let mut out = Vec::new();
        // Encoding into a Vec cannot fail for these types.
        let _ = bincode::serde::encode_into_std_write(self, &mut out, bincode::config::standard());
        Bytes::from(out)
    }

    /// Reads a policy entry's payload: `None` if it is over [`MAX_RULE_BYTES`], does not
    /// decode exactly, names a principal that is not well formed, or holds a clock over
    /// [`MAX_CLOCK_WRITERS`] writers.
    pub fn decode(bytes: &[u8]) -> Option<Rule> {
        if bytes.len() > MAX_RULE_BYTES {
            return None;
        }
        let config = bincode::config::standard().with_limit::<{ 8 * MAX_RULE_BYTES }>();
        let (rule, used): (Rule, usize) = bincode::serde::decode_from_slice(bytes, config).ok()?;
        let fits = match &rule {
            Rule::Root { cutoff, .. } | Rule::Revoke { cutoff, .. } => {
                cutoff.dots.len() <= MAX_CLOCK_WRITERS
            }
            Rule::Grant { .. } => true,
            Rule::Keyring {
                prefix,
                recipient,
                readers,
                sealed,
            } => {
                // Not empty, and neither under `_confmesh/` nor covering it (`_`): confmesh's
                // own records are never sealed.
                !prefix.is_empty()
                    && !prefix.starts_with(super::RESERVED_PREFIX)
                    && !super::RESERVED_PREFIX.starts_with(prefix.as_str())
                    && super::sealed::is_recipient_shaped(recipient)
                    && !readers.is_empty()
                    && readers.len() <= MAX_READERS
                    && readers
                        .iter()
                        .all(|r| r.kind == Kind::Node && !r.is_pattern())
                    && sealed.starts_with(super::sealed::AGE_MAGIC)
            }
            Rule::Token { id, name, hash, .. } => {
                *id == super::token::id_of(hash)
                    && !name.is_empty()
                    && name.len() <= 64
                    && name
                        .bytes()
                        .all(|b| b.is_ascii_alphanumeric() || b"._-@".contains(&b))
            }
        };
        (used == bytes.len() && fits).then_some(rule)
    }
}

impl fmt::Display for Rule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Rule::Root { admins, .. } => {
                let admins: Vec<String> = admins.iter().map(Principal::to_string).collect();
                write!(f, "root, admins {}", admins.join(", "))
            }
            Rule::Grant {
                grantee,
                right,
                prefix,
            } => write!(f, "grant {grantee} {right} over {prefix:?}"),
            Rule::Revoke {
                grantee,
                right,
                prefix,
                ..
            } => write!(f, "revoke {grantee} {right} over {prefix:?}"),
            Rule::Keyring {
                prefix, readers, ..
            } => {
                let readers: Vec<String> = readers.iter().map(Principal::to_string).collect();
                write!(
                    f,
                    "secret prefix {prefix:?}: a key sealed to {}",
                    readers.join(", ")
                )
            }
            Rule::Token {
                id,
                name,
                expires_ms,
                ..
            } => {
                write!(f, "token token:{id} named {name:?}")?;
                match expires_ms {
                    Some(ms) => write!(f, ", expires at {ms} ms"),
                    None => f.write_str(", never expires"),
                }
            }
        }
    }
}

/// The key of the policy entry at `position` (its writer, and its number among that writer's
/// entries, from 1): `_confmesh/policy/<writer>-<number>`.
pub fn entry_key(position: Dot) -> Key {
    // The prefix, 16 hex digits and a number always make a valid key.
    Key::from_valid(format!(
        "{POLICY_PREFIX}{}-{}",
        position.actor, position.counter
    ))
}

/// The position a policy entry's key names: its writer and number, if `key` is spelled exactly
/// as [`entry_key`] spells one (16 lowercase hex digits, a number from 1 without leading
/// zeros).
pub fn entry_position(key: &str) -> Option<Dot> {
    let (writer, number) = key.strip_prefix(POLICY_PREFIX)?.split_once('-')?;
    let writer = WriterId(u64::from_str_radix(writer, 16).ok()?);
    let number: u64 = number.parse().ok()?;
    let position = Dot::new(writer, number);
    let exact = number >= 1 && entry_key(position).as_str() == key;
    exact.then_some(position)
}

/// Whether `clock` includes `dot`.
pub fn covers(clock: &VClock, dot: Dot) -> bool {
    dot.counter <= clock.get(&dot.actor)
}

/// A policy entry judged granted in its context.
#[derive(Clone, Debug)]
struct Entry {
    dot: Dot,
    position: Dot,
    author: Principal,
    context: VClock,
    rule: Rule,
}

impl Entry {
    /// Whether this entry is a revocation that takes `right` over `key` from `principal`.
    fn revokes(&self, principal: &Principal, right: Right, key: &str) -> Option<&VClock> {
        match &self.rule {
            Rule::Revoke {
                grantee,
                right: least,
                prefix,
                cutoff,
            } if grantee.matches(principal) && right >= *least && key.starts_with(prefix) => {
                Some(cutoff)
            }
            _ => None,
        }
    }

    /// Whether this entry, taken alone, gives `principal` the `right` over `key`.
    fn gives(&self, principal: &Principal, right: Right, key: &str) -> bool {
        match &self.rule {
            Rule::Root { admins, .. } => admins.iter().any(|a| a == principal),
            Rule::Grant {
                grantee,
                right: granted,
                prefix,
            } => grantee.matches(principal) && right <= *granted && key.starts_with(prefix),
            Rule::Revoke { .. } | Rule::Token { .. } | Rule::Keyring { .. } => false,
        }
    }
}

/// When the act a question is about was made.
#[derive(Clone, Copy)]
enum At {
    /// The act with this dot.
    Dot(Dot),
    /// An act made now, after every cutoff held (what an agent asks for a token's read): no
    /// cutoff includes it, whatever the cutoff names.
    Now,
}

impl At {
    /// Whether `cutoff` includes the act: a revocation or a root with this cutoff saw it.
    fn within(self, cutoff: &VClock) -> bool {
        match self {
            At::Dot(dot) => covers(cutoff, dot),
            At::Now => false,
        }
    }
}

/// Which entries a question is answered over.
#[derive(Clone, Copy)]
enum Within<'a> {
    /// Those an act saw: its verdict, final.
    Context(&'a VClock),
    /// Everything known here: whether a granted act is masked now.
    All,
}

impl Within<'_> {
    fn includes(self, position: Dot) -> bool {
        match self {
            Within::Context(clock) => covers(clock, position),
            Within::All => true,
        }
    }
}

/// The policy entries a replica holds that were granted in their context, and the rule over
/// them. Empty: no root, so every write is granted (Trust I's rule) and no rule is.
#[derive(Clone, Debug, Default)]
pub struct Book {
    /// By position.
    entries: BTreeMap<(WriterId, u64), Entry>,
    /// Per writer, the number up to which all its entries are held: what a context may name.
    held: BTreeMap<WriterId, u64>,
    /// The entries that can apply to a principal, by the principal (or pattern) they name: a
    /// grant's or a revocation's grantee, each admin of a root. A judgement reads only these
    /// (`benches/policy.rs`: scanning every entry cost 177 µs a version at 7,000 entries).
    named: BTreeMap<Principal, Vec<(WriterId, u64)>>,
    /// The roots.
    roots: Vec<(WriterId, u64)>,
    /// The token entries, by token id, in position order (one id has one entry unless an
    /// admin made two for one secret: each is kept, so no replica's answer depends on which
    /// came first).
    tokens: BTreeMap<String, Vec<(WriterId, u64)>>,
    /// The keyring entries (PROTOCOL.md §9.4), in the order admitted.
    keyrings: Vec<(WriterId, u64)>,
    revocations: usize,
}

/// One generation of a secret prefix's key, as the policy holds it ([`Book::keyrings`]).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KeyringEntry {
    /// Its name, `<writer>-<n>` (its position).
    pub generation: String,
    /// The prefix it covers.
    pub prefix: String,
    /// Its public key (`age1…`).
    pub recipient: String,
    /// The nodes its private key is sealed to.
    pub readers: Vec<Principal>,
    /// Its private key, sealed to the readers.
    pub sealed: Vec<u8>,
    /// The admin who made it.
    pub author: Principal,
    /// Its position.
    pub position: Dot,
    /// Whether it is the prefix's current generation here: no other generation of the prefix
    /// saw it (and, of several such, it has the greatest position). New values are sealed to
    /// it.
    pub current: bool,
}

/// A token the policy holds ([`Book::token`]).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TokenEntry {
    /// Its principal, `token:<id>`.
    pub principal: Principal,
    /// Its name.
    pub name: String,
    /// The SHA-256 of its secret.
    pub hash: [u8; 32],
    /// The public key derived from its secret.
    pub public: [u8; 32],
    /// When agents start refusing it (Unix ms); `None`: never.
    pub expires_ms: Option<u64>,
    /// The admin who made it.
    pub author: Principal,
    /// The entry's dot.
    pub dot: Dot,
    /// The entry's position: an act that relies on the token must have it in its context.
    pub position: Dot,
    /// Whether it still counts: its maker's authority stands, and no revocation of its
    /// `read` over every key took it back.
    pub live: bool,
}

/// The prefix of a keyring entry; `None` for another kind of entry.
fn keyring_prefix(e: &Entry) -> Option<&str> {
    match &e.rule {
        Rule::Keyring { prefix, .. } => Some(prefix.as_str()),
        _ => None,
    }
}

/// A keyring entry as [`Book::keyrings`] shows it; `None` for another kind of entry.
fn keyring_entry(e: &Entry, current: bool) -> Option<KeyringEntry> {
    let Rule::Keyring {
        prefix,
        recipient,
        readers,
        sealed,
    } = &e.rule
    else {
        return None;
    };
    Some(KeyringEntry {
        generation: super::sealed::generation_name(e.position.actor, e.position.counter),
        prefix: prefix.clone(),
        recipient: recipient.clone(),
        readers: readers.clone(),
        sealed: sealed.clone(),
        author: e.author.clone(),
        position: e.position,
        current,
    })
}

impl Book {
    /// An empty book: no root.
    pub fn new() -> Book {
        Book::default()
    }

    /// How many entries it holds.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Whether it holds no entry.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Whether a policy root is held (then nothing is allowed that no grant allows).
    pub fn rooted(&self) -> bool {
        !self.roots.is_empty()
    }

    /// How many revocations it holds.
    pub fn revocations(&self) -> usize {
        self.revocations
    }

    /// The number up to which all of `writer`'s entries are held here.
    pub fn held_through(&self, writer: WriterId) -> u64 {
        self.held.get(&writer).copied().unwrap_or(0)
    }

    /// The policy context of an act made here now (docs/PROTOCOL.md §8.3): for every writer of
    /// entries held, the number up to which all of its entries are held. Empty without policy.
    pub fn context(&self) -> VClock {
        let mut context = VClock::new();
        for (&writer, &through) in &self.held {
            if through > 0 {
                context.dots.insert(writer, through);
            }
        }
        context
    }

    /// The nodes cut off from the cluster (docs/PROTOCOL.md §8.8): those named by a revocation
    /// of `read` over every key (`""`) that no grant of `read` (or more) over every key made
    /// after seeing it restores. Their certificates are refused at every connection. A
    /// revocation of a pattern (`node:*`) cuts off no one: it would cut every node off from
    /// every other.
    pub fn cut_off(&self) -> std::collections::BTreeSet<String> {
        let mut names = std::collections::BTreeSet::new();
        for entry in self.entries.values() {
            if let Some(grantee) = self.outright(entry)
                && let (Kind::Node, Some(name)) = (grantee.kind, &grantee.name)
            {
                names.insert(name.clone());
            }
        }
        names
    }

    /// The principal `entry` revokes outright: a revocation of one principal's `read` over
    /// every key (`""`) that no grant of `read` or more over every key, made after seeing it
    /// by a grantor who still holds `admin` over every key, takes back.
    fn outright<'a>(&self, entry: &'a Entry) -> Option<&'a Principal> {
        let Rule::Revoke {
            grantee,
            right: Right::Read,
            prefix,
            ..
        } = &entry.rule
        else {
            return None;
        };
        if grantee.is_pattern() || !prefix.is_empty() {
            return None;
        }
        // A grant counts only where its grantor holds `admin` over every key by what is known
        // now: one whose authority was revoked (concurrently) lifts nothing.
        let restored = self.about(grantee).iter().any(|grant| {
            matches!(&grant.rule, Rule::Grant { grantee: named, prefix, .. } if prefix.is_empty() && named == grantee)
                && grant.gives(grantee, Right::Read, "")
                && covers(&grant.context, entry.position)
                && self
                    .holds_at(
                        &grant.author,
                        Right::Admin,
                        "",
                        At::Dot(grant.dot),
                        &grant.context,
                        Within::All,
                        1,
                    )
                    .is_ok()
        });
        (!restored).then_some(grantee)
    }

    /// Whether `principal` is revoked outright (its `read` over every key, 8.8).
    pub fn revoked_outright(&self, principal: &Principal) -> bool {
        self.about(principal)
            .into_iter()
            .any(|entry| self.outright(entry) == Some(principal))
    }

    /// The token `id`, if an entry made it (docs/PROTOCOL.md §8.7): the first entry for it by
    /// position, the same at every replica holding the same entries.
    pub fn token(&self, id: &str) -> Option<TokenEntry> {
        self.token_entries(id).into_iter().next()
    }

    /// Every entry for the token `id`, in position order.
    pub fn token_entries(&self, id: &str) -> Vec<TokenEntry> {
        let Some(at) = self.tokens.get(id) else {
            return Vec::new();
        };
        at.iter()
            .filter_map(|at| self.entries.get(at))
            .filter_map(|entry| self.token_entry(entry))
            .collect()
    }

    fn token_entry(&self, entry: &Entry) -> Option<TokenEntry> {
        let Rule::Token {
            id,
            name,
            hash,
            public,
            expires_ms,
        } = &entry.rule
        else {
            return None;
        };
        let principal = super::token::token_principal(id);
        let act = Act {
            dot: entry.dot,
            position: Some(entry.position),
            node: Principal::nameless_node(),
            author: Some(entry.author.clone()),
            context: entry.context.clone(),
            deed: Deed::Rule(entry.rule.clone()),
        };
        let live = self.masked(&act).is_none() && !self.revoked_outright(&principal);
        Some(TokenEntry {
            principal,
            name: name.clone(),
            hash: *hash,
            public: *public,
            expires_ms: *expires_ms,
            author: entry.author.clone(),
            dot: entry.dot,
            position: entry.position,
            live,
        })
    }

    /// Every token the policy holds, by id.
    pub fn tokens(&self) -> Vec<TokenEntry> {
        self.tokens.keys().filter_map(|id| self.token(id)).collect()
    }

    /// Every keyring entry held (PROTOCOL.md §9.4), in position order, each marked whether it
    /// is its prefix's current generation here.
    pub fn keyrings(&self) -> Vec<KeyringEntry> {
        let context = self.context();
        let mut current: BTreeMap<&str, Option<(WriterId, u64)>> = BTreeMap::new();
        self.keyrings
            .iter()
            .filter_map(|at| self.entries.get(at))
            .filter_map(|e| {
                let prefix = keyring_prefix(e)?;
                let now = *current
                    .entry(prefix)
                    .or_insert_with(|| self.current_of(prefix, &context));
                keyring_entry(e, now == Some((e.position.actor, e.position.counter)))
            })
            .collect()
    }

    /// The current generation of `prefix`: among its keyring entries in `context` (so a
    /// write made now may name it), those no other of them saw; of several such, the greatest
    /// position (concurrent rotations: one deterministic choice).
    fn current_of(&self, prefix: &str, context: &VClock) -> Option<(WriterId, u64)> {
        let of_prefix: Vec<&Entry> = self
            .keyrings
            .iter()
            .filter_map(|at| self.entries.get(at))
            .filter(|e| keyring_prefix(e) == Some(prefix) && covers(context, e.position))
            .collect();
        of_prefix
            .iter()
            .filter(|e| {
                !of_prefix
                    .iter()
                    .any(|other| other.position != e.position && covers(&other.context, e.position))
            })
            .map(|e| (e.position.actor, e.position.counter))
            .max()
    }

    /// The generation a value written now under `key` is sealed to: the current generation of
    /// the longest secret prefix that covers the key. `None`: the key is not secret here.
    pub fn sealing_generation(&self, key: &str) -> Option<KeyringEntry> {
        if self.keyrings.is_empty() || key.starts_with(super::RESERVED_PREFIX) {
            return None;
        }
        let prefix = self
            .keyrings
            .iter()
            .filter_map(|at| self.entries.get(at))
            .filter_map(keyring_prefix)
            .filter(|p| key.starts_with(p))
            .max_by_key(|p| p.len())?;
        let at = self.current_of(prefix, &self.context())?;
        let entry = self.entries.get(&at)?;
        keyring_entry(entry, true)
    }

    /// The keyring entry named `generation`, if held (its `current` is not computed: false).
    pub fn keyring(&self, generation: &str) -> Option<KeyringEntry> {
        self.keyrings
            .iter()
            .filter_map(|at| self.entries.get(at))
            .find(|e| {
                super::sealed::generation_name(e.position.actor, e.position.counter) == generation
            })
            .and_then(|e| keyring_entry(e, false))
    }

    /// The generations a value under `key` made in `context` may be sealed to: those of every
    /// keyring entry in the context whose prefix covers the key (PROTOCOL.md §9.3). Empty: the
    /// key is not secret in that context, and its values are not judged by it.
    pub fn generations_for(&self, key: &str, context: &VClock) -> Vec<String> {
        if key.starts_with(super::RESERVED_PREFIX) {
            return Vec::new();
        }
        self.keyrings
            .iter()
            .filter_map(|at| self.entries.get(at))
            .filter(|e| covers(context, e.position))
            .filter_map(|e| match &e.rule {
                Rule::Keyring { prefix, .. } if key.starts_with(prefix.as_str()) => Some(
                    super::sealed::generation_name(e.position.actor, e.position.counter),
                ),
                _ => None,
            })
            .collect()
    }

    /// Whether `principal` holds `right` over each of `keys` now: for an act made now, in the
    /// context of every entry held, after every revocation held (what an agent checks for a
    /// token's read, which is no version and is judged nowhere else). `None` where it does,
    /// else the denial naming the missing grant. The context is made once for all the keys.
    pub fn holds_now<'k>(
        &self,
        principal: &Principal,
        right: Right,
        keys: impl IntoIterator<Item = &'k str>,
    ) -> Vec<Option<Denial>> {
        let context = self.context();
        keys.into_iter()
            .map(|key| {
                self.holds_at(principal, right, key, At::Now, &context, Within::All, 0)
                    .err()
            })
            .collect()
    }

    /// Every entry it holds, in position order: its dot, author and rule.
    pub fn entries(&self) -> impl Iterator<Item = (Dot, &Principal, &Rule)> + '_ {
        self.entries.values().map(|e| (e.dot, &e.author, &e.rule))
    }

    /// The verdict on `act` in its own context: over the entries it saw only, so the same at
    /// every replica whatever else arrived first. The caller hands it over once every entry its
    /// context names is held here ([`Book::held_through`]).
    pub fn judge(&self, act: &Act) -> Result<(), Denial> {
        self.authorized(act, Within::Context(&act.context))
    }

    /// Whether `act`, granted in its context, is masked by what this book holds now: a
    /// revocation or a root that did not see it took away what it relied on. Once masked, an
    /// act stays masked as entries arrive.
    pub fn masked(&self, act: &Act) -> Option<Denial> {
        self.authorized(act, Within::All).err()
    }

    /// Judges `act` in its context and, if it is a policy entry granted there, records it.
    /// The caller then reads [`Book::masked`] for the acts it applied before.
    pub fn admit(&mut self, act: &Act) -> Result<(), Denial> {
        self.judge(act)?;
        if let (Deed::Rule(rule), Some(author), Some(position)) =
            (&act.deed, &act.author, act.position)
        {
            let at = (position.actor, position.counter);
            if self.entries.contains_key(&at) {
                // A second version at a position held (docs/PROTOCOL.md §8.9): the first
                // stays.
                return Ok(());
            }
            match rule {
                Rule::Root { admins, .. } => {
                    self.roots.push(at);
                    for admin in admins {
                        self.named.entry(admin.clone()).or_default().push(at);
                    }
                }
                Rule::Grant { grantee, .. } => {
                    self.named.entry(grantee.clone()).or_default().push(at);
                }
                Rule::Revoke { grantee, .. } => {
                    self.revocations += 1;
                    self.named.entry(grantee.clone()).or_default().push(at);
                }
                Rule::Token { id, .. } => {
                    let at_id = self.tokens.entry(id.clone()).or_default();
                    if let Err(i) = at_id.binary_search(&at) {
                        at_id.insert(i, at);
                    }
                }
                Rule::Keyring { .. } => self.keyrings.push(at),
            }
            self.entries.insert(
                at,
                Entry {
                    dot: act.dot,
                    position,
                    author: author.clone(),
                    context: act.context.clone(),
                    rule: rule.clone(),
                },
            );
            let held = self.held.entry(position.actor).or_default();
            while self.entries.contains_key(&(position.actor, *held + 1)) {
                *held += 1;
            }
        }
        Ok(())
    }

    /// The entries that name `principal`, or a pattern of its kind, in position order.
    fn about(&self, principal: &Principal) -> Vec<&Entry> {
        let pattern = Principal {
            kind: principal.kind,
            name: None,
        };
        let mut at: Vec<(WriterId, u64)> = [self.named.get(principal), self.named.get(&pattern)]
            .into_iter()
            .flatten()
            .flatten()
            .copied()
            .collect();
        at.sort_unstable();
        at.dedup();
        at.iter().filter_map(|k| self.entries.get(k)).collect()
    }

    /// The roots, in position order.
    fn root_entries(&self) -> impl Iterator<Item = &Entry> {
        self.roots.iter().filter_map(|k| self.entries.get(k))
    }

    fn authorized(&self, act: &Act, within: Within<'_>) -> Result<(), Denial> {
        if !well_formed(act) {
            return Err(Denial::Malformed);
        }
        match &act.deed {
            Deed::Write { key } => {
                self.holds(&act.node, Right::Write, key, act, within, 0)?;
                match &act.author {
                    Some(author) => self.holds(author, Right::Write, key, act, within, 0),
                    None => Ok(()),
                }
            }
            Deed::Rule(rule) => {
                let author = act.author.as_ref().ok_or(Denial::NoAuthor)?;
                match rule {
                    Rule::Root { admins, .. } => {
                        let admins_ok = !admins.is_empty()
                            && admins
                                .iter()
                                .all(|a| a.kind == Kind::Admin && !a.is_pattern());
                        if author.kind != Kind::Admin || !admins.contains(author) || !admins_ok {
                            return Err(Denial::NotAnAdmin);
                        }
                        // A root is judged in its context only: it is a marker that never
                        // goes away (what it grants its admins is revocable like a grant).
                        let seen_root = self.root_entries().any(|e| act.saw(e.position));
                        if seen_root {
                            Err(Denial::RootExists)
                        } else {
                            Ok(())
                        }
                    }
                    Rule::Grant { prefix, .. } => {
                        self.holds(author, Right::Admin, prefix, act, within, 0)
                    }
                    // A token is a principal for the whole cluster: made by an admin of every
                    // key, and undone (masked) like a grant when that authority is revoked.
                    Rule::Token { .. } => self.holds(author, Right::Admin, "", act, within, 0),
                    // Only readers make keys: the node that made it saw the private key.
                    Rule::Keyring {
                        prefix, readers, ..
                    } => {
                        if !readers.contains(&act.node) {
                            return Err(Denial::NotAReader);
                        }
                        self.holds(author, Right::Admin, prefix, act, within, 0)
                    }
                    // A revocation is judged in its context only, and never masked: deny wins
                    // (a revoked admin's concurrent revocations stand; it can withhold, never
                    // grant, and any grant made after seeing them outweighs them).
                    Rule::Revoke { prefix, .. } => self.holds(
                        author,
                        Right::Admin,
                        prefix,
                        act,
                        Within::Context(&act.context),
                        0,
                    ),
                }
            }
        }
    }

    /// Whether `principal` holds `right` over `key` for `act` (its dot and context), over the
    /// entries `within` admits.
    fn holds(
        &self,
        principal: &Principal,
        right: Right,
        key: &str,
        act: &Act,
        within: Within<'_>,
        depth: usize,
    ) -> Result<(), Denial> {
        self.holds_at(
            principal,
            right,
            key,
            At::Dot(act.dot),
            &act.context,
            within,
            depth,
        )
    }

    #[allow(clippy::too_many_arguments)]
    fn holds_at(
        &self,
        principal: &Principal,
        right: Right,
        key: &str,
        at: At,
        context: &VClock,
        within: Within<'_>,
        depth: usize,
    ) -> Result<(), Denial> {
        let known = |e: &&Entry| within.includes(e.position);
        let about = self.about(principal);
        // A revocation that takes this right away from this act: not seen by `seen_by` (the
        // grant relied on), and not one that had seen the act itself.
        let revoked = |seen_by: Option<&VClock>| {
            about.iter().copied().filter(known).find_map(|e| {
                let cutoff = e.revokes(principal, right, key)?;
                let seen = seen_by.is_some_and(|c| covers(c, e.position));
                (!seen && !at.within(cutoff)).then_some(e.dot)
            })
        };
        let revoked_denial = |by| Denial::Revoked {
            principal: principal.clone(),
            right,
            key: key.to_owned(),
            by,
        };
        let rooted = self
            .root_entries()
            .filter(known)
            .any(|e| covers(context, e.position));
        if !rooted {
            // No root seen: everything but a rule is allowed, unless a root or a revocation
            // that did not see the act says otherwise.
            if right == Right::Admin {
                return Err(Denial::NoRoot);
            }
            let root = self.root_entries().filter(known).find(|e| match &e.rule {
                Rule::Root { cutoff, .. } => !at.within(cutoff),
                _ => false,
            });
            if let Some(root) = root {
                return Err(Denial::RootCreated { by: root.dot });
            }
            return match revoked(None) {
                Some(by) => Err(revoked_denial(by)),
                None => Ok(()),
            };
        }
        let mut denial = Denial::NotGranted {
            principal: principal.clone(),
            right,
            key: key.to_owned(),
        };
        let grants = about
            .iter()
            .copied()
            .filter(known)
            .filter(|e| covers(context, e.position) && e.gives(principal, right, key));
        for grant in grants {
            if let Some(by) = revoked(Some(&grant.context)) {
                denial = revoked_denial(by);
                continue;
            }
            if matches!(grant.rule, Rule::Grant { .. }) {
                // A grant applies where its grantor held `admin` when it made it.
                if depth >= MAX_GRANT_DEPTH {
                    continue;
                }
                if let Err(d) = self.holds_at(
                    &grant.author,
                    Right::Admin,
                    key,
                    At::Dot(grant.dot),
                    &grant.context,
                    within,
                    depth + 1,
                ) {
                    denial = d;
                    continue;
                }
            }
            return Ok(());
        }
        Err(denial)
    }
}

/// Bounds on an act's clocks, an entry whose context does not include its own position, a
/// position only for a rule, and acting principals that are one principal each, not a pattern.
fn well_formed(act: &Act) -> bool {
    let cutoff_fits = match &act.deed {
        Deed::Rule(Rule::Root { cutoff, .. } | Rule::Revoke { cutoff, .. }) => {
            cutoff.dots.len() <= MAX_CLOCK_WRITERS
        }
        _ => true,
    };
    let one = |p: &Principal| !p.is_pattern();
    cutoff_fits
        && act.context.dots.len() <= MAX_CLOCK_WRITERS
        && match (&act.deed, act.position) {
            (Deed::Rule(_), Some(position)) => !act.saw(position),
            (Deed::Write { .. }, None) => true,
            _ => false,
        }
        && one(&act.node)
        && act.author.as_ref().is_none_or(one)
}
