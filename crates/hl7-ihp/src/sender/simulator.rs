//! The device simulator's messages: the prototype's three glucose messages (built into the
//! binary from `samples/`), bedside monitors speaking IHE PCD-01, or the user's own files.
//!
//! Each [`Source`] yields the next message of one connection; every message carries a fresh,
//! unique MSH-10 (except `--verbatim` and files, which are sent as they are).

use std::fmt::Write as _;

use crate::documents::vitals::{NIBP_DIASTOLIC, NIBP_MEAN, NIBP_SYSTOLIC, VITALS, Vital};
use crate::ids::base36;

/// The prototype's three ORU^R01 glucose messages, byte for byte.
pub const PROTOTYPE: [&[u8]; 3] = [
    include_bytes!("../../../../samples/prototype-1.hl7"),
    include_bytes!("../../../../samples/prototype-2.hl7"),
    include_bytes!("../../../../samples/prototype-3.hl7"),
];

/// One message to send and what its answer must say.
#[derive(Clone, Debug)]
pub struct Outgoing {
    /// The message bytes (not framed).
    pub bytes: Vec<u8>,
    /// Its MSH-10: MSA-2 of the ACK must match it.
    pub control_id: String,
    /// False when MSH-15/16 ask for no ACK on success (then nothing is awaited).
    pub expects_ack: bool,
    /// A short label for the per-message line (`ORU^R01 glucose 182`).
    pub label: String,
}

impl Outgoing {
    /// Reads MSH-10 and the ACK request from the bytes.
    pub fn from_bytes(bytes: Vec<u8>, label: String) -> Outgoing {
        let (control_id, expects_ack) = match hl7::parse_batch(&bytes) {
            Ok(batch) => match batch.messages().first() {
                Some(message) => {
                    let header = hl7::extract::extract(message).header;
                    let expects = hl7::ack::choose_ack(
                        &header.accept_ack_type,
                        &header.application_ack_type,
                        hl7::ack::Outcome::Accept,
                        hl7::ack::AckMode::Auto,
                    )
                    .is_some();
                    (header.control_id.into_owned(), expects)
                }
                None => (String::new(), true),
            },
            // An unreadable file is still sent; the receiver answers with a reject.
            Err(_) => (String::new(), true),
        };
        Outgoing {
            bytes,
            control_id,
            expects_ack,
            label,
        }
    }
}

/// What to send.
#[derive(Clone, Debug)]
pub enum Scenario {
    /// The prototype's three messages in order, in a loop.
    Seed {
        /// Send the bytes unchanged (the prototype's shared control id and old time).
        verbatim: bool,
    },
    /// `patients` bedside monitors, one per patient.
    Vitals {
        /// How many patients (monitors) in all connections together.
        patients: usize,
    },
    /// The user's files, in order, in a loop, as they are.
    Files(Vec<(String, Vec<u8>)>),
    /// `devices` bedside monitors whose messages name no patient (`send --no-patient`):
    /// an empty PID segment, PV1-3 and OBX-18's EUI-64, no ADT, as an XH80X sends.
    Unassigned {
        /// How many monitors in all connections together.
        devices: usize,
    },
}

/// The messages of one connection.
#[derive(Debug)]
pub struct Source {
    scenario: Scenario,
    /// Makes control ids unique across runs and connections.
    prefix: String,
    n_sent: u64,
    monitors: Vec<Monitor>,
    /// The seed scenario's three messages or the user's files, read once: sent as they
    /// are, or (seed) the template whose MSH-7 and MSH-10 each send rewrites.
    fixed: Vec<Outgoing>,
    rng: Rng,
    clock: Clock,
    /// `send --alarm`: every this many messages of a vitals connection is an alarm report
    /// (`ORU^R40`) of the monitor whose turn it is ([`super::alarms`]); 0: none.
    alarm_every: u64,
    /// `--demo`, `--placeholders`, and the numeric rows seen so far.
    values: (super::values::ValueFlags, u64),
}

/// Now as an HL7 DTM with the local offset, formatted once a second: the load generator
/// sends thousands of messages a second and should spend its time sending them.
#[derive(Debug, Default)]
struct Clock {
    second: i64,
    text: String,
}

