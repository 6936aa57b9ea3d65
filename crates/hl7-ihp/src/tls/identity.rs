//! A certificate's subject and subject alternative names as one line of text, the peer
//! identity kept with each message: `CN=monitor-7,O=Ward 3; DNS:monitor-7.example`.
//!
//! A small DER reader of its own, for the few fields it needs (no X.509 crate): the
//! certificate's outline, the subject `Name` and the subjectAltName extension. It trusts
//! nothing in the bytes: every length is checked against what is left, indefinite and
//! over-long lengths and high tag numbers are refused, the structure's depth is fixed by the
//! code (no recursion), and the text is at most [`MAX_CHARS`] characters.
//!
//! The text is for logs, JSON lines and operators' screens, and devices choose what their
//! certificates say, so besides RFC 4514's escapes every control character (C0, DEL, C1)
//! and the Unicode line separators and bidirectional controls are written as `\XX` escapes
//! of their UTF-8 bytes: the text never carries a newline or a terminal escape, and never
//! reads other than it is.

use std::fmt::Write as _;
use std::net::IpAddr;

/// The longest text [`describe`] gives, in characters, `…` included where it cut.
pub const MAX_CHARS: usize = 1024;

/// The subject (RFC 4514 order and escaping) and SANs of a DER certificate; `None` when the
/// bytes are not a certificate this reads.
///
/// The subject comes first, most specific attribute first (`CN=…,OU=…,O=…,C=…`), then, when
/// the certificate has DNS, email, URI or IP alternative names, `; ` and those, joined by
/// `, ` (`DNS:monitor-7.example, IP:10.1.2.3`). With an empty subject the text is the names
/// alone; a certificate with neither says nothing of its holder and gives `None`.
///
/// Attributes of types without a short name are written with their dotted OID; their value
/// is its text when it is a string (more use to an operator than RFC 4514's `#hex`, and as
/// unambiguous: a value's own leading `#` is escaped), else `#` and the hex of its DER.
pub fn describe(cert_der: &[u8]) -> Option<String> {
    let (subject, extensions) = outline(cert_der)?;
    let rdns = rdns(subject)?;
    let names = match extensions {
        Some(extensions) => alt_names(extensions)?,
        None => Vec::new(),
    };
    if rdns.is_empty() && names.is_empty() {
        return None;
    }
    let mut out = Out::default();
    // RFC 4514: the last RDN of the DER sequence first.
    for (i, rdn) in rdns.iter().rev().enumerate() {
        if i > 0 {
            out.push(",");
        }
        for (j, (oid, value)) in rdn.iter().enumerate() {
            if j > 0 {
                out.push("+");
            }
            attribute(&mut out, oid, *value);
        }
    }
    for (i, name) in names.iter().enumerate() {
        out.push(match (i, rdns.is_empty()) {
            (0, true) => "",
            (0, false) => "; ",
            _ => ", ",
        });
        match name {
            AltName::Email(text) => {
                out.push("email:");
                escaped(&mut out, &ia5(text));
            }
            AltName::Dns(text) => {
                out.push("DNS:");
                escaped(&mut out, &ia5(text));
            }
            AltName::Uri(text) => {
                out.push("URI:");
                escaped(&mut out, &ia5(text));
            }
            AltName::Ip(ip) => {
                out.push("IP:");
                out.push(&ip.to_string());
            }
        }
    }
    Some(out.text)
}

// Universal tags.
const BOOLEAN: u8 = 0x01;
const INTEGER: u8 = 0x02;
const BIT_STRING: u8 = 0x03;
const OCTET_STRING: u8 = 0x04;
const OID: u8 = 0x06;
const UTF8_STRING: u8 = 0x0c;
const NUMERIC_STRING: u8 = 0x12;
const PRINTABLE_STRING: u8 = 0x13;
const TELETEX_STRING: u8 = 0x14;
const IA5_STRING: u8 = 0x16;
const VISIBLE_STRING: u8 = 0x1a;
const UNIVERSAL_STRING: u8 = 0x1c;
const BMP_STRING: u8 = 0x1e;
const SEQUENCE: u8 = 0x30;
const SET: u8 = 0x31;

