//! The member record decoder every node runs on what peers write under
//! `_confmesh/members/<writer>` (either layout: protocol 1's name and tags, or with the
//! version after them): no input panics it, and whatever decodes
//!
//! - reads the same name and tags to a protocol-1 build, which ignores what follows them;
//! - advertises at least the oldest protocol version;
//! - encodes in the layout of the version it advertises (protocol 1's ends right after the
//!   tags; a later one's next byte is the version, and its age recipient, if it has one,
//!   comes last), which a protocol-1 build still reads;
//! - decodes back to the same record from that encoding.
#![no_main]

use confmesh::{
    fuzzing::{decode_member_record, encode_member_record, read_member_record_as_protocol_1},
    proto::wire::OLDEST_PROTOCOL_VERSION,
};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Some(record) = decode_member_record(data) else {
        return;
    };
    let (name, tags, _) =
        read_member_record_as_protocol_1(data).expect("a protocol-1 build reads what decodes");
    assert_eq!((&name, &tags), (&record.name, &record.tags));
    assert!(record.protocol >= OLDEST_PROTOCOL_VERSION);

    let encoded = encode_member_record(&record);
    let (name, tags, used) = read_member_record_as_protocol_1(&encoded)
        .expect("a protocol-1 build reads every record this build writes");
    assert_eq!((&name, &tags), (&record.name, &record.tags));
    if record.protocol == 1 {
        assert_eq!(
            used,
            encoded.len(),
            "protocol 1's layout ends after the tags"
        );
    } else {
        assert_eq!(encoded.get(used), Some(&record.protocol), "the version follows the tags");
        match &record.recipient {
            None => assert_eq!(used + 1, encoded.len(), "the record ends with its version"),
            Some(recipient) => {
                // A length byte (an age recipient is 62 bytes), then the recipient, last.
                assert_eq!(used + 2 + recipient.len(), encoded.len());
                assert!(encoded.ends_with(recipient.as_bytes()), "the recipient comes last");
            }
        }
    }
    assert_eq!(
        decode_member_record(&encoded).as_ref(),
        Some(&record),
        "a record changed through encode and decode"
    );
});