impl Clock {
    fn now(&mut self) -> &str {
        let now = jiff::Timestamp::now();
        if self.text.is_empty() || now.as_second() != self.second {
            self.second = now.as_second();
            self.text = now
                .to_zoned_datetime(jiff::tz::TimeZone::system())
                .strftime("%Y%m%d%H%M%S%z")
                .to_string();
        }
        &self.text
    }
}

impl Source {
    /// The source of connection `index` of `n_connections`; `run_id` distinguishes runs.
    pub fn new(scenario: Scenario, run_id: &str, index: usize, n_connections: usize) -> Source {
        let mut rng = Rng::new(
            0x9E37_79B9_7F4A_7C15 ^ (index as u64 + 1).wrapping_mul(0x2545_F491_4F6C_DD1D),
        );
        let monitors = match &scenario {
            Scenario::Vitals { patients } => (0..*patients)
                .filter(|p| p % n_connections.max(1) == index)
                .map(|p| Monitor::new(p, &mut rng))
                .collect(),
            Scenario::Unassigned { devices } => (0..*devices)
                .filter(|p| p % n_connections.max(1) == index)
                .map(|p| Monitor {
                    no_patient: true,
                    // Already "admitted": a device without a patient sends no ADT.
                    admitted: true,
                    ..Monitor::new(p, &mut rng)
                })
                .collect(),
            _ => Vec::new(),
        };
        let fixed = match &scenario {
            Scenario::Seed { .. } => PROTOTYPE
                .iter()
                .zip(["182", "180", "184"])
                .map(|(bytes, value)| {
                    Outgoing::from_bytes(bytes.to_vec(), format!("ORU^R01 glucose {value}"))
                })
                .collect(),
            Scenario::Files(files) => files
                .iter()
                .map(|(name, bytes)| Outgoing::from_bytes(bytes.clone(), name.clone()))
                .collect(),
            Scenario::Vitals { .. } | Scenario::Unassigned { .. } => Vec::new(),
        };
        Source {
            scenario,
            prefix: format!("{run_id}{}", base36(index as u64)),
            n_sent: 0,
            monitors,
            fixed,
            rng,
            clock: Clock::default(),
            alarm_every: 0,
            values: Default::default(),
        }
    }

    /// With `every` > 0, every `every`-th message of a vitals connection is an `ORU^R40`
    /// alarm report for the same patient (`send --alarm`).
    pub fn with_alarms(mut self, every: u64) -> Source {
        self.alarm_every = every;
        self
    }

    /// The same source, its messages' values rewritten as `flags` ask
    /// ([`super::values::rewrite`]).
    pub fn with_values(mut self, flags: super::values::ValueFlags) -> Source {
        self.values.0 = flags;
        self
    }

    /// True when this connection has something to send (a vitals connection may have no
    /// patient when there are more connections than patients).
    pub fn is_empty(&self) -> bool {
        matches!(
            self.scenario,
            Scenario::Vitals { .. } | Scenario::Unassigned { .. }
        ) && self.monitors.is_empty()
    }

    /// The next message.
    pub fn next_message(&mut self) -> Outgoing {
        let mut outgoing = self.next_as_made();
        let (flags, counter) = &mut self.values;
        if flags.demo || flags.placeholders {
            outgoing.bytes = super::values::rewrite(&outgoing.bytes, *flags, counter);
        }
        outgoing
    }

    /// The next message before `--demo`/`--placeholders`.
    fn next_as_made(&mut self) -> Outgoing {
        let n = self.n_sent;
        self.n_sent += 1;
        let control_id = format!("{}-{}", self.prefix, base36(n));
        match &self.scenario {
            Scenario::Seed { verbatim: false } => {
                let template = &self.fixed[(n % 3) as usize];
                // Only MSH-7 and MSH-10 change: the ACK request stays the template's.
                Outgoing {
                    bytes: replace_msh_fields(
                        &template.bytes,
                        &[(7, &hl7_now()), (10, &control_id)],
                    ),
                    control_id,
                    expects_ack: template.expects_ack,
                    label: template.label.clone(),
                }
            }
            Scenario::Seed { verbatim: true } | Scenario::Files(_) => {
                self.fixed[(n % self.fixed.len() as u64) as usize].clone()
            }
            Scenario::Vitals { .. } | Scenario::Unassigned { .. } => {
                let index = (n % self.monitors.len().max(1) as u64) as usize;
                let rng = &mut self.rng;
                let Some(monitor) = self.monitors.get_mut(index) else {
                    return Outgoing::from_bytes(Vec::new(), String::new());
                };
                let alarm = self.alarm_every > 0
                    && monitor.admitted
                    && (n + 1).is_multiple_of(self.alarm_every);
                let (bytes, label) = if alarm {
                    monitor.alarm_message(&control_id, self.clock.now())
                } else {
                    monitor.next_message(&control_id, self.clock.now(), rng)
                };
                // What `from_bytes` would read back (a test checks it): MSH-15 AL asks
                // for an ACK.
                Outgoing {
                    bytes,
                    control_id,
                    expects_ack: true,
                    label,
                }
            }
        }
    }
}

