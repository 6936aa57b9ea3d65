//! Certificates made for the tests with rcgen: a hospital CA, the receiver's server
//! certificate, good, expired and revoked device certificates with the CA's CRL, and a
//! device certificate from another CA; all written as PEM files into a folder.

use std::path::{Path, PathBuf};

use rcgen::{
    BasicConstraints, CertificateParams, CertificateRevocationListParams, DistinguishedName,
    DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyIdMethod, KeyPair, KeyUsagePurpose,
    RevocationReason, RevokedCertParams, SanType, SerialNumber, date_time_ymd,
};

/// A certificate and its key as PEM files.
#[derive(Clone, Debug)]
pub struct Pair {
    pub cert: PathBuf,
    pub key: PathBuf,
}

impl Pair {
    pub fn cert(&self) -> &str {
        self.cert.to_str().unwrap()
    }

    pub fn key(&self) -> &str {
        self.key.to_str().unwrap()
    }
}

/// Every file a TLS test needs.
pub struct Pki {
    /// The hospital CA's certificate (trusted for servers and for devices).
    pub ca: PathBuf,
    /// The CA's CRL, revoking `revoked`.
    pub crl: PathBuf,
    /// The receiver: `localhost`, `127.0.0.1`, signed by the CA.
    pub server: Pair,
    /// A second server certificate, for the reload tests (`CN=hl7-ihp renewed`).
    pub renewed: Pair,
    /// A device: `CN=monitor-7,OU=ICU,O=St Example`, `DNS:monitor-7.icu.example`.
    pub device: Pair,
    /// A device whose certificate expired in 2021.
    pub expired: Pair,
    /// A device whose certificate the CRL revokes.
    pub revoked: Pair,
    /// A device certified by another CA.
    pub stranger: Pair,
    dir: PathBuf,
}

fn ca(name: &str) -> (CertificateParams, KeyPair) {
    let key = KeyPair::generate().unwrap();
    let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params.distinguished_name.push(DnType::CommonName, name);
    params.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    (params, key)
}

impl Pki {
    /// Makes every certificate into `dir`.
    pub fn new(dir: &Path) -> Pki {
        std::fs::create_dir_all(dir).unwrap();
        let (ca_params, ca_key) = ca("St Example Hospital CA");
        let ca_cert = ca_params.self_signed(&ca_key).unwrap();
        let issuer = Issuer::new(ca_params, ca_key);
        let (other_params, other_key) = ca("Elsewhere CA");
        let other = Issuer::new(other_params, other_key);
        let write = |name: &str, text: &str| {
            let path = dir.join(name);
            std::fs::write(&path, text).unwrap();
            path
        };
        let leaf = |name: &str,
                    serial: u64,
                    common_name: &str,
                    sans: Vec<SanType>,
                    client: bool,
                    expired: bool,
                    by: &Issuer<'_, KeyPair>| {
            let key = KeyPair::generate().unwrap();
            let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
            params.serial_number = Some(SerialNumber::from(serial));
            // As CAs write them: the most general first (RFC 4514 text shows CN first).
            // rcgen starts with a CN of its own; this subject is all ours.
            params.distinguished_name = DistinguishedName::new();
            if client {
                params
                    .distinguished_name
                    .push(DnType::OrganizationName, "St Example");
                params
                    .distinguished_name
                    .push(DnType::OrganizationalUnitName, "ICU");
            }
            params
                .distinguished_name
                .push(DnType::CommonName, common_name);
            params.subject_alt_names = sans;
            params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
            params.extended_key_usages = vec![if client {
                ExtendedKeyUsagePurpose::ClientAuth
            } else {
                ExtendedKeyUsagePurpose::ServerAuth
            }];
            params.use_authority_key_identifier_extension = true;
            if expired {
                params.not_before = date_time_ymd(2020, 1, 1);
                params.not_after = date_time_ymd(2021, 1, 1);
            }
            let cert = params.signed_by(&key, by).unwrap();
            Pair {
                cert: write(&format!("{name}.pem"), &cert.pem()),
                key: write(&format!("{name}.key"), &key.serialize_pem()),
            }
        };
        let dns = |name: &str| SanType::DnsName(name.try_into().unwrap());
        let local = || {
            vec![
                dns("localhost"),
                SanType::IpAddress("127.0.0.1".parse().unwrap()),
            ]
        };
        let server = leaf("server", 1, "hl7-ihp", local(), false, false, &issuer);
        let renewed = leaf(
            "renewed",
            2,
            "hl7-ihp renewed",
            local(),
            false,
            false,
            &issuer,
        );
        let device = leaf(
            "device",
            10,
            "monitor-7",
            vec![dns("monitor-7.icu.example")],
            true,
            false,
            &issuer,
        );
        let expired = leaf("expired", 11, "monitor-old", vec![], true, true, &issuer);
        let revoked = leaf(
            "revoked",
            12,
            "monitor-stolen",
            vec![],
            true,
            false,
            &issuer,
        );
        let stranger = leaf("stranger", 13, "monitor-x", vec![], true, false, &other);
        let crl = CertificateRevocationListParams {
            this_update: date_time_ymd(2025, 1, 1),
            next_update: date_time_ymd(2099, 1, 1),
            crl_number: SerialNumber::from(1u64),
            issuing_distribution_point: None,
            revoked_certs: vec![RevokedCertParams {
                serial_number: SerialNumber::from(12u64),
                revocation_time: date_time_ymd(2025, 6, 1),
                reason_code: Some(RevocationReason::KeyCompromise),
                invalidity_date: None,
            }],
            key_identifier_method: KeyIdMethod::Sha256,
        }
        .signed_by(&issuer)
        .unwrap();
        Pki {
            ca: write("ca.pem", &ca_cert.pem()),
            crl: write("crl.pem", &crl.pem().unwrap()),
            server,
            renewed,
            device,
            expired,
            revoked,
            stranger,
            dir: dir.to_path_buf(),
        }
    }

    pub fn ca(&self) -> &str {
        self.ca.to_str().unwrap()
    }

    pub fn crl(&self) -> &str {
        self.crl.to_str().unwrap()
    }

    /// `hl7-ihp receive`'s flags for mutual TLS: the server's certificate and key, the
    /// device CA (with `--listen-tls ADDR` beside them).
    pub fn listener_flags(&self) -> [&str; 6] {
        [
            "--tls-cert",
            self.server.cert(),
            "--tls-key",
            self.server.key(),
            "--tls-client-ca",
            self.ca(),
        ]
    }

    /// `hl7-ihp send`'s flags for the good device: TLS, the CA, its certificate and key.
    pub fn device_flags(&self) -> [&str; 7] {
        [
            "--tls",
            "--tls-ca",
            self.ca(),
            "--tls-cert",
            self.device.cert(),
            "--tls-key",
            self.device.key(),
        ]
    }

    /// A file in the folder, for files the tests write themselves.
    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.join(name)
    }
}
