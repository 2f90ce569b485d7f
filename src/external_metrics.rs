//! The external metrics API (`external.metrics.k8s.io/v1beta1`), so that a HorizontalPodAutoscaler
//! can scale on a ConsumerGroup's lag without Prometheus and an adapter.
//!
//! The kube-apiserver's aggregation layer forwards `/apis/external.metrics.k8s.io/v1beta1/...` to
//! this server (an APIService points at it) over TLS, presenting its front-proxy client
//! certificate and naming the user in request headers. Request-header authentication as Kubernetes
//! defines it: the client certificate must chain to the request-header CA and carry one of the
//! allowed common names (both read from `kube-system/extension-apiserver-authentication`, which
//! the apiserver publishes); only then are the user and group headers believed. Each request is
//! then authorized with a SubjectAccessReview (`list` on the metric in the namespace), as the
//! apiserver itself would.
//!
//! Served, per ConsumerGroup, from the figures of its last observation (never a frozen value: a
//! ConsumerGroup whose lag could not be measured has none): `kafka_consumergroup_lag` (total),
//! `kafka_consumergroup_max_lag`, `kafka_consumergroup_max_lag_seconds` and
//! `kafka_consumergroup_drain_seconds`. `labelSelector` selects by the ConsumerGroup's labels plus
//! `consumergroup=<name>`.

use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context as _, bail};
use bytes::Bytes;
use http_body_util::Full;
use hyper::{Request, Response, StatusCode};
use k8s_openapi::api::authorization::v1::{ResourceAttributes, SubjectAccessReview, SubjectAccessReviewSpec};
use k8s_openapi::api::core::v1::ConfigMap;
use kube::Client;
use kube::api::{Api, PostParams};
use kube::core::{Expression, Selector, SelectorExt};
use tokio_rustls::rustls;
use tokio_rustls::rustls::pki_types::pem::PemObject;
use tokio_rustls::rustls::pki_types::{CertificateDer, PrivateKeyDer};

use crate::metrics::{ExternalFigures, Metrics};

pub const GROUP: &str = "external.metrics.k8s.io";
pub const VERSION: &str = "v1beta1";

/// How a served metric is read from a ConsumerGroup's figures.
type Read = fn(&ExternalFigures) -> Option<f64>;

/// The metrics served.
const SERVED: [(&str, Read); 4] = [
    ("kafka_consumergroup_lag", |f| Some(f.lag as f64)),
    ("kafka_consumergroup_max_lag", |f| Some(f.max_lag as f64)),
    ("kafka_consumergroup_max_lag_seconds", |f| Some(f.max_lag_seconds)),
    ("kafka_consumergroup_drain_seconds", |f| f.drain_seconds),
];

/// How long a TLS handshake may take before the connection is dropped.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// The longest a connection stays open; the aggregation layer opens a new one when it needs it.
const CONNECTION_LIFETIME: Duration = Duration::from_secs(300);

/// Connections served at once; more wait in the listen backlog. The aggregation layer keeps a
/// few; a client holding many open cannot take every socket of the process.
const MAX_CONNECTIONS: usize = 64;

/// How often the serving certificate (a mounted Secret, which the kubelet updates in place after
/// `helm upgrade` renews it) and the request-header CA are looked at again.
const RELOAD_INTERVAL: Duration = Duration::from_secs(10);

/// Request-header authentication, as the apiserver publishes it.
struct RequestHeader {
    allowed_names: Vec<String>,
    username_headers: Vec<String>,
    group_headers: Vec<String>,
}

/// The contents of `kube-system/extension-apiserver-authentication`.
async fn request_header_data(client: &Client) -> anyhow::Result<std::collections::BTreeMap<String, String>> {
    let api: Api<ConfigMap> = Api::namespaced(client.clone(), "kube-system");
    let config = api.get("extension-apiserver-authentication").await.context(
        "read kube-system/extension-apiserver-authentication (the operator needs the extension-apiserver-authentication-reader Role there)",
    )?;
    Ok(config.data.unwrap_or_default())
}