/// Rewrites MSH fields (n ≥ 3) of a message, keeping every other byte.
pub fn replace_msh_fields(message: &[u8], fields: &[(usize, &str)]) -> Vec<u8> {
    let Ok(parsed) = hl7::parse(message) else {
        return message.to_vec();
    };
    let Some(msh) = parsed.segment_at(0) else {
        return message.to_vec();
    };
    let base = message.as_ptr() as usize;
    let mut edits: Vec<(usize, usize, &str)> = fields
        .iter()
        .filter(|(n, _)| *n >= 3 && *n <= msh.field_count())
        .map(|(n, text)| {
            let raw = msh.field(*n).raw();
            let start = raw.as_ptr() as usize - base;
            (start, start + raw.len(), *text)
        })
        .collect();
    edits.sort_by_key(|e| e.0);
    let mut out = Vec::with_capacity(message.len() + 32);
    let mut at = 0;
    for (start, end, text) in edits {
        out.extend_from_slice(&message[at..start]);
        out.extend_from_slice(text.as_bytes());
        at = end;
    }
    out.extend_from_slice(&message[at..]);
    out
}

/// Now as an HL7 DTM without an offset, as the prototype's messages carry it.
pub fn hl7_now() -> String {
    jiff::ZonedDateTime::now()
        .strftime("%Y%m%d%H%M%S")
        .to_string()
}

/// A number with a fixed count of decimals (at most 3), formatted from an integer: the
/// standard library's exact float formatting is slow enough to show in a load test.
struct Fixed(f64, usize);

impl std::fmt::Display for Fixed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let decimals = self.1.min(3);
        let scale = 10_i64.pow(decimals as u32);
        let scaled = (self.0 * scale as f64).round() as i64;
        let sign = if scaled < 0 { "-" } else { "" };
        let (whole, fraction) = (
            scaled.unsigned_abs() / scale as u64,
            scaled.unsigned_abs() % scale as u64,
        );
        if decimals == 0 {
            write!(f, "{sign}{whole}")
        } else {
            write!(f, "{sign}{whole}.{fraction:0decimals$}")
        }
    }
}

/// A small deterministic generator (xorshift64*): values drift the same way in every run.
#[derive(Clone, Debug)]
pub struct Rng(u64);

impl Rng {
    /// Seeded; zero is replaced by a constant.
    pub fn new(seed: u64) -> Rng {
        Rng(if seed == 0 {
            0x853C_49E6_748F_EA9B
        } else {
            seed
        })
    }

    /// The next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    /// Uniform in [0, 1).
    pub fn unit(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }
}

const GIVEN: [&str; 12] = [
    "Åsa", "Ben", "Chiara", "Dmitri", "Emeka", "Farah", "Gustav", "Hana", "Inès", "Jonas", "Kaito",
    "Lena",
];
const FAMILY: [&str; 12] = [
    "Lindqvist",
    "Okafor",
    "Rossi",
    "Ivanov",
    "Nwosu",
    "Haddad",
    "Berg",
    "Sato",
    "Dubois",
    "Müller",
    "Tanaka",
    "Novak",
];

/// One vital sign of a monitor: what it is, and its current value.
#[derive(Clone, Debug)]
struct Metric {
    vital: &'static Vital,
    value: f64,
}

impl Metric {
    /// The next reading: a random walk around the middle of the normal range and now and
    /// then a value outside it, as real patients have; always a possible value, and rounded
    /// to the decimals sent, so that its flag is the flag of what the receiver reads.
    fn next(&mut self, rng: &mut Rng) -> f64 {
        let (low, high) = self.vital.normal;
        let span = high - low;
        let middle = (low + high) / 2.0;
        self.value += (rng.unit() - 0.5) * span * 0.04 + (middle - self.value) * 0.05;
        let mut value = self.value;
        if rng.unit() < 0.03 {
            value = if rng.unit() < 0.5 {
                low - span * 0.1
            } else {
                high + span * 0.1
            };
        }
        let (least, most) = self.vital.possible;
        rounded(value.clamp(least, most), self.vital.decimals)
    }
}

