//! Pusher webhook events as Hookline carries them: the routing fields
//! decoded, and the whole object kept as the exact text JavaScript's
//! `JSON.stringify` gives for it, so every field (known or not) and its order
//! survive to the receiver byte for byte.

pub use crate::delivery::render_body;
use crate::json;

/// One event, ready to be routed and delivered.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Event {
    /// The event's `name` (`channel_occupied`, `client_event`, …).
    pub name: Box<str>,
    /// The event's `channel`.
    pub channel: Box<str>,
    /// The whole event object as canonical JSON text (keys in their order,
    /// no insignificant whitespace, strings escaped as `JSON.stringify`
    /// escapes them).
    pub json: Box<str>,
}

impl Event {
    /// Builds an event from a parsed JSON object, checking that it has
    /// string `name` and `channel` fields. `index` names it in errors.
    pub fn from_value(value: &json::Value, index: usize) -> Result<Self, BodyError> {
        if value.as_object().is_none() {
            return Err(BodyError(format!("event {index} is not a JSON object")));
        }
        let field = |key: &str| -> Result<Box<str>, BodyError> {
            match value.get(key) {
                Some(v) => v
                    .as_str()
                    .map(Box::from)
                    .ok_or_else(|| BodyError(format!("event {index} has a `{key}` that is not a string"))),
                None => Err(BodyError(format!("event {index} has no `{key}`"))),
            }
        };
        let name = field("name")?;
        let channel = field("channel")?;
        let mut text = String::with_capacity(value.canonical_len_bound());
        value.write_canonical(&mut text);
        Ok(Self {
            name,
            channel,
            json: text.into_boxed_str(),
        })
    }

    /// Parses `e1,e2,…` (canonical event objects joined by commas, as
    /// deliveries and the store keep them) back into events.
    pub fn parse_joined(joined: &str) -> Result<Vec<Self>, String> {
        // The stores keep text Hookline canonicalised: split it without
        // parsing when it reads plainly (a name or channel with an escape,
        // or anything unexpected, takes the parser, which also says what
        // is wrong).
        if let Some(scanned) = json::scan_joined(joined, ["name", "channel"]) {
            let events: Option<Vec<Self>> = scanned
                .into_iter()
                .map(|object| match object.fields {
                    [Some(name), Some(channel)] => Some(Self {
                        name: name.into(),
                        channel: channel.into(),
                        json: object.text.into(),
                    }),
                    _ => None,
                })
                .collect();
            if let Some(events) = events {
                return Ok(events);
            }
        }
        let value = json::parse_joined(joined).map_err(|e| e.to_string())?;
        let items = value.as_array().ok_or("not an array")?;
        items
            .iter()
            .enumerate()
            .map(|(i, v)| Self::from_value(v, i).map_err(|e| e.0))
            .collect()
    }

    /// Size of the event's JSON text in bytes.
    pub fn len(&self) -> usize {
        self.json.len()
    }

    /// Whether the event's JSON text is empty (never, for a parsed event).
    pub fn is_empty(&self) -> bool {
        self.json.is_empty()
    }
}

/// An ingest body: `{"events": [...]}` (native) or `{"time_ms": …,
/// "events": [...]}` (relay).
#[derive(Debug)]
pub struct IngestBody {
    /// The relay body's `time_ms`, when present (NaN when not a number).
    pub time_ms: Option<f64>,
    /// The events, in the order they arrived.
    pub events: Vec<Event>,
}

/// Why an ingest body was refused (answered 400).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct BodyError(pub String);

/// Parses an ingest body, keeping every event's fields and order.
pub fn parse_ingest_body(body: &[u8]) -> Result<IngestBody, BodyError> {
    ingest_body_from(&parse_body_object(body)?)
}

/// Parses a body that must be a JSON object (the first step of
/// [`parse_ingest_body`], for the relay, which reads `time_ms` before it
/// checks the events).
pub fn parse_body_object(body: &[u8]) -> Result<json::Value, BodyError> {
    let value = json::parse(body).map_err(|e| BodyError(format!("body is not valid JSON: {e}")))?;
    if value.as_object().is_none() {
        return Err(BodyError(
            "body must be a JSON object like {\"events\": [...]}".to_string(),
        ));
    }
    Ok(value)
}

/// A body object's `time_ms`, when present (NaN when not a number: the
/// relay refuses it with 401 like any `time_ms` that is not a finite
/// integer; it is replay protection, not syntax).
pub fn time_ms_of(value: &json::Value) -> Option<f64> {
    value.get("time_ms").map(|t| t.as_f64().unwrap_or(f64::NAN))
}

