//! The REST listener's OpenAPI document: served at `GET /openapi.json` by
//! the real binary, equal byte for byte to the repository's
//! `docs/openapi.json` and to what `sessiond openapi` prints, and naming
//! every route with the methods it serves.

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
    signal_routes_are_served(&base, &doc).await;

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

/// Each documented Shared Signals and Global Token Revocation operation is
/// routed by the live server with that method: without credentials the
/// public ones answer 200 and the others 401, each as JSON (a path the
/// server does not route answers the OpenSRS-shaped 404). A method the
/// path does not serve is a JSON 405 `{err, description}`, as the
/// document's description says.
async fn signal_routes_are_served(base: &str, doc: &serde_json::Value) {
    let mut seen = 0;
    for (path, item) in doc["paths"].as_object().unwrap() {
        for (method, op) in item.as_object().unwrap() {
            let tag = op["tags"][0].as_str().unwrap_or_default();
            if tag != "Shared Signals" && tag != "Global Token Revocation" {
                continue;
            }
            seen += 1;
            let url = format!(
                "{base}{}",
                path.replace("{stream_id}", "x")
                    .replace("{issuer_path}", "x")
            );
            let method = reqwest::Method::from_bytes(method.to_uppercase().as_bytes()).unwrap();
            let resp = http().request(method.clone(), &url).send().await.unwrap();
            let (status, ct, body) = json_of(resp).await;
            let expected = if op.get("security").is_some() {
                401
            } else if path.contains("{issuer_path}") {
                404 // The listener's issuer has no path.
            } else {
                200
            };
            assert_eq!(status, expected, "{method} {path}: {body}");
            assert_eq!(ct, "application/json", "{method} {path}");
            if expected != 200 {
                assert!(
                    body["err"].is_string() && body["description"].is_string(),
                    "{method} {path}: {body}"
                );
            }
            // TRACE is served by none of them.
            let resp = http()
                .request(reqwest::Method::TRACE, &url)
                .send()
                .await
                .unwrap();
            let (status, ct, body) = json_of(resp).await;
            assert_eq!(status, 405, "TRACE {path}: {body}");
            assert_eq!(ct, "application/json", "TRACE {path}");
            assert!(
                body["err"].is_string() && body["description"].is_string(),
                "TRACE {path}: {body}"
            );
        }
    }
    assert_eq!(
        seen, 15,
        "Shared Signals and Global Token Revocation operations"
    );
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
        ("get", "/.well-known/ssf-configuration"),
        ("get", "/.well-known/ssf-configuration/{issuer_path}"),
        ("get", "/ssf/jwks.json"),
        ("get", "/ssf/streams"),
        ("post", "/ssf/streams"),
        ("patch", "/ssf/streams"),
        ("put", "/ssf/streams"),
        ("delete", "/ssf/streams"),
        ("get", "/ssf/status"),
        ("post", "/ssf/status"),
        ("post", "/ssf/subjects/add"),
        ("post", "/ssf/subjects/remove"),
        ("post", "/ssf/verify"),
        ("post", "/ssf/poll/{stream_id}"),
        ("post", "/global-token-revocation"),
    ] {
        let op = &paths.get(path).unwrap_or_else(|| panic!("{path} missing"))[method];
        assert!(op.is_object(), "{method} {path} missing");
        assert!(op["responses"].is_object(), "{method} {path}: no responses");
    }
    assert_eq!(paths.len(), 22, "paths: {:?}", paths.keys());
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

