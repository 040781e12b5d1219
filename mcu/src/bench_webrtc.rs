//! `mcu bench webrtc-clients`: synthetic WebRTC participants for the load benchmark
//! (`scripts/bench-webrtc`), doing what a browser does on the wire and nothing more.
//!
//! Each client: its own UDP socket, ICE credentials, SSRC and self-signed certificate; `POST
//! /whip/{room}` with the audio section of a recorded Chromium offer carrying those; from the
//! answer, the server's ICE credentials, fingerprint and host candidate; a nominating STUN
//! check (USE-CANDIDATE, as Chromium sends once it picks the pair); the DTLS 1.2 handshake as
//! client (rtc-dtls, `use_srtp` with Chromium's profile order, the server's certificate pinned
//! to the answer's fingerprint); SRTP keys exported (RFC 5764 §4.2, our role Client). Then for
//! `--secs` seconds: one 20 ms Opus packet every 20 ms through SRTP (talkers replay speech,
//! listeners quiet noise at about -50 dBFS, both encoded once up front by libopus), a consent
//! check every 2.5 s, and every SRTP/SRTCP packet from the server decrypted and counted (loss
//! from the sequence numbers of each SSRC received). Finally `DELETE` of its resource.
//!
//! It sends no RTCP, no header extension (no RFC 6464 audio level: the server decodes every
//! stream, as with the SIP benchmark's sipp clients) and answers nothing but its own checks'
//! responses. All clients run on one thread (a current-thread tokio runtime) so that the
//! generator itself stays cheap next to the server it measures.

use anyhow::{anyhow, bail, Context, Result};
use clap::{Args, ValueEnum};
use http_body_util::{BodyExt, Full};
use hyper::body::Bytes;
use hyper::{Method, Request, StatusCode};
use hyper_util::rt::TokioIo;
use rtc_dtls::config::{ConfigBuilder, ExtendedMasterSecretType, HandshakeConfig};
use rtc_dtls::crypto::Certificate as RtcCertificate;
use rtc_dtls::crypto_provider::providers::RingProvider;
use rtc_dtls::crypto_provider::{HashAlgorithm, RTCCryptoProvider};
use rtc_dtls::endpoint::{Endpoint, EndpointEvent};
use rtc_dtls::extension::extension_use_srtp::SrtpProtectionProfile;
use rtc_shared::TransportProtocol;
use rtc_stun::attributes::{
    AttrType, RawAttribute, ATTR_ICE_CONTROLLING, ATTR_PRIORITY, ATTR_USERNAME, ATTR_USE_CANDIDATE,
};
use rtc_stun::crypto::providers::RingCrypto;
use rtc_stun::fingerprint::FINGERPRINT;
use rtc_stun::integrity::MessageIntegrity;
use rtc_stun::message::{Message, Setter, TransactionId, BINDING_REQUEST, BINDING_SUCCESS};
use rtc_stun::textattrs::TextAttribute;
use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::net::UdpSocket;
use tokio::sync::Semaphore;
use webrtc_core::dtls::SRTP_EXPORTER_LABEL;
use webrtc_core::srtp::{split_keying_material, DtlsRole, Profile, SrtpReceiver, SrtpSender};

/// A recorded Chromium offer: its session lines and audio section are the template.
const CHROMIUM_OFFER: &str = include_str!("../../webrtc/tests/data/chromium_offer.sdp");
/// One Opus frame: 20 ms at 48 kHz.
const FRAME: usize = 960;
/// Media packet interval.
const PTIME: Duration = Duration::from_millis(20);
/// Chromium's consent-freshness check interval on the selected pair.
const CONSENT_INTERVAL: Duration = Duration::from_millis(2500);
/// How long an HTTP exchange or the ICE/DTLS setup may take.
const SETUP_TIMEOUT: Duration = Duration::from_secs(15);
/// Interval between repeats of the first (nominating) STUN check until it is answered.
const CHECK_RETRY: Duration = Duration::from_millis(200);
/// After the media phase: how long the socket is still read for what was in flight.
const DRAIN: Duration = Duration::from_millis(200);
/// HTTP requests in flight at once (the server closes connections beyond its own limit).
const HTTP_CONCURRENCY: usize = 16;

/// HMAC-SHA1 for STUN MESSAGE-INTEGRITY.
static STUN_CRYPTO: RingCrypto = RingCrypto;

/// Which SRTP profiles a client offers in DTLS `use_srtp`, in its order of preference.
#[derive(Clone, Copy, Debug, ValueEnum)]
pub enum Profiles {
    /// AEAD_AES_128_GCM then AES_CM_128_HMAC_SHA1_80, as Chromium offers (GCM is chosen).
    Chromium,
    /// AES_CM_128_HMAC_SHA1_80 only.
    Cm,
    /// AEAD_AES_128_GCM only.
    Gcm,
}

