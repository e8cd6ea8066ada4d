//! `${NAME}` references to environment variables inside app files.

use std::sync::Arc;

/// Looks up an environment variable. The binary passes the real
/// environment; tests pass a map. (Only the binary reads the environment.)
pub type EnvLookup = Arc<dyn Fn(&str) -> Option<String> + Send + Sync>;

/// Replaces every `${NAME}` in `text`. `$${` stays a literal `${`.
/// Returns the name of the first unset variable as the error.
#[cfg(test)]
pub(crate) fn substitute(text: &str, env: &EnvLookup) -> Result<String, String> {
    substitute_all(text, env).map_err(|mut errors| errors.remove(0))
}

/// Replaces every `${NAME}` in `text`; on failure, every unset variable
/// (and a malformed reference, which ends the scan) is reported.
pub fn substitute_all(text: &str, env: &EnvLookup) -> Result<String, Vec<String>> {
    if !text.contains('$') {
        return Ok(text.to_string());
    }
    let mut errors = Vec::new();
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(pos) = rest.find('$') {
        out.push_str(&rest[..pos]);
        let after = &rest[pos + 1..];
        if let Some(escaped) = after.strip_prefix("${") {
            out.push_str("${");
            rest = escaped;
        } else if let Some(inner) = after.strip_prefix('{') {
            let Some(end) = inner.find('}') else {
                errors.push("an unclosed `${`".to_string());
                return Err(errors);
            };
            let name = &inner[..end];
            let valid = !name.is_empty()
                && !name.starts_with(|c: char| c.is_ascii_digit())
                && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
            if !valid {
                errors.push(format!("`${{{name}}}` is not a valid variable reference"));
            } else {
                match env(name) {
                    Some(value) => out.push_str(&value),
                    None => errors.push(format!("environment variable {name} is not set")),
                }
            }
            rest = &inner[end + 1..];
        } else {
            out.push('$');
            rest = after;
        }
    }
    out.push_str(rest);
    if errors.is_empty() { Ok(out) } else { Err(errors) }
}

/// Substitutes references in every string of a JSON tree, in place, and
/// returns every problem found (an unset variable, a malformed reference),
/// each naming its position. A string with a problem is left as written.
/// `path` names the position for the error message.
pub(crate) fn substitute_tree(value: &mut serde_json::Value, env: &EnvLookup, path: &mut Vec<String>) -> Vec<String> {
    let mut problems = Vec::new();
    substitute_into(value, env, path, &mut problems);
    problems
}

fn substitute_into(value: &mut serde_json::Value, env: &EnvLookup, path: &mut Vec<String>, problems: &mut Vec<String>) {
    match value {
        serde_json::Value::String(s) => match substitute_all(s, env) {
            Ok(resolved) => *s = resolved,
            Err(errors) => problems.extend(errors.into_iter().map(|e| format!("{e} (in `{}`)", path.join(".")))),
        },
        serde_json::Value::Array(items) => {
            for (i, item) in items.iter_mut().enumerate() {
                path.push(i.to_string());
                substitute_into(item, env, path, problems);
                path.pop();
            }
        }
        serde_json::Value::Object(map) => {
            for (k, v) in map.iter_mut() {
                path.push(k.clone());
                substitute_into(v, env, path, problems);
                path.pop();
            }
        }
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env() -> EnvLookup {
        Arc::new(|name| (name == "SECRET").then(|| "s3".to_string()))
    }

    #[test]
    fn replaces_references() {
        assert_eq!(substitute("a-${SECRET}-b", &env()).unwrap(), "a-s3-b");
        assert_eq!(substitute("$5 and $${SECRET}", &env()).unwrap(), "$5 and ${SECRET}");
        assert_eq!(substitute("plain", &env()).unwrap(), "plain");
    }

    #[test]
    fn unset_and_malformed_references_are_errors() {
        assert_eq!(
            substitute("${MISSING}", &env()).unwrap_err(),
            "environment variable MISSING is not set"
        );
        assert!(substitute("${SECRET", &env()).unwrap_err().contains("unclosed"));
        assert!(substitute("${1A}", &env()).unwrap_err().contains("not a valid"));
    }

    #[test]
    fn error_names_the_field() {
        let mut v = serde_json::json!({"webhooks": [{"headers": {"x": "${NOPE}"}}]});
        let err = substitute_tree(&mut v, &env(), &mut vec![]);
        assert_eq!(
            err,
            ["environment variable NOPE is not set (in `webhooks.0.headers.x`)"]
        );
    }

    #[test]
    fn every_unset_variable_is_reported() {
        let mut v = serde_json::json!({"secret": "${A}", "webhooks": [{"headers": {"x": "${B}-${SECRET}-${C}"}}]});
        let err = substitute_tree(&mut v, &env(), &mut vec![]);
        assert_eq!(
            err,
            [
                "environment variable A is not set (in `secret`)",
                "environment variable B is not set (in `webhooks.0.headers.x`)",
                "environment variable C is not set (in `webhooks.0.headers.x`)",
            ]
        );
    }
}
