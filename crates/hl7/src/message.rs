//! Zero-copy views of a parsed message: segments, fields, repetitions, components and
//! subcomponents, all borrowing the input bytes.
//!
//! The parser records only where segments and fields start and end; repetitions, components
//! and subcomponents are split on demand, because most fields are read once or not at all.
//! Absent parts read as empty, as HL7 says they mean.

use std::borrow::Cow;

use crate::charset::Charset;
use crate::error::SegmentId;
use crate::escape;
use crate::path::Path;

/// Segments → fields → repetitions → components → subcomponent strings; see [`Message::tree`].
pub type Tree = Vec<Vec<Vec<Vec<Vec<String>>>>>;

/// The delimiters a message declares in MSH-1 and MSH-2.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Delimiters {
    /// MSH-1, usually `|`.
    pub field: u8,
    /// Usually `^`.
    pub component: u8,
    /// Usually `~`.
    pub repetition: u8,
    /// Usually `\`; absent when MSH-2 has fewer than three characters (then `\` is text).
    pub escape: Option<u8>,
    /// Usually `&`; absent when MSH-2 has fewer than four characters (then `&` is text).
    pub subcomponent: Option<u8>,
    /// The v2.7 truncation character, usually `#`; absent before v2.7.
    pub truncation: Option<u8>,
}

impl Delimiters {
    /// `|^~\&`, the delimiters nearly every sender uses.
    pub const STANDARD: Delimiters = Delimiters {
        field: b'|',
        component: b'^',
        repetition: b'~',
        escape: Some(b'\\'),
        subcomponent: Some(b'&'),
        truncation: None,
    };

    /// The encoding characters as MSH-2 writes them.
    pub fn encoding_characters(&self) -> String {
        let mut out = String::with_capacity(5);
        out.push(char::from(self.component));
        out.push(char::from(self.repetition));
        for c in [self.escape, self.subcomponent, self.truncation] {
            match c {
                Some(c) => out.push(char::from(c)),
                None => break,
            }
        }
        out
    }
}

impl Default for Delimiters {
    fn default() -> Self {
        Self::STANDARD
    }
}

/// What a view needs to split and decode: the delimiters and the charset.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Ctx {
    pub(crate) delimiters: Delimiters,
    pub(crate) charset: Charset,
    /// False when the escape character never occurs after MSH-2: then no value needs
    /// unescaping, the common case for device messages.
    pub(crate) has_escape: bool,
    /// False when the repetition character never occurs after MSH-2: every field then has
    /// one repetition and splitting can be skipped.
    pub(crate) has_repetition: bool,
    /// Likewise for the subcomponent character.
    pub(crate) has_subcomponent: bool,
}

impl Ctx {
    fn repetition(&self) -> Option<u8> {
        self.has_repetition.then_some(self.delimiters.repetition)
    }

    fn subcomponent(&self) -> Option<u8> {
        self.delimiters
            .subcomponent
            .filter(|_| self.has_subcomponent)
    }
}

/// A half-open byte range into the input.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Span {
    pub(crate) start: u32,
    pub(crate) end: u32,
}

impl Span {
    pub(crate) fn new(start: usize, end: usize) -> Self {
        // The parser refuses inputs over u32::MAX bytes, so these never truncate.
        Self {
            start: start as u32,
            end: end as u32,
        }
    }

    fn range(self) -> std::ops::Range<usize> {
        self.start as usize..self.end as usize
    }
}

/// Where one segment and its fields are.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct SegmentEntry {
    pub(crate) id: SegmentId,
    pub(crate) span: Span,
    /// Index of field 0 (the id) in `Message::fields`.
    pub(crate) first_field: u32,
    /// Number of fields including field 0.
    pub(crate) n_fields: u32,
    /// MSH, BHS and FHS: fields 1 and 2 are the delimiters themselves, never split.
    pub(crate) header: bool,
}

