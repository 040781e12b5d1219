use std::net::SocketAddr;
use std::time::Duration;

use rtc_stun::attributes::{
    AttrType, RawAttribute, ATTR_FINGERPRINT, ATTR_ICE_CONTROLLING, ATTR_MESSAGE_INTEGRITY,
    ATTR_PRIORITY, ATTR_USERNAME, ATTR_USE_CANDIDATE, ATTR_XORMAPPED_ADDRESS,
};
use rtc_stun::fingerprint::FINGERPRINT;
use rtc_stun::integrity::MessageIntegrity;
use rtc_stun::message::{
    Getter, Message, MessageType, Setter, TransactionId, BINDING_REQUEST, BINDING_SUCCESS,
    CLASS_INDICATION, METHOD_ALLOCATE, METHOD_BINDING,
};
use rtc_stun::textattrs::TextAttribute;
use rtc_stun::xoraddr::XorMappedAddress;

use super::*;

const LOCAL_UFRAG: &str = "SrvUfrag";
const LOCAL_PWD: &str = "SrvPassword0123456789abc";
const REMOTE_UFRAG: &str = "RmBR";
const TID: [u8; 12] = *b"0123456789ab";

/// GOOG-NETWORK-INFO, which Chromium puts in every check.
const ATTR_GOOG_NETWORK_INFO: AttrType = AttrType(0xc057);

fn creds(ufrag: &str, pwd: &str) -> Credentials {
    Credentials {
        ufrag: ufrag.into(),
        pwd: pwd.into(),
    }
}

fn ice() -> IceLite {
    IceLite::new(
        creds(LOCAL_UFRAG, LOCAL_PWD),
        creds(REMOTE_UFRAG, "the browser's own password, unused here"),
    )
}

fn addr(s: &str) -> SocketAddr {
    s.parse().expect("test address")
}

fn hex(s: &str) -> Vec<u8> {
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&s[i..i + 2], 16).expect("hex"))
        .collect()
}

/// A Binding request laid out as Chromium sends it: USERNAME, GOOG-NETWORK-INFO,
/// ICE-CONTROLLING, [USE-CANDIDATE,] PRIORITY, MESSAGE-INTEGRITY, FINGERPRINT.
struct Request<'a> {
    username: Option<&'a str>,
    pwd: Option<&'a str>,
    use_candidate: bool,
    fingerprint: bool,
    tid: [u8; 12],
}

impl Default for Request<'_> {
    fn default() -> Self {
        Request {
            username: Some("SrvUfrag:RmBR"),
            pwd: Some(LOCAL_PWD),
            use_candidate: false,
            fingerprint: true,
            tid: TID,
        }
    }
}

impl Request<'_> {
    fn build(&self) -> Vec<u8> {
        let raw = |typ, value: &[u8]| -> Box<dyn Setter> {
            Box::new(RawAttribute {
                typ,
                length: 0,
                value: value.to_vec(),
            })
        };
        let mut setters: Vec<Box<dyn Setter>> =
            vec![Box::new(BINDING_REQUEST), Box::new(TransactionId(self.tid))];
        if let Some(username) = self.username {
            setters.push(Box::new(TextAttribute::new(ATTR_USERNAME, username.into())));
        }
        setters.push(raw(ATTR_GOOG_NETWORK_INFO, &[0, 0, 0x03, 0xe7]));
        setters.push(raw(
            ATTR_ICE_CONTROLLING,
            &[0x87, 0x97, 0x30, 0xc2, 1, 2, 3, 4],
        ));
        if self.use_candidate {
            setters.push(raw(ATTR_USE_CANDIDATE, &[]));
        }
        setters.push(raw(ATTR_PRIORITY, &[0x6e, 0x00, 0x1e, 0xff]));
        if let Some(pwd) = self.pwd {
            setters.push(Box::new(
                MessageIntegrity::new_short_term_integrity_with_provider(pwd.into(), &CRYPTO),
            ));
        }
        if self.fingerprint {
            setters.push(Box::new(FINGERPRINT));
        }
        let mut msg = Message::new();
        msg.build(&setters).expect("test request encodes");
        msg.raw
    }
}

