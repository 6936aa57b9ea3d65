//! One observation as the API and the dashboard show it: which bedside vital it is, whether
//! its value can be shown as a number at all (missing, invalid, `NAV`), and whether it is
//! abnormal, with the limit it crossed (`> 120`). Decided here once, from OBX-2, OBX-5,
//! OBX-7, OBX-8 and OBX-11, so the ward view, the patient view and the event stream agree.

use serde::Serialize;

use crate::marks::Mark;
use crate::store::{ObservationData, utc_text};

/// The bedside vitals the ward view lays out, whatever code system names them.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum VitalKind {
    /// Heart rate (or pulse rate).
    HeartRate,
    /// Oxygen saturation by pulse oximetry.
    Spo2,
    /// Respiration rate.
    RespRate,
    /// Non-invasive blood pressure, systolic.
    NibpSys,
    /// Non-invasive blood pressure, diastolic.
    NibpDia,
    /// Non-invasive blood pressure, mean.
    NibpMean,
    /// Body temperature.
    Temperature,
}

/// The codes each vital is sent with: ISO/IEEE 11073 MDC (IHE PCD-01) and LOINC.
const CODES: &[(&str, VitalKind)] = &[
    ("147842", VitalKind::HeartRate), // MDC_ECG_HEART_RATE
    ("149530", VitalKind::HeartRate), // MDC_PULS_OXIM_PULS_RATE
    ("8867-4", VitalKind::HeartRate),
    ("150456", VitalKind::Spo2), // MDC_PULS_OXIM_SAT_O2
    ("59408-5", VitalKind::Spo2),
    ("2708-6", VitalKind::Spo2),
    ("151562", VitalKind::RespRate), // MDC_RESP_RATE
    ("151594", VitalKind::RespRate), // MDC_CO2_RESP_RATE
    ("9279-1", VitalKind::RespRate),
    ("150021", VitalKind::NibpSys), // MDC_PRESS_BLD_NONINV_SYS
    ("8480-6", VitalKind::NibpSys),
    ("150022", VitalKind::NibpDia), // MDC_PRESS_BLD_NONINV_DIA
    ("8462-4", VitalKind::NibpDia),
    ("150023", VitalKind::NibpMean), // MDC_PRESS_BLD_NONINV_MEAN
    ("8478-0", VitalKind::NibpMean),
    ("150344", VitalKind::Temperature), // MDC_TEMP
    ("150364", VitalKind::Temperature), // MDC_TEMP_BODY
    ("8310-5", VitalKind::Temperature),
    ("8331-1", VitalKind::Temperature),
];

impl VitalKind {
    /// The vital an OBX-3.1 code names, if it is one of the bedside vitals.
    pub fn of_code(code: &str) -> Option<VitalKind> {
        CODES
            .iter()
            .find(|(known, _)| *known == code)
            .map(|(_, kind)| *kind)
    }
}

/// Whether a value can be shown as what the device measured.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum ValueState {
    /// A value to show.
    Ok,
    /// No value: OBX-5 empty, `NAV`, result status `X` (cannot be obtained) or `N`
    /// (not asked for), or a value marked as no measurement (demo mode, a placeholder:
    /// `crate::marks`).
    Missing,
    /// A value not to trust: result status `W` (wrong), or a numeric type whose value is
    /// not a number.
    Invalid,
}

/// How abnormal a value is.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum AlertLevel {
    /// Outside the normal range (`H`, `L`, `A`, or outside OBX-7 without a flag).
    Warning,
    /// Critically abnormal (`HH`, `LL`, `AA`, or off scale `>`/`<`).
    Critical,
}

/// An abnormal value and the limit it crossed.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub struct Alert {
    /// How abnormal.
    pub level: AlertLevel,
    /// The limit crossed, `> 120` or `< 90`, when OBX-7 gives it; else the flag.
    pub text: String,
}

/// What [`assess`] makes of one observation.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Assessment {
    /// The bedside vital, if it is one.
    pub vital: Option<VitalKind>,
    /// Whether the value can be shown.
    pub state: ValueState,
    /// Whether it is abnormal; only for values that are [`ValueState::Ok`].
    pub alert: Option<Alert>,
}

/// Classifies one observation.
pub fn assess(observation: &ObservationData) -> Assessment {
    let vital = VitalKind::of_code(&observation.code);
    let state = state_of(observation);
    let alert = (state == ValueState::Ok)
        .then(|| alert_of(observation))
        .flatten();
    Assessment {
        vital,
        state,
        alert,
    }
}