// Context tags of the TBSCertificate: [0] version, [1] and [2] unique ids (implicit BIT
// STRINGs, primitive in DER), [3] extensions.
const VERSION: u8 = 0xa0;
const ISSUER_UNIQUE_ID: u8 = 0x81;
const SUBJECT_UNIQUE_ID: u8 = 0x82;
const EXTENSIONS: u8 = 0xa3;

// GeneralName choices this shows (implicit IA5String or OCTET STRING, primitive).
const GN_RFC822_NAME: u8 = 0x81;
const GN_DNS_NAME: u8 = 0x82;
const GN_URI: u8 = 0x86;
const GN_IP_ADDRESS: u8 = 0x87;

/// 2.5.29.17, id-ce-subjectAltName.
const OID_SUBJECT_ALT_NAME: &[u8] = &[0x55, 0x1d, 0x11];

/// The short names RFC 4514 gives (and two more that certificates carry), by OID.
const SHORT_NAMES: &[(&[u8], &str)] = &[
    (&[0x55, 0x04, 0x03], "CN"),
    (&[0x55, 0x04, 0x07], "L"),
    (&[0x55, 0x04, 0x08], "ST"),
    (&[0x55, 0x04, 0x0a], "O"),
    (&[0x55, 0x04, 0x0b], "OU"),
    (&[0x55, 0x04, 0x06], "C"),
    (&[0x55, 0x04, 0x09], "STREET"),
    (&[0x55, 0x04, 0x05], "serialNumber"),
    // 0.9.2342.19200300.100.1.25
    (
        &[0x09, 0x92, 0x26, 0x89, 0x93, 0xf2, 0x2c, 0x64, 0x01, 0x19],
        "DC",
    ),
    // 0.9.2342.19200300.100.1.1
    (
        &[0x09, 0x92, 0x26, 0x89, 0x93, 0xf2, 0x2c, 0x64, 0x01, 0x01],
        "UID",
    ),
    // 1.2.840.113549.1.9.1
    (
        &[0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x09, 0x01],
        "emailAddress",
    ),
];

/// One DER element: its tag, its contents, and all of it (tag and length included).
#[derive(Clone, Copy, Debug)]
struct Tlv<'a> {
    tag: u8,
    content: &'a [u8],
    whole: &'a [u8],
}

/// Takes the next element off `input`; `None` when it is not well-formed DER: a high tag
/// number, an indefinite, non-minimal or over-long length, or contents past the end.
fn next<'a>(input: &mut &'a [u8]) -> Option<Tlv<'a>> {
    let bytes = *input;
    let (&tag, rest) = bytes.split_first()?;
    if tag & 0x1f == 0x1f {
        return None;
    }
    let (&first, mut rest) = rest.split_first()?;
    let length = if first < 0x80 {
        usize::from(first)
    } else {
        // 0x80 is the indefinite length, which DER forbids; four length bytes are more than
        // any certificate needs.
        let n = usize::from(first & 0x7f);
        if n == 0 || n > 4 || rest.len() < n {
            return None;
        }
        let (length_bytes, after) = rest.split_at(n);
        rest = after;
        if length_bytes[0] == 0 {
            return None;
        }
        let length = length_bytes.iter().try_fold(0usize, |length, &b| {
            length.checked_mul(256)?.checked_add(usize::from(b))
        })?;
        if length < 0x80 {
            return None;
        }
        length
    };
    if rest.len() < length {
        return None;
    }
    let header = bytes.len() - rest.len();
    let (content, after) = rest.split_at(length);
    *input = after;
    Some(Tlv {
        tag,
        content,
        whole: &bytes[..header + length],
    })
}

/// The contents of the next element, which must have `tag`.
fn expect<'a>(input: &mut &'a [u8], tag: u8) -> Option<&'a [u8]> {
    let tlv = next(input)?;
    (tlv.tag == tag).then_some(tlv.content)
}

/// Takes the next element when it has `tag`; leaves `input` alone when it has another.
fn optional<'a>(input: &mut &'a [u8], tag: u8) -> Option<Option<&'a [u8]>> {
    if input.first() == Some(&tag) {
        expect(input, tag).map(Some)
    } else {
        Some(None)
    }
}

