//! The unassigned devices' documents (`--device-files on`): one `device_<id>.json` per
//! device whose messages name no patient (PID-3 empty or absent), in the patient files'
//! shape and layout: `PatientInfo` with its patient keys empty and `Unassigned`,
//! `DeviceID`, `Location` added, then `Records`, newest first, as `--json-fields` says and
//! capped at `--json-max-records` (docs/patient-files.md, "Unassigned devices").
//!
//! Simpler than the patients' JSON files, because devices without a patient are few and
//! their files small: a device's file is always rebuilt from the store
//! ([`crate::store::StoreRead::device_records`], by the `device_key` column), at most once
//! every `--json-min-interval`, written under a temporary name, synced with the others of
//! the flush, then renamed. The output's watermark (`export:devices`) stays before the
//! oldest message not yet in a file, so a restart or a crash rewrites what was pending.
//!
//! No log line names a device or a file.

use std::collections::HashMap;
use std::io;
use std::sync::Arc;
use std::time::Duration;

use tokio::time::Instant;

use super::{Context, Flushed, Folder, NameCase, Sink, device_file_name, record_limit};
use crate::documents::patient::{Fields, render_with_header, write_header};
use crate::store::{
    ChangeCursor, DeviceRecords, FeedMessage, Outcome, PatientData, Store, StoreError,
};

/// Files rewritten in one flush at most; the others wait for the next (bounded work).
const MAX_FILES_PER_FLUSH: usize = 256;

/// A device's pending state.
struct Device {
    /// The oldest message taken and not yet in the file.
    first_pending: Option<i64>,
    last_write: Option<Instant>,
}

/// The `devices` output's sink.
pub(super) struct DeviceSink {
    store: Arc<dyn Store>,
    folder: Arc<Folder>,
    fields: Fields,
    cap: Option<usize>,
    min_interval: Duration,
    name_case: NameCase,
    devices: HashMap<String, Device>,
}

impl DeviceSink {
    pub(super) fn new(context: &Context) -> DeviceSink {
        DeviceSink {
            store: Arc::clone(&context.store),
            folder: Arc::clone(&context.folder),
            fields: context.options.fields,
            cap: record_limit(context.options.max_records),
            min_interval: context.options.min_interval,
            name_case: context.options.name_case,
            devices: HashMap::new(),
        }
    }

    fn due_at(&self, device: &Device) -> Option<Instant> {
        device.first_pending?;
        Some(
            device
                .last_write
                .map_or_else(Instant::now, |at| at + self.min_interval),
        )
    }
}

/// The device a feed message is kept under, when it is an accepted one without a patient.
fn device_of(message: &FeedMessage) -> Option<String> {
    if message.outcome != Outcome::Accept || message.patient.is_some() {
        return None;
    }
    let application = message
        .device
        .as_deref()
        .or(message.sending_application.as_deref())
        .unwrap_or("");
    crate::unassigned::device_key(&message.observations, application)
}

