//! The certificate authority: one directory holding `ca.crt` and `ca.key`,
//! which signs node, client and admin certificates (Box Backup's
//! bbstored-certs). Keys are ECDSA P-256; files are written owner-only.
//!
//! A certificate's common name carries its role (`node:NAME`,
//! `client:ACCOUNT`, `admin:NAME`, see `coffer_proto::tls::Role`); node
//! certificates also name their hosts so clients can verify them.
//!
//! Revocation: `revoked.json` lists every revoked certificate (name, serial,
//! when); `ca.crl`, the revocation list nodes and clients load (`[tls]
//! crl`), is made from it, signed by the CA, on `init` (empty) and on each
//! `revoke`.

use std::fs;
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use coffer_proto::tls::{ACCOUNT_UNIT, Role};
use rcgen::{
    BasicConstraints, CertificateParams, CertificateRevocationListParams, DnType, ExtendedKeyUsagePurpose,
    IsCa, Issuer, KeyIdMethod, KeyPair, KeyUsagePurpose, RevokedCertParams, SerialNumber,
};
use serde::{Deserialize, Serialize};
use time::{Duration, OffsetDateTime};

/// How long issued certificates stay valid.
const VALIDITY_DAYS: i64 = 3650;

pub struct CertificateAuthority {
    dir: PathBuf,
}

/// One revoked certificate, as `revoked.json` keeps it.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct Revoked {
    /// The file name it was issued as.
    name: String,
    /// Its serial number, in hex.
    serial: String,
    /// When it was revoked (Unix seconds).
    at: i64,
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

    pub fn crl_path(&self) -> PathBuf {
        self.dir.join("ca.crl")
    }

    fn revoked_path(&self) -> PathBuf {
        self.dir.join("revoked.json")
    }

    fn issuer(&self) -> Result<Issuer<'static, KeyPair>> {
        let ca_key = KeyPair::from_pem(&read(&self.key_path())?).context("reading the CA key")?;
        Issuer::from_ca_cert_pem(&read(&self.cert_path())?, ca_key).context("reading the CA")
    }

    /// Revokes the certificate issued as FILE (`FILE.crt`): it joins the
    /// revocation list, and its files are renamed `.revoked` so the name
    /// can be issued again. Nodes refuse it once they reread the list
    /// (SIGHUP or a restart). Returns the serial revoked.
    pub fn revoke(&self, file: &str) -> Result<String> {
        let cert = self.dir.join(format!("{file}.crt"));
        let not_a_cert = || format!("{} is not a certificate", cert.display());
        let (_, pem) = x509_parser::pem::parse_x509_pem(read(&cert)?.as_bytes()).with_context(not_a_cert)?;
        let serial = hex::encode(pem.parse_x509().with_context(not_a_cert)?.raw_serial());
        let mut revoked = self.revoked()?;
        if !revoked.iter().any(|r| r.serial == serial) {
            let at = OffsetDateTime::now_utc().unix_timestamp();
            revoked.push(Revoked { name: file.to_string(), serial: serial.clone(), at });
        }
        write_private(&self.revoked_path(), &serde_json::to_string_pretty(&revoked)?)?;
        self.write_crl(&revoked)?;
        for ext in ["crt", "key"] {
            let path = self.dir.join(format!("{file}.{ext}"));
            if path.exists() {
                fs::rename(&path, self.dir.join(format!("{file}.{ext}.revoked")))?;
            }
        }
        Ok(serial)
    }

    fn revoked(&self) -> Result<Vec<Revoked>> {
        match fs::read_to_string(self.revoked_path()) {
            Ok(text) => {
                serde_json::from_str(&text).with_context(|| self.revoked_path().display().to_string())
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Vec::new()),
            Err(e) => Err(e).with_context(|| self.revoked_path().display().to_string()),
        }
    }

    /// Signs and writes `ca.crl` listing `revoked`.
    fn write_crl(&self, revoked: &[Revoked]) -> Result<()> {
        let now = OffsetDateTime::now_utc();
        let revoked_certs = revoked
            .iter()
            .map(|r| {
                Ok(RevokedCertParams {
                    serial_number: SerialNumber::from_slice(&hex::decode(&r.serial)?),
                    revocation_time: OffsetDateTime::from_unix_timestamp(r.at)?,
                    reason_code: None,
                    invalidity_date: None,
                })
            })
            .collect::<Result<Vec<_>>>()?;
        let params = CertificateRevocationListParams {
            this_update: now,
            next_update: now + Duration::days(VALIDITY_DAYS),
            crl_number: SerialNumber::from((revoked.len() as u64 + 1).to_be_bytes().to_vec()),
            issuing_distribution_point: None,
            revoked_certs,
            key_identifier_method: KeyIdMethod::Sha256,
        };
        let crl = params.signed_by(&self.issuer()?)?;
        write_private(&self.crl_path(), &crl.pem()?)
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
        ca.write_crl(&[])?;
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
    /// A client certificate names the id of its account (`account`), so it
    /// opens that account and no later one of the same name.
    pub fn issue(
        &self,
        role: &Role,
        account: Option<u64>,
        hosts: &[String],
        out_dir: &Path,
        file: &str,
    ) -> Result<Issued> {
        let issued =
            Issued { cert: out_dir.join(format!("{file}.crt")), key: out_dir.join(format!("{file}.key")) };
        if issued.cert.exists() || issued.key.exists() {
            bail!("{} already exists; refusing to overwrite it", issued.cert.display());
        }
        let issuer = self.issuer()?;
        let mut params = CertificateParams::new(hosts.to_vec())?;
        params.distinguished_name.push(DnType::CommonName, role.common_name());
        match (role, account) {
            (Role::Client(_), Some(id)) => {
                params.distinguished_name.push(DnType::OrganizationalUnitName, format!("{ACCOUNT_UNIT}{id}"))
            }
            (Role::Client(name), None) => {
                bail!("a client certificate names its account's id; account `{name}` has none")
            }
            _ => {}
        }
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
