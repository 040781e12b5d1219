//! Change tracking (`Core::take_changes`, `CoreState::apply` / `to_changes`): a replica fed
//! only the changes stays equal to the primary's state after every input, a core resumed
//! from the replica emits the same bytes as the primary, one message costs a bounded number
//! of changes whatever the number of calls, and dropping any change kind is noticed.

mod common;
use common::*;
use sip_core::state::{CoreState, StateChange};
use sip_core::{CallHandle, Core, EndReason, Error, Event, Transmit};
use std::time::Duration;

fn ms(v: u64) -> Duration {
    Duration::from_millis(v)
}

/// One input to a core (message, timer or application command).
#[derive(Clone, Debug)]
enum In {
    Udp(String),
    Tcp(u64, String),
    Closed(u64),
    Timeout,
    Accept(CallHandle, String),
    Reject(CallHandle, u16),
    Hangup(CallHandle),
}

type Output = (Vec<Transmit>, Vec<Event>, Option<Result<(), Error>>);

fn feed(core: &mut Core, input: &In, now: Duration) -> Output {
    let r = match input {
        In::Udp(m) => {
            core.handle_datagram(addr(ALICE), m.as_bytes(), now);
            None
        }
        In::Tcp(c, m) => {
            core.handle_stream_data(*c, addr(ALICE), m.as_bytes(), now);
            None
        }
        In::Closed(c) => {
            core.handle_stream_closed(*c, now);
            None
        }
        In::Timeout => {
            core.handle_timeout(now);
            None
        }
        In::Accept(call, sdp) => Some(core.accept(*call, sdp.clone(), now)),
        In::Reject(call, s) => Some(core.reject(*call, *s, now)),
        In::Hangup(call) => Some(core.hangup(*call, now)),
    };
    let mut tx = Vec::new();
    while let Some(t) = core.poll_transmit() {
        tx.push(t);
    }
    let mut ev = Vec::new();
    while let Some(e) = core.poll_event() {
        ev.push(e);
    }
    (tx, ev, r)
}

/// Which change kind a (deliberately broken) replication link loses.
#[derive(Clone, Copy, Debug, PartialEq)]
enum Kind {
    Globals,
    Dialog,
    DialogIndex,
    ServerTx,
    ClientTx,
}

fn kind(c: &StateChange) -> Kind {
    match c {
        StateChange::Globals { .. } => Kind::Globals,
        StateChange::Dialog { .. } => Kind::Dialog,
        StateChange::DialogIndex { .. } => Kind::DialogIndex,
        StateChange::ServerTx { .. } => Kind::ServerTx,
        StateChange::ClientTx { .. } => Kind::ClientTx,
    }
}

/// Primary core plus a replica state fed only `take_changes()`. Before each input a core is
/// resumed from the replica (`Core::from_state`) and given the same input as the primary.
struct Rig {
    core: Core,
    replica: CoreState,
    now: Duration,
    /// Lose every change of this kind (negative control).
    drop: Option<Kind>,
    /// Steps where replica != primary state, or the resumed core's output differed.
    mismatches: usize,
    steps: usize,
    changes: usize,
    max_changes: usize,
}

impl Rig {
    fn new(drop: Option<Kind>) -> Self {
        let mut core = Core::new(config(7));
        // The replica starts from a different seed: everything it needs comes as changes.
        let mut replica = CoreState::new(12345);
        for c in core.state().to_changes() {
            replica.apply(c);
        }
        core.take_changes();
        assert_eq!(&replica, core.state());
        Rig {
            core,
            replica,
            now: Duration::ZERO,
            drop,
            mismatches: 0,
            steps: 0,
            changes: 0,
            max_changes: 0,
        }
    }

    fn check(&mut self, ok: bool, what: &str) {
        if !ok {
            assert!(self.drop.is_some(), "step {}: {what}", self.steps);
            self.mismatches += 1;
        }
    }

