//! One connection to one broker: TCP, TLS around it when the security protocol asks
//! ([`super::security`]), Kafka's framing (a 4-byte size, a header, the message), the version
//! negotiation, SASL before the first request when asked ([`super::sasl`]), and the requests the
//! group reader sends. One request at a time per connection: the reader's batching keeps requests
//! few, so pipelining would buy nothing.

use std::collections::BTreeMap;
use std::sync::Mutex;
use std::time::Duration;

use bytes::{BufMut, BytesMut};
use kafka_protocol::ResponseError;
use kafka_protocol::messages::{
    ApiKey, ApiVersionsRequest, ApiVersionsResponse, ConsumerGroupDescribeRequest, ConsumerGroupDescribeResponse,
    DescribeGroupsRequest, DescribeGroupsResponse, FindCoordinatorRequest, FindCoordinatorResponse, OffsetFetchRequest,
    OffsetFetchResponse, RequestHeader, ResponseHeader, SaslAuthenticateRequest, SaslAuthenticateResponse,
    SaslHandshakeRequest, SaslHandshakeResponse,
};
use kafka_protocol::protocol::{Decodable, Encodable, HeaderVersion, Message, StrBytes, VersionRange};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::time::Instant;
use tokio_rustls::rustls;
use tokio_rustls::rustls::pki_types::ServerName;

use super::sasl::{self, Conversation, Credentials};
use super::security::{Security, tls_failure};
use crate::kafka::KafkaError;
use crate::kafka::stats::RequestCounts;

/// A request the reader sends: its API key, its name in librdkafka's statistics (so the counts
/// add up with the librdkafka client's in one metric), and its response type.
pub(super) trait Api: Encodable + HeaderVersion + Message {
    const KEY: ApiKey;
    const NAME: &'static str;
    /// The largest answer this request can legitimately bring back, whatever the reader's limit.
    const MAX_RESPONSE_BYTES: usize;
    type Response: Decodable + HeaderVersion + Message;
}

macro_rules! apis {
    ($($request:ident => $response:ident, $key:ident, $name:literal, $max:expr;)*) => {
        $(impl Api for $request {
            const KEY: ApiKey = ApiKey::$key;
            const NAME: &'static str = $name;
            const MAX_RESPONSE_BYTES: usize = $max;
            type Response = $response;
        })*
    };
}

/// Answers whose size does not grow with the groups asked for: a list of API versions, a SASL
/// mechanism list or challenge.
const SMALL_ANSWER: usize = 1 << 20;

apis! {
    ApiVersionsRequest => ApiVersionsResponse, ApiVersions, "ApiVersion", SMALL_ANSWER;
    FindCoordinatorRequest => FindCoordinatorResponse, FindCoordinator, "FindCoordinator", usize::MAX;
    OffsetFetchRequest => OffsetFetchResponse, OffsetFetch, "OffsetFetch", usize::MAX;
    DescribeGroupsRequest => DescribeGroupsResponse, DescribeGroups, "DescribeGroups", usize::MAX;
    ConsumerGroupDescribeRequest => ConsumerGroupDescribeResponse, ConsumerGroupDescribe, "ConsumerGroupDescribe", usize::MAX;
    SaslHandshakeRequest => SaslHandshakeResponse, SaslHandshake, "SaslHandshake", SMALL_ANSWER;
    SaslAuthenticateRequest => SaslAuthenticateResponse, SaslAuthenticate, "SaslAuthenticate", SMALL_ANSWER;
}

/// Requests sent, by [`Api::NAME`], over every connection of a reader.
#[derive(Default)]
pub(super) struct Counts(Mutex<RequestCounts>);

impl Counts {
    fn add(&self, name: &str) {
        if let Ok(mut counts) = self.0.lock() {
            *counts.entry(name.to_string()).or_default() += 1;
        }
    }

    pub(super) fn snapshot(&self) -> RequestCounts {
        self.0.lock().map(|c| c.clone()).unwrap_or_default()
    }
}

/// The byte stream under a connection: a TCP stream, or TLS around it. SASL runs on it before the
/// first request, in the same framing.
pub(super) trait Transport: AsyncRead + AsyncWrite + Unpin + Send {}

impl<T: AsyncRead + AsyncWrite + Unpin + Send> Transport for T {}