/// The request-header CA and names of `kube-system/extension-apiserver-authentication`.
fn request_header(
    data: &std::collections::BTreeMap<String, String>,
) -> anyhow::Result<(rustls::RootCertStore, RequestHeader)> {
    let Some(ca) = data.get("requestheader-client-ca-file") else {
        bail!(
            "the apiserver has no request-header CA (--requestheader-client-ca-file): its aggregation layer is not configured, so it cannot call an external metrics API"
        );
    };
    let mut roots = rustls::RootCertStore::empty();
    for certificate in CertificateDer::pem_slice_iter(ca.as_bytes()) {
        roots.add(certificate.context("the request-header CA is not PEM")?).context("the request-header CA")?;
    }
    let list = |key: &str| -> anyhow::Result<Vec<String>> {
        match data.get(key) {
            Some(json) => serde_json::from_str(json).with_context(|| format!("{key} is not a JSON list")),
            None => Ok(Vec::new()),
        }
    };
    Ok((
        roots,
        RequestHeader {
            allowed_names: list("requestheader-allowed-names")?,
            username_headers: list("requestheader-username-headers")?,
            group_headers: list("requestheader-group-headers")?,
        },
    ))
}

/// The serving certificate and key files' contents: `tls.crt` and `tls.key` of a folder (a
/// mounted TLS Secret).
async fn serving_files(dir: &Path) -> anyhow::Result<(Vec<u8>, Vec<u8>)> {
    let (crt, key) = (dir.join("tls.crt"), dir.join("tls.key"));
    // Off the async workers: a file read may block.
    tokio::task::spawn_blocking(move || {
        let crt_pem = std::fs::read(&crt).with_context(|| format!("read {}", crt.display()))?;
        let key_pem = std::fs::read(&key).with_context(|| format!("read the private key {}", key.display()))?;
        Ok((crt_pem, key_pem))
    })
    .await?
}

/// Everything the server's TLS and authentication are built from, as read: compared at each
/// reload, so that the server is rebuilt only when one of them changed.
#[derive(PartialEq)]
struct Inputs {
    request_header: std::collections::BTreeMap<String, String>,
    certificate: Vec<u8>,
    key: Vec<u8>,
}

impl Inputs {
    async fn read(client: &Client, tls_dir: &Path) -> anyhow::Result<Inputs> {
        let request_header = request_header_data(client).await?;
        let (certificate, key) = serving_files(tls_dir).await?;
        Ok(Inputs { request_header, certificate, key })
    }

    /// The TLS acceptor (the serving identity, client certificates checked against the
    /// request-header CA) and the request-header settings.
    fn build(&self) -> anyhow::Result<(tokio_rustls::TlsAcceptor, RequestHeader)> {
        let (roots, header) = request_header(&self.request_header)?;
        let chain = CertificateDer::pem_slice_iter(&self.certificate)
            .collect::<Result<Vec<_>, _>>()
            .context("tls.crt is not PEM")?;
        let key = PrivateKeyDer::from_pem_slice(&self.key).context("tls.key is not a PEM private key")?;
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider.clone())
            .build()
            .context("the request-header CA cannot verify client certificates")?;
        let config = rustls::ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()?
            .with_client_cert_verifier(verifier)
            .with_single_cert(chain, key)
            .context("the serving certificate and key do not match")?;
        Ok((tokio_rustls::TlsAcceptor::from(Arc::new(config)), header))
    }
}

/// The common name of a certificate's subject.
fn common_name(certificate: &CertificateDer) -> Option<String> {
    let (_, parsed) = x509_parser::parse_x509_certificate(certificate.as_ref()).ok()?;
    let name = parsed.subject().iter_common_name().next()?.as_str().ok()?.to_string();
    Some(name)
}

struct State {
    client: Client,
    metrics: Arc<Metrics>,
    header: RequestHeader,
}

/// What new connections are served with; replaced when the inputs change.
struct Served {
    acceptor: tokio_rustls::TlsAcceptor,
    state: Arc<State>,
}

