//! The validating parsers of settings: text in, a typed value or the reason it is wrong out.
//! The reason says what was expected and never repeats the text, which may be a secret.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

/// An IP address and port.
pub fn address(text: &str) -> Result<SocketAddr, String> {
    text.trim()
        .parse()
        .map_err(|_| "expected an address such as 0.0.0.0:2575 or [::1]:2575".to_owned())
}

/// An address, or `off` for none.
pub fn address_or_off(text: &str) -> Result<Option<SocketAddr>, String> {
    match text.trim() {
        "off" => Ok(None),
        other => address(other)
            .map(Some)
            .map_err(|_| "expected an address such as 127.0.0.1:8080, or `off`".to_owned()),
    }
}

/// A path that is not empty.
pub fn path(text: &str) -> Result<PathBuf, String> {
    if text.trim().is_empty() {
        return Err("empty path".into());
    }
    Ok(PathBuf::from(text))
}

/// A whole number, 0 included.
pub fn number(text: &str) -> Result<usize, String> {
    text.trim()
        .parse()
        .map_err(|_| "expected a whole number".to_owned())
}

/// A whole number above 0.
pub fn positive(text: &str) -> Result<usize, String> {
    match text.trim().parse::<usize>() {
        Ok(n) if n > 0 => Ok(n),
        _ => Err("expected a whole number above 0".into()),
    }
}

/// A finite number above 0, fractions allowed (a rate).
pub fn positive_real(text: &str) -> Result<f64, String> {
    match text.trim().parse::<f64>() {
        Ok(x) if x > 0.0 && x.is_finite() => Ok(x),
        _ => Err("expected a number above 0 such as 50 or 0.5".into()),
    }
}

/// A duration ([`parse_duration`]), zero included.
pub fn duration(text: &str) -> Result<Duration, String> {
    match parse_duration(text) {
        Some(d) if d > LONGEST => Err(TOO_LONG.into()),
        Some(d) => Ok(d),
        None => Err("expected a duration such as 0ms, 500ms, 30s, 5m or 1h".into()),
    }
}

const TOO_LONG: &str = "expected a duration of at most a year (8760h)";

/// The longest duration a setting takes: a year. Deadlines are `now + duration`, and a
/// duration near `u64::MAX` seconds would overflow the clock.
const LONGEST: Duration = Duration::from_secs(365 * 24 * 3600);

/// A duration above zero.
pub fn positive_duration(text: &str) -> Result<Duration, String> {
    match parse_duration(text) {
        Some(d) if d > LONGEST => Err(TOO_LONG.into()),
        Some(d) if !d.is_zero() => Ok(d),
        _ => Err("expected a duration above zero such as 500ms, 30s, 5m or 1h".into()),
    }
}

/// `on` or `off` (`true` and `false` too, as a TOML boolean arrives).
pub fn switch(text: &str) -> Result<bool, String> {
    match text.trim() {
        "on" | "true" => Ok(true),
        "off" | "false" => Ok(false),
        _ => Err("expected `on` or `off`".into()),
    }
}

/// Text without control characters, as it goes into HL7 fields and log lines.
pub fn text(text: &str) -> Result<String, String> {
    if text.chars().any(char::is_control) {
        return Err("control characters are not allowed".into());
    }
    Ok(text.to_owned())
}

/// One of a few names, each standing for a value.
pub fn choice<T: Copy>(text: &str, choices: &[(&str, T)]) -> Result<T, String> {
    let text = text.trim();
    if let Some((_, value)) = choices.iter().find(|(name, _)| *name == text) {
        return Ok(*value);
    }
    let names: Vec<String> = choices
        .iter()
        .map(|(name, _)| format!("`{name}`"))
        .collect();
    Err(match names.split_last() {
        Some((last, [])) => format!("expected {last}"),
        Some((last, rest)) => format!("expected {} or {last}", rest.join(", ")),
        None => "expected nothing".into(),
    })
}

/// Parses `250ms`, `30s`, `5m`, `1h` (a whole number and a unit; a bare number is seconds).
pub fn parse_duration(text: &str) -> Option<Duration> {
    let text = text.trim();
    let split = text
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(text.len());
    let (digits, unit) = text.split_at(split);
    let n: u64 = digits.parse().ok()?;
    Some(match unit {
        "ms" => Duration::from_millis(n),
        "" | "s" => Duration::from_secs(n),
        "m" => Duration::from_secs(n.checked_mul(60)?),
        "h" => Duration::from_secs(n.checked_mul(3600)?),
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations() {
        assert_eq!(parse_duration("250ms"), Some(Duration::from_millis(250)));
        assert_eq!(parse_duration("30s"), Some(Duration::from_secs(30)));
        assert_eq!(parse_duration("0ms"), Some(Duration::ZERO));
        assert_eq!(parse_duration("5m"), Some(Duration::from_secs(300)));
        assert_eq!(parse_duration("7"), Some(Duration::from_secs(7)));
        assert_eq!(parse_duration("1.5s"), None);
        assert_eq!(parse_duration("s"), None);
        assert_eq!(parse_duration("10d"), None);
        assert_eq!(duration("0ms"), Ok(Duration::ZERO));
        assert!(positive_duration("0ms").is_err());
        assert_eq!(positive_duration("2m"), Ok(Duration::from_secs(120)));
        assert!(
            duration("soon")
                .unwrap_err()
                .starts_with("expected a duration")
        );
    }

    #[test]
    fn addresses() {
        assert_eq!(address("[::1]:2575").unwrap().port(), 2575);
        assert!(address("nowhere").is_err());
        assert_eq!(address_or_off("off"), Ok(None));
        assert!(address_or_off("127.0.0.1:8080").unwrap().is_some());
        assert!(address_or_off("of").is_err());
    }

    #[test]
    fn numbers() {
        assert_eq!(number("0"), Ok(0));
        assert_eq!(positive(" 12 "), Ok(12));
        assert!(positive("0").is_err());
        assert!(positive("-1").is_err());
        assert_eq!(positive_real("0.5"), Ok(0.5));
        for bad in ["0", "-2", "inf", "NaN", "fast"] {
            assert!(positive_real(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn switches_text_and_choices() {
        assert_eq!(switch("on"), Ok(true));
        assert_eq!(switch("false"), Ok(false));
        assert_eq!(switch("maybe"), Err("expected `on` or `off`".into()));
        assert_eq!(text("HL7IHP"), Ok("HL7IHP".into()));
        assert!(text("a\rb").is_err());
        assert!(path(" ").is_err());
        let choices = [("a", 1), ("b", 2), ("c", 3)];
        assert_eq!(choice("b", &choices), Ok(2));
        assert_eq!(
            choice("d", &choices),
            Err("expected `a`, `b` or `c`".into())
        );
        assert_eq!(choice("d", &choices[..1]), Err("expected `a`".into()));
    }

    #[test]
    fn durations_stop_at_a_year() {
        assert_eq!(
            positive_duration("8760h"),
            Ok(Duration::from_secs(8760 * 3600))
        );
        assert_eq!(positive_duration("8761h"), Err(TOO_LONG.into()));
        assert_eq!(duration("18446744073709551615s"), Err(TOO_LONG.into()));
    }
}
