//! netfilter-shim's namespace tests on the shared test kit: each test brings up its own test
//! bed (`us-<name>` prefix, torn down on drop, even when the test panics) and runs code
//! inside its nodes' namespaces from dedicated threads.
#![allow(dead_code)]

pub use testkit::bed::{collect, enter_netns, fmt_mac, Testbed, BACKUP, CLIENT1, PRIMARY, VIP};

/// What every test here needs: root (namespaces, netfilter) and the tools it runs. Fails
/// the test, saying how to fix it, when something is missing.
pub fn prerequisites() {
    testkit::require::e2e(
        "network namespaces and netfilter rules",
        &["ip", "iptables", "ping", "sysctl"],
    );
}

/// The MAC of `node`'s eth0 (read through netfilter-shim, inside the node's namespace).
pub fn mac(tb: &Testbed, node: &str) -> [u8; 6] {
    tb.run_in(node, || netfilter_shim::takeover::hw_addr("eth0").unwrap())
}
