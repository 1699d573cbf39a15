use super::*;

const CANARY: &[u8] = b"canary-db-password-7f3a";

fn readers(n: usize) -> (Vec<NodeIdentity>, Vec<String>) {
    let ids: Vec<_> = (0..n).map(|_| NodeIdentity::ephemeral()).collect();
    let recipients = ids.iter().map(NodeIdentity::recipient).collect();
    (ids, recipients)
}

#[test]
fn every_reader_and_no_outsider_opens_a_key_and_the_values_sealed_to_it() {
    let (ids, recipients) = readers(3);
    let key = PrefixKey::generate("00000000000000ab-1").expect("key");
    let sealed_key = key.seal_for(&recipients).expect("sealed");
    let value = seal_value(&key.recipient(), key.generation(), "s/db", CANARY).expect("value");

    assert!(!contains(
        &sealed_key,
        key.identity.to_string().expose_secret().as_bytes()
    ));
    assert!(
        !contains(&value, CANARY),
        "the value is not in its sealed form"
    );
    assert_eq!(generation_of(&value), Some("00000000000000ab-1"));
    for id in &ids {
        let opened = PrefixKey::open(id, key.generation(), &sealed_key).expect("a reader opens");
        assert_eq!(opened.recipient(), key.recipient());
        assert_eq!(
            opened.open_value(&value, "s/db", 1 << 20).expect("opens"),
            CANARY
        );
    }
    // Read under another key than the one it was sealed for: refused before decryption.
    let opened = PrefixKey::open(&ids[0], key.generation(), &sealed_key).expect("opens");
    assert!(matches!(
        opened.open_value(&value, "s/other", 1 << 20),
        Err(SecretError::WrongKey)
    ));
    let outsider = NodeIdentity::ephemeral();
    assert!(matches!(
        PrefixKey::open(&outsider, key.generation(), &sealed_key),
        Err(SecretError::NotARecipient)
    ));
    // A value is sealed to the prefix key only: a reader's own identity does not open it.
    assert!(matches!(
        open(&ids[0].identity, &value, 1 << 20),
        Err(SecretError::NotARecipient)
    ));
}

#[test]
fn a_value_of_another_generation_is_refused_by_name_before_any_decryption() {
    let old = PrefixKey::generate("00000000000000ab-1").expect("key");
    let new = PrefixKey::generate("00000000000000ab-2").expect("key");
    let value = seal_value(&new.recipient(), new.generation(), "s/db", CANARY).expect("value");
    match old.open_value(&value, "s/db", 1 << 20) {
        Err(SecretError::WrongGeneration { expected, found }) => {
            assert_eq!(
                (expected.as_str(), found.as_str()),
                ("00000000000000ab-1", "00000000000000ab-2")
            );
        }
        other => panic!("expected WrongGeneration, got {other:?}"),
    }
    // A plain age file names no generation.
    let plain = seal(
        std::iter::once(&new.identity.to_public() as &dyn age::Recipient),
        CANARY,
    )
    .expect("sealed");
    assert_eq!(generation_of(&plain), None);
    assert!(matches!(
        new.open_value(&plain, "s/db", 1 << 20),
        Err(SecretError::WrongGeneration { .. })
    ));
}

#[test]
fn tampered_truncated_oversized_and_foreign_input_is_an_error_never_a_panic() {
    let key = PrefixKey::generate("k-1").expect("key");
    let value = seal_value(&key.recipient(), "k-1", "s/db", CANARY).expect("value");
    // Every single-byte change past the magic line and every truncation fails to open.
    for at in (22..value.len()).step_by(7) {
        let mut bad = value.clone();
        bad[at] ^= 0x01;
        assert!(
            key.open_value(&bad, "s/db", 1 << 20).is_err(),
            "a flipped byte at {at} opened"
        );
    }
    for len in [0, 10, 22, value.len() / 2, value.len() - 1] {
        assert!(
            key.open_value(&value[..len], "s/db", 1 << 20).is_err(),
            "a cut at {len} opened"
        );
    }
    assert!(matches!(
        key.open_value(&value, "s/db", (CANARY.len() - 1) as u64),
        Err(SecretError::Malformed(_))
    ));
    assert_eq!(generation_of(b"\xff\x00garbage"), None);
    let mut long_name = b"age-encryption.org/v1\n-> confmesh-keyring ".to_vec();
    long_name.extend_from_slice(&[b'a'; 2_000]);
    assert_eq!(generation_of(&long_name), None);
    assert!(matches!(
        PrefixKey::generate("a b"),
        Err(SecretError::BadGeneration(_))
    ));
    assert!(matches!(
        PrefixKey::generate(""),
        Err(SecretError::BadGeneration(_))
    ));
    assert!(matches!(
        key.seal_for(&["not-a-recipient"]),
        Err(SecretError::BadRecipient(_))
    ));
    assert!(matches!(
        key.seal_for::<&str>(&[]),
        Err(SecretError::NoReaders)
    ));
    assert!(!is_recipient("age1nope") && is_recipient(&key.recipient()));
    // A keyring whose plaintext is not an identity.
    let (ids, recipients) = readers(1);
    let junk = seal(
        std::iter::once(&Recipient::from_str(&recipients[0]).expect("r") as &dyn age::Recipient),
        b"not a key",
    )
    .expect("sealed");
    assert!(matches!(
        PrefixKey::open(&ids[0], "k-1", &junk),
        Err(SecretError::Malformed(_))
    ));
}

