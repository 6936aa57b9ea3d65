//! The bedside vitals hl7-ihp knows by name: IHE PCD-01 / ISO/IEEE 11073 MDC codes, their
//! units, containment (OBX-4) and normal ranges. The simulator sends them, the demo's table
//! shows them; the API and the dashboard know them (and their LOINC codes) through
//! `documents::reading`.

/// One vital sign as monitors report it.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Vital {
    /// The MDC code (OBX-3.1).
    pub code: &'static str,
    /// The MDC reference id (OBX-3.2).
    pub refid: &'static str,
    /// A short title for tables and tiles.
    pub title: &'static str,
    /// OBX-6 as monitors send it: `code^MDC_DIM_…^MDC`.
    pub units: &'static str,
    /// OBX-4, the place in the device's containment tree.
    pub containment: &'static str,
    /// The normal range; values outside it are flagged `H` or `L`.
    pub normal: (f64, f64),
    /// The values a living patient can have (and a monitor reports): the simulator stays
    /// inside them, so that an abnormal value is still a possible one (no SpO2 of 101).
    pub possible: (f64, f64),
    /// Decimals shown.
    pub decimals: usize,
}

/// Heart rate, SpO2, respiration rate, non-invasive blood pressure (systolic, diastolic,
/// mean) and temperature, in the order tables show them.
pub const VITALS: [Vital; 7] = [
    Vital {
        code: "147842",
        refid: "MDC_ECG_HEART_RATE",
        title: "HR",
        units: "264864^MDC_DIM_BEAT_PER_MIN^MDC",
        containment: "1.1.1.1",
        normal: (50.0, 120.0),
        possible: (20.0, 250.0),
        decimals: 0,
    },
    Vital {
        code: "150456",
        refid: "MDC_PULS_OXIM_SAT_O2",
        title: "SpO2",
        units: "262688^MDC_DIM_PERCENT^MDC",
        containment: "1.2.1.1",
        normal: (90.0, 100.0),
        possible: (50.0, 100.0),
        decimals: 0,
    },
    Vital {
        code: "151562",
        refid: "MDC_RESP_RATE",
        title: "RR",
        units: "264928^MDC_DIM_RESP_PER_MIN^MDC",
        containment: "1.3.1.1",
        normal: (8.0, 25.0),
        possible: (4.0, 60.0),
        decimals: 0,
    },
    Vital {
        code: "150021",
        refid: "MDC_PRESS_BLD_NONINV_SYS",
        title: "SYS",
        units: "266016^MDC_DIM_MMHG^MDC",
        containment: "1.4.1.1",
        normal: (90.0, 140.0),
        possible: (60.0, 250.0),
        decimals: 0,
    },
    Vital {
        code: "150022",
        refid: "MDC_PRESS_BLD_NONINV_DIA",
        title: "DIA",
        units: "266016^MDC_DIM_MMHG^MDC",
        containment: "1.4.1.2",
        normal: (60.0, 90.0),
        possible: (30.0, 150.0),
        decimals: 0,
    },
    Vital {
        code: "150023",
        refid: "MDC_PRESS_BLD_NONINV_MEAN",
        title: "MAP",
        units: "266016^MDC_DIM_MMHG^MDC",
        containment: "1.4.1.3",
        normal: (70.0, 105.0),
        possible: (40.0, 180.0),
        decimals: 0,
    },
    Vital {
        code: "150344",
        refid: "MDC_TEMP",
        title: "TEMP",
        units: "268192^MDC_DIM_DEGC^MDC",
        containment: "1.5.1.1",
        normal: (36.0, 38.0),
        possible: (33.0, 42.0),
        decimals: 1,
    },
];

/// MDC codes of the non-invasive blood pressure, whose three values must agree: the mean
/// arterial pressure is about DIA + (SYS − DIA) / 3.
pub const NIBP_SYSTOLIC: &str = "150021";
/// See [`NIBP_SYSTOLIC`].
pub const NIBP_DIASTOLIC: &str = "150022";
/// See [`NIBP_SYSTOLIC`].
pub const NIBP_MEAN: &str = "150023";

/// The vital with this MDC code.
pub fn by_code(code: &str) -> Option<&'static Vital> {
    VITALS.iter().find(|vital| vital.code == code)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn normal_ranges_lie_within_the_possible_ones() {
        for vital in &VITALS {
            let (low, high) = vital.normal;
            let (least, most) = vital.possible;
            assert!(least < low && low < high && high <= most, "{}", vital.title);
        }
        for code in [NIBP_SYSTOLIC, NIBP_DIASTOLIC, NIBP_MEAN] {
            assert!(by_code(code).is_some(), "{code}");
        }
    }
}
