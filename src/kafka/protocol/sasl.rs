//! The client side of the SASL mechanisms the group reader speaks: PLAIN (RFC 4616) and
//! SCRAM-SHA-256/512 (RFC 5802, RFC 7677). Kafka's Java client applies no SASLprep to the password
//! (its `ScramFormatter` takes the UTF-8 bytes as they are), and neither does this one, so both
//! derive the same keys from the same password.

use std::num::NonZeroU32;

use base64::Engine as _;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use ring::rand::SecureRandom as _;
use ring::{digest, hmac, pbkdf2};

use crate::kafka::KafkaError;

/// Most PBKDF2 iterations accepted from a broker: Kafka's own limit is 16,384, and a higher count
/// would only burn a runtime thread's time.
const MAX_ITERATIONS: u32 = 65_536;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Mechanism {
    Plain,
    ScramSha256,
    ScramSha512,
}

impl Mechanism {
    /// A `sasl.mechanism` value, as librdkafka spells it (any case, surrounding blanks ignored).
    pub(super) fn parse(value: &str) -> Option<Mechanism> {
        let value = value.trim();
        [Mechanism::Plain, Mechanism::ScramSha256, Mechanism::ScramSha512]
            .into_iter()
            .find(|m| m.name().eq_ignore_ascii_case(value))
    }

    /// The name SaslHandshake carries.
    pub(super) fn name(self) -> &'static str {
        match self {
            Mechanism::Plain => "PLAIN",
            Mechanism::ScramSha256 => "SCRAM-SHA-256",
            Mechanism::ScramSha512 => "SCRAM-SHA-512",
        }
    }

    fn hmac(self) -> Option<(hmac::Algorithm, pbkdf2::Algorithm)> {
        match self {
            Mechanism::Plain => None,
            Mechanism::ScramSha256 => Some((hmac::HMAC_SHA256, pbkdf2::PBKDF2_HMAC_SHA256)),
            Mechanism::ScramSha512 => Some((hmac::HMAC_SHA512, pbkdf2::PBKDF2_HMAC_SHA512)),
        }
    }
}

/// `sasl.username` and `sasl.password` with their mechanism. Not `Debug`: it holds a password.
pub(super) struct Credentials {
    pub(super) mechanism: Mechanism,
    username: String,
    password: String,
}

impl Credentials {
    pub(super) fn new(mechanism: Mechanism, username: String, password: String) -> Credentials {
        Credentials { mechanism, username, password }
    }

    /// A broker's text with the username and password hidden, should it ever echo them.
    pub(super) fn scrub(&self, text: &str) -> String {
        let properties = [("sasl.username", &self.username), ("sasl.password", &self.password)]
            .into_iter()
            .map(|(key, value)| (key.to_string(), value.clone()))
            .collect();
        crate::kafka::scrub(text, &properties)
    }
}

/// A fresh client nonce: 24 random bytes in URL-safe base64 (printable, no comma, as RFC 5802
/// asks).
pub(super) fn nonce() -> Result<String, KafkaError> {
    let mut bytes = [0u8; 24];
    ring::rand::SystemRandom::new()
        .fill(&mut bytes)
        .map_err(|_| KafkaError::Internal("no randomness for a SCRAM nonce".to_string()))?;
    Ok(URL_SAFE_NO_PAD.encode(bytes))
}

/// One authentication's messages: [`Conversation::start`] gives the first, and
/// [`Conversation::next`] the answer to each of the broker's, until the exchange is complete.
pub(super) struct Conversation<'a> {
    credentials: &'a Credentials,
    step: Step,
}

enum Step {
    /// SCRAM: the client-first message went out; the server-first message comes next.
    ServerFirst {
        nonce: String,
        client_first_bare: String,
    },
    /// SCRAM: the client proof went out; the server's signature comes next.
    ServerFinal {
        server_key: hmac::Key,
        auth_message: String,
    },
    Done,
}

impl<'a> Conversation<'a> {
    /// The first message: PLAIN's only one, or SCRAM's client-first message with `nonce`.
    pub(super) fn start(credentials: &'a Credentials, nonce: String) -> (Conversation<'a>, Vec<u8>) {
        match credentials.mechanism {
            Mechanism::Plain => {
                let token = format!("\0{}\0{}", credentials.username, credentials.password).into_bytes();
                (Conversation { credentials, step: Step::Done }, token)
            }
            Mechanism::ScramSha256 | Mechanism::ScramSha512 => {
                let client_first_bare = format!("n={},r={nonce}", sasl_name(&credentials.username));
                let message = format!("n,,{client_first_bare}").into_bytes();
                (Conversation { credentials, step: Step::ServerFirst { nonce, client_first_bare } }, message)
            }
        }
    }