    fn step(&mut self, input: In) -> (Vec<Msg>, Vec<Event>, Option<Result<(), Error>>) {
        self.steps += 1;
        // The backup, had the primary died right now, continues from the replica.
        let mut resumed = Core::from_state(config(99), self.replica.clone());
        let out = feed(&mut self.core, &input, self.now);
        let out_b = feed(&mut resumed, &input, self.now);
        let same_out = out == out_b && self.core.poll_timeout() == resumed.poll_timeout();
        self.check(same_out, &format!("resumed core diverged on {input:?}"));

        let changes = self.core.take_changes();
        assert!(
            self.core.take_changes().is_empty(),
            "a second take_changes right after the first is empty"
        );
        assert_eq!(self.core.state().pending_changes(), 0);
        // Each changed key appears once.
        let mut keys: Vec<String> = changes.iter().map(key_of).collect();
        keys.sort();
        let n = keys.len();
        keys.dedup();
        assert_eq!(keys.len(), n, "a key repeated in {changes:?}");
        self.changes += changes.len();
        self.max_changes = self.max_changes.max(changes.len());
        for c in changes {
            // Changes cross the wire as serde; the round trip loses nothing.
            let json = serde_json::to_string(&c).unwrap();
            let back: StateChange = serde_json::from_str(&json).unwrap();
            assert_eq!(back, c);
            if Some(kind(&c)) != self.drop {
                self.replica.apply(back);
            }
        }
        let same_state = &self.replica == self.core.state();
        self.check(same_state, &format!("replica != primary after {input:?}"));
        let (tx, ev, r) = out;
        (tx.iter().map(Msg::parse).collect(), ev, r)
    }

    fn udp(&mut self, m: &str) -> Vec<Msg> {
        self.step(In::Udp(m.to_string())).0
    }

    /// Fire every timer up to `t`; returns what was sent.
    fn advance_to(&mut self, t: Duration) -> Vec<Msg> {
        let mut sent = Vec::new();
        while let Some(at) = self.core.poll_timeout() {
            if at > t {
                break;
            }
            self.now = self.now.max(at);
            sent.extend(self.step(In::Timeout).0);
        }
        self.now = t;
        sent
    }

    fn events_of(&mut self, input: In) -> Vec<Event> {
        self.step(input).1
    }

    /// INVITE (new branch per call) -> IncomingCall.
    fn invite(&mut self, call_id: &str) -> CallHandle {
        let (out, ev, _) = self.step(In::Udp(invite(
            &format!("z9hG4bK-inv-{call_id}"),
            call_id,
            1,
            PCMU_OFFER,
        )));
        assert_eq!(out[0].status(), 100);
        match &ev[..] {
            [Event::IncomingCall { call, .. }] => *call,
            e => panic!("{e:?}"),
        }
    }

    /// Accept: returns our To-tag.
    fn accept(&mut self, call: CallHandle) -> String {
        let (out, _, r) = self.step(In::Accept(call, answer_for(PCMU_OFFER)));
        r.unwrap().unwrap();
        assert_eq!(out[0].status(), 200);
        out[0].to_tag()
    }

    fn ack(&mut self, call_id: &str, cseq: u32, tag: &str) -> Vec<Event> {
        let ack = in_dialog(
            "ACK",
            &format!("z9hG4bK-ack-{call_id}-{cseq}"),
            call_id,
            cseq,
            tag,
            "",
            "",
        );
        self.events_of(In::Udp(ack))
    }

    fn established(&mut self, call_id: &str) -> (CallHandle, String) {
        let call = self.invite(call_id);
        let tag = self.accept(call);
        assert_eq!(
            self.ack(call_id, 1, &tag),
            vec![Event::Confirmed { call, answer: None }]
        );
        (call, tag)
    }
}

fn key_of(c: &StateChange) -> String {
    match c {
        StateChange::Globals { .. } => "g".into(),
        StateChange::Dialog { call, .. } => format!("d{}", call.0),
        StateChange::DialogIndex { key, .. } => format!("i{key}"),
        StateChange::ServerTx { key, .. } => format!("s{key}"),
        StateChange::ClientTx { branch, .. } => format!("c{branch}"),
    }
}

