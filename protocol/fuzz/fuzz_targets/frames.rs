//! The frame decoder over arbitrary bytes: a stream of length-prefixed frames read with the
//! real `FrameReader` until the end or the first error. Must never panic, never allocate
//! more than the frame cap, and end (every read consumes input or stops).
#![no_main]

use libfuzzer_sys::fuzz_target;
use shelf_protocol::{ClientFrame, FrameReader, ServerFrame};
use std::sync::OnceLock;

fn runtime() -> &'static tokio::runtime::Runtime {
    static RT: OnceLock<tokio::runtime::Runtime> = OnceLock::new();
    RT.get_or_init(|| {
        tokio::runtime::Builder::new_current_thread()
            .build()
            .expect("runtime")
    })
}

fuzz_target!(|data: &[u8]| {
    runtime().block_on(async {
        // As the server reads a client, and as a client reads a server.
        let mut r = FrameReader::new(data);
        while let Ok(Some(_)) = r.read::<ClientFrame>().await {}
        let mut r = FrameReader::new(data);
        while let Ok(Some(_)) = r.read::<ServerFrame>().await {}
    });
});