/// One parsed HL7 v2 message (or, as [`crate::Batch::envelope`], the envelope segments of a
/// batch), borrowing the input.
#[derive(Clone, Debug)]
pub struct Message<'a> {
    pub(crate) input: &'a [u8],
    pub(crate) span: Span,
    pub(crate) ctx: Ctx,
    pub(crate) charset_known: bool,
    pub(crate) segments: Vec<SegmentEntry>,
    pub(crate) fields: Vec<Span>,
    /// The message's bytes as text, when they are valid UTF-8 and the charset reads them as
    /// UTF-8: values are then sliced from it instead of validated one by one. It starts at
    /// `text_base` in the input.
    pub(crate) text: Option<&'a str>,
    pub(crate) text_base: usize,
}

impl<'a> Message<'a> {
    pub(crate) fn empty(input: &'a [u8], delimiters: Delimiters) -> Self {
        Self {
            input,
            span: Span::new(0, 0),
            ctx: Ctx {
                delimiters,
                charset: Charset::Default,
                has_escape: true,
                has_repetition: true,
                has_subcomponent: true,
            },
            charset_known: true,
            segments: Vec::new(),
            fields: Vec::new(),
            text: None,
            text_base: 0,
        }
    }

    /// The text of a span, when the message is known to be UTF-8 read as UTF-8.
    fn text_at(&self, span: Span) -> Option<&'a str> {
        let start = (span.start as usize).checked_sub(self.text_base)?;
        let end = (span.end as usize).checked_sub(self.text_base)?;
        self.text?.get(start..end)
    }

    /// The message's bytes as received, from its first segment to the end of its last.
    pub fn raw(&self) -> &'a [u8] {
        &self.input[self.span.range()]
    }

    /// Byte offset of the message within the input given to the parser.
    pub fn offset(&self) -> usize {
        self.span.start as usize
    }

    /// The delimiters from MSH-1 and MSH-2.
    pub fn delimiters(&self) -> Delimiters {
        self.ctx.delimiters
    }

    /// The charset MSH-18 declares (the default when it is empty or unknown).
    pub fn charset(&self) -> Charset {
        self.ctx.charset
    }

    /// False when MSH-18 named a charset that is not understood.
    pub fn charset_known(&self) -> bool {
        self.charset_known
    }

    /// Number of segments.
    pub fn segment_count(&self) -> usize {
        self.segments.len()
    }

    /// The segments in order.
    pub fn segments(&self) -> impl ExactSizeIterator<Item = Segment<'_, 'a>> + '_ {
        (0..self.segments.len()).map(move |index| Segment {
            message: self,
            index,
        })
    }

    /// The segment at a 0-based index.
    pub fn segment_at(&self, index: usize) -> Option<Segment<'_, 'a>> {
        (index < self.segments.len()).then_some(Segment {
            message: self,
            index,
        })
    }

    /// The first segment with this id.
    pub fn segment(&self, id: &str) -> Option<Segment<'_, 'a>> {
        self.segments_by_id(id).next()
    }

    /// Every segment with this id, in order.
    pub fn segments_by_id(&self, id: &str) -> impl Iterator<Item = Segment<'_, 'a>> + '_ {
        let wanted: Option<[u8; 3]> = id.as_bytes().try_into().ok();
        self.segments()
            .filter(move |segment| Some(segment.id().0) == wanted)
    }

    /// The raw bytes a path points to: `None` when the segment occurrence is absent, empty
    /// when the field or part is.
    pub fn query(&self, path: &Path) -> Option<&'a [u8]> {
        let segment = self
            .segments_by_id(path.segment.as_str())
            .nth(path.occurrence.checked_sub(1)?)?;
        let field = segment.field(path.field);
        let raw = match (path.repetition, path.component) {
            (None, None) => field.raw(),
            (rep, None) => field.repetition(rep.unwrap_or(1)).raw(),
            (rep, Some(component)) => {
                let component = field.repetition(rep.unwrap_or(1)).component(component);
                match path.subcomponent {
                    Some(sub) => component.subcomponent(sub).raw(),
                    None => component.raw(),
                }
            }
        };
        Some(raw)
    }

    /// Like [`Message::query`], with the path given as text (`OBX[2]-5.1`); `None` also when
    /// the path does not parse.
    pub fn get(&self, path: &str) -> Option<&'a [u8]> {
        self.query(&path.parse().ok()?)
    }

    /// Text of the part a path points to, escapes decoded and charset applied.
    pub fn get_text(&self, path: &str) -> Option<Cow<'a, str>> {
        let path: Path = path.parse().ok()?;
        let raw = self.query(&path)?;
        // MSH-1 and MSH-2 are the delimiters themselves: never unescape them.
        let literal = path.field <= 2 && is_header_id(path.segment);
        Some(if literal {
            self.ctx.charset.decode(raw)
        } else {
            decode_text(raw, self.ctx)
        })
    }

    /// The whole message as nested text, the shape `hl7-ihp parse --json` prints: segments,
    /// each a list of fields whose element 0 is the segment id; each field a list of
    /// repetitions, each a list of components, each a list of subcomponent strings.
    /// MSH-1 and MSH-2 are one string each. Text is decoded by MSH-18; escape sequences are
    /// decoded only when `decode_escapes` is true.
    pub fn tree(&self, decode_escapes: bool) -> Tree {
        let text = |part: Part<'a>| -> String {
            if decode_escapes {
                part.text().into_owned()
            } else {
                part.raw_text().into_owned()
            }
        };
        self.segments()
            .map(|segment| {
                (0..=segment.field_count())
                    .map(|n| {
                        let field = segment.field(n);
                        field
                            .repetitions()
                            .map(|repetition| {
                                repetition
                                    .components()
                                    .map(|component| {
                                        component.subcomponents().map(|sub| text(sub.0)).collect()
                                    })
                                    .collect()
                            })
                            .collect()
                    })
                    .collect()
            })
            .collect()
    }

    /// Decodes raw bytes of this message (escapes, then charset) to text.
    pub fn text_of(&self, raw: &'a [u8]) -> Cow<'a, str> {
        decode_text(raw, self.ctx)
    }
}

