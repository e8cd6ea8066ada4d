//! Events to and from the WIT `event` record.
//!
//! Going in, events are lowered into the guest straight from borrowed text:
//! [`EventView`] points into each event's canonical JSON (or, for strings that
//! had escapes, into one scratch buffer per call), so a call allocates a few
//! buffers rather than several strings per event.

use wasmtime::component::{ComponentType, Lower};

use super::sandbox::wit;
use crate::event::Event;
use crate::json;

/// The WIT `event` record over borrowed text (lowers exactly like
/// `wit::Event`, which the host's type check confirms at instantiation).
#[derive(Debug, Clone, Copy, PartialEq, Eq, ComponentType, Lower)]
#[component(record)]
pub(crate) struct EventView<'a> {
    pub name: &'a str,
    pub channel: &'a str,
    #[component(name = "user-id")]
    pub user_id: Option<&'a str>,
    #[component(name = "socket-id")]
    pub socket_id: Option<&'a str>,
    pub event: Option<&'a str>,
    pub data: Option<&'a str>,
    #[component(name = "subscription-count")]
    pub subscription_count: Option<u64>,
    pub extra: Option<&'a str>,
}

/// The WIT `batch` record over borrowed events.
#[derive(Debug, Clone, Copy, ComponentType, Lower)]
#[component(record)]
pub(crate) struct BatchView<'a> {
    #[component(name = "time-ms")]
    pub time_ms: u64,
    pub events: &'a [EventView<'a>],
}

/// The WIT `context` record over borrowed text.
#[derive(Debug, Clone, Copy, ComponentType, Lower)]
#[component(record)]
pub(crate) struct ContextView<'a> {
    #[component(name = "app-id")]
    pub app_id: &'a str,
    pub webhook: &'a str,
    pub config: &'a str,
}

/// The largest integer a double (JavaScript's number) holds exactly.
const MAX_SAFE_INTEGER: u64 = (1 << 53) - 1;

/// Where a field's text lives: a range of the event's JSON, or of the scratch
/// buffer (unescaped strings, assembled `extra` objects).
#[derive(Debug, Clone, Copy)]
enum Text {
    Event(usize, usize),
    Scratch(usize, usize),
}

impl Text {
    /// The text itself, from the event's JSON or the scratch buffer.
    fn resolve<'a>(self, event_json: &'a str, scratch: &'a str) -> &'a str {
        match self {
            Text::Event(a, b) => &event_json[a..b],
            Text::Scratch(a, b) => &scratch[a..b],
        }
    }
}

/// The optional fields of one event, located.
#[derive(Debug, Default, Clone, Copy)]
struct Fields {
    /// Found by [`fast_fields`] only (the parsed path takes them from the
    /// [`Event`]).
    name: Option<Text>,
    channel: Option<Text>,
    user_id: Option<Text>,
    socket_id: Option<Text>,
    event: Option<Text>,
    data: Option<Text>,
    subscription_count: Option<u64>,
    extra: Option<Text>,
}

impl Fields {
    /// The WIT view of one event whose fields these are: texts resolved
    /// against its JSON and `scratch`.
    fn view<'a>(self, json: &'a str, scratch: &'a str, name: &'a str, channel: &'a str) -> EventView<'a> {
        let text = |t: Option<Text>| t.map(|t| t.resolve(json, scratch));
        EventView {
            name,
            channel,
            user_id: text(self.user_id),
            socket_id: text(self.socket_id),
            event: text(self.event),
            data: text(self.data),
            subscription_count: self.subscription_count,
            extra: text(self.extra),
        }
    }
}

/// The WIT view of `events`: the known fields typed, the rest as `extra`.
/// Texts that need unescaping or assembling are written to `scratch`.
pub(crate) fn event_views<'a>(events: &'a [Event], scratch: &'a mut String) -> Vec<EventView<'a>> {
    scratch.clear();
    let fields: Vec<Fields> = events
        .iter()
        .map(|event| {
            let mark = scratch.len();
            fast_fields(&event.json, scratch).unwrap_or_else(|| {
                scratch.truncate(mark);
                parsed_fields(event, scratch)
            })
        })
        .collect();
    let scratch: &'a str = scratch;
    events
        .iter()
        .zip(fields)
        .map(|(event, f)| f.view(&event.json, scratch, &event.name, &event.channel))
        .collect()
}