/// Checks `response` the way the browser does: a Binding success for `tid`, FINGERPRINT
/// last and right, MESSAGE-INTEGRITY with `pwd`, XOR-MAPPED-ADDRESS `mapped`.
fn assert_valid_response(response: &[u8], pwd: &str, tid: [u8; 12], mapped: SocketAddr) {
    let mut msg = Message::new();
    msg.unmarshal_binary(response).expect("response decodes");
    assert_eq!(msg.typ, BINDING_SUCCESS);
    assert_eq!(msg.transaction_id.0, tid);
    let types: Vec<AttrType> = msg.attributes.0.iter().map(|a| a.typ).collect();
    assert_eq!(
        types[types.len() - 2..],
        [ATTR_MESSAGE_INTEGRITY, ATTR_FINGERPRINT]
    );
    FINGERPRINT.check(&msg).expect("fingerprint");
    MessageIntegrity::check(&mut msg, pwd.as_bytes(), &CRYPTO).expect("integrity");
    let mut xor = XorMappedAddress::default();
    xor.get_from(&msg).expect("XOR-MAPPED-ADDRESS");
    assert_eq!(SocketAddr::new(xor.ip, xor.port), mapped);
}

/// The value of the first attribute of type `typ` in an encoded message.
fn attribute(packet: &[u8], typ: AttrType) -> Vec<u8> {
    let mut msg = Message::new();
    msg.unmarshal_binary(packet).expect("decodes");
    msg.get(typ).expect("attribute present")
}

#[test]
fn authentic_request_is_answered() {
    for from in ["198.51.100.7:50123", "[2001:db8::7]:61000"] {
        let from = addr(from);
        let mut ice = ice();
        let request = Request::default().build();
        let reply = ice
            .handle_stun(from, &request, Duration::from_secs(3))
            .expect("answered");
        assert!(!reply.nominated);
        assert_valid_response(&reply.response, LOCAL_PWD, TID, from);
        assert_eq!(ice.last_check(), Some(Duration::from_secs(3)));
        assert_eq!(ice.selected(), None, "not nominated");
    }
}

#[test]
fn the_response_is_not_keyed_with_the_remote_password() {
    let mut ice = ice();
    let reply = ice
        .handle_stun(
            addr("198.51.100.7:1"),
            &Request::default().build(),
            Duration::ZERO,
        )
        .expect("answered");
    let mut msg = Message::new();
    msg.unmarshal_binary(&reply.response).expect("decodes");
    let remote_pwd = ice.remote().pwd.clone();
    assert!(MessageIntegrity::check(&mut msg, remote_pwd.as_bytes(), &CRYPTO).is_err());
}

#[test]
fn request_without_fingerprint_is_answered_with_one() {
    let from = addr("198.51.100.7:50123");
    let request = Request {
        fingerprint: false,
        ..Request::default()
    }
    .build();
    let reply = ice()
        .handle_stun(from, &request, Duration::ZERO)
        .expect("answered");
    assert_valid_response(&reply.response, LOCAL_PWD, TID, from);
}

#[test]
fn ipv4_mapped_source_is_reported_as_ipv4() {
    // A dual-stack socket reports an IPv4 browser as ::ffff:a.b.c.d.
    let from = addr("[::ffff:198.51.100.7]:50123");
    let mut ice = ice();
    let request = Request {
        use_candidate: true,
        ..Request::default()
    }
    .build();
    let reply = ice
        .handle_stun(from, &request, Duration::ZERO)
        .expect("answered");
    assert_valid_response(&reply.response, LOCAL_PWD, TID, addr("198.51.100.7:50123"));
    assert_eq!(ice.selected(), Some(from), "sent to as the socket named it");
}

