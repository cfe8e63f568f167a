//! Request bodies: each declared type is parsed as that type and its values inspected.

use std::borrow::Cow;

use serde::de::{self, DeserializeSeed, Deserializer, MapAccess, SeqAccess, Visitor};

use crate::{Location, Policy, Report};

/// Most multipart parts read from one body.
const MAX_PARTS: usize = 1000;

/// A body that does not parse as its declared type.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BodyError {
    #[error("body is not valid JSON: {0}")]
    Json(String),
    #[error("JSON body nests deeper than {0} levels")]
    JsonDepth(u32),
    #[error("body is not valid XML: {0}")]
    Xml(String),
    #[error("multipart body is malformed: {0}")]
    Multipart(&'static str),
    #[error("form body is not valid UTF-8 after decoding")]
    Form,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum BodyKind {
    Form,
    Json,
    Multipart,
    Xml,
    Text,
}

impl BodyKind {
    pub(crate) fn of(content_type: Option<&str>) -> Option<BodyKind> {
        let media = content_type?.split(';').next()?.trim().to_ascii_lowercase();
        Some(match media.as_str() {
            "application/x-www-form-urlencoded" => BodyKind::Form,
            "application/json" => BodyKind::Json,
            m if m.ends_with("+json") => BodyKind::Json,
            "multipart/form-data" => BodyKind::Multipart,
            "application/xml" | "text/xml" => BodyKind::Xml,
            m if m.ends_with("+xml") => BodyKind::Xml,
            m if m.starts_with("text/") => BodyKind::Text,
            _ => return None,
        })
    }
}

pub(crate) fn inspect(
    policy: &Policy,
    content_type: Option<&str>,
    body: &[u8],
    report: &mut Report,
) -> Result<(), BodyError> {
    let Some(kind) = BodyKind::of(content_type) else {
        return Ok(());
    };
    if body.is_empty() {
        return Ok(());
    }
    match kind {
        BodyKind::Form => {
            // Raw bytes that are not UTF-8 are replaced before the pairs are split; form
            // encoding writes text as escapes, so a valid form loses nothing.
            let text = String::from_utf8_lossy(body);
            let locations = [Location::BodyName, Location::BodyValue];
            let mut buffers = std::mem::take(&mut report.form);
            crate::form::for_each_pair(&text, locations, &mut buffers, |subject| {
                policy.inspect_body_shaped(subject, report)
            });
            report.form = buffers;
            Ok(())
        }
        BodyKind::Json => json(policy, body, report),
        BodyKind::Multipart => multipart(policy, content_type.unwrap_or(""), body, report),
        BodyKind::Xml => xml(policy, body, report),
        BodyKind::Text => {
            let text = String::from_utf8_lossy(body);
            policy.inspect_body_value(Location::BodyValue, "", &text, report);
            Ok(())
        }
    }
}

/// Walks a JSON document without building it, inspecting every key and string value.
fn json(policy: &Policy, body: &[u8], report: &mut Report) -> Result<(), BodyError> {
    let max_depth = policy.config().json_max_depth;
    // JSON is UTF-8 (RFC 8259): checked once for the whole body, which is cheaper than the
    // parser checking each string as it reads it.
    let text = std::str::from_utf8(body).map_err(|e| {
        BodyError::Json(format!(
            "invalid UTF-8 at byte {} (JSON text must be UTF-8)",
            e.valid_up_to()
        ))
    })?;
    let mut de = serde_json::Deserializer::from_str(text);
    // serde_json's own recursion limit (128) would stop deeper input first; the walk's own
    // depth check gives the configured limit its clear error.
    let walker = JsonWalk {
        policy,
        report,
        depth: 0,
        max_depth,
        key: Cow::Borrowed(""),
    };
    let result = walker.deserialize(&mut de).and_then(|()| de.end());
    match result {
        Ok(()) => Ok(()),
        Err(e) if e.to_string().starts_with(DEPTH_MARKER) => Err(BodyError::JsonDepth(max_depth)),
        Err(e) if e.to_string().starts_with("recursion limit") => {
            Err(BodyError::JsonDepth(max_depth))
        }
        Err(e) => Err(BodyError::Json(e.to_string())),
    }
}

const DEPTH_MARKER: &str = "rampart: nesting too deep";

struct JsonWalk<'p, 'r, 'k> {
    policy: &'p Policy,
    report: &'r mut Report,
    depth: u32,
    max_depth: u32,
    /// The key the current value belongs to, for findings and exclusions.
    key: Cow<'k, str>,
}

