//! Patient file names: any identity key maps to exactly one safe name inside the patients
//! folder (`patient_<id>.json`), and no two keys share one, also on a file system that
//! ignores case.
//!
//! On a case-sensitive file system (ext4, XFS, tmpfs) letters are kept as they are. On one
//! that ignores case (macOS by default, SMB shares, ext4 with `casefold`), `abc` and `ABC`
//! would name one file, so there upper-case letters are encoded too ([`NameCase`]): every
//! name then has only lower-case letters outside its `%XX` escapes, and the escapes use
//! upper-case hex digits only, so two names that differ only in case never arise and
//! comparing names without case tells exactly what comparing them with case tells.

use std::fmt::Write as _;

use sha2::{Digest, Sha256};

/// Every patient file's name starts with this.
pub const FILE_PREFIX: &str = "patient_";
/// Every patient file's name ends with this.
pub const FILE_SUFFIX: &str = ".json";
/// Every patient's NDJSON stream's name ends with this (same prefix, same encoded id).
pub const NDJSON_SUFFIX: &str = ".ndjson";
/// An id longer than this once encoded is shortened and hashed, which keeps every name far
/// below the 255-byte limit of common file systems.
const MAX_ID_BYTES: usize = 100;
/// How much of a long encoded id is kept before the hash.
const HASHED_PREFIX_BYTES: usize = 64;
/// How many hex digits of the SHA-256 of a long id are written (64 bits).
const HASH_HEX_DIGITS: usize = 16;

/// Whether the patients folder's file system tells names apart by case, which decides how
/// [`file_name`] writes upper-case letters. Found at start by
/// [`crate::export::Folder::probe_case`].
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum NameCase {
    /// `a` and `A` are different names: letters are kept as they are (the default names).
    #[default]
    Sensitive,
    /// `a` and `A` are one name: upper-case letters are written as `%XX` too.
    Insensitive,
}

/// The file name for a patient's identity key (docs/patient-files.md): `patient_<id>.json`.
///
/// The id is the key as it is when it consists only of `A-Z a-z 0-9 . _ -` and does not start
/// with `.`. Otherwise every byte outside that set, and a leading `.`, is written as
/// upper-case `%XX` (`%` itself is outside the set, so the encoding can be read back and two
/// keys never meet). With [`NameCase::Insensitive`] the set is `a-z 0-9 . _ -`: upper-case
/// letters are written as `%XX` too (`ABC` → `%41%42%43`). An encoded id over 100 bytes
/// becomes its first 64 bytes, `~`, and 16 lower-case hex digits of the SHA-256 of the raw
/// key; `~` appears in no other name, and two long keys share a name only if they share the
/// first 64 encoded bytes and 64 bits of SHA-256. The empty key is written as nothing:
/// `patient_.json`, which no other key gives.
///
/// So a name has only `A-Z a-z 0-9 . _ - % ~`, never `/` or NUL, is never `.` or `..`, stays
/// inside the patients folder, and is at most 113 bytes long.
pub fn file_name(key: &str, case: NameCase) -> String {
    file_name_ending(key, case, FILE_SUFFIX)
}

/// The NDJSON stream's name: [`file_name`] with [`NDJSON_SUFFIX`] for `.json`.
pub fn ndjson_file_name(key: &str, case: NameCase) -> String {
    file_name_ending(key, case, NDJSON_SUFFIX)
}

/// The prefix of an unassigned device's file (`--device-files on`).
pub const DEVICE_FILE_PREFIX: &str = "device_";

/// An unassigned device's JSON document: `device_<id>.json`, the id encoded exactly as
/// [`file_name`] encodes a patient's (so as safe, injective and bounded).
pub fn device_file_name(device: &str, case: NameCase) -> String {
    named(DEVICE_FILE_PREFIX, device, case, FILE_SUFFIX)
}

fn file_name_ending(key: &str, case: NameCase, suffix: &str) -> String {
    named(FILE_PREFIX, key, case, suffix)
}

fn named(prefix: &str, key: &str, case: NameCase, suffix: &str) -> String {
    let mut name = String::with_capacity(prefix.len() + key.len() + suffix.len());
    name.push_str(prefix);
    name.push_str(&encode_id(key.as_bytes(), case));
    name.push_str(suffix);
    name
}