/// Binds the API on `address`, checked against the apiserver's request-header settings; the
/// returned future serves until dropped. The serving certificate and the request-header CA are
/// read again every [`RELOAD_INTERVAL`]: a renewed certificate serves new connections at once.
pub async fn serve(
    client: Client,
    metrics: Arc<Metrics>,
    address: SocketAddr,
    tls_dir: &Path,
) -> anyhow::Result<(SocketAddr, impl std::future::Future<Output = ()> + use<>)> {
    let mut inputs = Inputs::read(&client, tls_dir).await?;
    let (acceptor, header) = inputs.build()?;
    let state = Arc::new(State { client: client.clone(), metrics: metrics.clone(), header });
    let served = Arc::new(std::sync::RwLock::new(Arc::new(Served { acceptor, state })));
    let listener = tokio::net::TcpListener::bind(address).await?;
    let bound = listener.local_addr()?;
    let reload = {
        let (served, tls_dir) = (served.clone(), tls_dir.to_path_buf());
        async move {
            loop {
                tokio::time::sleep(RELOAD_INTERVAL).await;
                let read = match Inputs::read(&client, &tls_dir).await {
                    Ok(read) if read == inputs => continue,
                    Ok(read) => read,
                    Err(error) => {
                        tracing::warn!(
                            error = format!("{error:#}"),
                            "external metrics API: cannot read its certificate or the request-header CA again; serving with the ones it has"
                        );
                        continue;
                    }
                };
                match read.build() {
                    Ok((acceptor, header)) => {
                        let state = Arc::new(State { client: client.clone(), metrics: metrics.clone(), header });
                        *served.write().expect("served lock") = Arc::new(Served { acceptor, state });
                        inputs = read;
                        tracing::info!(
                            "external metrics API: serving certificate or request-header CA changed; new connections use the new ones"
                        );
                    }
                    Err(error) => {
                        tracing::warn!(
                            error = format!("{error:#}"),
                            "external metrics API: the changed certificate or request-header CA cannot be used; serving with the previous ones"
                        );
                    }
                }
            }
        }
    };
    let accept = crate::http::accept_bounded(listener, MAX_CONNECTIONS, "external metrics API", move |tcp, peer| {
        let current = served.read().expect("served lock").clone();
        async move {
            let tls = match tokio::time::timeout(HANDSHAKE_TIMEOUT, current.acceptor.accept(tcp)).await {
                Ok(Ok(tls)) => tls,
                Ok(Err(error)) => {
                    tracing::debug!(%peer, %error, "external metrics API: TLS handshake refused");
                    return;
                }
                Err(_) => return,
            };
            let state = current.state.clone();
            let name = tls.get_ref().1.peer_certificates().and_then(|chain| chain.first()).and_then(common_name);
            let trusted = state.header.allowed_names.is_empty()
                || name.as_ref().is_some_and(|n| state.header.allowed_names.contains(n));
            if !trusted {
                tracing::warn!(%peer, client = ?name, "external metrics API: a client certificate not among the request-header allowed names");
            }
            let service = hyper::service::service_fn(move |request| {
                let state = state.clone();
                async move { Ok::<_, std::convert::Infallible>(handle(&state, trusted, request).await) }
            });
            let connection = crate::http::http1().serve_connection(hyper_util::rt::TokioIo::new(tls), service);
            match tokio::time::timeout(CONNECTION_LIFETIME, connection).await {
                Ok(Err(error)) => tracing::debug!(%peer, %error, "external metrics API connection ended"),
                Ok(Ok(())) => {}
                Err(_) => tracing::debug!(%peer, "external metrics API connection closed after its lifetime"),
            }
        }
    });
    Ok((bound, async move {
        tokio::select! {
            _ = accept => {}
            _ = reload => {}
        }
    }))
}

fn json(status: StatusCode, body: serde_json::Value) -> Response<Full<Bytes>> {
    Response::builder()
        .status(status)
        .header("content-type", "application/json")
        .body(Full::new(Bytes::from(body.to_string())))
        .expect("a valid response")
}

/// A Kubernetes `Status` failure, the shape clients expect from an API server.
fn failure(status: StatusCode, reason: &str, message: String) -> Response<Full<Bytes>> {
    json(
        status,
        serde_json::json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
            "message": message, "reason": reason, "code": status.as_u16()}),
    )
}