fn cancel(call_id: &str, branch: &str) -> String {
    with_len(
        &format!(
            "CANCEL sip:room1@198.18.0.1:5060 SIP/2.0\r\n\
Via: SIP/2.0/UDP 198.18.0.10:5061;branch={branch}\r\n\
From: sipp <sip:sipp@198.18.0.10:5061>;tag=abc123\r\n\
To: room1 <sip:room1@198.18.0.1:5060>\r\n\
Call-ID: {call_id}\r\nCSeq: 1 CANCEL\r\nMax-Forwards: 70\r\n"
        ),
        "",
    )
}

fn options(branch: &str) -> String {
    with_len(
        &format!(
            "OPTIONS sip:room1@198.18.0.1 SIP/2.0\r\nVia: SIP/2.0/UDP 198.18.0.10:5061;branch={branch}\r\n\
From: <sip:a@b>;tag=x\r\nTo: <sip:room1@198.18.0.1>\r\nCall-ID: opt-{branch}\r\nCSeq: 1 OPTIONS\r\n"
        ),
        "",
    )
}

fn register() -> String {
    with_len(
        "REGISTER sip:198.18.0.1 SIP/2.0\r\n\
Via: SIP/2.0/UDP 198.18.0.10:5061;branch=z9hG4bK-reg;rport\r\n\
From: <sip:alice@198.18.0.1>;tag=r1\r\nTo: <sip:alice@198.18.0.1>\r\n\
Call-ID: reg-1\r\nCSeq: 1 REGISTER\r\nMax-Forwards: 70\r\n\
Contact: <sip:alice@198.18.0.10:5061;transport=udp>;expires=7200\r\nExpires: 600\r\n",
        "",
    )
}

/// The 200 a client sends to our BYE.
fn ok_to_bye(bye: &Msg, call_id: &str) -> String {
    with_len(
        &format!(
            "SIP/2.0 200 OK\r\nVia: {}\r\nFrom: {}\r\nTo: {}\r\nCall-ID: {call_id}\r\nCSeq: {}\r\n",
            bye.header("via").unwrap(),
            bye.header("from").unwrap(),
            bye.header("to").unwrap(),
            bye.cseq()
        ),
        "",
    )
}

