//! HL7 v2 time values (DTM, DT and TM): parsed without panics, kept at the precision given, converted to jiff.
//!
//! - [`Timestamp`] is a DTM, `YYYY[MM[DD[HH[MM[SS[.S…]]]]]][+/-ZZZZ]`, which is also the first
//!   component of the TS of v2.4 and earlier (the caller splits the components off).
//! - [`Date`] is a DT, `YYYY[MM[DD]]`.
//! - [`Time`] is a TM, `HH[MM[SS[.S…]]][+/-ZZZZ]`.
//!
//! Each keeps the [`Precision`] it was given and whether an offset was given, so
//! "no offset" (local time of the sender, unknown to us) never turns into UTC.
//!
//! Decisions where the standard is silent or devices stray from it:
//! - Leading and trailing ASCII whitespace is ignored; anything else outside the grammar is an error.
//! - A fraction of a second may have 1 to 9 digits ([`MAX_FRACTION_DIGITS`]). HL7 allows 4, but
//!   devices that send micro- or nanoseconds are common and their value is unambiguous, so it is
//!   kept (to the nanosecond) rather than refused. A fraction needs the seconds before it.
//! - An offset is `+HHMM` or `-HHMM` with minutes below 60 and at most 14:00 either way
//!   ([`MAX_OFFSET_MINUTES`]; the world's offsets run from -12:00 to +14:00). It may follow any
//!   precision, a date alone included (`20260101+0100`). `-0000` is read as the offset zero, the
//!   same as `+0000`, and is written back as `+0000`.
//! - There is no hour 24 and no leap second 60: both are errors.
//! - Years run from 0000 to 9999 (proleptic Gregorian). A value with an offset must also name an
//!   instant that jiff can hold, which excludes only the last day of 9999.
//! - Equality is of the value as written: `10:00+0100` and `09:00+0000` are different values
//!   of the same instant; compare [`Timestamp::to_jiff_timestamp`] for the instant.
//!
//! - [`Timestamp::resolve`] gives a value without an offset one, from MSH-7's or a site time
//!   zone handed in by the caller (this crate never looks up a zone itself): in a DST gap the
//!   offset before the gap, in a fold the earlier one (jiff's `compatible`); values coarser
//!   than the hour stay without one.
//!
//! Error messages hold positions and counts, never the value: a birth date is patient data.

use std::fmt;
use std::str::FromStr;

use jiff::civil;
use jiff::tz::{AmbiguousOffset, Offset, TimeZone};

/// The most digits accepted in a fraction of a second (nanoseconds; HL7 itself allows 4).
pub const MAX_FRACTION_DIGITS: u8 = 9;

/// The largest offset from UTC accepted, either way, in minutes (14:00).
pub const MAX_OFFSET_MINUTES: i32 = 14 * 60;

/// How much of a time value was given; what is missing reads as its lowest value.
///
/// The variants are ordered from coarse to fine, so `precision >= Precision::Day` asks
/// "is the day known". A [`Timestamp`] can have any precision, a [`Date`] one of
/// `Year`, `Month` and `Day`, a [`Time`] one of `Hour` and finer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Precision {
    /// `YYYY`.
    Year,
    /// `YYYYMM`.
    Month,
    /// `YYYYMMDD`.
    Day,
    /// `YYYYMMDDHH` (a time `HH`).
    Hour,
    /// `YYYYMMDDHHMM` (a time `HHMM`).
    Minute,
    /// `YYYYMMDDHHMMSS` (a time `HHMMSS`).
    Second,
    /// Seconds with a fraction of `digits` digits, 1 to [`MAX_FRACTION_DIGITS`].
    FractionalSecond {
        /// How many digits the fraction had, trailing zeros included.
        digits: u8,
    },
}

/// The part of a date or time whose value is out of range.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum DateTimePart {
    /// The month, 01 to 12.
    Month,
    /// The day, 01 to the length of the month.
    Day,
    /// The hour, 00 to 23.
    Hour,
    /// The minute, 00 to 59.
    Minute,
    /// The second, 00 to 59.
    Second,
}

impl fmt::Display for DateTimePart {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            DateTimePart::Month => "month",
            DateTimePart::Day => "day",
            DateTimePart::Hour => "hour",
            DateTimePart::Minute => "minute",
            DateTimePart::Second => "second",
        })
    }
}

/// Why a value is not a valid HL7 DTM, DT or TM.
///
/// Positions are byte offsets into the input as given, leading whitespace included.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum TimestampError {
    /// Nothing but whitespace.
    #[error("empty time value")]
    Empty,
    /// A byte that the grammar does not allow where it stands (a letter, a second `.`, junk
    /// after the offset, a byte of a non-ASCII character).
    #[error("unexpected character at byte {position}")]
    UnexpectedCharacter {
        /// Byte offset of the character.
        position: usize,
    },
    /// The leading run of digits has a length that no precision has (for a DTM: 4, 6, 8, 10,
    /// 12 or 14; for a DT: 4, 6 or 8; for a TM: 2, 4 or 6).
    #[error("wrong number of digits ({n_digits})")]
    InvalidLength {
        /// How many digits there were.
        n_digits: usize,
    },
    /// A `.` fraction after a value that does not reach the seconds.
    #[error("fraction of a second without the seconds")]
    FractionWithoutSeconds,
    /// A `.` with no digits after it, or more than [`MAX_FRACTION_DIGITS`].
    #[error("fraction of a second must have 1 to 9 digits")]
    InvalidFraction,
    /// A `+` or `-` not followed by exactly four digits.
    #[error("offset must be +HHMM or -HHMM")]
    InvalidOffsetFormat,
    /// An offset with minutes of 60 or more, or beyond 14:00 either way.
    #[error("offset out of range")]
    OffsetOutOfRange,
    /// A month, day, hour, minute or second out of its range.
    #[error("{0} out of range")]
    FieldOutOfRange(DateTimePart),
    /// A value outside what can be represented: an instant beyond jiff's range, or a year
    /// outside 0000 to 9999.
    #[error("time value out of range")]
    OutOfRange,
}

/// An HL7 DTM: a date and time of some precision, with or without an offset from UTC.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Timestamp {
    /// The value with missing parts at their lowest; always within year 0000 to 9999.
    civil: civil::DateTime,
    precision: Precision,
    /// When given, `civil` minus this offset is an instant jiff can hold.
    offset: Option<Offset>,
}

impl Timestamp {
    /// Parses a DTM (or the first component of a TS), e.g. `20261126101458+0100`.
    pub fn parse(input: &str) -> Result<Timestamp, TimestampError> {
        Timestamp::parse_bytes(input.as_bytes())
    }

