//! `hl7-ihp parse`: prints HL7 files as a readable tree or as JSON.

use std::io::{self, Read, Write};
use std::path::Path;
use std::process::ExitCode;

use anyhow::Context;
use bytes::BytesMut;
use hl7::mllp::{MllpCodec, MllpItem};
use hl7::{Message, Segment};
use tokio_util::codec::Decoder;

use crate::cli::ParseArgs;
use crate::terminal;

/// Parses every file; a file that does not parse is reported on standard error with its
/// position, and makes the exit status 1.
pub fn run(args: &ParseArgs) -> anyhow::Result<ExitCode> {
    let stdout = io::stdout();
    let mut out = io::BufWriter::new(stdout.lock());
    let mut failed = false;
    for path in &args.files {
        let name = path.display().to_string();
        let bytes = read_input(path).with_context(|| format!("{name}: cannot read"))?;
        for payload in payloads(&bytes) {
            match hl7::parse_batch(&payload) {
                Ok(batch) => {
                    for message in batch.messages() {
                        if args.json {
                            let tree = message.tree(args.decoded);
                            serde_json::to_writer(&mut out, &tree)?;
                            writeln!(out)?;
                        } else {
                            write_tree(&mut out, message, args.decoded)?;
                        }
                    }
                }
                Err(error) => {
                    failed = true;
                    out.flush()?;
                    eprintln!("hl7-ihp: {}: {error}", terminal::escape(&name));
                }
            }
        }
    }
    out.flush()?;
    Ok(if failed {
        ExitCode::from(1)
    } else {
        ExitCode::SUCCESS
    })
}

fn read_input(path: &Path) -> io::Result<Vec<u8>> {
    if path.as_os_str() == "-" {
        let mut bytes = Vec::new();
        io::stdin().lock().read_to_end(&mut bytes)?;
        Ok(bytes)
    } else {
        std::fs::read(path)
    }
}

/// The messages of a file: the frames when it is MLLP-framed, else the whole file.
pub fn payloads(bytes: &[u8]) -> Vec<Vec<u8>> {
    let framed = bytes
        .iter()
        .find(|b| !b.is_ascii_whitespace())
        .is_some_and(|&b| b == hl7::mllp::START_BLOCK);
    if !framed {
        return vec![bytes.to_vec()];
    }
    // A file is not a stream: no frame size limit beyond the file's own size.
    let mut codec = MllpCodec::with_max_frame_len(bytes.len().max(1));
    let mut buffer = BytesMut::from(bytes);
    let mut frames = Vec::new();
    loop {
        match codec.decode_eof(&mut buffer) {
            Ok(Some(MllpItem::Frame(frame))) => frames.push(frame.to_vec()),
            Ok(Some(MllpItem::Oversized { .. })) => {}
            Ok(None) | Err(_) => break,
        }
    }
    frames
}

fn write_tree(out: &mut impl Write, message: &Message<'_>, decoded: bool) -> io::Result<()> {
    let msh = message.segment_at(0);
    let message_type = msh
        .map(|msh| msh.field(9).raw_text().into_owned())
        .unwrap_or_default();
    writeln!(
        out,
        "message {} ({} segments, charset {:?})",
        terminal::escape(&message_type),
        message.segment_count(),
        message.charset()
    )?;
    for segment in message.segments() {
        write_segment(out, &segment, decoded)?;
    }
    writeln!(out)
}

fn write_segment(out: &mut impl Write, segment: &Segment<'_, '_>, decoded: bool) -> io::Result<()> {
    let id = segment.id();
    writeln!(out, "{id}")?;
    for (index, field) in segment.fields().enumerate() {
        if field.is_empty() {
            continue;
        }
        let n = index + 1;
        // Whole values (this is the command for reading a message), control characters
        // escaped: a terminal must not obey the file.
        let show = |text: std::borrow::Cow<'_, str>| terminal::escape(&text).into_owned();
        let value = if decoded {
            field.text()
        } else {
            field.raw_text()
        };
        writeln!(out, "  {id}-{n}  {}", show(value))?;
        let repetitions: Vec<_> = field.repetitions().collect();
        let many = repetitions.len() > 1;
        for (r, repetition) in repetitions.iter().enumerate() {
            let label = if many {
                format!("{id}-{n}[{}]", r + 1)
            } else {
                format!("{id}-{n}")
            };
            let components: Vec<_> = repetition.components().collect();
            if many {
                let value = if decoded {
                    repetition.text()
                } else {
                    repetition.raw_text()
                };
                writeln!(out, "    {label}  {}", show(value))?;
            }
            if components.len() < 2 {
                continue;
            }
            for (c, component) in components.iter().enumerate() {
                if component.is_empty() {
                    continue;
                }
                let value = if decoded {
                    component.text()
                } else {
                    component.raw_text()
                };
                writeln!(out, "      {label}.{}  {}", c + 1, show(value))?;
            }
        }
    }
    Ok(())
}