/// Arguments of `mcu bench webrtc-clients`.
#[derive(Args, Debug)]
pub struct WebRtcClientsArgs {
    /// The server's HTTP address (WHIP).
    #[arg(long)]
    http: SocketAddr,
    /// Room names are this prefix followed by the room's number (0..rooms).
    #[arg(long, default_value = "bench")]
    room_prefix: String,
    /// Number of rooms.
    #[arg(long)]
    rooms: usize,
    /// Clients per room.
    #[arg(long)]
    per_room: usize,
    /// Seconds each client sends media, from the moment its handshake completes.
    #[arg(long)]
    secs: f64,
    /// Talkers per room (the first clients of each room); the others are listeners.
    #[arg(long, default_value_t = 1)]
    talkers_per_room: usize,
    /// Clients started per second (sipp's `-r` in the SIP benchmark).
    #[arg(long, default_value_t = 50.0)]
    join_rate: f64,
    /// Talkers' audio: raw signed 16-bit little-endian mono PCM at 48 kHz (e.g. espeak-ng
    /// speech converted with ffmpeg); a synthetic speech-like signal without it.
    #[arg(long)]
    talker_pcm: Option<PathBuf>,
    /// Opus bitrate in bits/s.
    #[arg(long, default_value_t = 24_000)]
    bitrate: i32,
    /// SRTP profiles offered in DTLS.
    #[arg(long, value_enum, default_value = "chromium")]
    profiles: Profiles,
    /// Local address of the clients' sockets.
    #[arg(long, default_value = "127.0.0.1")]
    bind: IpAddr,
    /// Print one line per client.
    #[arg(long)]
    per_client: bool,
}

/// What one client did, for the report.
#[derive(Default, Debug)]
struct Report {
    room: String,
    talker: bool,
    /// WHIP answered 201.
    joined: bool,
    /// ICE nominated and DTLS complete.
    connected: bool,
    /// Why it stopped early, if it did.
    error: Option<String>,
    /// POST to answer.
    join_ms: f64,
    /// Answer to handshake complete.
    connect_ms: f64,
    profile: Option<Profile>,
    pkts_out: u64,
    /// SRTP packets decrypted.
    pkts_in: u64,
    /// Missing by the sequence numbers received.
    lost: u64,
    rtcp_in: u64,
    /// SRTP/SRTCP packets that did not decrypt.
    srtp_errors: u64,
    stun_sent: u64,
    stun_answered: u64,
    /// DELETE answered 200.
    deleted: bool,
}

/// Shared by every client: the encoded audio and the setup bookkeeping.
struct Common {
    http: SocketAddr,
    bind: IpAddr,
    secs: Duration,
    profiles: Vec<SrtpProtectionProfile>,
    talk: Vec<Vec<u8>>,
    noise: Vec<Vec<u8>>,
    http_slots: Semaphore,
    /// Clients whose setup is over (connected or failed).
    settled: AtomicUsize,
    connected: AtomicUsize,
    total: usize,
    crypto: Arc<dyn RTCCryptoProvider>,
}

/// Run `mcu bench webrtc-clients`.
pub fn run(a: &WebRtcClientsArgs) -> Result<()> {
    if a.rooms == 0 || a.per_room == 0 || !a.secs.is_finite() || a.secs <= 0.0 {
        bail!("--rooms, --per-room and --secs must be positive");
    }
    if !a.join_rate.is_finite() || a.join_rate <= 0.0 {
        bail!("--join-rate must be positive");
    }
    let total = a.rooms * a.per_room;
    let t0 = Instant::now();
    let talk_pcm = match &a.talker_pcm {
        Some(p) => {
            let raw = std::fs::read(p).with_context(|| format!("reading {}", p.display()))?;
            raw.chunks_exact(2)
                .map(|b| i16::from_le_bytes([b[0], b[1]]))
                .collect()
        }
        None => synthetic_speech(10.0),
    };
    let talk = encode(&talk_pcm, a.bitrate).context("encoding the talkers' audio")?;
    let noise = encode(&quiet_noise(5.0, 0.003), a.bitrate).context("encoding the noise")?;
    let mean = |f: &[Vec<u8>]| f.iter().map(Vec::len).sum::<usize>() / f.len().max(1);
    eprintln!(
        "webrtc-clients: Opus encoded once in {:.0} ms: talk {} frames (mean {} bytes), noise {} frames (mean {} bytes)",
        t0.elapsed().as_secs_f64() * 1000.0,
        talk.len(),
        mean(&talk),
        noise.len(),
        mean(&noise)
    );
    if talk.is_empty() {
        bail!("the talkers' audio is shorter than one 20 ms frame");
    }
    let profiles = match a.profiles {
        Profiles::Chromium => vec![
            SrtpProtectionProfile::Srtp_Aead_Aes_128_Gcm,
            SrtpProtectionProfile::Srtp_Aes128_Cm_Hmac_Sha1_80,
        ],
        Profiles::Cm => vec![SrtpProtectionProfile::Srtp_Aes128_Cm_Hmac_Sha1_80],
        Profiles::Gcm => vec![SrtpProtectionProfile::Srtp_Aead_Aes_128_Gcm],
    };
    let common = Arc::new(Common {
        http: a.http,
        bind: a.bind,
        secs: Duration::from_secs_f64(a.secs),
        profiles,
        talk,
        noise,
        http_slots: Semaphore::new(HTTP_CONCURRENCY),
        settled: AtomicUsize::new(0),
        connected: AtomicUsize::new(0),
        total,
        crypto: Arc::new(RingProvider::new()),
    });
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let reports = rt.block_on(async {
        let start = tokio::time::Instant::now();
        let mut tasks = Vec::with_capacity(total);
        for i in 0..total {
            let (room, slot) = (i % a.rooms, i / a.rooms);
            let room = format!("{}{room}", a.room_prefix);
            let talker = slot < a.talkers_per_room;
            let at = start + Duration::from_secs_f64(i as f64 / a.join_rate);
            let c = common.clone();
            tasks.push(tokio::spawn(async move {
                tokio::time::sleep_until(at).await;
                client(i, room, talker, c).await
            }));
        }
        let mut reports = Vec::with_capacity(total);
        for t in tasks {
            reports.push(t.await.unwrap_or_else(|e| Report {
                error: Some(format!("task: {e}")),
                ..Report::default()
            }));
        }
        reports
    });
    print_reports(&reports, a.per_client);
    Ok(())
}

