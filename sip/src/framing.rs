//! TCP stream framing (RFC 3261 18.3): accumulate bytes per connection, cut messages by
//! Content-Length, and skip CRLF keep-alives (RFC 5626 3.5.1 "ping"/"pong").
//!
//! The core frames the bytes it is given itself ([`crate::Core::handle_stream_data`] keeps a
//! [`Framer`] per connection); a driver may run its own to count and classify the messages of
//! a connection before handing the same bytes on (e.g. a per-source rate limit).

use crate::message::{head_end, raw_content_length};

/// One unit cut from a stream.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Frame {
    /// A complete message (head + body).
    Message(Vec<u8>),
    /// A double-CRLF keep-alive ping; the peer expects a single CRLF back.
    Ping,
    /// A message larger than the limit; the head (if complete) is given to try a 513.
    Oversized(Vec<u8>),
    /// A head whose Content-Length is unusable; framing is lost and the buffer dropped.
    Bad(Vec<u8>),
}

/// Per-connection reassembly buffer.
#[derive(Debug, Default)]
pub struct Framer {
    buf: Vec<u8>,
    /// Body bytes of an oversized message still to be discarded.
    skip: usize,
}

impl Framer {
    /// Append `data` and cut every complete frame.
    pub fn push(&mut self, data: &[u8], max: usize) -> Vec<Frame> {
        let mut out = Vec::new();
        let mut data = data;
        if self.skip > 0 {
            let n = self.skip.min(data.len());
            self.skip -= n;
            data = &data[n..];
        }
        self.buf.extend_from_slice(data);
        loop {
            // Leading CRLFs between messages are keep-alives.
            let mut lead = 0;
            while lead < self.buf.len() && matches!(self.buf[lead], b'\r' | b'\n') {
                if self.buf[lead..].starts_with(b"\r\n\r\n") {
                    out.push(Frame::Ping);
                    lead += 4;
                } else {
                    lead += 1;
                }
            }
            self.buf.drain(..lead);
            if self.buf.is_empty() {
                return out;
            }
            let Some(end) = head_end(&self.buf) else {
                if self.buf.len() > max {
                    out.push(Frame::Oversized(std::mem::take(&mut self.buf)));
                }
                return out;
            };
            let cl = match raw_content_length(&self.buf[..end]) {
                Ok(cl) => cl.unwrap_or(0),
                Err(()) => {
                    out.push(Frame::Bad(std::mem::take(&mut self.buf)));
                    return out;
                }
            };
            let total = end.saturating_add(cl);
            if total > max {
                let head = self.buf[..end].to_vec();
                let have = self.buf.len().min(total);
                self.buf.drain(..have);
                self.skip = total - have;
                out.push(Frame::Oversized(head));
                if self.skip > 0 {
                    return out;
                }
                continue;
            }
            if self.buf.len() < total {
                return out;
            }
            let msg: Vec<u8> = self.buf.drain(..total).collect();
            out.push(Frame::Message(msg));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const M: &[u8] = b"OPTIONS sip:a@b SIP/2.0\r\nContent-Length: 4\r\n\r\nabcd";

    #[test]
    fn split_and_joined_messages() {
        let mut f = Framer::default();
        assert!(f.push(&M[..10], 1000).is_empty());
        assert_eq!(f.push(&M[10..], 1000), vec![Frame::Message(M.to_vec())]);
        let mut two = M.to_vec();
        two.extend_from_slice(b"\r\n\r\n");
        two.extend_from_slice(M);
        assert_eq!(
            f.push(&two, 1000),
            vec![
                Frame::Message(M.to_vec()),
                Frame::Ping,
                Frame::Message(M.to_vec())
            ]
        );
    }

    #[test]
    fn oversized_body_is_skipped() {
        let mut f = Framer::default();
        let big = b"OPTIONS sip:a@b SIP/2.0\r\nContent-Length: 100\r\n\r\n";
        let out = f.push(big, 60);
        assert!(matches!(out.as_slice(), [Frame::Oversized(_)]));
        assert!(f.push(&[b'x'; 100], 60).is_empty());
        assert_eq!(f.push(M, 60), vec![Frame::Message(M.to_vec())]);
    }
}
