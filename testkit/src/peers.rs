//! Real SIP peers as child processes: sipp (scenario files, sipp's recorded captures) and
//! baresip 1.0 (Opus and G.711, speech from a WAV file; VP8 video from its `fakevideo`
//! source with [`baresip_video_config`]), and speech for them (espeak-ng, ffmpeg).

use crate::process::run;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

/// Where package sip-tester installs sipp's recorded captures.
pub const SIPP_PCAP_DIR: &str = "/usr/share/sip-tester";

/// sipp on loopback running `scenario` once against `server`: room `room` (the
/// Request-URI user), SIP from `127.0.0.1:sip_port` (TCP when `tcp`), media from
/// `media_port`; it gives up after 40 s. Files it writes go to `cwd`.
pub fn sipp(
    scenario: &Path,
    room: &str,
    sip_port: u16,
    media_port: u16,
    tcp: bool,
    server: SocketAddr,
    cwd: &Path,
) -> Child {
    let mut c = Command::new("sipp");
    c.arg("-sf")
        .arg(scenario)
        .args(["-s", room, "-i", "127.0.0.1"])
        .args(["-p", &sip_port.to_string(), "-mp", &media_port.to_string()])
        .args(["-m", "1", "-l", "1", "-nostdin"])
        .args(["-timeout", "40s", "-timeout_error"]);
    if tcp {
        c.args(["-t", "t1"]);
    }
    c.arg(server.to_string())
        .current_dir(cwd)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn sipp")
}

/// sipp's built-in uac_pcap scenario written to `dir`, pointing at the recorded captures'
/// absolute paths (G.711 A-law speech, then RFC 2833 DTMF '1').
pub fn uac_pcap_scenario(dir: &Path) -> PathBuf {
    let out = Command::new("sipp")
        .args(["-sd", "uac_pcap"])
        .output()
        .expect("sipp -sd uac_pcap");
    let scen = String::from_utf8(out.stdout)
        .expect("scenario is UTF-8")
        .replace("pcap/", &format!("{SIPP_PCAP_DIR}/"));
    let p = dir.join("uac_pcap.xml");
    std::fs::write(&p, scen).expect("write scenario");
    p
}

/// [`uac_pcap_scenario`] with the recorded A-law capture played twice back to back (about
/// 14 s of speech over 16 s) before the DTMF and the BYE: speech on both sides of a fault.
pub fn uac_pcap_scenario_twice(dir: &Path) -> PathBuf {
    uac_pcap_scenario_times(dir, 2)
}

/// [`uac_pcap_scenario`] with the recorded A-law capture (7.05 s) played `times` times, each
/// play followed by sipp's 8 s pause, before the DTMF and the BYE: a call of about
/// `8 * times + 1` s with speech throughout (e.g. 4: about 33 s, room for two faults).
/// `times` is at least 1 (1 is sipp's own scenario).
pub fn uac_pcap_scenario_times(dir: &Path, times: u32) -> PathBuf {
    assert!(
        times >= 1,
        "uac_pcap_scenario_times: times must be at least 1"
    );
    let p = uac_pcap_scenario(dir);
    let scen = std::fs::read_to_string(&p).expect("read scenario");
    let play = "<pause milliseconds=\"8000\"/>";
    assert!(scen.contains(play), "sipp's uac_pcap scenario changed");
    let again = format!(
        "\n  <nop><action><exec play_pcap_audio=\"{SIPP_PCAP_DIR}/g711a.pcap\"/>\
         </action></nop>\n  {play}"
    );
    let plays = format!("{play}{}", again.repeat(times as usize - 1));
    std::fs::write(&p, scen.replacen(play, &plays, 1)).expect("write scenario");
    p
}

/// `text` spoken by espeak-ng into `dir/name` (22.05 kHz mono WAV).
pub fn espeak(dir: &Path, name: &str, text: &str) -> PathBuf {
    let wav = dir.join(name);
    run(Command::new("espeak-ng").arg("-w").arg(&wav).arg(text));
    wav
}

/// `src` converted to 48 kHz stereo (what baresip's aufile source needs with Opus) as
/// `dst`; looped to `secs` seconds when given.
pub fn to_48k_stereo(src: &Path, dst: &Path, secs: Option<u32>) {
    let mut c = Command::new("ffmpeg");
    c.args(["-y", "-loglevel", "error"]);
    if secs.is_some() {
        c.args(["-stream_loop", "-1"]);
    }
    c.arg("-i").arg(src);
    if let Some(s) = secs {
        c.args(["-t", &s.to_string()]);
    }
    run(c.args(["-ar", "48000", "-ac", "2"]).arg(dst));
}

