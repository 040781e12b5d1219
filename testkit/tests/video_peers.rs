//! The stock video peers: GStreamer's sender answers a PLI and a FIR with a key frame (and
//! sends none unasked), seen in the receiver's recording decoded by `pcap_harness::video`.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::time::Duration;

use pcap_harness::video::{analyze_video, RefColour, VideoOptions};
use testkit::video::{free_port_pair, VideoReceiver, VideoSender, VideoSenderConfig};
use testkit::Scratch;

const LO: IpAddr = IpAddr::V4(Ipv4Addr::LOCALHOST);

fn keyframes_on_request(rtcp_mux: bool) {
    testkit::video::require_gstreamer();
    let dir = Scratch::new(&format!("video-peers-{rtcp_mux}"));
    let mut rx = VideoReceiver::bind(SocketAddr::new(LO, free_port_pair(LO)), rtcp_mux);
    let mut cfg = VideoSenderConfig::new(rx.rtp_addr(), free_port_pair(LO), (255, 0, 0));
    cfg.rtcp_mux = rtcp_mux;
    let tx = VideoSender::start(&cfg);
    rx.wait_received(10, Duration::from_secs(10));
    // 2.5 s without a request: no key frame but the first.
    std::thread::sleep(Duration::from_millis(2500));
    let ssrc = rx.last_ssrc().expect("RTP received");
    let pli_at = rx.send_pli(ssrc);
    std::thread::sleep(Duration::from_millis(1500));
    let fir_at = rx.send_fir(ssrc);
    std::thread::sleep(Duration::from_millis(500));
    rx.send_nack(ssrc, &[1, 2, 5]);
    std::thread::sleep(Duration::from_millis(500));
    tx.stop();
    let rx_rtp = rx.rtp_addr();
    let rx_rtcp = if rtcp_mux {
        rx_rtp
    } else {
        SocketAddr::new(LO, rx_rtp.port() + 1)
    };
    let pcap = rx.finish(&dir.path("rx.pcap"));
    let opts = VideoOptions {
        colours: vec![
            RefColour::rgb("red", 255, 0, 0),
            RefColour::rgb("blue", 0, 0, 255),
        ],
        ..Default::default()
    };
    let r = analyze_video(&pcap, &opts).expect("analyze");
    eprintln!("{}", pcap_harness::cli::render_video_table(&r));
    assert_eq!(r.streams.len(), 1);
    let s = &r.streams[0];
    eprintln!(
        "key frames at {:?}, PLI at {pli_at}, FIR at {fir_at}",
        s.keyframe_times
    );
    assert_eq!(s.ssrcs, [ssrc]);
    assert_eq!((s.decoded, s.corrupt, s.undecodable), (s.frames, 0, 0));
    assert_eq!(s.colour_sequence(), ["red"]);
    assert!((cfg.width, cfg.height) == (s.resolutions[0].width, s.resolutions[0].height));
    let first = s.keyframe_times[0];
    assert!(
        first - s.first_time < 0.1,
        "the stream starts with a key frame"
    );
    let after_pli = s
        .first_keyframe_after(pli_at)
        .expect("a key frame after the PLI");
    assert!(
        after_pli - pli_at < 0.2,
        "PLI at {pli_at}, key frame at {after_pli}"
    );
    let after_fir = s
        .first_keyframe_after(fir_at)
        .expect("a key frame after the FIR");
    assert!(
        after_fir - fir_at < 0.2,
        "FIR at {fir_at}, key frame at {after_fir}"
    );
    assert_eq!(
        s.keyframe_times,
        [first, after_pli, after_fir],
        "no key frame unasked ({:.1} s before the PLI, {:.1} s before the FIR)",
        pli_at - first,
        fir_at - after_pli
    );
    // The RTCP both ways: the sender's reports reached the receiver's RTCP port, and the
    // receiver's RR, PLI, FIR and NACK are in the recording, sent to where they came from.
    let all = pcap_harness::analyze_path(&pcap).expect("analyze RTCP");
    let from_tx = all
        .rtcp_flows
        .iter()
        .find(|f| f.dst == rx_rtcp.to_string())
        .expect("sender RTCP");
    assert!(from_tx.sender_ssrcs.contains(&ssrc));
    assert!(
        from_tx.packet_types.iter().any(|&(t, _)| t == 200),
        "{from_tx:?}"
    );
    let to_tx = all
        .rtcp_flows
        .iter()
        .find(|f| f.src == rx_rtcp.to_string())
        .expect("our RTCP");
    assert_eq!(
        to_tx.dst, from_tx.src,
        "RTCP goes back where the sender's came from"
    );
    let types: Vec<u8> = to_tx.packet_types.iter().map(|&(t, _)| t).collect();
    assert_eq!(types, [201, 205, 206], "RR, NACK, PLI+FIR");
}

#[test]
fn sender_answers_pli_and_fir() {
    keyframes_on_request(false);
}

#[test]
fn sender_answers_pli_and_fir_rtcp_mux() {
    keyframes_on_request(true);
}