/// The `time_ms` and events of a signed body as WIT views, found in one
/// pass over its text: the body is `{"time_ms":T,"events":[e1,…]}` exactly
/// as [`crate::event::render_body`] writes it, every event already
/// canonical, so nothing is parsed again. `None` when the body is not of
/// that shape or an event needs the parser (see [`fast_fields`]); the
/// caller then parses it.
pub(crate) fn signed_body_views<'a>(body: &'a str, scratch: &'a mut String) -> Option<(u64, Vec<EventView<'a>>)> {
    let rest = body.strip_prefix(r#"{"time_ms":"#)?;
    let digits = rest.find(',')?;
    let time_ms: u64 = rest[..digits].parse().ok()?;
    let events = rest[digits..].strip_prefix(r#","events":["#)?.strip_suffix("]}")?;
    let bytes = events.as_bytes();
    let mut texts = Vec::new();
    let mut i = 0;
    while i < bytes.len() {
        let end = object_end(bytes, i)?;
        texts.push(&events[i..end]);
        i = end;
        match bytes.get(i) {
            None => break,
            Some(b',') if i + 1 < bytes.len() => i += 1,
            Some(_) => return None,
        }
    }
    scratch.clear();
    let fields = texts
        .iter()
        .map(|text| fast_fields(text, scratch))
        .collect::<Option<Vec<Fields>>>()?;
    let scratch: &'a str = scratch;
    let views = texts
        .iter()
        .zip(fields)
        .map(|(event, f)| {
            let text = |t: Option<Text>| t.map(|t| t.resolve(event, scratch));
            Some(f.view(event, scratch, text(f.name)?, text(f.channel)?))
        })
        .collect::<Option<Vec<_>>>()?;
    Some((time_ms, views))
}

/// The index just past the JSON object or array starting at `start`.
fn object_end(bytes: &[u8], start: usize) -> Option<usize> {
    if !matches!(bytes.get(start), Some(b'{' | b'[')) {
        return None;
    }
    let mut depth = 0usize;
    let mut i = start;
    loop {
        match *bytes.get(i)? {
            b'"' => {
                i = string_end(bytes, i)?.0;
                continue;
            }
            b'{' | b'[' => depth += 1,
            b'}' | b']' => {
                depth -= 1;
                if depth == 0 {
                    return Some(i + 1);
                }
            }
            _ => {}
        }
        i += 1;
    }
}

/// One pass over the canonical text (no whitespace, valid JSON), taking
/// unescaped strings in place and copying `extra` members byte for byte;
/// `None` for anything unusual (an escaped key, an object or array value),
/// which [`parsed_fields`] handles.
fn fast_fields(text: &str, scratch: &mut String) -> Option<Fields> {
    let bytes = text.as_bytes();
    let mut out = Fields::default();
    let mut extra: Option<String> = None;
    let mut i = 1; // past '{'
    if bytes.first() != Some(&b'{') {
        return None;
    }
    while i < bytes.len() && bytes[i] != b'}' {
        let (key_end, key_escaped) = string_end(bytes, i)?;
        if key_escaped {
            return None;
        }
        let key = &text[i + 1..key_end - 1];
        let value_start = key_end + 1;
        let (value_end, value_escaped) = value_end(bytes, value_start)?;
        let mut string = || -> Option<Text> {
            if bytes[value_start] != b'"' {
                return None;
            }
            let (a, b) = (value_start + 1, value_end - 1);
            if !value_escaped {
                return Some(Text::Event(a, b));
            }
            let mark = scratch.len();
            if unescape_into(&text[a..b], scratch) {
                Some(Text::Scratch(mark, scratch.len()))
            } else {
                scratch.truncate(mark);
                None
            }
        };
        let taken = match key {
            "name" => {
                out.name = string();
                true
            }
            "channel" => {
                out.channel = string();
                true
            }
            "user_id" => string().map(|s| out.user_id = Some(s)).is_some(),
            "socket_id" => string().map(|s| out.socket_id = Some(s)).is_some(),
            "event" => string().map(|s| out.event = Some(s)).is_some(),
            "data" => string().map(|s| out.data = Some(s)).is_some(),
            // Beyond 2^53 the parser's reading (through a double, as
            // JavaScript's) is the reference: leave such counts to it.
            "subscription_count" => match text[value_start..value_end].parse::<u64>() {
                Ok(n) if n <= MAX_SAFE_INTEGER => {
                    out.subscription_count = Some(n);
                    true
                }
                Ok(_) => return None,
                Err(_) => false,
            },
            _ => false,
        };
        if !taken {
            let extra = extra.get_or_insert_with(String::new);
            extra.push(if extra.is_empty() { '{' } else { ',' });
            extra.push_str(&text[i..value_end]);
        }
        i = value_end;
        if bytes.get(i) == Some(&b',') {
            i += 1;
        }
    }
    if let Some(extra) = extra {
        let mark = scratch.len();
        scratch.push_str(&extra);
        scratch.push('}');
        out.extra = Some(Text::Scratch(mark, scratch.len()));
    }
    Some(out)
}
/// Appends the text of a JSON string body (between the quotes, from valid
/// JSON) to `out`; `false` if it holds a lone surrogate, which no Rust string
/// can hold.
fn unescape_into(escaped: &str, out: &mut String) -> bool {
    let bytes = escaped.as_bytes();
    let mut i = 0;
    while i < bytes.len() {
        let run = memchr::memchr(b'\\', &bytes[i..]).map_or(bytes.len(), |p| i + p);
        out.push_str(&escaped[i..run]);
        if run == bytes.len() {
            break;
        }
        let ch = match bytes.get(run + 1) {
            Some(b'"') => '"',
            Some(b'\\') => '\\',
            Some(b'/') => '/',
            Some(b'b') => '\u{8}',
            Some(b'f') => '\u{c}',
            Some(b'n') => '\n',
            Some(b'r') => '\r',
            Some(b't') => '\t',
            Some(b'u') => {
                let Some(unit) = hex4(escaped, run + 2) else {
                    return false;
                };
                i = run + 6;
                let cp = match unit {
                    0xD800..=0xDBFF => {
                        let low = escaped
                            .get(i..i + 2)
                            .filter(|s| *s == "\\u")
                            .and_then(|_| hex4(escaped, i + 2))
                            .filter(|low| (0xDC00..=0xDFFF).contains(low));
                        let Some(low) = low else { return false };
                        i += 6;
                        0x10000 + ((unit - 0xD800) << 10) + (low - 0xDC00)
                    }
                    0xDC00..=0xDFFF => return false,
                    _ => unit,
                };
                let Some(ch) = char::from_u32(cp) else { return false };
                out.push(ch);
                continue;
            }
            _ => return false,
        };
        out.push(ch);
        i = run + 2;
    }
    true
}

fn hex4(text: &str, at: usize) -> Option<u32> {
    u32::from_str_radix(text.get(at..at + 4)?, 16).ok()
}

/// The index just past the string starting at `start` (a `"`), and whether
/// the string has escapes.
fn string_end(bytes: &[u8], start: usize) -> Option<(usize, bool)> {
    if bytes.get(start) != Some(&b'"') {
        return None;
    }
    let mut i = start + 1;
    let mut escaped = false;
    loop {
        i += find_quote_or_backslash(bytes.get(i..)?)?;
        if bytes[i] == b'"' {
            return Some((i + 1, escaped));
        }
        escaped = true;
        i += 2;
    }
}

/// The first `"` or `\\` in `bytes`. Most strings here are a few bytes long
/// (keys, ids), where a plain loop beats setting up a vectorised search.
fn find_quote_or_backslash(bytes: &[u8]) -> Option<usize> {
    let head = bytes.len().min(16);
    match bytes[..head].iter().position(|&b| b == b'"' || b == b'\\') {
        Some(at) => Some(at),
        None => memchr::memchr2(b'"', b'\\', &bytes[head..]).map(|at| head + at),
    }
}

/// The index just past the JSON value starting at `start`, and whether it is
/// a string with escapes; `None` for an object or array (left to the parser).
fn value_end(bytes: &[u8], start: usize) -> Option<(usize, bool)> {
    match bytes.get(start)? {
        b'"' => string_end(bytes, start),
        b'{' | b'[' => None,
        _ => {
            let len = memchr::memchr2(b',', b'}', &bytes[start..]).unwrap_or(bytes.len() - start);
            Some((start + len, false))
        }
    }
}

/// The same fields through the full parser, every text in `scratch`.
fn parsed_fields(event: &Event, scratch: &mut String) -> Fields {
    let mut out = Fields::default();
    let Ok(value) = json::parse(event.json.as_bytes()) else {
        return out;
    };
    let Some(object) = value.as_object() else {
        return out;
    };
    let mut push = |s: &str| {
        let mark = scratch.len();
        scratch.push_str(s);
        Text::Scratch(mark, scratch.len())
    };
    let mut extra = String::new();
    for (key, value) in object {
        let taken = match key.as_str() {
            Some("name") | Some("channel") => true,
            Some("user_id") => value.as_str().map(|s| out.user_id = Some(push(s))).is_some(),
            Some("socket_id") => value.as_str().map(|s| out.socket_id = Some(push(s))).is_some(),
            Some("event") => value.as_str().map(|s| out.event = Some(push(s))).is_some(),
            Some("data") => value.as_str().map(|s| out.data = Some(push(s))).is_some(),
            Some("subscription_count") => value
                .as_f64()
                // `u64::MAX as f64` is 2^64 itself, which does not fit.
                .filter(|n| *n >= 0.0 && n.fract() == 0.0 && *n < u64::MAX as f64)
                .map(|n| out.subscription_count = Some(n as u64))
                .is_some(),
            _ => false,
        };
        if !taken {
            extra.push(if extra.is_empty() { '{' } else { ',' });
            key.write_canonical(&mut extra);
            extra.push(':');
            value.write_canonical(&mut extra);
        }
    }
    if !extra.is_empty() {
        extra.push('}');
        out.extra = Some(push(&extra));
    }
    out
}

/// An event a filter wrote (`replace`): `name`, `channel`, then `event`,
/// `data`, `socket_id`, `user_id`, `subscription_count` where present, then
/// the `extra` fields, canonicalised as JavaScript would.
pub(crate) fn from_wit(event: &wit::Event, index: usize) -> Result<Event, String> {
    if event.name.is_empty() {
        return Err(format!("replace: event {index} has an empty name"));
    }
    if event.channel.is_empty() {
        return Err(format!("replace: event {index} has an empty channel"));
    }
    let mut text = String::with_capacity(64);
    let field = |text: &mut String, key: &str, value: &str| {
        text.push(if text.is_empty() { '{' } else { ',' });
        json::write_js_string(key, text);
        text.push(':');
        json::write_js_string(value, text);
    };
    field(&mut text, "name", &event.name);
    field(&mut text, "channel", &event.channel);
    for (key, value) in [
        ("event", &event.event),
        ("data", &event.data),
        ("socket_id", &event.socket_id),
        ("user_id", &event.user_id),
    ] {
        if let Some(value) = value {
            field(&mut text, key, value);
        }
    }
    if let Some(count) = event.subscription_count {
        text.push_str(",\"subscription_count\":");
        text.push_str(&count.to_string());
    }
    if let Some(extra) = &event.extra {
        let parsed = json::parse(extra.as_bytes())
            .map_err(|e| format!("replace: event {index} has an `extra` that is not JSON: {e}"))?;
        let object = parsed
            .as_object()
            .ok_or_else(|| format!("replace: event {index} has an `extra` that is not a JSON object"))?;
        for (key, value) in object {
            let typed = match key.as_str() {
                Some("name" | "channel") => true,
                Some("event") => event.event.is_some(),
                Some("data") => event.data.is_some(),
                Some("socket_id") => event.socket_id.is_some(),
                Some("user_id") => event.user_id.is_some(),
                Some("subscription_count") => event.subscription_count.is_some(),
                _ => false,
            };
            if typed {
                return Err(format!(
                    "replace: event {index} has `{}` both as a field and in `extra`",
                    key.as_str_lossy()
                ));
            }
            text.push(',');
            key.write_canonical(&mut text);
            text.push(':');
            value.write_canonical(&mut text);
        }
    }
    text.push('}');
    // Integer-like keys from `extra` move first and duplicates collapse, as
    // JSON.stringify(JSON.parse(…)) would do at the receiver.
    let canonical = json::canonicalize(text.as_bytes()).map_err(|e| format!("replace: event {index}: {e}"))?;
    Ok(Event {
        name: event.name.clone().into_boxed_str(),
        channel: event.channel.clone().into_boxed_str(),
        json: canonical.into_boxed_str(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event(json: &str) -> Event {
        let value = json::parse(json.as_bytes()).unwrap();
        Event::from_value(&value, 0).unwrap()
    }

    /// The fields of one event as `locate` finds them, owned.
    fn view_with(event: &Event, locate: fn(&Event, &mut String) -> Option<Fields>) -> Option<wit::Event> {
        let mut scratch = String::new();
        let fields = locate(event, &mut scratch)?;
        let text = |t: Option<Text>| t.map(|t| t.resolve(&event.json, &scratch).to_string());
        Some(wit::Event {
            name: event.name.to_string(),
            channel: event.channel.to_string(),
            user_id: text(fields.user_id),
            socket_id: text(fields.socket_id),
            event: text(fields.event),
            data: text(fields.data),
            subscription_count: fields.subscription_count,
            extra: text(fields.extra),
        })
    }

    fn owned_view(v: &EventView<'_>) -> wit::Event {
        wit::Event {
            name: v.name.to_string(),
            channel: v.channel.to_string(),
            user_id: v.user_id.map(str::to_string),
            socket_id: v.socket_id.map(str::to_string),
            event: v.event.map(str::to_string),
            data: v.data.map(str::to_string),
            subscription_count: v.subscription_count,
            extra: v.extra.map(str::to_string),
        }
    }

    fn to_wit(event: &Event) -> wit::Event {
        let mut scratch = String::new();
        owned_view(&event_views(std::slice::from_ref(event), &mut scratch)[0])
    }

    #[test]
    fn known_fields_are_typed_and_the_rest_is_extra() {
        let e = to_wit(&event(
            r#"{"name":"client_event","channel":"c","event":"client-x","data":"{}","socket_id":"1.2","user_id":"u","z":1,"3":true}"#,
        ));
        assert_eq!(e.event.as_deref(), Some("client-x"));
        assert_eq!(e.data.as_deref(), Some("{}"));
        assert_eq!(e.user_id.as_deref(), Some("u"));
        assert_eq!(e.extra.as_deref(), Some(r#"{"3":true,"z":1}"#));
        let count = to_wit(&event(
            r#"{"name":"subscription_count","channel":"c","subscription_count":4,"data":{"x":1}}"#,
        ));
        assert_eq!(count.subscription_count, Some(4));
        assert_eq!(count.data, None);
        assert_eq!(count.extra.as_deref(), Some(r#"{"data":{"x":1}}"#));
    }

    #[test]
    fn the_fast_path_agrees_with_the_parser() {
        // (event, whether the fast path takes it rather than declining)
        for (text, fast) in [
            (r#"{"name":"n","channel":"c"}"#, true),
            (
                r#"{"2":[1,{"a":"}"}],"name":"client_event","channel":"c\"q","event":"e\u0001","data":"{\"x\":[1,2]}","user_id":"u","socket_id":"1.2","subscription_count":3,"z":{"k":"v,}"},"t":true,"n":null,"f":1.5}"#,
                false,
            ),
            (
                r#"{"name":"client_event","channel":"c\"q\\","event":"e\u0001","data":"{\"x\":[1,2]}","user_id":"u","socket_id":"1.2","subscription_count":3,"t":true,"n":null,"f":1.5,"s":"\\\""}"#,
                true,
            ),
            (
                r#"{"name":"s","channel":"c","subscription_count":1.5,"data":{"obj":1},"user_id":5,"event":"\ud800"}"#,
                false,
            ),
            (
                r#"{"name":"s","channel":"c","subscription_count":1.5,"user_id":5,"event":"\ud800"}"#,
                true,
            ),
            (
                r#"{"name":"s","channel":"c","subscription_count":9007199254740991}"#,
                true,
            ),
            (
                r#"{"name":"s","channel":"c","subscription_count":9223372036854776000}"#,
                false,
            ),
            (
                r#"{"name":"s","channel":"c","subscription_count":18446744073709552000}"#,
                true,
            ),
            (
                r#"{"name":"client_event","channel":"c","data":"tab\tquote\"slash\\nl\n\u001f é 😀 \ud83d\ude00","event":"\udc00x","user_id":"\ud83d"}"#,
                true,
            ),
        ] {
            let e = event(text);
            let parsed = view_with(&e, |e, s| Some(parsed_fields(e, s)));
            let quick = view_with(&e, |e, s| fast_fields(&e.json, s));
            assert_eq!(quick.is_some(), fast, "{text}");
            if let Some(quick) = quick {
                assert_eq!(format!("{:?}", Some(quick)), format!("{parsed:?}"), "{text}");
            }
            // Whichever path it takes, the views are the parser's.
            assert_eq!(format!("{:?}", Some(to_wit(&e))), format!("{parsed:?}"), "{text}");
        }
    }

    #[test]
    fn a_signed_body_reads_back_as_its_events_without_the_parser() {
        let texts = [
            r#"{"name":"n","channel":"c"}"#,
            r#"{"name":"client_event","channel":"c\"q\\","event":"e\u0001","data":"{\"x\":[1,2]}","user_id":"u","socket_id":"1.2","subscription_count":3,"t":true,"n":null,"f":1.5,"s":"\\\""}"#,
            r#"{"name":"client_event","channel":"c","data":"tab\tquote\"slash\\nl\n é 😀","user_id":"u"}"#,
        ];
        let events: Vec<Event> = texts.iter().map(|t| event(t)).collect();
        let joined: Vec<&str> = events.iter().map(|e| &*e.json).collect();
        let body = crate::event::render_body(1_700_000_000_123, &joined.join(","));
        let mut scratch = String::new();
        let (time_ms, views) = signed_body_views(&body, &mut scratch).expect("a rendered body takes the quick path");
        assert_eq!(time_ms, 1_700_000_000_123);
        let quick: Vec<wit::Event> = views.iter().map(owned_view).collect();
        let parsed: Vec<wit::Event> = events.iter().map(to_wit).collect();
        assert_eq!(format!("{quick:?}"), format!("{parsed:?}"));

        let empty = crate::event::render_body(5, "");
        assert_eq!(
            signed_body_views(&empty, &mut scratch).map(|(t, v)| (t, v.len())),
            Some((5, 0))
        );
        // Anything else is left to the parser.
        for other in [
            r#"{"events":[{"name":"n","channel":"c"}]}"#,
            r#"{"time_ms":1,"events":[{"name":"n","channel":"c"},]}"#,
            r#"{"time_ms":1,"events":[{"name":"n","channel":"c"}"#,
            r#"{"time_ms":1,"events":[{"name":"n"}]}"#,
            r#"{"time_ms":1,"events":[{"name":"n","channel":5}]}"#,
            r#"{"time_ms":1,"events":[{"name":"n","channel":"c","data":{"a":1}}]}"#,
        ] {
            assert!(signed_body_views(other, &mut scratch).is_none(), "{other}");
        }
    }

    #[test]
    fn unescaping_decodes_pairs_and_refuses_lone_surrogates() {
        let mut out = String::new();
        assert!(unescape_into(r#"a\"b\\c\/d\b\f\n\r\t\u00e9\ud83d\ude00"#, &mut out));
        assert_eq!(out, "a\"b\\c/d\u{8}\u{c}\n\r\té😀");
        for lone in [r#"\ud800"#, r#"\ud800x"#, r#"\udc00"#, r#"\ud800\u0041"#] {
            assert!(!unescape_into(lone, &mut String::new()), "{lone}");
        }
    }

    #[test]
    fn replaced_events_are_written_in_contract_order_and_canonical() {
        let wit = wit::Event {
            name: "n".into(),
            channel: "c".into(),
            user_id: Some("u".into()),
            socket_id: None,
            event: Some("e".into()),
            data: Some("d\u{1}".into()),
            subscription_count: Some(2),
            extra: Some(r#"{"b":1.0,"10":"x","b":[]}"#.into()),
        };
        let out = from_wit(&wit, 0).unwrap();
        assert_eq!(
            &*out.json,
            r#"{"10":"x","name":"n","channel":"c","event":"e","data":"d\u0001","user_id":"u","subscription_count":2,"b":[]}"#
        );
        let mut twice = wit.clone();
        twice.extra = Some(r#"{"user_id":"other"}"#.into());
        assert!(
            from_wit(&twice, 1)
                .unwrap_err()
                .contains("`user_id` both as a field and in `extra`")
        );
    }

    #[test]
    fn replaced_events_need_a_name_and_channel() {
        let mut wit = to_wit(&event(r#"{"name":"n","channel":"c"}"#));
        wit.channel.clear();
        assert!(from_wit(&wit, 3).unwrap_err().contains("event 3 has an empty channel"));
    }
}
