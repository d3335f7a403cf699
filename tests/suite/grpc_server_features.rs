//! Server features around the API: reflection (v1 and v1alpha), the health
//! service, and coalesced idle-timer writes.

use std::time::Duration;

use crate::support::*;
use sessiond::pb::Kind;
use tonic::transport::Channel;

async fn channel(server: &TestServer) -> Channel {
    Channel::from_shared(server.url())
        .unwrap()
        .connect()
        .await
        .unwrap()
}

#[tokio::test]
async fn reflection_v1_and_v1alpha_list_the_services() {
    use tonic_reflection::pb::{v1, v1alpha};
    let server = TestServer::start().await;
    let ch = channel(&server).await;

    let mut client = v1::server_reflection_client::ServerReflectionClient::new(ch.clone());
    let request = v1::ServerReflectionRequest {
        host: String::new(),
        message_request: Some(v1::server_reflection_request::MessageRequest::ListServices(
            String::new(),
        )),
    };
    let mut answers = client
        .server_reflection_info(tokio_stream::iter(vec![request]))
        .await
        .unwrap()
        .into_inner();
    let answer = answers.message().await.unwrap().unwrap();
    let Some(v1::server_reflection_response::MessageResponse::ListServicesResponse(list)) =
        answer.message_response
    else {
        panic!("unexpected v1 answer {answer:?}");
    };
    let names: Vec<String> = list.service.into_iter().map(|s| s.name).collect();
    for expected in [
        "session.v1.SessionService",
        "grpc.health.v1.Health",
        "grpc.reflection.v1.ServerReflection",
        "grpc.reflection.v1alpha.ServerReflection",
    ] {
        assert!(
            names.iter().any(|n| n == expected),
            "{expected} missing from {names:?}"
        );
    }

    let mut client = v1alpha::server_reflection_client::ServerReflectionClient::new(ch);
    let request = v1alpha::ServerReflectionRequest {
        host: String::new(),
        message_request: Some(
            v1alpha::server_reflection_request::MessageRequest::FileContainingSymbol(
                "session.v1.SessionService".into(),
            ),
        ),
    };
    let mut answers = client
        .server_reflection_info(tokio_stream::iter(vec![request]))
        .await
        .unwrap()
        .into_inner();
    let answer = answers.message().await.unwrap().unwrap();
    assert!(
        matches!(
            answer.message_response,
            Some(v1alpha::server_reflection_response::MessageResponse::FileDescriptorResponse(ref f))
                if !f.file_descriptor_proto.is_empty()
        ),
        "{answer:?}"
    );
}

#[tokio::test]
async fn health_reports_the_session_service_serving() {
    use tonic_health::pb::HealthCheckRequest;
    use tonic_health::pb::{health_check_response::ServingStatus, health_client::HealthClient};
    let server = TestServer::start().await;
    let mut client = HealthClient::new(channel(&server).await);
    for service in ["", "session.v1.SessionService"] {
        let r = client
            .check(HealthCheckRequest {
                service: service.into(),
            })
            .await
            .unwrap()
            .into_inner();
        assert_eq!(r.status, ServingStatus::Serving as i32, "{service:?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_timer_writes_are_coalesced() {
    let server =
        TestServer::start_with(|c| c.policy.touch_interval = Duration::from_secs(60)).await;
    let mut c = server.client().await;
    let (token, s) = login(&mut c, JOE, Kind::Api).await;
    tokio::time::sleep(Duration::from_millis(20)).await;
    for _ in 0..5 {
        let seen = validate(&mut c, &token).await.unwrap();
        assert_eq!(
            seen.last_seen_at, s.last_seen_at,
            "no write within the interval"
        );
    }

    let server = TestServer::start_with(|c| c.policy.touch_interval = Duration::ZERO).await;
    let mut c = server.client().await;
    let (token, s) = login(&mut c, JOE, Kind::Api).await;
    tokio::time::sleep(Duration::from_millis(20)).await;
    let ms = |t: Option<prost_types::Timestamp>| {
        let t = t.unwrap();
        t.seconds * 1000 + i64::from(t.nanos) / 1_000_000
    };
    let first = ms(validate(&mut c, &token).await.unwrap().last_seen_at);
    assert!(
        first > ms(s.last_seen_at),
        "with interval 0 every use is recorded"
    );
    tokio::time::sleep(Duration::from_millis(20)).await;
    let second = ms(validate(&mut c, &token).await.unwrap().last_seen_at);
    assert!(second > first);
}
