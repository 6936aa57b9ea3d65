//! Parser on any bytes: `parse` and `parse_batch` never panic; every part of a parsed message
//! can be read; `tree` has one entry per segment whose field 0 is the segment id; paths read
//! what the views read; and what `parse` accepts, `parse_batch` reads as exactly that message.
#![no_main]

use std::collections::HashMap;

use hl7::ack::ErrorLocation;
use hl7::{Message, ParseError, parse, parse_batch};
use libfuzzer_sys::fuzz_target;

/// How many path look-ups one message gets, so that large inputs stay fast.
const MAX_PATH_LOOKUPS: usize = 64;

fuzz_target!(|data: &[u8]| {
    let single = parse(data);
    let batch = parse_batch(data);

    match &single {
        Ok(message) => walk(message, data),
        Err(error) => check_error(error, data),
    }
    match &batch {
        Ok(batch) => {
            walk(batch.envelope(), data);
            // When `parse` succeeded, the batch's one message is checked below to be the same
            // message, so walking it again would only halve the speed.
            if single.is_err() {
                for message in batch.messages() {
                    walk(message, data);
                }
            }
        }
        Err(error) => check_error(error, data),
    }

    if let Ok(message) = &single {
        let batch = match &batch {
            Ok(batch) => batch,
            Err(error) => panic!("parse accepted the input, parse_batch refused it: {error}"),
        };
        assert_eq!(
            batch.messages().len(),
            1,
            "parse_batch found other messages"
        );
        let only = &batch.messages()[0];
        assert_eq!(only.raw(), message.raw());
        assert_eq!(only.offset(), message.offset());
        assert_eq!(only.segment_count(), message.segment_count());
        assert_eq!(only.delimiters(), message.delimiters());
        assert_eq!(only.charset(), message.charset());
        assert_eq!(
            batch.envelope().segment_count(),
            0,
            "a lone message has no envelope"
        );
    }
});

fn check_error(error: &ParseError, data: &[u8]) {
    let _ = error.to_string();
    let _ = format!("{error:?}");
    let _ = ErrorLocation::of_parse_error(error);
    assert!(
        error.position.offset <= data.len(),
        "error at byte {} of a {}-byte input",
        error.position.offset,
        data.len()
    );
}

/// Reads every part of `message` and checks that the views, the tree and paths agree.
fn walk(message: &Message<'_>, data: &[u8]) {
    let raw = message.raw();
    assert!(message.offset() + raw.len() <= data.len());
    assert_eq!(raw, &data[message.offset()..message.offset() + raw.len()]);
    let _ = message.delimiters().encoding_characters();
    let _ = message.charset_known();

    let mut occurrences: HashMap<[u8; 3], usize> = HashMap::new();
    let mut n_lookups = 0usize;
    for segment in message.segments() {
        let id = segment.id();
        let segment_raw = segment.raw();
        assert!(
            segment_raw.starts_with(&id.0),
            "segment raw starts with its id"
        );
        assert!(!segment_raw.contains(&b'\r') && !segment_raw.contains(&b'\n'));
        assert_eq!(segment.field(0).raw(), &id.0[..]);
        let occurrence = occurrences.entry(id.0).or_insert(0);
        *occurrence += 1;
        let occurrence = *occurrence;

        for n in 0..=segment.field_count() + 1 {
            let field = segment.field(n);
            let _ = (field.raw(), field.text(), field.raw_text(), field.is_null());
            for (r, repetition) in field.repetitions().enumerate() {
                let _ = (repetition.raw(), repetition.text());
                for (c, component) in repetition.components().enumerate() {
                    let _ = (component.raw(), component.text());
                    for (s, subcomponent) in component.subcomponents().enumerate() {
                        let _ = (subcomponent.raw(), subcomponent.text());
                        if n >= 1 && n_lookups < MAX_PATH_LOOKUPS {
                            n_lookups += 1;
                            let path =
                                format!("{id}[{occurrence}]-{n}[{}].{}.{}", r + 1, c + 1, s + 1);
                            assert_eq!(message.get(&path), Some(subcomponent.raw()), "{path}");
                            let _ = message.get_text(&path);
                        }
                    }
                }
            }
            if n >= 1 && n_lookups < MAX_PATH_LOOKUPS {
                n_lookups += 1;
                let path = format!("{id}[{occurrence}]-{n}");
                assert_eq!(message.get(&path), Some(field.raw()), "{path}");
                let _ = message.get_text(&path);
            }
        }
    }

    let decoded = message.tree(true);
    let literal = message.tree(false);
    assert_eq!(
        literal.len(),
        message.segment_count(),
        "one tree entry per segment"
    );
    assert_eq!(
        decoded.len(),
        message.segment_count(),
        "one tree entry per segment"
    );
    for ((segment, literal), decoded) in message.segments().zip(&literal).zip(&decoded) {
        assert_eq!(
            literal.len(),
            segment.field_count() + 1,
            "fields of {}",
            segment.id()
        );
        let id = segment.id().to_string();
        assert_eq!(
            literal[0],
            [[[id.clone()]]],
            "field 0 of the tree is the segment id"
        );
        assert_eq!(
            decoded[0],
            [[[id]]],
            "field 0 of the tree is the segment id"
        );
        // Decoding escapes changes the strings, never the shape.
        let shape = |tree: &Vec<Vec<Vec<Vec<String>>>>| -> Vec<Vec<Vec<usize>>> {
            tree.iter()
                .map(|field| {
                    field
                        .iter()
                        .map(|rep| rep.iter().map(Vec::len).collect())
                        .collect()
                })
                .collect()
        };
        assert_eq!(shape(literal), shape(decoded), "tree shapes differ");
    }
}
