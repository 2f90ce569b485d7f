//! How the group reader secures a connection, from the librdkafka properties users already set:
//! `security.protocol` (PLAINTEXT, SSL, SASL_PLAINTEXT, SASL_SSL), TLS with rustls and ring
//! (`ssl.ca.location`/`ssl.ca.pem`, else the system's CA certificates; a client certificate from
//! `ssl.certificate.*` and `ssl.key.*`; `ssl.endpoint.identification.algorithm`), and SASL PLAIN,
//! SCRAM-SHA-256 or SCRAM-SHA-512 with `sasl.username` and `sasl.password`.
//!
//! A setting the reader cannot honour exactly (GSSAPI, OAUTHBEARER, a PKCS#12 keystore, an
//! encrypted key, CRLs, cipher lists, verification turned off) is refused by key, never by value:
//! the operator then reads that connection's groups through librdkafka, which honours it.

use std::collections::BTreeMap;
use std::sync::Arc;

use tokio_rustls::rustls;
use tokio_rustls::rustls::client::WebPkiServerVerifier;
use tokio_rustls::rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use tokio_rustls::rustls::pki_types::pem::{self, PemObject as _};
use tokio_rustls::rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use tokio_rustls::rustls::{CertificateError, ClientConfig, DigitallySignedStruct, RootCertStore, SignatureScheme};

use super::sasl::{Credentials, Mechanism};
use crate::kafka::KafkaError;

/// What a connection does between opening TCP and its first request.
pub(super) struct Security {
    /// TLS around the TCP stream (SSL, SASL_SSL).
    pub(super) tls: Option<Arc<ClientConfig>>,
    /// SASL after ApiVersions (SASL_PLAINTEXT, SASL_SSL).
    pub(super) sasl: Option<Credentials>,
}

/// TLS properties the reader does not implement, and why each matters: ignoring one would connect
/// differently than librdkafka (or less safely), so the reader refuses the connection instead.
const UNSUPPORTED_TLS: &[(&str, &str)] = &[
    (
        "ssl.keystore.location",
        "names a PKCS#12 keystore, which the group reader does not read (it reads PEM: ssl.certificate.location and ssl.key.location, or ssl.certificate.pem and ssl.key.pem)",
    ),
    ("ssl.keystore.password", "belongs to a PKCS#12 keystore, which the group reader does not read"),
    ("ssl.key.password", "means an encrypted private key, which the group reader does not decrypt"),
    ("ssl.crl.location", "asks for revocation checks against a CRL, which the group reader does not do"),
    ("ssl.engine.id", "names an OpenSSL engine, which the group reader (rustls) has not"),
    ("ssl.providers", "names OpenSSL providers, which the group reader (rustls) has not"),
    ("ssl.cipher.suites", "restricts the TLS ciphers, which the group reader does not"),
    ("ssl.curves.list", "restricts the TLS curves, which the group reader does not"),
    ("ssl.sigalgs.list", "restricts the TLS signature algorithms, which the group reader does not"),
];

impl Security {
    /// Reads the security properties; a refusal names the property and why, never its value.
    /// Reads the PEM files named (and, without a CA property, the system's CA certificates).
    pub(super) fn from_properties(properties: &BTreeMap<String, String>) -> Result<Security, KafkaError> {
        let protocol = set(properties, "security.protocol").map(str::to_ascii_lowercase);
        let (tls, sasl) = match protocol.as_deref() {
            None | Some("plaintext") => (false, false),
            Some("ssl") => (true, false),
            Some("sasl_plaintext") => (false, true),
            Some("sasl_ssl") => (true, true),
            Some(_) => {
                return Err(refused(
                    "security.protocol",
                    "is none of PLAINTEXT, SSL, SASL_PLAINTEXT and SASL_SSL, the protocols the group reader speaks",
                ));
            }
        };
        Ok(Security {
            tls: if tls { Some(Arc::new(tls_config(properties)?)) } else { None },
            sasl: if sasl { Some(credentials(properties)?) } else { None },
        })
    }
}

