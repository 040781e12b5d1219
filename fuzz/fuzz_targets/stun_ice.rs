#![no_main]
//! The STUN path of the WebRTC port exactly as the driver runs it on every datagram:
//! `mux::classify`, `ice::local_ufrag_of` (demultiplexing by our ufrag, unverified) and
//! `IceLite::handle_stun` (header and attribute parsing, FINGERPRINT, USERNAME,
//! MESSAGE-INTEGRITY, the response) for one ICE-lite session with fixed credentials: ours
//! `SrvUfrag` / `SrvPassword0123456789abc`, the browser's `RmBR` (those of the Chromium
//! checks in the seeds, so the fuzzer starts from requests that are answered).
//!
//! What must hold: no panic; a packet that gets a response is STUN, names our ufrag, and the
//! response verifies (Binding success, same transaction id, MESSAGE-INTEGRITY with our
//! password, FINGERPRINT, XOR-MAPPED-ADDRESS = the source); a refused packet changes nothing
//! (the session has a selected pair and a last check from an earlier, real nomination).
//!
//! Input: `[mode: u8][bytes]`. `mode & 2`: the source is IPv6, else IPv4. `mode & 1 == 0`: the
//! bytes are one datagram. `mode & 1 == 1`: the bytes are the attributes of a Binding request
//! that the target signs itself (MESSAGE-INTEGRITY with our password, FINGERPRINT), so that
//! mutated attributes get past the integrity check: when they contain no MESSAGE-INTEGRITY or
//! FINGERPRINT of their own and their first USERNAME is `SrvUfrag:RmBR`, the request must be
//! answered, nominated exactly when USE-CANDIDATE is present.
use std::net::SocketAddr;
use std::time::Duration;

use libfuzzer_sys::fuzz_target;
use rtc_stun::attributes::{
    ATTR_FINGERPRINT, ATTR_MESSAGE_INTEGRITY, ATTR_USERNAME, ATTR_USE_CANDIDATE,
};
use rtc_stun::crypto::providers::RingCrypto;
use rtc_stun::fingerprint::FINGERPRINT;
use rtc_stun::integrity::MessageIntegrity;
use rtc_stun::message::{Getter, Message, Setter, BINDING_SUCCESS, MAGIC_COOKIE};
use rtc_stun::xoraddr::XorMappedAddress;
use webrtc_core::ice::{local_ufrag_of, Credentials, IceLite};
use webrtc_core::mux::{classify, Kind};

const LOCAL_UFRAG: &str = "SrvUfrag";
const LOCAL_PWD: &str = "SrvPassword0123456789abc";
const TID: [u8; 12] = *b"fuzz-tid-123";
/// Chromium's nominating check (`webrtc/src/ice/tests.rs`), answered before the input.
const CHROMIUM_NOMINATION: &str = "000100542112a442587974634c63657a45314f660006000d53727655667261673a526d4252000000c0570004000003e7802a0008879730c2b059f97c00250000002400046e001eff00080014de4e558d15640c8fc19a14b2fdeb6011f37906cf80280004c5ba7f0c";

/// A session whose browser nominated `primary` at 1 s.
fn session(primary: SocketAddr) -> IceLite {
    let nomination: Vec<u8> = (0..CHROMIUM_NOMINATION.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&CHROMIUM_NOMINATION[i..i + 2], 16).unwrap())
        .collect();
    let mut ice = IceLite::new(
        Credentials {
            ufrag: LOCAL_UFRAG.into(),
            pwd: LOCAL_PWD.into(),
        },
        Credentials {
            ufrag: "RmBR".into(),
            pwd: "unused-browser-password".into(),
        },
    );
    ice.handle_stun(primary, &nomination, Duration::from_secs(1))
        .expect("the Chromium nomination is answered");
    ice
}

/// `attributes` behind a Binding request header, signed with our password; `None` when they
/// do not decode as attributes.
fn signed_request(attributes: &[u8]) -> Option<(Vec<u8>, Message)> {
    if attributes.len() % 4 != 0 || attributes.len() > 1000 {
        return None;
    }
    let mut raw = vec![0x00, 0x01];
    raw.extend_from_slice(&(attributes.len() as u16).to_be_bytes());
    raw.extend_from_slice(&MAGIC_COOKIE.to_be_bytes());
    raw.extend_from_slice(&TID);
    raw.extend_from_slice(attributes);
    let mut msg = Message::new();
    msg.unmarshal_binary(&raw).ok()?;
    let unsigned = msg.clone();
    MessageIntegrity::new_short_term_integrity_with_provider(LOCAL_PWD.into(), &RingCrypto)
        .add_to(&mut msg)
        .ok()?;
    FINGERPRINT.add_to(&mut msg).ok()?;
    Some((msg.raw, unsigned))
}

fn check_response(response: &[u8], request: &[u8], from: SocketAddr) {
    let mut msg = Message::new();
    msg.unmarshal_binary(response)
        .expect("our response decodes");
    assert_eq!(msg.typ, BINDING_SUCCESS);
    assert_eq!(msg.transaction_id.0[..], request[8..20]);
    FINGERPRINT.check(&msg).expect("our FINGERPRINT");
    MessageIntegrity::check(&mut msg, LOCAL_PWD.as_bytes(), &RingCrypto).expect("our integrity");
    let mut mapped = XorMappedAddress::default();
    mapped.get_from(&msg).expect("XOR-MAPPED-ADDRESS");
    assert_eq!(SocketAddr::new(mapped.ip, mapped.port), from);
}

fuzz_target!(|data: &[u8]| {
    let Some((&mode, bytes)) = data.split_first() else {
        return;
    };
    let from: SocketAddr = if mode & 2 != 0 {
        "[2001:db8::7]:50000".parse().unwrap()
    } else {
        "198.51.100.7:50000".parse().unwrap()
    };

    let (packet, expect) = if mode & 1 == 1 {
        let Some((packet, unsigned)) = signed_request(bytes) else {
            return;
        };
        let own_mac =
            unsigned.contains(ATTR_MESSAGE_INTEGRITY) || unsigned.contains(ATTR_FINGERPRINT);
        let ours = unsigned.get(ATTR_USERNAME).ok().as_deref() == Some(&b"SrvUfrag:RmBR"[..]);
        let expect = (!own_mac && ours).then(|| unsigned.contains(ATTR_USE_CANDIDATE));
        (packet, expect)
    } else {
        (bytes.to_vec(), None)
    };

    let kind = classify(&packet);
    let ufrag = local_ufrag_of(&packet);
    let primary: SocketAddr = "203.0.113.1:40000".parse().unwrap();
    let mut ice = session(primary);
    let before = (ice.selected(), ice.last_check());
    let now = Duration::from_millis(2500);
    match ice.handle_stun(from, &packet, now) {
        Ok(reply) if reply.response.is_empty() => {
            assert!(!reply.nominated);
            assert_eq!((ice.selected(), ice.last_check()), before);
            assert_eq!(expect, None, "a request we signed was not answered");
        }
        Ok(reply) => {
            assert_eq!(kind, Kind::Stun);
            assert_eq!(ufrag.as_deref(), Some(LOCAL_UFRAG));
            check_response(&reply.response, &packet, from);
            assert_eq!(ice.last_check(), Some(now));
            let selected = if reply.nominated { from } else { primary };
            assert_eq!(ice.selected(), Some(selected));
            if let Some(nominated) = expect {
                assert_eq!(reply.nominated, nominated);
            }
        }
        Err(e) => {
            assert_eq!((ice.selected(), ice.last_check()), before);
            assert_eq!(expect, None, "a request we signed was refused: {e}");
        }
    }
});
