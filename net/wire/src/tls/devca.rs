//! A development certificate authority: a self-signed CA and certificates it issues for
//! nodes, clients and gateways (both server and client authentication), written as PEM.
//!
//! For development and test clusters (`kiseki certs ...`); production clusters bring
//! their own CA. Private keys are written readable by their owner only.

use std::fs::OpenOptions;
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair, KeyUsagePurpose,
};

use crate::error::NetError;

/// File name of the CA certificate in a CA directory.
pub const CA_CERTIFICATE_FILE: &str = "ca.pem";
/// File name of the CA private key in a CA directory.
pub const CA_KEY_FILE: &str = "ca.key";

/// How long a development CA is valid.
const CA_VALIDITY: Duration = Duration::from_secs(10 * 365 * 24 * 3600);
/// How long an issued certificate is valid.
const CERTIFICATE_VALIDITY: Duration = Duration::from_secs(5 * 365 * 24 * 3600);
/// Backdating of `not_before`, for clocks slightly behind.
const CLOCK_SKEW: Duration = Duration::from_secs(24 * 3600);

/// A certificate and its key, as written.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CertificateFiles {
    /// The certificate, PEM.
    pub certificate_pem: PathBuf,
    /// Its private key, PEM (mode 0600).
    pub key_pem: PathBuf,
}

fn failure(path: &Path, reason: impl std::fmt::Display) -> NetError {
    NetError::Certificate {
        path: path.to_path_buf(),
        reason: reason.to_string(),
    }
}

fn validity(params: &mut CertificateParams, lifetime: Duration) {
    let now = SystemTime::now();
    params.not_before = (now - CLOCK_SKEW).into();
    params.not_after = (now + lifetime).into();
}

fn write_file(path: &Path, contents: &str, mode: u32, replace: bool) -> Result<(), NetError> {
    let mut options = OpenOptions::new();
    options.write(true).mode(mode);
    if replace {
        options.create(true).truncate(true);
    } else {
        options.create_new(true);
    }
    let mut file = options.open(path).map_err(|error| failure(path, error))?;
    file.write_all(contents.as_bytes())
        .and_then(|()| file.sync_all())
        .map_err(|error| failure(path, error))
}

/// Creates a self-signed development CA in `dir` (created if missing): `ca.pem` and
/// `ca.key`. Refuses to overwrite an existing CA key.
pub fn generate_dev_ca(dir: &Path) -> Result<CertificateFiles, NetError> {
    std::fs::create_dir_all(dir).map_err(|error| failure(dir, error))?;
    let files = CertificateFiles {
        certificate_pem: dir.join(CA_CERTIFICATE_FILE),
        key_pem: dir.join(CA_KEY_FILE),
    };
    if files.key_pem.exists() {
        return Err(failure(&files.key_pem, "a CA key exists already; not overwriting it"));
    }
    let mut params = CertificateParams::default();
    params.distinguished_name = rcgen::DistinguishedName::new();
    // A distinct name per CA, so that certificates of two development CAs are told
    // apart (in errors too) instead of looking like a bad signature of one CA.
    let tag = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |since| since.as_nanos() as u64)
        ^ u64::from(std::process::id()).rotate_left(32);
    let common_name = format!("Kiseki development CA {:08x}", tag as u32);
    params.distinguished_name.push(DnType::CommonName, common_name);
    params.distinguished_name.push(DnType::OrganizationName, "Kiseki");
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    validity(&mut params, CA_VALIDITY);
    let key = KeyPair::generate().map_err(|error| failure(&files.key_pem, error))?;
    let certificate = params
        .self_signed(&key)
        .map_err(|error| failure(&files.certificate_pem, error))?;
    write_file(&files.key_pem, &key.serialize_pem(), 0o600, false)?;
    write_file(&files.certificate_pem, &certificate.pem(), 0o644, true)?;
    Ok(files)
}

/// Whether `name` is usable as a file name stem and a common name.
fn valid_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 64
        && !name.starts_with('.')
        && name
            .chars()
            .all(|character| character.is_ascii_alphanumeric() || matches!(character, '-' | '_' | '.'))
}