fn print_reports(reports: &[Report], per_client: bool) {
    let mut sum = Report::default();
    let (mut joined, mut connected, mut deleted) = (0, 0, 0);
    let mut join_ms = Vec::new();
    let mut connect_ms = Vec::new();
    for (i, r) in reports.iter().enumerate() {
        if per_client || r.error.is_some() {
            println!(
                "client {i} room {} {}: joined {} ({:.1} ms), connected {} ({:.1} ms, {:?}), \
                 pkts_out {}, pkts_in {}, lost {}, rtcp_in {}, srtp_errors {}, stun {}/{} answered, \
                 deleted {}{}",
                r.room,
                if r.talker { "talker" } else { "listener" },
                r.joined,
                r.join_ms,
                r.connected,
                r.connect_ms,
                r.profile,
                r.pkts_out,
                r.pkts_in,
                r.lost,
                r.rtcp_in,
                r.srtp_errors,
                r.stun_answered,
                r.stun_sent,
                r.deleted,
                r.error
                    .as_ref()
                    .map(|e| format!(", error: {e}"))
                    .unwrap_or_default()
            );
        }
        joined += usize::from(r.joined);
        connected += usize::from(r.connected);
        deleted += usize::from(r.deleted);
        if r.joined {
            join_ms.push(r.join_ms);
        }
        if r.connected {
            connect_ms.push(r.connect_ms);
        }
        sum.pkts_out += r.pkts_out;
        sum.pkts_in += r.pkts_in;
        sum.lost += r.lost;
        sum.rtcp_in += r.rtcp_in;
        sum.srtp_errors += r.srtp_errors;
        sum.stun_sent += r.stun_sent;
        sum.stun_answered += r.stun_answered;
    }
    let pct = |v: &mut Vec<f64>, p: f64| -> f64 {
        v.sort_by(f64::total_cmp);
        v.get(((v.len() as f64 - 1.0) * p).round() as usize)
            .copied()
            .unwrap_or(0.0)
    };
    println!(
        "webrtc-clients: WHIP answer p50 {:.1} ms, p99 {:.1} ms; ICE+DTLS p50 {:.1} ms, p99 {:.1} ms; \
         rtcp_in {}, srtp_errors {}, consent checks {}/{} answered, {deleted} deleted",
        pct(&mut join_ms, 0.5),
        pct(&mut join_ms, 0.99),
        pct(&mut connect_ms, 0.5),
        pct(&mut connect_ms, 0.99),
        sum.rtcp_in,
        sum.srtp_errors,
        sum.stun_answered,
        sum.stun_sent,
    );
    println!(
        "webrtc-clients: {joined} joined, {connected} connected, pkts_out {}, pkts_in {}, lost {}",
        sum.pkts_out, sum.pkts_in, sum.lost
    );
}

// ---- one client ------------------------------------------------------------------------

/// The server's side of the session, from its answer.
struct Answer {
    location: String,
    ufrag: String,
    pwd: String,
    fingerprint: String,
    candidate: SocketAddr,
}

async fn client(index: usize, room: String, talker: bool, c: Arc<Common>) -> Report {
    let mut r = Report {
        room: room.clone(),
        talker,
        ..Report::default()
    };
    let joined = join(index, &room, &c, &mut r).await;
    if r.connected {
        c.connected.fetch_add(1, Ordering::Relaxed);
    }
    settled(&c);
    let mut session = match joined {
        Ok(s) => s,
        Err((e, None)) => {
            r.error = Some(format!("{e:#}"));
            return r;
        }
        Err((e, Some(location))) => {
            r.error = Some(format!("{e:#}"));
            delete(&c, &location, &mut r).await;
            return r;
        }
    };
    if let Err(e) = media(index, talker, &c, &mut session, &mut r).await {
        r.error = Some(format!("media: {e:#}"));
    }
    delete(&c, &session.answer.location, &mut r).await;
    r
}

/// `DELETE` of the client's WHIP resource.
async fn delete(c: &Common, location: &str, r: &mut Report) {
    match http(c, Method::DELETE, location, None, Vec::new()).await {
        Ok((StatusCode::OK, _, _)) => r.deleted = true,
        Ok((status, _, body)) => {
            r.error
                .get_or_insert(format!("DELETE: {status} {}", body.trim()));
        }
        Err(e) => {
            r.error.get_or_insert(format!("DELETE: {e:#}"));
        }
    }
}

/// One more client is past its setup; the last one says so on stderr (the script waits for
/// that line before it measures).
fn settled(c: &Common) {
    if c.settled.fetch_add(1, Ordering::AcqRel) + 1 == c.total {
        eprintln!(
            "webrtc-clients: setup done: {}/{} connected",
            c.connected.load(Ordering::Acquire),
            c.total
        );
    }
}

/// A connected client: everything the media phase needs.
struct Session {
    sock: UdpSocket,
    answer: Answer,
    ufrag: String,
    ssrc: u32,
    tx: SrtpSender,
    rx: SrtpReceiver,
    /// The association, held for the session as a browser holds it (nothing is sent on it).
    _dtls: Endpoint,
}