pub(crate) fn is_header_id(id: SegmentId) -> bool {
    matches!(&id.0, b"MSH" | b"BHS" | b"FHS")
}

pub(crate) fn decode_text(raw: &[u8], ctx: Ctx) -> Cow<'_, str> {
    match escape::unescape(raw, &ctx.delimiters) {
        Cow::Borrowed(bytes) => ctx.charset.decode(bytes),
        Cow::Owned(bytes) => Cow::Owned(ctx.charset.decode(&bytes).into_owned()),
    }
}

/// One segment of a message.
#[derive(Clone, Copy, Debug)]
pub struct Segment<'m, 'a> {
    message: &'m Message<'a>,
    index: usize,
}

impl<'m, 'a> Segment<'m, 'a> {
    fn entry(&self) -> &'m SegmentEntry {
        &self.message.segments[self.index]
    }

    /// The segment id (`MSH`, `PID`, `OBX`, …).
    pub fn id(&self) -> SegmentId {
        self.entry().id
    }

    /// 0-based position of the segment in its message.
    pub fn index(&self) -> usize {
        self.index
    }

    /// The segment's bytes, without its terminator.
    pub fn raw(&self) -> &'a [u8] {
        &self.message.input[self.entry().span.range()]
    }

    /// Byte offset of the segment within the parser's input.
    pub fn offset(&self) -> usize {
        self.entry().span.start as usize
    }

    /// The highest field number present (MSH counts MSH-1 and MSH-2).
    pub fn field_count(&self) -> usize {
        self.entry().n_fields as usize - 1
    }

    /// Field `n` (1-based; 0 is the segment id); empty when absent.
    pub fn field(&self, n: usize) -> Field<'a> {
        let entry = self.entry();
        let ctx = self.message.ctx;
        if n >= entry.n_fields as usize {
            return Field(Part::empty(ctx));
        }
        let span = self.message.fields[entry.first_field as usize + n];
        let literal = n == 0 || (entry.header && n <= 2);
        Field(Part {
            raw: &self.message.input[span.range()],
            utf8: self.message.text_at(span),
            ctx,
            literal,
        })
    }

    /// Fields 1 to [`Segment::field_count`].
    pub fn fields(&self) -> impl Iterator<Item = Field<'a>> + 'm {
        let segment = *self;
        (1..=self.field_count()).map(move |n| segment.field(n))
    }
}

