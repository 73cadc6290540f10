//! The certificate authority: one directory holding `ca.crt` and `ca.key`,
//! which signs node, client and admin certificates (Box Backup's
//! bbstored-certs). Keys are ECDSA P-256; files are written owner-only.
//!
//! A certificate's common name carries its role (`node:NAME`,
//! `client:ACCOUNT`, `admin:NAME`, see `coffer_proto::tls::Role`); node
//! certificates also name their hosts so clients can verify them.

use std::fs;
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use coffer_proto::tls::Role;
use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose,
};
use time::{Duration, OffsetDateTime};

/// How long issued certificates stay valid.
const VALIDITY_DAYS: i64 = 3650;

pub struct CertificateAuthority {
    dir: PathBuf,
}

/// Paths of an issued certificate and its key.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Issued {
    pub cert: PathBuf,
    pub key: PathBuf,
}

impl CertificateAuthority {
    pub fn cert_path(&self) -> PathBuf {
        self.dir.join("ca.crt")
    }

    fn key_path(&self) -> PathBuf {
        self.dir.join("ca.key")
    }

    /// Creates a new CA in `dir`; refuses to replace an existing one.
    pub fn init(dir: &Path) -> Result<CertificateAuthority> {
        let ca = CertificateAuthority { dir: dir.to_path_buf() };
        if ca.cert_path().exists() || ca.key_path().exists() {
            bail!("{} already holds a certificate authority; refusing to replace it", dir.display());
        }
        fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
        let mut params = CertificateParams::new(Vec::<String>::new())?;
        params.distinguished_name.push(DnType::CommonName, "Coffer certificate authority");
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        set_validity(&mut params);
        let key = KeyPair::generate()?;
        let cert = params.self_signed(&key)?;
        write_private(&ca.key_path(), &key.serialize_pem())?;
        write_private(&ca.cert_path(), &cert.pem())?;
        Ok(ca)
    }

    pub fn open(dir: &Path) -> Result<CertificateAuthority> {
        let ca = CertificateAuthority { dir: dir.to_path_buf() };
        if !ca.key_path().exists() {
            bail!(
                "{} holds no certificate authority (no ca.key); run `coffer-admin ca init` first",
                dir.display()
            );
        }
        Ok(ca)
    }

    /// Issues a certificate for `role` into `out_dir` as FILE.crt / FILE.key.
    /// `hosts` (DNS names or IP addresses) go into the certificate for nodes.
    pub fn issue(&self, role: &Role, hosts: &[String], out_dir: &Path, file: &str) -> Result<Issued> {
        let issued =
            Issued { cert: out_dir.join(format!("{file}.crt")), key: out_dir.join(format!("{file}.key")) };
        if issued.cert.exists() || issued.key.exists() {
            bail!("{} already exists; refusing to overwrite it", issued.cert.display());
        }
        let ca_key = KeyPair::from_pem(&read(&self.key_path())?).context("reading the CA key")?;
        let issuer = Issuer::from_ca_cert_pem(&read(&self.cert_path())?, ca_key).context("reading the CA")?;
        let mut params = CertificateParams::new(hosts.to_vec())?;
        params.distinguished_name.push(DnType::CommonName, role.common_name());
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        params.extended_key_usages = match role {
            Role::Node(_) => vec![ExtendedKeyUsagePurpose::ServerAuth, ExtendedKeyUsagePurpose::ClientAuth],
            _ => vec![ExtendedKeyUsagePurpose::ClientAuth],
        };
        set_validity(&mut params);
        let key = KeyPair::generate()?;
        let cert = params.signed_by(&key, &issuer)?;
        fs::create_dir_all(out_dir).with_context(|| format!("creating {}", out_dir.display()))?;
        write_private(&issued.key, &key.serialize_pem())?;
        write_private(&issued.cert, &cert.pem())?;
        Ok(issued)
    }
}

fn set_validity(params: &mut CertificateParams) {
    let now = OffsetDateTime::now_utc();
    params.not_before = now - Duration::days(1);
    params.not_after = now + Duration::days(VALIDITY_DAYS);
}

fn read(path: &Path) -> Result<String> {
    fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))
}

/// Writes a file readable by its owner only, whole or not at all.
pub fn write_private(path: &Path, text: &str) -> Result<()> {
    let tmp = path.with_extension("tmp");
    let mut file = fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(&tmp)
        .with_context(|| format!("writing {}", tmp.display()))?;
    file.write_all(text.as_bytes())?;
    file.sync_all()?;
    fs::rename(&tmp, path).with_context(|| format!("writing {}", path.display()))?;
    Ok(())
}