    /// The message answering the broker's `challenge`, or None when the exchange is complete
    /// (for SCRAM: once the broker proved it knows the password's keys). The error says why the
    /// broker's message is refused, without any secret.
    pub(super) fn next(&mut self, challenge: &[u8]) -> Result<Option<Vec<u8>>, String> {
        match std::mem::replace(&mut self.step, Step::Done) {
            Step::Done => Ok(None),
            Step::ServerFirst { nonce, client_first_bare } => {
                let (message, server_key, auth_message) = self.client_final(&nonce, &client_first_bare, challenge)?;
                self.step = Step::ServerFinal { server_key, auth_message };
                Ok(Some(message))
            }
            Step::ServerFinal { server_key, auth_message } => {
                let server_final = std::str::from_utf8(challenge)
                    .map_err(|_| "the broker's final SCRAM message is not UTF-8".to_string())?;
                if let Some(error) = attribute(server_final, 'e') {
                    return Err(format!("the broker refused the SCRAM proof ({error})"));
                }
                let signature = attribute(server_final, 'v')
                    .and_then(|v| STANDARD.decode(v).ok())
                    .ok_or_else(|| "the broker's final SCRAM message has no signature".to_string())?;
                hmac::verify(&server_key, auth_message.as_bytes(), &signature).map_err(|_| {
                    "the broker's SCRAM signature does not match: it does not hold this user's credentials".to_string()
                })?;
                Ok(None)
            }
        }
    }

    /// RFC 5802's client-final message for the server-first message `challenge`, with the server
    /// key and auth message that check the broker's signature.
    fn client_final(
        &self,
        nonce: &str,
        client_first_bare: &str,
        challenge: &[u8],
    ) -> Result<(Vec<u8>, hmac::Key, String), String> {
        let (hmac_algorithm, pbkdf2_algorithm) =
            self.credentials.mechanism.hmac().ok_or_else(|| "PLAIN has no second message".to_string())?;
        let server_first =
            std::str::from_utf8(challenge).map_err(|_| "the broker's SCRAM challenge is not UTF-8".to_string())?;
        if let Some(error) = attribute(server_first, 'e') {
            return Err(format!("the broker refused the SCRAM exchange ({error})"));
        }
        let combined_nonce = attribute(server_first, 'r')
            .filter(|r| r.len() > nonce.len() && r.starts_with(nonce))
            .ok_or_else(|| "the broker's SCRAM challenge does not extend this client's nonce".to_string())?;
        let salt = attribute(server_first, 's')
            .and_then(|s| STANDARD.decode(s).ok())
            .ok_or_else(|| "the broker's SCRAM challenge has no valid salt".to_string())?;
        let iterations = attribute(server_first, 'i')
            .and_then(|i| i.parse::<u32>().ok())
            .filter(|i| *i <= MAX_ITERATIONS)
            .and_then(NonZeroU32::new)
            .ok_or_else(|| {
                format!("the broker's SCRAM challenge asks for no valid iteration count (1 to {MAX_ITERATIONS})")
            })?;

        let mut salted_password = vec![0u8; hmac_algorithm.digest_algorithm().output_len()];
        pbkdf2::derive(pbkdf2_algorithm, iterations, &salt, self.credentials.password.as_bytes(), &mut salted_password);
        let salted_password = hmac::Key::new(hmac_algorithm, &salted_password);
        let client_key = hmac::sign(&salted_password, b"Client Key");
        let stored_key = digest::digest(hmac_algorithm.digest_algorithm(), client_key.as_ref());
        // "biws" is base64("n,,"): no channel binding, no authorization identity.
        let without_proof = format!("c=biws,r={combined_nonce}");
        let auth_message = format!("{client_first_bare},{server_first},{without_proof}");
        let client_signature =
            hmac::sign(&hmac::Key::new(hmac_algorithm, stored_key.as_ref()), auth_message.as_bytes());
        let proof: Vec<u8> =
            client_key.as_ref().iter().zip(client_signature.as_ref()).map(|(key, signature)| key ^ signature).collect();
        let server_key = hmac::Key::new(hmac_algorithm, hmac::sign(&salted_password, b"Server Key").as_ref());
        let message = format!("{without_proof},p={}", STANDARD.encode(proof)).into_bytes();
        Ok((message, server_key, auth_message))
    }
}

/// The value of attribute `name` of a SCRAM message (`r=...,s=...,i=...`).
fn attribute(message: &str, name: char) -> Option<&str> {
    message.split(',').find_map(|part| part.strip_prefix(name)?.strip_prefix('='))
}