    /// Parses a DTM from bytes, before or without decoding the message text.
    pub fn parse_bytes(input: &[u8]) -> Result<Timestamp, TimestampError> {
        let pieces = split(input, true, true)?;
        let n_digits = pieces.digits.len();
        if !matches!(n_digits, 4 | 6 | 8 | 10 | 12 | 14) {
            return Err(TimestampError::InvalidLength { n_digits });
        }
        let n_date = n_digits.min(8);
        let date = civil_date(&pieces.digits[..n_date])?;
        let time = civil_time(&pieces.digits[n_date..], pieces.fraction)?;
        let civil = date.to_datetime(time);
        if let Some(offset) = pieces.offset {
            offset
                .to_timestamp(civil)
                .map_err(|_| TimestampError::OutOfRange)?;
        }
        Ok(Timestamp {
            civil,
            precision: precision_of(n_digits, pieces.fraction),
            offset: pieces.offset,
        })
    }

    /// The instant `instant` seen at `offset`, to the second (the fraction is dropped), as
    /// written in MSH-7 of the ACKs we send.
    ///
    /// Fails with [`TimestampError::OffsetOutOfRange`] when the offset is not whole minutes
    /// within 14:00, and with [`TimestampError::OutOfRange`] when the local year is outside
    /// 0000 to 9999: HL7 can write neither.
    pub fn from_instant(
        instant: jiff::Timestamp,
        offset: Offset,
    ) -> Result<Timestamp, TimestampError> {
        let seconds = offset.seconds();
        if seconds % 60 != 0 || (seconds / 60).abs() > MAX_OFFSET_MINUTES {
            return Err(TimestampError::OffsetOutOfRange);
        }
        let local = offset.to_datetime(instant);
        if !(0..=9999).contains(&local.year()) {
            return Err(TimestampError::OutOfRange);
        }
        let time = civil::Time::new(local.hour(), local.minute(), local.second(), 0)
            .map_err(|_| TimestampError::OutOfRange)?;
        Ok(Timestamp {
            civil: local.date().to_datetime(time),
            precision: Precision::Second,
            offset: Some(offset),
        })
    }

    /// The date and time as written, missing parts filled with their lowest value
    /// (month 1, day 1, 00:00:00.0).
    pub fn to_civil(&self) -> civil::DateTime {
        self.civil
    }

    /// The date part of [`Timestamp::to_civil`].
    pub fn date(&self) -> civil::Date {
        self.civil.date()
    }

    /// The offset from UTC when the value gave one; `None` is "not given", not UTC.
    pub fn offset(&self) -> Option<Offset> {
        self.offset
    }

    /// How much of the value was given.
    pub fn precision(&self) -> Precision {
        self.precision
    }

    /// The instant, when the value gave an offset; `None` without one, since the sender's
    /// local time zone is unknown here.
    pub fn to_jiff_timestamp(&self) -> Option<jiff::Timestamp> {
        // Parsing and `from_instant` checked that the conversion succeeds.
        self.offset
            .and_then(|offset| offset.to_timestamp(self.civil).ok())
    }

    /// This value with an offset, for a site that knows where its devices are: unchanged when
    /// it gave one; else `message_offset` (MSH-7's own offset, whole minutes) when given; else
    /// the offset `zone` has at this local time.
    ///
    /// - A local time in a gap (the hour skipped in spring) takes the offset before the gap,
    ///   so it names the instant after the gap (`02:30` in Europe/Zurich on 2026-03-29 is
    ///   `02:30+01:00`, 03:30 summer time); a local time in a fold (the hour repeated in
    ///   autumn) takes the earlier instant, the first offset (`02:30` on 2026-10-25 is
    ///   `02:30+02:00`). Both are jiff's `Disambiguation::Compatible` (RFC 5545, Temporal).
    /// - A value coarser than the hour (a year, month or day) names no instant: it stays
    ///   without an offset. From the hour on, missing parts read as zero (`2026030108` is
    ///   08:00 local).
    /// - The value stays without an offset when the zone's offset is not whole minutes within
    ///   [`MAX_OFFSET_MINUTES`] (local mean times before 1900), which HL7 cannot write, or
    ///   when the instant is beyond jiff's range.
    pub fn resolve(&self, message_offset: Option<Offset>, zone: &TimeZone) -> Timestamp {
        if self.offset.is_some() || self.precision < Precision::Hour {
            return *self;
        }
        let offset = message_offset.unwrap_or_else(|| {
            match zone.to_ambiguous_timestamp(self.civil).offset() {
                AmbiguousOffset::Unambiguous { offset } => offset,
                AmbiguousOffset::Gap { before, .. } | AmbiguousOffset::Fold { before, .. } => {
                    before
                }
            }
        });
        let seconds = offset.seconds();
        let writable = seconds % 60 == 0 && (seconds / 60).abs() <= MAX_OFFSET_MINUTES;
        if !writable || offset.to_timestamp(self.civil).is_err() {
            return *self;
        }
        Timestamp {
            offset: Some(offset),
            ..*self
        }
    }

    /// The ISO 8601 form of the patient files, `YYYY-MM-DDTHH:MM:SS`, missing parts as zeros,
    /// then the fraction with as many digits as were given (`.5`, `.1234`), then the offset
    /// (`+01:00`, `+00:00`) only when one was given. The same as `Display`.
    pub fn to_iso_string(&self) -> String {
        self.to_string()
    }

    /// The HL7 form at the precision given, e.g. `20261126101458+0100`; parsing it gives this
    /// value back.
    pub fn to_hl7_string(&self) -> String {
        let mut out = String::with_capacity(24);
        let date = self.civil.date();
        push_number(&mut out, i32::from(date.year()), 4);
        if self.precision >= Precision::Month {
            push_number(&mut out, i32::from(date.month()), 2);
        }
        if self.precision >= Precision::Day {
            push_number(&mut out, i32::from(date.day()), 2);
        }
        if self.precision >= Precision::Hour {
            push_hl7_time(&mut out, self.civil.time(), self.precision);
        }
        if let Some(offset) = self.offset {
            push_offset(&mut out, offset, "");
        }
        out
    }
}

impl fmt::Display for Timestamp {
    /// Writes [`Timestamp::to_iso_string`].
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut out = String::with_capacity(32);
        push_iso_date(&mut out, self.civil.date(), Precision::Day);
        out.push('T');
        push_iso_time(&mut out, self.civil.time(), self.precision);
        if let Some(offset) = self.offset {
            push_offset(&mut out, offset, ":");
        }
        f.write_str(&out)
    }
}

impl FromStr for Timestamp {
    type Err = TimestampError;

    fn from_str(s: &str) -> Result<Timestamp, TimestampError> {
        Timestamp::parse(s)
    }
}

/// An HL7 DT: a date of year, month or day precision, without an offset.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Date {
    /// The date with missing parts at their lowest; always within year 0000 to 9999.
    civil: civil::Date,
    precision: Precision,
}

impl Date {
    /// Parses a DT, `YYYY`, `YYYYMM` or `YYYYMMDD`.
    pub fn parse(input: &str) -> Result<Date, TimestampError> {
        Date::parse_bytes(input.as_bytes())
    }

