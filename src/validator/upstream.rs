//! The validator's gRPC client of sessiond: one lazily connected channel
//! (it reconnects by itself), the credential on the watch, a deadline on
//! every call, and the split of failures into what may be remembered.

use std::time::Duration;

use tonic::metadata::MetadataValue;
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Endpoint};
use tonic::{Code, Request, Status};

use super::ValidatorConfig;
use crate::pb::{self, session_service_client::SessionServiceClient};
use crate::wire::{Reason, ERROR_DOMAIN};

pub(super) struct Upstream {
    client: SessionServiceClient<Channel>,
    bearer: MetadataValue<tonic::metadata::Ascii>,
    call_timeout: Duration,
}

/// Why an upstream call gave no session.
pub(super) enum Failure {
    /// A definitive refusal of the token (UNAUTHENTICATED, INVALID_ARGUMENT):
    /// the same answer would come again, so it may be remembered.
    Refused(Status),
    /// Upstream answered some other error of its own (shed, throttled, its
    /// store down): passed on as it is, not remembered.
    Answered(Status),
    /// No answer from upstream (refused connection, timeout, transport).
    Unreachable(String),
}

impl Upstream {
    pub(super) fn new(config: &ValidatorConfig) -> Result<Self, String> {
        let url = &config.upstream;
        let mut endpoint = Endpoint::from_shared(url.clone())
            .map_err(|e| format!("upstream {url:?}: {e}"))?
            .connect_timeout(Duration::from_secs(2))
            .tcp_nodelay(true)
            // A silent upstream is noticed by the feed's heartbeats; these
            // keep an idle channel's connection known to be alive too.
            .http2_keep_alive_interval(Duration::from_secs(10))
            .keep_alive_timeout(Duration::from_secs(5))
            .keep_alive_while_idle(true);
        if url.starts_with("https://") {
            let ca = config
                .upstream_ca
                .as_ref()
                .ok_or("an https:// upstream needs its CA certificate (--upstream-ca)")?;
            endpoint = endpoint
                .tls_config(ClientTlsConfig::new().ca_certificate(Certificate::from_pem(ca)))
                .map_err(|e| format!("upstream TLS: {e}"))?;
        } else if !url.starts_with("http://") {
            return Err(format!("upstream {url:?}: expected http:// or https://"));
        } else if !is_loopback(url) {
            tracing::warn!(
                upstream = %url,
                "plaintext upstream off this host: the service credential crosses the network in clear; use https:// and --upstream-ca"
            );
        }
        let bearer = format!("Bearer {}", config.credential.secret())
            .parse()
            .map_err(|_| "the credential is not valid metadata text".to_owned())?;
        Ok(Upstream {
            client: SessionServiceClient::new(endpoint.connect_lazy()),
            bearer,
            call_timeout: config.call_timeout,
        })
    }

    pub(super) async fn validate(&self, token: &str) -> Result<pb::Session, Failure> {
        let mut req = Request::new(pb::ValidateSessionRequest {
            token: token.to_owned(),
        });
        req.set_timeout(self.call_timeout);
        let mut client = self.client.clone();
        match tokio::time::timeout(self.call_timeout, client.validate_session(req)).await {
            Err(_) => Err(Failure::Unreachable("call timed out".into())),
            Ok(Ok(resp)) => resp
                .into_inner()
                .session
                .ok_or_else(|| Failure::Unreachable("answer without a session".into())),
            Ok(Err(status)) => Err(classify(status)),
        }
    }

    pub(super) async fn watch(
        &self,
        req: pb::WatchRevocationsRequest,
    ) -> Result<tonic::Streaming<pb::WatchRevocationsResponse>, Status> {
        let mut req = Request::new(req);
        req.metadata_mut()
            .insert("authorization", self.bearer.clone());
        let mut client = self.client.clone();
        match tokio::time::timeout(self.call_timeout, client.watch_revocations(req)).await {
            Err(_) => Err(Status::unavailable("watch call timed out")),
            Ok(r) => r.map(tonic::Response::into_inner),
        }
    }
}

fn is_loopback(url: &str) -> bool {
    let host = url
        .trim_start_matches("http://")
        .split(['/', '?'])
        .next()
        .unwrap_or("");
    let host = host.rsplit_once(':').map_or(host, |(h, _)| h);
    host == "localhost"
        || host
            .trim_matches(['[', ']'])
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback())
}

/// Whether the status is sessiond's own answer (it carries our ErrorInfo)
/// or a failure to reach it.
fn ours(status: &Status) -> bool {
    use tonic_types::StatusExt;
    status
        .get_details_error_info()
        .is_some_and(|i| i.domain == ERROR_DOMAIN && Reason::parse(&i.reason).is_some())
}

fn classify(status: Status) -> Failure {
    if !ours(&status) {
        return Failure::Unreachable(format!("{}: {}", status.code(), status.message()));
    }
    match status.code() {
        Code::Unauthenticated | Code::InvalidArgument => Failure::Refused(status),
        _ => Failure::Answered(status),
    }
}