#[test]
fn wrong_password_gets_no_answer_and_changes_nothing() {
    let mut ice = ice();
    for pwd in [
        "SrvPassword0123456789abd",
        "",
        "the browser's own password, unused here",
    ] {
        let request = Request {
            pwd: Some(pwd),
            use_candidate: true,
            ..Request::default()
        }
        .build();
        let result = ice.handle_stun(addr("203.0.113.9:4000"), &request, Duration::from_secs(1));
        assert_eq!(result, Err(IceError::BadIntegrity), "pwd {pwd:?}");
    }
    assert_eq!(ice.selected(), None);
    assert_eq!(ice.last_check(), None);
}

#[test]
fn wrong_username_is_refused() {
    let mut ice = ice();
    for username in [
        Some("RmBR:SrvUfrag"),   // the browser's view, reversed
        Some("SrvUfrag:RmBX"),   // another browser session
        Some("OtherUfr:RmBR"),   // another of our sessions
        Some("SrvUfrag:RmBR:x"), // trailing junk
        Some("SrvUfrag:"),
        Some("SrvUfrag"),
        Some("SrvUfragXRmBR"),
        None,
    ] {
        let request = Request {
            username,
            use_candidate: true,
            ..Request::default()
        }
        .build();
        let result = ice.handle_stun(addr("203.0.113.9:4000"), &request, Duration::ZERO);
        assert_eq!(result, Err(IceError::UnknownUsername), "{username:?}");
    }
    assert_eq!(ice.selected(), None);
    assert_eq!(ice.last_check(), None);
}

#[test]
fn request_without_integrity_is_refused() {
    let request = Request {
        pwd: None,
        use_candidate: true,
        ..Request::default()
    }
    .build();
    let mut ice = ice();
    let result = ice.handle_stun(addr("203.0.113.9:4000"), &request, Duration::ZERO);
    assert_eq!(result, Err(IceError::MissingIntegrity));
    assert_eq!(ice.selected(), None);
}

#[test]
fn altered_bytes_are_refused() {
    let with_fp = Request::default().build();
    let without_fp = Request {
        fingerprint: false,
        ..Request::default()
    }
    .build();
    let mut ice = ice();
    // The last byte of the FINGERPRINT value, then a byte of PRIORITY (covered by both).
    let mut bad_fp = with_fp.clone();
    *bad_fp.last_mut().expect("non-empty") ^= 1;
    assert_eq!(
        ice.handle_stun(addr("203.0.113.9:4000"), &bad_fp, Duration::ZERO),
        Err(IceError::BadFingerprint)
    );
    let priority = 20 + 4 + 16 + 8 + 12 + 4; // header, USERNAME, GOOG-NETWORK-INFO, ICE-CONTROLLING
    for (packet, expected) in [
        (with_fp, IceError::BadFingerprint),
        (without_fp, IceError::BadIntegrity),
    ] {
        let mut packet = packet;
        assert_eq!(
            attribute(&packet, ATTR_PRIORITY),
            [0x6e, 0x00, 0x1e, 0xff],
            "offset of PRIORITY"
        );
        packet[priority] ^= 0x80;
        assert_eq!(
            ice.handle_stun(addr("203.0.113.9:4000"), &packet, Duration::ZERO),
            Err(expected)
        );
    }
    assert_eq!(ice.last_check(), None);
}

#[test]
fn fingerprint_must_be_last() {
    // A correct FINGERPRINT followed by another attribute.
    let mut packet = Request::default().build();
    packet.extend_from_slice(&[0x80, 0x22, 0x00, 0x00]); // empty SOFTWARE
    let length = u16::from_be_bytes([packet[2], packet[3]]) + 4;
    packet[2..4].copy_from_slice(&length.to_be_bytes());
    assert_eq!(
        ice().handle_stun(addr("203.0.113.9:4000"), &packet, Duration::ZERO),
        Err(IceError::BadFingerprint)
    );
}

