//! A text frame from a client: `ClientMessage::parse`, then what the session does with the
//! result before any I/O (the echo of a request, the refusal it may get, room-name checks).
#![no_main]

use authchat::ids::RoomId;
use authchat::protocol::{ClientMessage, ErrorCode, ServerMessage};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    // Text frames are UTF-8 by the time they are parsed (the transport closes with 1007 otherwise).
    let Ok(text) = std::str::from_utf8(data) else { return };
    match ClientMessage::parse(text) {
        Ok(message) => {
            let echo = message.echo();
            if let Some(room) = &echo.room {
                assert!(room.chars().count() <= RoomId::MAX_LEN, "the echo cuts room names");
                let _ = RoomId::parse(room);
            }
            // Every refusal of a parsed request must serialise (`to_json` expects it to).
            let _ = ServerMessage::refused(ErrorCode::InvalidRoom, "fuzz", echo).to_json();
        }
        Err(e) => {
            let _ = ServerMessage::error(e.code, e.message).to_json();
        }
    }
});