#[test]
fn a_nodes_identity_file_is_private_kept_across_loads_and_refused_when_corrupt() {
    let dir = tempfile::tempdir().expect("tempdir");
    let first = NodeIdentity::load_or_create(dir.path()).expect("made");
    let again = NodeIdentity::load_or_create(dir.path()).expect("loaded");
    assert_eq!(first.recipient(), again.recipient());
    let path = dir.path().join(IDENTITY_FILE);
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&path).expect("meta").permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
    }
    assert!(!format!("{first:?}").contains("AGE-SECRET-KEY"));
    let other = tempfile::tempdir().expect("tempdir");
    let fresh = NodeIdentity::load_or_create(other.path()).expect("made");
    assert_ne!(fresh.recipient(), first.recipient());

    std::fs::write(&path, "garbage\n").expect("write");
    assert!(matches!(
        NodeIdentity::load_or_create(dir.path()),
        Err(SecretError::BadIdentity { .. })
    ));
}

#[test]
fn debug_output_names_generations_and_recipients_never_private_keys() {
    let key = PrefixKey::generate("k-9").expect("key");
    let shown = format!("{key:?}");
    assert!(shown.contains("k-9") && shown.contains(&key.recipient()));
    assert!(!shown.contains("AGE-SECRET-KEY"));
}

/// The standard `age` tool opens a value in two steps: the keyring with a node's identity
/// file, then the value with the prefix key it holds. Skipped where `age` is not installed,
/// unless `CI_REQUIRE_AGE` is set (`.ci/run` installs Debian's `age` and sets it).
#[test]
fn the_age_tool_opens_a_keyring_then_a_value() {
    let required = std::env::var_os("CI_REQUIRE_AGE").is_some();
    let installed = std::process::Command::new("age")
        .arg("--version")
        .output()
        .is_ok();
    if !installed {
        assert!(
            !required,
            "CI_REQUIRE_AGE is set but `age` is not installed"
        );
        eprintln!("skipped: `age` is not installed");
        return;
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let node = NodeIdentity::load_or_create(dir.path()).expect("identity");
    let key = PrefixKey::generate("00000000000000ab-3").expect("key");
    let (_, mut recipients) = readers(2);
    recipients.push(node.recipient());
    std::fs::write(
        dir.path().join("keyring"),
        key.seal_for(&recipients).expect("sealed"),
    )
    .expect("write");
    let value = seal_value(&key.recipient(), key.generation(), "s/db", CANARY).expect("value");
    std::fs::write(dir.path().join("value"), &value).expect("write");

    let age = |identity: &str, input: &str| {
        let out = std::process::Command::new("age")
            .current_dir(dir.path())
            .args(["--decrypt", "--identity", identity, input])
            .output()
            .expect("age runs");
        assert!(
            out.status.success(),
            "age failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        out.stdout
    };
    let prefix_key = age(IDENTITY_FILE, "keyring");
    std::fs::write(dir.path().join("prefix.key"), &prefix_key).expect("write");
    assert_eq!(age("prefix.key", "value"), CANARY);
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}

#[test]
fn the_plaintext_cache_is_bounded_and_never_shows_a_value() {
    let mut cache = PlaintextCache::default();
    let value = bytes::Bytes::from(vec![b's'; 1 << 20]);
    for i in 0..64u32 {
        cache.insert(PlaintextCache::digest(&i.to_le_bytes()), value.clone());
    }
    assert!(cache.bytes <= PlaintextCache::MAX_BYTES);
    assert!(
        cache
            .get(&PlaintextCache::digest(&0u32.to_le_bytes()))
            .is_none(),
        "oldest dropped"
    );
    assert_eq!(
        cache.get(&PlaintextCache::digest(&63u32.to_le_bytes())),
        Some(value)
    );
    cache.insert(
        PlaintextCache::digest(b"canary"),
        bytes::Bytes::from_static(CANARY),
    );
    assert!(!format!("{cache:?}").contains("canary"));
}
