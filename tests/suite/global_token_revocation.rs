//! Global Token Revocation (`POST /global-token-revocation`) over the real
//! server: the service credential and identity providers' own secrets,
//! each provider confined to its org, the subject formats (`iss_sub` of a
//! configured issuer mapped to the username), the audit trail naming the
//! provider, and `gtr_idp` settings checked at start. Helpers are this
//! file's own (the Shared Signals suite's, trimmed to what is used here).

use serde_json::{json, Value};

use crate::signals::{
    call, poll_stream, poll_until, post, revoked_session, transmitter, transmitter_with,
    SERVICE_SECRET, SESSION_REVOKED,
};
use crate::support::*;
use sessiond::config::serve_config_from;
use sessiond::pb::{self, Kind};
use sessiond::signals::gtr::IdentityProvider;

/// Identity providers of the tests: Okta for example.com, with an issuer;
/// Entra for company.com, with another; a security tool of every org.
const OKTA_SECRET: &str = "okta-gtr-secret-0123456789abcdefghijk";
const OKTA_ISS: &str = "https://example.okta.com";
const ENTRA_SECRET: &str = "entra-gtr-secret-9876543210zyxwvutsrq";
const ENTRA_ISS: &str = "https://login.microsoftonline.com/company/v2.0";
const TOOL_SECRET: &str = "soc-tool-secret-ABCDEFGHIJKLMNOPQRSTU";

fn identity_providers() -> Vec<IdentityProvider> {
    vec![
        IdentityProvider::new("okta", OKTA_SECRET, Some("example.com"), Some(OKTA_ISS)).unwrap(),
        IdentityProvider::new("entra", ENTRA_SECRET, Some("company.com"), Some(ENTRA_ISS)).unwrap(),
        IdentityProvider::new("soc-tool", TOOL_SECRET, None, None).unwrap(),
    ]
}

/// A server with the service credential and the three identity providers.
async fn with_idps() -> TestServer {
    transmitter_with(|c| c.gtr_idps = identity_providers()).await
}

fn gtr_url(server: &TestServer) -> String {
    format!("{}/global-token-revocation", server.rest())
}

fn email(user: &str) -> Value {
    json!({"sub_id": {"format": "email", "email": user}})
}

fn iss_sub(iss: &str, sub: &str) -> Value {
    json!({"sub_id": {"format": "iss_sub", "iss": iss, "sub": sub}})
}

/// A session of each kind a user may hold: their tokens.
async fn sessions_of(c: &mut Client, who: (&str, &str)) -> Vec<String> {
    let mut tokens = Vec::new();
    for kind in [Kind::Api, Kind::Imap, Kind::Pop] {
        tokens.push(login(c, who, kind).await.0);
    }
    tokens
}

async fn all_valid(c: &mut Client, tokens: &[String]) -> bool {
    for t in tokens {
        if !is_valid(c, t).await {
            return false;
        }
    }
    true
}

async fn none_valid(c: &mut Client, tokens: &[String]) -> bool {
    for t in tokens {
        if is_valid(c, t).await {
            return false;
        }
    }
    true
}

