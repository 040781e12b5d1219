//! tcpdump captures, armed (tcpdump said "listening on") before [`Capture`] is returned.

use crate::process::{signal, wait_timeout};
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

/// A running tcpdump writing a pcap file; killed on drop, stopped cleanly by [`Capture::stop`].
pub struct Capture {
    child: Child,
    /// The pcap file being written.
    pub file: PathBuf,
}

impl Capture {
    /// tcpdump on loopback (root).
    pub fn start(file: &Path, filter: &str) -> Capture {
        let mut cmd = Command::new("tcpdump");
        cmd.args(["-i", "lo"]);
        Capture::spawn(cmd, file, filter)
    }

    /// tcpdump on `iface` inside network namespace `netns` (`ip netns exec`).
    pub fn start_in(netns: &str, iface: &str, file: &Path, filter: &str) -> Capture {
        let mut cmd = Command::new("ip");
        cmd.args(["netns", "exec", netns, "tcpdump", "-i", iface]);
        Capture::spawn(cmd, file, filter)
    }

    /// Run `cmd` (a tcpdump command line up to and including its interface) writing to
    /// `file`, and return once it is listening.
    fn spawn(mut cmd: Command, file: &Path, filter: &str) -> Capture {
        crate::require::e2e("tcpdump", &["tcpdump"]);
        let mut child = cmd
            .args(["-U", "--immediate-mode", "-n", "-s", "0", "-w"])
            .arg(file)
            .arg(filter)
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn tcpdump");
        let stderr = child.stderr.take().expect("piped stderr");
        let mut lines = BufReader::new(stderr).lines();
        // tcpdump prints "listening on IFACE, ..." once the capture is armed.
        let mut said = vec![];
        loop {
            match lines.next() {
                Some(Ok(l)) if l.contains("listening on") => break,
                Some(Ok(l)) => said.push(l),
                _ => panic!("tcpdump exited before listening: {said:?}"),
            }
        }
        std::thread::spawn(move || for _ in lines {});
        Capture {
            child,
            file: file.to_path_buf(),
        }
    }

    /// Wait until the file holds at least `n` packets (tcpdump writes each one as it comes:
    /// `-U`); fails the test after `timeout`.
    pub fn wait_packets(&self, n: usize, timeout: Duration) {
        let got = crate::poll(timeout, || {
            let c = pcap_packets(&self.file);
            (c >= n).then_some(c)
        });
        assert!(
            got.is_some(),
            "{}: {} packets after {timeout:?}, expected {n}",
            self.file.display(),
            pcap_packets(&self.file)
        );
    }

    /// Stop (SIGINT: tcpdump flushes) and return the file.
    pub fn stop(mut self) -> PathBuf {
        signal(self.child.id(), libc::SIGINT);
        wait_timeout(&mut self.child, Duration::from_secs(10)).expect("tcpdump did not stop");
        self.file.clone()
    }
}

impl Drop for Capture {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Number of complete packet records in a classic pcap file (what `tcpdump -w` writes);
/// 0 while the file or its header is missing.
pub fn pcap_packets(file: &Path) -> usize {
    let Ok(data) = std::fs::read(file) else {
        return 0;
    };
    let Some(magic) = data.get(..4) else {
        return 0;
    };
    let be = match magic {
        [0xd4, 0xc3, 0xb2, 0xa1] | [0x4d, 0x3c, 0xb2, 0xa1] => false,
        [0xa1, 0xb2, 0xc3, 0xd4] | [0xa1, 0xb2, 0x3c, 0x4d] => true,
        _ => return 0,
    };
    let (mut at, mut n) = (24, 0);
    while let Some(h) = data.get(at..at + 16) {
        let b = [h[8], h[9], h[10], h[11]];
        let len = if be {
            u32::from_be_bytes(b)
        } else {
            u32::from_le_bytes(b)
        } as usize;
        if data.len() < at + 16 + len {
            break;
        }
        at += 16 + len;
        n += 1;
    }
    n
}