/// WHIP offer/answer, the nominating check, the DTLS handshake. On failure, the error and
/// the resource to delete if the server created one.
async fn join(
    index: usize,
    room: &str,
    c: &Common,
    r: &mut Report,
) -> std::result::Result<Session, (anyhow::Error, Option<String>)> {
    let sock = UdpSocket::bind(SocketAddr::new(c.bind, 0))
        .await
        .map_err(|e| (e.into(), None))?;
    let cert = RtcCertificate::generate_self_signed(vec!["bench".to_owned()], c.crypto.crypto())
        .map_err(|e| (anyhow!("certificate: {e}"), None))?;
    let fingerprint = cert
        .certificate
        .first()
        .ok_or_else(|| anyhow!("certificate without DER"))
        .and_then(|der| sha256_fingerprint(&c.crypto, der.as_ref()))
        .map_err(|e| (e, None))?;
    let ufrag = random_ice_chars(8);
    let pwd = random_ice_chars(24);
    let ssrc = u32::from_be_bytes(random_bytes());
    let offer = build_offer(&ufrag, &pwd, &fingerprint, ssrc, index);

    let t = Instant::now();
    let answer = whip_offer(c, room, index, offer)
        .await
        .map_err(|e| (e, None))?;
    r.join_ms = t.elapsed().as_secs_f64() * 1000.0;
    r.joined = true;

    let t = Instant::now();
    let deadline = tokio::time::Instant::now() + SETUP_TIMEOUT;
    let keyed = async {
        nominate(&sock, &answer, &ufrag, r, deadline).await?;
        dtls_handshake(c, &sock, cert, &answer, deadline).await
    };
    match keyed.await {
        Ok((profile, tx, rx, dtls)) => {
            r.connect_ms = t.elapsed().as_secs_f64() * 1000.0;
            r.profile = Some(profile);
            r.connected = true;
            Ok(Session {
                sock,
                answer,
                ufrag,
                ssrc,
                tx,
                rx,
                _dtls: dtls,
            })
        }
        Err(e) => Err((e, Some(answer.location))),
    }
}

/// `POST /whip/{room}` with `offer`: the answer (201 Created, Location).
async fn whip_offer(c: &Common, room: &str, index: usize, offer: String) -> Result<Answer> {
    let (status, headers, body) = http(
        c,
        Method::POST,
        &format!("/whip/{room}?name=bench-{index}"),
        Some("application/sdp"),
        offer.into_bytes(),
    )
    .await?;
    if status != StatusCode::CREATED {
        bail!("WHIP offer: {status} {}", body.trim());
    }
    let location = headers
        .get(hyper::header::LOCATION)
        .and_then(|v| v.to_str().ok())
        .ok_or_else(|| anyhow!("201 without Location"))?
        .to_owned();
    parse_answer(&body, location)
}

/// ICE: the nominating check (USE-CANDIDATE) to the server's candidate, repeated every
/// [`CHECK_RETRY`] until a Binding success response comes back.
async fn nominate(
    sock: &UdpSocket,
    answer: &Answer,
    ufrag: &str,
    r: &mut Report,
    deadline: tokio::time::Instant,
) -> Result<()> {
    let mut buf = vec![0u8; 2048];
    let username = format!("{}:{ufrag}", answer.ufrag);
    loop {
        sock.send_to(&binding_request(&username, &answer.pwd), answer.candidate)
            .await?;
        r.stun_sent += 1;
        let retry = (tokio::time::Instant::now() + CHECK_RETRY).min(deadline);
        while let Ok(got) = tokio::time::timeout_at(retry, sock.recv_from(&mut buf)).await {
            let (n, from) = got?;
            if from == answer.candidate && is_binding_success(&buf[..n]) {
                r.stun_answered += 1;
                return Ok(());
            }
        }
        if tokio::time::Instant::now() >= deadline {
            bail!("no answer to the nominating STUN check");
        }
    }
}

/// DTLS 1.2 as client (the server is passive) until the handshake completes; the negotiated
/// profile, our SRTP sender and receiver keyed from the exported material (RFC 5764 §4.2),
/// and the association.
async fn dtls_handshake(
    c: &Common,
    sock: &UdpSocket,
    cert: RtcCertificate,
    answer: &Answer,
    deadline: tokio::time::Instant,
) -> Result<(Profile, SrtpSender, SrtpReceiver, Endpoint)> {
    let server = answer.candidate;
    let config = client_config(c, cert, answer.fingerprint.clone())?;
    let mut dtls = Endpoint::new(sock.local_addr()?, TransportProtocol::UDP, None);
    dtls.connect(Instant::now(), server, config, None)
        .map_err(|e| anyhow!("DTLS connect: {e}"))?;
    let mut buf = vec![0u8; 2048];
    let mut done = false;
    while !done {
        while let Some(t) = dtls.poll_transmit() {
            sock.send_to(&t.message, server).await?;
        }
        let timer = dtls
            .poll_timeout(&server)
            .map(tokio::time::Instant::from_std)
            .unwrap_or(deadline)
            .min(deadline);
        match tokio::time::timeout_at(timer, sock.recv_from(&mut buf)).await {
            Err(_) => {
                if tokio::time::Instant::now() >= deadline {
                    bail!("DTLS handshake timed out");
                }
                dtls.handle_timeout(server, Instant::now())
                    .map_err(|e| anyhow!("DTLS: {e}"))?;
            }
            Ok(got) => {
                let (n, from) = got?;
                // RFC 7983: 20..=63 is DTLS (a late STUN answer is not).
                if from != server || !(20..=63).contains(&buf[0]) {
                    continue;
                }
                let events = dtls
                    .read(Instant::now(), server, None, buf[..n].into())
                    .map_err(|e| anyhow!("DTLS: {e}"))?;
                done = events
                    .iter()
                    .any(|e| matches!(e, EndpointEvent::HandshakeComplete));
            }
        }
    }
    while let Some(t) = dtls.poll_transmit() {
        sock.send_to(&t.message, server).await?;
    }
    let state = dtls
        .get_connection_state(server)
        .ok_or_else(|| anyhow!("no DTLS state"))?;
    let profile = match state.srtp_protection_profile() {
        SrtpProtectionProfile::Srtp_Aes128_Cm_Hmac_Sha1_80 => Profile::Aes128CmHmacSha1_80,
        SrtpProtectionProfile::Srtp_Aead_Aes_128_Gcm => Profile::AeadAes128Gcm,
        other => bail!("the server chose SRTP profile {other:?}"),
    };
    let material = state
        .export_keying_material(SRTP_EXPORTER_LABEL, &[], profile.keying_material_len())
        .map_err(|e| anyhow!("exporting keys: {e}"))?;
    let (ours, theirs) = split_keying_material(profile, material.as_ref(), DtlsRole::Client)
        .map_err(|e| anyhow!("keys: {e}"))?;
    let tx = SrtpSender::new(ours).map_err(|e| anyhow!("SRTP: {e}"))?;
    let rx = SrtpReceiver::new(theirs).map_err(|e| anyhow!("SRTP: {e}"))?;
    Ok((profile, tx, rx, dtls))
}

