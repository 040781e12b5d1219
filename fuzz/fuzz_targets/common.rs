// Shared driver for the SIP fuzz targets: answers every call so that dialogs, re-INVITEs,
// BYEs and timers are reached, and checks that everything emitted is well-formed.
use sip_core::{sdp, Config, Core, Event};
use std::time::Duration;

/// Separator between messages inside one fuzz input (seeds use it to chain a call flow).
pub const SEP: &[u8] = b"\x00\x00\x00";

pub fn core() -> Core {
    Core::new(Config {
        local_addr: "198.18.0.1:5060".parse().unwrap(),
        user_agent: "fuzz".into(),
        max_message_size: 4096,
        seed: 1,
    })
}

pub fn split(data: &[u8]) -> Vec<&[u8]> {
    let mut out = Vec::new();
    let mut rest = data;
    while let Some(p) = rest.windows(SEP.len()).position(|w| w == SEP) {
        out.push(&rest[..p]);
        rest = &rest[p + SEP.len()..];
    }
    out.push(rest);
    out
}

pub fn drive(core: &mut Core, now: Duration, step: u8) {
    let local = sdp::LocalMedia {
        ip: "198.18.0.1".parse().unwrap(),
        rtp_port: 40000,
        video_port: None,
        session_id: 1,
        session_version: 1,
    };
    while let Some(ev) = core.poll_event() {
        match ev {
            Event::IncomingCall { call, offer, .. } | Event::ReInvite { call, offer } => {
                let _ = match offer.as_deref().map(sdp::negotiate) {
                    Some(Ok(neg)) => core.accept(call, sdp::build_answer(&local, &neg), now),
                    None => core.accept(call, sdp::build_offer(&local), now),
                    Some(Err(_)) => core.reject(call, 488, now),
                };
            }
            Event::Confirmed { call, .. } if step % 3 == 0 => {
                let _ = core.hangup(call, now);
            }
            _ => {}
        }
    }
    while let Some(t) = core.poll_transmit() {
        assert!(t.data.len() < 64 * 1024);
        let text = std::str::from_utf8(&t.data).expect("emitted messages are UTF-8");
        assert!(text == "\r\n" || text.contains("\r\n\r\n"));
    }
    let _ = core.calls();
    let _ = core.stats();
}

pub fn tick(core: &mut Core, now: Duration) {
    if let Some(t) = core.poll_timeout() {
        if t <= now {
            core.handle_timeout(now);
        }
    }
}
