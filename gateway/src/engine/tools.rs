//! The tool engine: a tenant's scenarios with a `toolName`, digested once per configuration
//! change, and what `tools/call` answers (SPEC §4). No I/O, no protocol: the MCP dispatcher (every
//! transport, the hosted endpoint) and the execute API render what it decides.
//!
//! ```text
//!  scenarios ─► Tools { one entry per name: listing, schema validator (compiled on first use),
//!                       the same-named scenarios by priority }   + a fingerprint of the listing
//!  call(name, arguments) ─► Unknown | Invalid(violations) | Answer(scenario, result)
//! ```

use std::collections::HashMap;
use std::sync::OnceLock;

use serde_json::{Map, Value, json};
use sha2::Digest;
use understudy_crds::model::ScenarioConfig;

/// Most schema violations reported for one call.
pub const MAX_VIOLATIONS: usize = 20;

/// Longest violation line (it quotes the offending value).
pub const MAX_VIOLATION_CHARS: usize = 300;

/// One tool: the highest-priority scenario of its name defines the listing.
pub struct Tool {
    /// Its name.
    pub name: String,
    /// The `tools/list` entry with every field this server knows (renderers drop what a
    /// protocol revision lacks).
    pub listing: Value,
    /// The input schema (default `{type: object}`).
    schema: Value,
    /// Compiled on first use; `None` if the schema does not compile (then nothing is refused:
    /// the manifest check reports such schemas before they get here).
    validator: OnceLock<Option<jsonschema::Validator>>,
    /// Indexes of the scenarios of this name: highest priority first, earliest on ties.
    scenarios: Vec<usize>,
}

impl std::fmt::Debug for Tool {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Tool")
            .field("name", &self.name)
            .field("scenarios", &self.scenarios)
            .finish()
    }
}

/// A tenant's tools.
#[derive(Debug, Default)]
pub struct Tools {
    /// In the order their defining scenarios were created.
    pub list: Vec<Tool>,
    by_name: HashMap<String, usize>,
    /// A digest of the listing: equal fingerprints, equal `tools/list` answers (what
    /// `notifications/tools/list_changed` is decided on).
    pub fingerprint: String,
}

/// What a call comes to.
#[derive(Debug, Clone, PartialEq)]
pub enum Call {
    /// No tool of that name.
    Unknown,
    /// The arguments break the tool's input schema: one line per violation.
    Invalid(Vec<String>),
    /// The answer of the scenario picked.
    Answer {
        /// The scenario's index.
        scenario: usize,
        /// The `tools/call` result (`content`, `structuredContent`, `isError`).
        result: Value,
    },
}

/// Whether `subset` is contained in `value`: every key of an object with a contained value,
/// anything else equal.
pub fn contains(value: &Value, subset: &Value) -> bool {
    match (value, subset) {
        (Value::Object(v), Value::Object(s)) => s
            .iter()
            .all(|(k, sv)| v.get(k).is_some_and(|vv| contains(vv, sv))),
        (v, s) => v == s,
    }
}

impl Tools {
    /// Digests the scenarios.
    pub fn new(scenarios: &[ScenarioConfig]) -> Tools {
        let mut list: Vec<Tool> = Vec::new();
        let mut by_name: HashMap<String, usize> = HashMap::new();
        for (i, s) in scenarios.iter().enumerate() {
            let Some(name) = s.spec.tool_name.as_deref() else {
                continue;
            };
            match by_name.get(name) {
                Some(&t) => list[t].scenarios.push(i),
                None => {
                    by_name.insert(name.to_string(), list.len());
                    list.push(Tool {
                        name: name.to_string(),
                        listing: Value::Null,
                        schema: Value::Null,
                        validator: OnceLock::new(),
                        scenarios: vec![i],
                    });
                }
            }
        }
        let mut digest = sha2::Sha256::new();
        for tool in &mut list {
            // Stable: highest priority first, earliest on ties.
            tool.scenarios
                .sort_by_key(|&i| (std::cmp::Reverse(scenarios[i].spec.priority), i));
            let spec = &scenarios[tool.scenarios[0]].spec;
            tool.schema = spec
                .tool_input_schema
                .clone()
                .unwrap_or_else(|| json!({"type": "object"}));
            let mut entry = Map::new();
            entry.insert("name".into(), Value::String(tool.name.clone()));
            if let Some(d) = &spec.tool_description {
                entry.insert("description".into(), Value::String(d.clone()));
            }
            entry.insert("inputSchema".into(), tool.schema.clone());
            if let Some(o) = &spec.tool_output_schema {
                entry.insert("outputSchema".into(), o.clone());
            }
            if let Some(a) = &spec.tool_annotations {
                entry.insert("annotations".into(), a.clone());
            }
            tool.listing = Value::Object(entry);
            digest.update(serde_json::to_vec(&tool.listing).unwrap_or_default());
            digest.update([0]);
        }
        let fingerprint = digest.finalize()[..8]
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect();
        Tools {
            list,
            by_name,
            fingerprint,
        }
    }