    /// Parses a DT from bytes.
    pub fn parse_bytes(input: &[u8]) -> Result<Date, TimestampError> {
        let pieces = split(input, false, false)?;
        let n_digits = pieces.digits.len();
        if !matches!(n_digits, 4 | 6 | 8) {
            return Err(TimestampError::InvalidLength { n_digits });
        }
        Ok(Date {
            civil: civil_date(pieces.digits)?,
            precision: precision_of(n_digits, None),
        })
    }

    /// The date, a missing month or day read as 1.
    pub fn to_civil(&self) -> civil::Date {
        self.civil
    }

    /// How much of the date was given: `Year`, `Month` or `Day`.
    pub fn precision(&self) -> Precision {
        self.precision
    }

    /// The ISO 8601 form at the precision given: `YYYY-MM-DD`, `YYYY-MM` or `YYYY` (ISO's
    /// reduced precision, rather than inventing a day). The same as `Display`.
    pub fn to_iso_string(&self) -> String {
        self.to_string()
    }

    /// The HL7 form at the precision given; parsing it gives this value back.
    pub fn to_hl7_string(&self) -> String {
        let mut out = String::with_capacity(8);
        push_number(&mut out, i32::from(self.civil.year()), 4);
        if self.precision >= Precision::Month {
            push_number(&mut out, i32::from(self.civil.month()), 2);
        }
        if self.precision >= Precision::Day {
            push_number(&mut out, i32::from(self.civil.day()), 2);
        }
        out
    }
}

impl fmt::Display for Date {
    /// Writes [`Date::to_iso_string`].
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut out = String::with_capacity(10);
        push_iso_date(&mut out, self.civil, self.precision);
        f.write_str(&out)
    }
}

impl FromStr for Date {
    type Err = TimestampError;

    fn from_str(s: &str) -> Result<Date, TimestampError> {
        Date::parse(s)
    }
}

/// An HL7 TM: a time of day of some precision, with or without an offset from UTC.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Time {
    /// The time with missing parts at zero.
    civil: civil::Time,
    precision: Precision,
    offset: Option<Offset>,
}

impl Time {
    /// Parses a TM, e.g. `0730`, `101458.25-0500`.
    pub fn parse(input: &str) -> Result<Time, TimestampError> {
        Time::parse_bytes(input.as_bytes())
    }

    /// Parses a TM from bytes.
    pub fn parse_bytes(input: &[u8]) -> Result<Time, TimestampError> {
        let pieces = split(input, true, true)?;
        let n_digits = pieces.digits.len();
        if !matches!(n_digits, 2 | 4 | 6) {
            return Err(TimestampError::InvalidLength { n_digits });
        }
        Ok(Time {
            civil: civil_time(pieces.digits, pieces.fraction)?,
            precision: precision_of(8 + n_digits, pieces.fraction),
            offset: pieces.offset,
        })
    }

    /// The time of day, missing minutes and seconds read as zero.
    pub fn to_civil(&self) -> civil::Time {
        self.civil
    }

    /// The offset from UTC when the value gave one; `None` is "not given", not UTC.
    pub fn offset(&self) -> Option<Offset> {
        self.offset
    }

    /// How much of the time was given: `Hour` or finer.
    pub fn precision(&self) -> Precision {
        self.precision
    }

    /// The ISO 8601 form `HH:MM:SS`, missing parts as zeros, then the fraction with as many
    /// digits as were given, then the offset (`+01:00`) only when one was given. The same as
    /// `Display`.
    pub fn to_iso_string(&self) -> String {
        self.to_string()
    }

    /// The HL7 form at the precision given; parsing it gives this value back.
    pub fn to_hl7_string(&self) -> String {
        let mut out = String::with_capacity(20);
        push_hl7_time(&mut out, self.civil, self.precision);
        if let Some(offset) = self.offset {
            push_offset(&mut out, offset, "");
        }
        out
    }
}

impl fmt::Display for Time {
    /// Writes [`Time::to_iso_string`].
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut out = String::with_capacity(24);
        push_iso_time(&mut out, self.civil, self.precision);
        if let Some(offset) = self.offset {
            push_offset(&mut out, offset, ":");
        }
        f.write_str(&out)
    }
}

impl FromStr for Time {
    type Err = TimestampError;

    fn from_str(s: &str) -> Result<Time, TimestampError> {
        Time::parse(s)
    }
}

/// The ISO date `YYYY-MM-DD` of a PID-7 value (its first component, a DTM such as `19620320`
/// or `196203201230`) when it is valid and gives at least the day; `None` otherwise, and the
/// caller writes the value as sent.
pub fn birth_date_iso(raw: &str) -> Option<String> {
    let timestamp = Timestamp::parse(raw).ok()?;
    if timestamp.precision() < Precision::Day {
        return None;
    }
    let mut out = String::with_capacity(10);
    push_iso_date(&mut out, timestamp.date(), Precision::Day);
    Some(out)
}

/// The pieces of a DTM, DT or TM as written, before any range check.
struct Pieces<'a> {
    /// The leading run of digits.
    digits: &'a [u8],
    /// The digits after a `.`, 1 to `MAX_FRACTION_DIGITS` of them.
    fraction: Option<&'a [u8]>,
    offset: Option<Offset>,
}

/// Splits a trimmed value into digits, fraction and offset, refusing anything else.
fn split(
    input: &[u8],
    allow_fraction: bool,
    allow_offset: bool,
) -> Result<Pieces<'_>, TimestampError> {
    let start = input.len() - input.trim_ascii_start().len();
    let value = input.trim_ascii();
    if value.is_empty() {
        return Err(TimestampError::Empty);
    }
    let n_digits = count_digits(value);
    let mut rest = &value[n_digits..];
    let mut fraction = None;
    if allow_fraction && let Some(after_dot) = rest.strip_prefix(b".") {
        let n = count_digits(after_dot);
        if n == 0 || n > usize::from(MAX_FRACTION_DIGITS) {
            return Err(TimestampError::InvalidFraction);
        }
        fraction = Some(&after_dot[..n]);
        rest = &after_dot[n..];
    }
    let mut offset = None;
    if allow_offset && let [sign @ (b'+' | b'-'), after_sign @ ..] = rest {
        if count_digits(after_sign) != 4 {
            return Err(TimestampError::InvalidOffsetFormat);
        }
        offset = Some(parse_offset(*sign, &after_sign[..4])?);
        rest = &after_sign[4..];
    }
    if !rest.is_empty() {
        return Err(TimestampError::UnexpectedCharacter {
            position: start + value.len() - rest.len(),
        });
    }
    Ok(Pieces {
        digits: &value[..n_digits],
        fraction,
        offset,
    })
}

fn count_digits(bytes: &[u8]) -> usize {
    bytes.iter().take_while(|b| b.is_ascii_digit()).count()
}