/// `value` with `decimals` decimals, as [`Fixed`] prints it.
fn rounded(value: f64, decimals: usize) -> f64 {
    let scale = 10_f64.powi(decimals.min(3) as i32);
    (value * scale).round() / scale
}

/// The smallest difference between systolic and diastolic pressure the monitors send.
const MIN_PULSE_PRESSURE: f64 = 20.0;

/// Makes the three blood pressure values one measurement: the diastolic below the systolic,
/// and the mean computed from the two as sent (DIA + (SYS − DIA) / 3) instead of drifting
/// on its own (a mean of 67 beside 114/72).
fn agree_blood_pressure(metrics: &[Metric], values: &mut [f64]) {
    let at = |code: &str| metrics.iter().position(|m| m.vital.code == code);
    let (Some(sys), Some(dia), Some(mean)) = (at(NIBP_SYSTOLIC), at(NIBP_DIASTOLIC), at(NIBP_MEAN))
    else {
        return;
    };
    values[dia] = values[dia].min(values[sys] - MIN_PULSE_PRESSURE);
    let mean_vital = metrics[mean].vital;
    values[mean] = rounded(
        values[dia] + (values[sys] - values[dia]) / 3.0,
        mean_vital.decimals,
    );
}

/// A bedside monitor bound to one patient and bed.
#[derive(Clone, Debug)]
struct Monitor {
    eui64: String,
    bed: String,
    mrn: String,
    given: &'static str,
    family: &'static str,
    birth_date: String,
    sex: &'static str,
    admitted: bool,
    /// An empty PID (no PID-3), as a monitor without an admitted patient sends.
    no_patient: bool,
    metrics: Vec<Metric>,
    /// Alarm reports sent (`send --alarm`).
    n_alarms: u64,
}

impl Monitor {
    fn new(patient: usize, rng: &mut Rng) -> Monitor {
        Monitor {
            eui64: format!("0012A3FFFE{:06X}", 0x45_0000 + patient),
            bed: format!("BED{:02}", patient + 1),
            mrn: format!("MRN{:05}", patient + 1),
            given: GIVEN[patient % GIVEN.len()],
            family: FAMILY[(patient / GIVEN.len() + patient) % FAMILY.len()],
            birth_date: format!(
                "19{:02}{:02}{:02}",
                30 + rng.next_u64() % 65,
                1 + rng.next_u64() % 12,
                1 + rng.next_u64() % 28
            ),
            sex: if patient.is_multiple_of(2) { "F" } else { "M" },
            admitted: false,
            no_patient: false,
            n_alarms: 0,
            metrics: VITALS
                .iter()
                .map(|vital| Metric {
                    vital,
                    value: (vital.normal.0 + vital.normal.1) / 2.0,
                })
                .collect(),
        }
    }

    fn header(&self, kind: &str, control_id: &str, now: &str) -> String {
        format!(
            "MSH|^~\\&|MONITOR^{eui}^EUI-64|ICU|HL7IHP|IHP|{now}||{kind}|{control_id}|P|2.6|||AL|NE||UNICODE UTF-8|||IHE_PCD_001^IHE PCD^1.3.6.1.4.1.19376.1.6.1.1.1^ISO\r",
            eui = self.eui64
        )
    }

    fn patient_segments(&self) -> String {
        if self.no_patient {
            return format!("PID|||\rPV1||I|ICU^^{bed}^HOSP\r", bed = self.bed);
        }
        format!(
            "PID|||{mrn}^^^HOSP^MR||{family}^{given}||{dob}|{sex}\rPV1||I|ICU^^{bed}^HOSP\r",
            mrn = self.mrn,
            family = self.family,
            given = self.given,
            dob = self.birth_date,
            sex = self.sex,
            bed = self.bed
        )
    }