/// Regenerates `testkit/data/vp8_{red,blue}.pcap` (see testkit/data/README.md):
/// `cargo test -p testkit --test video_peers -- --ignored generate_recorded_vp8`.
#[test]
#[ignore]
fn generate_recorded_vp8() {
    testkit::video::require_gstreamer();
    for (name, rgb, ssrc) in [
        ("red", (255, 0, 0), 0x5245_4431u32),
        ("blue", (0, 0, 255), 0x424C_5531),
    ] {
        let rx = VideoReceiver::bind(SocketAddr::new(LO, 47000), false);
        let mut cfg = VideoSenderConfig::new(rx.rtp_addr(), 47100, rgb);
        cfg.fps = 25;
        cfg.kbps = 150;
        cfg.keyframe_max_dist = 25;
        cfg.ssrc = Some(ssrc);
        cfg.mtu = 400;
        let tx = VideoSender::start(&cfg);
        rx.wait_received(1, Duration::from_secs(10));
        std::thread::sleep(Duration::from_secs(6));
        tx.stop();
        let out = testkit::video::data_dir().join(format!("vp8_{name}.pcap"));
        rx.save_rtp_ethernet(&out);
        eprintln!(
            "{}: {} bytes",
            out.display(),
            std::fs::metadata(&out).unwrap().len()
        );
    }
}

/// sipp 3.6.1 replays the recorded VP8 capture (`play_pcap_video`) to the video port of the
/// answer: seen on the wire (tcpdump on lo) from `[media_port+2]`, and at the receiving
/// socket every recorded packet arrives and every frame decodes, red, with the recorded SSRC.
#[test]
fn sipp_replays_the_recorded_vp8_capture() {
    testkit::require::e2e(
        "sipp plays media from a raw socket; tcpdump",
        &["sipp", "tcpdump"],
    );
    let dir = Scratch::new("video-sipp");
    let media = testkit::video::free_port_block(LO, 4);
    let rx = VideoReceiver::bind(SocketAddr::new(LO, media + 2), false);
    let uas_port = free_port_pair(LO);
    let uac_port = free_port_pair(LO);
    let uac_media = testkit::video::free_port_block(LO, 4);
    let cap = testkit::capture::Capture::start(
        &dir.path("wire.pcap"),
        &format!("udp and dst port {}", media + 2),
    );
    let uas = testkit::video::sipp_video_answerer(&dir.0, media, media + 2);
    let _uas = testkit::process::Guarded(
        std::process::Command::new("sipp")
            .arg("-sf")
            .arg(&uas)
            .args(["-i", "127.0.0.1", "-p", &uas_port.to_string()])
            .args(["-m", "1", "-nostdin", "-timeout", "30s"])
            .current_dir(&dir.0)
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("spawn sipp UAS"),
    );
    let uac =
        testkit::video::sipp_video_scenario(&dir.0, &testkit::video::recorded_vp8("red"), 7000);
    let mut c = testkit::peers::sipp(
        &uac,
        "room",
        uac_port,
        uac_media,
        false,
        SocketAddr::new(LO, uas_port),
        &dir.0,
    );
    testkit::process::expect_success(&mut c, "sipp UAC", Duration::from_secs(30));
    let wire = cap.stop();
    let got = rx.finish(&dir.path("received.pcap"));
    // On the wire (tcpdump): sipp's flow, from [media_port+2], with the recorded SSRC.
    let w = analyze_video(&wire, &VideoOptions::default()).expect("analyze");
    eprintln!("{}", pcap_harness::cli::render_video_table(&w));
    assert_eq!(w.streams.len(), 1, "{:?}", w.warnings);
    // What the socket received: every packet, every frame.
    let r = analyze_video(&got, &VideoOptions::default()).expect("analyze");
    assert_eq!(r.streams.len(), 1, "{:?}", r.warnings);
    let s = &r.streams[0];
    assert_eq!((&w.streams[0].src, &w.streams[0].ssrcs), (&s.src, &s.ssrcs));
    let recorded = analyze_video(
        &testkit::video::recorded_vp8("red"),
        &VideoOptions::default(),
    )
    .expect("analyze the recording");
    let rec = &recorded.streams[0];
    assert_eq!(
        s.src,
        format!("127.0.0.1:{}", uac_media + 2),
        "from [media_port+2]"
    );
    assert_eq!(s.ssrcs, rec.ssrcs, "the recorded SSRC, as recorded");
    assert_eq!(
        (s.packets, s.missing, s.duplicates),
        (rec.packets, 0, 0),
        "every recorded packet once, in order (seq gaps: {:?})",
        s.frame_list
            .iter()
            .filter(|f| f.damage.is_some())
            .map(|f| (f.first_seq, f.damage))
            .collect::<Vec<_>>()
    );
    assert_eq!((s.decoded, s.corrupt, s.undecodable), (rec.decoded, 0, 0));
    assert_eq!(s.colour_sequence(), ["red"]);
    assert!(s.freeze.ms < 100.0, "paced as recorded: {:?}", s.freeze);
}