/// The audit trail of the org `admin` administers: (actor, target, ended)
/// of its Global Token Revocation records.
async fn gtr_audit(c: &mut Client, admin: (&str, &str)) -> Vec<(String, String, u32)> {
    let (token, _) = login(c, admin, Kind::Admin).await;
    c.list_audit_records(authed(
        pb::ListAuditRecordsRequest {
            page_size: 1000,
            page_token: String::new(),
        },
        &token,
    ))
    .await
    .unwrap()
    .into_inner()
    .records
    .into_iter()
    .filter(|r| r.reason == pb::EndReason::GlobalTokenRevocation as i32)
    .map(|r| (r.actor, r.target, r.ended))
    .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn global_token_revocation_ends_every_session_of_the_user_and_answers_as_the_draft_says() {
    let server = transmitter().await;
    let gtr = format!("{}/global-token-revocation", server.rest());
    let stream = poll_stream(&server, "example.com").await;
    let mut c = server.client().await;
    let mut tokens = Vec::new();
    let mut ids = Vec::new();
    for kind in [Kind::Api, Kind::Imap, Kind::Pop] {
        let (t, s) = login(&mut c, JOE, kind).await;
        tokens.push(t);
        ids.push(i64::from(s.id));
    }
    let (bystander, _) = login(&mut c, DOMAIN_ADMIN, Kind::Admin).await;

    // Who may call it, and bad requests: nothing ends.
    let body = json!({"sub_id": {"format": "email", "email": JOE.0}});
    assert_eq!(
        call(reqwest::Method::POST, &gtr, None, Some(body.clone()))
            .await
            .0,
        401
    );
    assert_eq!(
        call(
            reqwest::Method::POST,
            &gtr,
            Some("wrong"),
            Some(body.clone())
        )
        .await
        .0,
        401
    );
    assert_eq!(post(&gtr, &bystander, body.clone()).await.0, 403);
    for (bad, status) in [
        (json!({}), 400),
        (json!({"sub_id": "x"}), 400),
        (
            json!({"sub_id": {"format": "phone_number", "phone_number": "+12025550100"}}),
            400,
        ),
        (json!({"sub_id": {"format": "email"}}), 400),
        (json!({"sub_id": {"format": "email", "email": 7}}), 400),
        (
            json!({"sub_id": {"format": "email", "email": "nobody@example.com"}}),
            404,
        ),
    ] {
        let (s, b) = post(&gtr, SERVICE_SECRET, bad.clone()).await;
        assert_eq!(s, status, "{bad}: {b}");
    }
    for t in &tokens {
        assert!(
            is_valid(&mut c, t).await,
            "a refused request ended a session"
        );
    }

    // The draft's request: 204, every session of the user ended.
    let (s, b) = post(&gtr, SERVICE_SECRET, body).await;
    assert_eq!(s, 204, "{b}");
    for t in &tokens {
        assert!(!is_valid(&mut c, t).await);
    }
    assert!(
        is_valid(&mut c, &bystander).await,
        "another user's session ended"
    );
    // An opaque username works too (nothing left to end: still 204).
    let (s, _) = post(
        &gtr,
        SERVICE_SECRET,
        json!({"sub_id": {"format": "opaque", "id": JOE.0}}),
    )
    .await;
    assert_eq!(s, 204);

    // On the feed, with its own reason, and so to SSF receivers.
    let got = poll_until(&server, &stream, |g| {
        let seen: Vec<i64> = g.values().filter_map(|(_, c)| revoked_session(c)).collect();
        ids.iter().all(|id| seen.contains(id))
    })
    .await;
    for (_, claims) in got.values() {
        let event = &claims["events"][SESSION_REVOKED];
        assert!(event["reason_admin"]["en"]
            .as_str()
            .unwrap()
            .contains("Global Token Revocation"));
    }
    let events = server
        .running
        .sessions
        .store()
        .revocations_after(0, 0, 1000)
        .await
        .unwrap();
    assert_eq!(
        events
            .iter()
            .filter(|e| e.reason == sessiond::domain::EndReason::GlobalTokenRevocation)
            .count(),
        3
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_identity_providers_secret_ends_its_org_users_sessions_audited_by_name() {
    let server = with_idps().await;
    let gtr = gtr_url(&server);
    let mut c = server.client().await;
    let joe = sessions_of(&mut c, JOE).await;
    let (admin, _) = login(&mut c, DOMAIN_ADMIN, Kind::Admin).await;

    let (s, b) = post(&gtr, OKTA_SECRET, email(JOE.0)).await;
    assert_eq!(s, 204, "{b}");
    assert!(none_valid(&mut c, &joe).await, "a session of joe survived");
    assert!(
        is_valid(&mut c, &admin).await,
        "another user's session ended"
    );
    // The opaque format names the same user (nothing left: still 204).
    let (s, _) = post(
        &gtr,
        OKTA_SECRET,
        json!({"sub_id": {"format": "opaque", "id": JOE.0}}),
    )
    .await;
    assert_eq!(s, 204);

    // The audit trail names the provider; an ending of nothing records nothing.
    assert_eq!(
        gtr_audit(&mut c, DOMAIN_ADMIN).await,
        vec![(
            "identity-provider:okta".to_owned(),
            format!("user:{}", JOE.0),
            3
        )]
    );
    // The service credential's endings keep their actor.
    let joe = sessions_of(&mut c, JOE).await;
    assert_eq!(post(&gtr, SERVICE_SECRET, email(JOE.0)).await.0, 204);
    assert!(none_valid(&mut c, &joe).await);
    let audit = gtr_audit(&mut c, DOMAIN_ADMIN).await;
    assert_eq!(audit.len(), 2, "{audit:?}");
    assert_eq!(audit[1].0, "identity-provider");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_scoped_identity_provider_finds_no_user_of_another_org() {
    let server = with_idps().await;
    let gtr = gtr_url(&server);
    let mut c = server.client().await;
    let company_user = sessions_of(&mut c, USEREMAIL).await;

    // Okta (example.com) asking for a company.com user: answered exactly
    // like a user that does not exist, and nothing ends.
    let (s, other_org) = post(&gtr, OKTA_SECRET, email(USEREMAIL.0)).await;
    assert_eq!(s, 404, "{other_org}");
    let (s, unknown) = post(&gtr, OKTA_SECRET, email("nobody@company.com")).await;
    assert_eq!(s, 404);
    assert_eq!(other_org, unknown, "the answers tell the two apart");
    let (s, _) = post(
        &gtr,
        OKTA_SECRET,
        json!({"sub_id": {"format": "opaque", "id": USEREMAIL.0}}),
    )
    .await;
    assert_eq!(s, 404);
    assert!(
        all_valid(&mut c, &company_user).await,
        "a refused call ended a session"
    );
    assert!(gtr_audit(&mut c, COMPANY_ADMIN).await.is_empty());

    // company.com's own provider may; so may a provider of every org.
    assert_eq!(post(&gtr, ENTRA_SECRET, email(USEREMAIL.0)).await.0, 204);
    assert!(none_valid(&mut c, &company_user).await);
    let company_user = sessions_of(&mut c, USEREMAIL).await;
    assert_eq!(post(&gtr, TOOL_SECRET, email(USEREMAIL.0)).await.0, 204);
    assert!(none_valid(&mut c, &company_user).await);
    let actors: Vec<String> = gtr_audit(&mut c, COMPANY_ADMIN)
        .await
        .into_iter()
        .map(|(actor, _, _)| actor)
        .collect();
    assert_eq!(
        actors,
        ["identity-provider:entra", "identity-provider:soc-tool"]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wrong_secret_is_401_and_an_admin_token_403() {
    let server = with_idps().await;
    let gtr = gtr_url(&server);
    let mut c = server.client().await;
    let joe = sessions_of(&mut c, JOE).await;
    let (admin, _) = login(&mut c, DOMAIN_ADMIN, Kind::Admin).await;

    // One character off, a prefix, a longer one, none at all.
    let off_by_one = format!("{}x", &OKTA_SECRET[..OKTA_SECRET.len() - 1]);
    let longer = format!("{OKTA_SECRET}0");
    for wrong in [off_by_one.as_str(), &OKTA_SECRET[..32], &longer] {
        let (s, b) = post(&gtr, wrong, email(JOE.0)).await;
        assert_eq!(s, 401, "{wrong}: {b}");
        assert_eq!(b["err"], "authentication_failed");
    }
    let (s, _) = call(reqwest::Method::POST, &gtr, None, Some(email(JOE.0))).await;
    assert_eq!(s, 401);
    let (s, b) = post(&gtr, &admin, email(JOE.0)).await;
    assert_eq!(s, 403, "{b}");
    // An identity provider's secret is no admin credential elsewhere.
    let (s, _) = call(
        reqwest::Method::GET,
        &format!("{}/ssf/streams", server.rest()),
        Some(OKTA_SECRET),
        None,
    )
    .await;
    assert_eq!(s, 401);
    assert!(
        all_valid(&mut c, &joe).await,
        "a refused call ended a session"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn iss_sub_of_a_configured_issuer_names_the_username() {
    let server = with_idps().await;
    let gtr = gtr_url(&server);
    let mut c = server.client().await;
    let joe = sessions_of(&mut c, JOE).await;
    let company_user = sessions_of(&mut c, USEREMAIL).await;

    // Refused before anything is looked up: 400, nothing ends.
    for (who, body) in [
        // An issuer nobody configured, from a provider and the service.
        (OKTA_SECRET, iss_sub("https://evil.example", JOE.0)),
        (SERVICE_SECRET, iss_sub("https://evil.example", JOE.0)),
        // Another provider's issuer: a provider speaks for its own only.
        (ENTRA_SECRET, iss_sub(OKTA_ISS, JOE.0)),
        // Issuers are compared exactly.
        (OKTA_SECRET, iss_sub(&format!("{OKTA_ISS}/"), JOE.0)),
        // A provider without an issuer has no iss_sub subjects.
        (TOOL_SECRET, iss_sub(OKTA_ISS, JOE.0)),
        // Incomplete.
        (
            OKTA_SECRET,
            json!({"sub_id": {"format": "iss_sub", "iss": OKTA_ISS}}),
        ),
        (
            OKTA_SECRET,
            json!({"sub_id": {"format": "iss_sub", "sub": JOE.0}}),
        ),
    ] {
        let (s, b) = post(&gtr, who, body.clone()).await;
        assert_eq!(s, 400, "{body}: {b}");
        assert_eq!(b["err"], "invalid_request");
    }
    assert!(all_valid(&mut c, &joe).await);

    // The issuer's org bounds the subject, whoever calls: Okta's issuer
    // names no company.com user, even for the service credential.
    assert_eq!(
        post(&gtr, OKTA_SECRET, iss_sub(OKTA_ISS, USEREMAIL.0))
            .await
            .0,
        404
    );
    assert_eq!(
        post(&gtr, SERVICE_SECRET, iss_sub(OKTA_ISS, USEREMAIL.0))
            .await
            .0,
        404
    );
    assert!(all_valid(&mut c, &company_user).await);

    // Its own issuer, `sub` the username (any case): 204, all ended.
    let (s, b) = post(&gtr, OKTA_SECRET, iss_sub(OKTA_ISS, &JOE.0.to_uppercase())).await;
    assert_eq!(s, 204, "{b}");
    assert!(none_valid(&mut c, &joe).await);
    // The service credential may name any configured issuer.
    let (s, b) = post(&gtr, SERVICE_SECRET, iss_sub(ENTRA_ISS, USEREMAIL.0)).await;
    assert_eq!(s, 204, "{b}");
    assert!(none_valid(&mut c, &company_user).await);
}

/// A secret in a file of its own, as an operator would keep it.
fn secret_file(dir: &std::path::Path, name: &str, secret: &str) -> String {
    let path = dir.join(name);
    std::fs::write(&path, format!("{secret}\n")).unwrap();
    path.to_str().unwrap().to_owned()
}

#[test]
fn bad_gtr_idp_settings_are_refused_at_startup_in_words() {
    let dir = tempfile::tempdir().unwrap();
    let short = "short-Secret-1234";
    let run = |args: &[&str], env: &[(&str, &str)]| {
        let mut all = vec!["serve"];
        all.extend(args);
        all.extend(["--store", "sqlite::memory:", "--rest-addr", "127.0.0.1:0"]);
        let mut env = env.to_vec();
        env.push(("SESSIOND_GRPC_ADDR", "127.0.0.1:0"));
        let (ok, text) = crate::day_one::sessiond(&all, &env, dir.path());
        assert!(!ok, "it started: {text}");
        assert!(!text.contains("listening"), "it must not start: {text}");
        text
    };
    // A short secret, by the flag: the provider, the rule, never the secret.
    let out = run(
        &["--gtr-idp", "okta:secret_env=GTR_OKTA,org=example.com"],
        &[("GTR_OKTA", short)],
    );
    assert!(out.contains("okta") && out.contains("32 to 1024"), "{out}");
    assert!(!out.contains(short), "the secret was printed: {out}");
    // The same from the environment variable.
    let out = run(
        &[],
        &[
            ("SESSIOND_GTR_IDP", "okta:secret_env=GTR_OKTA"),
            ("GTR_OKTA", short),
        ],
    );
    assert!(out.contains("okta") && out.contains("32 to 1024"), "{out}");
    // A variable that is not set.
    let out = run(&["--gtr-idp", "okta:secret_env=GTR_NOT_SET"], &[]);
    assert!(out.contains("GTR_NOT_SET"), "{out}");
    // A typo in the file names the key.
    let toml = dir.path().join("s.toml");
    std::fs::write(
        &toml,
        "[[gtr_idp]]\nname = \"okta\"\nsecret_file = \"x\"\norganisation = \"example.com\"\n",
    )
    .unwrap();
    let out = run(&["--config", toml.to_str().unwrap()], &[]);
    assert!(out.contains("organisation"), "{out}");
}

#[test]
fn gtr_idp_entries_are_checked_one_by_one_and_together() {
    let dir = tempfile::tempdir().unwrap();
    let okta = secret_file(dir.path(), "okta", OKTA_SECRET);
    let entra = secret_file(dir.path(), "entra", ENTRA_SECRET);
    let service = secret_file(dir.path(), "service", SERVICE_SECRET);
    let weak = secret_file(dir.path(), "weak", &"ab".repeat(20));
    let spaced = secret_file(dir.path(), "spaced", "a secret with spaces 0123456789xyz");
    let err = |args: &[&str]| match serve_config_from(args) {
        Ok(_) => panic!("{args:?} accepted"),
        Err(e) => e.to_string(),
    };
    let idp = |spec: String| ["--gtr-idp".to_owned(), spec];

    // Good: the flag, repeated or `;`-separated; orgs in their normal
    // (lower-case) form.
    let c = serve_config_from([
        "--gtr-idp",
        &format!("okta:secret_file={okta},org=Example.COM,iss={OKTA_ISS}"),
        "--gtr-idp",
        &format!("entra:secret_file={entra};"),
    ])
    .unwrap();
    let got: Vec<(&str, Option<&str>, Option<&str>)> = c
        .gtr_idps
        .iter()
        .map(|i| (i.name(), i.org(), i.iss()))
        .collect();
    assert_eq!(
        got,
        [
            ("okta", Some("example.com"), Some(OKTA_ISS)),
            ("entra", None, None)
        ]
    );
    assert!(c.gtr_idps[0].matches(OKTA_SECRET));
    assert!(!c.gtr_idps[0].matches(ENTRA_SECRET));
    let debug = format!("{:?}", c.gtr_idps);
    assert!(
        !debug.contains(OKTA_SECRET) && debug.contains("redacted"),
        "{debug}"
    );
    assert!(serve_config_from::<[&str; 0], &str>([])
        .unwrap()
        .gtr_idps
        .is_empty());

    // Bad, each said in words.
    for (args, says) in [
        (idp(format!("okta:secret_file={weak}")), "predictable"),
        (idp(format!("okta:secret_file={spaced}")), "printable"),
        (idp(format!("o/k:secret_file={okta}")), "letters, digits"),
        (
            idp(format!("{}:secret_file={okta}", "n".repeat(65))),
            "1 to 64",
        ),
        (idp(format!("okta:secret_file={okta},org=")), "org"),
        (idp(format!("okta:secret_file={okta},iss=")), "iss"),
        (idp("okta".into()), "NAME:secret_file"),
        (idp("okta:org=example.com".into()), "exactly one of"),
        (
            idp(format!("okta:secret_file={okta},secret_env=X")),
            "exactly one of",
        ),
        (idp(format!("okta:secret_file={okta},org")), "key=value"),
        (
            idp(format!("okta:secret_file={okta}.missing")),
            "cannot read",
        ),
        (idp("okta:secret_env=A=B".into()), "names a variable"),
        (
            idp(format!("okta:secret_file={okta},org=a.com,org=b.com")),
            "twice",
        ),
        (idp(format!("okta:secret={OKTA_SECRET}")), "unknown key"),
        (
            idp(format!("okta:secret_file={okta};OKTA:secret_file={entra}")),
            "configured twice",
        ),
        (
            idp(format!("okta:secret_file={okta};entra:secret_file={okta}")),
            "same secret",
        ),
        (
            idp(format!(
                "okta:secret_file={okta},iss=https://x;entra:secret_file={entra},iss=https://x"
            )),
            "same iss",
        ),
    ] {
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let e = err(&args);
        assert!(e.contains(says), "{args:?}: {e}");
        assert!(!e.contains(OKTA_SECRET), "the secret was printed: {e}");
    }
    // Not the service credential's secret: a call would not say who made it.
    let e = err(&[
        "--service-credential-file",
        &service,
        "--gtr-idp",
        &format!("soc:secret_file={service}"),
    ]);
    assert!(e.contains("service credential"), "{e}");
    // At most 64.
    let many: Vec<String> = (0..65)
        .map(|i| format!("idp{i}:secret_file={okta}"))
        .collect();
    let e = err(&["--gtr-idp", &many.join(";")]);
    assert!(e.contains("at most 64"), "{e}");
}

#[test]
fn readme_gtr_idp_example_is_accepted() {
    let readme = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/README.md"))
        .expect("README.md");
    let (start, end) = (
        "<!-- gtr-idp-example:start -->",
        "<!-- gtr-idp-example:end -->",
    );
    let from = readme.find(start).expect("start marker") + start.len();
    let to = readme.find(end).expect("end marker");
    let dir = tempfile::tempdir().unwrap();
    let secret = secret_file(dir.path(), "gtr-okta", OKTA_SECRET);
    let toml: String = readme[from..to]
        .lines()
        .filter(|l| !l.starts_with("```"))
        .collect::<Vec<_>>()
        .join("\n")
        .replace("/run/secrets/gtr-okta", &secret);
    let path = dir.path().join("sessiond.toml");
    std::fs::write(&path, toml).unwrap();
    let c = serve_config_from(["--config", path.to_str().unwrap()]).unwrap();
    assert_eq!(c.gtr_idps.len(), 1);
    let idp = &c.gtr_idps[0];
    assert_eq!(
        (idp.name(), idp.org(), idp.iss()),
        (
            "okta",
            Some("example.com"),
            Some("https://example.okta.com")
        )
    );
    assert!(idp.matches(OKTA_SECRET));
}

/// The environment variable's form configures a provider the running
/// binary accepts, its secret read from the variable it names.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_provider_from_the_environment_works_in_the_binary() {
    let mut env: Vec<(&str, &str)> = QUIET_SERVE_ENV.to_vec();
    env.push((
        "SESSIOND_GTR_IDP",
        "okta:secret_env=GTR_OKTA_SECRET,org=example.com",
    ));
    env.push(("GTR_OKTA_SECRET", OKTA_SECRET));
    let server = ServerProcess::spawn_env(&["serve", "--demo", "--store", "sqlite::memory:"], &env);
    let rest = format!("http://{}", server.rest_addr.expect("rest listener"));
    let mut c = connect(&server.url()).await;
    let joe = sessions_of(&mut c, JOE).await;
    let gtr = format!("{rest}/global-token-revocation");
    assert_eq!(post(&gtr, OKTA_SECRET, email(USEREMAIL.0)).await.0, 404);
    assert_eq!(post(&gtr, ENTRA_SECRET, email(JOE.0)).await.0, 401);
    let (s, b) = post(&gtr, OKTA_SECRET, email(JOE.0)).await;
    assert_eq!(s, 204, "{b}");
    assert!(none_valid(&mut c, &joe).await);
    let log = server.log_text_once("global token revocation");
    assert!(log.contains("identity-provider:okta"), "{log}");
    assert!(!log.contains(OKTA_SECRET), "the secret was logged");
    drop(c);
    assert!(server.terminate().success());
}

/// Guessing a provider's secret is slowed like guessing a password: once
/// an address is locked out by wrong credentials, even the right secret is
/// refused from it (429), and nothing ends.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_locked_out_address_is_refused_before_any_secret_is_compared() {
    let server = transmitter_with(|c| {
        c.gtr_idps = identity_providers();
        c.policy.throttle_address.max_failures = 3;
    })
    .await;
    let gtr = gtr_url(&server);
    let mut c = server.client().await;
    let joe = sessions_of(&mut c, JOE).await;
    let mut statuses = Vec::new();
    for i in 0..4 {
        let wrong = format!("guess-{i}-0123456789abcdefghijklmnop");
        statuses.push(post(&gtr, &wrong, email(JOE.0)).await.0);
    }
    assert!(statuses.contains(&429), "{statuses:?}");
    let (s, b) = post(&gtr, OKTA_SECRET, email(JOE.0)).await;
    assert_eq!(s, 429, "{b}");
    assert!(
        all_valid(&mut c, &joe).await,
        "a refused call ended a session"
    );
}