async fn handle<B>(state: &State, trusted: bool, request: Request<B>) -> Response<Full<Bytes>> {
    if !trusted {
        return failure(
            StatusCode::UNAUTHORIZED,
            "Unauthorized",
            "the client certificate is not the aggregation layer's".to_string(),
        );
    }
    let headers = request.headers();
    let user = state.header.username_headers.iter().find_map(|h| headers.get(h)?.to_str().ok()).map(str::to_string);
    let Some(user) = user.filter(|u| !u.is_empty()) else {
        return failure(StatusCode::UNAUTHORIZED, "Unauthorized", "no user in the request headers".to_string());
    };
    let groups: Vec<String> = state
        .header
        .group_headers
        .iter()
        .flat_map(|h| headers.get_all(h).iter().filter_map(|v| v.to_str().ok().map(str::to_string)))
        .collect();
    let base = format!("/apis/{GROUP}/{VERSION}");
    let path = request.uri().path().trim_end_matches('/');
    if path == base {
        return json(StatusCode::OK, discovery());
    }
    // The aggregator merges every API server's OpenAPI document into its own; these resources
    // have no schema worth publishing, and an empty document stops its retries.
    if path == "/openapi/v2" {
        let document = serde_json::json!({"swagger": "2.0", "info": {"title": "external metrics of consumer-group-operator", "version": VERSION}, "paths": {}});
        return json(StatusCode::OK, document);
    }
    if path == "/openapi/v3" {
        return json(StatusCode::OK, serde_json::json!({"paths": {}}));
    }
    let Some(rest) = path.strip_prefix(&format!("{base}/namespaces/")) else {
        return failure(StatusCode::NOT_FOUND, "NotFound", format!("{path} is not served here"));
    };
    let Some((namespace, metric)) = rest.split_once('/').filter(|(_, m)| !m.contains('/')) else {
        return failure(StatusCode::NOT_FOUND, "NotFound", format!("{path} is not served here"));
    };
    match authorized(&state.client, &user, &groups, namespace, metric).await {
        Ok(true) => {}
        Ok(false) => {
            return failure(
                StatusCode::FORBIDDEN,
                "Forbidden",
                format!(
                    "{user} cannot list resource \"{metric}\" in API group \"{GROUP}\" in the namespace \"{namespace}\""
                ),
            );
        }
        Err(error) => {
            tracing::warn!(%error, "external metrics API: a SubjectAccessReview failed");
            return failure(
                StatusCode::INTERNAL_SERVER_ERROR,
                "InternalError",
                "authorization could not be checked".into(),
            );
        }
    }
    let Some((_, read)) = SERVED.iter().find(|(name, _)| *name == metric) else {
        return failure(
            StatusCode::NOT_FOUND,
            "NotFound",
            format!(
                "no external metric {metric:?}; served: {}",
                SERVED.iter().map(|(n, _)| *n).collect::<Vec<_>>().join(", ")
            ),
        );
    };
    let selector = query_param(request.uri().query().unwrap_or(""), "labelSelector").unwrap_or_default();
    let selector = match parse_selector(&selector) {
        Ok(selector) => selector,
        Err(error) => return failure(StatusCode::BAD_REQUEST, "BadRequest", format!("labelSelector: {error}")),
    };
    json(StatusCode::OK, values(&state.metrics, namespace, metric, *read, &selector))
}

fn discovery() -> serde_json::Value {
    serde_json::json!({
        "kind": "APIResourceList", "apiVersion": "v1", "groupVersion": format!("{GROUP}/{VERSION}"),
        "resources": SERVED.iter().map(|(name, _)| serde_json::json!({
            "name": name, "singularName": "", "namespaced": true, "kind": "ExternalMetricValueList", "verbs": ["get"],
        })).collect::<Vec<_>>(),
    })
}

/// The selected ConsumerGroups' values, as an ExternalMetricValueList.
fn values(metrics: &Metrics, namespace: &str, metric: &str, read: Read, selector: &Selector) -> serde_json::Value {
    let items: Vec<serde_json::Value> = metrics
        .external_figures(namespace)
        .into_iter()
        .filter_map(|(name, figures)| {
            let mut labels = figures.labels.clone();
            labels.insert("consumergroup".to_string(), name);
            if !selector.matches(&labels) {
                return None;
            }
            let value = read(&figures)?;
            Some(serde_json::json!({
                "metricName": metric, "metricLabels": labels,
                "timestamp": figures.measured_at, "value": quantity(value),
            }))
        })
        .collect();
    serde_json::json!({"kind": "ExternalMetricValueList", "apiVersion": format!("{GROUP}/{VERSION}"), "metadata": {}, "items": items})
}

/// A Kubernetes quantity: whole numbers as they are, others in thousandths (`1500m`).
fn quantity(value: f64) -> String {
    if value.fract() == 0.0 && value.abs() < 1e15 {
        format!("{}", value as i64)
    } else {
        format!("{}m", (value * 1000.0).round() as i64)
    }
}

async fn authorized(
    client: &Client,
    user: &str,
    groups: &[String],
    namespace: &str,
    metric: &str,
) -> Result<bool, kube::Error> {
    let review = SubjectAccessReview {
        spec: SubjectAccessReviewSpec {
            user: Some(user.to_string()),
            groups: Some(groups.to_vec()),
            resource_attributes: Some(ResourceAttributes {
                group: Some(GROUP.to_string()),
                version: Some(VERSION.to_string()),
                resource: Some(metric.to_string()),
                namespace: Some(namespace.to_string()),
                verb: Some("list".to_string()),
                ..ResourceAttributes::default()
            }),
            ..SubjectAccessReviewSpec::default()
        },
        ..SubjectAccessReview::default()
    };
    let api: Api<SubjectAccessReview> = Api::all(client.clone());
    let answer = api.create(&PostParams::default(), &review).await?;
    Ok(answer.status.is_some_and(|s| s.allowed))
}

