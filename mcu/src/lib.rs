//! Understudy's conferencing server (`mcu`): SIP participants, rooms, the HTTP admin API and
//! metrics, configuration, and the tokio drivers around the sans-IO cores (`sip-core`,
//! `mixer`). Media processing itself lives in `mixer`; SIP protocol state in `sip-core`.
#![deny(missing_docs)]

pub mod config;
pub mod ft;
pub mod http;
pub mod launch;
pub mod metrics;
pub mod room;
pub mod server;
pub mod state;
