//! Values that are not measurements: which OBX rows are stored as sent but marked, so that
//! they never become a number, a plot point or a latest vital (docs/patient-files.md,
//! "Marked records").
//!
//! Four marks, decided once at ingest from the OBX row and the sending application (MSH-3):
//!
//! - `demo`: OBX-8 has a repetition `DEMO` (a Mindray VS8 in demo mode flags every value
//!   so). HL7 table 0085 (OBX-11) has no status meaning "simulated", so no result status
//!   marks a row `demo`; a message's processing id (MSH-11 `T`, `D`) is not looked at
//!   either: only the OBX row itself marks it.
//! - `not-obtained`: OBX-11 `X` (results cannot be obtained for this observation).
//! - `empty`: OBX-5 is empty (or only spaces).
//! - `placeholder`: a numeric value (`NM`/`SN`) equal to one of the placeholders
//!   configured for its sending application (`--placeholder-values`), e.g. `-999`.
//!
//! The first that applies, in that order, is the row's mark.

use std::fmt;

use serde::Serialize;

/// Why a stored value is not a measurement.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "kebab-case")]
pub enum Mark {
    /// The device is in demo mode (OBX-8 `DEMO`): the value is simulated.
    Demo,
    /// The device could not obtain the value (OBX-11 `X`).
    NotObtained,
    /// OBX-5 is empty.
    Empty,
    /// The value is one of its sending application's placeholders for "no value".
    Placeholder,
}

impl Mark {
    /// The name the JSON (records, API) and the store use.
    pub fn name(self) -> &'static str {
        match self {
            Mark::Demo => "demo",
            Mark::NotObtained => "not-obtained",
            Mark::Empty => "empty",
            Mark::Placeholder => "placeholder",
        }
    }

    /// The mark a stored name names; `None` for a name this version does not know.
    pub fn from_name(name: &str) -> Option<Mark> {
        [
            Mark::Demo,
            Mark::NotObtained,
            Mark::Empty,
            Mark::Placeholder,
        ]
        .into_iter()
        .find(|mark| mark.name() == name)
    }
}

impl fmt::Display for Mark {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// The placeholder values of each sending application (`--placeholder-values`).
///
/// Written `APP=V,V;APP=V` (or, in the TOML file, a list of `APP=V,V` strings): `APP` is
/// MSH-3 as sent (its first component, compared without regard to case), `*` every
/// application. Values compare as numbers, so `-999.0` is `-999`. `off` is none.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct PlaceholderValues {
    /// `(application, values)`, in the order given; `*` matches any.
    entries: Vec<(String, Vec<f64>)>,
}

// Every value is finite (`parse` refuses the others), so `==` is an equivalence.
impl Eq for PlaceholderValues {}

/// The default: only the vendors known to send placeholders, with the values they use.
/// Conservative on purpose: a value that can be real (`-100` dBm, `-100` mV) is marked for
/// no application unless configured.
pub const DEFAULT_PLACEHOLDER_VALUES: &str = "XH80X=-999,-99.9";

impl PlaceholderValues {
    /// Reads the setting's text (see the type).
    pub fn parse(text: &str) -> Result<PlaceholderValues, String> {
        let text = text.trim();
        if text.eq_ignore_ascii_case("off") || text.is_empty() {
            return Ok(PlaceholderValues::default());
        }
        let mut entries = Vec::new();
        for entry in text.split(';').map(str::trim).filter(|e| !e.is_empty()) {
            let Some((app, values)) = entry.split_once('=') else {
                return Err(format!(
                    "expected APP=VALUE,VALUE (e.g. `XH80X=-999,-99.9` or `*=-999`), got `{}`",
                    entry.escape_debug()
                ));
            };
            let app = app.trim();
            if app.is_empty() {
                return Err("an application name (MSH-3) or `*` before `=`".into());
            }
            let mut numbers = Vec::new();
            for value in values.split(',').map(str::trim) {
                match value.parse::<f64>() {
                    Ok(n) if n.is_finite() => numbers.push(n),
                    _ => {
                        return Err(format!(
                            "placeholder `{}` of `{}` is not a number",
                            value.escape_debug(),
                            app.escape_debug()
                        ));
                    }
                }
            }
            entries.push((app.to_owned(), numbers));
        }
        Ok(PlaceholderValues { entries })
    }

    /// Whether `value` is a placeholder of `application` (MSH-3.1).
    pub fn is_placeholder(&self, application: &str, value: f64) -> bool {
        let application = application.trim();
        self.entries.iter().any(|(app, values)| {
            (app == "*" || app.eq_ignore_ascii_case(application)) && values.contains(&value)
        })
    }

    /// Whether no application has placeholders.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }
}

/// The fields of one OBX row the mark depends on.
#[derive(Clone, Copy, Debug)]
pub struct Row<'a> {
    /// OBX-2.
    pub value_type: &'a str,
    /// OBX-5 as text.
    pub value: &'a str,
    /// OBX-5 as a number, if it is one.
    pub numeric: Option<f64>,
    /// OBX-8, repetitions joined with `~`.
    pub abnormal_flags: &'a str,
    /// OBX-11.
    pub status: &'a str,
}