/// The value of a run of ASCII digits; callers pass at most 9, so it cannot overflow.
fn number(digits: &[u8]) -> i32 {
    digits
        .iter()
        .fold(0, |n, digit| n * 10 + i32::from(digit - b'0'))
}

/// The two-digit field at `at`, or `None` when the value stops before it.
fn two_digits(digits: &[u8], at: usize) -> Option<i8> {
    // Two digits are at most 99, which fits an i8.
    digits.get(at..at + 2).map(|pair| number(pair) as i8)
}

/// `+HHMM` or `-HHMM`, four digits already checked.
fn parse_offset(sign: u8, digits: &[u8]) -> Result<Offset, TimestampError> {
    let hours = number(&digits[..2]);
    let minutes = number(&digits[2..]);
    let total = hours * 60 + minutes;
    if minutes >= 60 || total > MAX_OFFSET_MINUTES {
        return Err(TimestampError::OffsetOutOfRange);
    }
    let seconds = if sign == b'-' {
        -total * 60
    } else {
        total * 60
    };
    Offset::from_seconds(seconds).map_err(|_| TimestampError::OffsetOutOfRange)
}

/// The date of 4, 6 or 8 digits, missing month and day read as 1.
fn civil_date(digits: &[u8]) -> Result<civil::Date, TimestampError> {
    // Four digits are at most 9999, which fits an i16 and jiff's range of years.
    let year = number(&digits[..4]) as i16;
    let month = two_digits(digits, 4).unwrap_or(1);
    if !(1..=12).contains(&month) {
        return Err(TimestampError::FieldOutOfRange(DateTimePart::Month));
    }
    let day = two_digits(digits, 6).unwrap_or(1);
    civil::Date::new(year, month, day)
        .map_err(|_| TimestampError::FieldOutOfRange(DateTimePart::Day))
}

/// The time of 0, 2, 4 or 6 digits and an optional fraction, missing parts read as 0.
fn civil_time(digits: &[u8], fraction: Option<&[u8]>) -> Result<civil::Time, TimestampError> {
    if fraction.is_some() && digits.len() != 6 {
        return Err(TimestampError::FractionWithoutSeconds);
    }
    let hour = two_digits(digits, 0).unwrap_or(0);
    let minute = two_digits(digits, 2).unwrap_or(0);
    let second = two_digits(digits, 4).unwrap_or(0);
    for (value, max, field) in [
        (hour, 23, DateTimePart::Hour),
        (minute, 59, DateTimePart::Minute),
        (second, 59, DateTimePart::Second),
    ] {
        if value > max {
            return Err(TimestampError::FieldOutOfRange(field));
        }
    }
    let nanosecond = fraction.map_or(0, |fraction| {
        number(fraction) * 10_i32.pow(u32::from(MAX_FRACTION_DIGITS) - fraction.len() as u32)
    });
    civil::Time::new(hour, minute, second, nanosecond).map_err(|_| TimestampError::OutOfRange)
}

/// The precision of a value with `n_digits` digits counted as in a DTM (a TM adds 8).
fn precision_of(n_digits: usize, fraction: Option<&[u8]>) -> Precision {
    match (n_digits, fraction) {
        (..=4, _) => Precision::Year,
        (5..=6, _) => Precision::Month,
        (7..=8, _) => Precision::Day,
        (9..=10, _) => Precision::Hour,
        (11..=12, _) => Precision::Minute,
        (_, None) => Precision::Second,
        // At most MAX_FRACTION_DIGITS, checked by `split`.
        (_, Some(fraction)) => Precision::FractionalSecond {
            digits: fraction.len() as u8,
        },
    }
}

/// Appends `value` zero-padded to `width` digits; values here are never negative.
fn push_number(out: &mut String, value: i32, width: usize) {
    let digits = value.unsigned_abs().to_string();
    for _ in digits.len()..width {
        out.push('0');
    }
    out.push_str(&digits);
}

/// Appends `.` and the first `digits` digits of the nanoseconds.
fn push_fraction(out: &mut String, nanosecond: i32, digits: u8) {
    let digits = digits.clamp(1, MAX_FRACTION_DIGITS);
    let scale = 10_i32.pow(u32::from(MAX_FRACTION_DIGITS - digits));
    out.push('.');
    push_number(out, nanosecond / scale, usize::from(digits));
}

/// Appends `HH[MM[SS[.S…]]]` to the precision given (at least the hour).
fn push_hl7_time(out: &mut String, time: civil::Time, precision: Precision) {
    push_number(out, i32::from(time.hour()), 2);
    if precision >= Precision::Minute {
        push_number(out, i32::from(time.minute()), 2);
    }
    if precision >= Precision::Second {
        push_number(out, i32::from(time.second()), 2);
    }
    if let Precision::FractionalSecond { digits } = precision {
        push_fraction(out, time.subsec_nanosecond(), digits);
    }
}

/// Appends `YYYY[-MM[-DD]]` to the precision given, capped at the day.
fn push_iso_date(out: &mut String, date: civil::Date, precision: Precision) {
    push_number(out, i32::from(date.year()), 4);
    if precision >= Precision::Month {
        out.push('-');
        push_number(out, i32::from(date.month()), 2);
    }
    if precision >= Precision::Day {
        out.push('-');
        push_number(out, i32::from(date.day()), 2);
    }
}

/// Appends `HH:MM:SS`, then the fraction with the digits given when there was one.
fn push_iso_time(out: &mut String, time: civil::Time, precision: Precision) {
    push_number(out, i32::from(time.hour()), 2);
    out.push(':');
    push_number(out, i32::from(time.minute()), 2);
    out.push(':');
    push_number(out, i32::from(time.second()), 2);
    if let Precision::FractionalSecond { digits } = precision {
        push_fraction(out, time.subsec_nanosecond(), digits);
    }
}

/// Appends `±HH<separator>MM`; offsets here are whole minutes.
fn push_offset(out: &mut String, offset: Offset, separator: &str) {
    let seconds = offset.seconds();
    out.push(if seconds < 0 { '-' } else { '+' });
    let minutes = (seconds / 60).abs();
    push_number(out, minutes / 60, 2);
    out.push_str(separator);
    push_number(out, minutes % 60, 2);
}

#[cfg(test)]
mod tests {
    use super::*;

    use jiff::civil::date;
    use jiff::tz;
    use proptest::prelude::*;

    fn ts(input: &str) -> Timestamp {
        match Timestamp::parse(input) {
            Ok(timestamp) => timestamp,
            Err(error) => panic!("{input:?} should parse: {error}"),
        }
    }

    /// Parses `input` and checks its precision, ISO form and HL7 form.
    fn check(input: &str, precision: Precision, iso: &str, hl7: &str) {
        let timestamp = ts(input);
        assert_eq!(timestamp.precision(), precision, "{input:?}");
        assert_eq!(timestamp.to_iso_string(), iso, "{input:?}");
        assert_eq!(timestamp.to_string(), iso, "{input:?}");
        assert_eq!(timestamp.to_hl7_string(), hl7, "{input:?}");
        assert_eq!(ts(hl7), timestamp, "{input:?}");
    }

