//! Parameter extraction: every request shape real clients send, merged into one map.
//!
//! Real peers send form bodies, query strings and JSON objects, PHP/qs arrays (`orders[0]=1`),
//! numbers as strings and strings as numbers, and the literal `undefined` for unset fields.
//! All of it ends up here as text values; typing happens in [`super::request`].

use std::collections::HashMap;

use super::ProtocolError;

/// One parameter: a plain value, or the elements of an array (`orders[]=1&orders[]=2`,
/// `"orders": [1, 2]`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Value {
    One(String),
    List(Vec<String>),
}

/// The request shape the body arrived in, from its `Content-Type`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BodyKind {
    Form,
    Json,
    Multipart,
}

impl BodyKind {
    /// Chooses the parser for a body. Without a content type (curl `-d` sends form, some
    /// scripts send bare JSON) the first byte decides.
    pub fn detect(content_type: Option<&str>, body: &[u8]) -> BodyKind {
        let mime = content_type
            .and_then(|ct| ct.split(';').next())
            .map(|m| m.trim().to_ascii_lowercase())
            .unwrap_or_default();
        match mime.as_str() {
            "application/json" | "text/json" => BodyKind::Json,
            "multipart/form-data" => BodyKind::Multipart,
            m if m.ends_with("+json") => BodyKind::Json,
            _ if body.iter().find(|b| !b.is_ascii_whitespace()) == Some(&b'{') => BodyKind::Json,
            _ => BodyKind::Form,
        }
    }
}

/// The merged parameters of one request. Body values override query values of the same name.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Params {
    map: HashMap<String, Value>,
}

impl Params {
    /// Builds the parameter map from the query string and the body of one request.
    pub fn from_parts(
        query: Option<&str>,
        content_type: Option<&str>,
        body: &[u8],
    ) -> Result<Params, ProtocolError> {
        let mut params = Params::default();
        if let Some(q) = query {
            params.add_form(q.as_bytes())?;
        }
        if !body.is_empty() {
            match BodyKind::detect(content_type, body) {
                BodyKind::Form => params.add_form(body)?,
                BodyKind::Json => params.add_json(body)?,
                BodyKind::Multipart => return Err(ProtocolError::UnsupportedBody),
            }
        }
        Ok(params)
    }

    /// Parses `application/x-www-form-urlencoded` text (also used for query strings).
    pub fn parse_form(input: &[u8]) -> Result<Params, ProtocolError> {
        let mut params = Params::default();
        params.add_form(input)?;
        Ok(params)
    }

    /// Parses a JSON object body.
    pub fn parse_json(input: &[u8]) -> Result<Params, ProtocolError> {
        let mut params = Params::default();
        params.add_json(input)?;
        Ok(params)
    }

    fn add_form(&mut self, input: &[u8]) -> Result<(), ProtocolError> {
        // Within one source, array elements accumulate; a repeated plain key keeps its last
        // value, as PHP does.
        let mut lists: HashMap<String, Vec<String>> = HashMap::new();
        for pair in input.split(|&b| b == b'&') {
            if pair.is_empty() {
                continue;
            }
            let (raw_name, raw_value) = match pair.iter().position(|&b| b == b'=') {
                Some(i) => (&pair[..i], &pair[i + 1..]),
                None => (pair, &b""[..]),
            };
            let name = percent_decode(raw_name)?;
            let value = percent_decode(raw_value)?;
            match array_base(&name) {
                Some(base) => {
                    let list = lists.entry(base.to_owned()).or_default();
                    if is_present(&value) {
                        list.push(value);
                    }
                }
                None => self.set(name, Value::One(value)),
            }
        }
        for (name, list) in lists {
            self.set(name, Value::List(list));
        }
        Ok(())
    }

