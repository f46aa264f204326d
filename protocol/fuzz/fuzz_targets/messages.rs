//! The message parser: any bytes that decode as a frame body must encode again, and that
//! encoding must decode to the same value (no lossy or ambiguous fields).
#![no_main]

use libfuzzer_sys::fuzz_target;
use shelf_protocol::{ClientFrame, ServerFrame};

fuzz_target!(|data: &[u8]| {
    if let Ok(frame) = postcard::from_bytes::<ClientFrame>(data) {
        let again = postcard::to_stdvec(&frame).expect("a decoded frame encodes");
        let back: ClientFrame = postcard::from_bytes(&again).expect("and decodes again");
        assert_eq!(format!("{frame:?}"), format!("{back:?}"));
    }
    if let Ok(frame) = postcard::from_bytes::<ServerFrame>(data) {
        let again = postcard::to_stdvec(&frame).expect("a decoded frame encodes");
        let back: ServerFrame = postcard::from_bytes(&again).expect("and decodes again");
        assert_eq!(frame, back);
    }
});