/// The Shared Signals and Global Token Revocation operations: bearer
/// authorization where the handlers ask for it, every status the handlers
/// answer, and every error as `{err, description}`.
#[test]
fn openapi_document_describes_the_signal_routes() {
    let doc: serde_json::Value = serde_json::from_str(&committed()).unwrap();
    let paths = &doc["paths"];
    let components = &doc["components"];
    assert_eq!(components["securitySchemes"]["bearer"]["type"], "http");
    assert_eq!(components["securitySchemes"]["bearer"]["scheme"], "bearer");
    let error = serde_json::json!({"$ref": "#/components/schemas/SsfError"});
    assert_eq!(
        components["schemas"]["SsfError"]["required"],
        serde_json::json!(["err", "description"])
    );

    // What every call with a bearer token may answer, and every call that
    // reads a body, besides the statuses of its own.
    const AUTHORIZED: [u16; 4] = [401, 429, 500, 503];
    const BODY: [u16; 2] = [400, 413];
    #[derive(Clone, Copy, PartialEq)]
    enum Call {
        Public,
        Bearer,
        BearerWithBody,
    }
    use Call::*;
    let ops: [(&str, &str, &[u16], Call); 15] = [
        ("get", "/.well-known/ssf-configuration", &[200], Public),
        (
            "get",
            "/.well-known/ssf-configuration/{issuer_path}",
            &[200, 404],
            Public,
        ),
        ("get", "/ssf/jwks.json", &[200], Public),
        ("get", "/ssf/streams", &[200, 400, 404], Bearer),
        ("post", "/ssf/streams", &[201, 403, 409], BearerWithBody),
        ("patch", "/ssf/streams", &[200, 404], BearerWithBody),
        ("put", "/ssf/streams", &[200, 404], BearerWithBody),
        ("delete", "/ssf/streams", &[204, 400, 404], Bearer),
        ("get", "/ssf/status", &[200, 400, 404], Bearer),
        ("post", "/ssf/status", &[200, 404], BearerWithBody),
        ("post", "/ssf/subjects/add", &[200, 404], BearerWithBody),
        ("post", "/ssf/subjects/remove", &[204, 404], BearerWithBody),
        ("post", "/ssf/verify", &[204, 404], BearerWithBody),
        ("post", "/ssf/poll/{stream_id}", &[200, 404], BearerWithBody),
        (
            "post",
            "/global-token-revocation",
            &[204, 403, 404, 422],
            BearerWithBody,
        ),
    ];
    for (method, path, own, call) in ops {
        let op = &paths[path][method];
        let mut statuses = own.to_vec();
        if call != Public {
            statuses.extend(AUTHORIZED);
        }
        if call == BearerWithBody {
            statuses.extend(BODY);
        }
        statuses.sort_unstable();
        statuses.dedup();
        let mut documented: Vec<u16> = op["responses"]
            .as_object()
            .unwrap_or_else(|| panic!("{method} {path} missing"))
            .keys()
            .map(|k| k.parse().unwrap())
            .collect();
        documented.sort_unstable();
        assert_eq!(documented, statuses, "{method} {path}");
        let security = if call == Public {
            serde_json::Value::Null
        } else {
            serde_json::json!([{"bearer": []}])
        };
        assert_eq!(op["security"], security, "{method} {path}");
        for (status, response) in op["responses"].as_object().unwrap() {
            if !status.starts_with('4') && !status.starts_with('5') {
                continue;
            }
            // A shared answer is a reference to components.responses.
            let response = match response["$ref"].as_str() {
                Some(r) => {
                    &components["responses"][r.trim_start_matches("#/components/responses/")]
                }
                None => response,
            };
            assert_eq!(
                response["content"]["application/json"]["schema"], error,
                "{method} {path} {status}"
            );
            if status == "429" || status == "503" {
                assert!(
                    response["headers"]["Retry-After"].is_object(),
                    "{method} {path} {status}: Retry-After"
                );
            }
        }
    }
    // An empty poll is a poll with every default.
    assert_eq!(
        paths["/ssf/poll/{stream_id}"]["post"]["requestBody"]["required"],
        false
    );
}

/// Global Token Revocation: the three subject formats the handler takes,
/// each with the members it reads and a request example; who may call (the
/// service credential or an identity provider's own secret, an admin's
/// session 403); and its own 401.
#[test]
fn openapi_document_describes_global_token_revocation() {
    let doc: serde_json::Value = serde_json::from_str(&committed()).unwrap();
    let schemas = &doc["components"]["schemas"];
    let schema = |r: &serde_json::Value| -> serde_json::Value {
        let name = r["$ref"]
            .as_str()
            .unwrap_or_else(|| panic!("not a reference: {r}"))
            .trim_start_matches("#/components/schemas/");
        schemas[name].clone()
    };
    let op = &doc["paths"]["/global-token-revocation"]["post"];
    let content = &op["requestBody"]["content"]["application/json"];
    assert_eq!(op["requestBody"]["required"], true);
    let request = schema(&content["schema"]);
    assert_eq!(request["required"], serde_json::json!(["sub_id"]));
    let subject = schema(&request["properties"]["sub_id"]);
    let variants = subject["oneOf"].as_array().expect("sub_id is a oneOf");
    let mut formats: Vec<(String, Vec<String>)> = variants
        .iter()
        .map(|v| {
            let format = &v["properties"]["format"]["enum"];
            assert_eq!(format.as_array().map(Vec::len), Some(1), "{v}");
            let mut required: Vec<String> = v["required"]
                .as_array()
                .unwrap()
                .iter()
                .map(|r| r.as_str().unwrap().to_owned())
                .collect();
            required.sort();
            (format[0].as_str().unwrap().to_owned(), required)
        })
        .collect();
    formats.sort();
    let owned = |v: &[&str]| v.iter().map(|s| (*s).to_owned()).collect::<Vec<_>>();
    assert_eq!(
        formats,
        vec![
            ("email".to_owned(), owned(&["email", "format"])),
            ("iss_sub".to_owned(), owned(&["format", "iss", "sub"])),
            ("opaque".to_owned(), owned(&["format", "id"])),
        ]
    );
    // A request example of each format.
    let mut examples: Vec<&str> = content["examples"]
        .as_object()
        .expect("request examples")
        .values()
        .map(|e| e["value"]["sub_id"]["format"].as_str().unwrap())
        .collect();
    examples.sort_unstable();
    assert_eq!(examples, ["email", "iss_sub", "opaque"]);

    // Who may call, and what the others get.
    let description = op["description"].as_str().unwrap();
    for needle in ["service credential", "--gtr-idp", "404", "403", "iss_sub"] {
        assert!(description.contains(needle), "description: {needle}");
    }
    assert_eq!(
        op["security"],
        serde_json::json!([{"bearer": []}]),
        "bearer authorization"
    );
    let responses = &op["responses"];
    assert!(responses["401"]["headers"]["WWW-Authenticate"].is_object());
    assert!(responses["401"]["description"]
        .as_str()
        .unwrap()
        .contains("identity provider"));
    assert!(responses["403"]["description"]
        .as_str()
        .unwrap()
        .contains("KIND_ADMIN"));
    assert!(responses["400"]["description"]
        .as_str()
        .unwrap()
        .contains("iss_sub"));
    let gtr_idp = doc["components"]["securitySchemes"]["bearer"]["description"]
        .as_str()
        .unwrap();
    assert!(gtr_idp.contains("--gtr-idp"), "{gtr_idp}");
}