fn is_safe(byte: u8, case: NameCase) -> bool {
    let letter_or_digit = match case {
        NameCase::Sensitive => byte.is_ascii_alphanumeric(),
        NameCase::Insensitive => byte.is_ascii_lowercase() || byte.is_ascii_digit(),
    };
    letter_or_digit || matches!(byte, b'.' | b'_' | b'-')
}

fn encode_id(raw: &[u8], case: NameCase) -> String {
    let mut id = String::with_capacity(raw.len());
    for (i, &byte) in raw.iter().enumerate() {
        if is_safe(byte, case) && !(i == 0 && byte == b'.') {
            id.push(char::from(byte));
        } else {
            // Writing to a String cannot fail.
            let _ = write!(id, "%{byte:02X}");
        }
    }
    if id.len() > MAX_ID_BYTES {
        let digest = Sha256::digest(raw);
        // Every character written above is ASCII, so any byte offset is a char boundary.
        id.truncate(HASHED_PREFIX_BYTES);
        id.push('~');
        for byte in &digest[..HASH_HEX_DIGITS / 2] {
            let _ = write!(id, "{byte:02x}");
        }
    }
    id
}

#[cfg(test)]
mod tests {
    use std::collections::{HashMap, HashSet};
    use std::path::Path;

    use proptest::prelude::*;

    use super::*;

    #[test]
    fn device_files_are_named_as_patient_files_are() {
        for case in [NameCase::Sensitive, NameCase::Insensitive] {
            for id in ["0123456789ABCDEF", "GW/ICU 2", "..", "", &"x".repeat(300)] {
                let patient = file_name(id, case);
                let device = device_file_name(id, case);
                assert_eq!(
                    device.strip_prefix(DEVICE_FILE_PREFIX),
                    patient.strip_prefix(FILE_PREFIX),
                    "{id:?}"
                );
            }
        }
        assert_eq!(
            device_file_name("0123456789ABCDEF", NameCase::Sensitive),
            "device_0123456789ABCDEF.json"
        );
    }

    fn is_name_char(c: char) -> bool {
        c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-' | '%' | '~')
    }

    /// Reads an id back from a name that was not shortened: proof that the encoding loses
    /// nothing.
    fn decode_id(name: &str) -> Vec<u8> {
        let id = name
            .strip_prefix(FILE_PREFIX)
            .and_then(|s| s.strip_suffix(FILE_SUFFIX))
            .expect("prefix and suffix");
        let bytes = id.as_bytes();
        let mut raw = Vec::new();
        let mut i = 0;
        while i < bytes.len() {
            if bytes[i] == b'%' {
                let hex = std::str::from_utf8(&bytes[i + 1..i + 3]).unwrap();
                raw.push(u8::from_str_radix(hex, 16).unwrap());
                i += 3;
            } else {
                raw.push(bytes[i]);
                i += 1;
            }
        }
        raw
    }

    /// The name in the default mode, checked.
    fn check_name(key: &str) -> String {
        check_name_in(key, NameCase::Sensitive)
    }

    /// The name in `case`'s mode, checked; in [`NameCase::Insensitive`] mode lower-cased, as
    /// a file system that ignores case compares it, so that callers can compare those.
    fn check_name_in(key: &str, case: NameCase) -> String {
        let name = file_name(key, case);
        assert!(name.starts_with(FILE_PREFIX) && name.ends_with(FILE_SUFFIX));
        assert!(
            name.chars().all(is_name_char),
            "unsafe character in {name:?}"
        );
        assert!(name.len() <= FILE_PREFIX.len() + MAX_ID_BYTES + FILE_SUFFIX.len());
        assert!(name.len() < 255);
        assert_ne!(name, ".");
        assert_ne!(name, "..");
        let path = Path::new("/data/patients").join(&name);
        assert_eq!(path.parent(), Some(Path::new("/data/patients")));
        if !name.contains('~') {
            assert_eq!(
                decode_id(&name),
                key.as_bytes(),
                "{name:?} does not read back"
            );
        }
        if case == NameCase::Sensitive {
            return name;
        }
        // Upper-case letters only as the hex digits of an escape, so the name reads back
        // the same after a file system folded its case.
        let id = &name.as_bytes()[FILE_PREFIX.len()..];
        for (i, byte) in id.iter().enumerate() {
            if byte.is_ascii_uppercase() {
                let escaped = (i >= 1 && id[i - 1] == b'%') || (i >= 2 && id[i - 2] == b'%');
                assert!(escaped && byte.is_ascii_hexdigit(), "{name:?} at {i}");
            }
        }
        let folded = name.to_ascii_lowercase();
        if !name.contains('~') {
            assert_eq!(decode_id(&folded), key.as_bytes(), "{folded:?}");
        }
        folded
    }