/// The events (and `time_ms`) of a parsed body object.
pub fn ingest_body_from(value: &json::Value) -> Result<IngestBody, BodyError> {
    let events = match value.get("events") {
        Some(events) => events
            .as_array()
            .ok_or_else(|| BodyError("`events` must be an array of event objects".to_string()))?,
        None => return Err(BodyError("body has no `events` array".to_string())),
    };
    let events = events
        .iter()
        .enumerate()
        .map(|(i, v)| Event::from_value(v, i))
        .collect::<Result<Vec<_>, _>>()?;
    Ok(IngestBody {
        time_ms: time_ms_of(value),
        events,
    })
}

/// Events' canonical texts joined by `,`: the inside of a body's `events`.
pub fn join_events<E: std::borrow::Borrow<Event>>(events: &[E]) -> String {
    let mut joined = String::with_capacity(events.iter().map(|e| e.borrow().len() + 1).sum());
    for (i, event) in events.iter().enumerate() {
        if i > 0 {
            joined.push(',');
        }
        joined.push_str(&event.borrow().json);
    }
    joined
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keeps_unknown_fields_and_order() {
        let body = br#"{"events":[{"channel":"c","name":"n","zeta":1.0,"alpha":{"b":1,"a":2}}]}"#;
        let parsed = parse_ingest_body(body).unwrap();
        assert_eq!(parsed.events.len(), 1);
        assert_eq!(&*parsed.events[0].name, "n");
        assert_eq!(&*parsed.events[0].channel, "c");
        assert_eq!(
            &*parsed.events[0].json,
            r#"{"channel":"c","name":"n","zeta":1,"alpha":{"b":1,"a":2}}"#
        );
    }

    #[test]
    fn refuses_events_without_name_or_channel() {
        let err = parse_ingest_body(br#"{"events":[{"name":"a","channel":"b"},{"channel":"c"}]}"#).unwrap_err();
        assert_eq!(err.0, "event 1 has no `name`");
        let err = parse_ingest_body(br#"{"events":[{"name":"a","channel":5}]}"#).unwrap_err();
        assert_eq!(err.0, "event 0 has a `channel` that is not a string");
        let err = parse_ingest_body(br#"{"events":[3]}"#).unwrap_err();
        assert_eq!(err.0, "event 0 is not a JSON object");
    }

    #[test]
    fn refuses_malformed_bodies() {
        assert!(
            parse_ingest_body(b"{")
                .unwrap_err()
                .0
                .starts_with("body is not valid JSON")
        );
        assert_eq!(parse_ingest_body(b"{}").unwrap_err().0, "body has no `events` array");
        assert!(parse_ingest_body(br#"{"events":{}}"#).is_err());
        assert!(parse_ingest_body(br#"[]"#).is_err());
    }

    #[test]
    fn joined_events_read_back_as_the_parser_reads_them() {
        let body = r#"{"events":[{"channel":"c","name":"n","data":"{\"a\":[1,{\"b\":\"}\"}]}"},
            {"name":"client_event","channel":"private-\u00e9","user_id":"u"},
            {"name":"x\ny","channel":"c2","nested":{"name":"inner","channel":"inner"},"list":[{"name":"no"}]},
            {"name":"é","channel":"日本","n":-1.5e3,"t":true,"z":null}]}"#;
        let events = parse_ingest_body(body.as_bytes()).unwrap().events;
        let joined = join_events(&events);
        assert_eq!(Event::parse_joined(&joined).unwrap(), events);
        // Every one alone too: the scanner's path (all but the escaped
        // name) and the parser's agree.
        let scanned: Vec<bool> = events
            .iter()
            .map(|e| {
                json::scan_joined(&e.json, ["name", "channel"]).is_some_and(|s| s[0].fields.iter().all(Option::is_some))
            })
            .collect();
        assert_eq!(scanned, [true, true, false, true]);
        for event in &events {
            assert_eq!(Event::parse_joined(&event.json).unwrap(), std::slice::from_ref(event));
        }
        let plain = join_events(&[events[0].clone(), events[3].clone()]);
        assert_eq!(json::scan_joined(&plain, ["name", "channel"]).unwrap().len(), 2);
        assert_eq!(Event::parse_joined("").unwrap(), []);
        // Damage is refused, by the parser, saying what is wrong.
        for damaged in [
            &joined[..joined.len() - 1],
            r#"{"name":"a","channel":"b"},"#,
            r#"{"name":"a","channel":"b"]"#,
            r#"{"name":"a"}"#,
            r#"[1]"#,
        ] {
            assert!(Event::parse_joined(damaged).is_err(), "{damaged}");
        }
    }

    #[test]
    fn reads_relay_time() {
        let parsed = parse_ingest_body(br#"{"time_ms":1700000000000,"events":[]}"#).unwrap();
        assert_eq!(parsed.time_ms, Some(1_700_000_000_000.0));
    }
}