/// A certificate's subject `Name` contents and its extensions' `SEQUENCE OF Extension`
/// contents, when the whole input is one well-formed certificate outline.
fn outline(der: &[u8]) -> Option<(&[u8], Option<&[u8]>)> {
    let mut input = der;
    let mut certificate = expect(&mut input, SEQUENCE)?;
    if !input.is_empty() {
        return None;
    }
    let mut tbs = expect(&mut certificate, SEQUENCE)?;
    expect(&mut certificate, SEQUENCE)?; // signatureAlgorithm
    expect(&mut certificate, BIT_STRING)?; // signatureValue
    if !certificate.is_empty() {
        return None;
    }
    optional(&mut tbs, VERSION)?;
    expect(&mut tbs, INTEGER)?; // serialNumber
    expect(&mut tbs, SEQUENCE)?; // signature
    expect(&mut tbs, SEQUENCE)?; // issuer
    expect(&mut tbs, SEQUENCE)?; // validity
    let subject = expect(&mut tbs, SEQUENCE)?;
    expect(&mut tbs, SEQUENCE)?; // subjectPublicKeyInfo
    optional(&mut tbs, ISSUER_UNIQUE_ID)?;
    optional(&mut tbs, SUBJECT_UNIQUE_ID)?;
    let extensions = match optional(&mut tbs, EXTENSIONS)? {
        Some(mut explicit) => {
            let extensions = expect(&mut explicit, SEQUENCE)?;
            if !explicit.is_empty() {
                return None;
            }
            Some(extensions)
        }
        None => None,
    };
    if !tbs.is_empty() {
        return None;
    }
    Some((subject, extensions))
}

/// One attribute of a name: its type's OID contents and its value.
type Attribute<'a> = (&'a [u8], Tlv<'a>);

/// A `Name`'s RDNs in DER order, each its attributes; `None` when it is malformed (an
/// empty RDN, an attribute that is not an OID and one value).
fn rdns(name: &[u8]) -> Option<Vec<Vec<Attribute<'_>>>> {
    let mut rdns = Vec::new();
    let mut input = name;
    while !input.is_empty() {
        let mut set = expect(&mut input, SET)?;
        let mut rdn = Vec::new();
        while !set.is_empty() {
            let mut pair = expect(&mut set, SEQUENCE)?;
            let oid = expect(&mut pair, OID)?;
            oid_text(oid)?;
            let value = next(&mut pair)?;
            if !pair.is_empty() {
                return None;
            }
            rdn.push((oid, value));
        }
        if rdn.is_empty() {
            return None;
        }
        rdns.push(rdn);
    }
    Some(rdns)
}

