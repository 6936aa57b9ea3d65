//! A small JSON Schema validator for the subset utoipa emits in an OpenAPI 3.1 document
//! (`type`, also as a list and with `null`; `properties`, `required`, `items`, `$ref` to
//! `#/components/…`, `oneOf`/`anyOf`/`allOf`, `enum`, `const`, `additionalProperties`,
//! `propertyNames`,
//! `minimum`/`maximum`, `format: date-time`), and the look-ups that find the schema of a
//! response by path, method, status and content type. A keyword it does not know fails the
//! check rather than passing silently, and so does an object key the schema does not declare
//! (utoipa writes no `additionalProperties: false`, but a field the code sends and the
//! document lacks is drift all the same).
#![allow(dead_code)]

use serde_json::Value;

/// Keywords that only describe (no constraint to check).
const ANNOTATIONS: &[&str] = &[
    "description",
    "title",
    "default",
    "example",
    "examples",
    "deprecated",
    "readOnly",
    "writeOnly",
    "contentMediaType",
    "contentEncoding",
];

/// An OpenAPI document, to validate values against its schemas.
pub struct Document {
    pub root: Value,
}

impl Document {
    pub fn new(root: Value) -> Document {
        Document { root }
    }

    /// What a JSON pointer like `#/components/schemas/Problem` names.
    pub fn resolve(&self, reference: &str) -> Option<&Value> {
        let pointer = reference.strip_prefix('#')?;
        self.root.pointer(pointer)
    }

    /// The path template of the document that `path` (no query) matches: `{name}` matches one
    /// segment. Literal templates win over ones with parameters.
    pub fn template_of(&self, path: &str) -> Option<String> {
        let paths = self.root["paths"].as_object()?;
        let segments: Vec<&str> = path.split('/').collect();
        let mut best: Option<(usize, &String)> = None;
        for template in paths.keys() {
            let parts: Vec<&str> = template.split('/').collect();
            if parts.len() != segments.len() {
                continue;
            }
            let mut n_params = 0;
            let matches = parts.iter().zip(&segments).all(|(part, segment)| {
                if part.starts_with('{') && part.ends_with('}') {
                    n_params += 1;
                    !segment.is_empty()
                } else {
                    part == segment
                }
            });
            if matches && best.is_none_or(|(n, _)| n_params < n) {
                best = Some((n_params, template));
            }
        }
        best.map(|(_, template)| template.clone())
    }

    /// The schema of a response, or why there is none.
    pub fn response_schema(
        &self,
        template: &str,
        method: &str,
        status: u16,
        content_type: &str,
    ) -> Result<&Value, String> {
        let operation = self.root["paths"][template]
            .get(method.to_ascii_lowercase())
            .ok_or_else(|| format!("no {method} {template} in the document"))?;
        let mut response = operation["responses"]
            .get(status.to_string())
            .or_else(|| operation["responses"].get("default"))
            .ok_or_else(|| format!("{method} {template} documents no {status} response"))?;
        if let Some(reference) = response.get("$ref").and_then(Value::as_str) {
            response = self
                .resolve(reference)
                .ok_or_else(|| format!("unresolved {reference}"))?;
        }
        let media = content_type.split(';').next().unwrap_or("").trim();
        let content = response["content"]
            .as_object()
            .ok_or_else(|| format!("{method} {template} {status} documents no content"))?;
        let (_, entry) = content
            .iter()
            .find(|(name, _)| name.split(';').next().unwrap_or("").trim() == media)
            .ok_or_else(|| {
                format!(
                    "{method} {template} {status} documents {:?}, not {content_type}",
                    content.keys().collect::<Vec<_>>()
                )
            })?;
        entry
            .get("schema")
            .ok_or_else(|| format!("{method} {template} {status} {media} has no schema"))
    }

    /// Checks `value` against `schema`; the error names where (`at`) and why.
    pub fn validate(&self, schema: &Value, value: &Value, at: &str) -> Result<(), String> {
        self.check(schema, value, at, true)
    }

    /// The property names an object schema declares, through `$ref` and `allOf`; `None`
    /// for a schema that takes any key (no properties, or `additionalProperties`).
    fn declared(&self, schema: &Value) -> Option<Vec<String>> {
        if let Some(reference) = schema.get("$ref").and_then(Value::as_str) {
            return self.declared(self.resolve(reference)?);
        }
        if schema.get("additionalProperties").is_some() {
            return None;
        }
        let mut names: Vec<String> = schema
            .get("properties")
            .and_then(Value::as_object)
            .map(|properties| properties.keys().cloned().collect())
            .unwrap_or_default();
        let all_of = schema.get("allOf").and_then(Value::as_array);
        if names.is_empty() && all_of.is_none() {
            return None;
        }
        for sub in all_of.into_iter().flatten() {
            names.extend(self.declared(sub)?);
        }
        Some(names)
    }