    /// The tool named `name`.
    pub fn get(&self, name: &str) -> Option<&Tool> {
        self.by_name.get(name).map(|&i| &self.list[i])
    }

    /// Answers `tools/call`: validates `arguments` against the tool's input schema, then picks
    /// the scenario: the highest-priority one whose `toolWhen` the arguments contain (a scenario
    /// without `toolWhen` applies to any call; on equal priority one with a matching `toolWhen`
    /// wins, then the earliest).
    pub fn call(&self, scenarios: &[ScenarioConfig], name: &str, arguments: &Value) -> Call {
        let Some(tool) = self.get(name) else {
            return Call::Unknown;
        };
        let violations = tool.violations(arguments);
        if !violations.is_empty() {
            return Call::Invalid(violations);
        }
        let applies = |i: &usize| {
            scenarios[*i]
                .spec
                .tool_when
                .as_ref()
                .is_none_or(|w| contains(arguments, w))
        };
        let picked = tool
            .scenarios
            .iter()
            .filter(|i| applies(i))
            .max_by_key(|&&i| {
                let s = &scenarios[i].spec;
                (s.priority, s.tool_when.is_some(), std::cmp::Reverse(i))
            });
        match picked {
            Some(&i) => Call::Answer {
                scenario: i,
                result: result_of(&scenarios[i]),
            },
            // Every scenario of the name has a toolWhen the call does not meet.
            None => Call::Answer {
                scenario: tool.scenarios[0],
                result: json!({
                    "content": [{"type": "text", "text": format!(
                        "No scenario of tool '{name}' applies to these arguments (each has a toolWhen they do not contain)."
                    )}],
                    "isError": true
                }),
            },
        }
    }
}

impl Tool {
    /// The violations of `arguments` against the input schema (at most [`MAX_VIOLATIONS`]).
    pub fn violations(&self, arguments: &Value) -> Vec<String> {
        let validator = self
            .validator
            .get_or_init(|| jsonschema::validator_for(&self.schema).ok());
        let Some(v) = validator else {
            return Vec::new();
        };
        v.iter_errors(arguments)
            .take(MAX_VIOLATIONS)
            .map(|e| {
                let path = e.instance_path.to_string();
                let line = if path.is_empty() {
                    e.to_string()
                } else {
                    format!("{path}: {e}")
                };
                // A violation quotes the offending value: never more than a line of it.
                match line.char_indices().nth(MAX_VIOLATION_CHARS) {
                    Some((i, _)) => format!("{}…", &line[..i]),
                    None => line,
                }
            })
            .collect()
    }
}