/// The ApiVersions version sent first (Kafka 2.4+; the reader needs Kafka 3.0+ for the batched
/// FindCoordinator and OffsetFetch anyway). A broker answers ApiVersions in v0's layout when it
/// lacks the version asked, which would not decode: a fixed, old enough version avoids that.
pub(super) const API_VERSIONS_VERSION: i16 = 3;

/// Largest answer accepted unless the platform's `receive.message.max.bytes` says otherwise
/// (librdkafka's property of the same meaning; tenants may not set it). A size read from
/// something that is not a Kafka listener, or from a broker a tenant named, must not take the
/// operator's memory: the chart's limit is 256 MiB.
pub(super) const DEFAULT_MAX_RESPONSE_BYTES: usize = 32 << 20;

/// How much of an answer is read before the rest arrives: the buffer grows with the bytes a broker
/// actually sends, not with the size it declares.
const READ_CHUNK: usize = 64 << 10;

/// ApiVersions naming this client: from v3 on, a broker refuses a request without a valid name and
/// version (INVALID_REQUEST).
pub(super) fn api_versions_request() -> ApiVersionsRequest {
    ApiVersionsRequest::default()
        .with_client_software_name(StrBytes::from_static_str(env!("CARGO_PKG_NAME")))
        .with_client_software_version(StrBytes::from_static_str(env!("CARGO_PKG_VERSION")))
}

pub(super) struct Connection {
    stream: Box<dyn Transport>,
    /// What `broker 1` or `bootstrap server 2` names this connection in messages: never an
    /// address, which may be a property's value.
    peer: String,
    /// The broker's version range of every API it has.
    versions: BTreeMap<i16, VersionRange>,
    client_id: StrBytes,
    correlation_id: i32,
    /// The reader's limit on one answer (see [`DEFAULT_MAX_RESPONSE_BYTES`]).
    max_response_bytes: usize,
    /// Set when the stream failed or an answer did not decode: the stream's position is lost, so
    /// the connection must not be reused.
    pub(super) broken: bool,
    /// When a SASL session with a lifetime (the broker's `connections.max.reauth.ms`, KIP-368)
    /// should be replaced: the broker closes the connection at the first request after it ends.
    renew_at: Option<Instant>,
}

impl Connection {
    /// Opens a connection to `address` (with TLS if `security` says), learns the broker's API
    /// versions, and authenticates (if `security` has SASL credentials).
    pub(super) async fn open(
        address: &(String, u16),
        peer: String,
        client_id: StrBytes,
        security: &Security,
        max_response_bytes: usize,
        counts: &Counts,
    ) -> Result<Connection, KafkaError> {
        let tcp = tokio::net::TcpStream::connect((address.0.as_str(), address.1))
            .await
            .map_err(|e| KafkaError::Unreachable(format!("cannot connect to {peer}: {e}")))?;
        // Requests are small and answered one at a time: send each at once.
        tcp.set_nodelay(true).map_err(|e| KafkaError::Unreachable(format!("cannot connect to {peer}: {e}")))?;
        let stream: Box<dyn Transport> = match &security.tls {
            None => Box::new(tcp),
            Some(tls) => {
                // The name the broker's certificate must carry: the host as addressed.
                let name = ServerName::try_from(address.0.clone()).map_err(|_| {
                    KafkaError::Config(format!("the host of {peer} is not a name or address TLS can verify"))
                })?;
                let handshake = tokio_rustls::TlsConnector::from(tls.clone()).connect(name, tcp).await;
                Box::new(handshake.map_err(|e| stream_error(&format!("TLS handshake with {peer} failed"), e))?)
            }
        };
        let mut connection = Connection {
            stream,
            peer,
            versions: BTreeMap::new(),
            client_id,
            correlation_id: 0,
            max_response_bytes,
            broken: false,
            renew_at: None,
        };
        let request = api_versions_request();
        let answer = connection.send(&request, API_VERSIONS_VERSION, counts).await?;
        if let Some(error) = kafka_protocol::ResponseError::try_from_code(answer.error_code) {
            return Err(KafkaError::Request(format!(
                "{} refused ApiVersions v{API_VERSIONS_VERSION} ({error}); Kafka 3.0 or newer is needed",
                connection.peer
            )));
        }
        connection.versions = answer
            .api_keys
            .iter()
            .map(|k| (k.api_key, VersionRange { min: k.min_version, max: k.max_version }))
            .collect();
        if let Some(credentials) = &security.sasl {
            connection.authenticate(credentials, counts).await?;
        }
        Ok(connection)
    }