#[test]
fn use_candidate_after_integrity_does_not_nominate() {
    // Someone who saw a valid, non-nominating check appends USE-CANDIDATE after
    // MESSAGE-INTEGRITY (which does not cover it) to move media to themselves.
    let mut packet = Request {
        fingerprint: false,
        ..Request::default()
    }
    .build();
    packet.extend_from_slice(&[0x00, 0x25, 0x00, 0x00]);
    let length = u16::from_be_bytes([packet[2], packet[3]]) + 4;
    packet[2..4].copy_from_slice(&length.to_be_bytes());
    let mut ice = ice();
    let reply = ice
        .handle_stun(addr("203.0.113.9:4000"), &packet, Duration::ZERO)
        .expect("the signed part is authentic");
    assert!(!reply.nominated);
    assert_eq!(ice.selected(), None);
}

#[test]
fn use_candidate_selects_and_a_later_nomination_moves_it() {
    let mut ice = ice();
    let first = addr("198.51.100.7:50123");
    let second = addr("198.51.100.8:40000");
    let nominate = |tid| {
        Request {
            use_candidate: true,
            tid,
            ..Request::default()
        }
        .build()
    };

    let reply = ice
        .handle_stun(first, &nominate(TID), Duration::from_millis(100))
        .expect("answered");
    assert!(reply.nominated);
    assert_eq!(ice.selected(), Some(first));

    // A valid but not nominating check from elsewhere is answered, moves nothing.
    let other = Request {
        tid: *b"not-nominate",
        ..Request::default()
    }
    .build();
    let reply = ice
        .handle_stun(second, &other, Duration::from_millis(200))
        .expect("answered");
    assert!(!reply.nominated);
    assert_valid_response(&reply.response, LOCAL_PWD, *b"not-nominate", second);
    assert_eq!(ice.selected(), Some(first));
    assert_eq!(ice.last_check(), Some(Duration::from_millis(200)));

    // A forged nomination from elsewhere moves nothing.
    let forged = Request {
        use_candidate: true,
        pwd: Some("guessed-password-xxxxxx"),
        ..Request::default()
    }
    .build();
    assert_eq!(
        ice.handle_stun(second, &forged, Duration::from_millis(300)),
        Err(IceError::BadIntegrity)
    );
    assert_eq!(ice.selected(), Some(first));
    assert_eq!(ice.last_check(), Some(Duration::from_millis(200)));

    // The browser's network changed: a valid nomination from the new address moves it.
    let reply = ice
        .handle_stun(
            second,
            &nominate(*b"new-network!"),
            Duration::from_millis(400),
        )
        .expect("answered");
    assert!(reply.nominated);
    assert_valid_response(&reply.response, LOCAL_PWD, *b"new-network!", second);
    assert_eq!(ice.selected(), Some(second));
    assert_eq!(ice.last_check(), Some(Duration::from_millis(400)));
}

#[test]
fn consent_checks_refresh_last_check() {
    let mut ice = ice();
    let from = addr("198.51.100.7:50123");
    for (i, ms) in [0u64, 2500, 5000, 7500].into_iter().enumerate() {
        let mut tid = TID;
        tid[0] = i as u8;
        let request = Request {
            use_candidate: true,
            tid,
            ..Request::default()
        }
        .build();
        let reply = ice
            .handle_stun(from, &request, Duration::from_millis(ms))
            .expect("answered");
        assert_valid_response(&reply.response, LOCAL_PWD, tid, from);
        assert_eq!(ice.last_check(), Some(Duration::from_millis(ms)));
    }
}

#[test]
fn binding_indication_is_accepted_silently() {
    let mut msg = Message::new();
    msg.build(&[
        Box::new(MessageType::new(METHOD_BINDING, CLASS_INDICATION)),
        Box::new(TransactionId(TID)),
        Box::new(FINGERPRINT),
    ])
    .expect("encodes");
    let mut ice = ice();
    let reply = ice
        .handle_stun(addr("198.51.100.7:50123"), &msg.raw, Duration::ZERO)
        .expect("accepted");
    assert_eq!(
        reply,
        IceReply {
            response: Vec::new(),
            nominated: false
        }
    );
    assert_eq!(ice.last_check(), None);
    assert_eq!(ice.selected(), None);
}