/// Raw bytes plus what is needed to split and decode them.
#[derive(Clone, Copy, Debug)]
struct Part<'a> {
    raw: &'a [u8],
    /// The same bytes as text, when known to be UTF-8 that the charset reads as UTF-8.
    utf8: Option<&'a str>,
    ctx: Ctx,
    /// MSH-1, MSH-2 and segment ids: one value, never split or unescaped.
    literal: bool,
}

impl<'a> Part<'a> {
    fn empty(ctx: Ctx) -> Self {
        Self {
            raw: b"",
            utf8: Some(""),
            ctx,
            literal: false,
        }
    }

    fn separator(&self, separator: Option<u8>) -> Option<u8> {
        if self.literal { None } else { separator }
    }

    /// The bytes `start..end` of this part; delimiters are ASCII, so the cut never falls
    /// inside a UTF-8 character and the text stays known.
    fn cut(&self, start: usize, end: usize) -> Part<'a> {
        Part {
            raw: &self.raw[start..end],
            utf8: self.utf8.and_then(|text| text.get(start..end)),
            ..*self
        }
    }

    fn nth(&self, separator: Option<u8>, n: usize) -> Part<'a> {
        self.all(separator)
            .nth(n.wrapping_sub(1))
            .unwrap_or_else(|| Part::empty(self.ctx))
    }

    fn all(&self, separator: Option<u8>) -> Parts<'a> {
        Parts {
            rest: Some(*self),
            separator: self.separator(separator),
        }
    }

    fn raw_text(&self) -> Cow<'a, str> {
        match self.utf8 {
            Some(text) => Cow::Borrowed(text),
            None => self.ctx.charset.decode(self.raw),
        }
    }

    fn text(&self) -> Cow<'a, str> {
        let escaped = !self.literal
            && self.ctx.has_escape
            && self
                .ctx
                .delimiters
                .escape
                .is_some_and(|escape| find(escape, self.raw).is_some());
        if escaped {
            decode_text(self.raw, self.ctx)
        } else {
            self.raw_text()
        }
    }
}

/// The first `byte` in `haystack`: a plain loop for the short values HL7 is made of, where
/// memchr's set-up costs more than it saves.
fn find(byte: u8, haystack: &[u8]) -> Option<usize> {
    if haystack.len() < 32 {
        haystack.iter().position(|&b| b == byte)
    } else {
        memchr::memchr(byte, haystack)
    }
}

/// Splits a part on a separator; no separator yields the whole part once. An empty part
/// yields one empty part, as an empty field holds one empty repetition.
#[derive(Clone, Debug)]
struct Parts<'a> {
    rest: Option<Part<'a>>,
    separator: Option<u8>,
}

impl<'a> Iterator for Parts<'a> {
    type Item = Part<'a>;

    fn next(&mut self) -> Option<Part<'a>> {
        let rest = self.rest?;
        match self.separator.and_then(|sep| find(sep, rest.raw)) {
            Some(at) => {
                self.rest = Some(rest.cut(at + 1, rest.raw.len()));
                Some(rest.cut(0, at))
            }
            None => {
                self.rest = None;
                Some(rest)
            }
        }
    }
}

macro_rules! value_methods {
    () => {
        /// The raw bytes, escape sequences as sent.
        pub fn raw(&self) -> &'a [u8] {
            self.0.raw
        }

        /// True when nothing was sent here.
        pub fn is_empty(&self) -> bool {
            self.0.raw.is_empty()
        }

        /// True for the HL7 null `""` (the sender asks for the value to be deleted).
        pub fn is_null(&self) -> bool {
            self.0.raw == b"\"\""
        }

        /// The raw bytes decoded by the message's charset, escape sequences left as sent.
        pub fn raw_text(&self) -> Cow<'a, str> {
            self.0.raw_text()
        }

        /// The text: escape sequences decoded, then the message's charset applied.
        pub fn text(&self) -> Cow<'a, str> {
            self.0.text()
        }
    };
}