    #[test]
    fn safe_ids_are_kept_as_they_are() {
        let name = |key| file_name(key, NameCase::Sensitive);
        assert_eq!(name("555-44-4444"), "patient_555-44-4444.json");
        assert_eq!(name("A.b_c-9"), "patient_A.b_c-9.json");
        assert_eq!(name("a.."), "patient_a...json");
    }

    #[test]
    fn other_ids_are_encoded() {
        let cases = [
            ("../../x", "patient_%2E.%2F..%2Fx.json"),
            ("/abs/path", "patient_%2Fabs%2Fpath.json"),
            ("a/b", "patient_a%2Fb.json"),
            ("a\0b", "patient_a%00b.json"),
            (".hidden", "patient_%2Ehidden.json"),
            (".", "patient_%2E.json"),
            ("..", "patient_%2E..json"),
            ("%41", "patient_%2541.json"),
            ("A", "patient_A.json"),
            ("é", "patient_%C3%A9.json"),
            ("a b~c", "patient_a%20b%7Ec.json"),
            ("", "patient_.json"),
        ];
        let mut names = HashSet::new();
        for (key, expected) in cases {
            assert_eq!(check_name(key), expected, "for {key:?}");
            assert!(names.insert(expected), "{expected} twice");
        }
    }

    #[test]
    fn long_ids_are_shortened_with_a_hash() {
        let long = "x".repeat(300);
        let name = check_name(&long);
        assert_eq!(
            name.len(),
            FILE_PREFIX.len() + 64 + 1 + 16 + FILE_SUFFIX.len()
        );
        assert!(name.starts_with(&format!("patient_{}~", "x".repeat(64))));
        let hex = &name[FILE_PREFIX.len() + 65..name.len() - FILE_SUFFIX.len()];
        assert!(
            hex.chars()
                .all(|c| c.is_ascii_hexdigit() && !c.is_ascii_uppercase())
        );

        // The boundary: 100 encoded bytes are kept, 101 are not.
        assert_eq!(
            check_name(&"y".repeat(100)),
            format!("patient_{}.json", "y".repeat(100))
        );
        assert!(check_name(&"y".repeat(101)).contains('~'));
        let encoded_100 = format!("{}/", "z".repeat(97)); // 97 + "%2F"
        assert!(!check_name(&encoded_100).contains('~'));
        let encoded_102 = format!("{}/", "z".repeat(99));
        assert!(check_name(&encoded_102).contains('~'));
    }

    #[test]
    fn where_case_is_ignored_upper_case_letters_are_encoded_too() {
        let cases = [
            ("abc", "patient_abc.json"),
            ("ABC", "patient_%41%42%43.json"),
            ("aBc", "patient_a%42c.json"),
            ("555-44-4444", "patient_555-44-4444.json"),
            ("MRN-1042", "patient_%4D%52%4E-1042.json"),
            ("A.b_c-9", "patient_%41.b_c-9.json"),
            ("%41", "patient_%2541.json"),
            ("A|77", "patient_%41%7C77.json"),
            (".Z", "patient_%2E%5A.json"),
            ("é", "patient_%C3%A9.json"),
            ("", "patient_.json"),
        ];
        let mut folded = HashSet::new();
        for (key, expected) in cases {
            assert_eq!(file_name(key, NameCase::Insensitive), expected, "{key:?}");
            assert!(folded.insert(check_name_in(key, NameCase::Insensitive)));
        }
        // The default names are what they always were.
        assert_eq!(check_name("ABC"), "patient_ABC.json");
        let long = "X".repeat(300);
        assert!(check_name_in(&long, NameCase::Insensitive).contains('~'));
        assert_ne!(
            check_name_in(&long, NameCase::Insensitive),
            check_name_in(&long.to_ascii_lowercase(), NameCase::Insensitive)
        );
    }

    #[test]
    fn ids_that_differ_late_or_across_the_boundary_get_distinct_names() {
        for case in [NameCase::Sensitive, NameCase::Insensitive] {
            ids_that_differ_late_or_across_the_boundary_get_distinct_names_in(case);
        }
    }

