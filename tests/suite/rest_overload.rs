//! A call shed under overload (ErrorInfo OVERLOADED) is not a credential
//! failure: each vendor's shape says "overloaded", never "too many failed
//! attempts" or "invalid credentials".

use crate::support::*;
use serde_json::{json, Value};
use sessiond::domain::password::HashCost;

/// (vendor, path, body) of a credential-checking call per vendor.
fn calls() -> [(&'static str, &'static str, Value); 3] {
    [
        (
            "ras",
            "/api/Session/logon",
            json!({"username": DOMAIN_ADMIN.0, "password": DOMAIN_ADMIN.1}),
        ),
        (
            "informatica",
            "/ma/api/v2/user/login",
            json!({"@type": "login", "username": USEREMAIL.0, "password": USEREMAIL.1}),
        ),
        (
            "oma",
            "/api/logout_user",
            json!({"credentials": {"user": DOMAIN_ADMIN.0, "password": DOMAIN_ADMIN.1}, "user": JOE.0}),
        ),
    ]
}

/// Whether the answer is a shed call, checking its shape; panics on any
/// answer that is neither a success nor an overload.
fn is_overload(vendor: &str, status: u16, body: &Value) -> bool {
    let text = body.to_string();
    assert!(
        !text.contains("Too many failed") && !text.contains("UI_10000"),
        "{vendor}: an overload read as a credential failure: {text}"
    );
    match vendor {
        "ras" | "informatica" if status == 200 => false,
        "ras" => {
            assert_eq!(status, 429, "{text}");
            assert_eq!(body["detail"], "Server overloaded; retry shortly.");
            true
        }
        "informatica" => {
            assert_eq!(status, 429, "{text}");
            assert_eq!(body["code"], "SERVER_OVERLOADED");
            assert_eq!(body["statusCode"], 429);
            true
        }
        _ => {
            assert_eq!(status, 200);
            if body["success"] == true {
                return false;
            }
            assert_eq!(body["error_number"], 0, "{text}");
            assert!(
                body["error"].as_str().unwrap_or("").contains("overloaded"),
                "{text}"
            );
            true
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shed_calls_read_as_overload_in_every_vendor_shape() {
    // Slow logins and room for one call at a time.
    let server = TestServer::start_rest_with(|c| {
        c.max_in_flight = 1;
        c.policy.hash_cost = HashCost {
            memory_kib: 16 * 1024,
            iterations: 2,
            parallelism: 1,
        };
        c.policy.hash_concurrency = 1;
        // Logins queue for Argon2 apart from the in-flight budget: one waits.
        c.policy.hash_queue_max = 1;
    })
    .await;
    let base = server.rest();
    for (vendor, path, body) in calls() {
        let mut pending = Vec::new();
        for _ in 0..12 {
            let (url, body) = (format!("{base}{path}"), body.clone());
            pending.push(tokio::spawn(async move {
                json_of(
                    http()
                        .post(url)
                        .header("content-type", "application/json")
                        .json(&body)
                        .send()
                        .await
                        .unwrap(),
                )
                .await
            }));
        }
        let mut shed = 0;
        for p in pending {
            let (status, _, body) = p.await.unwrap();
            if is_overload(vendor, status, &body) {
                shed += 1;
            }
        }
        assert!(shed > 0, "{vendor}: nothing was shed");
    }
}