/// Every flow the core knows, with the rig checking after every input.
fn scenario(r: &mut Rig) {
    // Malformed input first: counters only, or a 400 (which draws a tag from the generator).
    r.udp("\x00\x01garbage");
    let good = invite("z9hG4bK-m1", "call-m", 1, PCMU_OFFER);
    let out = r.udp(&good.replace("CSeq: 1 INVITE", "CSeq: abc INVITE"));
    assert_eq!(out[0].status(), 400);
    r.udp(&good.replace("Call-ID: call-m\r\n", ""));
    let out = r.udp(&good.replace("INVITE sip:room1@198.18.0.1:5060", "INVITE tel:+123"));
    assert_eq!(out[0].status(), 416);
    let big = good.replace(
        "Max-Forwards: 70\r\n",
        &format!("Max-Forwards: 70\r\nX-Pad: {}\r\n", "a".repeat(9000)),
    );
    assert_eq!(r.udp(&big)[0].status(), 513);
    // Out-of-dialog requests.
    assert_eq!(r.udp(&options("z9hG4bK-o1"))[0].status(), 200);
    assert_eq!(r.udp(&register())[0].status(), 200);
    assert_eq!(r.udp(&register())[0].status(), 200); // retransmission
    let sub = options("z9hG4bK-s1").replace("OPTIONS", "SUBSCRIBE");
    assert_eq!(r.udp(&sub)[0].status(), 405);
    let req = options("z9hG4bK-rq").replace("CSeq", "Require: 100rel\r\nCSeq");
    assert_eq!(r.udp(&req)[0].status(), 420);
    let bye = in_dialog("BYE", "z9hG4bK-nb", "nosuch", 2, "nosuch", "", "");
    assert_eq!(r.udp(&bye)[0].status(), 481);

    // Call A: INVITE, retransmitted INVITE, accept, 200 retransmitted by timer, ACK, ACK
    // retransmission, re-INVITE (hold) answered and ACKed, INFO, in-dialog OPTIONS.
    let a = r.invite("call-a");
    let inv_a = invite("z9hG4bK-inv-call-a", "call-a", 1, PCMU_OFFER);
    assert_eq!(r.udp(&inv_a)[0].status(), 100);
    let tag_a = r.accept(a);
    assert_eq!(r.udp(&inv_a)[0].status(), 200);
    r.now = ms(100);
    let sent = r.advance_to(ms(600));
    assert_eq!(sent.len(), 1);
    assert_eq!(
        r.ack("call-a", 1, &tag_a),
        vec![Event::Confirmed {
            call: a,
            answer: None
        }]
    );
    assert!(r.ack("call-a", 1, &tag_a).is_empty());
    let hold = PCMU_OFFER.replace(
        "a=rtpmap:0 PCMU/8000\r\n",
        "a=rtpmap:0 PCMU/8000\r\na=sendonly\r\n",
    );
    let reinv = in_dialog(
        "INVITE",
        "z9hG4bK-re-a",
        "call-a",
        2,
        &tag_a,
        "Content-Type: application/sdp\r\n",
        &hold,
    );
    let (out, ev, _) = r.step(In::Udp(reinv));
    assert_eq!(out[0].status(), 100);
    assert!(matches!(&ev[..], [Event::ReInvite { call, .. }] if *call == a));
    let (out, _, res) = r.step(In::Accept(a, answer_for(&hold)));
    res.unwrap().unwrap();
    assert_eq!(out[0].status(), 200);
    r.ack("call-a", 2, &tag_a);
    let info = in_dialog(
        "INFO",
        "z9hG4bK-info-a",
        "call-a",
        3,
        &tag_a,
        "Content-Type: application/dtmf-relay\r\n",
        "Signal=5\r\nDuration=160\r\n",
    );
    let (out, ev, _) = r.step(In::Udp(info));
    assert_eq!(out[0].status(), 200);
    assert_eq!(
        ev,
        vec![Event::InfoDtmf {
            call: a,
            digit: '5'
        }]
    );
    let opt = in_dialog("OPTIONS", "z9hG4bK-opt-a", "call-a", 4, &tag_a, "", "");
    assert_eq!(r.udp(&opt)[0].status(), 200);
    // Lower CSeq in the dialog: 500.
    let old = in_dialog("OPTIONS", "z9hG4bK-opt-a2", "call-a", 4, &tag_a, "", "");
    assert_eq!(r.udp(&old)[0].status(), 500);

    // Call B: BYE from the client, then its retransmission.
    let (b, tag_b) = r.established("call-b");
    let bye_b = in_dialog("BYE", "z9hG4bK-bye-b", "call-b", 2, &tag_b, "", "");
    let (out, ev, _) = r.step(In::Udp(bye_b.clone()));
    assert_eq!(out[0].status(), 200);
    assert_eq!(
        ev,
        vec![Event::CallEnded {
            call: b,
            reason: EndReason::ByeReceived
        }]
    );
    assert_eq!(r.udp(&bye_b)[0].status(), 200);

    // Call C: we hang up; BYE retransmitted by timer E; the client's 200 ends it.
    let (c, _) = r.established("call-c");
    r.now = ms(1000);
    let (out, _, res) = r.step(In::Hangup(c));
    res.unwrap().unwrap();
    let bye = out[0].clone();
    assert!(bye.start.starts_with("BYE "));
    let sent = r.advance_to(ms(1600));
    assert_eq!(sent.len(), 1);
    let ev = r.events_of(In::Udp(ok_to_bye(&bye, "call-c")));
    assert_eq!(
        ev,
        vec![Event::CallEnded {
            call: c,
            reason: EndReason::ByeSent
        }]
    );

    // Call D: CANCEL before the answer, then the ACK of the 487.
    let d = r.invite("call-d");
    let (out, ev, _) = r.step(In::Udp(cancel("call-d", "z9hG4bK-inv-call-d")));
    assert_eq!(out.len(), 2);
    assert_eq!(out[1].status(), 487);
    assert_eq!(
        ev,
        vec![Event::CallEnded {
            call: d,
            reason: EndReason::Cancelled
        }]
    );
    let ack = in_dialog(
        "ACK",
        "z9hG4bK-inv-call-d",
        "call-d",
        1,
        &out[1].to_tag(),
        "",
        "",
    );
    r.udp(&ack);

    // Call E: rejected, ACKed.
    let e = r.invite("call-e");
    let (out, _, res) = r.step(In::Reject(e, 486));
    res.unwrap().unwrap();
    assert_eq!(out[0].status(), 486);
    let ack = in_dialog(
        "ACK",
        "z9hG4bK-inv-call-e",
        "call-e",
        1,
        &out[0].to_tag(),
        "",
        "",
    );
    r.udp(&ack);

    // Call T over TCP, then the connection closes.
    let tcp_inv =
        invite("z9hG4bK-tcp1", "call-t", 1, PCMU_OFFER).replace("SIP/2.0/UDP", "SIP/2.0/TCP");
    let (_, ev, _) = r.step(In::Tcp(3, tcp_inv));
    let t = match &ev[..] {
        [Event::IncomingCall { call, .. }] => *call,
        e => panic!("{e:?}"),
    };
    r.accept(t);
    let ev = r.events_of(In::Closed(3));
    assert_eq!(
        ev,
        vec![Event::CallEnded {
            call: t,
            reason: EndReason::TransportClosed
        }]
    );

    // Call F: accepted but never ACKed: timer H ends it, we may still BYE, whose
    // transaction then times out (timer F).
    let f = r.invite("call-f");
    r.accept(f);
    let base = r.now;
    r.advance_to(base + ms(33_000));
    assert!(r.core.calls().iter().all(|ci| ci.call != f));
    let (out, _, res) = r.step(In::Hangup(f));
    res.unwrap().unwrap();
    assert!(out[0].start.starts_with("BYE "));
    let base = r.now;
    r.advance_to(base + ms(33_000));
    assert!(r.core.state().client_txs.is_empty());

    // Everything else expires; only call A remains.
    let base = r.now;
    r.advance_to(base + ms(120_000));
    assert_eq!(r.core.calls().len(), 1);
    assert_eq!(r.core.state().dialogs.len(), 1);
    assert!(r.core.state().server_txs.is_empty());
    // A timer call with nothing due changes nothing.
    let before = r.changes;
    r.step(In::Timeout);
    assert_eq!(r.changes, before);
}

