//! Cheap triage of a SIP datagram by its first bytes, before any parsing: whether it belongs
//! to a call's life (set up, confirm, end) or is one of the rest (OPTIONS and other
//! keep-alives, REGISTER, anything unparseable). A driver that falls behind serves calls
//! first and may drop the rest.

/// Start lines of messages that make or end calls: responses (to our BYEs and re-INVITEs)
/// and the requests of a call's life.
const CALL_STARTS: [&[u8]; 7] = [
    b"SIP/2.0 ",
    b"INVITE ",
    b"ACK ",
    b"BYE ",
    b"CANCEL ",
    b"PRACK ",
    b"UPDATE ",
];

/// Whether `data` starts like a message that creates, confirms or ends a call (INVITE, ACK,
/// BYE, CANCEL, PRACK, UPDATE, or any response). Method names are case-sensitive (RFC 3261
/// §7.1), so this is exact; it does not say the message is valid.
pub fn is_call_message(data: &[u8]) -> bool {
    CALL_STARTS.iter().any(|p| data.starts_with(p))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn calls_first_the_rest_after() {
        for m in [
            "INVITE sip:room@h SIP/2.0\r\n",
            "ACK sip:room@h SIP/2.0\r\n",
            "BYE sip:room@h SIP/2.0\r\n",
            "CANCEL sip:room@h SIP/2.0\r\n",
            "SIP/2.0 200 OK\r\n",
        ] {
            assert!(is_call_message(m.as_bytes()), "{m}");
        }
        for m in [
            "OPTIONS sip:room@h SIP/2.0\r\n",
            "REGISTER sip:h SIP/2.0\r\n",
            "\r\n\r\n",
            "invite sip:room@h SIP/2.0\r\n",
            "INVITEX sip:a@h SIP/2.0\r\n",
            "",
            "\u{0}\u{1}garbage",
        ] {
            assert!(!is_call_message(m.as_bytes()), "{m:?}");
        }
    }
}
