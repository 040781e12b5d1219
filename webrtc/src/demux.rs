//! Which of a browser's bundled streams a decrypted packet belongs to: its audio (to the
//! mixer) or its video (to the video forwarder).
//!
//! BUNDLE (RFC 8843) puts a browser's audio and video on one transport; after SRTP the
//! packets must be told apart. RTP goes by payload type (the answer gives VP8 its own
//! payload type, RFC 8843 §9.1: payload types are unique across a BUNDLE group), and the
//! video SSRC is learnt from the first VP8 packet (or given by the offer).
//!
//! RTCP goes by the SSRCs it names: a compound packet is video when any of its packets is
//! sent by a video SSRC of the browser, reports on or gives feedback about one of our video
//! SSRCs, or is a feedback message (PLI, FIR, NACK, REMB: the audio has none); everything
//! else (reports on the audio, SDES, BYE of the audio SSRC) is audio. Chromium sends each
//! stream's RTCP in compound packets of its own, so a compound is never both.
//!
//! Sans-IO and allocation-free per packet; hostile input never panics: a packet too short to
//! say anything is audio (the mixer refuses it as it refused it before video existed).

/// Where a packet goes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Media {
    /// The browser's audio: the mixer.
    Audio,
    /// The browser's video: the video forwarder.
    Video,
}

/// One participant's demultiplexer (see the module doc).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Demux {
    video_pt: u8,
    /// The browser's video SSRCs (announced or learnt; at most [`Demux::MAX_SSRCS`]).
    video_in: Vec<u32>,
    /// Our video SSRC towards the browser.
    video_out: u32,
}

/// RTCP packet types (RFC 3550, RFC 4585).
const SR: u8 = 200;
const RR: u8 = 201;
const SDES: u8 = 202;
const BYE: u8 = 203;
const RTPFB: u8 = 205;
const PSFB: u8 = 206;

impl Demux {
    /// Browser video SSRCs remembered (a new one pushes the oldest out).
    pub const MAX_SSRCS: usize = 4;

    /// A participant whose VP8 has payload type `video_pt`, whose video SSRC the offer
    /// announced as `video_in` (if it did), and to whom we send video on `video_out`.
    pub fn new(video_pt: u8, video_in: Option<u32>, video_out: u32) -> Demux {
        Demux {
            video_pt,
            video_in: video_in.into_iter().collect(),
            video_out,
        }
    }

    /// The browser's VP8 payload type.
    pub fn video_pt(&self) -> u8 {
        self.video_pt
    }

    /// The browser's video SSRCs known so far, oldest first.
    pub fn video_ssrcs(&self) -> &[u32] {
        &self.video_in
    }

    /// A decrypted RTP packet: video when its payload type is the VP8 one (its SSRC is then
    /// remembered for RTCP).
    pub fn rtp(&mut self, packet: &[u8]) -> Media {
        let (Some(&b1), Some(ssrc)) = (packet.get(1), be32(packet, 8)) else {
            return Media::Audio;
        };
        if b1 & 0x7f != self.video_pt {
            return Media::Audio;
        }
        if !self.video_in.contains(&ssrc) {
            if self.video_in.len() == Self::MAX_SSRCS {
                self.video_in.remove(0);
            }
            self.video_in.push(ssrc);
        }
        Media::Video
    }

    /// A decrypted (compound) RTCP packet (see the module doc).
    pub fn rtcp(&self, packet: &[u8]) -> Media {
        let ours = |s: u32| s == self.video_out || self.video_in.contains(&s);
        let mut rest = packet;
        while rest.len() >= 8 {
            let pt = rest[1];
            let words = usize::from(u16::from_be_bytes([rest[2], rest[3]]));
            let len = ((words + 1) * 4).min(rest.len());
            let p = &rest[..len];
            let video = match pt {
                RTPFB | PSFB => true,
                SR | RR => {
                    let count = usize::from(p[0] & 0x1f);
                    let blocks = if pt == SR { 28 } else { 8 };
                    be32(p, 4).is_some_and(ours)
                        || (0..count).any(|i| be32(p, blocks + 24 * i).is_some_and(ours))
                }
                SDES | BYE => be32(p, 4).is_some_and(ours),
                _ => false,
            };
            if video {
                return Media::Video;
            }
            rest = &rest[len..];
        }
        Media::Audio
    }
}

