//! scripts/testbed: up (twice), status, exec ping across the bridge, down (twice).
use testkit::bed::Testbed;

fn namespaces(prefix: &str) -> Vec<String> {
    let out = std::process::Command::new("ip")
        .args(["netns", "list"])
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| l.split_whitespace().next())
        .filter(|n| n.starts_with(&format!("{prefix}-")))
        .map(String::from)
        .collect()
}

#[test]
fn testbed_up_exec_ping_down_is_idempotent() {
    testkit::require::e2e("network namespaces", &["ip", "ping", "sysctl"]);
    let tb = Testbed::up("us-tbed", 2);
    // A second `up` on a complete bed is fine and changes nothing.
    let again = tb.script(&["up"]);
    assert!(
        again.status.success(),
        "{}",
        String::from_utf8_lossy(&again.stderr)
    );
    let mut ns = namespaces("us-tbed");
    ns.sort();
    assert_eq!(
        ns,
        [
            "us-tbed-backup",
            "us-tbed-client1",
            "us-tbed-client2",
            "us-tbed-lan",
            "us-tbed-primary"
        ]
    );
    assert!(tb.script(&["status"]).status.success());
    for target in ["198.18.0.1", "198.18.0.2", "198.18.0.12"] {
        let out = tb.script(&["exec", "client1", "--", "ping", "-c1", "-W2", target]);
        assert!(
            out.status.success(),
            "ping {target}: {}",
            String::from_utf8_lossy(&out.stdout)
        );
    }
    // Every node has a default route (some stacks need one).
    assert!(tb
        .sh("backup", &["ip", "route"])
        .contains("default dev eth0"));
    let down = tb.script(&["down"]);
    assert!(down.status.success());
    assert!(namespaces("us-tbed").is_empty());
    let down_again = tb.script(&["down"]);
    assert!(down_again.status.success(), "down on nothing must succeed");
    // status on nothing reports failure.
    assert!(!tb.script(&["status"]).status.success());
}