/// An alternative name this shows.
#[derive(Debug)]
enum AltName<'a> {
    Email(&'a [u8]),
    Dns(&'a [u8]),
    Uri(&'a [u8]),
    Ip(IpAddr),
}

/// The DNS, email, URI and IP names of the subjectAltName extension, in its order (none
/// without one); `None` when an extension, or the subjectAltName's names, are malformed,
/// or the extension comes twice.
fn alt_names(extensions: &[u8]) -> Option<Vec<AltName<'_>>> {
    let mut names = Vec::new();
    let mut seen = false;
    let mut input = extensions;
    while !input.is_empty() {
        let mut extension = expect(&mut input, SEQUENCE)?;
        let oid = expect(&mut extension, OID)?;
        optional(&mut extension, BOOLEAN)?; // critical
        let mut value = expect(&mut extension, OCTET_STRING)?;
        if !extension.is_empty() {
            return None;
        }
        if oid != OID_SUBJECT_ALT_NAME {
            continue;
        }
        if seen {
            return None;
        }
        seen = true;
        let mut general_names = expect(&mut value, SEQUENCE)?;
        if !value.is_empty() {
            return None;
        }
        while !general_names.is_empty() {
            let name = next(&mut general_names)?;
            names.push(match name.tag {
                GN_RFC822_NAME => AltName::Email(name.content),
                GN_DNS_NAME => AltName::Dns(name.content),
                GN_URI => AltName::Uri(name.content),
                GN_IP_ADDRESS => match name.content.len() {
                    4 => AltName::Ip(IpAddr::from(<[u8; 4]>::try_from(name.content).ok()?)),
                    16 => AltName::Ip(IpAddr::from(<[u8; 16]>::try_from(name.content).ok()?)),
                    // Not an address (8 and 32 bytes are name constraints' subnets).
                    _ => continue,
                },
                // otherName, x400Address, directoryName, ediPartyName, registeredID.
                _ => continue,
            });
        }
    }
    Some(names)
}

/// An OID's dotted text; `None` when its encoding is malformed (empty, cut in a
/// sub-identifier, not minimal, or an arc beyond 64 bits).
fn oid_text(oid: &[u8]) -> Option<String> {
    if oid.last()? & 0x80 != 0 {
        return None;
    }
    let mut text = String::new();
    let mut arc: u64 = 0;
    let mut at_start = true;
    for &b in oid {
        if at_start && b == 0x80 {
            return None;
        }
        if arc > u64::MAX >> 7 {
            return None;
        }
        arc = arc << 7 | u64::from(b & 0x7f);
        at_start = b & 0x80 == 0;
        if at_start {
            if text.is_empty() {
                // The first sub-identifier holds two arcs: 40 * first + second.
                let (first, second) = match arc {
                    0..40 => (0, arc),
                    40..80 => (1, arc - 40),
                    _ => (2, arc - 80),
                };
                let _ = write!(text, "{first}.{second}");
            } else {
                let _ = write!(text, ".{arc}");
            }
            arc = 0;
        }
    }
    Some(text)
}

/// Writes one `type=value`.
fn attribute(out: &mut Out, oid: &[u8], value: Tlv<'_>) {
    match SHORT_NAMES.iter().find(|(known, _)| *known == oid) {
        Some((_, name)) => out.push(name),
        // Checked by `rdns`.
        None => out.push(&oid_text(oid).unwrap_or_default()),
    }
    out.push("=");
    match string(value) {
        Some(text) => escaped(out, &text),
        None => {
            // RFC 4514's form for values without a string: `#` and the hex of the DER.
            out.push("#");
            for b in value.whole {
                out.push(&format!("{b:02X}"));
            }
        }
    }
}

/// A directory string's text; `None` for a value of another type, or whose bytes its type
/// does not allow.
fn string(value: Tlv<'_>) -> Option<String> {
    let bytes = value.content;
    match value.tag {
        UTF8_STRING => std::str::from_utf8(bytes).ok().map(str::to_owned),
        PRINTABLE_STRING | IA5_STRING | NUMERIC_STRING | VISIBLE_STRING => bytes
            .is_ascii()
            .then(|| bytes.iter().map(|&b| char::from(b)).collect()),
        // T.61 in theory; Latin-1 in the certificates that use it.
        TELETEX_STRING => Some(bytes.iter().map(|&b| char::from(b)).collect()),
        BMP_STRING => {
            if !bytes.len().is_multiple_of(2) {
                return None;
            }
            let units = bytes
                .chunks_exact(2)
                .map(|pair| u16::from_be_bytes([pair[0], pair[1]]));
            char::decode_utf16(units)
                .collect::<Result<String, _>>()
                .ok()
        }
        UNIVERSAL_STRING => {
            if !bytes.len().is_multiple_of(4) {
                return None;
            }
            bytes
                .chunks_exact(4)
                .map(|quad| {
                    char::from_u32(u32::from_be_bytes([quad[0], quad[1], quad[2], quad[3]]))
                })
                .collect()
        }
        _ => None,
    }
}

/// An IA5String's text: ASCII as it is; other bytes, which it may not hold, as UTF-8 when
/// they are, else as Latin-1 (so that nothing is dropped; [`escaped`] makes it safe).
fn ia5(bytes: &[u8]) -> String {
    match std::str::from_utf8(bytes) {
        Ok(text) => text.to_owned(),
        Err(_) => bytes.iter().map(|&b| char::from(b)).collect(),
    }
}

/// Writes `text` with RFC 4514's escapes, and `\XX` escapes for the characters that must
/// not reach a log or a screen as they are.
fn escaped(out: &mut Out, text: &str) {
    let mut buffer = [0u8; 4];
    for (at, c) in text.char_indices() {
        let first = at == 0;
        let last = at + c.len_utf8() == text.len();
        match c {
            ',' | '+' | '"' | '\\' | '<' | '>' | ';' => out.push(&format!("\\{c}")),
            '#' if first => out.push("\\#"),
            ' ' if first || last => out.push("\\ "),
            c if unsafe_to_show(c) => {
                let mut escape = String::new();
                for b in c.encode_utf8(&mut buffer).bytes() {
                    let _ = write!(escape, "\\{b:02X}");
                }
                out.push(&escape);
            }
            c => out.push(c.encode_utf8(&mut buffer)),
        }
    }
}

/// Control characters (C0, DEL, C1: newlines, terminal escapes), the Unicode line and
/// paragraph separators, the bidirectional controls (which make text read other than it
/// is) and the byte order mark.
fn unsafe_to_show(c: char) -> bool {
    c.is_control()
        || matches!(
            c,
            '\u{061c}'
                | '\u{200e}'
                | '\u{200f}'
                | '\u{2028}'
                | '\u{2029}'
                | '\u{202a}'..='\u{202e}'
                | '\u{2066}'..='\u{2069}'
                | '\u{feff}'
        )
}

/// The text being written, cut with `…` before it would pass [`MAX_CHARS`]; a piece is
/// written whole or not at all, so an escape is never cut in two.
#[derive(Default)]
struct Out {
    text: String,
    n_chars: usize,
    cut: bool,
}

impl Out {
    fn push(&mut self, piece: &str) {
        if self.cut {
            return;
        }
        let n = piece.chars().count();
        // One character kept for the `…`.
        if self.n_chars + n < MAX_CHARS {
            self.text.push_str(piece);
            self.n_chars += n;
        } else {
            self.text.push('…');
            self.n_chars += 1;
            self.cut = true;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use rcgen::{CertificateParams, DnType, DnValue, KeyPair, SanType};

    /// A self-signed certificate's DER with `subject` (in DER order) and `sans`.
    fn certificate(subject: &[(DnType, DnValue)], sans: Vec<SanType>) -> Vec<u8> {
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params.distinguished_name = rcgen::DistinguishedName::new();
        for (ty, value) in subject {
            params.distinguished_name.push(ty.clone(), value.clone());
        }
        params.subject_alt_names = sans;
        let key = KeyPair::generate().unwrap();
        params.self_signed(&key).unwrap().der().to_vec()
    }

    fn ia5_string(text: &str) -> rcgen::string::Ia5String {
        text.try_into().unwrap()
    }

    fn monitor() -> Vec<u8> {
        let mut params = CertificateParams::new(vec!["monitor-7.example".into()]).unwrap();
        params.distinguished_name = rcgen::DistinguishedName::new();
        params.distinguished_name.push(DnType::CountryName, "CH");
        params
            .distinguished_name
            .push(DnType::OrganizationName, "St Example");
        params
            .distinguished_name
            .push(DnType::OrganizationalUnitName, "ICU");
        params
            .distinguished_name
            .push(DnType::CommonName, "monitor-7");
        params.subject_alt_names.extend([
            SanType::IpAddress("10.1.2.3".parse().unwrap()),
            SanType::IpAddress("2001:db8::7".parse().unwrap()),
            SanType::URI(ia5_string("urn:x")),
            SanType::Rfc822Name(ia5_string("a@b")),
            SanType::OtherName((vec![1, 3, 6, 1, 4, 1, 99], "skipped".into())),
        ]);
        let key = KeyPair::generate().unwrap();
        params.self_signed(&key).unwrap().der().to_vec()
    }

    #[test]
    fn subject_and_alt_names() {
        assert_eq!(
            describe(&monitor()).unwrap(),
            "CN=monitor-7,OU=ICU,O=St Example,C=CH; DNS:monitor-7.example, IP:10.1.2.3, \
             IP:2001:db8::7, URI:urn:x, email:a@b"
        );
    }

    #[test]
    fn subject_without_alt_names() {
        let der = certificate(
            &[
                (DnType::CountryName, "CH".into()),
                (DnType::StateOrProvinceName, "Bern".into()),
                (DnType::LocalityName, "Bern".into()),
                (DnType::CommonName, "monitor-7".into()),
            ],
            Vec::new(),
        );
        assert_eq!(describe(&der).unwrap(), "CN=monitor-7,L=Bern,ST=Bern,C=CH");
    }

    #[test]
    fn alt_names_without_subject() {
        let der = certificate(&[], vec![SanType::DnsName(ia5_string("monitor-7.example"))]);
        assert_eq!(describe(&der).unwrap(), "DNS:monitor-7.example");
        // Nothing about its holder.
        assert_eq!(describe(&certificate(&[], Vec::new())), None);
    }

    #[test]
    fn escaping() {
        let der = certificate(
            &[
                (DnType::OrganizationName, "Ward 3, North+South".into()),
                (DnType::CommonName, "line\nbreak\u{1b}[31m".into()),
                (DnType::OrganizationalUnitName, "#1 \"<ICU>\"; \\ ".into()),
                (DnType::LocalityName, " C1\u{85}bidi\u{202e} é".into()),
            ],
            vec![SanType::DnsName(ia5_string("evil\r\n.example,x"))],
        );
        assert_eq!(
            describe(&der).unwrap(),
            "L=\\ C1\\C2\\85bidi\\E2\\80\\AE é,\
             OU=\\#1 \\\"\\<ICU\\>\\\"\\; \\\\\\ ,\
             CN=line\\0Abreak\\1B[31m,\
             O=Ward 3\\, North\\+South; \
             DNS:evil\\0D\\0A.example\\,x"
        );
    }

    #[test]
    fn string_types() {
        let der = certificate(
            &[
                (
                    DnType::CountryName,
                    DnValue::PrintableString("CH".try_into().unwrap()),
                ),
                (
                    DnType::LocalityName,
                    DnValue::TeletexString("Zurich".try_into().unwrap()),
                ),
                (
                    DnType::OrganizationName,
                    DnValue::BmpString("Spital Zürich".try_into().unwrap()),
                ),
                (
                    DnType::OrganizationalUnitName,
                    DnValue::UniversalString("Intensivstation ü".try_into().unwrap()),
                ),
                (
                    DnType::CustomDnType(vec![2, 5, 4, 5]),
                    DnValue::Ia5String(ia5_string("SN-42")),
                ),
                (
                    DnType::CustomDnType(vec![1, 2, 840, 113549, 1, 9, 1]),
                    DnValue::Ia5String(ia5_string("a@b")),
                ),
                (
                    DnType::CustomDnType(vec![0, 9, 2342, 19200300, 100, 1, 25]),
                    DnValue::Ia5String(ia5_string("example")),
                ),
                (
                    DnType::CustomDnType(vec![0, 9, 2342, 19200300, 100, 1, 1]),
                    "u1".into(),
                ),
                (DnType::CustomDnType(vec![2, 5, 4, 9]), "Gasse 1".into()),
                (
                    DnType::CustomDnType(vec![1, 3, 6, 1, 4, 1, 99999, 1]),
                    "custom".into(),
                ),
                (DnType::CommonName, "monitor-7".into()),
            ],
            Vec::new(),
        );
        assert_eq!(
            describe(&der).unwrap(),
            "CN=monitor-7,1.3.6.1.4.1.99999.1=custom,STREET=Gasse 1,UID=u1,DC=example,\
             emailAddress=a@b,serialNumber=SN-42,OU=Intensivstation ü,O=Spital Zürich,\
             L=Zurich,C=CH"
        );
    }

    /// DER encoding helpers for names rcgen cannot make.
    fn tlv(tag: u8, content: &[u8]) -> Vec<u8> {
        let mut out = vec![tag];
        match content.len() {
            n @ 0..0x80 => out.push(n as u8),
            n @ 0x80..0x100 => out.extend([0x81, n as u8]),
            n => {
                out.push(0x82);
                out.extend(u16::try_from(n).unwrap().to_be_bytes());
            }
        }
        out.extend_from_slice(content);
        out
    }

    fn atv(oid: &[u8], value: Vec<u8>) -> Vec<u8> {
        tlv(SEQUENCE, &[tlv(OID, oid), value].concat())
    }

    /// A certificate outline around `subject` (a whole `Name`) and `extensions` (the
    /// `SEQUENCE OF Extension`), with placeholder values elsewhere.
    fn outline_with(subject: &[u8], extensions: Option<&[u8]>) -> Vec<u8> {
        let mut tbs = [
            tlv(VERSION, &tlv(INTEGER, &[2])),
            tlv(INTEGER, &[1]),
            tlv(SEQUENCE, &[]),
            tlv(SEQUENCE, &[]),
            tlv(SEQUENCE, &[]),
            subject.to_vec(),
            tlv(SEQUENCE, &[]),
        ]
        .concat();
        if let Some(extensions) = extensions {
            tbs.extend(tlv(EXTENSIONS, &tlv(SEQUENCE, extensions)));
        }
        tlv(
            SEQUENCE,
            &[
                tlv(SEQUENCE, &tbs),
                tlv(SEQUENCE, &[]),
                tlv(BIT_STRING, &[0]),
            ]
            .concat(),
        )
    }

    const CN: &[u8] = &[0x55, 0x04, 0x03];
    const OU: &[u8] = &[0x55, 0x04, 0x0b];

    #[test]
    fn multi_valued_rdn_and_hex_values() {
        let subject = tlv(
            SEQUENCE,
            &[
                tlv(
                    SET,
                    &[
                        atv(OU, tlv(UTF8_STRING, b"ICU")),
                        atv(CN, tlv(UTF8_STRING, b"bed 4")),
                    ]
                    .concat(),
                ),
                tlv(SET, &atv(&[0x2a, 0x03], tlv(INTEGER, &[0x2a]))),
                // Not UTF-8: its DER in hex.
                tlv(SET, &atv(CN, tlv(UTF8_STRING, &[0xff]))),
                // 2.999.3, an arc above 127 in the first sub-identifier.
                tlv(SET, &atv(&[0x88, 0x37, 0x03], tlv(PRINTABLE_STRING, b"#x"))),
                // A surrogate pair, then a lone surrogate, then beyond Unicode.
                tlv(SET, &atv(OU, tlv(BMP_STRING, &[0xd8, 0x34, 0xdd, 0x1e]))),
                tlv(SET, &atv(OU, tlv(BMP_STRING, &[0xd8, 0x34]))),
                tlv(SET, &atv(OU, tlv(UNIVERSAL_STRING, &[0, 0x11, 0, 0]))),
                // Not ASCII in a PrintableString; Latin-1 in a TeletexString.
                tlv(SET, &atv(OU, tlv(PRINTABLE_STRING, b"\xe9"))),
                tlv(SET, &atv(OU, tlv(TELETEX_STRING, b"\xe9\x9b"))),
            ]
            .concat(),
        );
        assert_eq!(
            describe(&outline_with(&subject, None)).unwrap(),
            "OU=é\\C2\\9B,OU=#1301E9,OU=#1C0400110000,OU=#1E02D834,OU=\u{1d11e},\
             2.999.3=\\#x,CN=#0C01FF,1.2.3=#02012A,OU=ICU+CN=bed 4"
        );
    }

    #[test]
    fn oid_texts() {
        for (oid, text) in SHORT_NAMES.iter().map(|(oid, _)| *oid).zip([
            "2.5.4.3",
            "2.5.4.7",
            "2.5.4.8",
            "2.5.4.10",
            "2.5.4.11",
            "2.5.4.6",
            "2.5.4.9",
            "2.5.4.5",
            "0.9.2342.19200300.100.1.25",
            "0.9.2342.19200300.100.1.1",
            "1.2.840.113549.1.9.1",
        ]) {
            assert_eq!(oid_text(oid).unwrap(), text);
        }
        assert_eq!(oid_text(OID_SUBJECT_ALT_NAME).unwrap(), "2.5.29.17");
        assert_eq!(oid_text(&[]), None);
        assert_eq!(oid_text(&[0x55, 0x84]), None, "cut in a sub-identifier");
        assert_eq!(oid_text(&[0x55, 0x80, 0x01]), None, "not minimal");
        assert_eq!(
            oid_text(&[
                0x55, 0x82, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x00
            ]),
            None
        );
    }

    #[test]
    fn not_a_certificate() {
        let good = outline_with(
            &tlv(SEQUENCE, &tlv(SET, &atv(CN, tlv(UTF8_STRING, b"x")))),
            None,
        );
        assert_eq!(describe(&good).unwrap(), "CN=x");
        assert_eq!(describe(&[]), None);
        assert_eq!(describe(b"-----BEGIN CERTIFICATE-----"), None);
        // Trailing bytes, a cut, an indefinite length, a non-minimal length.
        assert_eq!(describe(&[good.clone(), vec![0]].concat()), None);
        assert_eq!(describe(&good[..good.len() - 1]), None);
        let mut indefinite = good.clone();
        indefinite[1] = 0x80;
        assert_eq!(describe(&indefinite), None);
        let mut long_form = vec![SEQUENCE, 0x81];
        long_form.extend_from_slice(&good[1..]);
        assert_eq!(describe(&long_form), None);
        // An empty RDN, an attribute with two values.
        let empty_rdn = tlv(SEQUENCE, &tlv(SET, &[]));
        assert_eq!(describe(&outline_with(&empty_rdn, None)), None);
        let two_values = tlv(
            SEQUENCE,
            &tlv(
                SET,
                &tlv(
                    SEQUENCE,
                    &[tlv(OID, CN), tlv(UTF8_STRING, b"a"), tlv(UTF8_STRING, b"b")].concat(),
                ),
            ),
        );
        assert_eq!(describe(&outline_with(&two_values, None)), None);
        // The subjectAltName twice.
        let san = tlv(
            SEQUENCE,
            &[
                tlv(OID, OID_SUBJECT_ALT_NAME),
                tlv(OCTET_STRING, &tlv(SEQUENCE, &tlv(GN_DNS_NAME, b"a"))),
            ]
            .concat(),
        );
        let name = tlv(SEQUENCE, &tlv(SET, &atv(CN, tlv(UTF8_STRING, b"x"))));
        assert_eq!(
            describe(&outline_with(&name, Some(&san))).unwrap(),
            "CN=x; DNS:a"
        );
        assert_eq!(
            describe(&outline_with(&name, Some(&[san.clone(), san].concat()))),
            None
        );
    }

    #[test]
    fn odd_alt_names() {
        let names = [
            tlv(GN_IP_ADDRESS, &[10, 0, 0, 0, 255, 0, 0, 0]),
            tlv(0xa4, &tlv(SEQUENCE, &[])),
            tlv(GN_URI, b"urn:\x9b31m"),
            tlv(GN_DNS_NAME, "é.example".as_bytes()),
            tlv(GN_RFC822_NAME, b"\xe9@b"),
        ]
        .concat();
        let san = tlv(
            SEQUENCE,
            &[
                tlv(OID, OID_SUBJECT_ALT_NAME),
                tlv(BOOLEAN, &[0xff]),
                tlv(OCTET_STRING, &tlv(SEQUENCE, &names)),
            ]
            .concat(),
        );
        let other = tlv(
            SEQUENCE,
            &[
                tlv(OID, &[0x55, 0x1d, 0x13]),
                tlv(OCTET_STRING, &[0x30, 0x00]),
            ]
            .concat(),
        );
        let der = outline_with(&tlv(SEQUENCE, &[]), Some(&[other, san].concat()));
        assert_eq!(
            describe(&der).unwrap(),
            "URI:urn:\\C2\\9B31m, DNS:é.example, email:é@b"
        );
    }

    #[test]
    fn long_text_is_cut() {
        let long = "x".repeat(3000);
        let der = certificate(&[(DnType::CommonName, long.as_str().into())], Vec::new());
        let text = describe(&der).unwrap();
        assert_eq!(text.chars().count(), MAX_CHARS);
        assert_eq!(text, format!("CN={}…", &long[..MAX_CHARS - 4]));
        // An escape is not cut in two.
        let newlines = "\n".repeat(1000);
        let der = certificate(
            &[(DnType::CommonName, newlines.as_str().into())],
            Vec::new(),
        );
        let text = describe(&der).unwrap();
        assert!(text.chars().count() <= MAX_CHARS);
        assert!(text.ends_with("\\0A…"), "{text}");
    }

    proptest! {
        #[test]
        fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
            if let Some(text) = describe(&bytes) {
                prop_assert!(text.chars().count() <= MAX_CHARS);
            }
        }

        #[test]
        fn mutated_certificates_never_panic(
            edits in proptest::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 1..8),
            cut in any::<prop::sample::Index>(),
        ) {
            let mut der = valid_certificate().to_vec();
            for (at, byte) in edits {
                let at = at.index(der.len());
                der[at] = byte;
            }
            for bytes in [&der[..], &der[..cut.index(der.len())]] {
                if let Some(text) = describe(bytes) {
                    prop_assert!(text.chars().count() <= MAX_CHARS);
                    prop_assert!(!text.chars().any(unsafe_to_show), "{text:?}");
                }
            }
        }
    }

    /// One certificate for all the mutation cases (making a key for each is slow).
    fn valid_certificate() -> &'static [u8] {
        static DER: std::sync::OnceLock<Vec<u8>> = std::sync::OnceLock::new();
        DER.get_or_init(monitor)
    }
}
