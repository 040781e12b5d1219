#![no_main]
//! The DTLS server handshake exactly as a browser participant's datagrams reach it:
//! `DtlsServer::handle_datagram` on a fresh association (rtc-dtls record layer, fragment
//! reassembly, ClientHello and extension parsing, cookie exchange, alerts), with its timers
//! fired as virtual time passes. No panic; no event after `Closed`/`Failed` and no datagram or
//! timer either; at most one `Keyed`; every datagram refused once the association ended.
//!
//! Input: records `[len u16 BE][datagram]`; a trailing short record is fed as it is. Each
//! datagram arrives 300 ms after the previous one. The cookie is random per association, so
//! only the first flight of a captured handshake is answered for real (the seeds are the
//! client side of one, from `webrtc/tests/dtls.rs`, `write_fuzz_seeds`).
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use libfuzzer_sys::fuzz_target;
use webrtc_core::dtls::{Certificate, DtlsError, DtlsEvent, DtlsServer};

fn cert() -> &'static Certificate {
    static CERT: OnceLock<Certificate> = OnceLock::new();
    CERT.get_or_init(|| Certificate::generate().expect("certificate"))
}

fn datagrams(mut data: &[u8]) -> Vec<&[u8]> {
    let mut out = Vec::new();
    while !data.is_empty() {
        if data.len() < 2 {
            out.push(data);
            break;
        }
        let len = usize::from(u16::from_be_bytes([data[0], data[1]])).min(data.len() - 2);
        out.push(&data[2..2 + len]);
        data = &data[2 + len..];
    }
    out
}

fuzz_target!(|data: &[u8]| {
    let cert = cert();
    let start = Instant::now();
    let mut server =
        DtlsServer::new(cert, &cert.fingerprint_sha256(), start).expect("valid configuration");
    let mut ended = false;
    let mut keyed = 0;
    let mut now = start;
    for (i, datagram) in datagrams(data).into_iter().enumerate() {
        now += Duration::from_millis(300);
        if let Some(at) = server.poll_timeout() {
            assert!(!ended);
            if at <= now {
                server.handle_timeout(now);
            }
        }
        let result = server.handle_datagram(datagram, now);
        if ended {
            assert_eq!(result, Err(DtlsError::Ended));
        }
        if i == 3 {
            server.release_final_flight();
        }
        while let Some(event) = server.poll_event() {
            assert!(!ended, "{event:?} after the association ended");
            match event {
                DtlsEvent::Keyed(km) => {
                    keyed += 1;
                    assert_eq!(km.material.len(), km.profile.keying_material_len());
                }
                DtlsEvent::Closed | DtlsEvent::Failed(_) => ended = true,
                _ => {}
            }
        }
        while let Some(out) = server.poll_transmit() {
            assert!(!out.is_empty());
        }
        assert!(keyed <= 1);
        if ended {
            assert!(!server.is_connected());
            assert_eq!(server.poll_timeout(), None);
        }
    }
});