#[test]
fn other_stun_messages_are_refused() {
    let response = ice()
        .handle_stun(
            addr("198.51.100.7:1"),
            &Request::default().build(),
            Duration::ZERO,
        )
        .expect("answered")
        .response;
    let mut allocate = Message::new();
    allocate
        .build(&[
            Box::new(MessageType::new(
                METHOD_ALLOCATE,
                rtc_stun::message::CLASS_REQUEST,
            )),
            Box::new(TransactionId(TID)),
        ])
        .expect("encodes");
    let mut ice = ice();
    for packet in [response, allocate.raw] {
        assert_eq!(
            ice.handle_stun(addr("198.51.100.7:1"), &packet, Duration::ZERO),
            Err(IceError::NotBindingRequest)
        );
        assert_eq!(local_ufrag_of(&packet), None);
    }
}

#[test]
fn not_stun_and_malformed() {
    let mut ice = ice();
    let from = addr("198.51.100.7:1");
    let valid = Request::default().build();
    let not_stun: [&[u8]; 4] = [
        &[],
        &valid[..19],
        &[
            0x80, 0x6f, 0, 1, 0x21, 0x12, 0xa4, 0x42, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0,
        ],
        &[
            0, 1, 0, 0, 0x21, 0x12, 0xa4, 0x43, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0,
        ],
    ];
    for packet in not_stun {
        assert_eq!(
            ice.handle_stun(from, packet, Duration::ZERO),
            Err(IceError::NotStun)
        );
    }
    // Truncated, trailing byte, length field not a multiple of 4.
    let mut trailing = valid.clone();
    trailing.push(0);
    let mut unaligned = valid.clone();
    unaligned[3] ^= 1;
    for packet in [&valid[..valid.len() - 4], &trailing[..], &unaligned[..]] {
        assert_eq!(
            ice.handle_stun(from, packet, Duration::ZERO),
            Err(IceError::Malformed)
        );
        assert_eq!(local_ufrag_of(packet), None);
    }
    // An attribute whose length runs past the message.
    let mut overrun = valid.clone();
    overrun[22..24].copy_from_slice(&200u16.to_be_bytes());
    assert_eq!(
        ice.handle_stun(from, &overrun, Duration::ZERO),
        Err(IceError::Malformed)
    );
    // MESSAGE-INTEGRITY of 4 bytes: the header is consistent, the HMAC cannot be.
    let mut short_mi = Message::new();
    short_mi
        .build(&[
            Box::new(BINDING_REQUEST),
            Box::new(TransactionId(TID)),
            Box::new(TextAttribute::new(ATTR_USERNAME, "SrvUfrag:RmBR".into())),
            Box::new(RawAttribute {
                typ: ATTR_MESSAGE_INTEGRITY,
                length: 0,
                value: vec![0; 4],
            }),
        ])
        .expect("encodes");
    assert_eq!(
        ice.handle_stun(from, &short_mi.raw, Duration::ZERO),
        Err(IceError::Malformed)
    );
    assert_eq!(ice.last_check(), None);
}