/// An object key, borrowed from the body when it holds no escape.
struct JsonKey;

impl<'de> DeserializeSeed<'de> for JsonKey {
    type Value = Cow<'de, str>;

    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
        d.deserialize_str(self)
    }
}

impl<'de> Visitor<'de> for JsonKey {
    type Value = Cow<'de, str>;

    fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.write_str("an object key")
    }

    fn visit_borrowed_str<E>(self, v: &'de str) -> Result<Self::Value, E> {
        Ok(Cow::Borrowed(v))
    }

    fn visit_str<E>(self, v: &str) -> Result<Self::Value, E> {
        Ok(Cow::Owned(v.to_owned()))
    }
}

impl<'de> DeserializeSeed<'de> for JsonWalk<'_, '_, '_> {
    type Value = ();

    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for JsonWalk<'_, '_, '_> {
    type Value = ();

    fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.write_str("any JSON value")
    }

    fn visit_bool<E>(self, _: bool) -> Result<(), E> {
        Ok(())
    }
    fn visit_i64<E>(self, _: i64) -> Result<(), E> {
        Ok(())
    }
    fn visit_u64<E>(self, _: u64) -> Result<(), E> {
        Ok(())
    }
    fn visit_f64<E>(self, _: f64) -> Result<(), E> {
        Ok(())
    }
    fn visit_unit<E>(self) -> Result<(), E> {
        Ok(())
    }

    fn visit_str<E: de::Error>(self, v: &str) -> Result<(), E> {
        self.policy
            .inspect_body_value(Location::BodyValue, &self.key, v, self.report);
        Ok(())
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<(), A::Error> {
        if self.depth >= self.max_depth {
            return Err(de::Error::custom(DEPTH_MARKER));
        }
        while seq
            .next_element_seed(JsonWalk {
                policy: self.policy,
                report: &mut *self.report,
                depth: self.depth + 1,
                max_depth: self.max_depth,
                key: Cow::Borrowed(&self.key),
            })?
            .is_some()
        {}
        Ok(())
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
        if self.depth >= self.max_depth {
            return Err(de::Error::custom(DEPTH_MARKER));
        }
        while let Some(key) = map.next_key_seed(JsonKey)? {
            self.policy
                .inspect_body_value(Location::BodyName, &key, &key, self.report);
            map.next_value_seed(JsonWalk {
                policy: self.policy,
                report: &mut *self.report,
                depth: self.depth + 1,
                max_depth: self.max_depth,
                key: Cow::Borrowed(&key),
            })?;
        }
        Ok(())
    }
}

/// multipart/form-data: field values and file names are inspected; file contents are not
/// text and are left to the application.
fn multipart(
    policy: &Policy,
    content_type: &str,
    body: &[u8],
    report: &mut Report,
) -> Result<(), BodyError> {
    let boundary = content_type
        .split(';')
        .skip(1)
        .filter_map(|p| p.trim().split_once('='))
        .find(|(k, _)| k.trim().eq_ignore_ascii_case("boundary"))
        .map(|(_, v)| v.trim().trim_matches('"'))
        .filter(|b| !b.is_empty() && b.len() <= 200)
        .ok_or(BodyError::Multipart("no boundary in Content-Type"))?;
    let delimiter = format!("--{boundary}");
    let finder = memchr::memmem::Finder::new(delimiter.as_bytes());
    let first = finder
        .find(body)
        .ok_or(BodyError::Multipart("boundary not found in body"))?;
    let mut rest = &body[first + delimiter.len()..];
    for _ in 0..MAX_PARTS {
        if rest.starts_with(b"--") {
            return Ok(());
        }
        rest = rest
            .strip_prefix(b"\r\n")
            .or_else(|| rest.strip_prefix(b"\n"))
            .ok_or(BodyError::Multipart(
                "boundary not followed by a line break",
            ))?;
        let end = finder
            .find(rest)
            .ok_or(BodyError::Multipart("part not terminated by a boundary"))?;
        let part = &rest[..end];
        let part = part
            .strip_suffix(b"\r\n")
            .or_else(|| part.strip_suffix(b"\n"))
            .unwrap_or(part);
        let (headers, content) = split_part(part)?;
        let (name, filename) = disposition(headers)?;
        match filename {
            Some(file) => policy.inspect_body_value(Location::BodyName, &name, &file, report),
            None => {
                let text = String::from_utf8_lossy(content);
                policy.inspect_body_value(Location::BodyValue, &name, &text, report);
            }
        }
        rest = &rest[end + delimiter.len()..];
    }
    Err(BodyError::Multipart("more than 1000 parts"))
}

