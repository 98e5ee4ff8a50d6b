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
#[derive(Clone, Default, PartialEq, Eq)]
pub struct Params {
    map: HashMap<String, Value>,
}

/// Debug output never shows the `key` parameter: requests end up in logs and panics.
impl std::fmt::Debug for Params {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let mut names: Vec<&String> = self.map.keys().collect();
        names.sort();
        let mut map = f.debug_map();
        for name in names {
            if name == "key" {
                map.entry(name, &"***");
            } else {
                map.entry(name, &self.map[name]);
            }
        }
        map.finish()
    }
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

    /// A plain text parameter, trimmed; blank or `undefined` once trimmed is not given. An
    /// array where one value belongs is malformed.
    pub fn text(&self, name: &str) -> Result<Option<&str>, ProtocolError> {
        match self.map.get(name) {
            None => Ok(None),
            Some(Value::One(text)) => Ok(Some(text.trim()).filter(|t| is_present(t))),
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
    if !input.iter().any(|&b| b == b'%' || b == b'+') {
        // Most values (keys, actions, ids) need no decoding.
        return String::from_utf8(input.to_vec()).map_err(|_| ProtocolError::IncorrectRequest);
    }
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

#[cfg(test)]
mod tests {
    use super::*;

    const FORM: Option<&str> = Some("application/x-www-form-urlencoded");
    const JSON: Option<&str> = Some("application/json");

    fn form(s: &str) -> Params {
        Params::parse_form(s.as_bytes()).unwrap()
    }

    fn json(s: &str) -> Params {
        Params::from_parts(None, JSON, s.as_bytes()).unwrap()
    }

    fn one(p: &Params, name: &str) -> Option<String> {
        match p.get(name) {
            Some(Value::One(text)) => Some(text.clone()),
            Some(Value::List(list)) => panic!("{name} is a list: {list:?}"),
            None => None,
        }
    }

    fn list(p: &Params, name: &str) -> Vec<String> {
        match p.get(name) {
            Some(Value::List(list)) => list.clone(),
            other => panic!("{name} is not a list: {other:?}"),
        }
    }

    #[test]
    fn post_form_as_the_php_client_sends_it() {
        let p = Params::from_parts(
            None,
            Some("application/x-www-form-urlencoded; charset=UTF-8"),
            b"key=abc123&action=add&service=1&link=https%3A%2F%2Fexample.com%2Fp%3Fa%3D1%26b%3D2&quantity=100",
        )
        .unwrap();
        assert_eq!(p.len(), 5);
        assert_eq!(p.text("key"), Ok(Some("abc123")));
        assert_eq!(p.text("action"), Ok(Some("add")));
        assert_eq!(p.text("service"), Ok(Some("1")));
        assert_eq!(p.text("link"), Ok(Some("https://example.com/p?a=1&b=2")));
        assert_eq!(p.text("quantity"), Ok(Some("100")));
    }

    #[test]
    fn commas_newlines_and_spaces_decode() {
        let p = form(
            "orders=1%2C2%2C3&comments=nice%0Agreat%0D%0Awow&a=two+words&b=two%20words&c=a%2Bb",
        );
        assert_eq!(one(&p, "orders").as_deref(), Some("1,2,3"));
        assert_eq!(one(&p, "comments").as_deref(), Some("nice\ngreat\r\nwow"));
        assert_eq!(one(&p, "a").as_deref(), Some("two words"));
        assert_eq!(one(&p, "b").as_deref(), Some("two words"));
        assert_eq!(one(&p, "c").as_deref(), Some("a+b"));
        // Lower-case hex, multi-byte UTF-8, and names are decoded too.
        let p = form("na%6De=%e2%9c%93+%D0%BF%D1%80%D0%B8%D0%B2%D0%B5%D1%82");
        assert_eq!(one(&p, "name").as_deref(), Some("✓ привет"));
        // Raw (unencoded) UTF-8 and a literal CR LF pass through untouched.
        let p = form("comments=один\r\nдва");
        assert_eq!(one(&p, "comments").as_deref(), Some("один\r\nдва"));
    }

    #[test]
    fn stray_percent_signs_stay_literal() {
        let p = form("a=100%&b=%zz&c=%4&d=%&e=50%25");
        assert_eq!(one(&p, "a").as_deref(), Some("100%"));
        assert_eq!(one(&p, "b").as_deref(), Some("%zz"));
        assert_eq!(one(&p, "c").as_deref(), Some("%4"));
        assert_eq!(one(&p, "d").as_deref(), Some("%"));
        assert_eq!(one(&p, "e").as_deref(), Some("50%"));
    }

    #[test]
    fn odd_pairs() {
        // Empty pairs are skipped, a name without `=` is an empty (absent) value, only the
        // first `=` splits.
        let p = form("&&action=status&&flag&x=a=b&");
        assert_eq!(p.len(), 2);
        assert_eq!(p.text("action"), Ok(Some("status")));
        assert!(!p.contains("flag"));
        assert_eq!(one(&p, "x").as_deref(), Some("a=b"));
        // A repeated plain name keeps its last value, as PHP does.
        let p = form("service=1&service=2");
        assert_eq!(p.text("service"), Ok(Some("2")));
        // ... also when the last one is empty: the parameter is then not given.
        let p = form("service=1&service=");
        assert!(!p.contains("service"));
        assert_eq!(Params::parse_form(b""), Ok(Params::default()));
        assert!(Params::parse_form(b"").unwrap().is_empty());
    }

    #[test]
    fn get_query_string() {
        let p = Params::from_parts(Some("key=k&action=status&order=23501"), None, b"").unwrap();
        assert_eq!(p.len(), 3);
        assert_eq!(p.text("order"), Ok(Some("23501")));
        // No query, no body: nothing, not an error.
        assert_eq!(Params::from_parts(None, None, b""), Ok(Params::default()));
        assert_eq!(
            Params::from_parts(Some(""), FORM, b""),
            Ok(Params::default())
        );
    }

    #[test]
    fn query_and_body_merge_and_the_body_wins() {
        let p = Params::from_parts(
            Some("key=fromquery&action=status&order=1"),
            FORM,
            b"action=balance&extra=1",
        )
        .unwrap();
        assert_eq!(p.text("key"), Ok(Some("fromquery")));
        assert_eq!(p.text("action"), Ok(Some("balance")));
        assert_eq!(p.text("order"), Ok(Some("1")));
        assert_eq!(p.text("extra"), Ok(Some("1")));
        assert_eq!(p.len(), 4);

        let p = Params::from_parts(
            Some("key=fromquery&service=9"),
            JSON,
            br#"{"service": 1, "action": "add"}"#,
        )
        .unwrap();
        assert_eq!(p.text("key"), Ok(Some("fromquery")));
        assert_eq!(p.text("service"), Ok(Some("1")));
        assert_eq!(p.text("action"), Ok(Some("add")));

        // An array in the body replaces the query's.
        let p = Params::from_parts(Some("orders[]=1&orders[]=2"), FORM, b"orders[]=3").unwrap();
        assert_eq!(list(&p, "orders"), ["3"]);
    }

    #[test]
    fn json_numbers_and_strings_alike() {
        let a =
            json(r#"{"key":"k","action":"add","service":1,"link":"https://x.y/z","quantity":100}"#);
        let b = json(
            r#"{"key":"k","action":"add","service":"1","link":"https://x.y/z","quantity":"100"}"#,
        );
        assert_eq!(a, b);
        assert_eq!(a.text("service"), Ok(Some("1")));
        assert_eq!(a.len(), 5);
        // Booleans become 1/0, other numbers keep their JSON spelling.
        let p = json(r#"{"a":true,"b":false,"c":-3,"d":1.5,"e":12345678901234567890}"#);
        assert_eq!(one(&p, "a").as_deref(), Some("1"));
        assert_eq!(one(&p, "b").as_deref(), Some("0"));
        assert_eq!(one(&p, "c").as_deref(), Some("-3"));
        assert_eq!(one(&p, "d").as_deref(), Some("1.5"));
        assert_eq!(one(&p, "e").as_deref(), Some("12345678901234567890"));
        // Escapes and newlines inside JSON strings.
        let p = json(r#"{"comments":"a\nb\r\nc","link":"https:\/\/x.y\/\u00e9"}"#);
        assert_eq!(one(&p, "comments").as_deref(), Some("a\nb\r\nc"));
        assert_eq!(one(&p, "link").as_deref(), Some("https://x.y/é"));
    }

    #[test]
    fn php_and_qs_arrays() {
        let p = form("action=status&orders[0]=1&orders[1]=2");
        assert_eq!(list(&p, "orders"), ["1", "2"]);
        let p = form("orders[]=1&orders[]=2&orders[]=3");
        assert_eq!(list(&p, "orders"), ["1", "2", "3"]);
        // Encoded brackets, as http_build_query writes them.
        let p = form("orders%5B0%5D=4&orders%5B1%5D=5");
        assert_eq!(list(&p, "orders"), ["4", "5"]);
        // Empty and `undefined` elements are dropped; an array of nothing is an empty list.
        let p = form("orders[]=1&orders[]=&orders[]=undefined&orders[]=2");
        assert_eq!(list(&p, "orders"), ["1", "2"]);
        let p = form("orders[]=");
        assert_eq!(list(&p, "orders"), Vec::<String>::new());
        // An array where one value belongs is malformed.
        assert_eq!(p.text("orders"), Err(ProtocolError::IncorrectRequest));
        // Not arrays: no name before the bracket, or no closing bracket.
        let p = form("[0]=1&a[=2");
        assert_eq!(one(&p, "[0]").as_deref(), Some("1"));
        assert_eq!(one(&p, "a[").as_deref(), Some("2"));
    }

    #[test]
    fn json_arrays() {
        let p = json(r#"{"orders":[1,"2",null,"",3],"comments":["a","b"]}"#);
        assert_eq!(list(&p, "orders"), ["1", "2", "3"]);
        assert_eq!(list(&p, "comments"), ["a", "b"]);
        let p = json(r#"{"orders":[]}"#);
        assert_eq!(list(&p, "orders"), Vec::<String>::new());
        assert_eq!(
            Params::parse_json(br#"{"orders":[[1,2]]}"#),
            Err(ProtocolError::IncorrectRequest)
        );
        assert_eq!(
            Params::parse_json(br#"{"orders":[{"id":1}]}"#),
            Err(ProtocolError::IncorrectRequest)
        );
    }

    #[test]
    fn undefined_and_empty_values_are_absent() {
        for body in [
            "runs=undefined&interval=undefined&link=x",
            "runs=&interval=&link=x",
            "runs&interval&link=x",
        ] {
            let p = form(body);
            assert!(!p.contains("runs"), "{body}");
            assert!(!p.contains("interval"), "{body}");
            assert_eq!(p.len(), 1, "{body}");
        }
        let p = json(r#"{"runs":"undefined","interval":"","country":null,"link":"x"}"#);
        assert_eq!(p.len(), 1);
        assert_eq!(p.get("country"), None);
        // `text` trims, and blank after trimming is absent too.
        let p = form("link=++&quantity=+100+");
        assert_eq!(p.text("link"), Ok(None));
        assert_eq!(p.text("quantity"), Ok(Some("100")));
        // ... and so is `undefined` once trimmed: it could not be forwarded as a value.
        let p = form("link=+undefined+&username=%0Aundefined%0A");
        assert_eq!(p.text("link"), Ok(None));
        assert_eq!(p.text("username"), Ok(None));
        // `Undefined` is a value: only the exact spelling the Node SDK sends is special.
        assert_eq!(form("x=Undefined").text("x"), Ok(Some("Undefined")));
        // `insert` follows the same rule.
        let mut p = Params::default();
        p.insert("a", "1");
        p.insert("b", "undefined");
        p.insert("c", "");
        assert_eq!(p.len(), 1);
        p.insert("a", "");
        assert!(p.is_empty());
    }

    #[test]
    fn json_that_is_not_a_flat_object_is_refused() {
        for body in [
            r#"{"action":"add","service":{"id":1}}"#,
            r#"[{"action":"balance"}]"#,
            r#""action=balance""#,
            "42",
            "null",
            r#"{"action":"balance""#,
            r#"{"action":"balance"} trailing"#,
            "{",
            "{'action':'balance'}",
        ] {
            assert_eq!(
                Params::from_parts(None, JSON, body.as_bytes()),
                Err(ProtocolError::IncorrectRequest),
                "{body}"
            );
        }
    }

    #[test]
    fn non_utf8_is_refused() {
        // Raw bytes in a form body, a query, a JSON body; percent-encoded in names and values.
        assert_eq!(
            Params::from_parts(None, FORM, b"action=add&link=\xff\xfe"),
            Err(ProtocolError::IncorrectRequest)
        );
        assert_eq!(
            Params::from_parts(None, JSON, b"{\"link\":\"\xff\"}"),
            Err(ProtocolError::IncorrectRequest)
        );
        for bad in [
            "link=%FF",
            "link=%C3",
            "link=%ED%A0%80",
            "%FF=1",
            "a=1&b=%80%80",
        ] {
            assert_eq!(
                Params::parse_form(bad.as_bytes()),
                Err(ProtocolError::IncorrectRequest),
                "{bad}"
            );
            assert_eq!(
                Params::from_parts(Some(bad), None, b""),
                Err(ProtocolError::IncorrectRequest),
                "{bad}"
            );
        }
    }

    #[test]
    fn multipart_is_refused_clearly() {
        let body =
            b"--X\r\nContent-Disposition: form-data; name=\"action\"\r\n\r\nbalance\r\n--X--\r\n";
        for ct in [
            "multipart/form-data; boundary=X",
            "Multipart/Form-Data;boundary=X",
            "multipart/form-data",
        ] {
            assert_eq!(
                Params::from_parts(Some("key=k"), Some(ct), body),
                Err(ProtocolError::UnsupportedBody),
                "{ct}"
            );
        }
        assert!(
            ProtocolError::UnsupportedBody
                .to_string()
                .starts_with("Incorrect request")
        );
    }

    #[test]
    fn body_kind_detection() {
        use BodyKind::*;
        assert_eq!(BodyKind::detect(JSON, b"action=balance"), Json);
        assert_eq!(
            BodyKind::detect(Some("application/json; charset=utf-8"), b""),
            Json
        );
        assert_eq!(BodyKind::detect(Some("APPLICATION/JSON"), b""), Json);
        assert_eq!(BodyKind::detect(Some("text/json"), b""), Json);
        assert_eq!(
            BodyKind::detect(Some("application/vnd.api+json"), b""),
            Json
        );
        assert_eq!(BodyKind::detect(FORM, b"action=balance"), Form);
        assert_eq!(
            BodyKind::detect(Some("text/plain"), b"action=balance"),
            Form
        );
        assert_eq!(BodyKind::detect(None, b"action=balance"), Form);
        assert_eq!(BodyKind::detect(None, b""), Form);
        // Without a telling content type, a body starting with `{` is JSON (curl -d with a
        // JSON string, PHP's curl default content type over a json_encode body).
        assert_eq!(BodyKind::detect(None, br#"{"action":"balance"}"#), Json);
        assert_eq!(BodyKind::detect(None, b" \r\n\t{}"), Json);
        assert_eq!(BodyKind::detect(FORM, br#"{"action":"balance"}"#), Json);
        assert_eq!(BodyKind::detect(None, b"[1]"), Form);
        assert_eq!(
            BodyKind::detect(Some("multipart/form-data; boundary=x"), b"{"),
            Multipart
        );

        let p = Params::from_parts(None, None, br#"{"action":"balance","key":"k"}"#).unwrap();
        assert_eq!(p.text("action"), Ok(Some("balance")));
        assert_eq!(p.len(), 2);
        let p = Params::from_parts(None, None, b"action=balance&key=k").unwrap();
        assert_eq!(p.text("action"), Ok(Some("balance")));
        assert_eq!(p.len(), 2);
    }
}
