//! The API's OpenAPI document (`mcu/openapi.yaml`, served at `GET /openapi.yaml`) checked
//! against the running server with schemathesis (from PyPI; `scripts/test` installs it in
//! `target/schemathesis-venv`, see `need_schemathesis` in scripts/lib.sh): every operation
//! with its examples, the coverage phase's boundary and invalid values and a fuzzing phase,
//! every check (status codes and content types the document lists, response schemas, 401
//! without the token, invalid input refused, valid input accepted, no 5xx), against a server
//! with real participants in the documented example room.

mod common;
use common::uac::Uac;
use common::{args, bearer, with_admin_token, TestServer};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;
use testkit::http as th;

/// schemathesis' command line tool, or a failure saying how to get it.
fn schemathesis() -> PathBuf {
    let st = Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/schemathesis-venv/bin/st");
    assert!(
        st.exists(),
        "{} missing: scripts/test installs it (need_schemathesis in scripts/lib.sh)",
        st.display()
    );
    st
}

#[test]
fn the_openapi_document_matches_the_server() {
    let st = schemathesis();
    let mut a = args("39500-39549");
    a.max_participants = Some(12);
    let srv = TestServer::start(with_admin_token(a));
    // The document's example room ("standup") with real callers in it (ids 1, 2, 3).
    let mut uas = Vec::new();
    for (i, tag) in ["oa1", "oa2", "oa3"].iter().enumerate() {
        let mut ua = Uac::new(srv.sip, "standup", tag);
        let media = format!("127.0.0.1:{}", 27100 + 10 * i);
        ua.call(&ua.pcmu_offer(media.parse().unwrap()));
        uas.push(ua);
    }
    srv.wait_participants(3, Duration::from_secs(5));

    // The served document is the repository's, with this server's room size limit.
    let (code, doc) = th::get(srv.http, "/openapi.yaml").expect("GET /openapi.yaml");
    assert_eq!(code, 200, "{doc}");
    assert!(doc.starts_with("openapi: 3.0.3"), "{doc}");
    assert!(
        doc.contains("maximum: 12 } # --max-participants"),
        "the server's --max-participants in the document"
    );
    // What schemathesis found first: a JSON array is not the documented object (serde alone
    // builds the settings struct from `[true, 5]`).
    let ct = ("Content-Type", "application/json");
    let auth = bearer();
    for body in ["[true, 5]", "[null, null]", "[]"] {
        let r = th::put(
            srv.http,
            "/api/rooms/standup",
            &[("Authorization", auth.as_str()), ct],
            body.as_bytes(),
        )
        .expect("PUT");
        assert_eq!(r.status, 400, "PUT {body}: {}", r.body);
    }
    let dir = testkit::Scratch::new("openapi");
    let file = dir.path("openapi.yaml");
    std::fs::write(&file, &doc).unwrap();

    let out = Command::new(&st)
        .arg("run")
        .arg(&file)
        .args(["--url", &format!("http://{}", srv.http)])
        .args(["--header", &format!("Authorization: {}", bearer())])
        .args(["--checks", "all"])
        .args(["--phases", "examples,coverage,fuzzing"])
        .args(["--max-examples", "40", "--seed", "1", "--workers", "1"])
        .arg("--no-color")
        // Its cache (.schemathesis/) goes to the scratch directory.
        .current_dir(&dir.0)
        .output()
        .expect("run schemathesis");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    eprintln!("{text}");
    assert!(
        out.status.success(),
        "schemathesis found the server and its document disagree (exit {})",
        out.status
    );
    // It reached the operations (not a run that tested nothing).
    assert!(
        text.contains("Tested: 10") || text.contains("Tested: 11"),
        "schemathesis tested every operation"
    );
}