fn state_of(observation: &ObservationData) -> ValueState {
    let value = observation.value.trim();
    let status = observation.status.trim();
    if status.eq_ignore_ascii_case("W") {
        return ValueState::Invalid;
    }
    if observation.mark.is_some()
        || value.is_empty()
        || value.eq_ignore_ascii_case("NAV")
        || status.eq_ignore_ascii_case("X")
        || status.eq_ignore_ascii_case("N")
        || observation
            .abnormal_flags
            .split('~')
            .any(|flag| flag.trim().eq_ignore_ascii_case("NAV"))
    {
        return ValueState::Missing;
    }
    let numeric_type = matches!(observation.value_type.trim(), "NM" | "SN");
    if numeric_type && observation.numeric.is_none_or(|n| !n.is_finite()) {
        return ValueState::Invalid;
    }
    ValueState::Ok
}

/// A reference range `low-high` (also `low_high`, `low - high`, `>low`, `<high`) as bounds.
fn range_of(text: &str) -> (Option<f64>, Option<f64>) {
    let text = text.trim();
    let number = |s: &str| s.trim().parse::<f64>().ok().filter(|n| n.is_finite());
    if let Some(rest) = text.strip_prefix('>') {
        return (number(rest.trim_start_matches('=')), None);
    }
    if let Some(rest) = text.strip_prefix('<') {
        return (None, number(rest.trim_start_matches('=')));
    }
    // The first `-` or `_` after the first character separates the bounds, so a negative
    // low bound (`-5-5`) still reads.
    let split = text
        .char_indices()
        .skip(1)
        .find(|(_, c)| *c == '-' || *c == '_')
        .map(|(i, _)| i);
    match split {
        Some(i) => (number(&text[..i]), number(&text[i + 1..])),
        None => (None, None),
    }
}

fn format_limit(limit: f64) -> String {
    if limit.fract() == 0.0 && limit.abs() < 1e15 {
        format!("{limit:.0}")
    } else {
        format!("{limit}")
    }
}

fn alert_of(observation: &ObservationData) -> Option<Alert> {
    let flags: Vec<String> = observation
        .abnormal_flags
        .split('~')
        .map(|flag| flag.trim().to_ascii_uppercase())
        .filter(|flag| !flag.is_empty())
        .collect();
    let (low, high) = range_of(&observation.reference_range);
    let value = observation.numeric;
    let crossed = |level: AlertLevel, fallback: &str| {
        let text = match value {
            Some(v) if high.is_some_and(|h| v > h) => format!("> {}", format_limit(high?)),
            Some(v) if low.is_some_and(|l| v < l) => format!("< {}", format_limit(low?)),
            _ => fallback.to_owned(),
        };
        Some(Alert { level, text })
    };
    let critical = ["HH", "LL", "AA", ">", "<"];
    let warning = ["H", "L", "A", "HU", "LU", "U", "D", "B", "W"];
    if let Some(flag) = flags.iter().find(|f| critical.contains(&f.as_str())) {
        return crossed(AlertLevel::Critical, flag);
    }
    if let Some(flag) = flags.iter().find(|f| warning.contains(&f.as_str())) {
        return crossed(AlertLevel::Warning, flag);
    }
    // No flag, or only `N`: the reference range still tells.
    let v = value?;
    if flags.iter().all(|f| f != "N") && (high.is_some_and(|h| v > h) || low.is_some_and(|l| v < l))
    {
        return crossed(AlertLevel::Warning, "");
    }
    None
}

/// One observation as the API and the event stream send it.
#[derive(Clone, Debug, PartialEq, Serialize, utoipa::ToSchema)]
pub struct Reading {
    /// OBX-3.1.
    pub code: String,
    /// OBX-3.2.
    pub code_text: String,
    /// OBX-3.3.
    pub code_system: String,
    /// OBX-4.
    pub sub_id: String,
    /// OBX-2.
    pub value_type: String,
    /// OBX-5 as text.
    pub value: String,
    /// OBX-5 as a number, for NM/SN values that are plain numbers.
    #[schema(required = true)]
    pub numeric: Option<f64>,
    /// OBX-6.1.
    pub units: String,
    /// OBX-6.2.
    pub units_text: String,
    /// OBX-7.
    pub reference_range: String,
    /// OBX-8, repetitions joined with `~`.
    pub abnormal_flags: String,
    /// OBX-11.
    pub result_status: String,
    /// The bedside vital this code is, if it is one.
    #[schema(required = true)]
    pub vital: Option<VitalKind>,
    /// Whether the value can be shown.
    pub state: ValueState,
    /// Whether it is abnormal, and the limit crossed.
    #[schema(required = true)]
    pub alert: Option<Alert>,
    /// The observation time as the device gave it (the files' `Timestamp`).
    pub observed_at: String,
    /// When the message arrived, UTC.
    pub received_at: String,
    /// The message it came in.
    pub message_id: i64,
    /// Its OBX's index within the message, from 0.
    pub index: u32,
    /// Why the value is not a measurement (`demo`, `not-obtained`, `empty`,
    /// `placeholder`), then `state` is `missing` and `numeric` null; `null` for a
    /// measurement.
    #[schema(required = true)]
    pub mark: Option<Mark>,
}