#[test]
fn replica_follows_primary_through_every_flow() {
    let mut r = Rig::new(None);
    scenario(&mut r);
    assert_eq!(r.mismatches, 0);
    eprintln!(
        "flows: {} steps, {} changes, at most {} per step",
        r.steps, r.changes, r.max_changes
    );
    assert!(r.steps > 60, "{} steps", r.steps);
    // The replica, serialized like a state snapshot, is byte-identical to the primary's.
    assert_eq!(
        serde_json::to_string(&r.replica).unwrap(),
        serde_json::to_string(r.core.state()).unwrap()
    );
    // A replica rebuilt from to_changes of the final state is equal too.
    let mut fresh = CoreState::new(0);
    for c in r.core.state().to_changes() {
        fresh.apply(c);
    }
    assert_eq!(&fresh, r.core.state());
}

/// Negative control: a link that loses any one kind of change is caught by the checks above.
#[test]
fn losing_any_change_kind_is_detected() {
    for k in [
        Kind::Globals,
        Kind::Dialog,
        Kind::DialogIndex,
        Kind::ServerTx,
        Kind::ClientTx,
    ] {
        let mut r = Rig::new(Some(k));
        scenario(&mut r);
        assert!(r.mismatches > 0, "dropping {k:?} went unnoticed");
    }
}

