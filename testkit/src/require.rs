//! The one skip policy: a test that cannot run on this machine fails, saying why and how to
//! fix it. Call these first in a test, before any setup.

use std::path::Path;

/// The Debian package that provides `tool` (as `scripts/test` installs it).
fn package_of(tool: &str) -> &str {
    match tool {
        "sipp" => "sip-tester",
        "baresip" => "baresip-core",
        "ip" => "iproute2",
        "ping" => "iputils-ping",
        "sysctl" => "procps",
        "mergecap" => "wireshark-common",
        "gst-launch-1.0" | "gst-inspect-1.0" => "gstreamer1.0-tools",
        other => other,
    }
}

/// Whether the effective user is root.
pub fn is_root() -> bool {
    // SAFETY: geteuid(2) has no preconditions and cannot fail.
    unsafe { libc::geteuid() == 0 }
}

/// Whether `tool` is an executable file in `PATH`.
pub fn have_tool(tool: &str) -> bool {
    use std::os::unix::fs::PermissionsExt;
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path).any(|d| {
        std::fs::metadata(d.join(tool))
            .is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
    })
}

/// Fail unless running as root; `what` says what needs it (e.g. "tcpdump on lo").
pub fn root(what: &str) {
    assert!(
        is_root(),
        "needs root ({what}): run scripts/test as root, or this test alone with sudo"
    );
}

/// Fail unless every tool is in `PATH`, naming the missing ones and their packages.
pub fn tools(tools: &[&str]) {
    let missing: Vec<String> = tools
        .iter()
        .filter(|t| !have_tool(t))
        .map(|t| format!("{t} (package {})", package_of(t)))
        .collect();
    assert!(
        missing.is_empty(),
        "tool(s) missing: {}: scripts/test installs them (or apt-get install the packages)",
        missing.join(", ")
    );
}

/// Fail unless `path` exists; `package` provides it.
pub fn file(path: &str, package: &str) {
    assert!(
        Path::new(path).exists(),
        "{path} missing: scripts/test installs package {package}"
    );
}

/// Root and the tools: what most end-to-end tests need (tcpdump, namespaces).
pub fn e2e(what: &str, tool_list: &[&str]) {
    tools(tool_list);
    root(what);
}