/// One query parameter, percent-decoded.
fn query_param(query: &str, name: &str) -> Option<String> {
    query.split('&').find_map(|pair| {
        let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
        (key == name).then(|| percent_decode(value))
    })
}

fn percent_decode(text: &str) -> String {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let escaped = (bytes[i] == b'%' && i + 2 < bytes.len())
            .then(|| std::str::from_utf8(&bytes[i + 1..i + 3]).ok().and_then(|h| u8::from_str_radix(h, 16).ok()))
            .flatten();
        match (escaped, bytes[i]) {
            (Some(byte), _) => {
                out.push(byte);
                i += 3;
                continue;
            }
            (None, b'+') => out.push(b' '),
            (None, byte) => out.push(byte),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// A label selector in the API's text form: `a=b`, `a==b`, `a!=b`, `a in (x,y)`, `a notin (x)`,
/// `a`, `!a`, separated by commas.
fn parse_selector(text: &str) -> Result<Selector, String> {
    let mut terms = Vec::new();
    let (mut depth, mut start) = (0, 0);
    for (i, c) in text.char_indices() {
        match c {
            '(' => depth += 1,
            ')' => depth -= 1,
            ',' if depth == 0 => {
                terms.push(&text[start..i]);
                start = i + 1;
            }
            _ => {}
        }
    }
    terms.push(&text[start..]);
    let mut expressions = Vec::new();
    for term in terms.into_iter().map(str::trim).filter(|t| !t.is_empty()) {
        let set = |rest: &str| -> Result<BTreeSet<String>, String> {
            let inner = rest
                .trim()
                .strip_prefix('(')
                .and_then(|r| r.strip_suffix(')'))
                .ok_or(format!("{term:?}: expected (values)"))?;
            Ok(inner.split(',').map(|v| v.trim().to_string()).filter(|v| !v.is_empty()).collect())
        };
        let expression = if let Some(key) = term.strip_prefix('!') {
            Expression::DoesNotExist(key.trim().to_string())
        } else if let Some((key, value)) = term.split_once("!=") {
            Expression::NotEqual(key.trim().to_string(), value.trim().to_string())
        } else if let Some((key, value)) = term.split_once("==").or_else(|| term.split_once('=')) {
            Expression::Equal(key.trim().to_string(), value.trim().to_string())
        } else if let Some((key, rest)) = term.split_once(" notin ") {
            Expression::NotIn(key.trim().to_string(), set(rest)?)
        } else if let Some((key, rest)) = term.split_once(" in ") {
            Expression::In(key.trim().to_string(), set(rest)?)
        } else if term.chars().all(|c| c.is_ascii_alphanumeric() || "-_./".contains(c)) {
            Expression::Exists(term.to_string())
        } else {
            return Err(format!("{term:?} is not a selector term"));
        };
        expressions.push(expression);
    }
    Ok(expressions.into_iter().collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn labels(pairs: &[(&str, &str)]) -> std::collections::BTreeMap<String, String> {
        pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
    }

    #[test]
    fn label_selectors_in_the_apis_text_form() {
        let team = labels(&[("team", "payments"), ("consumergroup", "billing"), ("tier", "gold")]);
        for (selector, selects) in [
            ("", true),
            ("team=payments", true),
            ("team==payments,consumergroup=billing", true),
            ("team!=payments", false),
            ("tier in (gold, silver)", true),
            ("tier notin (gold)", false),
            ("team,tier in (gold),consumergroup", true),
            ("!team", false),
            ("!owner", true),
            ("owner", false),
        ] {
            assert_eq!(parse_selector(selector).unwrap().matches(&team), selects, "{selector}");
        }
        assert!(parse_selector("tier in gold").is_err());
        assert!(parse_selector("a b").is_err());
        assert_eq!(
            query_param("labelSelector=team%3Dpayments%2Ctier+in+%28gold%29&x=1", "labelSelector").unwrap(),
            "team=payments,tier in (gold)"
        );
    }

    #[test]
    fn values_are_quantities() {
        assert_eq!(quantity(6000.0), "6000");
        assert_eq!(quantity(12.5), "12500m");
        assert_eq!(quantity(0.0), "0");
    }
}