/// A primary with `n` established calls (their INVITE transactions still absorbing, so the
/// timer scan sees `n` transactions), plus one call `x` accepted and not yet ACKed; changes
/// drained.
fn loaded(n: usize) -> (Core, CoreState, Duration, Vec<(CallHandle, String)>, String) {
    let mut h = Harness::new();
    let mut calls = Vec::new();
    for i in 0..n {
        let id = format!("load-{i}");
        h.udp(ALICE, &invite(&format!("z9hG4bK-l{i}"), &id, 1, PCMU_OFFER));
        h.out();
        let call = match h.events().pop() {
            Some(Event::IncomingCall { call, .. }) => call,
            e => panic!("{e:?}"),
        };
        h.core.accept(call, answer_for(PCMU_OFFER), h.now).unwrap();
        let tag = h.out().pop().unwrap().to_tag();
        h.udp(
            ALICE,
            &in_dialog("ACK", &format!("z9hG4bK-la{i}"), &id, 1, &tag, "", ""),
        );
        calls.push((call, tag));
    }
    h.udp(ALICE, &invite("z9hG4bK-x", "call-x", 1, PCMU_OFFER));
    h.out();
    let x = match h.events().pop() {
        Some(Event::IncomingCall { call, .. }) => call,
        e => panic!("{e:?}"),
    };
    h.core.accept(x, answer_for(PCMU_OFFER), h.now).unwrap();
    let tag_x = h.out().pop().unwrap().to_tag();
    h.events();
    let mut core = h.core;
    core.take_changes();
    let replica = core.state().clone();
    assert_eq!(core.state().dialogs.len(), n + 1);
    assert_eq!(core.state().server_txs.len(), n + 1);
    (core, replica, h.now, calls, tag_x)
}

/// Number of changes of each step of a fixed sequence on a primary with `n` calls.
fn step_costs(n: usize) -> Vec<(&'static str, usize)> {
    let (mut core, mut replica, now, calls, tag_x) = loaded(n);
    let mut costs = Vec::new();
    let mut step = |name: &'static str, core: &mut Core, f: &dyn Fn(&mut Core)| {
        f(core);
        while core.poll_transmit().is_some() {}
        while core.poll_event().is_some() {}
        let ch = core.take_changes();
        costs.push((name, ch.len()));
        for c in ch {
            replica.apply(c);
        }
        assert_eq!(&replica, core.state(), "after {name}");
    };
    let t = now + ms(500);
    step("timer (2xx retransmission)", &mut core, &|c| {
        assert_eq!(c.poll_timeout(), Some(t));
        c.handle_timeout(t)
    });
    let ack = in_dialog("ACK", "z9hG4bK-ackx", "call-x", 1, &tag_x, "", "");
    step("ACK", &mut core, &|c| {
        c.handle_datagram(addr(ALICE), ack.as_bytes(), t)
    });
    let opt = options("z9hG4bK-o");
    step("OPTIONS", &mut core, &|c| {
        c.handle_datagram(addr(ALICE), opt.as_bytes(), t)
    });
    let (c0, tag0) = &calls[0];
    let bye = in_dialog("BYE", "z9hG4bK-b0", "load-0", 2, tag0, "", "");
    step("BYE from client", &mut core, &|c| {
        c.handle_datagram(addr(ALICE), bye.as_bytes(), t)
    });
    assert!(core.state().dialogs.get(c0).is_none());
    let (c1, _) = calls[1];
    step("hangup", &mut core, &|c| c.hangup(c1, t).unwrap());
    let t2 = t + ms(500);
    step("timer (BYE retransmission)", &mut core, &|c| {
        assert_eq!(c.poll_timeout(), Some(t2));
        c.handle_timeout(t2)
    });
    let branch = core.state().client_txs.keys().next().unwrap().clone();
    let dlg = core.state().dialogs.get(&c1).unwrap().clone();
    let ok = with_len(
        &format!(
            "SIP/2.0 200 OK\r\nVia: SIP/2.0/UDP 198.18.0.1:5060;branch={branch};rport\r\n\
From: {};tag={}\r\nTo: {}\r\nCall-ID: load-1\r\nCSeq: 1 BYE\r\n",
            dlg.local_party, dlg.local_tag, dlg.remote_party
        ),
        "",
    );
    step("200 to our BYE", &mut core, &|c| {
        c.handle_datagram(addr(ALICE), ok.as_bytes(), t2)
    });
    assert!(core.state().dialogs.get(&c1).is_none());
    step("poll_timeout/calls/state (read-only)", &mut core, &|c| {
        c.poll_timeout();
        c.calls();
        c.state();
    });
    costs
}

