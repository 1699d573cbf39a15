//! Every message decoder a peer's bytes reach (datagrams and streams, snapshot chunks
//! included): no input panics or allocates without bound, and whatever decodes encodes and
//! decodes back to the same message.
#![no_main]

use confmesh::proto::wire::{
    self, Format, GROUNDED_FORMAT_VERSION, MAX_DATAGRAM_BYTES, MAX_MESSAGE_BYTES,
    SEALED_FORMAT_VERSION,
};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    for limit in [MAX_DATAGRAM_BYTES, 1 << 20] {
        let Ok(message) = wire::decode(data, limit) else {
            continue;
        };
        // In the input's own format: format 1 drops the seals format 3 carries (format 4,
        // asked for as format 3, is written when a version carries grounds).
        let format = match data.first() {
            Some(&SEALED_FORMAT_VERSION | &GROUNDED_FORMAT_VERSION) => Format::Sealed,
            _ => Format::Plain,
        };
        let encoded =
            wire::encode_as(&message, format, MAX_MESSAGE_BYTES).expect("a decoded message encodes");
        let again = wire::decode(&encoded, MAX_MESSAGE_BYTES).expect("an encoded message decodes");
        assert_eq!(again, message, "a message changed through encode and decode");
    }
});
