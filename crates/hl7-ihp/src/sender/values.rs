//! `send --demo` and `send --placeholders`: the simulator's messages rewritten as a monitor
//! in demo mode (every OBX flagged `DEMO` in OBX-8, as a Mindray VS8 does) or one that sends
//! placeholders for "no value" (some numeric OBX-5 values replaced by `-999`, as an XH80X
//! does), so the receiver's marks (`crate::marks`) can be seen and tested.

/// How the values of the messages sent are rewritten.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ValueFlags {
    /// OBX-8 of every OBX is `DEMO`.
    pub demo: bool,
    /// Every other numeric (NM, SN) OBX-5 is `-999`.
    pub placeholders: bool,
}

/// The placeholder `send --placeholders` writes.
pub const PLACEHOLDER: &str = "-999";

/// Rewrites one message's OBX rows as `flags` ask. `counter` counts the numeric rows seen so
/// far over the run, so that single-OBX messages alternate too. Other segments, and
/// messages without OBX, stay byte for byte.
pub fn rewrite(message: &[u8], flags: ValueFlags, counter: &mut u64) -> Vec<u8> {
    if !(flags.demo || flags.placeholders) || message.len() < 4 || !message.starts_with(b"MSH") {
        return message.to_vec();
    }
    let separator = message[3];
    let mut out = Vec::with_capacity(message.len() + 64);
    for (n, segment) in message.split(|&b| b == b'\r').enumerate() {
        if n > 0 {
            out.push(b'\r');
        }
        if !segment.starts_with(b"OBX") {
            out.extend_from_slice(segment);
            continue;
        }
        let mut fields: Vec<&[u8]> = segment.split(|&b| b == separator).collect();
        let numeric = matches!(fields.get(2), Some(&b"NM") | Some(&b"SN"));
        let replace = flags.placeholders && numeric && {
            let even = counter.is_multiple_of(2);
            *counter += 1;
            even
        };
        if replace {
            if fields.len() < 6 {
                fields.resize(6, b"");
            }
            fields[5] = PLACEHOLDER.as_bytes();
        }
        if flags.demo {
            if fields.len() < 9 {
                fields.resize(9, b"");
            }
            fields[8] = b"DEMO";
        }
        for (i, field) in fields.iter().enumerate() {
            if i > 0 {
                out.push(separator);
            }
            out.extend_from_slice(field);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    const ORU: &[u8] = b"MSH|^~\\&|MON|ICU|||20261201120000||ORU^R01|1|P|2.6\rPID|||P1\r\
        OBX|1|NM|147842^MDC_ECG_HEART_RATE^MDC||72|/min|50-120|N|||R\r\
        OBX|2|NM|150456^MDC_PULS_OXIM_SAT_O2^MDC||97|%\r\
        OBX|3|ST|X^Note||hello\r";

    fn text(bytes: Vec<u8>) -> String {
        String::from_utf8(bytes).unwrap()
    }

    #[test]
    fn nothing_asked_changes_nothing() {
        let mut counter = 0;
        assert_eq!(rewrite(ORU, ValueFlags::default(), &mut counter), ORU);
    }

    #[test]
    fn demo_flags_every_obx() {
        let flags = ValueFlags {
            demo: true,
            placeholders: false,
        };
        let out = text(rewrite(ORU, flags, &mut 0));
        assert!(out.contains("OBX|1|NM|147842^MDC_ECG_HEART_RATE^MDC||72|/min|50-120|DEMO|||R\r"));
        assert!(out.contains("OBX|2|NM|150456^MDC_PULS_OXIM_SAT_O2^MDC||97|%||DEMO\r"));
        assert!(out.contains("OBX|3|ST|X^Note||hello|||DEMO"));
        assert!(out.starts_with("MSH|^~\\&|MON|ICU|||20261201120000||ORU^R01|1|P|2.6\rPID|||P1\r"));
    }

    #[test]
    fn placeholders_replace_every_other_numeric_value() {
        let flags = ValueFlags {
            demo: false,
            placeholders: true,
        };
        let mut counter = 0;
        let out = text(rewrite(ORU, flags, &mut counter));
        assert!(out.contains("OBX|1|NM|147842^MDC_ECG_HEART_RATE^MDC||-999|/min|50-120|N|||R\r"));
        assert!(out.contains("OBX|2|NM|150456^MDC_PULS_OXIM_SAT_O2^MDC||97|%\r"));
        assert!(out.contains("OBX|3|ST|X^Note||hello"));
        assert_eq!(counter, 2);
        // The next message's first numeric value is the third: replaced.
        let out = text(rewrite(ORU, flags, &mut counter));
        assert!(out.contains("||-999|/min"));
    }
}