/// A property the reader cannot use, by key; the operator reads the connection's groups through
/// librdkafka instead.
fn refused(key: &str, reason: &str) -> KafkaError {
    KafkaError::Config(format!(
        "property {key:?} {reason} (the value is not shown); the operator reads this connection's groups through librdkafka instead"
    ))
}

/// A property's value, if set to more than blanks (trimmed: a mounted Secret's file may end in a
/// newline).
fn set<'a>(properties: &'a BTreeMap<String, String>, key: &str) -> Option<&'a str> {
    properties.get(key).map(|v| v.trim()).filter(|v| !v.is_empty())
}

fn credentials(properties: &BTreeMap<String, String>) -> Result<Credentials, KafkaError> {
    // librdkafka's canonical key is `sasl.mechanisms`, with `sasl.mechanism` as its alias.
    let (key, value) = ["sasl.mechanism", "sasl.mechanisms"]
        .into_iter()
        .find_map(|key| set(properties, key).map(|value| (key, value)))
        .ok_or_else(|| {
            refused(
                "sasl.mechanism",
                "is not set, so librdkafka's default GSSAPI (Kerberos) applies, which the group reader does not speak (it speaks PLAIN, SCRAM-SHA-256 and SCRAM-SHA-512)",
            )
        })?;
    let mechanism = Mechanism::parse(value).ok_or_else(|| {
        refused(
            key,
            "names a SASL mechanism the group reader does not speak (it speaks PLAIN, SCRAM-SHA-256 and SCRAM-SHA-512)",
        )
    })?;
    // The username and password as given: only blank ones count as missing.
    let given = |key: &str| match set(properties, key) {
        Some(_) => Ok(properties[key].clone()),
        None => Err(refused(key, &format!("is required for SASL {}", mechanism.name()))),
    };
    let username = given("sasl.username")?;
    let password = given("sasl.password")?;
    Ok(Credentials::new(mechanism, username, password))
}

fn tls_config(properties: &BTreeMap<String, String>) -> Result<ClientConfig, KafkaError> {
    if let Some((key, reason)) = UNSUPPORTED_TLS.iter().find(|(key, _)| set(properties, key).is_some()) {
        return Err(refused(key, reason));
    }
    if let Some(verify) = set(properties, "enable.ssl.certificate.verification")
        && !(verify.eq_ignore_ascii_case("true") || verify == "1")
    {
        return Err(refused(
            "enable.ssl.certificate.verification",
            "turns certificate verification off, which the group reader never does",
        ));
    }
    let check_host = match set(properties, "ssl.endpoint.identification.algorithm").map(str::to_ascii_lowercase) {
        None => true,
        Some(algorithm) if algorithm == "https" => true,
        Some(algorithm) if algorithm == "none" => false,
        Some(_) => return Err(refused("ssl.endpoint.identification.algorithm", "must be https or none")),
    };
    // The client identity first: its errors name a property that is set, whatever the CA.
    let identity = client_identity(properties)?;
    let roots = trusted_roots(properties)?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = ClientConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .map_err(|e| KafkaError::Internal(format!("TLS set-up failed: {e}")))?;
    let builder = if check_host {
        builder.with_root_certificates(roots)
    } else {
        let verifier = WebPkiServerVerifier::builder_with_provider(Arc::new(roots), provider)
            .build()
            .map_err(|e| KafkaError::Internal(format!("TLS set-up failed: {e}")))?;
        builder.dangerous().with_custom_certificate_verifier(Arc::new(AnyHostName(verifier)))
    };
    match identity {
        None => Ok(builder.with_no_client_auth()),
        Some(Identity { chain, key_property, key }) => builder.with_client_auth_cert(chain, key).map_err(|e| {
            refused(key_property, &format!("is not a private key the client certificate can be used with ({e})"))
        }),
    }
}