    /// An `ORU^R40` alarm report for this monitor's patient ([`super::alarms`]).
    fn alarm_message(&mut self, control_id: &str, now: &str) -> (Vec<u8>, String) {
        let head = format!(
            "{}{}",
            self.header("ORU^R40^ORU_R40", control_id, now),
            self.patient_segments()
        );
        let text = super::alarms::alarm_report(&head, control_id, &self.eui64, now, self.n_alarms);
        self.n_alarms += 1;
        (text.into_bytes(), format!("ORU^R40 alarm {}", self.bed))
    }

    /// An ADT^A01 the first time, then ORU^R01 with drifting values.
    fn next_message(&mut self, control_id: &str, now: &str, rng: &mut Rng) -> (Vec<u8>, String) {
        if !self.admitted {
            self.admitted = true;
            let text = format!(
                "{}EVN|A01|{now}\r{}",
                self.header("ADT^A01^ADT_A01", control_id, now),
                self.patient_segments()
            );
            return (text.into_bytes(), format!("ADT^A01 admit {}", self.bed));
        }
        let mut text = String::with_capacity(1536);
        text.push_str(&self.header("ORU^R01^ORU_R01", control_id, now));
        text.push_str(&self.patient_segments());
        let _ = write!(
            text,
            "OBR|1|{control_id}^MONITOR|{eui}^MONITOR^{eui}^EUI-64|69965^MDC_DEV_MON_PHYSIO_MULTI_PARAM_MDS^MDC|||{now}\r",
            eui = self.eui64
        );
        let mut values: Vec<f64> = self.metrics.iter_mut().map(|m| m.next(rng)).collect();
        agree_blood_pressure(&self.metrics, &mut values);
        for (n, (metric, &value)) in self.metrics.iter().zip(&values).enumerate() {
            let (low, high) = metric.vital.normal;
            let flag = if value < low {
                "L"
            } else if value > high {
                "H"
            } else {
                "N"
            };
            let _ = write!(
                text,
                "OBX|{set}|NM|{code}^{refid}^MDC|{containment}|{value}|{units}|{low}-{high}|{flag}|||R|||{now}||||{eui}^EUI-64\r",
                set = n + 1,
                code = metric.vital.code,
                refid = metric.vital.refid,
                containment = metric.vital.containment,
                value = Fixed(value, metric.vital.decimals),
                units = metric.vital.units,
                low = Fixed(low, metric.vital.decimals),
                high = Fixed(high, metric.vital.decimals),
                eui = self.eui64,
            );
        }
        let label = format!("ORU^R01 vitals {}", self.bed);
        (text.into_bytes(), label)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fixed_numbers_match_the_standard_formatting() {
        for (value, decimals) in [
            (36.95, 1),
            (0.04, 1),
            (-0.04, 1),
            (-1.25, 2),
            (97.5, 0),
            (119.999, 2),
            (7.0, 3),
        ] {
            assert_eq!(
                Fixed(value, decimals).to_string(),
                format!("{value:.decimals$}").replace("-0.0", "0.0"),
                "{value} with {decimals}"
            );
        }
    }

    #[test]
    fn seed_scenario_rewrites_control_id_and_time_only() {
        let mut source = Source::new(Scenario::Seed { verbatim: false }, "RUN001", 0, 1);
        let first = source.next_message();
        let message = hl7::parse(&first.bytes).unwrap();
        assert_eq!(message.get("MSH-10").unwrap(), first.control_id.as_bytes());
        assert_eq!(message.get("OBX-5.2").unwrap(), b"182");
        assert_ne!(message.get("MSH-7").unwrap(), b"200202150930");
        assert_eq!(message.get("MSH-2").unwrap(), b"^~");
        let second = source.next_message();
        assert_ne!(first.control_id, second.control_id);
        assert_eq!(
            hl7::parse(&second.bytes).unwrap().get("OBX-5.2").unwrap(),
            b"180"
        );
        let original = hl7::parse(PROTOTYPE[0]).unwrap();
        // Every segment but MSH is byte for byte the prototype's.
        for (a, b) in message.segments().zip(original.segments()).skip(1) {
            assert_eq!(a.raw(), b.raw());
        }
    }

    #[test]
    fn verbatim_sends_the_prototype_bytes() {
        let mut source = Source::new(Scenario::Seed { verbatim: true }, "RUN001", 0, 1);
        for expected in PROTOTYPE.iter().cycle().take(4) {
            assert_eq!(source.next_message().bytes, *expected);
        }
    }

    #[test]
    fn vitals_admit_then_report_seven_mdc_metrics() {
        let mut source = Source::new(Scenario::Vitals { patients: 3 }, "RUN002", 0, 2);
        // Connection 0 of 2 serves patients 0 and 2.
        let admit = source.next_message();
        assert!(admit.label.starts_with("ADT^A01"));
        let _ = source.next_message();
        let report = source.next_message();
        let message = hl7::parse(&report.bytes).unwrap();
        assert!(report.expects_ack);
        // Built without reading the bytes back: the same as reading them.
        for sent in [&admit, &report] {
            let read = Outgoing::from_bytes(sent.bytes.clone(), String::new());
            assert_eq!(
                (&read.control_id, read.expects_ack),
                (&sent.control_id, sent.expects_ack)
            );
        }
        assert_eq!(message.get("MSH-9").unwrap(), b"ORU^R01^ORU_R01");
        assert_eq!(message.get("MSH-12").unwrap(), b"2.6");
        assert_eq!(message.segments_by_id("OBX").count(), 7);
        let extract = hl7::extract::extract(&message);
        assert!(
            extract
                .observations
                .iter()
                .all(|o| o.code_system == "MDC" && o.numeric.is_some())
        );
        assert!(
            extract
                .observations
                .iter()
                .all(|o| o.time.is_some_and(|t| t.offset().is_some()))
        );
        assert_eq!(extract.observations[0].equipment.len(), 16);
        assert!(
            (700..1400).contains(&report.bytes.len()),
            "{}",
            report.bytes.len()
        );
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(48))]

