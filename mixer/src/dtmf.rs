//! RFC 4733 telephone-event payloads: one digit reported per event, on its first end packet
//! (the redundant end retransmissions carry the same RTP timestamp and are ignored).

/// A finished telephone event.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Digit {
    /// The digit.
    pub digit: char,
    /// Duration in clock units.
    pub duration: u32,
}

/// Per-participant RFC 4733 receiver.
#[derive(Debug, Clone, Default)]
pub struct DtmfReceiver {
    last_end_ts: Option<u32>,
}

fn digit_of(event: u8) -> Option<char> {
    match event {
        0..=9 => Some((b'0' + event) as char),
        10 => Some('*'),
        11 => Some('#'),
        12..=15 => Some((b'A' + event - 12) as char),
        _ => None,
    }
}

impl DtmfReceiver {
    /// Feed one telephone-event payload with its RTP timestamp. `Err(())` when malformed.
    #[allow(clippy::result_unit_err)]
    pub fn on_payload(&mut self, ts: u32, payload: &[u8]) -> Result<Option<Digit>, ()> {
        if payload.len() < 4 {
            return Err(());
        }
        let end = payload[1] & 0x80 != 0;
        let duration = u16::from_be_bytes([payload[2], payload[3]]) as u32;
        if !end || self.last_end_ts == Some(ts) {
            return Ok(None);
        }
        self.last_end_ts = Some(ts);
        Ok(digit_of(payload[0]).map(|digit| Digit { digit, duration }))
    }
}
