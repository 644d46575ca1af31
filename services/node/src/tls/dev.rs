//! Throwaway certificates for development, the demo and tests: a CA and, per name, a
//! certificate it signed for the given hosts (usable by servers and as a client certificate),
//! written as PEM files (`ca.pem`; `<name>.pem`, `<name>.key` and, for HAProxy,
//! `<name>.bundle.pem`). Not for production: the CA key is not kept.

use std::path::{Path, PathBuf};

use rcgen::{
    BasicConstraints, CertificateParams, CertifiedIssuer, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa,
    KeyPair, KeyUsagePurpose,
};

/// The hosts of a certificate for a node on this machine.
pub const LOCAL_HOSTS: [&str; 2] = ["localhost", "127.0.0.1"];

/// Certificates that could not be made or written.
#[derive(Debug, thiserror::Error)]
pub enum DevCertError {
    /// Generating or signing failed.
    #[error("cannot generate the certificate of {name}: {source}")]
    Generate {
        /// Whose certificate (`ca` for the CA).
        name: String,
        /// The underlying error.
        source: rcgen::Error,
    },
    /// A name that would not make a file name.
    #[error("{0:?} is not a certificate name (letters, digits, '-', '_' and '.')")]
    BadName(String),
    /// A file could not be written.
    #[error("cannot write {}: {source}", path.display())]
    Write {
        /// The file.
        path: PathBuf,
        /// The underlying error.
        source: std::io::Error,
    },
}

/// Where [`write_dev_certs`] put the files.
#[derive(Clone, Debug)]
pub struct DevCerts {
    /// The directory.
    pub dir: PathBuf,
    /// The CA certificate (`ca.pem`): what clients trust and `client_ca` names.
    pub ca: PathBuf,
}

impl DevCerts {
    /// The certificate of `name` (`<name>.pem`).
    pub fn cert(&self, name: &str) -> PathBuf {
        self.dir.join(format!("{name}.pem"))
    }

    /// The certificate of `name` followed by its key (`<name>.bundle.pem`), as HAProxy's `crt`
    /// wants them.
    pub fn bundle(&self, name: &str) -> PathBuf {
        self.dir.join(format!("{name}.bundle.pem"))
    }

    /// The private key of `name` (`<name>.key`).
    pub fn key(&self, name: &str) -> PathBuf {
        self.dir.join(format!("{name}.key"))
    }
}

/// Write a new CA (`ca.pem`) and, for every name, `<name>.pem` and `<name>.key` valid for the
/// name itself and `hosts` (DNS names or IP addresses) into `dir` (created if missing).
pub fn write_dev_certs(dir: &Path, names: &[String], hosts: &[&str]) -> Result<DevCerts, DevCertError> {
    if let Some(bad) = names.iter().find(|n| {
        n.is_empty() || !n.chars().all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c)) || n.starts_with('.')
    }) {
        return Err(DevCertError::BadName(bad.clone()));
    }
    let generate = |name: &str| {
        let name = name.to_string();
        move |source| DevCertError::Generate { name, source }
    };
    let write = |path: PathBuf, text: &str, secret: bool| -> Result<(), DevCertError> {
        write_file(&path, text, secret).map_err(|source| DevCertError::Write { path, source })
    };
    std::fs::create_dir_all(dir).map_err(|source| DevCertError::Write { path: dir.to_path_buf(), source })?;

    let mut ca_params = CertificateParams::new(Vec::<String>::new()).map_err(generate("ca"))?;
    // A name of its own: a client trusting another development CA is told "unknown issuer".
    let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_nanos());
    ca_params.distinguished_name = dn(&format!("Syncline development CA {nanos:x}"));
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca_params.key_usages =
        vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign, KeyUsagePurpose::DigitalSignature];
    let ca_key = KeyPair::generate().map_err(generate("ca"))?;
    let ca = CertifiedIssuer::self_signed(ca_params, ca_key).map_err(generate("ca"))?;
    let certs = DevCerts { dir: dir.to_path_buf(), ca: dir.join("ca.pem") };
    write(certs.ca.clone(), &ca.pem(), false)?;

    for name in names {
        let mut sans: Vec<String> = vec![name.clone()];
        sans.extend(hosts.iter().map(|h| h.to_string()).filter(|h| h != name));
        let mut params = CertificateParams::new(sans).map_err(generate(name))?;
        params.distinguished_name = dn(name);
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature, KeyUsagePurpose::KeyEncipherment];
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth, ExtendedKeyUsagePurpose::ClientAuth];
        let key = KeyPair::generate().map_err(generate(name))?;
        let cert = params.signed_by(&key, &ca).map_err(generate(name))?;
        write(certs.cert(name), &cert.pem(), false)?;
        write(certs.key(name), &key.serialize_pem(), true)?;
        // HAProxy's `crt` wants the certificate and its key in one file.
        write(certs.bundle(name), &format!("{}{}", cert.pem(), key.serialize_pem()), true)?;
    }
    Ok(certs)
}

fn dn(common_name: &str) -> DistinguishedName {
    let mut dn = DistinguishedName::new();
    dn.push(DnType::CommonName, common_name);
    dn
}

/// Write `text` to `path`; a secret readable by its owner only.
fn write_file(path: &Path, text: &str, secret: bool) -> std::io::Result<()> {
    use std::io::Write;
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create(true).truncate(true);
    #[cfg(unix)]
    if secret {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(0o600);
    }
    let _ = secret;
    options.open(path)?.write_all(text.as_bytes())
}