/// The CA certificates the broker's chain must lead to: `ssl.ca.location` and `ssl.ca.pem`
/// together, else (or with librdkafka's `probe`) the system's.
fn trusted_roots(properties: &BTreeMap<String, String>) -> Result<RootCertStore, KafkaError> {
    let mut roots = RootCertStore::empty();
    let location = set(properties, "ssl.ca.location").filter(|l| *l != "probe");
    let sources = [
        location.map(|path| ("ssl.ca.location", read_file("ssl.ca.location", path))),
        set(properties, "ssl.ca.pem").map(|pem| ("ssl.ca.pem", Ok(pem.as_bytes().to_vec()))),
    ];
    let mut configured = false;
    for (key, pem) in sources.into_iter().flatten() {
        configured = true;
        for certificate in certificates(key, &pem?)? {
            roots.add(certificate).map_err(|_| refused(key, "holds a certificate that cannot be parsed"))?;
        }
    }
    if !configured {
        let system = rustls_native_certs::load_native_certs();
        let (added, _) = roots.add_parsable_certificates(system.certs);
        if added == 0 {
            return Err(refused(
                "ssl.ca.location",
                "is not set and the system has no CA certificates to trust; set ssl.ca.location or ssl.ca.pem",
            ));
        }
    }
    Ok(roots)
}

/// A client certificate chain and its key, for mutual TLS.
struct Identity {
    chain: Vec<CertificateDer<'static>>,
    /// The property the key came from, to name in errors.
    key_property: &'static str,
    key: PrivateKeyDer<'static>,
}

/// The client identity, from a file or inline PEM each; both or neither must be set.
fn client_identity(properties: &BTreeMap<String, String>) -> Result<Option<Identity>, KafkaError> {
    let certificate = pem_property(properties, "ssl.certificate.location", "ssl.certificate.pem")?;
    let key = pem_property(properties, "ssl.key.location", "ssl.key.pem")?;
    match (certificate, key) {
        (None, None) => Ok(None),
        (Some((key_name, _)), None) => {
            Err(refused(key_name, "needs its private key too: set ssl.key.location or ssl.key.pem"))
        }
        (None, Some((key_name, _))) => {
            Err(refused(key_name, "needs its certificate too: set ssl.certificate.location or ssl.certificate.pem"))
        }
        (Some((certificate_key, certificate)), Some((key_property, key))) => {
            let chain = certificates(certificate_key, &certificate)?;
            let key = PrivateKeyDer::from_pem_slice(&key).map_err(|e| match e {
                pem::Error::NoItemsFound => refused(
                    key_property,
                    "holds no unencrypted PEM private key (PKCS#8, PKCS#1 or SEC1; an encrypted key is not supported)",
                ),
                _ => refused(key_property, "is not valid PEM"),
            })?;
            Ok(Some(Identity { chain, key_property, key }))
        }
    }
}

/// The PEM bytes of a file property or of its inline twin, and which one was set.
fn pem_property(
    properties: &BTreeMap<String, String>,
    location: &'static str,
    inline: &'static str,
) -> Result<Option<(&'static str, Vec<u8>)>, KafkaError> {
    match (set(properties, location), set(properties, inline)) {
        (None, None) => Ok(None),
        (Some(path), None) => Ok(Some((location, read_file(location, path)?))),
        (None, Some(pem)) => Ok(Some((inline, pem.as_bytes().to_vec()))),
        (Some(_), Some(_)) => Err(refused(location, &format!("and {inline:?} are both set; set only one"))),
    }
}

fn read_file(key: &str, path: &str) -> Result<Vec<u8>, KafkaError> {
    // The error text names the failure (not found, denied, a folder), never the path.
    std::fs::read(path).map_err(|e| refused(key, &format!("names a file that cannot be read ({e})")))
}

fn certificates(key: &str, pem: &[u8]) -> Result<Vec<CertificateDer<'static>>, KafkaError> {
    let certificates = CertificateDer::pem_slice_iter(pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|_| refused(key, "is not valid PEM"))?;
    if certificates.is_empty() {
        return Err(refused(key, "holds no PEM certificate (-----BEGIN CERTIFICATE-----)"));
    }
    Ok(certificates)
}

/// `ssl.endpoint.identification.algorithm=none`, as librdkafka means it: the broker's chain must
/// still lead to a trusted CA, but its certificate need not name the host it was reached at.
#[derive(Debug)]
struct AnyHostName(Arc<WebPkiServerVerifier>);

