//! Short ids: base-36 numbers for fresh ACK control ids and for the simulator's MSH-10.

/// `n` in base 36, upper case (`0`–`9`, `A`–`Z`).
pub fn base36(mut n: u64) -> String {
    const DIGITS: &[u8; 36] = b"0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZ";
    let mut out = Vec::with_capacity(13);
    loop {
        out.push(DIGITS[(n % 36) as usize]);
        n /= 36;
        if n == 0 {
            break;
        }
    }
    out.reverse();
    String::from_utf8(out).unwrap_or_default()
}

/// A run id: the current time in centiseconds, six base-36 digits, so control ids stay
/// unique across runs (they wrap every ~25 days), and two of the process id, so that two
/// senders started in the same centisecond (a bench's two load generators) do not send
/// the same control ids.
pub fn run_id() -> String {
    let ms = jiff::Timestamp::now().as_millisecond().unsigned_abs();
    let time = base36((ms / 10) % 36u64.pow(6));
    let process = base36(u64::from(std::process::id()) % 36u64.pow(2));
    format!("{time:0>6}{process:0>2}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base36_digits() {
        assert_eq!(base36(0), "0");
        assert_eq!(base36(35), "Z");
        assert_eq!(base36(36), "10");
        assert_eq!(base36(u64::MAX), "3W5E11264SGSF");
        assert_eq!(run_id().len(), 8);
    }
}
