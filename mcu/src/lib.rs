//! Understudy's conferencing server (`mcu`): configuration, the HTTP admin API and metrics,
//! and the drivers (sockets, timers, threads, netfilter) around the sans-IO cores: the
//! control plane (`control-core`: calls, rooms, replication, takeover), SIP (`sip-core`),
//! media (`mixer`) and the sync link (`ft-sync`). No decision is made here that a core could
//! make: [`server`] feeds the control core and carries out its actions. The HTTP API
//! ([`http`]) is open except under `/api/`, the operator's admin API, which [`auth`] guards
//! with a bearer token.
#![deny(missing_docs)]

pub mod auth;
pub mod config;
pub mod hot_standby;
pub mod http;
pub mod launch;
pub mod limits;
pub mod live;
pub mod metrics;
pub mod mirror;
pub mod netguard;
pub mod room;
pub mod server;
pub mod state;
pub mod sync_link;
pub mod web;
pub mod webrtc;