    #[test]
    fn each_precision() {
        use Precision::*;
        check("2026", Year, "2026-01-01T00:00:00", "2026");
        check("202611", Month, "2026-11-01T00:00:00", "202611");
        check("20261126", Day, "2026-11-26T00:00:00", "20261126");
        check("2026112610", Hour, "2026-11-26T10:00:00", "2026112610");
        check(
            "200202150730",
            Minute,
            "2002-02-15T07:30:00",
            "200202150730",
        );
        check(
            "20261126101458",
            Second,
            "2026-11-26T10:14:58",
            "20261126101458",
        );
        check(
            "20261126101458.5",
            FractionalSecond { digits: 1 },
            "2026-11-26T10:14:58.5",
            "20261126101458.5",
        );
    }

    #[test]
    fn missing_parts_are_lowest() {
        assert_eq!(ts("2026").to_civil(), date(2026, 1, 1).at(0, 0, 0, 0));
        assert_eq!(ts("202602").date(), date(2026, 2, 1));
        assert_eq!(
            ts("200202150730").to_civil(),
            date(2002, 2, 15).at(7, 30, 0, 0)
        );
    }

    #[test]
    fn offsets() {
        check(
            "20261126101458+0100",
            Precision::Second,
            "2026-11-26T10:14:58+01:00",
            "20261126101458+0100",
        );
        check(
            "20261126101458-0500",
            Precision::Second,
            "2026-11-26T10:14:58-05:00",
            "20261126101458-0500",
        );
        check(
            "20261126101458-0330",
            Precision::Second,
            "2026-11-26T10:14:58-03:30",
            "20261126101458-0330",
        );
        assert_eq!(ts("20261126101458+0100").offset(), Some(tz::offset(1)));
        assert_eq!(ts("20261126101458-0500").offset(), Some(tz::offset(-5)));
        assert_eq!(ts("20261126101458+1400").offset(), Some(tz::offset(14)));
        assert_eq!(ts("20261126101458-1400").offset(), Some(tz::offset(-14)));
    }

    #[test]
    fn utc_is_not_no_offset() {
        let utc = ts("20261126101458+0000");
        let local = ts("20261126101458");
        assert_ne!(utc, local);
        assert_eq!(utc.offset(), Some(Offset::UTC));
        assert_eq!(local.offset(), None);
        assert_eq!(utc.to_iso_string(), "2026-11-26T10:14:58+00:00");
        assert_eq!(local.to_iso_string(), "2026-11-26T10:14:58");
        assert_eq!(local.to_jiff_timestamp(), None);
        assert_eq!(
            utc.to_jiff_timestamp(),
            Some("2026-11-26T10:14:58Z".parse().unwrap())
        );
        // -0000 is the offset zero too, written back as +0000.
        assert_eq!(ts("20261126101458-0000"), utc);
        assert_eq!(
            ts("20261126101458-0000").to_hl7_string(),
            "20261126101458+0000"
        );
    }

    #[test]
    fn offset_after_a_date_or_less() {
        check(
            "20260101+0100",
            Precision::Day,
            "2026-01-01T00:00:00+01:00",
            "20260101+0100",
        );
        check(
            "2026-0100",
            Precision::Year,
            "2026-01-01T00:00:00-01:00",
            "2026-0100",
        );
        assert_eq!(
            ts("20260101+0100").to_jiff_timestamp(),
            Some("2025-12-31T23:00:00Z".parse().unwrap())
        );
    }

    #[test]
    fn instants() {
        let a = ts("20261126101458+0100");
        let b = ts("20261126091458+0000");
        assert_ne!(a, b, "equality is of the value as written");
        assert_eq!(a.to_jiff_timestamp(), b.to_jiff_timestamp());
        assert_eq!(
            ts("20261126101458.25-0500").to_jiff_timestamp(),
            Some("2026-11-26T15:14:58.25Z".parse().unwrap())
        );
    }

    #[test]
    fn fractions() {
        let cases = [
            ("20260101120000.5", 1, 500_000_000, "2026-01-01T12:00:00.5"),
            (
                "20260101120000.50",
                2,
                500_000_000,
                "2026-01-01T12:00:00.50",
            ),
            (
                "20260101120000.123",
                3,
                123_000_000,
                "2026-01-01T12:00:00.123",
            ),
            (
                "20260101120000.1234",
                4,
                123_400_000,
                "2026-01-01T12:00:00.1234",
            ),
            (
                "20260101120000.0001",
                4,
                100_000,
                "2026-01-01T12:00:00.0001",
            ),
            (
                "20260101120000.12345",
                5,
                123_450_000,
                "2026-01-01T12:00:00.12345",
            ),
            (
                "20260101120000.123456",
                6,
                123_456_000,
                "2026-01-01T12:00:00.123456",
            ),
            (
                "20260101120000.123456789",
                9,
                123_456_789,
                "2026-01-01T12:00:00.123456789",
            ),
        ];
        for (input, digits, nanosecond, iso) in cases {
            let timestamp = ts(input);
            assert_eq!(
                timestamp.precision(),
                Precision::FractionalSecond { digits },
                "{input}"
            );
            assert_eq!(
                timestamp.to_civil().subsec_nanosecond(),
                nanosecond,
                "{input}"
            );
            assert_eq!(timestamp.to_iso_string(), iso, "{input}");
            assert_eq!(timestamp.to_hl7_string(), input, "{input}");
        }
        assert_eq!(
            ts("20260101120000.5+0100").to_iso_string(),
            "2026-01-01T12:00:00.5+01:00"
        );
    }

    #[test]
    fn whitespace_is_trimmed() {
        assert_eq!(ts("  20260101 "), ts("20260101"));
        assert_eq!(
            Timestamp::parse(" 2026x"),
            Err(TimestampError::UnexpectedCharacter { position: 5 })
        );
    }