#[test]
fn one_message_costs_the_same_few_changes_at_10_and_500_calls() {
    let small = step_costs(10);
    let large = step_costs(500);
    eprintln!("changes per step, 10 calls: {small:?}");
    eprintln!("changes per step, 500 calls: {large:?}");
    assert_eq!(small, large);
    for (name, n) in &large {
        assert!(*n <= 8, "{name}: {n} changes");
    }
    assert_eq!(large.last().unwrap().1, 0, "read-only calls change nothing");
    assert!(large
        .iter()
        .all(|(name, n)| *n > 0 || name.contains("read-only")));
}

#[test]
fn tracking_off_records_nothing_and_from_state_starts_clean() {
    let (mut core, _, now, calls, _) = loaded(3);
    core.set_change_tracking(false);
    core.hangup(calls[0].0, now).unwrap();
    assert_eq!(core.state().pending_changes(), 0);
    assert!(core.take_changes().is_empty());
    core.set_change_tracking(true);
    core.hangup(calls[1].0, now).unwrap();
    assert!(core.state().pending_changes() > 0);
    // A resumed core forgets what its state had recorded; only the globals come first.
    let resumed_state = core.state().clone();
    let mut resumed = Core::from_state(config(1), resumed_state);
    assert_eq!(resumed.state().pending_changes(), 0);
    let ch = resumed.take_changes();
    assert!(matches!(&ch[..], [StateChange::Globals { .. }]), "{ch:?}");
}

#[test]
fn change_call_groups_upserts_and_deletes_by_call() {
    let mut r = Rig::new(None);
    let (b, tag_b) = r.established("call-g");
    // End the call: every change of the BYE but the globals belongs to the call, the
    // deletes of its dialog and index entry included.
    let bye = in_dialog("BYE", "z9hG4bK-bye-g", "call-g", 2, &tag_b, "", "");
    r.core.handle_datagram(addr(ALICE), bye.as_bytes(), r.now);
    let ch = r.core.take_changes();
    let deletes: Vec<&StateChange> = ch
        .iter()
        .filter(|c| {
            matches!(
                c,
                StateChange::Dialog { dialog: None, .. }
                    | StateChange::DialogIndex { present: false, .. }
            )
        })
        .collect();
    assert_eq!(deletes.len(), 2, "{ch:?}");
    assert!(deletes.iter().all(|c| c.call() == Some(b)));
    for c in &ch {
        match c {
            StateChange::Globals { .. } => assert_eq!(c.call(), None),
            _ => assert_eq!(c.call(), Some(b), "{c:?}"),
        }
    }
    // An out-of-dialog transaction belongs to no call.
    r.core
        .handle_datagram(addr(ALICE), options("z9hG4bK-og").as_bytes(), r.now);
    let ch = r.core.take_changes();
    assert!(ch.iter().all(|c| c.call().is_none()), "{ch:?}");
}