/// Start baresip 1.0 on loopback (SIP `sip_port`, RTP in `rtp`, speech from `wav`) dialing
/// `uri`; it hangs up when the wav ends, or quits after `secs`. Its config goes to
/// `dir/baresip`.
pub fn baresip_dial(
    dir: &Path,
    sip_port: u16,
    rtp: (u16, u16),
    wav: &Path,
    uri: &str,
    secs: u32,
) -> Child {
    let bcfg = baresip_config(dir, "127.0.0.1", sip_port, rtp, wav);
    baresip_command(Command::new("baresip"), &bcfg, uri, secs)
        .spawn()
        .expect("spawn baresip")
}

/// Write a baresip 1.0 config (Opus and G.711, speech from `wav`) listening on
/// `ip:sip_port` into `dir/baresip`, and return that directory.
pub fn baresip_config(dir: &Path, ip: &str, sip_port: u16, rtp: (u16, u16), wav: &Path) -> PathBuf {
    let bcfg = dir.join("baresip");
    std::fs::create_dir_all(&bcfg).expect("baresip config dir");
    std::fs::write(
        bcfg.join("config"),
        format!(
            "poll_method epoll\nsip_listen {ip}:{sip_port}\nnet_interface {ip}\n\
             audio_source aufile,{wav}\nrtp_ports {}-{}\nmodule_path /usr/lib/baresip/modules\n\
             module opus.so\nmodule g711.so\nmodule aufile.so\nmodule account.so\nmodule menu.so\n",
            rtp.0,
            rtp.1,
            wav = wav.display()
        ),
    )
    .expect("write baresip config");
    std::fs::write(
        bcfg.join("accounts"),
        format!("<sip:baresip@{ip}>;regint=0\n"),
    )
    .expect("write baresip accounts");
    bcfg
}

/// The video lines [`baresip_video_config`] adds to a baresip 1.0 config: the `vp8` codec,
/// the `fakevideo` source and its null display (nothing opens a window: it runs headless),
/// 320x240 at 25 fps, 300 kbit/s.
///
/// baresip then offers `m=video PORT RTP/AVP 96` with `a=rtpmap:96 VP8/90000`,
/// `a=fmtp:96 max-fs=3600`, `a=rtcp-fb:* nack pli` (no `ccm fir`), RTCP on the next port
/// (`rtcp_mux` is off by default), and sends 15-bit picture IDs. It answers a PLI (and a
/// generic NACK, and an RFC 2032 FIR, RTCP type 192) with a key frame on the next frame; an
/// RFC 5104 FIR (`ccm fir`, PSFB FMT 4) is ignored. Without a request libvpx makes a key frame
/// every 128 frames (5.1 s at 25 fps).
pub const BARESIP_VIDEO_CONFIG: &str = "module vp8.so\nmodule fakevideo.so\n\
     video_source fakevideo,nil\nvideo_display fakevideo,nil\nvideo_size 320x240\n\
     video_fps 25\nvideo_bitrate 300000\n";

/// The picture of baresip's `fakevideo` source: three vertical bars, red, green and blue,
/// each a third of the width. Its mean colour as VP8 carries it is Y 89, Cb 129, Cr 128,
/// the mean of the three: sRGB (85, 85, 85), a dark grey.
pub const FAKEVIDEO_MEAN_RGB: (u8, u8, u8) = (85, 85, 85);

/// [`baresip_config`] with [`BARESIP_VIDEO_CONFIG`]: baresip also offers and sends VP8
/// video (its `fakevideo` picture, [`FAKEVIDEO_MEAN_RGB`]) and decodes what it receives
/// into a null display. `rtp` must leave room for both streams' RTP and RTCP (4 ports).
pub fn baresip_video_config(
    dir: &Path,
    ip: &str,
    sip_port: u16,
    rtp: (u16, u16),
    wav: &Path,
) -> PathBuf {
    let bcfg = baresip_config(dir, ip, sip_port, rtp, wav);
    let cfg = bcfg.join("config");
    let mut text = std::fs::read_to_string(&cfg).expect("read baresip config");
    text.push_str(BARESIP_VIDEO_CONFIG);
    std::fs::write(&cfg, text).expect("write baresip config");
    bcfg
}

/// Complete `cmd` (`baresip`, or a prefix such as `ip netns exec NS baresip`) into a
/// non-interactive baresip dialing `uri` with the config in `bcfg`, quitting after `secs`.
pub fn baresip_command(mut cmd: Command, bcfg: &Path, uri: &str, secs: u32) -> Command {
    cmd.arg("-f")
        .arg(bcfg)
        .args(["-t", &secs.to_string(), "-e", &format!("/dial {uri}")])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    cmd
}
