//! `send --alarm`: the simulated monitor's alarm reports, `ORU^R40` shaped like IHE PCD-04
//! (as `samples/devices/masimo-r40-alarm.hl7`): an OBR for the alarm, the event row
//! (`196670^MDC_EVT_LO_VAL_LT_LIM^MDC`, text, priority and kind in OBX-8), the SpO2 that
//! raised it with its limit, and the phase and state rows. Alarms alternate between
//! raised (phase `start`, state `active`) and cleared (phase `end`, state `inactive`).

use std::fmt::Write as _;

/// How often a monitor with `--alarm` sends an alarm report: every this many messages.
pub const ALARM_EVERY: u64 = 10;

/// An `ORU^R40` after `header_and_patient` (MSH with `ORU^R40^ORU_R40`, PID, PV1), the
/// `n`-th alarm of this monitor (from 0).
pub fn alarm_report(
    header_and_patient: &str,
    control_id: &str,
    eui64: &str,
    now: &str,
    n: u64,
) -> String {
    let raised = n.is_multiple_of(2);
    let (phase, state) = if raised {
        ("start", "active")
    } else {
        ("end", "inactive")
    };
    let spo2 = if raised { 86 } else { 93 };
    let mut text = String::with_capacity(1024);
    text.push_str(header_and_patient);
    let _ = write!(
        text,
        "OBR|1|{control_id}^MONITOR|{eui64}-ALM^MONITOR|196616^MDC_EVT_ALARM^MDC|||{now}\r\
         OBX|1|ST|196670^MDC_EVT_LO_VAL_LT_LIM^MDC|1.1.1.150456.1|SPO2 LOW|||PM~SP|||F|||{now}||||{eui64}^EUI-64\r\
         OBX|2|NM|150456^MDC_PULS_OXIM_SAT_O2^MDC|1.1.1.150456.2|{spo2}|262688^MDC_DIM_PERCENT^MDC|90-100|L|||F|||{now}||||{eui64}^EUI-64\r\
         OBX|3|ST|68481^MDC_ATTR_EVENT_PHASE^MDC|1.1.1.150456.3|{phase}||||||F\r\
         OBX|4|ST|68482^MDC_ATTR_ALARM_STATE^MDC|1.1.1.150456.4|{state}||||||F\r\
         OBX|5|ST|68483^MDC_ATTR_ALARM_INACTIVATION_STATE^MDC|1.1.1.150456.5|enabled||||||F\r"
    );
    text
}
