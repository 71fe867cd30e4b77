//! A throw-away CA for the benchmark and its leaf certificates (ECDSA P-256, PEM files).

use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use rcgen::{
    BasicConstraints, CertificateParams, CertifiedIssuer, DistinguishedName, DnType,
    ExtendedKeyUsagePurpose, IsCa, KeyPair, KeyUsagePurpose,
};

/// A leaf's chain (leaf then CA) and key.
#[derive(Clone, Debug)]
pub struct Leaf {
    pub cert: PathBuf,
    pub key: PathBuf,
}

/// The CA; its certificate is at `dir/bench-ca.pem`.
pub struct BenchCa {
    issuer: CertifiedIssuer<'static, KeyPair>,
    pub ca_pem: PathBuf,
}

impl BenchCa {
    pub fn new(dir: &Path) -> Result<Self> {
        let mut params = CertificateParams::new(Vec::<String>::new())?;
        let mut dn = DistinguishedName::new();
        dn.push(DnType::CommonName, "hopguard bench CA");
        params.distinguished_name = dn;
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        let key = KeyPair::generate().context("generating CA key")?;
        let issuer = CertifiedIssuer::self_signed(params, key).context("self-signing CA")?;
        let ca_pem = dir.join("bench-ca.pem");
        write(&ca_pem, issuer.pem().as_bytes(), 0o644)?;
        Ok(Self { issuer, ca_pem })
    }

    /// Issues a server leaf for `name`: `dir/{stem}-cert.pem` (leaf + CA), `dir/{stem}-key.pem`.
    pub fn issue(&self, dir: &Path, stem: &str, name: &str) -> Result<Leaf> {
        let mut params = CertificateParams::new(vec![name.to_string()])?;
        let mut dn = DistinguishedName::new();
        dn.push(DnType::CommonName, name);
        params.distinguished_name = dn;
        params.is_ca = IsCa::ExplicitNoCa;
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        params.extended_key_usages = vec![
            ExtendedKeyUsagePurpose::ServerAuth,
            ExtendedKeyUsagePurpose::ClientAuth,
        ];
        params.use_authority_key_identifier_extension = true;
        let key = KeyPair::generate().context("generating leaf key")?;
        let cert = params.signed_by(&key, &self.issuer)?;
        let leaf = Leaf {
            cert: dir.join(format!("{stem}-cert.pem")),
            key: dir.join(format!("{stem}-key.pem")),
        };
        write(
            &leaf.cert,
            format!("{}{}", cert.pem(), self.issuer.pem()).as_bytes(),
            0o644,
        )?;
        write(&leaf.key, key.serialize_pem().as_bytes(), 0o600)?;
        Ok(leaf)
    }
}

fn write(path: &Path, bytes: &[u8], mode: u32) -> Result<()> {
    use std::os::unix::fs::PermissionsExt;
    std::fs::write(path, bytes).with_context(|| format!("writing {}", path.display()))?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode))?;
    Ok(())
}