/// The device's document, in the patient files' layout.
pub(crate) fn render_device_document(records: &DeviceRecords, fields: Fields) -> Vec<u8> {
    const TAIL: &[u8] = br#"},"Records":["#;
    let empty = PatientData {
        key: String::new(),
        id: String::new(),
        assigning_authority: String::new(),
        identifiers: String::new(),
        name: String::new(),
        birth_date: String::new(),
        sex: String::new(),
        is_update: false,
    };
    let mut header = Vec::new();
    write_header(&mut header, &empty, fields);
    if header.ends_with(TAIL) {
        header.truncate(header.len() - TAIL.len());
    }
    header.extend_from_slice(br#","Unassigned":true,"DeviceID":"#);
    // Strings and an option of one: serialising to memory cannot fail.
    let _ = serde_json::to_writer(&mut header, &records.device);
    header.extend_from_slice(br#","Location":"#);
    let _ = serde_json::to_writer(&mut header, &records.location);
    header.extend_from_slice(TAIL);
    render_with_header(&header, &records.records, fields)
}

impl Sink for DeviceSink {
    fn take(&mut self, message: &FeedMessage) {
        let Some(id) = device_of(message) else {
            return;
        };
        let device = self.devices.entry(id).or_insert(Device {
            first_pending: None,
            last_write: None,
        });
        device.first_pending.get_or_insert(message.id);
    }

    async fn flush(
        &mut self,
        now: Instant,
        all: bool,
        _read: ChangeCursor,
    ) -> Result<Flushed, StoreError> {
        let mut due: Vec<String> = self
            .devices
            .iter()
            .filter(|(_, d)| d.first_pending.is_some())
            .filter(|(_, d)| all || d.last_write.is_none_or(|at| now >= at + self.min_interval))
            .map(|(id, _)| id.clone())
            .collect();
        due.sort_unstable();
        due.truncate(MAX_FILES_PER_FLUSH);
        let mut flushed = Flushed::default();
        let mut written: Vec<(String, String, String)> = Vec::new();
        for id in due {
            let Some(records) = self.store.device_records(&id, self.cap).await? else {
                // Nothing stored under it (purged meanwhile): nothing to write.
                if let Some(device) = self.devices.get_mut(&id) {
                    device.first_pending = None;
                }
                continue;
            };
            let bytes = render_device_document(&records, self.fields);
            let folder = Arc::clone(&self.folder);
            let result = tokio::task::spawn_blocking(move || folder.write_temp(&bytes))
                .await
                .unwrap_or_else(|_| Err(io::Error::other("file writer task failed")));
            match result {
                Ok((temp, identity)) => {
                    flushed.n_bytes += identity.size();
                    flushed.n_rebuilt += 1;
                    let name = device_file_name(&id, self.name_case);
                    written.push((id, temp, name));
                }
                Err(error) => {
                    let failed = flushed.failed.get_or_insert((0, error));
                    failed.0 += 1;
                    if let Some(device) = self.devices.get_mut(&id) {
                        device.last_write = Some(now);
                    }
                }
            }
        }
        if written.is_empty() {
            return Ok(flushed);
        }
        let folder = Arc::clone(&self.folder);
        let names: Vec<(String, String)> = written
            .iter()
            .map(|(_, temp, name)| (temp.clone(), name.clone()))
            .collect();
        let synced = tokio::task::spawn_blocking(move || folder.publish(&names))
            .await
            .unwrap_or_else(|_| Err(io::Error::other("folder sync task failed")));
        if let Err(error) = synced {
            // Still pending: written again at the next flush.
            let n = written.len();
            for (id, ..) in &written {
                if let Some(device) = self.devices.get_mut(id) {
                    device.last_write = Some(now);
                }
            }
            flushed.n_bytes = 0;
            let failed = flushed.failed.get_or_insert((0, error));
            failed.0 += n;
            return Ok(flushed);
        }
        for (id, ..) in written {
            if let Some(device) = self.devices.get_mut(&id) {
                device.first_pending = None;
                device.last_write = Some(now);
            }
        }
        Ok(flushed)
    }

    fn watermark(&self, read: ChangeCursor) -> ChangeCursor {
        self.devices
            .values()
            .filter_map(|d| d.first_pending)
            .min()
            .map_or(read, |first| ChangeCursor::at(first - 1).min(read))
    }

    fn next_due(&self) -> Option<Instant> {
        self.devices.values().filter_map(|d| self.due_at(d)).min()
    }

    fn pending_bytes(&self) -> usize {
        0
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::{ObservationData, ObservationRow};

    #[test]
    fn a_device_document_has_the_patient_files_shape_with_the_device() {
        let observation = ObservationData {
            index: 0,
            value_type: "NM".into(),
            code: "147842".into(),
            code_text: "MDC_ECG_HEART_RATE".into(),
            code_system: "MDC".into(),
            sub_id: "1.2.1.1".into(),
            value: "88".into(),
            numeric: Some(88.0),
            units: "264864".into(),
            units_text: String::new(),
            reference_range: "50-120".into(),
            abnormal_flags: "N".into(),
            status: "R".into(),
            observed_at: "2026-11-26T10:19:58".into(),
            observed_ms: 0,
            equipment: "0123456789ABCDEF".into(),
            mark: None,
        };
        let records = DeviceRecords {
            device: "0123456789ABCDEF".into(),
            location: Some("ICU^BED12".into()),
            records: vec![ObservationRow {
                observation,
                message_id: 1,
                control_id: "XH-000417".into(),
                received_at: jiff::Timestamp::UNIX_EPOCH,
                device: "XH80X".into(),
            }],
        };
        let text = String::from_utf8(render_device_document(&records, Fields::Prototype)).unwrap();
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(
            lines[0],
            r#"{"PatientInfo":{"PatientID":"","PatientName":"","DateOfBirth":"","Sex":"","Unassigned":true,"DeviceID":"0123456789ABCDEF","Location":"ICU^BED12"},"Records":["#
        );
        assert_eq!(lines.len(), 3, "{text}");
        let document: serde_json::Value = serde_json::from_str(&text).unwrap();
        assert_eq!(document["Records"][0]["ObservationValue"], "88");
        let full = render_device_document(&records, Fields::Full);
        let document: serde_json::Value = serde_json::from_slice(&full).unwrap();
        assert_eq!(document["PatientInfo"]["Identifiers"], "");
        assert_eq!(document["Records"][0]["EquipmentID"], "0123456789ABCDEF");
    }
}
