//! A throw-away test CA issuing leaf certificates for the relay and its peers, as PEM files.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::{Context, Result};
use rcgen::{
    BasicConstraints, CertificateParams, CertifiedIssuer, DistinguishedName, DnType,
    ExtendedKeyUsagePurpose, IsCa, KeyPair, KeyUsagePurpose,
};

/// PEM files of one leaf certificate: chain (leaf then CA), private key, and the CA alone.
#[derive(Clone, Debug)]
pub struct CertFiles {
    pub cert: PathBuf,
    pub key: PathBuf,
    pub ca: PathBuf,
}

/// A CA whose certificate is written to `ca_pem()`; trust it and every leaf it issued verifies.
pub struct TestCa {
    issuer: CertifiedIssuer<'static, KeyPair>,
    ca_pem: PathBuf,
}

impl TestCa {
    /// Generates a CA and writes its certificate to `dir/test-ca.pem`.
    pub fn new(dir: &Path) -> Result<Self> {
        let mut params = CertificateParams::new(Vec::<String>::new())?;
        let mut dn = DistinguishedName::new();
        dn.push(DnType::CommonName, "hopguard test CA");
        params.distinguished_name = dn;
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        let key = KeyPair::generate().context("generating CA key")?;
        let issuer = CertifiedIssuer::self_signed(params, key).context("self-signing CA")?;
        let ca_pem = dir.join("test-ca.pem");
        write_file(&ca_pem, issuer.pem().as_bytes(), 0o644)?;
        Ok(Self { issuer, ca_pem })
    }

    /// Path of the CA certificate (PEM), for `tls.ca_file` and for clients.
    pub fn ca_pem(&self) -> &Path {
        &self.ca_pem
    }

    /// Issues a server+client leaf for `dns_names` (first one is the CN) and writes
    /// `dir/{stem}-cert.pem` (leaf followed by the CA) and `dir/{stem}-key.pem` (mode 0600).
    pub fn issue(&self, dir: &Path, stem: &str, dns_names: &[&str]) -> Result<CertFiles> {
        let names: Vec<String> = dns_names.iter().map(|s| s.to_string()).collect();
        let mut params = CertificateParams::new(names)?;
        let mut dn = DistinguishedName::new();
        dn.push(
            DnType::CommonName,
            dns_names.first().copied().unwrap_or(stem),
        );
        params.distinguished_name = dn;
        params.is_ca = IsCa::ExplicitNoCa;
        params.key_usages = vec![
            KeyUsagePurpose::DigitalSignature,
            KeyUsagePurpose::KeyEncipherment,
        ];
        params.extended_key_usages = vec![
            ExtendedKeyUsagePurpose::ServerAuth,
            ExtendedKeyUsagePurpose::ClientAuth,
        ];
        params.use_authority_key_identifier_extension = true;
        let key = KeyPair::generate().context("generating leaf key")?;
        let cert = params
            .signed_by(&key, &self.issuer)
            .with_context(|| format!("signing leaf for {dns_names:?}"))?;
        let files = CertFiles {
            cert: dir.join(format!("{stem}-cert.pem")),
            key: dir.join(format!("{stem}-key.pem")),
            ca: self.ca_pem.clone(),
        };
        let chain = format!("{}{}", cert.pem(), self.issuer.pem());
        write_file(&files.cert, chain.as_bytes(), 0o644)?;
        write_file(&files.key, key.serialize_pem().as_bytes(), 0o600)?;
        Ok(files)
    }

    /// A rustls root store holding only this CA.
    pub fn root_store(&self) -> Result<Arc<rustls::RootCertStore>> {
        root_store_from_pem(&self.ca_pem)
    }
}

/// A rustls root store holding every certificate of the PEM file `path`.
pub fn root_store_from_pem(path: &Path) -> Result<Arc<rustls::RootCertStore>> {
    use rustls_pki_types::pem::PemObject;
    use rustls_pki_types::CertificateDer;
    let mut roots = rustls::RootCertStore::empty();
    for cert in CertificateDer::pem_file_iter(path)
        .with_context(|| format!("reading {}", path.display()))?
    {
        roots.add(cert.with_context(|| format!("parsing {}", path.display()))?)?;
    }
    Ok(Arc::new(roots))
}

fn write_file(path: &Path, bytes: &[u8], mode: u32) -> Result<()> {
    use std::os::unix::fs::PermissionsExt;
    std::fs::write(path, bytes).with_context(|| format!("writing {}", path.display()))?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode))?;
    Ok(())
}