    /// SASL, after ApiVersions as Kafka's own clients do it: SaslHandshake v1 names the mechanism,
    /// then each message of the mechanism's exchange goes in a SaslAuthenticate.
    async fn authenticate(&mut self, credentials: &Credentials, counts: &Counts) -> Result<(), KafkaError> {
        let mechanism = credentials.mechanism.name();
        let version = self.required_version::<SaslHandshakeRequest>(1)?;
        let request = SaslHandshakeRequest::default().with_mechanism(StrBytes::from_static_str(mechanism));
        let answer = self.send(&request, version, counts).await?;
        if let Some(error) = ResponseError::try_from_code(answer.error_code) {
            let hint = match error {
                ResponseError::UnsupportedSaslMechanism => format!(
                    "its listener enables {}; check sasl.mechanism",
                    answer.mechanisms.iter().map(|m| m.as_str()).collect::<Vec<_>>().join(", ")
                ),
                _ => "is it a SASL listener? check security.protocol".to_string(),
            };
            return Err(KafkaError::Auth(format!("{} refused SASL {mechanism} ({error}); {hint}", self.peer)));
        }
        let version = self.required_version::<SaslAuthenticateRequest>(0)?;
        let (mut conversation, mut message) = Conversation::start(credentials, sasl::nonce()?);
        loop {
            let request = SaslAuthenticateRequest::default().with_auth_bytes(message.into());
            let answer = self.send(&request, version, counts).await?;
            if let Some(error) = ResponseError::try_from_code(answer.error_code) {
                let said = answer.error_message.as_ref().map_or_else(|| error.to_string(), |m| m.to_string());
                return Err(KafkaError::Auth(format!(
                    "{} refused SASL {mechanism} authentication: {}",
                    self.peer,
                    credentials.scrub(&said)
                )));
            }
            if let Ok(lifetime) = u64::try_from(answer.session_lifetime_ms)
                && lifetime > 0
            {
                // Replaced with a tenth of the session left (Kafka's Java client re-authenticates
                // at 85 to 95% of it).
                self.renew_at = Some(Instant::now() + Duration::from_millis(lifetime - lifetime / 10));
            }
            match conversation.next(&answer.auth_bytes) {
                Ok(Some(next)) => message = next,
                Ok(None) => return Ok(()),
                Err(reason) => {
                    return Err(KafkaError::Auth(format!("SASL {mechanism} with {} failed: {reason}", self.peer)));
                }
            }
        }
    }

    /// Whether the connection's SASL session is (nearly) over and a new connection should serve
    /// the next request.
    pub(super) fn session_ending(&self) -> bool {
        self.renew_at.is_some_and(|at| Instant::now() >= at)
    }

    /// The highest version of `R` that both the broker and kafka-protocol speak, if it is at
    /// least `min`.
    pub(super) fn version<R: Api>(&self, min: i16) -> Option<i16> {
        let ours = R::VERSIONS.intersect(&R::Response::VERSIONS);
        let both = self.versions.get(&(R::KEY as i16))?.intersect(&ours);
        (!both.is_empty() && both.max >= min).then_some(both.max)
    }

    /// Takes `R` off what this connection offers: for a broker that lists an API it does not serve
    /// (Kafka 3.7 to 3.9 list ConsumerGroupDescribe with KIP-848 switched off, and answer each
    /// group UNSUPPORTED_VERSION). A new connection asks the broker again.
    pub(super) fn forget_api<R: Api>(&mut self) {
        self.versions.remove(&(R::KEY as i16));
    }

    /// [`Connection::version`], or an error naming the API and version the broker lacks.
    pub(super) fn required_version<R: Api>(&self, min: i16) -> Result<i16, KafkaError> {
        self.version::<R>(min).ok_or_else(|| {
            let has = match self.versions.get(&(R::KEY as i16)) {
                Some(range) => format!("it has v{range}"),
                None => "it lacks the API".to_string(),
            };
            KafkaError::Request(format!(
                "{} does not support {} v{min} or newer ({has}); the group reader needs Kafka 3.0 or newer",
                self.peer,
                R::NAME
            ))
        })
    }

