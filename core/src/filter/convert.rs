//! Events to and from the WIT `event` record.

use super::host::wit;
use crate::event::Event;
use crate::json::{self, Value};

/// The WIT view of an event: the known fields typed, the rest as `extra`.
pub(crate) fn to_wit(event: &Event) -> wit::Event {
    fast_to_wit(event).unwrap_or_else(|| parsed_to_wit(event))
}

/// One pass over the canonical text (no whitespace, valid JSON), copying
/// `extra` members byte for byte; `None` for anything unusual (escaped keys),
/// which [`parsed_to_wit`] handles.
fn fast_to_wit(event: &Event) -> Option<wit::Event> {
    let text = &*event.json;
    let bytes = text.as_bytes();
    let mut out = bare(event);
    let mut extra = String::new();
    let mut i = 1; // past '{'
    if bytes.first() != Some(&b'{') {
        return None;
    }
    while i < bytes.len() && bytes[i] != b'}' {
        let key_end = string_end(bytes, i)?;
        let key = &text[i + 1..key_end - 1];
        if key.contains('\\') {
            return None;
        }
        let value_start = key_end + 1; // past ':'
        let value_end = value_end(bytes, value_start)?;
        let value = &text[value_start..value_end];
        let string = || -> Option<String> {
            let inner = value.strip_prefix('"')?.strip_suffix('"')?;
            if !inner.contains('\\') {
                return Some(inner.to_string());
            }
            json::parse(value.as_bytes()).ok()?.as_str().map(str::to_string)
        };
        let taken = match key {
            "name" | "channel" => true,
            "user_id" => string().map(|s| out.user_id = Some(s)).is_some(),
            "socket_id" => string().map(|s| out.socket_id = Some(s)).is_some(),
            "event" => string().map(|s| out.event = Some(s)).is_some(),
            "data" => string().map(|s| out.data = Some(s)).is_some(),
            "subscription_count" => value
                .parse::<u64>()
                .ok()
                .map(|n| out.subscription_count = Some(n))
                .is_some(),
            _ => false,
        };
        if !taken {
            extra.push(if extra.is_empty() { '{' } else { ',' });
            extra.push_str(&text[i..value_end]);
        }
        i = value_end;
        if bytes.get(i) == Some(&b',') {
            i += 1;
        }
    }
    if !extra.is_empty() {
        extra.push('}');
        out.extra = Some(extra);
    }
    Some(out)
}

/// The index just past the string starting at `start` (a `"`).
fn string_end(bytes: &[u8], start: usize) -> Option<usize> {
    if bytes.get(start) != Some(&b'"') {
        return None;
    }
    let mut i = start + 1;
    while i < bytes.len() {
        match bytes[i] {
            b'\\' => i += 2,
            b'"' => return Some(i + 1),
            _ => i += 1,
        }
    }
    None
}

/// The index just past the JSON value starting at `start`.
fn value_end(bytes: &[u8], start: usize) -> Option<usize> {
    match bytes.get(start)? {
        b'"' => string_end(bytes, start),
        b'{' | b'[' => {
            let mut depth = 0usize;
            let mut i = start;
            while i < bytes.len() {
                match bytes[i] {
                    b'"' => {
                        i = string_end(bytes, i)?;
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
            None
        }
        _ => {
            let len = bytes[start..]
                .iter()
                .position(|b| matches!(b, b',' | b'}'))
                .unwrap_or(bytes.len() - start);
            Some(start + len)
        }
    }
}

/// An event's WIT record with only `name` and `channel` filled in.
fn bare(event: &Event) -> wit::Event {
    wit::Event {
        name: event.name.to_string(),
        channel: event.channel.to_string(),
        user_id: None,
        socket_id: None,
        event: None,
        data: None,
        subscription_count: None,
        extra: None,
    }
}

/// The same view through the full parser.
fn parsed_to_wit(event: &Event) -> wit::Event {
    let mut out = bare(event);
    let Ok(value) = json::parse(event.json.as_bytes()) else {
        return out;
    };
    let Some(object) = value.as_object() else {
        return out;
    };
    let mut extra = String::new();
    for (key, value) in object {
        let text = |v: &Value| v.as_str().map(str::to_string);
        let taken = match key.as_str() {
            Some("name") | Some("channel") => true,
            Some("user_id") => text(value).map(|s| out.user_id = Some(s)).is_some(),
            Some("socket_id") => text(value).map(|s| out.socket_id = Some(s)).is_some(),
            Some("event") => text(value).map(|s| out.event = Some(s)).is_some(),
            Some("data") => text(value).map(|s| out.data = Some(s)).is_some(),
            Some("subscription_count") => value
                .as_f64()
                .filter(|n| *n >= 0.0 && n.fract() == 0.0 && *n <= u64::MAX as f64)
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
        out.extra = Some(extra);
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
        for text in [
            r#"{"name":"n","channel":"c"}"#,
            r#"{"2":[1,{"a":"}"}],"name":"client_event","channel":"c\"q","event":"e\u0001","data":"{\"x\":[1,2]}","user_id":"u","socket_id":"1.2","subscription_count":3,"z":{"k":"v,}"},"t":true,"n":null,"f":1.5}"#,
            r#"{"name":"s","channel":"c","subscription_count":1.5,"data":{"obj":1},"user_id":5,"event":"\ud800"}"#,
        ] {
            let e = event(text);
            assert_eq!(
                format!("{:?}", fast_to_wit(&e)),
                format!("{:?}", Some(parsed_to_wit(&e))),
                "{text}"
            );
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