impl ServerCertVerifier for AnyHostName {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        // The chain is verified before the name: a name error means the chain was trusted.
        match self.0.verify_server_cert(end_entity, intermediates, server_name, ocsp_response, now) {
            Err(rustls::Error::InvalidCertificate(
                CertificateError::NotValidForName | CertificateError::NotValidForNameContext { .. },
            )) => Ok(ServerCertVerified::assertion()),
            verified => verified,
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.0.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.0.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.supported_verify_schemes()
    }
}

/// Why a TLS handshake or stream failed, in words that point at the property to fix (never the
/// host name, which may be a property's value).
pub(super) fn tls_failure(error: &rustls::Error) -> String {
    match error {
        rustls::Error::InvalidCertificate(CertificateError::UnknownIssuer) => {
            "the broker's certificate is not signed by a CA this client trusts; check ssl.ca.location or ssl.ca.pem (without either, the system's CA certificates are trusted)".to_string()
        }
        rustls::Error::InvalidCertificate(
            CertificateError::NotValidForName | CertificateError::NotValidForNameContext { .. },
        ) => "the broker's certificate does not name the host it was reached at (ssl.endpoint.identification.algorithm=https); fix the certificate or the address, or set that property to none".to_string(),
        rustls::Error::InvalidCertificate(other) => format!("the broker's certificate is refused: {other}"),
        rustls::Error::AlertReceived(alert) => format!(
            "the broker ended the TLS session ({alert:?}); if its listener requires a client certificate, set ssl.certificate.location and ssl.key.location (or ssl.certificate.pem and ssl.key.pem) to one it trusts"
        ),
        other => format!("TLS failed: {other}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn properties(entries: &[(&str, &str)]) -> BTreeMap<String, String> {
        entries.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
    }

    const SECRET: &str = "Zq9-not-shown";

    /// Each refused setting names its key and the fallback, never the value.
    #[test]
    fn unsupported_settings_are_refused_by_key_and_fall_back_to_librdkafka() {
        let cases: Vec<(Vec<(&str, &str)>, &str)> = vec![
            (vec![("security.protocol", SECRET)], "security.protocol"),
            (vec![("security.protocol", "SASL_PLAINTEXT")], "sasl.mechanism"),
            (vec![("security.protocol", "sasl_ssl"), ("sasl.mechanism", "GSSAPI")], "sasl.mechanism"),
            (vec![("security.protocol", "SASL_PLAINTEXT"), ("sasl.mechanisms", "OAUTHBEARER")], "sasl.mechanisms"),
            (vec![("security.protocol", "SASL_PLAINTEXT"), ("sasl.mechanism", "PLAIN")], "sasl.username"),
            (
                vec![("security.protocol", "SASL_PLAINTEXT"), ("sasl.mechanism", "PLAIN"), ("sasl.username", SECRET)],
                "sasl.password",
            ),
            (vec![("security.protocol", "SSL"), ("ssl.keystore.location", SECRET)], "ssl.keystore.location"),
            (vec![("security.protocol", "SSL"), ("ssl.key.password", SECRET)], "ssl.key.password"),
            (vec![("security.protocol", "SSL"), ("ssl.ca.location", SECRET)], "ssl.ca.location"),
            (vec![("security.protocol", "SSL"), ("ssl.ca.pem", SECRET)], "ssl.ca.pem"),
            (vec![("security.protocol", "SSL"), ("ssl.certificate.pem", SECRET)], "ssl.certificate.pem"),
            (vec![("security.protocol", "SSL"), ("ssl.key.pem", SECRET)], "ssl.key.pem"),
            (vec![("security.protocol", "SSL"), ("ssl.endpoint.identification.algorithm", SECRET)], "identification"),
            (vec![("security.protocol", "SSL"), ("enable.ssl.certificate.verification", "false")], "verification"),
        ];
        for (entries, key) in cases {
            let error = Security::from_properties(&properties(&entries)).err().expect("refused");
            let text = error.to_string();
            assert_eq!(error.label(), "config", "{text}");
            assert!(text.contains(key) && text.contains("through librdkafka"), "{entries:?}: {text}");
            assert!(!text.contains(SECRET) && !text.contains("false"), "{text}");
        }
    }

    #[test]
    fn plaintext_needs_nothing_and_ignores_tls_and_sasl_properties() {
        for protocol in [None, Some("plaintext"), Some(" PLAINTEXT ")] {
            let mut entries = vec![("ssl.keystore.location", "/nowhere"), ("sasl.mechanism", "GSSAPI")];
            entries.extend(protocol.map(|p| ("security.protocol", p)));
            let security = Security::from_properties(&properties(&entries)).unwrap_or_else(|e| panic!("{e}"));
            assert!(security.tls.is_none() && security.sasl.is_none());
        }
    }

    #[test]
    fn sasl_credentials_are_taken_as_given() {
        let security = Security::from_properties(&properties(&[
            ("security.protocol", "sasl_plaintext"),
            ("sasl.mechanism", "scram-sha-512"),
            ("sasl.username", "app"),
            ("sasl.password", " pw with blanks "),
        ]))
        .unwrap_or_else(|e| panic!("{e}"));
        let credentials = security.sasl.expect("SASL");
        assert_eq!(credentials.mechanism, Mechanism::ScramSha512);
        assert!(security.tls.is_none());
        // The password keeps its blanks (the broker compares it byte for byte): scrubbing takes
        // them with it.
        assert_eq!(credentials.scrub("x pw with blanks x"), "x<redacted>x");
    }

    #[test]
    fn a_pem_file_and_inline_pem_read_the_same_and_unreadable_files_are_named() {
        let ca = rcgen::CertificateParams::new(Vec::<String>::new())
            .unwrap()
            .self_signed(&rcgen::KeyPair::generate().unwrap())
            .unwrap()
            .pem();
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("ca.pem");
        std::fs::write(&path, &ca).unwrap();
        let path = path.to_str().unwrap();
        for entries in [
            vec![("security.protocol", "SSL"), ("ssl.ca.location", path)],
            vec![
                ("security.protocol", "SASL_SSL"),
                ("ssl.ca.pem", &ca),
                ("sasl.mechanism", "PLAIN"),
                ("sasl.username", "u"),
                ("sasl.password", "p"),
            ],
            vec![("security.protocol", "SSL"), ("ssl.ca.pem", &ca), ("ssl.endpoint.identification.algorithm", "NONE")],
        ] {
            let security = Security::from_properties(&properties(&entries)).unwrap_or_else(|e| panic!("{e}"));
            assert!(security.tls.is_some(), "{entries:?}");
        }
        let missing = dir.path().join("missing.pem");
        let error = Security::from_properties(&properties(&[
            ("security.protocol", "SSL"),
            ("ssl.ca.location", missing.to_str().unwrap()),
        ]))
        .err()
        .expect("refused");
        assert!(error.to_string().contains("cannot be read") && !error.to_string().contains("missing.pem"), "{error}");
        // A certificate without its key (and the reverse) is refused by the key that is set.
        let error =
            Security::from_properties(&properties(&[("security.protocol", "SSL"), ("ssl.certificate.pem", &ca)]))
                .err()
                .expect("refused");
        assert!(error.to_string().contains("ssl.certificate.pem") && error.to_string().contains("ssl.key.location"));
    }

    #[test]
    fn tls_failures_point_at_the_property_to_fix() {
        let untrusted = tls_failure(&rustls::Error::InvalidCertificate(CertificateError::UnknownIssuer));
        assert!(untrusted.contains("ssl.ca.location"), "{untrusted}");
        let name = tls_failure(&rustls::Error::InvalidCertificate(CertificateError::NotValidForNameContext {
            expected: ServerName::try_from("secret-host.example").unwrap(),
            presented: vec!["other.example".to_string()],
        }));
        assert!(name.contains("ssl.endpoint.identification.algorithm") && !name.contains("secret-host"), "{name}");
    }
}
