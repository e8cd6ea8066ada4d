//! Reading stream replies (`XREADGROUP`, `XAUTOCLAIM`) out of raw values.

use redis::Value;

/// One stream entry: its id and fields.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Entry {
    pub id: String,
    pub fields: Vec<(String, Vec<u8>)>,
}

impl Entry {
    /// A field's value as text.
    pub(crate) fn field(&self, name: &str) -> Option<&str> {
        self.fields
            .iter()
            .find(|(k, _)| k == name)
            .and_then(|(_, v)| std::str::from_utf8(v).ok())
    }
}

fn text(value: &Value) -> Option<String> {
    match value {
        Value::BulkString(bytes) => String::from_utf8(bytes.clone()).ok(),
        Value::SimpleString(s) => Some(s.clone()),
        Value::Int(n) => Some(n.to_string()),
        _ => None,
    }
}

fn items(value: &Value) -> &[Value] {
    match value {
        Value::Array(items) | Value::Set(items) => items,
        _ => &[],
    }
}

fn into_items(value: Value) -> Vec<Value> {
    match value {
        Value::Array(items) | Value::Set(items) => items,
        _ => Vec::new(),
    }
}

/// Entries as `[[id, [field, value, …]], …]`; an entry whose fields are
/// nil (deleted meanwhile) is skipped. Taken by value: an entry's events
/// (its largest field) move out of the reply rather than being copied.
pub(crate) fn entries(value: Value) -> Vec<Entry> {
    into_items(value)
        .into_iter()
        .filter_map(|entry| {
            let [id, fields]: [Value; 2] = into_items(entry).try_into().ok()?;
            let flat = into_items(fields);
            if flat.is_empty() {
                return None;
            }
            let mut fields = Vec::with_capacity(flat.len() / 2);
            let mut flat = flat.into_iter();
            while let (Some(k), Some(v)) = (flat.next(), flat.next()) {
                let value = match v {
                    Value::BulkString(bytes) => bytes,
                    other => match text(&other) {
                        Some(text) => text.into_bytes(),
                        None => continue,
                    },
                };
                if let Some(key) = text(&k) {
                    fields.push((key, value));
                }
            }
            Some(Entry { id: text(&id)?, fields })
        })
        .collect()
}

/// `XREADGROUP … STREAMS one >`: the entries of the one stream read (nil,
/// on a timeout, is none). RESP3 answers a map instead of an array.
pub(crate) fn read_group(value: Value) -> Vec<Entry> {
    match value {
        Value::Map(streams) => streams.into_iter().flat_map(|(_, e)| entries(e)).collect(),
        other => into_items(other)
            .into_iter()
            .flat_map(|stream| match <[Value; 2]>::try_from(into_items(stream)) {
                Ok([_, e]) => entries(e),
                Err(_) => Vec::new(),
            })
            .collect(),
    }
}

/// `XAUTOCLAIM`: the next cursor and the entries claimed.
pub(crate) fn auto_claim(value: Value) -> (String, Vec<Entry>) {
    let mut items = into_items(value).into_iter();
    match (items.next(), items.next()) {
        (Some(cursor), Some(claimed)) => (text(&cursor).unwrap_or_else(|| "0-0".to_string()), entries(claimed)),
        _ => ("0-0".to_string(), Vec::new()),
    }
}

/// `CONFIG GET name` (`[name, value]`, or a map in RESP3): the value.
pub(crate) fn config_value(value: &Value) -> Option<String> {
    match value {
        Value::Map(pairs) => pairs.first().and_then(|(_, v)| text(v)),
        _ => items(value).get(1).and_then(text),
    }
}

/// `XINFO GROUPS`: for `group`, entries not yet read (`lag`) plus read and
/// not acknowledged (`pending`).
pub(crate) fn group_lag(value: &Value, group: &str) -> u64 {
    let field = |info: &Value, name: &str| -> Option<Value> {
        match info {
            Value::Map(pairs) => pairs
                .iter()
                .find(|(k, _)| text(k).as_deref() == Some(name))
                .map(|(_, v)| v.clone()),
            _ => items(info)
                .chunks(2)
                .find(|pair| pair.first().and_then(text).as_deref() == Some(name))
                .and_then(|pair| pair.get(1).cloned()),
        }
    };
    let number = |v: Option<Value>| match v {
        Some(Value::Int(n)) => n.max(0) as u64,
        Some(other) => text(&other).and_then(|t| t.parse().ok()).unwrap_or(0),
        None => 0,
    };
    let groups: Vec<Value> = match value {
        Value::Array(groups) => groups.clone(),
        _ => Vec::new(),
    };
    groups
        .iter()
        .find(|info| field(info, "name").as_ref().and_then(text).as_deref() == Some(group))
        .map_or(0, |info| number(field(info, "lag")) + number(field(info, "pending")))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bulk(s: &str) -> Value {
        Value::BulkString(s.as_bytes().to_vec())
    }

    #[test]
    fn reads_a_group_reply() {
        let reply = Value::Array(vec![Value::Array(vec![
            bulk("inbox"),
            Value::Array(vec![
                Value::Array(vec![
                    bulk("1-0"),
                    Value::Array(vec![bulk("k"), bulk("e"), bulk("a"), bulk("app")]),
                ]),
                Value::Array(vec![bulk("2-0"), Value::Nil]),
            ]),
        ])]);
        let entries = read_group(reply.clone());
        assert_eq!(entries.len(), 1);
        assert_eq!(entries[0].id, "1-0");
        assert_eq!(entries[0].field("a"), Some("app"));
        assert!(read_group(Value::Nil).is_empty());
    }

    #[test]
    fn reads_a_groups_lag_and_pending() {
        let reply = Value::Array(vec![Value::Array(vec![
            bulk("name"),
            bulk("hookline"),
            bulk("pending"),
            Value::Int(2),
            bulk("lag"),
            Value::Int(5),
        ])]);
        assert_eq!(group_lag(&reply, "hookline"), 7);
        assert_eq!(group_lag(&reply, "other"), 0);
    }

    #[test]
    fn reads_an_auto_claim_reply() {
        let reply = Value::Array(vec![
            bulk("5-0"),
            Value::Array(vec![Value::Array(vec![
                bulk("3-1"),
                Value::Array(vec![bulk("k"), bulk("r")]),
            ])]),
            Value::Array(vec![]),
        ]);
        let (cursor, claimed) = auto_claim(reply);
        assert_eq!(cursor, "5-0");
        assert_eq!(claimed[0].field("k"), Some("r"));
    }
}