fn be32(p: &[u8], at: usize) -> Option<u32> {
    let b = p.get(at..at + 4)?;
    Some(u32::from_be_bytes([b[0], b[1], b[2], b[3]]))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rtp(pt: u8, ssrc: u32) -> Vec<u8> {
        let mut p = vec![0x80, 0x80 | pt, 0, 1, 0, 0, 0, 9];
        p.extend_from_slice(&ssrc.to_be_bytes());
        p.extend_from_slice(&[0x10, 0x00, 0x9d]);
        p
    }

    fn rr(sender: u32, about: &[u32]) -> Vec<u8> {
        let words = 1 + 6 * about.len();
        let mut p = vec![0x80 | about.len() as u8, RR, 0, words as u8];
        p.extend_from_slice(&sender.to_be_bytes());
        for s in about {
            p.extend_from_slice(&s.to_be_bytes());
            p.extend_from_slice(&[0; 20]);
        }
        p
    }

    fn sdes(ssrc: u32) -> Vec<u8> {
        let mut p = vec![0x81, SDES, 0, 3];
        p.extend_from_slice(&ssrc.to_be_bytes());
        p.extend_from_slice(&[1, 2, b'a', b'b', 0, 0, 0, 0]);
        p.truncate(16);
        p
    }

    fn pli(sender: u32, media: u32) -> Vec<u8> {
        let mut p = vec![0x81, PSFB, 0, 2];
        p.extend_from_slice(&sender.to_be_bytes());
        p.extend_from_slice(&media.to_be_bytes());
        p
    }

    #[test]
    fn rtp_by_payload_type_and_video_ssrc_learnt() {
        let mut d = Demux::new(96, None, 0xbbbb);
        assert_eq!(d.rtp(&rtp(111, 0xa0d1)), Media::Audio);
        assert_eq!(d.rtp(&rtp(110, 0xa0d1)), Media::Audio); // telephone-event
        assert_eq!(d.video_ssrcs(), &[] as &[u32]);
        assert_eq!(d.rtp(&rtp(96, 0x71de)), Media::Video);
        assert_eq!(d.video_ssrcs(), &[0x71de]);
        // The marker bit does not change the payload type.
        let mut m = rtp(96, 0x71de);
        m[1] &= 0x7f;
        assert_eq!(d.rtp(&m), Media::Video);
        assert_eq!(d.video_ssrcs(), &[0x71de]);
    }

    #[test]
    fn rtcp_by_the_ssrcs_it_names() {
        let mut d = Demux::new(96, Some(0x71de), 0xbbbb);
        // The browser's audio module: its RR on our audio stream, its SDES.
        let audio: Vec<u8> = [rr(0xa0d1, &[0xaaaa]), sdes(0xa0d1)].concat();
        assert_eq!(d.rtcp(&audio), Media::Audio);
        // Its video module: sender report of its video SSRC.
        let mut sr = vec![0x80, SR, 0, 6];
        sr.extend_from_slice(&0x71deu32.to_be_bytes());
        sr.extend_from_slice(&[0; 20]);
        assert_eq!(d.rtcp(&[sr, sdes(0x71de)].concat()), Media::Video);
        // A receive-only video module (sender SSRC 1) reporting on our video stream.
        assert_eq!(d.rtcp(&rr(1, &[0xbbbb])), Media::Video);
        // Feedback, whatever the SSRCs: PLI about our video stream.
        assert_eq!(d.rtcp(&[rr(1, &[]), pli(1, 0xbbbb)].concat()), Media::Video);
        // A learnt video SSRC counts too.
        d.rtp(&rtp(96, 0x5555));
        assert_eq!(d.rtcp(&sdes(0x5555)), Media::Video);
    }

    #[test]
    fn learnt_ssrcs_are_bounded() {
        let mut d = Demux::new(96, None, 1);
        for s in 0..10u32 {
            d.rtp(&rtp(96, 100 + s));
        }
        assert_eq!(d.video_ssrcs(), &[106, 107, 108, 109]);
    }

    #[test]
    fn hostile_input_never_panics() {
        let mut d = Demux::new(96, None, 1);
        let pkt = [rr(1, &[2, 3]), pli(1, 2)].concat();
        for n in 0..pkt.len() {
            let _ = d.rtcp(&pkt[..n]);
            let _ = d.rtp(&pkt[..n]);
        }
        // A length field pointing past the end, a count larger than the packet.
        assert_eq!(d.rtcp(&[0x9f, RR, 0xff, 0xff, 0, 0, 0, 2]), Media::Audio);
        // A zero-length RR whose sender SSRC (1, our video) lies past its length.
        assert_eq!(d.rtcp(&[0x80, RR, 0, 0, 0, 0, 0, 1, 0x80]), Media::Audio);
    }
}