    /// Sends `request` as `version` and reads its answer.
    pub(super) async fn send<R: Api>(
        &mut self,
        request: &R,
        version: i16,
        counts: &Counts,
    ) -> Result<R::Response, KafkaError> {
        let malformed = |peer: &str, e: anyhow::Error| {
            KafkaError::Request(format!("{} v{version} to {peer} could not be encoded or decoded: {e}", R::NAME))
        };
        self.correlation_id = self.correlation_id.wrapping_add(1);
        let header = RequestHeader::default()
            .with_request_api_key(R::KEY as i16)
            .with_request_api_version(version)
            .with_correlation_id(self.correlation_id)
            .with_client_id(Some(self.client_id.clone()));
        let mut frame = BytesMut::new();
        frame.put_i32(0);
        header.encode(&mut frame, R::header_version(version)).map_err(|e| malformed(&self.peer, e))?;
        request.encode(&mut frame, version).map_err(|e| malformed(&self.peer, e))?;
        let size = (frame.len() - 4) as i32;
        frame[..4].copy_from_slice(&size.to_be_bytes());

        // A failure from here on leaves the stream at an unknown position.
        self.broken = true;
        counts.add(R::NAME);
        let lost = |peer: &str, e: std::io::Error| stream_error(&format!("connection to {peer} lost"), e);
        self.stream.write_all(&frame).await.map_err(|e| lost(&self.peer, e))?;
        let declared = self.stream.read_i32().await.map_err(|e| lost(&self.peer, e))?;
        let bound = R::MAX_RESPONSE_BYTES.min(self.max_response_bytes);
        let size = usize::try_from(declared).map_err(|_| {
            KafkaError::Request(format!(
                "{} answered {} with a frame of {declared} bytes; is security.protocol the listener's protocol?",
                self.peer,
                R::NAME
            ))
        })?;
        if size > bound {
            return Err(KafkaError::Request(format!(
                "{} answered {} with a frame of {size} bytes, over the {bound} bytes accepted; is \
                 security.protocol the listener's protocol? (the platform's receive.message.max.bytes \
                 raises the limit)",
                self.peer,
                R::NAME
            )));
        }
        let mut body = Vec::with_capacity(size.min(READ_CHUNK));
        let read = (&mut self.stream).take(size as u64).read_to_end(&mut body).await;
        read.map_err(|e| lost(&self.peer, e))?;
        if body.len() < size {
            let cut = std::io::Error::new(std::io::ErrorKind::UnexpectedEof, "the frame was cut short");
            return Err(lost(&self.peer, cut));
        }
        let mut body = bytes::Bytes::from(body);
        let header = ResponseHeader::decode(&mut body, R::Response::header_version(version))
            .map_err(|e| malformed(&self.peer, e))?;
        if header.correlation_id != self.correlation_id {
            return Err(KafkaError::Request(format!(
                "{} answered {} with correlation id {} instead of {}",
                self.peer,
                R::NAME,
                header.correlation_id,
                self.correlation_id
            )));
        }
        let response = R::Response::decode(&mut body, version).map_err(|e| malformed(&self.peer, e))?;
        self.broken = false;
        Ok(response)
    }
}

/// A failure of a connection's stream. TLS refusing the broker's certificate or the two sides'
/// versions, or the broker ending the TLS session with an alert (a client certificate missing or
/// refused), will not pass by itself: an authentication failure. Anything else is a lost
/// connection.
fn stream_error(context: &str, error: std::io::Error) -> KafkaError {
    match error.get_ref().and_then(|inner| inner.downcast_ref::<rustls::Error>()) {
        Some(
            tls @ (rustls::Error::InvalidCertificate(_)
            | rustls::Error::AlertReceived(_)
            | rustls::Error::NoCertificatesPresented
            | rustls::Error::PeerIncompatible(_)),
        ) => KafkaError::Auth(format!("{context}: {}", tls_failure(tls))),
        Some(tls) => KafkaError::Unreachable(format!("{context}: {}", tls_failure(tls))),
        None => KafkaError::Unreachable(format!("{context}: {error}")),
    }
}