/// One field: its repetitions split on demand.
#[derive(Clone, Copy, Debug)]
pub struct Field<'a>(Part<'a>);

impl<'a> Field<'a> {
    value_methods!();

    /// Repetition `n` (1-based); empty when absent.
    pub fn repetition(&self, n: usize) -> Repetition<'a> {
        Repetition(self.0.nth(self.0.ctx.repetition(), n))
    }

    /// All repetitions; an empty field has one empty repetition.
    pub fn repetitions(&self) -> impl Iterator<Item = Repetition<'a>> + use<'a> {
        self.0.all(self.0.ctx.repetition()).map(Repetition)
    }

    /// Component `n` (1-based) of the first repetition.
    pub fn component(&self, n: usize) -> Component<'a> {
        self.repetition(1).component(n)
    }

    /// The text of the first `N` components of the first repetition (empty where absent),
    /// splitting the field once: what extraction reads most.
    pub fn component_texts<const N: usize>(&self) -> [Cow<'a, str>; N] {
        let mut out: [Cow<'a, str>; N] = std::array::from_fn(|_| Cow::Borrowed(""));
        let part = self.0;
        // The common case, a UTF-8 field with no repetition and no escape in the message:
        // slices of the text, nothing decoded or copied.
        if let Some(text) = part.utf8
            && !part.literal
            && !part.ctx.has_escape
            && !part.ctx.has_repetition
        {
            let separator = part.ctx.delimiters.component;
            let mut start = 0;
            let mut n = 0;
            for (at, &byte) in text.as_bytes().iter().enumerate() {
                if byte == separator {
                    if n >= N {
                        return out;
                    }
                    out[n] = Cow::Borrowed(text.get(start..at).unwrap_or(""));
                    n += 1;
                    start = at + 1;
                }
            }
            if n < N {
                out[n] = Cow::Borrowed(text.get(start..).unwrap_or(""));
            }
            return out;
        }
        for (slot, component) in out.iter_mut().zip(self.repetition(1).components()) {
            *slot = component.text();
        }
        out
    }
}

/// One repetition of a field.
#[derive(Clone, Copy, Debug)]
pub struct Repetition<'a>(Part<'a>);

impl<'a> Repetition<'a> {
    value_methods!();

    /// Component `n` (1-based); empty when absent.
    pub fn component(&self, n: usize) -> Component<'a> {
        Component(self.0.nth(Some(self.0.ctx.delimiters.component), n))
    }

    /// All components; an empty repetition has one empty component.
    pub fn components(&self) -> impl Iterator<Item = Component<'a>> + use<'a> {
        self.0
            .all(Some(self.0.ctx.delimiters.component))
            .map(Component)
    }
}

/// One component of a repetition.
#[derive(Clone, Copy, Debug)]
pub struct Component<'a>(Part<'a>);

impl<'a> Component<'a> {
    value_methods!();

    /// Subcomponent `n` (1-based); empty when absent. Without a subcomponent character
    /// (`MSH|^~|`) the whole component is subcomponent 1.
    pub fn subcomponent(&self, n: usize) -> Subcomponent<'a> {
        Subcomponent(self.0.nth(self.0.ctx.subcomponent(), n))
    }

    /// All subcomponents; an empty component has one empty subcomponent.
    pub fn subcomponents(&self) -> impl Iterator<Item = Subcomponent<'a>> + use<'a> {
        self.0.all(self.0.ctx.subcomponent()).map(Subcomponent)
    }
}

/// One subcomponent, the smallest part.
#[derive(Clone, Copy, Debug)]
pub struct Subcomponent<'a>(Part<'a>);

impl<'a> Subcomponent<'a> {
    value_methods!();
}