/// Highest extended sequence number and count of one incoming SSRC, for loss.
pub(crate) struct SeqTrack {
    first: u64,
    highest: u64,
    received: u64,
}

impl SeqTrack {
    pub(crate) fn new(seq: u16) -> Self {
        // Start in the middle of the extended space so that a reordered earlier packet does
        // not go below zero.
        let ext = (1u64 << 32) + u64::from(seq);
        SeqTrack {
            first: ext,
            highest: ext,
            received: 1,
        }
    }

    pub(crate) fn add(&mut self, seq: u16) {
        let delta = i64::from(seq.wrapping_sub(self.highest as u16) as i16);
        let ext = self.highest.saturating_add_signed(delta);
        self.highest = self.highest.max(ext);
        self.first = self.first.min(ext);
        self.received += 1;
    }

    pub(crate) fn lost(&self) -> u64 {
        (self.highest - self.first + 1).saturating_sub(self.received)
    }

    /// Packets expected so far: the span of sequence numbers seen.
    pub(crate) fn expected(&self) -> u64 {
        self.highest - self.first + 1
    }

    /// Packets received so far (duplicates included).
    pub(crate) fn received(&self) -> u64 {
        self.received
    }

    /// The highest sequence number, extended by its wrap count (RFC 3550 section 6.4.1).
    pub(crate) fn extended_highest(&self) -> u32 {
        // The track starts at 1 << 32 (wrap count 0): the low 32 bits are RFC 3550's value.
        (self.highest - (1u64 << 32)) as u32
    }
}

/// Send, keep consent, receive and count until `c.secs` have passed.
async fn media(
    index: usize,
    talker: bool,
    c: &Common,
    s: &mut Session,
    r: &mut Report,
) -> Result<()> {
    let (sock, tx, rx) = (&s.sock, &mut s.tx, &mut s.rx);
    let frames = if talker { &c.talk } else { &c.noise };
    let mut frame = index.wrapping_mul(37) % frames.len().max(1);
    let [a, b, x, y] = random_bytes();
    let mut seq = u16::from_be_bytes([a, b]);
    let mut ts = u32::from_be_bytes([x, y, a, b]);
    let username = format!("{}:{}", s.answer.ufrag, s.ufrag);
    let server = s.answer.candidate;
    let end = tokio::time::Instant::now() + c.secs;
    let mut send = tokio::time::interval(PTIME);
    let mut consent = tokio::time::interval_at(
        tokio::time::Instant::now() + CONSENT_INTERVAL,
        CONSENT_INTERVAL,
    );
    let mut tracks: HashMap<u32, SeqTrack> = HashMap::new();
    let mut rtp = Vec::with_capacity(1500);
    let mut wire = Vec::with_capacity(1500);
    let mut plain = Vec::with_capacity(1500);
    let mut buf = vec![0u8; 2048];
    let mut first = true;
    loop {
        tokio::select! {
            _ = tokio::time::sleep_until(end) => break,
            _ = send.tick() => {
                let payload = &frames[frame];
                frame = (frame + 1) % frames.len();
                rtp.clear();
                rtp.extend_from_slice(&[0x80, OPUS_PT | if first { 0x80 } else { 0 }]);
                rtp.extend_from_slice(&seq.to_be_bytes());
                rtp.extend_from_slice(&ts.to_be_bytes());
                rtp.extend_from_slice(&s.ssrc.to_be_bytes());
                rtp.extend_from_slice(payload);
                first = false;
                seq = seq.wrapping_add(1);
                ts = ts.wrapping_add(FRAME as u32);
                tx.protect_rtp(&rtp, &mut wire).map_err(|e| anyhow!("SRTP: {e}"))?;
                if sock.try_send_to(&wire, server).is_ok() {
                    r.pkts_out += 1;
                }
            }
            _ = consent.tick() => {
                if sock.try_send_to(&binding_request(&username, &s.answer.pwd), server).is_ok() {
                    r.stun_sent += 1;
                }
            }
            got = sock.recv_from(&mut buf) => {
                let (n, from) = got?;
                if from == server {
                    incoming(&buf[..n], rx, r, &mut tracks, &mut plain);
                }
            }
        }
    }
    // What was already on its way (the answers to the last checks, the last media); the
    // server keeps sending until the DELETE.
    let drained = tokio::time::Instant::now() + DRAIN;
    while let Ok(Ok((n, from))) = tokio::time::timeout_at(drained, sock.recv_from(&mut buf)).await {
        if from == server {
            incoming(&buf[..n], rx, r, &mut tracks, &mut plain);
        }
    }
    r.lost = tracks.values().map(SeqTrack::lost).sum();
    Ok(())
}

