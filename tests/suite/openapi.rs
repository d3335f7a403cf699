//! The REST shim's OpenAPI document: served at `GET /openapi.json` by the
//! real binary, equal byte for byte to the repository's `docs/openapi.json`
//! and to what `sessiond openapi` prints.

use crate::support::*;

const REGENERATE: &str = "regenerate it with `cargo run -- openapi > docs/openapi.json` \
                          and commit the result";

fn committed() -> String {
    std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/docs/openapi.json"))
        .unwrap_or_else(|e| panic!("docs/openapi.json: {e}; {REGENERATE}"))
}

#[tokio::test]
async fn openapi_document_served_equals_the_committed_one() {
    let dir = tempfile::tempdir().unwrap();
    let mut args = serve_args(&dir.path().join("s.db"));
    let rest_off = args.iter().position(|a| a == "off").unwrap();
    args[rest_off] = "127.0.0.1:0".into();
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let server = ServerProcess::spawn(&args);
    let base = format!("http://{}", server.rest_addr.expect("REST listener"));

    let resp = http()
        .get(format!("{base}/openapi.json"))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status().as_u16(), 200);
    assert_eq!(
        resp.headers()
            .get("content-type")
            .and_then(|v| v.to_str().ok()),
        Some("application/json")
    );
    let served = resp.text().await.unwrap();
    let doc: serde_json::Value = serde_json::from_str(&served).expect("served document is JSON");
    assert_eq!(doc["openapi"], "3.1.0");

    let committed = committed();
    if served != committed {
        let line = served
            .lines()
            .zip(committed.lines())
            .position(|(a, b)| a != b)
            .map_or(served.lines().count().min(committed.lines().count()), |n| n)
            + 1;
        panic!(
            "the served OpenAPI document differs from docs/openapi.json (first at line {line}); \
             {REGENERATE}"
        );
    }
}

#[test]
fn openapi_command_prints_the_committed_document() {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_sessiond"))
        .arg("openapi")
        .output()
        .expect("run sessiond openapi");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        out.stdout == committed().as_bytes(),
        "`sessiond openapi` differs from docs/openapi.json; {REGENERATE}"
    );
}

/// Every path the shim routes is in the document, with the methods it serves.
#[test]
fn openapi_document_lists_every_route() {
    let doc: serde_json::Value = serde_json::from_str(&committed()).unwrap();
    let paths = doc["paths"].as_object().unwrap();
    for (method, path) in [
        ("post", "/api/Session/logon"),
        ("post", "/api/Session/logoff"),
        ("post", "/api/Session/{SessionId}/logoff"),
        ("get", "/api/Session"),
        ("post", "/api/logout_user"),
        ("post", "/ma/api/v2/user/login"),
        ("post", "/saas/api/v2/user/logout"),
        ("post", "/api/v2/user/logout"),
        ("post", "/ma/api/v2/user/logoutall"),
        ("post", "/saas/api/v2/user/logoutall"),
        ("post", "/api/v2/user/logoutall"),
        ("get", "/openapi.json"),
    ] {
        let op = &paths.get(path).unwrap_or_else(|| panic!("{path} missing"))[method];
        assert!(op.is_object(), "{method} {path} missing");
        assert!(op["responses"].is_object(), "{method} {path}: no responses");
    }
    assert_eq!(paths.len(), 12, "paths: {:?}", paths.keys());
    // The headers the vendors authenticate with.
    let header = |path: &str, name: &str| {
        paths[path]["post"]["parameters"]
            .as_array()
            .into_iter()
            .flatten()
            .any(|p| p["in"] == "header" && p["name"] == name)
    };
    assert!(header("/api/Session/logoff", "auth_token"));
    assert!(header("/saas/api/v2/user/logout", "icSessionId"));
    assert!(header("/api/v2/user/logout", "icSessionId"));
}
