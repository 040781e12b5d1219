//! Prometheus metrics of the server (`GET /metrics`).

use prometheus_client::encoding::text::encode;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::Registry;
use std::sync::atomic::AtomicU64;

/// The label of a per-listener metric: the address it is bound to (`listen="ADDR:PORT"`).
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ListenLabel {
    /// The listener's address.
    pub listen: String,
}

/// The label of the video packet counters: `kind="rtp"` or `kind="rtcp"`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct VideoKindLabel {
    /// `rtp` or `rtcp`.
    pub kind: String,
}

/// Every metric the server exports; cheap to clone (atomics inside).
#[derive(Clone)]
pub struct Metrics {
    /// Valid ICE checks answered on the WebRTC port.
    pub webrtc_stun_answered: Counter,
    /// STUN messages refused without an answer on the WebRTC port (unknown username, wrong password, bad fingerprint).
    pub webrtc_stun_refused: Counter,
    /// DTLS records on the WebRTC port that did not process.
    pub webrtc_dtls_dropped: Counter,
    /// SRTP/SRTCP packets that did not authenticate, replayed or came before the keys.
    pub webrtc_srtp_dropped: Counter,
    /// Packets on the WebRTC port from an address no ICE check validated.
    pub webrtc_unknown_source: Counter,
    /// Datagrams on the WebRTC port that are neither STUN, DTLS, RTP nor RTCP.
    pub webrtc_garbage: Counter,
    /// WebRTC participants on the transport.
    pub webrtc_peers: Gauge,
    /// Rooms alive.
    pub rooms: Gauge,
    /// Participants in rooms.
    pub participants: Gauge,
    /// RTP packets received from participants.
    pub rtp_in: Counter,
    /// RTP packets sent to participants.
    pub rtp_out: Counter,
    /// RTCP packets received.
    pub rtcp_in: Counter,
    /// RTCP packets sent.
    pub rtcp_out: Counter,
    /// Media packets dropped as garbage (not RTP/RTCP or invalid for the stream).
    pub media_dropped: Counter,
    /// Media packets dropped because a room's queue was full.
    pub media_overflow: Counter,
    /// SIP video datagrams dropped on a full room video queue.
    pub video_overflow: Counter,
    /// A participant's RTP switched to another SSRC (accepted by the mixer).
    pub media_ssrc_changes: Counter,
    /// Mixer events (SSRC changes, DTMF, speaker changes) left out of the log by its rate
    /// limit (`room::EVENT_LOG_PERIOD`).
    pub media_events_unlogged: Counter,
    /// SIP datagrams dropped unparsed: their source was over `--sip-rate-limit`.
    pub sip_rate_limited: Counter,
    /// SIP/TCP messages delayed (read later, not dropped) because their source was over
    /// `--sip-rate-limit`.
    pub sip_tcp_throttled: Counter,
    /// SIP datagrams other than calls' (OPTIONS, keep-alives, ...) dropped unparsed because
    /// the server was behind (their queue was full).
    pub sip_low_priority_dropped: Counter,
    /// RTP packets dropped because they came from another address than the participant's
    /// learned media source (injection, hijack attempts).
    pub media_foreign_dropped: Counter,
    /// RTCP packets dropped because they came from another address than the participant's.
    pub rtcp_foreign_dropped: Counter,
    /// Calls ended because nothing was heard from their media source for the media timeout.
    pub media_timeouts: Counter,
    /// SIP messages received (parsed).
    pub sip_in: Counter,
    /// Malformed SIP answered with 400.
    pub sip_malformed_answered: Counter,
    /// Malformed SIP dropped (no reply possible).
    pub sip_malformed_dropped: Counter,
    /// Oversized SIP messages rejected.
    pub sip_oversized: Counter,
    /// Calls accepted.
    pub calls_accepted: Counter,
    /// Calls rejected (any status).
    pub calls_rejected: Counter,
    /// Duration of one room's mixing tick, seconds.
    pub tick_seconds: Histogram,
    /// Ticks that started later than one tick period after their scheduled instant.
    pub ticks_late: Counter,
    /// Hot standby: how long SIP messages were held until the backup acknowledged their state.
    pub sip_commit_wait: Histogram,
    /// Hot standby: state items replicated to the backup.
    pub ft_replicated: Counter,
    /// Hot standby: sync-link datagrams dropped (malformed, unauthenticated, stale).
    pub ft_dropped: Counter,
    /// Hot standby: 1 while a synced standby stands behind the serving node.
    pub ft_protected: Gauge,
    /// Hot standby: the peer as this node sees it (0 unknown, 1 alive, 2 dead, 3 sync lost).
    pub ft_peer_state: Gauge,
    /// Hot standby, primary: replicated entries not yet acknowledged by the backup.
    pub ft_replication_lag: Gauge,
    /// Hot standby: the peer's longest silence (no sign of life on either path) in about
    /// the last 10 s.
    pub ft_peer_silence_max: Gauge<f64, AtomicU64>,
    /// Hot standby, backup: how much longer than configured it now waits before declaring
    /// the primary dead.
    pub ft_dead_after_stretch: Gauge<f64, AtomicU64>,
    /// SIP/TCP connections open.
    pub sip_tcp_connections: Gauge,
    /// SIP/TCP connections closed at once because `--max-sip-connections` were open.
    pub sip_tcp_rejected: Counter,
    /// SIP/TCP connections closed at once because their source IP address had
    /// `--max-sip-connections-per-source` open.
    pub sip_tcp_rejected_per_source: Counter,
    /// SIP/TCP connections closed after `--sip-tcp-idle-timeout` without input or call.
    pub sip_tcp_idle_closed: Counter,
    /// Failed accepts on the SIP/TCP listener (e.g. out of file descriptors).
    pub sip_tcp_accept_errors: Counter,
    /// HTTP connections closed at once because `--max-http-connections` were open.
    pub http_rejected: Counter,
    /// HTTP connections closed because the request header did not arrive in time.
    pub http_header_timeouts: Counter,
    /// Failed accepts on the HTTP listeners.
    pub http_accept_errors: Counter,
    /// HTTP connections accepted, by the listener's address (`--http-listen`): which address
    /// clients use, e.g. whether a backup served anything on the service address.
    pub http_connections: Family<ListenLabel, Counter>,
    /// Video datagrams received from participants' video sources (after the media source
    /// rule), by kind (`rtp`, `rtcp`): the room's video input.
    pub video_packets_received: Family<VideoKindLabel, Counter>,
    /// `video_packets_received{kind="rtp"}`, held (no lookup per packet).
    pub video_rtp_in: Counter,
    /// `video_packets_received{kind="rtcp"}`, held.
    pub video_rtcp_in: Counter,
    /// Video datagrams the rooms' forwarders sent, by kind (`rtp`: to receivers, with
    /// retransmissions; `rtcp`: keyframe requests, NACK and REMB to sources, reports).
    pub video_packets_sent: Family<VideoKindLabel, Counter>,
    /// `video_packets_sent{kind="rtp"}`, held.
    pub video_rtp_out: Counter,
    /// `video_packets_sent{kind="rtcp"}`, held.
    pub video_rtcp_out: Counter,
    /// Grid frames composed and encoded (one per frame per grid room, whatever the number
    /// of its viewers).
    pub video_grid_frames: Counter,
    /// Time to compose and encode one grid frame (on the grid's own thread).
    pub video_grid_encode_seconds: Histogram,
    /// Sources' RTP packets not given to a grid compositor: its input queue was full.
    pub video_grid_dropped_in: Counter,
    /// Grid output (RTP of the composed stream, keyframe requests) dropped: the room's
    /// grid queue was full.
    pub video_grid_dropped_out: Counter,
    /// Live-update WebSockets (`GET /api/ws`) open.
    pub ws_clients: Gauge,
    /// Live-update WebSockets refused: `live::MAX_SOCKETS` were open.
    pub ws_rejected: Counter,
    /// Live-update WebSockets closed because the client fell too far behind (or its
    /// socket did not take a message in time).
    pub ws_slow_dropped: Counter,
    registry: std::sync::Arc<Registry>,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    /// Create and register every metric.
    pub fn new() -> Self {
        let mut r = Registry::with_prefix("mcu");
        let m = Metrics {
            webrtc_stun_answered: Counter::default(),
            webrtc_stun_refused: Counter::default(),
            webrtc_dtls_dropped: Counter::default(),
            webrtc_srtp_dropped: Counter::default(),
            webrtc_unknown_source: Counter::default(),
            webrtc_garbage: Counter::default(),
            webrtc_peers: Gauge::default(),
            rooms: Gauge::default(),
            participants: Gauge::default(),
            rtp_in: Counter::default(),
            rtp_out: Counter::default(),
            rtcp_in: Counter::default(),
            rtcp_out: Counter::default(),
            media_dropped: Counter::default(),
            media_overflow: Counter::default(),
            video_overflow: Counter::default(),
            media_ssrc_changes: Counter::default(),
            media_events_unlogged: Counter::default(),
            sip_rate_limited: Counter::default(),
            sip_tcp_throttled: Counter::default(),
            sip_low_priority_dropped: Counter::default(),
            media_foreign_dropped: Counter::default(),
            rtcp_foreign_dropped: Counter::default(),
            media_timeouts: Counter::default(),
            sip_in: Counter::default(),
            sip_malformed_answered: Counter::default(),
            sip_malformed_dropped: Counter::default(),
            sip_oversized: Counter::default(),
            calls_accepted: Counter::default(),
            calls_rejected: Counter::default(),
            tick_seconds: Histogram::new(exponential_buckets(0.000_05, 2.0, 12)),
            ticks_late: Counter::default(),
            sip_commit_wait: Histogram::new(exponential_buckets(0.000_05, 2.0, 14)),
            ft_replicated: Counter::default(),
            ft_dropped: Counter::default(),
            ft_protected: Gauge::default(),
            ft_peer_state: Gauge::default(),
            ft_replication_lag: Gauge::default(),
            ft_peer_silence_max: Gauge::default(),
            ft_dead_after_stretch: Gauge::default(),
            sip_tcp_connections: Gauge::default(),
            sip_tcp_rejected: Counter::default(),
            sip_tcp_rejected_per_source: Counter::default(),
            sip_tcp_idle_closed: Counter::default(),
            sip_tcp_accept_errors: Counter::default(),
            http_rejected: Counter::default(),
            http_header_timeouts: Counter::default(),
            http_accept_errors: Counter::default(),
            http_connections: Family::default(),
            video_packets_received: Family::default(),
            video_rtp_in: Counter::default(),
            video_rtcp_in: Counter::default(),
            video_packets_sent: Family::default(),
            video_rtp_out: Counter::default(),
            video_rtcp_out: Counter::default(),
            video_grid_frames: Counter::default(),
            video_grid_encode_seconds: Histogram::new(exponential_buckets(0.000_25, 2.0, 10)),
            video_grid_dropped_in: Counter::default(),
            video_grid_dropped_out: Counter::default(),
            ws_clients: Gauge::default(),
            ws_rejected: Counter::default(),
            ws_slow_dropped: Counter::default(),
            registry: Default::default(),
        };
        r.register(
            "webrtc_stun_answered",
            "Valid ICE checks answered on the WebRTC port",
            m.webrtc_stun_answered.clone(),
        );
        r.register(
            "webrtc_stun_refused",
            "STUN messages refused without an answer on the WebRTC port (unknown username, wrong password, bad fingerprint)",
            m.webrtc_stun_refused.clone(),
        );
        r.register(
            "webrtc_dtls_dropped",
            "DTLS records on the WebRTC port that did not process",
            m.webrtc_dtls_dropped.clone(),
        );
        r.register(
            "webrtc_srtp_dropped",
            "SRTP/SRTCP packets that did not authenticate, replayed or came before the keys",
            m.webrtc_srtp_dropped.clone(),
        );
        r.register(
            "webrtc_unknown_source",
            "Packets on the WebRTC port from an address no ICE check validated",
            m.webrtc_unknown_source.clone(),
        );
        r.register(
            "webrtc_garbage",
            "Datagrams on the WebRTC port that are neither STUN, DTLS, RTP nor RTCP",
            m.webrtc_garbage.clone(),
        );
        r.register(
            "webrtc_peers",
            "WebRTC participants on the transport",
            m.webrtc_peers.clone(),
        );
        r.register("rooms", "Rooms alive", m.rooms.clone());
        r.register(
            "participants",
            "Participants in rooms",
            m.participants.clone(),
        );
        r.register("rtp_packets_in", "RTP packets received", m.rtp_in.clone());
        r.register("rtp_packets_out", "RTP packets sent", m.rtp_out.clone());
        r.register(
            "rtcp_packets_in",
            "RTCP packets received",
            m.rtcp_in.clone(),
        );
        r.register("rtcp_packets_out", "RTCP packets sent", m.rtcp_out.clone());
        r.register(
            "media_dropped",
            "Media packets dropped as invalid",
            m.media_dropped.clone(),
        );
        r.register(
            "media_overflow",
            "Media packets dropped on a full room queue",
            m.media_overflow.clone(),
        );
        r.register(
            "video_queue_overflow",
            "SIP video datagrams dropped on a full room video queue (read after audio, commands and ticks)",
            m.video_overflow.clone(),
        );
        r.register(
            "media_ssrc_changes",
            "Participants' RTP switching to another SSRC",
            m.media_ssrc_changes.clone(),
        );
        r.register(
            "media_events_unlogged",
            "Mixer events left out of the log by its rate limit",
            m.media_events_unlogged.clone(),
        );
        r.register(
            "sip_rate_limited",
            "SIP datagrams dropped unparsed: source over the per-source rate limit",
            m.sip_rate_limited.clone(),
        );
        r.register(
            "sip_tcp_throttled",
            "SIP/TCP messages delayed (not dropped): source over the per-source rate limit",
            m.sip_tcp_throttled.clone(),
        );
        r.register(
            "sip_low_priority_dropped",
            "SIP datagrams other than calls' dropped unparsed while the server was behind",
            m.sip_low_priority_dropped.clone(),
        );
        r.register(
            "media_foreign_dropped",
            "RTP packets dropped as coming from another address than the participant's media source",
            m.media_foreign_dropped.clone(),
        );
        r.register(
            "rtcp_foreign_dropped",
            "RTCP packets dropped as coming from another address than the participant's",
            m.rtcp_foreign_dropped.clone(),
        );
        r.register(
            "media_timeouts",
            "Calls ended because their media went silent for the media timeout",
            m.media_timeouts.clone(),
        );
        r.register("sip_messages_in", "SIP messages parsed", m.sip_in.clone());
        r.register(
            "sip_malformed_answered",
            "Malformed SIP answered with 400",
            m.sip_malformed_answered.clone(),
        );
        r.register(
            "sip_malformed_dropped",
            "Malformed SIP dropped",
            m.sip_malformed_dropped.clone(),
        );
        r.register(
            "sip_oversized",
            "Oversized SIP messages rejected",
            m.sip_oversized.clone(),
        );
        r.register("calls_accepted", "Calls accepted", m.calls_accepted.clone());
        r.register("calls_rejected", "Calls rejected", m.calls_rejected.clone());
        r.register(
            "tick_duration_seconds",
            "Duration of one room mixing tick",
            m.tick_seconds.clone(),
        );
        r.register(
            "ticks_late",
            "Ticks started more than a period late",
            m.ticks_late.clone(),
        );
        r.register(
            "sip_commit_wait_seconds",
            "Time a SIP message waited for the backup's acknowledgement (output commit)",
            m.sip_commit_wait.clone(),
        );
        r.register(
            "ft_replicated_items",
            "State items replicated to the backup",
            m.ft_replicated.clone(),
        );
        r.register(
            "ft_protected",
            "1 while a synced standby stands behind the serving node (hot standby)",
            m.ft_protected.clone(),
        );
        r.register(
            "ft_peer_state",
            "The hot-standby peer as this node sees it: 0 unknown, 1 alive, 2 dead, 3 sync link lost (partition)",
            m.ft_peer_state.clone(),
        );
        r.register(
            "ft_peer_silence_max_seconds",
            "The hot-standby peer's longest silence (no heartbeat or beacon) in about the last 10 s",
            m.ft_peer_silence_max.clone(),
        );
        r.register(
            "ft_dead_after_stretch_seconds",
            "Backup: how much longer than the configured dead interval it now waits before declaring the primary dead, after the primary's recent stalls (--ft-max-stretch-ms)",
            m.ft_dead_after_stretch.clone(),
        );
        r.register(
            "ft_replication_lag_entries",
            "Replicated entries the backup has not acknowledged yet",
            m.ft_replication_lag.clone(),
        );
        r.register(
            "ft_dropped_datagrams",
            "Sync-link datagrams dropped as malformed or unauthenticated",
            m.ft_dropped.clone(),
        );
        r.register(
            "sip_tcp_connections",
            "SIP/TCP connections open",
            m.sip_tcp_connections.clone(),
        );
        r.register(
            "sip_tcp_rejected",
            "SIP/TCP connections closed at once: the connection cap was reached",
            m.sip_tcp_rejected.clone(),
        );
        r.register(
            "sip_tcp_rejected_per_source",
            "SIP/TCP connections closed at once: their source had its share of connections open",
            m.sip_tcp_rejected_per_source.clone(),
        );
        r.register(
            "sip_tcp_idle_closed",
            "SIP/TCP connections closed for idleness (no input, no call)",
            m.sip_tcp_idle_closed.clone(),
        );
        r.register(
            "sip_tcp_accept_errors",
            "Failed accepts on the SIP/TCP listener (e.g. out of file descriptors)",
            m.sip_tcp_accept_errors.clone(),
        );
        r.register(
            "http_rejected",
            "HTTP connections closed at once: the connection cap was reached",
            m.http_rejected.clone(),
        );
        r.register(
            "http_header_timeouts",
            "HTTP connections closed: the request header did not arrive in time",
            m.http_header_timeouts.clone(),
        );
        r.register(
            "http_accept_errors",
            "Failed accepts on the HTTP listeners (e.g. out of file descriptors)",
            m.http_accept_errors.clone(),
        );
        r.register(
            "http_connections",
            "HTTP connections accepted, by listen address (those closed at once at the cap included)",
            m.http_connections.clone(),
        );
        let kind = |k: &str| VideoKindLabel { kind: k.into() };
        let video_rtp_in = m.video_packets_received.get_or_create(&kind("rtp")).clone();
        let video_rtcp_in = m
            .video_packets_received
            .get_or_create(&kind("rtcp"))
            .clone();
        r.register(
            "video_packets_received",
            "Video datagrams received from participants (RTP or RTCP, from their learned video source)",
            m.video_packets_received.clone(),
        );
        let video_rtp_out = m.video_packets_sent.get_or_create(&kind("rtp")).clone();
        let video_rtcp_out = m.video_packets_sent.get_or_create(&kind("rtcp")).clone();
        r.register(
            "video_packets_sent",
            "Video datagrams the rooms' forwarders sent (RTP to receivers; RTCP: keyframe requests, NACK, REMB, reports)",
            m.video_packets_sent.clone(),
        );
        r.register(
            "video_grid_frames",
            "Grid frames composed and encoded (once per frame per grid room, for all its viewers)",
            m.video_grid_frames.clone(),
        );
        r.register(
            "video_grid_encode_seconds",
            "Time to compose and encode one grid frame (on the grid's thread)",
            m.video_grid_encode_seconds.clone(),
        );
        r.register(
            "video_grid_input_dropped",
            "Sources' RTP packets not given to a grid compositor: its queue was full",
            m.video_grid_dropped_in.clone(),
        );
        r.register(
            "video_grid_output_dropped",
            "Grid output (composed RTP, keyframe requests) dropped: the room's grid queue was full",
            m.video_grid_dropped_out.clone(),
        );
        r.register(
            "ws_clients",
            "Live-update WebSockets (/api/ws) open",
            m.ws_clients.clone(),
        );
        r.register(
            "ws_rejected",
            "Live-update WebSockets refused: the socket limit was reached",
            m.ws_rejected.clone(),
        );
        r.register(
            "ws_slow_dropped",
            "Live-update WebSockets closed because the client fell too far behind",
            m.ws_slow_dropped.clone(),
        );
        Metrics {
            registry: std::sync::Arc::new(r),
            video_rtp_in,
            video_rtcp_in,
            video_rtp_out,
            video_rtcp_out,
            ..m
        }
    }

    /// Prometheus text exposition.
    pub fn encode(&self) -> String {
        let mut out = String::new();
        encode(&mut out, &self.registry).expect("writing to a String cannot fail");
        out
    }
}
