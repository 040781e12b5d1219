//! Which TCP connections the core needs kept open (`Core::streams_in_use`): the ones a call or
//! an unanswered request lives on, in virtual time. A driver closes the other idle ones.

mod common;
use common::*;
use sip_core::{Event, Transport};
use std::collections::BTreeSet;
use std::time::Duration;

fn tcp(m: &str) -> String {
    m.replace("SIP/2.0/UDP", "SIP/2.0/TCP")
}

fn set(c: &[u64]) -> BTreeSet<u64> {
    c.iter().copied().collect()
}

#[test]
fn a_call_and_unanswered_requests_hold_their_connection() {
    let mut h = Harness::new();
    assert!(h.core.streams_in_use().is_empty());
    // An OPTIONS is answered at once: nothing holds connection 4 afterwards.
    let opt = in_dialog("OPTIONS", "z9hG4bK-o", "opt-1", 1, "x", "", "").replace(";tag=x", "");
    h.tcp(4, ALICE, tcp(&opt).as_bytes());
    assert_eq!(h.out().pop().unwrap().status(), 200);
    assert!(h.core.streams_in_use().is_empty(), "answered: not in use");
    // A bare connection (no message yet) is not in use either.
    h.tcp(5, ALICE, b"INVITE sip:room1@198.18.0.1 SIP/2.0\r\n");
    assert!(h.core.streams_in_use().is_empty());

    // An INVITE on 9 not yet answered: in use (the answer goes out on it).
    h.tcp(
        9,
        ALICE,
        tcp(&invite("z9hG4bK-i", "c9", 1, PCMU_OFFER)).as_bytes(),
    );
    h.out();
    let call = match h.events().pop() {
        Some(Event::IncomingCall {
            call, transport, ..
        }) => {
            assert_eq!(transport, Transport::Tcp(9));
            call
        }
        e => panic!("{e:?}"),
    };
    assert_eq!(h.core.streams_in_use(), set(&[9]));
    h.core.accept(call, answer_for(PCMU_OFFER), h.now).unwrap();
    let tag = h.out().pop().unwrap().to_tag();
    h.tcp(
        9,
        ALICE,
        tcp(&in_dialog("ACK", "z9hG4bK-a", "c9", 1, &tag, "", "")).as_bytes(),
    );
    // Established and quiet for an hour: still in use.
    h.advance_to(Duration::from_secs(3600));
    assert_eq!(h.core.streams_in_use(), set(&[9]));

    // Our BYE: in use until it is answered, then free.
    h.core.hangup(call, h.now).unwrap();
    let bye = h.out().pop().unwrap();
    assert_eq!(bye.transport, Transport::Tcp(9));
    assert_eq!(
        h.core.streams_in_use(),
        set(&[9]),
        "BYE awaiting its answer"
    );
    let ok = format!(
        "SIP/2.0 200 OK\r\nVia: {}\r\nFrom: {}\r\nTo: {}\r\nCall-ID: {}\r\nCSeq: {}\r\nContent-Length: 0\r\n\r\n",
        bye.header("via").unwrap(),
        bye.header("from").unwrap(),
        bye.header("to").unwrap(),
        bye.header("call-id").unwrap(),
        bye.cseq(),
    );
    h.tcp(9, ALICE, ok.as_bytes());
    assert!(
        h.core.streams_in_use().is_empty(),
        "{:?}",
        h.core.streams_in_use()
    );
}
