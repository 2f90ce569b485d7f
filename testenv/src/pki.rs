//! Certificates for the test servers (rcgen, ECDSA P-256): a self-signed CA and the server and
//! client certificates it signs, all PEM.

use anyhow::Result;
use rcgen::{
    BasicConstraints, CertificateParams, CertifiedIssuer, DnType, ExtendedKeyUsagePurpose, IsCa, KeyPair,
    KeyUsagePurpose,
};

/// A self-signed certificate authority.
pub(crate) struct Ca(CertifiedIssuer<'static, KeyPair>);

/// A certificate the CA signed and its private key (PKCS#8).
pub(crate) struct Issued {
    pub(crate) certificate_pem: String,
    pub(crate) key_pem: String,
}

impl Ca {
    pub(crate) fn new(common_name: &str) -> Result<Ca> {
        let mut params = CertificateParams::new(Vec::<String>::new())?;
        params.distinguished_name.push(DnType::CommonName, common_name);
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.key_usages =
            vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign, KeyUsagePurpose::DigitalSignature];
        Ok(Ca(CertifiedIssuer::self_signed(params, KeyPair::generate()?)?))
    }

    pub(crate) fn pem(&self) -> String {
        self.0.pem()
    }

    /// A server certificate for `names` (IP addresses or DNS names).
    pub(crate) fn server(&self, common_name: &str, names: &[&str]) -> Result<Issued> {
        let names: Vec<String> = names.iter().map(|n| n.to_string()).collect();
        self.issue(
            CertificateParams::new(names)?,
            &[(DnType::CommonName, common_name)],
            ExtendedKeyUsagePurpose::ServerAuth,
        )
    }

    /// A client certificate with these subject entries (common name, organization, ...).
    pub(crate) fn client(&self, subject: &[(DnType, &str)]) -> Result<Issued> {
        self.issue(CertificateParams::new(Vec::<String>::new())?, subject, ExtendedKeyUsagePurpose::ClientAuth)
    }

    fn issue(
        &self,
        mut params: CertificateParams,
        subject: &[(DnType, &str)],
        purpose: ExtendedKeyUsagePurpose,
    ) -> Result<Issued> {
        for (kind, value) in subject {
            params.distinguished_name.push(kind.clone(), *value);
        }
        params.extended_key_usages = vec![purpose];
        let key = KeyPair::generate()?;
        let certificate = params.signed_by(&key, &self.0)?;
        Ok(Issued { certificate_pem: certificate.pem(), key_pem: key.serialize_pem() })
    }
}