#[test]
fn local_ufrag_of_reads_the_first_part_of_username() {
    assert_eq!(
        local_ufrag_of(&Request::default().build()).as_deref(),
        Some("SrvUfrag")
    );
    // Wrong password and no integrity at all: the demultiplexer does not verify.
    let unverified = Request {
        pwd: None,
        fingerprint: false,
        username: Some("abcd:efgh"),
        ..Request::default()
    }
    .build();
    assert_eq!(local_ufrag_of(&unverified).as_deref(), Some("abcd"));
    for username in [None, Some("nocolon"), Some(":efgh")] {
        let request = Request {
            username,
            ..Request::default()
        }
        .build();
        assert_eq!(local_ufrag_of(&request), None, "{username:?}");
    }
    let mut not_utf8 = Message::new();
    not_utf8
        .build(&[
            Box::new(BINDING_REQUEST),
            Box::new(TransactionId(TID)),
            Box::new(RawAttribute {
                typ: ATTR_USERNAME,
                length: 0,
                value: vec![0xff, b':', b'a'],
            }),
        ])
        .expect("encodes");
    assert_eq!(local_ufrag_of(&not_utf8.raw), None);
    assert_eq!(local_ufrag_of(b"\x16\xfe\xfd garbage"), None);
}

/// Two Binding requests captured from Chromium 156 (headless, Debian) checking a server that
/// answered its offer with `a=ice-lite`, `a=ice-ufrag:SrvUfrag`,
/// `a=ice-pwd:SrvPassword0123456789abc`; the browser's ufrag was `RmBR`. Its first check,
/// then its second, which nominates (USE-CANDIDATE). Chromium reached `connected` on the
/// responses this module gave (requestsSent == responsesReceived in its getStats).
const CHROMIUM_CHECK: &str = "000100502112a442644330724e55546a3358614e0006000d53727655667261673a526d4252000000c0570004000003e7802a0008879730c2b059f97c002400046e001eff0008001488951c8cdb46c92fc0bf26b023a6893510f6d74a80280004319344c2";
const CHROMIUM_NOMINATION: &str = "000100542112a442587974634c63657a45314f660006000d53727655667261673a526d4252000000c0570004000003e7802a0008879730c2b059f97c00250000002400046e001eff00080014de4e558d15640c8fc19a14b2fdeb6011f37906cf80280004c5ba7f0c";

#[test]
fn chromium_checks() {
    let from = addr("127.0.0.1:57545");
    let mut ice = ice();
    let check = hex(CHROMIUM_CHECK);
    assert_eq!(local_ufrag_of(&check).as_deref(), Some("SrvUfrag"));
    let reply = ice
        .handle_stun(from, &check, Duration::from_millis(2172))
        .expect("answered");
    assert!(!reply.nominated);
    assert_valid_response(&reply.response, LOCAL_PWD, *b"dC0rNUTj3XaN", from);
    assert_eq!(ice.selected(), None);

    let nomination = hex(CHROMIUM_NOMINATION);
    let reply = ice
        .handle_stun(from, &nomination, Duration::from_millis(2210))
        .expect("answered");
    assert!(reply.nominated);
    assert_valid_response(&reply.response, LOCAL_PWD, *b"XytcLcezE1Of", from);
    assert_eq!(ice.selected(), Some(from));
    assert_eq!(ice.last_check(), Some(Duration::from_millis(2210)));

    // The same bytes for a session with another password or another browser ufrag.
    let mut other_pwd = IceLite::new(
        creds(LOCAL_UFRAG, "SrvPassword0123456789abd"),
        creds(REMOTE_UFRAG, ""),
    );
    assert_eq!(
        other_pwd.handle_stun(from, &nomination, Duration::ZERO),
        Err(IceError::BadIntegrity)
    );
    let mut other_browser = IceLite::new(creds(LOCAL_UFRAG, LOCAL_PWD), creds("RmBQ", ""));
    assert_eq!(
        other_browser.handle_stun(from, &nomination, Duration::ZERO),
        Err(IceError::UnknownUsername)
    );
}