/// One datagram from the server during the media phase, demultiplexed by its first byte
/// (RFC 7983) and counted.
fn incoming(
    d: &[u8],
    rx: &mut SrtpReceiver,
    r: &mut Report,
    tracks: &mut HashMap<u32, SeqTrack>,
    plain: &mut Vec<u8>,
) {
    match d.first() {
        Some(0..=3) => r.stun_answered += u64::from(is_binding_success(d)),
        Some(128..=191) if d.len() >= 12 => {
            // RFC 5761: payload types 64..=95 (with the marker bit) are RTCP.
            if (64..=95).contains(&(d[1] & 0x7f)) {
                match rx.unprotect_rtcp(d, plain) {
                    Ok(()) => r.rtcp_in += 1,
                    Err(_) => r.srtp_errors += 1,
                }
            } else {
                match rx.unprotect_rtp(d, plain) {
                    Ok(()) => {
                        r.pkts_in += 1;
                        let seq = u16::from_be_bytes([d[2], d[3]]);
                        let ssrc = u32::from_be_bytes([d[8], d[9], d[10], d[11]]);
                        tracks
                            .entry(ssrc)
                            .and_modify(|t| t.add(seq))
                            .or_insert_with(|| SeqTrack::new(seq));
                    }
                    Err(_) => r.srtp_errors += 1,
                }
            }
        }
        _ => {} // DTLS after the handshake (none expected), anything else
    }
}

/// The offer's Opus payload type (Chromium's 111; the server answers with it).
const OPUS_PT: u8 = 111;

// ---- wire helpers --------------------------------------------------------------------

/// The recorded Chromium offer cut to its audio section (BUNDLE of that one), with our ICE
/// credentials, fingerprint, SSRC and ids in place of the browser's.
fn build_offer(ufrag: &str, pwd: &str, fingerprint: &str, ssrc: u32, index: usize) -> String {
    let mut out = String::with_capacity(2048);
    let mut section = 0; // 0: session, 1: audio, 2: the rest
    for line in CHROMIUM_OFFER.lines() {
        if line.starts_with("m=") {
            section += 1;
        }
        if section > 1 {
            break;
        }
        let line = if line.starts_with("o=") {
            format!("o=- {} 2 IN IP4 127.0.0.1", 4_000_000_000u64 + index as u64)
        } else if line.starts_with("a=group:BUNDLE") {
            "a=group:BUNDLE 0".to_owned()
        } else if line.starts_with("a=ice-ufrag:") {
            format!("a=ice-ufrag:{ufrag}")
        } else if line.starts_with("a=ice-pwd:") {
            format!("a=ice-pwd:{pwd}")
        } else if line.starts_with("a=fingerprint:") {
            format!("a=fingerprint:sha-256 {fingerprint}")
        } else if let Some(rest) = line.strip_prefix("a=ssrc:") {
            let attr = rest.split_once(' ').map(|(_, a)| a).unwrap_or_default();
            format!("a=ssrc:{ssrc} {attr}")
        } else {
            line.to_owned()
        };
        out.push_str(&line);
        out.push_str("\r\n");
    }
    out
}

/// ICE credentials, fingerprint and host candidate of the server's answer.
fn parse_answer(sdp: &str, location: String) -> Result<Answer> {
    let attr = |name: &str| {
        let prefix = format!("a={name}:");
        sdp.lines()
            .find_map(|l| l.trim_end().strip_prefix(prefix.as_str()))
            .map(str::to_owned)
            .ok_or_else(|| anyhow!("answer without a={name}"))
    };
    let fingerprint = attr("fingerprint")?;
    let fingerprint = fingerprint
        .strip_prefix("sha-256 ")
        .ok_or_else(|| anyhow!("answer fingerprint is not sha-256: {fingerprint}"))?
        .to_owned();
    // candidate:<foundation> <component> udp <priority> <ip> <port> typ host
    let cand = attr("candidate")?;
    let f: Vec<&str> = cand.split_whitespace().collect();
    let candidate = match f.as_slice() {
        [_, _, proto, _, ip, port, "typ", ..] if proto.eq_ignore_ascii_case("udp") => {
            SocketAddr::new(ip.parse()?, port.parse()?)
        }
        _ => bail!("answer candidate not understood: {cand}"),
    };
    Ok(Answer {
        location,
        ufrag: attr("ice-ufrag")?,
        pwd: attr("ice-pwd")?,
        fingerprint,
        candidate,
    })
}