    #[test]
    fn invalid_values_are_typed_errors() {
        use DateTimePart::*;
        use TimestampError::*;
        let cases: &[(&str, TimestampError)] = &[
            ("", Empty),
            ("   ", Empty),
            ("abcd", UnexpectedCharacter { position: 0 }),
            ("20", InvalidLength { n_digits: 2 }),
            ("20261", InvalidLength { n_digits: 5 }),
            ("196203520", InvalidLength { n_digits: 9 }),
            ("2026010112000", InvalidLength { n_digits: 13 }),
            ("202601011200000", InvalidLength { n_digits: 15 }),
            ("+0100", InvalidLength { n_digits: 0 }),
            ("20261301", FieldOutOfRange(Month)),
            ("20260001", FieldOutOfRange(Month)),
            ("19620352", FieldOutOfRange(Day)),
            ("20260100", FieldOutOfRange(Day)),
            ("20260230", FieldOutOfRange(Day)),
            ("20250229", FieldOutOfRange(Day)),
            ("2026010124", FieldOutOfRange(Hour)),
            ("202601012360", FieldOutOfRange(Minute)),
            ("20260101235960", FieldOutOfRange(Second)),
            ("202601011200.5", FractionWithoutSeconds),
            ("2026.5", FractionWithoutSeconds),
            ("20260101120000.", InvalidFraction),
            ("20260101120000.1234567890", InvalidFraction),
            ("20260101120000.1.2", UnexpectedCharacter { position: 16 }),
            ("20260101120000+2500", OffsetOutOfRange),
            ("20260101120000+1401", OffsetOutOfRange),
            ("20260101120000-0060", OffsetOutOfRange),
            ("20260101120000+01", InvalidOffsetFormat),
            ("20260101120000+01000", InvalidOffsetFormat),
            ("20260101120000+", InvalidOffsetFormat),
            ("20260101120000+0100x", UnexpectedCharacter { position: 19 }),
            ("20260101120000Z", UnexpectedCharacter { position: 14 }),
            ("2026-01-01", InvalidOffsetFormat),
            ("2026\u{e9}", UnexpectedCharacter { position: 4 }),
            (
                "\u{664}\u{660}\u{662}\u{666}",
                UnexpectedCharacter { position: 0 },
            ),
            ("99991231+0000", OutOfRange),
            ("99991231235959-1400", OutOfRange),
        ];
        for (input, expected) in cases {
            assert_eq!(Timestamp::parse(input), Err(*expected), "{input:?}");
        }
        let long = "2".repeat(10_000);
        assert_eq!(
            Timestamp::parse(&long),
            Err(InvalidLength { n_digits: 10_000 })
        );
        let long_fraction = format!("20260101120000.{}", "1".repeat(10_000));
        assert_eq!(Timestamp::parse(&long_fraction), Err(InvalidFraction));
    }

    #[test]
    fn extremes_within_range() {
        assert_eq!(ts("0000").date(), date(0, 1, 1));
        assert_eq!(ts("99991231235959.999999999").date(), date(9999, 12, 31));
        assert!(ts("00000101+1400").to_jiff_timestamp().is_some());
        assert!(ts("99991230+0000").to_jiff_timestamp().is_some());
        assert_eq!(ts("20240229").date(), date(2024, 2, 29));
    }

    #[test]
    fn errors_read_well() {
        assert_eq!(
            TimestampError::FieldOutOfRange(DateTimePart::Day).to_string(),
            "day out of range"
        );
        assert_eq!(
            TimestampError::InvalidLength { n_digits: 9 }.to_string(),
            "wrong number of digits (9)"
        );
        assert_eq!(
            TimestampError::UnexpectedCharacter { position: 3 }.to_string(),
            "unexpected character at byte 3"
        );
    }

    #[test]
    fn parses_from_bytes_and_from_str() {
        assert_eq!(
            Timestamp::parse_bytes(b"20261126101458+0100"),
            Ok(ts("20261126101458+0100"))
        );
        assert_eq!("20261126".parse::<Timestamp>(), Ok(ts("20261126")));
        assert_eq!(
            Timestamp::parse_bytes(b"2026\xff"),
            Err(TimestampError::UnexpectedCharacter { position: 4 })
        );
        assert_eq!("19620320".parse::<Date>(), Date::parse("19620320"));
        assert_eq!("0730".parse::<Time>(), Time::parse("0730"));
    }

    #[test]
    fn from_instant_writes_msh7() {
        let instant: jiff::Timestamp = "2026-11-26T09:14:58.987Z".parse().unwrap();
        let timestamp = Timestamp::from_instant(instant, tz::offset(1)).unwrap();
        assert_eq!(timestamp.precision(), Precision::Second);
        assert_eq!(timestamp.offset(), Some(tz::offset(1)));
        assert_eq!(timestamp.to_hl7_string(), "20261126101458+0100");
        assert_eq!(timestamp.to_iso_string(), "2026-11-26T10:14:58+01:00");
        assert_eq!(ts(&timestamp.to_hl7_string()), timestamp);
        assert_eq!(
            timestamp.to_jiff_timestamp(),
            Some("2026-11-26T09:14:58Z".parse().unwrap())
        );
        let utc = Timestamp::from_instant(instant, Offset::UTC).unwrap();
        assert_eq!(utc.to_hl7_string(), "20261126091458+0000");
    }

    #[test]
    fn from_instant_refuses_what_hl7_cannot_write() {
        let instant: jiff::Timestamp = "2026-11-26T09:14:58Z".parse().unwrap();
        let odd = Offset::from_seconds(3600 + 30).unwrap();
        assert_eq!(
            Timestamp::from_instant(instant, odd),
            Err(TimestampError::OffsetOutOfRange)
        );
        assert_eq!(
            Timestamp::from_instant(instant, tz::offset(15)),
            Err(TimestampError::OffsetOutOfRange)
        );
        assert_eq!(
            Timestamp::from_instant(jiff::Timestamp::MIN, Offset::UTC),
            Err(TimestampError::OutOfRange)
        );
        let late = Timestamp::from_instant(jiff::Timestamp::MAX, tz::offset(14)).unwrap();
        assert_eq!(late.date(), date(9999, 12, 31));
        assert!(late.to_jiff_timestamp().is_some());
    }

    #[test]
    fn dates() {
        let cases = [
            ("1962", Precision::Year, "1962", date(1962, 1, 1)),
            ("196203", Precision::Month, "1962-03", date(1962, 3, 1)),
            ("19620320", Precision::Day, "1962-03-20", date(1962, 3, 20)),
        ];
        for (input, precision, iso, civil) in cases {
            let parsed = Date::parse(input).unwrap();
            assert_eq!(parsed.precision(), precision, "{input}");
            assert_eq!(parsed.to_iso_string(), iso, "{input}");
            assert_eq!(parsed.to_string(), iso, "{input}");
            assert_eq!(parsed.to_civil(), civil, "{input}");
            assert_eq!(parsed.to_hl7_string(), input, "{input}");
        }
        use TimestampError::*;
        let invalid: &[(&str, TimestampError)] = &[
            ("", Empty),
            ("196203520", InvalidLength { n_digits: 9 }),
            ("196203201230", InvalidLength { n_digits: 12 }),
            ("19621320", FieldOutOfRange(DateTimePart::Month)),
            ("19620230", FieldOutOfRange(DateTimePart::Day)),
            ("19620320+0100", UnexpectedCharacter { position: 8 }),
            ("19620320.5", UnexpectedCharacter { position: 8 }),
        ];
        for (input, expected) in invalid {
            assert_eq!(Date::parse(input), Err(*expected), "{input:?}");
        }
    }