/// RFC 5769 §2.1: a Binding request with USERNAME `evtj:h6vY`, password
/// `VOkJxbRl1RmTxUk/WvJxBt`, PRIORITY, ICE-CONTROLLED, SOFTWARE, MESSAGE-INTEGRITY and
/// FINGERPRINT.
const RFC5769_REQUEST: &str = "000100582112a442b7e7a701bc34d686fa87dfae802200105354554e207465737420636c69656e74002400046e0001ff80290008932ff9b151263b36000600096576746a3a68367659202020000800149aeaa70cbfd8cb56781ef2b5b2d3f249c1b571a280280004e57a3bcf";
/// RFC 5769 §2.2: the response to it from 192.0.2.1:32853 (with SOFTWARE "test vector").
const RFC5769_RESPONSE_V4: &str = "0101003c2112a442b7e7a701bc34d686fa87dfae8022000b7465737420766563746f7220002000080001a147e112a643000800142b91f599fd9e90c38c7489f92af9ba53f06be7d780280004c07d4c96";
/// RFC 5769 §2.3: the same from [2001:db8:1234:5678:11:2233:4455:6677]:32853.
const RFC5769_RESPONSE_V6: &str = "010100482112a442b7e7a701bc34d686fa87dfae8022000b7465737420766563746f7220002000140002a1470113a9faa5d3f179bc25f4b5bed2b9d900080014a382954e4be67bf11784c97c8292c275bfe3ed4180280004c8fb0b4c";
const RFC5769_PWD: &str = "VOkJxbRl1RmTxUk/WvJxBt";
const RFC5769_TID: [u8; 12] = [
    0xb7, 0xe7, 0xa7, 0x01, 0xbc, 0x34, 0xd6, 0x86, 0xfa, 0x87, 0xdf, 0xae,
];

#[test]
fn rfc5769_sample_request_and_responses() {
    let request = hex(RFC5769_REQUEST);
    assert_eq!(local_ufrag_of(&request).as_deref(), Some("evtj"));
    for (from, sample) in [
        ("192.0.2.1:32853", RFC5769_RESPONSE_V4),
        (
            "[2001:db8:1234:5678:11:2233:4455:6677]:32853",
            RFC5769_RESPONSE_V6,
        ),
    ] {
        let from = addr(from);
        let sample = hex(sample);
        // The RFC's own response passes the checks the tests apply to ours.
        assert_valid_response(&sample, RFC5769_PWD, RFC5769_TID, from);

        let mut ice = IceLite::new(creds("evtj", RFC5769_PWD), creds("h6vY", "unknown"));
        let reply = ice
            .handle_stun(from, &request, Duration::ZERO)
            .expect("answered");
        assert!(!reply.nominated, "the sample has no USE-CANDIDATE");
        assert_valid_response(&reply.response, RFC5769_PWD, RFC5769_TID, from);
        // Our XOR-MAPPED-ADDRESS is the RFC's, byte for byte.
        assert_eq!(
            attribute(&reply.response, ATTR_XORMAPPED_ADDRESS),
            attribute(&sample, ATTR_XORMAPPED_ADDRESS)
        );
        // The sample's USERNAME read the other way round is another session.
        let mut reversed = IceLite::new(creds("h6vY", RFC5769_PWD), creds("evtj", "unknown"));
        assert_eq!(
            reversed.handle_stun(from, &request, Duration::ZERO),
            Err(IceError::UnknownUsername)
        );
    }
}

#[test]
fn generated_credentials_are_ice_legal_and_from_the_source() {
    let mut state = 0x9e37_79b9_7f4a_7c15u64;
    let mut rng = || {
        // xorshift64*
        state ^= state >> 12;
        state ^= state << 25;
        state ^= state >> 27;
        state.wrapping_mul(0x2545_f491_4f6c_dd1d)
    };
    let a = Credentials::generate(&mut rng);
    let b = Credentials::generate(&mut rng);
    for c in [&a, &b] {
        assert_eq!(c.ufrag.len(), UFRAG_LEN);
        assert_eq!(c.pwd.len(), PWD_LEN);
        assert!(c
            .ufrag
            .bytes()
            .chain(c.pwd.bytes())
            .all(|ch| ch.is_ascii_alphanumeric() || ch == b'+' || ch == b'/'));
    }
    assert_ne!(a, b);
    assert_ne!(a.ufrag, a.pwd[..UFRAG_LEN]);

    // Only the injected source decides: the same values give the same credentials; six bits
    // per character, least significant first.
    let mut counter = 0u64;
    let mut fixed = || {
        counter += 1;
        counter
    };
    let c = Credentials::generate(&mut fixed);
    // 1 -> "B" then nine "A"; 2 -> "C" ...; 4 calls for 32 characters.
    assert_eq!(c.ufrag, "BAAAAAAA");
    assert_eq!(c.pwd, "AACAAAAAAAAADAAAAAAAAAEA");
    assert_eq!(counter, 4);
}