    /// `whole`: `schema` is all there is for `value` (not one branch of an `allOf`), so an
    /// object key it does not declare is an error.
    fn check(&self, schema: &Value, value: &Value, at: &str, whole: bool) -> Result<(), String> {
        if whole
            && let Value::Object(object) = value
            && let Some(declared) = self.declared(schema)
            && let Some(key) = object.keys().find(|key| !declared.contains(key))
        {
            return Err(format!("{at}.{key}: not in the document"));
        }
        let schema = match schema {
            Value::Bool(true) => return Ok(()),
            Value::Bool(false) => return Err(format!("{at}: nothing is allowed here")),
            Value::Object(schema) => schema,
            _ => return Err(format!("{at}: the schema is not an object: {schema}")),
        };
        for (keyword, argument) in schema {
            match keyword.as_str() {
                "$ref" => {
                    let reference = argument.as_str().ok_or("$ref is not a string")?;
                    let target = self
                        .resolve(reference)
                        .ok_or_else(|| format!("{at}: unresolved {reference}"))?;
                    self.check(target, value, at, whole)?;
                }
                "type" => {
                    let types: Vec<&str> = match argument {
                        Value::String(t) => vec![t.as_str()],
                        Value::Array(list) => list.iter().filter_map(Value::as_str).collect(),
                        _ => return Err(format!("{at}: bad type {argument}")),
                    };
                    if !types.iter().any(|t| is_type(value, t)) {
                        return Err(format!("{at}: expected {types:?}, got {value}"));
                    }
                }
                "enum" => {
                    let choices = argument.as_array().ok_or("enum is not a list")?;
                    if !choices.contains(value) {
                        return Err(format!("{at}: {value} is not one of {argument}"));
                    }
                }
                "const" => {
                    if argument != value {
                        return Err(format!("{at}: expected {argument}, got {value}"));
                    }
                }
                "properties" => {
                    if let Value::Object(object) = value {
                        for (name, property) in argument.as_object().ok_or("bad properties")? {
                            if let Some(item) = object.get(name) {
                                self.check(property, item, &format!("{at}.{name}"), true)?;
                            }
                        }
                    }
                }
                "required" => {
                    if let Value::Object(object) = value {
                        for name in argument.as_array().ok_or("bad required")? {
                            let name = name.as_str().ok_or("bad required name")?;
                            if !object.contains_key(name) {
                                return Err(format!("{at}: `{name}` is required: {value}"));
                            }
                        }
                    }
                }
                "additionalProperties" => {
                    if let Value::Object(object) = value {
                        let known = schema.get("properties").and_then(Value::as_object);
                        for (name, item) in object {
                            if known.is_some_and(|k| k.contains_key(name)) {
                                continue;
                            }
                            self.check(argument, item, &format!("{at}.{name}"), true)?;
                        }
                    }
                }
                "propertyNames" => {
                    if let Value::Object(object) = value {
                        for name in object.keys() {
                            let key = Value::from(name.as_str());
                            self.check(argument, &key, &format!("{at}.{name} (the key)"), true)?;
                        }
                    }
                }
                "items" => {
                    if let Value::Array(items) = value {
                        for (i, item) in items.iter().enumerate() {
                            self.check(argument, item, &format!("{at}[{i}]"), true)?;
                        }
                    }
                }
                "allOf" => {
                    for sub in argument.as_array().ok_or("bad allOf")? {
                        self.check(sub, value, at, false)?;
                    }
                }
                "anyOf" => {
                    let subs = argument.as_array().ok_or("bad anyOf")?;
                    let errors: Vec<String> = subs
                        .iter()
                        .filter_map(|sub| self.check(sub, value, at, whole).err())
                        .collect();
                    if errors.len() == subs.len() {
                        return Err(format!("{at}: matches none of anyOf: {errors:?}"));
                    }
                }
                "oneOf" => {
                    let subs = argument.as_array().ok_or("bad oneOf")?;
                    let n_matching = subs
                        .iter()
                        .filter(|sub| self.check(sub, value, at, whole).is_ok())
                        .count();
                    if n_matching != 1 {
                        return Err(format!(
                            "{at}: matches {n_matching} of oneOf, not exactly one: {value}"
                        ));
                    }
                }
                "minimum" | "maximum" => {
                    if let (Some(limit), Some(number)) = (argument.as_f64(), value.as_f64()) {
                        let ok = if keyword == "minimum" {
                            number >= limit
                        } else {
                            number <= limit
                        };
                        if !ok {
                            return Err(format!("{at}: {number} is outside {keyword} {limit}"));
                        }
                    }
                }
                "format" => {
                    if let (Some("date-time"), Some(text)) = (argument.as_str(), value.as_str())
                        && text.parse::<jiff::Timestamp>().is_err()
                    {
                        return Err(format!("{at}: {text:?} is not an RFC 3339 date-time"));
                    }
                    // int32, int64, double: the types say enough.
                }
                other if ANNOTATIONS.contains(&other) => {}
                other => return Err(format!("{at}: the validator does not know `{other}`")),
            }
        }
        Ok(())
    }
}