    #[test]
    fn times() {
        let cases = [
            ("07", Precision::Hour, "07:00:00", "07"),
            ("0730", Precision::Minute, "07:30:00", "0730"),
            ("073015", Precision::Second, "07:30:15", "073015"),
            (
                "073015.25",
                Precision::FractionalSecond { digits: 2 },
                "07:30:15.25",
                "073015.25",
            ),
            (
                "0730-0500",
                Precision::Minute,
                "07:30:00-05:00",
                "0730-0500",
            ),
            (
                "073015+0000",
                Precision::Second,
                "07:30:15+00:00",
                "073015+0000",
            ),
        ];
        for (input, precision, iso, hl7) in cases {
            let parsed = Time::parse(input).unwrap();
            assert_eq!(parsed.precision(), precision, "{input}");
            assert_eq!(parsed.to_iso_string(), iso, "{input}");
            assert_eq!(parsed.to_hl7_string(), hl7, "{input}");
            assert_eq!(Time::parse(hl7), Ok(parsed), "{input}");
        }
        let parsed = Time::parse("073015.25-0500").unwrap();
        assert_eq!(parsed.to_civil(), jiff::civil::time(7, 30, 15, 250_000_000));
        assert_eq!(parsed.offset(), Some(tz::offset(-5)));
        assert_eq!(Time::parse("0730").unwrap().offset(), None);
        use TimestampError::*;
        let invalid: &[(&str, TimestampError)] = &[
            ("", Empty),
            ("7", InvalidLength { n_digits: 1 }),
            ("07300", InvalidLength { n_digits: 5 }),
            ("20260101", InvalidLength { n_digits: 8 }),
            ("24", FieldOutOfRange(DateTimePart::Hour)),
            ("2400", FieldOutOfRange(DateTimePart::Hour)),
            ("0760", FieldOutOfRange(DateTimePart::Minute)),
            ("073060", FieldOutOfRange(DateTimePart::Second)),
            ("0730.5", FractionWithoutSeconds),
            ("0730+2500", OffsetOutOfRange),
            ("0730Z", UnexpectedCharacter { position: 4 }),
        ];
        for (input, expected) in invalid {
            assert_eq!(Time::parse(input), Err(*expected), "{input:?}");
        }
    }

    #[test]
    fn birth_dates() {
        assert_eq!(birth_date_iso("19620320").as_deref(), Some("1962-03-20"));
        assert_eq!(
            birth_date_iso("196203201230").as_deref(),
            Some("1962-03-20")
        );
        assert_eq!(
            birth_date_iso("19620320000000+0100").as_deref(),
            Some("1962-03-20")
        );
        assert_eq!(birth_date_iso(" 19620320 ").as_deref(), Some("1962-03-20"));
        assert_eq!(birth_date_iso("196203520"), None);
        assert_eq!(birth_date_iso("19620352"), None);
        assert_eq!(birth_date_iso("1962"), None);
        assert_eq!(birth_date_iso("196203"), None);
        assert_eq!(birth_date_iso(""), None);
        assert_eq!(birth_date_iso("1962-03-20"), None);
        assert_eq!(birth_date_iso("unknown"), None);
    }

    /// A valid DTM in canonical HL7 form: every precision, with and without an offset.
    fn hl7_timestamp() -> impl Strategy<Value = String> {
        (
            0..=9998_i32,
            1..=12_i32,
            0..31_i32,
            0..=23_i32,
            0..=59_i32,
            0..=59_i32,
            0..=999_999_999_i32,
            0..=15_usize,
            prop::option::of(-MAX_OFFSET_MINUTES..=MAX_OFFSET_MINUTES),
        )
            .prop_map(
                |(year, month, day, hour, minute, second, nanosecond, precision, offset)| {
                    let days_in_month =
                        i32::from(date(year as i16, month as i8, 1).days_in_month());
                    let mut out = String::new();
                    push_number(&mut out, year, 4);
                    // 0 to 5 more fields after the year, then 1 to 9 fraction digits at 6..=14.
                    let fields = [month, 1 + day % days_in_month, hour, minute, second];
                    for field in fields.iter().take(precision.min(5)) {
                        push_number(&mut out, *field, 2);
                    }
                    if precision > 5 {
                        let digits = (precision - 6).min(8) as u8 + 1;
                        push_fraction(&mut out, nanosecond, digits);
                    }
                    if let Some(minutes) = offset {
                        push_offset(&mut out, Offset::from_seconds(minutes * 60).unwrap(), "");
                    }
                    out
                },
            )
    }

    // Site zones as POSIX TZ strings, so that these tests read no time zone database and
    // give the same answer on every machine (rules as in force since 1996 and 1986).
    fn zurich() -> TimeZone {
        TimeZone::posix("CET-1CEST,M3.5.0,M10.5.0/3").unwrap()
    }

    fn kolkata() -> TimeZone {
        TimeZone::posix("IST-5:30").unwrap()
    }

    fn kathmandu() -> TimeZone {
        TimeZone::posix("<+0545>-5:45").unwrap()
    }

    /// Resolves `input` and checks the instant and the ISO form the patient files write.
    fn check_resolved(
        input: &str,
        msh7: Option<Offset>,
        zone: &TimeZone,
        instant: &str,
        iso: &str,
    ) {
        let resolved = ts(input).resolve(msh7, zone);
        let expected: jiff::Timestamp = instant.parse().unwrap();
        assert_eq!(resolved.to_jiff_timestamp(), Some(expected), "{input:?}");
        assert_eq!(resolved.to_iso_string(), iso, "{input:?}");
        assert_eq!(resolved.precision(), ts(input).precision(), "{input:?}");
        assert_eq!(resolved.to_civil(), ts(input).to_civil(), "{input:?}");
    }

    #[test]
    fn resolve_takes_the_zones_offset_in_winter_and_in_summer() {
        check_resolved(
            "20260301083000",
            None,
            &zurich(),
            "2026-03-01T07:30:00Z",
            "2026-03-01T08:30:00+01:00",
        );
        check_resolved(
            "20260701083000",
            None,
            &zurich(),
            "2026-07-01T06:30:00Z",
            "2026-07-01T08:30:00+02:00",
        );
    }

    #[test]
    fn resolve_in_the_spring_gap_takes_the_offset_before_it() {
        // 02:30 does not exist on 2026-03-29 in Zurich: read as 03:30 summer time.
        check_resolved(
            "20260329023000",
            None,
            &zurich(),
            "2026-03-29T01:30:00Z",
            "2026-03-29T02:30:00+01:00",
        );
        let compatible = zurich()
            .to_ambiguous_timestamp(date(2026, 3, 29).at(2, 30, 0, 0))
            .compatible()
            .unwrap();
        assert_eq!(
            ts("20260329023000")
                .resolve(None, &zurich())
                .to_jiff_timestamp(),
            Some(compatible)
        );
        // The minutes on either side of the gap are unambiguous.
        check_resolved(
            "202603290159",
            None,
            &zurich(),
            "2026-03-29T00:59:00Z",
            "2026-03-29T01:59:00+01:00",
        );
        check_resolved(
            "202603290300",
            None,
            &zurich(),
            "2026-03-29T01:00:00Z",
            "2026-03-29T03:00:00+02:00",
        );
    }