fn split_part(part: &[u8]) -> Result<(&[u8], &[u8]), BodyError> {
    if let Some(at) = memchr::memmem::find(part, b"\r\n\r\n") {
        return Ok((&part[..at], &part[at + 4..]));
    }
    if let Some(at) = memchr::memmem::find(part, b"\n\n") {
        return Ok((&part[..at], &part[at + 2..]));
    }
    Err(BodyError::Multipart(
        "part without a blank line after its headers",
    ))
}

/// The `name` and `filename` of a part's Content-Disposition.
fn disposition(headers: &[u8]) -> Result<(String, Option<String>), BodyError> {
    let text = String::from_utf8_lossy(headers);
    let line = text
        .lines()
        .find(|l| {
            l.split(':')
                .next()
                .is_some_and(|h| h.trim().eq_ignore_ascii_case("content-disposition"))
        })
        .ok_or(BodyError::Multipart("part without Content-Disposition"))?;
    let mut name = None;
    let mut filename = None;
    for param in line.split(';').skip(1) {
        if let Some((k, v)) = param.trim().split_once('=') {
            let v = v.trim().trim_matches('"').to_owned();
            match k.trim().to_ascii_lowercase().as_str() {
                "name" => name = Some(v),
                "filename" | "filename*" => filename = Some(v),
                _ => {}
            }
        }
    }
    let name = name.ok_or(BodyError::Multipart("part without a name"))?;
    Ok((name, filename))
}

/// XML: the document must be well formed; DOCTYPE declarations, text, CDATA and attribute
/// values are inspected.
fn xml(policy: &Policy, body: &[u8], report: &mut Report) -> Result<(), BodyError> {
    use quick_xml::events::Event;

    let mut reader = quick_xml::Reader::from_reader(body);
    reader.config_mut().check_end_names = true;
    let mut buf = Vec::new();
    let mut depth = 0u32;
    let mut root_seen = false;
    loop {
        let event = reader
            .read_event_into(&mut buf)
            .map_err(|e| BodyError::Xml(e.to_string()))?;
        match event {
            Event::Eof => break,
            Event::DocType(d) => {
                let text = format!("<!DOCTYPE {}>", String::from_utf8_lossy(&d));
                policy.inspect_body_value(Location::BodyValue, "", &text, report);
            }
            Event::Start(e) => {
                depth += 1;
                root_seen = true;
                inspect_attributes(policy, &e, report)?;
            }
            Event::Empty(e) => {
                root_seen = true;
                inspect_attributes(policy, &e, report)?;
            }
            Event::End(_) => depth = depth.saturating_sub(1),
            Event::Text(t) => {
                let text = String::from_utf8_lossy(&t);
                if !text.trim().is_empty() {
                    policy.inspect_body_value(Location::BodyValue, "", &text, report);
                }
            }
            Event::CData(t) => {
                let text = String::from_utf8_lossy(&t);
                policy.inspect_body_value(Location::BodyValue, "", &text, report);
            }
            Event::GeneralRef(r) => {
                // An entity reference other than the five predefined ones needs a DTD.
                let name = String::from_utf8_lossy(&r);
                if !matches!(name.as_ref(), "lt" | "gt" | "amp" | "quot" | "apos")
                    && !name.starts_with('#')
                {
                    let text = format!("<!ENTITY {name}>");
                    policy.inspect_body_value(Location::BodyValue, "", &text, report);
                }
            }
            _ => {}
        }
        buf.clear();
    }
    if !root_seen {
        return Err(BodyError::Xml("no root element".into()));
    }
    if depth != 0 {
        return Err(BodyError::Xml("unclosed element".into()));
    }
    Ok(())
}

fn inspect_attributes(
    policy: &Policy,
    element: &quick_xml::events::BytesStart,
    report: &mut Report,
) -> Result<(), BodyError> {
    let name = String::from_utf8_lossy(element.name().as_ref()).into_owned();
    for attr in element.attributes() {
        let attr = attr.map_err(|e| BodyError::Xml(e.to_string()))?;
        let value = String::from_utf8_lossy(&attr.value);
        policy.inspect_body_value(Location::BodyValue, &name, &value, report);
    }
    Ok(())
}
