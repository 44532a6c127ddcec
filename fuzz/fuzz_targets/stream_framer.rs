//! Any byte stream, cut into arbitrary chunks, through the stream framer
//! (both sides), every framed message through the parser: nothing may
//! panic, no frame may exceed the limits, and bytes are never lost or
//! invented.
#![no_main]

use bytes::Bytes;
use libfuzzer_sys::fuzz_target;
use siproam_sip::{Frame, Limits, Message, Side, StreamFramer};

fuzz_target!(|data: &[u8]| {
    let Some((&cut, stream)) = data.split_first() else {
        return;
    };
    let limits = Limits { max_message: 4096, max_headers: 64, max_line: 1024 };
    for side in [Side::Server, Side::Client] {
        let mut framer = StreamFramer::new(side, limits);
        let chunk = usize::from(cut % 64) + 1;
        let mut consumed = 0usize;
        let mut failed = false;
        for piece in stream.chunks(chunk) {
            framer.push(piece);
            loop {
                match framer.next_frame() {
                    Ok(Some(Frame::Message(m))) => {
                        assert!(m.len() <= limits.max_message);
                        consumed += m.len();
                        let _ = Message::parse_with(Bytes::clone(&m), &limits).map(|msg| msg.validate());
                    }
                    Ok(Some(Frame::Ping)) => consumed += 4,
                    Ok(Some(Frame::Pong)) => consumed += 2,
                    Ok(None) => break,
                    Err(_) => {
                        failed = true;
                        break;
                    }
                }
            }
            if failed {
                break;
            }
        }
        if !failed {
            assert_eq!(consumed + framer.buffered(), stream.len());
        }
    }
});