#[test]
fn state_survives_serialization() {
    let mut ice = ice();
    let from = addr("198.51.100.7:50123");
    let nominate = Request {
        use_candidate: true,
        ..Request::default()
    }
    .build();
    ice.handle_stun(from, &nominate, Duration::from_secs(9))
        .expect("answered");
    let bytes = postcard::to_allocvec(&ice).expect("serializes");
    let mut backup: IceLite = postcard::from_bytes(&bytes).expect("deserializes");
    assert_eq!(backup.selected(), Some(from));
    assert_eq!(backup.last_check(), Some(Duration::from_secs(9)));
    assert_eq!(backup.local(), ice.local());
    assert_eq!(backup.remote(), ice.remote());
    // The backup answers the browser's next consent check.
    let next = Request {
        use_candidate: true,
        tid: *b"next-consent",
        ..Request::default()
    }
    .build();
    let reply = backup
        .handle_stun(from, &next, Duration::from_secs(11))
        .expect("answered");
    assert_valid_response(&reply.response, LOCAL_PWD, *b"next-consent", from);
}

/// Every prefix, every single-bit flip and pseudo-random bytes: never a panic, and nothing but
/// the untouched request gets a response.
#[test]
fn hostile_bytes_never_panic() {
    let from = addr("198.51.100.7:50123");
    let valid = Request {
        use_candidate: true,
        ..Request::default()
    }
    .build();
    let mut session = ice();
    for len in 0..valid.len() {
        let r = session.handle_stun(from, &valid[..len], Duration::ZERO);
        assert!(r.is_err(), "prefix of {len} bytes");
        let _ = local_ufrag_of(&valid[..len]);
    }
    // FINGERPRINT is the last 8 bytes. A flip in its type turns it into an unknown attribute
    // after MESSAGE-INTEGRITY, which is ignored: the signed part is still authentic.
    let signed_end = valid.len() - 8;
    for bit in 0..valid.len() * 8 {
        let mut packet = valid.clone();
        packet[bit / 8] ^= 1 << (bit % 8);
        if let Ok(reply) = ice().handle_stun(from, &packet, Duration::ZERO) {
            assert!(bit / 8 >= signed_end, "bit {bit} flipped and answered");
            assert_valid_response(&reply.response, LOCAL_PWD, TID, from);
        }
        let _ = local_ufrag_of(&packet);
    }
    assert_eq!(session.selected(), None);
    let mut state = 1u64;
    for round in 0..20_000 {
        let len = round % 120;
        let mut packet: Vec<u8> = (0..len)
            .map(|_| {
                state = state
                    .wrapping_mul(6364136223846793005)
                    .wrapping_add(1442695040888963407);
                (state >> 56) as u8
            })
            .collect();
        if round % 2 == 0 && len >= 20 {
            // Make it past the STUN header checks.
            packet[0] &= 0x01;
            packet[1] = 0x01;
            packet[2..4].copy_from_slice(&((len as u16 - 20) & !3).to_be_bytes());
            packet[4..8].copy_from_slice(&MAGIC_COOKIE.to_be_bytes());
            packet.truncate(20 + ((len - 20) & !3));
        }
        let _ = session.handle_stun(from, &packet, Duration::ZERO);
        let _ = local_ufrag_of(&packet);
    }
    assert_eq!(session.selected(), None);
}