/// A scenario's `tools/call` result (SPEC §4): `toolError` → `isError: true` with its text;
/// `toolContent` → those blocks; else `toolData` as JSON text. `structuredContent` is `toolData`
/// when it is an object.
fn result_of(s: &ScenarioConfig) -> Value {
    let spec = &s.spec;
    if let Some(err) = &spec.tool_error {
        return json!({"content": [{"type": "text", "text": err}], "isError": true});
    }
    let data = spec.tool_data.clone().unwrap_or(Value::Null);
    let content = match &spec.tool_content {
        Some(blocks) if !blocks.is_empty() => Value::Array(blocks.clone()),
        _ => json!([{"type": "text", "text": serde_json::to_string(&data).unwrap_or_default()}]),
    };
    let mut out = Map::new();
    out.insert("content".into(), content);
    if data.is_object() {
        out.insert("structuredContent".into(), data);
    }
    out.insert("isError".into(), Value::Bool(false));
    Value::Object(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use understudy_crds::ScenarioSpec;

    fn sc(name: &str, priority: i32, when: Option<Value>, data: Value) -> ScenarioConfig {
        let spec: ScenarioSpec = serde_json::from_value(json!({
            "tenantRef": "t",
            "toolName": name,
            "priority": priority,
            "toolInputSchema": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
            "toolData": data,
        }))
        .unwrap();
        let mut spec = spec;
        spec.tool_when = when;
        ScenarioConfig {
            id: format!("ns/{name}-{priority}"),
            spec,
        }
    }

    #[test]
    fn picks_by_tool_when_then_priority() {
        let s = vec![
            sc("w", 0, None, json!({"any": true})),
            sc("w", 0, Some(json!({"city": "Oslo"})), json!({"oslo": true})),
            sc("w", 5, Some(json!({"city": "Rome"})), json!({"rome": true})),
        ];
        let tools = Tools::new(&s);
        assert_eq!(tools.list.len(), 1);
        let pick = |args: Value| match tools.call(&s, "w", &args) {
            Call::Answer { scenario, .. } => scenario,
            other => panic!("{other:?}"),
        };
        assert_eq!(pick(json!({"city": "Paris"})), 0);
        assert_eq!(pick(json!({"city": "Oslo"})), 1);
        assert_eq!(pick(json!({"city": "Rome"})), 2);
        assert_eq!(tools.call(&s, "nope", &json!({})), Call::Unknown);
        let Call::Invalid(v) = tools.call(&s, "w", &json!({"city": 3})) else {
            panic!()
        };
        assert!(v[0].contains("/city"), "{v:?}");
        let Call::Invalid(v) = tools.call(&s, "w", &json!({})) else {
            panic!()
        };
        assert!(v[0].contains("city"), "{v:?}");
        // A huge offending value is quoted, not copied.
        let Call::Invalid(v) = tools.call(&s, "w", &json!({"city": ["x".repeat(1_000_000)]}))
        else {
            panic!()
        };
        assert!(
            v[0].chars().count() <= MAX_VIOLATION_CHARS + 1,
            "{}",
            v[0].len()
        );
    }

    #[test]
    fn results_and_fingerprints() {
        let s = vec![sc("a", 0, None, json!({"x": 1}))];
        let Call::Answer { result, .. } = Tools::new(&s).call(&s, "a", &json!({"city": "c"}))
        else {
            panic!()
        };
        assert_eq!(
            result,
            json!({"content": [{"type": "text", "text": "{\"x\":1}"}], "structuredContent": {"x": 1}, "isError": false})
        );
        let mut e = s.clone();
        e[0].spec.tool_error = Some("boom".into());
        let Call::Answer { result, .. } = Tools::new(&e).call(&e, "a", &json!({"city": "c"}))
        else {
            panic!()
        };
        assert_eq!(result["isError"], json!(true));
        assert_eq!(Tools::new(&s).fingerprint, Tools::new(&s).fingerprint);
        let mut d = s.clone();
        d[0].spec.tool_description = Some("changed".into());
        assert_ne!(Tools::new(&s).fingerprint, Tools::new(&d).fingerprint);
        // A change that does not show in the listing keeps the fingerprint.
        let mut r = s.clone();
        r[0].spec.response = "other".into();
        assert_eq!(Tools::new(&s).fingerprint, Tools::new(&r).fingerprint);
        assert!(contains(
            &json!({"a": {"b": 1, "c": 2}}),
            &json!({"a": {"b": 1}})
        ));
        assert!(!contains(&json!({"a": 1}), &json!({"a": 1, "b": 2})));
    }
}
