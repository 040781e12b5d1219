//! Understudy's measuring stick: reads pcap/pcapng captures, finds RTP/RTCP streams and SIP
//! dialogs, and reports per-stream continuity (SSRC, sequence, timestamps, gaps, jitter) and
//! decoded audio energy. Later: replays recorded streams as real SIP participants.
//! It is not part of the server's media path.
//!
//! API CONTRACT (fixed by the integrator; implementation in progress).
#![deny(missing_docs)]

pub mod cli;