    #[test]
    fn resolve_in_the_autumn_fold_takes_the_earlier_instant() {
        // 02:30 happens twice on 2026-10-25 in Zurich: the first, still summer time.
        check_resolved(
            "20261025023000",
            None,
            &zurich(),
            "2026-10-25T00:30:00Z",
            "2026-10-25T02:30:00+02:00",
        );
        let compatible = zurich()
            .to_ambiguous_timestamp(date(2026, 10, 25).at(2, 30, 0, 0))
            .compatible()
            .unwrap();
        assert_eq!(
            ts("20261025023000")
                .resolve(None, &zurich())
                .to_jiff_timestamp(),
            Some(compatible)
        );
        check_resolved(
            "20261025030000",
            None,
            &zurich(),
            "2026-10-25T02:00:00Z",
            "2026-10-25T03:00:00+01:00",
        );
    }

    #[test]
    fn resolve_keeps_the_minutes_of_an_offset() {
        check_resolved(
            "20260301083000",
            None,
            &kolkata(),
            "2026-03-01T03:00:00Z",
            "2026-03-01T08:30:00+05:30",
        );
        check_resolved(
            "20260301083000",
            None,
            &kathmandu(),
            "2026-03-01T02:45:00Z",
            "2026-03-01T08:30:00+05:45",
        );
    }

    #[test]
    fn resolve_prefers_the_offset_of_msh7_to_the_zone() {
        let msh7 = ts("20260701090000+0530").offset();
        check_resolved(
            "20260701083000",
            msh7,
            &zurich(),
            "2026-07-01T03:00:00Z",
            "2026-07-01T08:30:00+05:30",
        );
        check_resolved(
            "20260701083000",
            Some(tz::offset(-3) - jiff::SignedDuration::from_mins(30)),
            &kolkata(),
            "2026-07-01T12:00:00Z",
            "2026-07-01T08:30:00-03:30",
        );
    }

    #[test]
    fn resolve_leaves_a_given_offset_alone() {
        let given = ts("20260701083000-0500");
        assert_eq!(given.resolve(Some(tz::offset(1)), &zurich()), given);
        assert_eq!(given.resolve(None, &kathmandu()), given);
        let utc = ts("20260329023000+0000");
        assert_eq!(utc.resolve(None, &zurich()), utc);
    }

    #[test]
    fn resolve_follows_the_precision() {
        // A date (or month, or year) names no instant: it stays without an offset.
        for input in ["2026", "202607", "20260701"] {
            let value = ts(input);
            assert_eq!(value.resolve(None, &zurich()), value, "{input:?}");
            assert_eq!(
                value.resolve(Some(tz::offset(2)), &zurich()),
                value,
                "{input:?}"
            );
        }
        // From the hour on, the missing parts are zero, at the precision given.
        let hour = ts("2026070108").resolve(None, &zurich());
        assert_eq!(hour.to_hl7_string(), "2026070108+0200");
        assert_eq!(hour.to_iso_string(), "2026-07-01T08:00:00+02:00");
        let fraction = ts("20260101083000.25").resolve(None, &kathmandu());
        assert_eq!(fraction.to_hl7_string(), "20260101083000.25+0545");
        assert_eq!(fraction.to_iso_string(), "2026-01-01T08:30:00.25+05:45");
    }

    #[test]
    fn resolve_refuses_offsets_hl7_cannot_write() {
        // A local mean time with seconds (Zurich's before 1894 was +00:34:08).
        let mean_time = TimeZone::fixed(Offset::from_seconds(34 * 60 + 8).unwrap());
        let value = ts("18800101120000");
        assert_eq!(value.resolve(None, &mean_time), value);
        // The last day of 9999 west of UTC is beyond jiff's last instant.
        let late = ts("99991231230000");
        assert_eq!(late.resolve(Some(tz::offset(-12)), &zurich()), late);
    }

    proptest! {
        #[test]
        fn hl7_form_round_trips(input in hl7_timestamp()) {
            let timestamp = Timestamp::parse(&input).unwrap();
            prop_assert_eq!(timestamp.to_hl7_string(), input.clone());
            prop_assert_eq!(Timestamp::parse(&timestamp.to_hl7_string()), Ok(timestamp));
            prop_assert_eq!(timestamp.to_jiff_timestamp().is_some(), timestamp.offset().is_some());
            let iso = timestamp.to_iso_string();
            prop_assert!(iso.len() >= 19);
            if timestamp.offset().is_some() {
                let instant: jiff::Timestamp = iso.parse().unwrap();
                prop_assert_eq!(Some(instant), timestamp.to_jiff_timestamp());
            } else {
                let civil: jiff::civil::DateTime = iso.parse().unwrap();
                prop_assert_eq!(civil, timestamp.to_civil());
            }
        }

        #[test]
        fn from_instant_round_trips(
            second in -62_167_000_000..253_402_000_000_i64,
            minutes in -MAX_OFFSET_MINUTES..=MAX_OFFSET_MINUTES,
        ) {
            let instant = jiff::Timestamp::from_second(second).unwrap();
            let offset = Offset::from_seconds(minutes * 60).unwrap();
            let timestamp = Timestamp::from_instant(instant, offset).unwrap();
            prop_assert_eq!(timestamp.to_jiff_timestamp(), Some(instant));
            prop_assert_eq!(Timestamp::parse(&timestamp.to_hl7_string()), Ok(timestamp));
        }

        #[test]
        fn any_string_parses_or_errs(input in any::<String>()) {
            let _ = Timestamp::parse(&input);
            let _ = Date::parse(&input);
            let _ = Time::parse(&input);
            let _ = birth_date_iso(&input);
        }

        #[test]
        fn near_misses_parse_or_err(input in "[0-9]{0,16}[.]?[0-9]{0,11}[+-]?[0-9]{0,5} ?") {
            if let Ok(timestamp) = Timestamp::parse(&input) {
                prop_assert_eq!(Timestamp::parse(&timestamp.to_hl7_string()), Ok(timestamp));
                let _ = timestamp.to_iso_string();
            }
            if let Ok(parsed) = Date::parse(&input) {
                prop_assert_eq!(Date::parse(&parsed.to_hl7_string()), Ok(parsed));
            }
            if let Ok(parsed) = Time::parse(&input) {
                prop_assert_eq!(Time::parse(&parsed.to_hl7_string()), Ok(parsed));
            }
        }

        #[test]
        fn any_bytes_parse_or_err(input in prop::collection::vec(any::<u8>(), 0..48)) {
            let _ = Timestamp::parse_bytes(&input);
            let _ = Date::parse_bytes(&input);
            let _ = Time::parse_bytes(&input);
        }
    }
}