impl Reading {
    /// The reading of `observation`, which came in message `message_id` at `received_at`.
    pub fn new(
        observation: &ObservationData,
        message_id: i64,
        received_at: jiff::Timestamp,
    ) -> Reading {
        let assessment = assess(observation);
        Reading {
            code: observation.code.clone(),
            code_text: observation.code_text.clone(),
            code_system: observation.code_system.clone(),
            sub_id: observation.sub_id.clone(),
            value_type: observation.value_type.clone(),
            value: observation.value.clone(),
            numeric: observation.numeric,
            units: observation.units.clone(),
            units_text: observation.units_text.clone(),
            reference_range: observation.reference_range.clone(),
            abnormal_flags: observation.abnormal_flags.clone(),
            result_status: observation.status.clone(),
            vital: assessment.vital,
            state: assessment.state,
            alert: assessment.alert,
            observed_at: observation.observed_at.clone(),
            received_at: utc_text(received_at),
            message_id,
            index: observation.index,
            mark: observation.mark,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn observation(value_type: &str, value: &str, range: &str, flags: &str) -> ObservationData {
        ObservationData {
            index: 0,
            value_type: value_type.into(),
            code: "147842".into(),
            code_text: "MDC_ECG_HEART_RATE".into(),
            code_system: "MDC".into(),
            sub_id: String::new(),
            value: value.into(),
            numeric: value.trim().parse().ok(),
            units: "264864".into(),
            units_text: String::new(),
            reference_range: range.into(),
            abnormal_flags: flags.into(),
            status: "F".into(),
            observed_at: "2026-12-01T12:00:00".into(),
            observed_ms: 0,
            equipment: String::new(),
            mark: None,
        }
    }

    #[test]
    fn a_flagged_value_names_the_limit_it_crossed() {
        let a = assess(&observation("NM", "134", "50-120", "H"));
        assert_eq!(a.vital, Some(VitalKind::HeartRate));
        assert_eq!(a.state, ValueState::Ok);
        assert_eq!(
            a.alert,
            Some(Alert {
                level: AlertLevel::Warning,
                text: "> 120".into()
            })
        );
        let low = assess(&observation("NM", "31", "50_120", "LL"))
            .alert
            .unwrap();
        assert_eq!(
            (low.level, low.text.as_str()),
            (AlertLevel::Critical, "< 50")
        );
    }

    #[test]
    fn a_flag_without_a_range_is_shown_as_the_flag() {
        let a = assess(&observation("NM", "134", "", "H")).alert.unwrap();
        assert_eq!((a.level, a.text.as_str()), (AlertLevel::Warning, "H"));
    }

    #[test]
    fn an_unflagged_value_outside_its_range_is_a_warning() {
        let a = assess(&observation("NM", "36.1", "36.5-37.5", ""))
            .alert
            .unwrap();
        assert_eq!((a.level, a.text.as_str()), (AlertLevel::Warning, "< 36.5"));
        assert_eq!(assess(&observation("NM", "80", "50-120", "")).alert, None);
        assert_eq!(assess(&observation("NM", "80", "50-120", "N")).alert, None);
    }

    #[test]
    fn missing_and_invalid_values_are_never_numbers_nor_alerts() {
        for (value, status, flags) in [("", "F", ""), ("NAV", "F", "H"), ("80", "X", "")] {
            let mut o = observation("NM", value, "50-120", flags);
            o.status = status.into();
            let a = assess(&o);
            assert_eq!(a.state, ValueState::Missing, "{value:?} {status}");
            assert_eq!(a.alert, None);
        }
        let mut wrong = observation("NM", "80", "50-120", "");
        wrong.status = "W".into();
        assert_eq!(assess(&wrong).state, ValueState::Invalid);
        assert_eq!(
            assess(&observation("NM", "eighty", "", "")).state,
            ValueState::Invalid
        );
        assert_eq!(
            assess(&observation("ST", "eighty", "", "")).state,
            ValueState::Ok
        );
    }

    #[test]
    fn loinc_and_mdc_codes_name_the_same_vitals() {
        assert_eq!(VitalKind::of_code("8867-4"), Some(VitalKind::HeartRate));
        assert_eq!(VitalKind::of_code("150021"), Some(VitalKind::NibpSys));
        assert_eq!(VitalKind::of_code("1554-5"), None);
        assert_eq!(range_of("-5-5"), (Some(-5.0), Some(5.0)));
        assert_eq!(range_of(">90"), (Some(90.0), None));
    }
}
