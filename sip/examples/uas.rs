//! Minimal blocking driver used for interop checks with sipp and baresip: answers every call
//! to any room (UDP and TCP on the same port) and prints events. Not the production driver.
//!
//! `cargo run -p sip-core --example uas -- 127.0.0.1:5070`

use sip_core::{sdp, Config, Core, Event, Transport};
use std::collections::HashMap;
use std::io::{ErrorKind, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream, UdpSocket};
use std::time::{Duration, Instant};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let addr: SocketAddr = std::env::args()
        .nth(1)
        .unwrap_or("127.0.0.1:5070".into())
        .parse()?;
    let udp = UdpSocket::bind(addr)?;
    udp.set_nonblocking(true)?;
    let tcp = TcpListener::bind(addr)?;
    tcp.set_nonblocking(true)?;
    let mut conns: HashMap<u64, (TcpStream, SocketAddr)> = HashMap::new();
    let mut next_conn = 1u64;
    let mut core = Core::new(Config {
        local_addr: addr,
        user_agent: "Understudy-example".into(),
        max_message_size: 8192,
        seed: 1,
    });
    let start = Instant::now();
    let mut buf = vec![0u8; 65536];
    let mut session = 1u64;
    loop {
        let mut idle = true;
        while let Ok((n, from)) = udp.recv_from(&mut buf) {
            core.handle_datagram(from, &buf[..n], start.elapsed());
            idle = false;
        }
        while let Ok((s, from)) = tcp.accept() {
            s.set_nonblocking(true)?;
            conns.insert(next_conn, (s, from));
            next_conn += 1;
        }
        let mut closed = Vec::new();
        for (id, (s, from)) in conns.iter_mut() {
            match s.read(&mut buf) {
                Ok(0) => closed.push(*id),
                Ok(n) => {
                    core.handle_stream_data(*id, *from, &buf[..n], start.elapsed());
                    idle = false;
                }
                Err(e) if e.kind() == ErrorKind::WouldBlock => {}
                Err(_) => closed.push(*id),
            }
        }
        for id in closed {
            conns.remove(&id);
            core.handle_stream_closed(id, start.elapsed());
        }
        if core.poll_timeout().is_some_and(|t| t <= start.elapsed()) {
            core.handle_timeout(start.elapsed());
        }
        while let Some(ev) = core.poll_event() {
            println!("{ev:?}");
            let now = start.elapsed();
            if let Event::IncomingCall { call, offer, .. } | Event::ReInvite { call, offer } = ev {
                session += 1;
                let local = sdp::LocalMedia {
                    ip: addr.ip(),
                    rtp_port: 40000,
                    video_port: None,
                    session_id: session,
                    session_version: 1,
                };
                let _ = match offer.as_deref().map(sdp::negotiate) {
                    Some(Ok(neg)) => core.accept(call, sdp::build_answer(&local, &neg), now),
                    Some(Err(sdp::SdpError::NotAcceptable(_))) => core.reject(call, 488, now),
                    Some(Err(_)) => core.reject(call, 400, now),
                    None => core.accept(call, sdp::build_offer(&local), now),
                };
            }
        }
        while let Some(t) = core.poll_transmit() {
            match t.transport {
                Transport::Udp => {
                    let _ = udp.send_to(&t.data, t.to);
                }
                Transport::Tcp(id) => {
                    if let Some((s, _)) = conns.get_mut(&id) {
                        let _ = s.write_all(&t.data);
                    }
                }
            }
        }
        if idle {
            std::thread::sleep(Duration::from_millis(2));
        }
    }
}