    fn ids_that_differ_late_or_across_the_boundary_get_distinct_names_in(case: NameCase) {
        let mut names: HashMap<String, String> = HashMap::new();
        let mut add = |key: String| {
            let name = check_name_in(&key, case);
            if let Some(other) = names.insert(name.clone(), key.clone()) {
                assert_eq!(other, key, "{other:?} and {key:?} share {name}");
            }
        };
        let base = "p".repeat(120);
        for i in 0..base.len() {
            for c in ['q', 'P', '/', '%', '\0', '~'] {
                let mut key = base.clone();
                key.replace_range(i..=i, &c.to_string());
                add(key);
            }
        }
        for len in 0..=140 {
            for c in ['a', '.', '/'] {
                add(c.to_string().repeat(len));
                add(format!("{}{c}", "b".repeat(len)));
            }
        }
        // Keys whose encoded forms are 99, 100, 101 or 102 bytes, equal in the first 64.
        for tail in ["", "c", "cc", "ccc", "/", "c/", "/c", "cc/"] {
            add(format!("{}{tail}", "d".repeat(97)));
            add(format!("{}{tail}", "d".repeat(98)));
        }
    }

    #[test]
    fn every_short_string_over_a_tricky_alphabet_gets_its_own_name() {
        for case in [NameCase::Sensitive, NameCase::Insensitive] {
            every_short_string_over_a_tricky_alphabet_gets_its_own_name_in(case);
        }
    }

    fn every_short_string_over_a_tricky_alphabet_gets_its_own_name_in(case: NameCase) {
        let alphabet = [
            'A', 'a', '0', '.', '_', '-', '%', '2', 'E', 'e', 'F', '/', '\0', '~', ' ', 'é',
        ];
        let mut names = HashSet::new();
        let mut n_keys = 0;
        let mut keys = vec![String::new()];
        for _ in 0..3 {
            let mut longer = Vec::new();
            for key in &keys {
                for c in alphabet {
                    longer.push(format!("{key}{c}"));
                }
            }
            for key in keys.drain(..) {
                assert!(names.insert(check_name_in(&key, case)));
                n_keys += 1;
            }
            keys = longer;
        }
        for key in &keys {
            assert!(names.insert(check_name_in(key, case)));
            n_keys += 1;
        }
        assert_eq!(names.len(), n_keys);
    }

    #[test]
    fn ids_that_differ_only_in_case_get_names_that_differ_without_case() {
        let (a, b) = (
            file_name("abc", NameCase::Insensitive),
            file_name("ABC", NameCase::Insensitive),
        );
        assert!(!a.eq_ignore_ascii_case(&b), "{a} and {b}");
    }

    proptest! {
        #[test]
        fn any_key_gets_a_safe_name(key in any::<String>()) {
            check_name(&key);
            check_name_in(&key, NameCase::Insensitive);
        }

        #[test]
        fn distinct_keys_get_distinct_names(
            prefix in "[a-z/%.~\\x00]{0,80}",
            a in any::<String>(),
            b in any::<String>(),
        ) {
            let a = format!("{prefix}{a}");
            let b = format!("{prefix}{b}");
            prop_assume!(a != b);
            prop_assert_ne!(check_name(&a), check_name(&b));
        }

        #[test]
        fn where_case_is_ignored_distinct_keys_get_names_distinct_without_case(
            prefix in "[a-zA-Z/%.~\x00]{0,80}",
            a in any::<String>(),
            b in any::<String>(),
        ) {
            let a = format!("{prefix}{a}");
            let b = format!("{prefix}{b}");
            prop_assume!(a != b);
            prop_assert_ne!(
                check_name_in(&a, NameCase::Insensitive),
                check_name_in(&b, NameCase::Insensitive)
            );
        }

        #[test]
        fn where_case_is_ignored_keys_differing_only_in_case_get_distinct_names(
            key in "[a-zA-Z0-9%.]{1,120}",
        ) {
            let other = key.to_ascii_uppercase();
            prop_assume!(other != key);
            prop_assert_ne!(
                check_name_in(&key, NameCase::Insensitive),
                check_name_in(&other, NameCase::Insensitive)
            );
        }
    }

    // ---- the document ----
}