/// A Binding request as Chromium sends on its nominated pair: USERNAME, ICE-CONTROLLING,
/// USE-CANDIDATE, PRIORITY, MESSAGE-INTEGRITY keyed with the server's password, FINGERPRINT.
fn binding_request(username: &str, pwd: &str) -> Vec<u8> {
    let raw = |typ: AttrType, value: &[u8]| -> Box<dyn Setter> {
        Box::new(RawAttribute {
            typ,
            length: 0,
            value: value.to_vec(),
        })
    };
    let tie: [u8; 8] = random_bytes();
    let setters: Vec<Box<dyn Setter>> = vec![
        Box::new(BINDING_REQUEST),
        Box::new(TransactionId(random_bytes())),
        Box::new(TextAttribute::new(ATTR_USERNAME, username.into())),
        raw(ATTR_ICE_CONTROLLING, &tie),
        raw(ATTR_USE_CANDIDATE, &[]),
        raw(ATTR_PRIORITY, &[0x6e, 0x00, 0x1e, 0xff]),
        Box::new(MessageIntegrity::new_short_term_integrity_with_provider(
            pwd.into(),
            &STUN_CRYPTO,
        )),
        Box::new(FINGERPRINT),
    ];
    let mut msg = Message::new();
    // Only fixed-size attributes and short strings: encoding cannot fail.
    let _ = msg.build(&setters);
    msg.raw
}

fn is_binding_success(d: &[u8]) -> bool {
    let mut msg = Message::new();
    msg.unmarshal_binary(d).is_ok() && msg.typ == BINDING_SUCCESS
}

/// A browser-like DTLS client: our certificate, `use_srtp`, extended master secret, and the
/// server's certificate accepted only if it hashes to the answer's fingerprint.
fn client_config(
    c: &Common,
    cert: RtcCertificate,
    server_fingerprint: String,
) -> Result<Arc<HandshakeConfig>> {
    let crypto = c.crypto.clone();
    let config = ConfigBuilder::default()
        .with_crypto_provider(c.crypto.clone())
        .with_certificates(vec![cert])
        .with_srtp_protection_profiles(c.profiles.clone())
        .with_extended_master_secret(ExtendedMasterSecretType::Require)
        .with_insecure_skip_verify(true)
        .with_verify_peer_certificate(Some(Arc::new(move |certs, _| {
            match certs
                .first()
                .and_then(|der| sha256_fingerprint(&crypto, der).ok())
            {
                Some(fp) if fp.eq_ignore_ascii_case(&server_fingerprint) => Ok(()),
                _ => Err(rtc_shared::error::Error::Other(
                    "server certificate does not match the answer's fingerprint".into(),
                )),
            }
        })))
        .build(true, None)
        .map_err(|e| anyhow!("DTLS config: {e}"))?;
    Ok(Arc::new(config))
}

/// SHA-256 of a DER certificate in SDP form (uppercase hex, colons).
fn sha256_fingerprint(crypto: &Arc<dyn RTCCryptoProvider>, der: &[u8]) -> Result<String> {
    let digest = crypto
        .crypto()
        .hash(HashAlgorithm::Sha256, der)
        .map_err(|e| anyhow!("sha-256: {e}"))?;
    Ok(digest
        .iter()
        .map(|b| format!("{b:02X}"))
        .collect::<Vec<_>>()
        .join(":"))
}

/// One HTTP/1.1 exchange on a fresh connection: status, headers, body.
async fn http(
    c: &Common,
    method: Method,
    path: &str,
    content_type: Option<&str>,
    body: Vec<u8>,
) -> Result<(StatusCode, hyper::HeaderMap, String)> {
    let _slot = c.http_slots.acquire().await?;
    let exchange = async {
        let stream = tokio::net::TcpStream::connect(c.http).await?;
        let (mut send, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream)).await?;
        let conn = tokio::spawn(conn);
        let mut req = Request::builder()
            .method(method)
            .uri(path)
            .header(hyper::header::HOST, c.http.to_string());
        if let Some(t) = content_type {
            req = req.header(hyper::header::CONTENT_TYPE, t);
        }
        let resp = send
            .send_request(req.body(Full::new(Bytes::from(body)))?)
            .await?;
        let (parts, body) = resp.into_parts();
        let bytes = body.collect().await?.to_bytes();
        drop(send);
        let _ = conn.await;
        anyhow::Ok((
            parts.status,
            parts.headers,
            String::from_utf8_lossy(&bytes).into_owned(),
        ))
    };
    tokio::time::timeout(SETUP_TIMEOUT, exchange)
        .await
        .map_err(|_| anyhow!("HTTP {path}: timed out"))?
}

pub(crate) fn random_bytes<const N: usize>() -> [u8; N] {
    let mut b = [0u8; N];
    // The OS RNG does not fail on Linux; a zero id would still work.
    let _ = getrandom::fill(&mut b);
    b
}

/// `n` random ICE characters (RFC 8839 ice-char: ALPHA / DIGIT / "+" / "/").
fn random_ice_chars(n: usize) -> String {
    const ICE_CHARS: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut b = vec![0u8; n];
    let _ = getrandom::fill(&mut b);
    b.iter()
        .map(|x| ICE_CHARS[usize::from(*x) % ICE_CHARS.len()] as char)
        .collect()
}

// ---- audio ---------------------------------------------------------------------------

/// libopus, 48 kHz mono, VoIP, `bitrate` bits/s, 20 ms frames: the packets of `pcm` (the
/// last partial frame dropped).
pub(crate) fn encode(pcm: &[i16], bitrate: i32) -> Result<Vec<Vec<u8>>> {
    let mut enc = opus::Encoder::new(48_000, opus::Channels::Mono, opus::Application::Voip)?;
    enc.set_bitrate(opus::Bitrate::Bits(bitrate))?;
    let mut out = Vec::with_capacity(pcm.len() / FRAME);
    let mut buf = [0u8; 1500];
    for f in pcm.chunks_exact(FRAME) {
        let n = enc.encode(f, &mut buf)?;
        out.push(buf[..n].to_vec());
    }
    Ok(out)
}

