//! Every message decoder a peer's bytes reach (datagrams and streams, snapshot chunks
//! included): no input panics or allocates without bound, and whatever decodes encodes and
//! decodes back to the same message.
#![no_main]

use confmesh::proto::wire::{self, MAX_DATAGRAM_BYTES, MAX_MESSAGE_BYTES};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    for limit in [MAX_DATAGRAM_BYTES, 1 << 20] {
        let Ok(message) = wire::decode(data, limit) else {
            continue;
        };
        let encoded = wire::encode(&message, MAX_MESSAGE_BYTES).expect("a decoded message encodes");
        let again = wire::decode(&encoded, MAX_MESSAGE_BYTES).expect("an encoded message decodes");
        assert_eq!(again, message, "a message changed through encode and decode");
    }
});