/// A username as RFC 5802's `saslname`: `=` and `,` escaped.
fn sasl_name(username: &str) -> String {
    username.replace('=', "=3D").replace(',', "=2C")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn credentials(mechanism: Mechanism, username: &str, password: &str) -> Credentials {
        Credentials::new(mechanism, username.to_string(), password.to_string())
    }

    /// RFC 7677, section 3: user "user", password "pencil".
    const RFC_NONCE: &str = "rOprNGfwEbeRWgbNEkqO";
    const RFC_SERVER_FIRST: &str =
        "r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,s=W22ZaJ0SNY7soEsUEjb6gQ==,i=4096";

    #[test]
    fn scram_sha_256_matches_rfc_7677_and_checks_the_server_signature() {
        let user = credentials(Mechanism::ScramSha256, "user", "pencil");
        let (mut conversation, first) = Conversation::start(&user, RFC_NONCE.to_string());
        assert_eq!(first, b"n,,n=user,r=rOprNGfwEbeRWgbNEkqO");
        let last = conversation.next(RFC_SERVER_FIRST.as_bytes()).unwrap().unwrap();
        assert_eq!(
            String::from_utf8(last).unwrap(),
            "c=biws,r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,p=dHzbZapWIk4jUhN+Ute9ytag9zjfMHgsqmmiz7AndVQ="
        );
        assert_eq!(conversation.next(b"v=6rriTRBi23WpRR/wtup+mMhUZUn/dB5nLTJRsjl95G4=").unwrap(), None);

        // A server that does not know the password's keys cannot sign the exchange.
        let (mut forged, _) = Conversation::start(&user, RFC_NONCE.to_string());
        forged.next(RFC_SERVER_FIRST.as_bytes()).unwrap();
        let error = forged.next(b"v=AAAATRBi23WpRR/wtup+mMhUZUn/dB5nLTJRsjl95G4=").unwrap_err();
        assert!(error.contains("signature does not match"), "{error}");
    }

    #[test]
    fn scram_refuses_a_challenge_that_does_not_extend_the_nonce_or_lacks_a_sane_count() {
        let user = credentials(Mechanism::ScramSha512, "user", "pencil");
        for (challenge, expected) in [
            ("r=someone-else,s=W22ZaJ0SNY7soEsUEjb6gQ==,i=4096", "nonce"),
            ("r=rOprNGfwEbeRWgbNEkqO,s=W22ZaJ0SNY7soEsUEjb6gQ==,i=4096", "nonce"),
            ("r=rOprNGfwEbeRWgbNEkqOxyz,s=W22ZaJ0SNY7soEsUEjb6gQ==,i=0", "iteration"),
            ("r=rOprNGfwEbeRWgbNEkqOxyz,s=W22ZaJ0SNY7soEsUEjb6gQ==,i=99999999", "iteration"),
            ("r=rOprNGfwEbeRWgbNEkqOxyz,s=*,i=4096", "salt"),
            ("e=unknown-user", "unknown-user"),
        ] {
            let (mut conversation, _) = Conversation::start(&user, RFC_NONCE.to_string());
            let error = conversation.next(challenge.as_bytes()).unwrap_err();
            assert!(error.contains(expected), "{challenge}: {error}");
        }
        let (mut conversation, _) = Conversation::start(&user, RFC_NONCE.to_string());
        conversation.next(RFC_SERVER_FIRST.as_bytes()).unwrap();
        let error = conversation.next(b"e=invalid-proof").unwrap_err();
        assert!(error.contains("invalid-proof"), "{error}");
    }

    #[test]
    fn plain_is_one_message_and_names_are_escaped_for_scram() {
        let user = credentials(Mechanism::Plain, "app", "s3cret");
        let (mut conversation, token) = Conversation::start(&user, String::new());
        assert_eq!(token, b"\0app\0s3cret");
        assert_eq!(conversation.next(b"").unwrap(), None);

        let odd = credentials(Mechanism::ScramSha256, "a=b,c", "pencil");
        let (_, first) = Conversation::start(&odd, "n0nce".to_string());
        assert_eq!(first, b"n,,n=a=3Db=2Cc,r=n0nce");
    }

    #[test]
    fn mechanisms_parse_as_librdkafka_names_them_and_nonces_are_fresh() {
        assert_eq!(Mechanism::parse(" scram-sha-512 "), Some(Mechanism::ScramSha512));
        assert_eq!(Mechanism::parse("PLAIN"), Some(Mechanism::Plain));
        assert_eq!(Mechanism::parse("GSSAPI"), None);
        let (a, b) = (nonce().unwrap(), nonce().unwrap());
        assert_ne!(a, b);
        assert!(a.len() >= 32 && !a.contains(','), "{a}");
    }

    #[test]
    fn the_brokers_text_is_scrubbed_of_the_credentials() {
        let user = credentials(Mechanism::Plain, "app-user", "pw-123456");
        assert_eq!(user.scrub("bad login app-user/pw-123456"), "bad login <redacted>/<redacted>");
    }
}