/// A tiny deterministic PRNG (xorshift) for the synthetic signals.
struct Rng(u64);

impl Rng {
    fn next_f64(&mut self) -> f64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        (self.0 >> 11) as f64 / (1u64 << 53) as f64
    }
}

/// Pink-ish noise (white noise through a one-pole low-pass, RMS `rms` of full scale; 0.003
/// is about -50 dBFS: a quiet room, what the SIP benchmark's listeners send).
pub(crate) fn quiet_noise(secs: f64, rms: f64) -> Vec<i16> {
    let n = (secs * 48_000.0) as usize;
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
    let mut lp = 0.0;
    let raw: Vec<f64> = (0..n)
        .map(|_| {
            lp = 0.9 * lp + 0.1 * (rng.next_f64() * 2.0 - 1.0);
            lp
        })
        .collect();
    let now_rms = (raw.iter().map(|x| x * x).sum::<f64>() / n.max(1) as f64).sqrt();
    let gain = if now_rms > 0.0 { rms / now_rms } else { 0.0 };
    raw.iter()
        .map(|x| (x * gain * 32767.0).clamp(-32768.0, 32767.0) as i16)
        .collect()
}

/// A speech-like signal: "syllables" of 120-300 ms (a glottal-like harmonic series with a
/// moving pitch of 100-220 Hz, an attack/decay envelope) separated by short gaps and, every
/// 2-3 s, a pause; peaks around -12 dBFS.
pub(crate) fn synthetic_speech(secs: f64) -> Vec<i16> {
    let n = (secs * 48_000.0) as usize;
    let mut out = vec![0i16; n];
    let mut rng = Rng(0x2545_f491_4f6c_dd1d);
    let mut t = 0usize;
    let mut since_pause = 0usize;
    while t < n {
        let len = (48_000.0 * (0.12 + 0.18 * rng.next_f64())) as usize;
        let f0 = 100.0 + 120.0 * rng.next_f64();
        let glide = (rng.next_f64() - 0.5) * 40.0;
        let amp = 0.12 + 0.13 * rng.next_f64();
        let mut phase = 0.0f64;
        for i in 0..len.min(n - t) {
            let x = i as f64 / len as f64;
            let f = f0 + glide * x;
            phase += 2.0 * std::f64::consts::PI * f / 48_000.0;
            let env = (x * 10.0).min(1.0) * (1.0 - x).powf(0.7);
            let mut s = 0.0;
            for h in 1..=12 {
                s += (phase * h as f64).sin() / h as f64;
            }
            out[t + i] = (amp * env * s * 0.5 * 32767.0).clamp(-32768.0, 32767.0) as i16;
        }
        t += len;
        since_pause += len;
        let gap = if since_pause > 48_000 * 2 + (rng.next_f64() * 48_000.0) as usize {
            since_pause = 0;
            0.5 + 0.5 * rng.next_f64()
        } else {
            0.03 + 0.08 * rng.next_f64()
        };
        t += (48_000.0 * gap) as usize;
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_offer_is_one_audio_section_with_our_identity() {
        let fp = ["AB"; 32].join(":");
        let o = build_offer("uFrg1234", "p".repeat(24).as_str(), &fp, 42, 7);
        let offer = webrtc_core::sdp::parse_offer(&o).expect("the server's parser accepts it");
        assert_eq!(offer.ice.ufrag, "uFrg1234");
        assert_eq!(offer.fingerprint.value, fp);
        assert_eq!(offer.opus_pt, OPUS_PT);
        assert_eq!(offer.ssrc, Some(42));
        assert_eq!(offer.media.len(), 1);
        assert!(!o.contains("m=video") && !o.contains("EpoC"));
    }

    #[test]
    fn answers_are_read_and_bad_candidates_refused() {
        let sdp = "v=0\r\na=ice-ufrag:srv\r\na=ice-pwd:secret\r\n\
                   a=fingerprint:sha-256 01:02\r\n\
                   a=candidate:1 1 udp 2130706431 127.0.0.1 36990 typ host\r\n";
        let a = parse_answer(sdp, "/whip/r/1".into()).unwrap();
        assert_eq!(
            a.candidate,
            "127.0.0.1:36990".parse::<SocketAddr>().unwrap()
        );
        assert_eq!((a.ufrag.as_str(), a.pwd.as_str()), ("srv", "secret"));
        assert_eq!(a.fingerprint, "01:02");
        assert!(parse_answer(&sdp.replace("36990", "x"), String::new()).is_err());
        assert!(parse_answer(&sdp.replace("sha-256", "sha-1"), String::new()).is_err());
    }

    #[test]
    fn loss_counts_gaps_across_wrap_and_reordering() {
        let mut t = SeqTrack::new(65_530);
        for s in [65_531u16, 65_533, 65_535, 0, 3, 2] {
            t.add(s);
        }
        // 65530..=3 is 10 packets, 7 arrived.
        assert_eq!(t.lost(), 3);
    }

    #[test]
    fn noise_is_quiet_and_speech_is_not() {
        let rms = |s: &[i16]| {
            (s.iter().map(|&x| f64::from(x).powi(2)).sum::<f64>() / s.len() as f64).sqrt() / 32768.0
        };
        let db = |x: f64| 20.0 * x.log10();
        let noise = db(rms(&quiet_noise(1.0, 0.003)));
        assert!((-51.0..-49.0).contains(&noise), "{noise} dBFS");
        let speech = db(rms(&synthetic_speech(5.0)));
        assert!((-35.0..-15.0).contains(&speech), "{speech} dBFS");
    }
}