/// Issues a certificate for `name` signed by the CA in `ca_dir`, valid for the subject
/// alternative names `sans` (DNS names, or IP addresses such as `127.0.0.1`), for both
/// server and client authentication. Writes `<name>.pem` and `<name>.key` into
/// `out_dir` (created if missing), replacing earlier ones.
pub fn issue_certificate(
    ca_dir: &Path,
    name: &str,
    sans: &[String],
    out_dir: &Path,
) -> Result<CertificateFiles, NetError> {
    if !valid_name(name) {
        return Err(failure(
            out_dir,
            format!("bad certificate name {name:?}: use 1 to 64 of A-Z a-z 0-9 - _ ."),
        ));
    }
    if sans.is_empty() {
        return Err(failure(
            out_dir,
            "a certificate needs at least one DNS name or IP address",
        ));
    }
    let ca_certificate_path = ca_dir.join(CA_CERTIFICATE_FILE);
    let ca_key_path = ca_dir.join(CA_KEY_FILE);
    let ca_pem = std::fs::read_to_string(&ca_certificate_path).map_err(|error| failure(&ca_certificate_path, error))?;
    let ca_key_pem = std::fs::read_to_string(&ca_key_path).map_err(|error| failure(&ca_key_path, error))?;
    let ca_key = KeyPair::from_pem(&ca_key_pem).map_err(|error| failure(&ca_key_path, error))?;
    let issuer = Issuer::from_ca_cert_pem(&ca_pem, ca_key).map_err(|error| failure(&ca_certificate_path, error))?;

    let mut params = CertificateParams::new(sans.to_vec()).map_err(|error| failure(out_dir, error))?;
    params.distinguished_name = rcgen::DistinguishedName::new();
    params.distinguished_name.push(DnType::CommonName, name);
    params.distinguished_name.push(DnType::OrganizationName, "Kiseki");
    params.is_ca = IsCa::NoCa;
    params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth, ExtendedKeyUsagePurpose::ClientAuth];
    params.use_authority_key_identifier_extension = true;
    validity(&mut params, CERTIFICATE_VALIDITY);

    std::fs::create_dir_all(out_dir).map_err(|error| failure(out_dir, error))?;
    let files = CertificateFiles {
        certificate_pem: out_dir.join(format!("{name}.pem")),
        key_pem: out_dir.join(format!("{name}.key")),
    };
    let key = KeyPair::generate().map_err(|error| failure(&files.key_pem, error))?;
    let certificate = params
        .signed_by(&key, &issuer)
        .map_err(|error| failure(&files.certificate_pem, error))?;
    write_file(&files.key_pem, &key.serialize_pem(), 0o600, true)?;
    write_file(&files.certificate_pem, &certificate.pem(), 0o644, true)?;
    Ok(files)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_checked() {
        assert!(valid_name("node-1.example"));
        assert!(!valid_name(""));
        assert!(!valid_name("../etc/passwd"));
        assert!(!valid_name(".hidden"));
        assert!(!valid_name("a b"));
    }

    #[test]
    fn a_dev_ca_issues_certificates_and_keeps_its_key() {
        let dir = tempfile::tempdir().unwrap();
        let ca_dir = dir.path().join("ca");
        let ca = generate_dev_ca(&ca_dir).unwrap();
        assert!(
            generate_dev_ca(&ca_dir).is_err(),
            "an existing CA key is never overwritten"
        );
        let mode = std::fs::metadata(&ca.key_pem).unwrap().permissions();
        assert_eq!(std::os::unix::fs::PermissionsExt::mode(&mode) & 0o777, 0o600);
        let sans = vec!["node1".to_string(), "127.0.0.1".to_string()];
        let issued = issue_certificate(&ca_dir, "node1", &sans, &dir.path().join("certs")).unwrap();
        assert!(std::fs::read_to_string(&issued.certificate_pem)
            .unwrap()
            .starts_with("-----BEGIN CERTIFICATE-----"));
        assert!(issue_certificate(&ca_dir, "bad/name", &sans, dir.path()).is_err());
        assert!(issue_certificate(&ca_dir, "node2", &[], dir.path()).is_err());
        assert!(issue_certificate(&dir.path().join("missing"), "node2", &sans, dir.path()).is_err());
    }
}