/// The mark of one OBX row of a message from `application` (MSH-3.1); `None`: a
/// measurement.
pub fn mark_of(row: Row<'_>, application: &str, placeholders: &PlaceholderValues) -> Option<Mark> {
    if row
        .abnormal_flags
        .split('~')
        .any(|flag| flag.trim().eq_ignore_ascii_case("DEMO"))
    {
        return Some(Mark::Demo);
    }
    if row.status.trim().eq_ignore_ascii_case("X") {
        return Some(Mark::NotObtained);
    }
    if row.value.trim().is_empty() {
        return Some(Mark::Empty);
    }
    let numeric_type = matches!(row.value_type.trim(), "NM" | "SN");
    if numeric_type
        && let Some(n) = row.numeric
        && placeholders.is_placeholder(application, n)
    {
        return Some(Mark::Placeholder);
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row<'a>(value: &'a str, flags: &'a str, status: &'a str) -> Row<'a> {
        Row {
            value_type: "NM",
            value,
            numeric: value.trim().parse().ok(),
            abnormal_flags: flags,
            status,
        }
    }

    fn defaults() -> PlaceholderValues {
        PlaceholderValues::parse(DEFAULT_PLACEHOLDER_VALUES).unwrap()
    }

    #[test]
    fn a_measurement_has_no_mark() {
        assert_eq!(mark_of(row("72", "N", "F"), "VS8", &defaults()), None);
        assert_eq!(mark_of(row("72", "", "R"), "XH80X", &defaults()), None);
    }

    #[test]
    fn demo_in_any_repetition_of_obx_8_marks_demo_first() {
        assert_eq!(
            mark_of(row("72", "DEMO", "F"), "VS8", &defaults()),
            Some(Mark::Demo)
        );
        assert_eq!(
            mark_of(row("72", "H~demo", "F"), "VS8", &defaults()),
            Some(Mark::Demo)
        );
        // Demo wins over the other marks.
        assert_eq!(
            mark_of(row("", "DEMO", "X"), "XH80X", &defaults()),
            Some(Mark::Demo)
        );
        // Only a whole repetition: a flag that merely contains the letters is no mark.
        assert_eq!(mark_of(row("72", "DEMOX", "F"), "VS8", &defaults()), None);
    }

    #[test]
    fn status_x_and_empty_values_are_marked() {
        assert_eq!(
            mark_of(row("0", "", "X"), "VS8", &defaults()),
            Some(Mark::NotObtained)
        );
        assert_eq!(
            mark_of(row("", "", "F"), "VS8", &defaults()),
            Some(Mark::Empty)
        );
        assert_eq!(
            mark_of(row("  ", "", "F"), "VS8", &defaults()),
            Some(Mark::Empty)
        );
    }

    #[test]
    fn placeholders_are_per_application_and_compare_as_numbers() {
        let p = defaults();
        assert_eq!(
            mark_of(row("-999", "", "F"), "XH80X", &p),
            Some(Mark::Placeholder)
        );
        assert_eq!(
            mark_of(row("-99.90", "", "F"), "xh80x", &p),
            Some(Mark::Placeholder)
        );
        // Another application's -999 is a number (unless `*` is configured).
        assert_eq!(mark_of(row("-999", "", "F"), "VS8", &p), None);
        // -100 is nobody's placeholder by default: it can be a real value.
        assert_eq!(mark_of(row("-100", "", "F"), "XH80X", &p), None);
        let every = PlaceholderValues::parse("*=-999; XH80X = -100").unwrap();
        assert_eq!(
            mark_of(row("-999", "", "F"), "VS8", &every),
            Some(Mark::Placeholder)
        );
        assert_eq!(
            mark_of(row("-100", "", "F"), "XH80X", &every),
            Some(Mark::Placeholder)
        );
        assert_eq!(mark_of(row("-100", "", "F"), "VS8", &every), None);
        // Text values are never placeholders.
        let text = Row {
            value_type: "ST",
            ..row("-999", "", "F")
        };
        assert_eq!(mark_of(text, "XH80X", &p), None);
    }

    #[test]
    fn the_setting_reads_and_refuses() {
        assert!(PlaceholderValues::parse("off").unwrap().is_empty());
        assert!(PlaceholderValues::parse("").unwrap().is_empty());
        assert!(PlaceholderValues::parse("XH80X").is_err());
        assert!(PlaceholderValues::parse("=-999").is_err());
        assert!(PlaceholderValues::parse("XH80X=abc").is_err());
        assert!(PlaceholderValues::parse("XH80X=inf").is_err());
        assert_eq!(
            PlaceholderValues::parse("A=1;B=2,3").unwrap().entries,
            vec![
                ("A".to_owned(), vec![1.0]),
                ("B".to_owned(), vec![2.0, 3.0])
            ]
        );
    }

    #[test]
    fn names_round_trip() {
        for mark in [
            Mark::Demo,
            Mark::NotObtained,
            Mark::Empty,
            Mark::Placeholder,
        ] {
            assert_eq!(Mark::from_name(mark.name()), Some(mark));
            assert_eq!(
                serde_json::to_string(&mark).unwrap(),
                format!("\"{}\"", mark.name())
            );
        }
        assert_eq!(Mark::from_name("other"), None);
    }
}