fn is_type(value: &Value, name: &str) -> bool {
    match name {
        "null" => value.is_null(),
        "boolean" => value.is_boolean(),
        "object" => value.is_object(),
        "array" => value.is_array(),
        "string" => value.is_string(),
        "number" => value.is_number(),
        "integer" => value.is_i64() || value.is_u64(),
        _ => false,
    }
}

/// Every `$ref` in `value`, with where it is.
pub fn references(value: &Value, at: &str, out: &mut Vec<(String, String)>) {
    match value {
        Value::Object(object) => {
            for (key, item) in object {
                if key == "$ref"
                    && let Some(reference) = item.as_str()
                {
                    out.push((at.to_owned(), reference.to_owned()));
                }
                references(item, &format!("{at}/{key}"), out);
            }
        }
        Value::Array(items) => {
            for (i, item) in items.iter().enumerate() {
                references(item, &format!("{at}/{i}"), out);
            }
        }
        _ => {}
    }
}

#[test]
fn the_validator_checks_what_it_claims() {
    let document = Document::new(serde_json::json!({
        "components": {"schemas": {
            "Kind": {"type": "string", "enum": ["a", "b"]},
            "Thing": {
                "type": "object",
                "required": ["id", "kind", "note"],
                "properties": {
                    "id": {"type": "integer", "minimum": 1},
                    "kind": {"$ref": "#/components/schemas/Kind"},
                    "note": {"type": ["string", "null"]},
                    "at": {"type": "string", "format": "date-time"},
                    "parent": {"oneOf": [{"type": "null"}, {"$ref": "#/components/schemas/Kind"}]},
                    "tags": {"type": "array", "items": {"type": "string"}},
                },
                "additionalProperties": false,
            },
            "Open": {"type": "object", "properties": {"id": {"type": "integer"}}},
            "Both": {"allOf": [{"$ref": "#/components/schemas/Open"},
                               {"type": "object", "required": ["extra", "kind"],
                                "properties": {"extra": {"type": "integer"}, "kind": {"type": "string"},
                                               "note": {}, "at": {}, "parent": {}, "tags": {}}}]},
        }},
    }));
    let thing = serde_json::json!({"$ref": "#/components/schemas/Thing"});
    let ok = serde_json::json!({"id": 1, "kind": "a", "note": null, "at": "2026-12-01T12:00:00.000Z",
                                "parent": "b", "tags": ["x"]});
    document.validate(&thing, &ok, "$").unwrap();
    for bad in [
        serde_json::json!({"id": 0, "kind": "a", "note": null}),
        serde_json::json!({"id": 1.5, "kind": "a", "note": null}),
        serde_json::json!({"id": 1, "kind": "c", "note": null}),
        serde_json::json!({"id": 1, "kind": "a"}),
        serde_json::json!({"id": 1, "kind": "a", "note": 3}),
        serde_json::json!({"id": 1, "kind": "a", "note": null, "at": "yesterday"}),
        serde_json::json!({"id": 1, "kind": "a", "note": null, "parent": 5}),
        serde_json::json!({"id": 1, "kind": "a", "note": null, "tags": [1]}),
        serde_json::json!({"id": 1, "kind": "a", "note": null, "other": 1}),
        serde_json::json!([]),
    ] {
        assert!(document.validate(&thing, &bad, "$").is_err(), "{bad}");
    }
    let both = serde_json::json!({"$ref": "#/components/schemas/Both"});
    assert!(document.validate(&both, &ok, "$").is_err());
    let mut with_extra = ok.clone();
    with_extra["extra"] = Value::from(1);
    document.validate(&both, &with_extra, "$").unwrap();
    with_extra["undeclared"] = Value::from(1);
    assert!(document.validate(&both, &with_extra, "$").is_err());
    let unknown = serde_json::json!({"pattern": "^a$"});
    assert!(document.validate(&unknown, &Value::from("a"), "$").is_err());
    let missing = serde_json::json!({"$ref": "#/components/schemas/Nothing"});
    assert!(document.validate(&missing, &Value::Null, "$").is_err());
}