    fn add_json(&mut self, input: &[u8]) -> Result<(), ProtocolError> {
        let value: serde_json::Value =
            serde_json::from_slice(input).map_err(|_| ProtocolError::IncorrectRequest)?;
        let serde_json::Value::Object(object) = value else {
            return Err(ProtocolError::IncorrectRequest);
        };
        for (name, value) in object {
            let value = match value {
                serde_json::Value::Array(items) => Value::List(
                    items
                        .into_iter()
                        .filter_map(|item| json_scalar(item).transpose())
                        .collect::<Result<_, _>>()?,
                ),
                scalar => match json_scalar(scalar)? {
                    Some(text) => Value::One(text),
                    None => continue,
                },
            };
            self.set(name, value);
        }
        Ok(())
    }

    fn set(&mut self, name: String, value: Value) {
        match &value {
            Value::One(text) if !is_present(text) => {
                self.map.remove(&name);
            }
            _ => {
                self.map.insert(name, value);
            }
        }
    }

    /// Inserts a plain value (used by clients building a request and by tests).
    pub fn insert(&mut self, name: impl Into<String>, value: impl Into<String>) {
        self.set(name.into(), Value::One(value.into()));
    }

    pub fn get(&self, name: &str) -> Option<&Value> {
        self.map.get(name)
    }

    pub fn contains(&self, name: &str) -> bool {
        self.map.contains_key(name)
    }

    /// A plain text parameter, trimmed. An array where one value belongs is malformed.
    pub fn text(&self, name: &str) -> Result<Option<&str>, ProtocolError> {
        match self.map.get(name) {
            None => Ok(None),
            Some(Value::One(text)) => Ok(Some(text.trim()).filter(|t| !t.is_empty())),
            Some(Value::List(_)) => Err(ProtocolError::IncorrectRequest),
        }
    }

    pub fn len(&self) -> usize {
        self.map.len()
    }

    pub fn is_empty(&self) -> bool {
        self.map.is_empty()
    }
}

/// `undefined` (a Node SDK's unset field) and the empty string mean "not given".
fn is_present(value: &str) -> bool {
    !value.is_empty() && value != "undefined"
}

/// `orders[0]`, `orders[]` and `orders[x]` all add to `orders`.
fn array_base(name: &str) -> Option<&str> {
    let open = name.find('[')?;
    (open > 0 && name.ends_with(']')).then(|| &name[..open])
}

fn json_scalar(value: serde_json::Value) -> Result<Option<String>, ProtocolError> {
    Ok(match value {
        serde_json::Value::Null => None,
        serde_json::Value::String(s) => Some(s).filter(|s| is_present(s)),
        serde_json::Value::Number(n) => Some(n.to_string()),
        serde_json::Value::Bool(b) => Some(if b { "1" } else { "0" }.to_owned()),
        serde_json::Value::Array(_) | serde_json::Value::Object(_) => {
            return Err(ProtocolError::IncorrectRequest);
        }
    })
}

/// Strict percent-decoding: `+` is a space, `%XX` a byte, a stray `%` stays literal (as PHP
/// leaves it), and the result must be UTF-8.
fn percent_decode(input: &[u8]) -> Result<String, ProtocolError> {
    let mut out = Vec::with_capacity(input.len());
    let mut i = 0;
    while i < input.len() {
        match input[i] {
            b'+' => out.push(b' '),
            b'%' if i + 2 < input.len() => match (hex(input[i + 1]), hex(input[i + 2])) {
                (Some(h), Some(l)) => {
                    out.push(h << 4 | l);
                    i += 2;
                }
                _ => out.push(b'%'),
            },
            b => out.push(b),
        }
        i += 1;
    }
    String::from_utf8(out).map_err(|_| ProtocolError::IncorrectRequest)
}

fn hex(b: u8) -> Option<u8> {
    match b {
        b'0'..=b'9' => Some(b - b'0'),
        b'a'..=b'f' => Some(b - b'a' + 10),
        b'A'..=b'F' => Some(b - b'A' + 10),
        _ => None,
    }
}