        /// Every monitor's values are ones a patient can have, and their flags agree with
        /// the normal ranges of `documents::vitals`.
        #[test]
        fn vitals_stay_physiological(index in 0usize..10_000) {
            let mut source = Source::new(Scenario::Vitals { patients: index + 1 }, "RUN004", index, index + 1);
            let _ = source.next_message();
            for _ in 0..200 {
                let message = source.next_message();
                let parsed = hl7::parse(&message.bytes).unwrap();
                let mut by_refid = std::collections::BTreeMap::new();
                for observation in hl7::extract::extract(&parsed).observations {
                    let vital = crate::documents::vitals::by_code(&observation.code).unwrap();
                    let value = observation.numeric.unwrap();
                    let (low, high) = vital.normal;
                    let expected = if value < low { "L" } else if value > high { "H" } else { "N" };
                    proptest::prop_assert_eq!(
                        observation.abnormal_flags.as_ref(), expected,
                        "{} {} against {:?}", vital.title, value, vital.normal
                    );
                    let (least, most) = vital.possible;
                    proptest::prop_assert!(
                        (least..=most).contains(&value),
                        "{} {} outside {:?}", vital.title, value, vital.possible
                    );
                    by_refid.insert(vital.refid, value);
                }
                let spo2 = by_refid["MDC_PULS_OXIM_SAT_O2"];
                proptest::prop_assert!((0.0..=100.0).contains(&spo2), "SpO2 {}", spo2);
                let sys = by_refid["MDC_PRESS_BLD_NONINV_SYS"];
                let dia = by_refid["MDC_PRESS_BLD_NONINV_DIA"];
                let map = by_refid["MDC_PRESS_BLD_NONINV_MEAN"];
                proptest::prop_assert!(sys > dia, "{}/{}", sys, dia);
                proptest::prop_assert!(
                    (map - (dia + (sys - dia) / 3.0)).abs() <= 1.0,
                    "MAP {} beside {}/{}", map, sys, dia
                );
            }
        }
    }

    #[test]
    fn values_drift_and_sometimes_leave_the_normal_range() {
        let mut source = Source::new(Scenario::Vitals { patients: 1 }, "RUN003", 0, 1);
        let _ = source.next_message();
        let mut flags = std::collections::BTreeSet::new();
        let mut heart_rates = std::collections::BTreeSet::new();
        for _ in 0..400 {
            let message = source.next_message();
            let parsed = hl7::parse(&message.bytes).unwrap();
            for observation in hl7::extract::extract(&parsed).observations {
                flags.insert(observation.abnormal_flags.into_owned());
                if observation.code == "147842" {
                    heart_rates.insert(observation.value.into_owned());
                }
            }
        }
        assert!(
            flags.contains("N") && (flags.contains("H") || flags.contains("L")),
            "{flags:?}"
        );
        assert!(heart_rates.len() > 5);
    }
}
