//! Loading manifests: the same multi-document YAML files `kubectl apply` takes.
//!
//! Files load in lexicographic path order and documents in file order, which is the creation
//! order [`crate::model::build`] uses for tie-breaks and for the chaos profile in force.
//!
//! Manifests are strict: a field the CRD schema does not know is a problem naming the file, the
//! document and the field (with `did you mean …?` when a known field is close), as the public API
//! refuses unknown fields and as `kubectl apply --validate=strict` does. The check walks the
//! generated CRD schema rather than using `deny_unknown_fields` on the types, because the
//! operator reads the same types from the API server, which may add fields a newer version
//! knows.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use serde::Deserialize;
use sha2::{Digest, Sha256};

use crate::model::{self, BuildReport, ConfigSource, Problem, Res};
use crate::resources::{ChaosProfile, Scenario, Tenant};

/// The API version every manifest must carry.
pub const API_VERSION: &str = "understudy.dev/v1alpha1";

/// Resources parsed from a set of files, before building.
#[derive(Default, Debug)]
pub struct Parsed {
    /// Tenants in order.
    pub tenants: Vec<Res<crate::TenantSpec>>,
    /// Scenarios in order.
    pub scenarios: Vec<Res<crate::ScenarioSpec>>,
    /// Chaos profiles in order.
    pub chaos: Vec<Res<crate::ChaosProfileSpec>>,
    /// Parse errors (unknown kinds, unknown fields, wrong types, bad YAML).
    pub problems: Vec<Problem>,
    /// Position of every origin seen (file, then document), so that problems found later by
    /// [`crate::model::build`] are listed in file and document order too.
    order: HashMap<String, usize>,
}

/// Every `*.yaml` / `*.yml` file under `dir` (recursively), sorted by path.
pub fn manifest_files(dir: &Path) -> std::io::Result<Vec<PathBuf>> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for entry in std::fs::read_dir(&d)? {
            let entry = entry?;
            let path = entry.path();
            let ft = entry.file_type()?;
            if ft.is_dir() {
                let hidden = path
                    .file_name()
                    .and_then(|n| n.to_str())
                    .is_some_and(|n| n.starts_with('.'));
                if !hidden {
                    stack.push(path);
                }
            } else if matches!(
                path.extension().and_then(|e| e.to_str()),
                Some("yaml" | "yml")
            ) {
                out.push(path);
            }
        }
    }
    out.sort();
    Ok(out)
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Head {
    #[serde(default)]
    api_version: Option<String>,
    #[serde(default)]
    kind: Option<String>,
    #[serde(default)]
    metadata: Option<HeadMeta>,
}

#[derive(Deserialize)]
struct HeadMeta {
    #[serde(default)]
    name: Option<String>,
    #[serde(default)]
    namespace: Option<String>,
}

fn typed<T: serde::de::DeserializeOwned>(value: serde_yaml::Value) -> Result<T, (String, String)> {
    serde_path_to_error::deserialize(value).map_err(|e| {
        let path = e.path().to_string();
        (
            if path == "." { String::new() } else { path },
            e.into_inner().to_string(),
        )
    })
}

impl Parsed {
    /// Parses one file's text (`label` names it in problems).
    pub fn add_file(&mut self, label: &str, text: &str) {
        self.note(label);
        for (i, doc) in serde_yaml::Deserializer::from_str(text).enumerate() {
            let n = i + 1;
            self.note(&format!("{label}, document {n}"));
            let value = match serde_yaml::Value::deserialize(doc) {
                Ok(v) => v,
                Err(e) => {
                    self.problems.push(Problem {
                        origin: format!("{label}, document {n}"),
                        field: "(yaml)".into(),
                        reason: "Invalid",
                        message: e.to_string(),
                    });
                    // A syntax error ends the stream: later documents cannot be positioned.
                    return;
                }
            };
            if value.is_null() {
                continue; // empty document (e.g. a trailing `---`)
            }
            self.add_document(&format!("{label}, document {n}"), value);
        }
    }

    fn add_document(&mut self, origin: &str, value: serde_yaml::Value) {
        let problem = |field: &str, message: String| Problem {
            origin: origin.to_string(),
            field: field.to_string(),
            reason: "Invalid",
            message,
        };
        let head: Head = match serde_yaml::from_value(value.clone()) {
            Ok(h) => h,
            Err(e) => {
                let p = problem("(document)", format!("not a Kubernetes object: {e}"));
                self.problems.push(p);
                return;
            }
        };
        if head.api_version.as_deref() != Some(API_VERSION) {
            let p = problem(
                "apiVersion",
                format!(
                    "expected {API_VERSION:?}, found {:?}",
                    head.api_version.unwrap_or_default()
                ),
            );
            self.problems.push(p);
            return;
        }
        let meta = head.metadata.unwrap_or(HeadMeta {
            name: None,
            namespace: None,
        });
        let Some(name) = meta.name.filter(|n| !n.is_empty()) else {
            let p = problem("metadata.name", "every resource needs metadata.name".into());
            self.problems.push(p);
            return;
        };
        let namespace = meta.namespace.unwrap_or_else(|| "default".into());
        let kind = head.kind.unwrap_or_default();
        let origin = format!("{origin} ({kind} {namespace}/{name})");
        self.note(&origin);
        if let Some(schema) = schema_of(&kind) {
            for (field, message) in unknown_fields(&value, schema) {
                self.problems.push(Problem {
                    origin: origin.clone(),
                    field,
                    reason: "Invalid",
                    message,
                });
            }
        }
        let fail = |(field, message): (String, String)| Problem {
            origin: origin.clone(),
            field: if field.is_empty() {
                "spec".into()
            } else {
                field
            },
            reason: "Invalid",
            message,
        };
        match kind.as_str() {
            "Tenant" => match typed::<Tenant>(value) {
                Ok(t) => self.tenants.push(Res {
                    origin,
                    namespace,
                    name,
                    spec: t.spec,
                }),
                Err(e) => self.problems.push(fail(e)),
            },
            "Scenario" => match typed::<Scenario>(value) {
                Ok(s) => self.scenarios.push(Res {
                    origin,
                    namespace,
                    name,
                    spec: s.spec,
                }),
                Err(e) => self.problems.push(fail(e)),
            },
            "ChaosProfile" => match typed::<ChaosProfile>(value) {
                Ok(c) => self.chaos.push(Res {
                    origin,
                    namespace,
                    name,
                    spec: c.spec,
                }),
                Err(e) => self.problems.push(fail(e)),
            },
            other => self.problems.push(Problem {
                origin,
                field: "kind".into(),
                reason: "Invalid",
                message: format!(
                    "unknown kind {other:?}: expected Tenant, Scenario or ChaosProfile"
                ),
            }),
        }
    }

    /// Remembers where an origin comes in the file and document order.
    fn note(&mut self, origin: &str) {
        let next = self.order.len();
        self.order.entry(origin.to_string()).or_insert(next);
    }

    /// Builds tenant documents. Problems are listed in file and document order (within one
    /// document, parse problems before build problems).
    pub fn build(self, source: ConfigSource) -> BuildReport {
        let mut report = model::build(&self.tenants, &self.scenarios, &self.chaos, source);
        let mut problems = self.problems;
        problems.append(&mut report.problems);
        let order = self.order;
        problems.sort_by_key(|p| order.get(&p.origin).copied().unwrap_or(usize::MAX));
        report.problems = problems;
        report
    }
}

/// The fields every object has besides those its CRD schema lists.
const OBJECT_FIELDS: &[&str] = &["apiVersion", "kind", "metadata"];

/// The fields of `metadata` (Kubernetes `ObjectMeta`).
const METADATA_FIELDS: &[&str] = &[
    "annotations",
    "creationTimestamp",
    "deletionGracePeriodSeconds",
    "deletionTimestamp",
    "finalizers",
    "generateName",
    "generation",
    "labels",
    "managedFields",
    "name",
    "namespace",
    "ownerReferences",
    "resourceVersion",
    "selfLink",
    "uid",
];

/// The `openAPIV3Schema` of a kind's CRD, generated once from the Rust types.
fn schema_of(kind: &str) -> Option<&'static serde_json::Value> {
    static SCHEMAS: OnceLock<HashMap<String, serde_json::Value>> = OnceLock::new();
    SCHEMAS
        .get_or_init(|| {
            crate::crds()
                .into_iter()
                .filter_map(|crd| {
                    let schema = crd.spec.versions.first()?.schema.as_ref()?;
                    let json = serde_json::to_value(schema).ok()?;
                    Some((crd.spec.names.kind, json["openAPIV3Schema"].clone()))
                })
                .collect()
        })
        .get(kind)
}

/// Every field of `value` that `schema` (the CRD's structural schema) does not know, as
/// `(path, message)` in document order. Subtrees marked `x-kubernetes-preserve-unknown-fields`
/// (state, settings, tool arguments, …) are free-form and never checked.
pub fn unknown_fields(
    value: &serde_yaml::Value,
    schema: &serde_json::Value,
) -> Vec<(String, String)> {
    let mut out = Vec::new();
    let Some(map) = value.as_mapping() else {
        return out;
    };
    let props = schema.get("properties").and_then(|p| p.as_object());
    for (key, v) in map {
        let Some(key) = key.as_str() else { continue };
        if key == "metadata" {
            if let Some(meta) = v.as_mapping() {
                for k in meta.keys().filter_map(|k| k.as_str()) {
                    if !METADATA_FIELDS.contains(&k) {
                        out.push((format!("metadata.{k}"), unknown(k, METADATA_FIELDS)));
                    }
                }
            }
        } else if let Some(sub) = props.and_then(|p| p.get(key)) {
            walk(v, sub, key, &mut out);
        } else if !OBJECT_FIELDS.contains(&key) {
            let known: Vec<&str> = OBJECT_FIELDS
                .iter()
                .copied()
                .chain(props.into_iter().flat_map(|p| p.keys().map(String::as_str)))
                .collect();
            out.push((key.to_string(), unknown(key, &known)));
        }
    }
    out
}

fn walk(
    value: &serde_yaml::Value,
    schema: &serde_json::Value,
    path: &str,
    out: &mut Vec<(String, String)>,
) {
    if schema.get("x-kubernetes-preserve-unknown-fields") == Some(&serde_json::Value::Bool(true)) {
        return;
    }
    match value {
        serde_yaml::Value::Mapping(map) => {
            let Some(props) = schema.get("properties").and_then(|p| p.as_object()) else {
                if let Some(extra) = schema.get("additionalProperties").filter(|a| a.is_object()) {
                    for (k, v) in map {
                        let k = k.as_str().unwrap_or("?");
                        walk(v, extra, &format!("{path}.{k}"), out);
                    }
                }
                return;
            };
            for (k, v) in map {
                let Some(k) = k.as_str() else { continue };
                match props.get(k) {
                    Some(sub) => walk(v, sub, &format!("{path}.{k}"), out),
                    None => {
                        let known: Vec<&str> = props.keys().map(String::as_str).collect();
                        out.push((format!("{path}.{k}"), unknown(k, &known)));
                    }
                }
            }
        }
        serde_yaml::Value::Sequence(items) => {
            if let Some(item) = schema.get("items") {
                for (i, v) in items.iter().enumerate() {
                    walk(v, item, &format!("{path}[{i}]"), out);
                }
            }
        }
        serde_yaml::Value::Tagged(t) => walk(&t.value, schema, path, out),
        _ => {}
    }
}

/// The message for an unknown field: the closest known name when one is within two edits,
/// else the list of known names.
fn unknown(field: &str, known: &[&str]) -> String {
    let lower = field.to_ascii_lowercase();
    let best = known
        .iter()
        .map(|k| (edit_distance(&lower, &k.to_ascii_lowercase()), *k))
        .min_by_key(|(d, _)| *d);
    match best {
        Some((d, k)) if d <= 2 => format!("unknown field {field:?}: did you mean {k:?}?"),
        _ => {
            let mut names = known.to_vec();
            names.sort_unstable();
            format!(
                "unknown field {field:?}; known fields: {}",
                names.join(", ")
            )
        }
    }
}

/// Levenshtein distance (insertions, deletions, substitutions) over characters.
fn edit_distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut prev: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut cur = Vec::with_capacity(b.len() + 1);
        cur.push(i + 1);
        for (j, cb) in b.iter().enumerate() {
            let sub = prev[j] + usize::from(ca != *cb);
            cur.push(sub.min(prev[j + 1] + 1).min(cur[j] + 1));
        }
        prev = cur;
    }
    prev[b.len()]
}

/// A directory's manifests, loaded and built, plus a content hash of every file read (the seeder's
/// generation stamp).
pub struct Loaded {
    /// The build report (tenants and problems).
    pub report: BuildReport,
    /// SHA-256 over every file's path and contents, hex.
    pub content_hash: String,
    /// How many files were read.
    pub files: usize,
}

/// Reads and builds every manifest under `dir`. An unreadable file is a problem, not a panic.
pub fn load_dir(dir: &Path, source: ConfigSource) -> std::io::Result<Loaded> {
    let files = manifest_files(dir)?;
    let mut parsed = Parsed::default();
    let mut hasher = Sha256::new();
    for path in &files {
        // Relative to the folder: the same content hashes the same whatever path a process was
        // given, and messages stay short.
        let label = path.strip_prefix(dir).unwrap_or(path).display().to_string();
        parsed.note(&label);
        match std::fs::read(path) {
            Ok(bytes) => {
                hasher.update(label.as_bytes());
                hasher.update([0]);
                hasher.update(&bytes);
                match String::from_utf8(bytes) {
                    Ok(text) => parsed.add_file(&label, &text),
                    Err(_) => parsed.problems.push(Problem {
                        origin: label,
                        field: "(file)".into(),
                        reason: "Invalid",
                        message: "not valid UTF-8".into(),
                    }),
                }
            }
            Err(e) => parsed.problems.push(Problem {
                origin: label,
                field: "(file)".into(),
                reason: "Invalid",
                message: format!("unreadable: {e}"),
            }),
        }
    }
    let content_hash = hasher
        .finalize()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    Ok(Loaded {
        report: parsed.build(source),
        content_hash,
        files: files.len(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn build(text: &str) -> BuildReport {
        let mut p = Parsed::default();
        p.add_file("m.yaml", text);
        p.build(ConfigSource::Manifest)
    }

    const TENANT: &str = "apiVersion: understudy.dev/v1alpha1\nkind: Tenant\nmetadata: {name: shop}\nspec: {tenantId: t_shop}\n";

    #[test]
    fn builds_tenant_with_scenarios_in_document_order() {
        let r = build(&format!(
            "{TENANT}---\napiVersion: understudy.dev/v1alpha1\nkind: Scenario\nmetadata: {{name: a}}\nspec: {{tenantRef: shop, keywords: [x], response: A}}\n---\napiVersion: understudy.dev/v1alpha1\nkind: Scenario\nmetadata: {{name: b, namespace: default}}\nspec: {{tenantRef: shop, keywords: [y], response: B}}\n"
        ));
        assert!(r.problems.is_empty(), "{:?}", r.problems);
        let t = &r.tenants[0];
        assert_eq!(t.tenant_id, "t_shop");
        let ids: Vec<_> = t.scenarios.iter().map(|s| s.id.as_str()).collect();
        assert_eq!(ids, ["default/a", "default/b"]);
    }

    #[test]
    fn problems_name_file_document_and_field() {
        let r = build(&format!(
            "{TENANT}---\napiVersion: understudy.dev/v1alpha1\nkind: ChaosProfile\nmetadata: {{name: c}}\nspec: {{tenantRef: shop, probability: 2}}\n---\napiVersion: understudy.dev/v1alpha1\nkind: Scenario\nmetadata: {{name: s}}\nspec: {{tenantRef: nope, keywords: [x]}}\n---\napiVersion: understudy.dev/v1alpha1\nkind: Scenario\nmetadata: {{name: t}}\nspec: {{tenantRef: shop, keywords: 3}}\n"
        ));
        let text: Vec<String> = r.problems.iter().map(|p| p.to_string()).collect();
        assert_eq!(r.problems.len(), 3, "{text:#?}");
        assert!(
            text.iter()
                .any(|t| t.contains("m.yaml, document 2") && t.contains("spec.probability")),
            "{text:#?}"
        );
        assert!(
            text.iter()
                .any(|t| t.contains("document 3") && t.contains("spec.tenantRef")),
            "{text:#?}"
        );
        assert!(
            text.iter()
                .any(|t| t.contains("document 4") && t.contains("spec.keywords")),
            "{text:#?}"
        );
        assert_eq!(
            r.tenants.len(),
            1,
            "the valid tenant survives its neighbours' mistakes"
        );
    }

    #[test]
    fn invalid_tool_schema_private_without_owner_and_duplicate_ids_are_refused() {
        let r = build(&format!(
            "{TENANT}---\napiVersion: understudy.dev/v1alpha1\nkind: Tenant\nmetadata: {{name: other}}\nspec: {{tenantId: t_shop}}\n---\napiVersion: understudy.dev/v1alpha1\nkind: Tenant\nmetadata: {{name: priv}}\nspec: {{visibility: private}}\n---\napiVersion: understudy.dev/v1alpha1\nkind: Scenario\nmetadata: {{name: s}}\nspec: {{tenantRef: shop, toolName: t, toolInputSchema: {{type: 12}}}}\n"
        ));
        let reasons: Vec<(&str, &str)> = r
            .problems
            .iter()
            .map(|p| (p.field.as_str(), p.reason))
            .collect();
        assert!(
            reasons.contains(&("spec.tenantId", "DuplicateTenantId")),
            "{reasons:?}"
        );
        assert!(reasons.contains(&("spec.owner", "Invalid")), "{reasons:?}");
        assert!(
            reasons.contains(&("spec.toolInputSchema", "InvalidSchema")),
            "{reasons:?}"
        );
    }

    #[test]
    fn oldest_chaos_profile_is_in_force() {
        let chaos = |name: &str, profile: &str| {
            format!(
                "---\napiVersion: understudy.dev/v1alpha1\nkind: ChaosProfile\nmetadata: {{name: {name}}}\nspec: {{tenantRef: shop, profile: {profile}}}\n"
            )
        };
        let r = build(&format!(
            "{TENANT}{}{}",
            chaos("first", "latency"),
            chaos("second", "server_error")
        ));
        assert_eq!(
            r.tenants[0].chaos.as_ref().unwrap().profile,
            crate::ChaosKind::Latency
        );
        assert_eq!(r.superseded.len(), 1);
        assert!(r.superseded[0].contains("second"));
    }

    fn doc(kind: &str, name: &str, spec: &str) -> String {
        format!(
            "---\napiVersion: understudy.dev/v1alpha1\nkind: {kind}\nmetadata: {{name: {name}}}\nspec: {spec}\n"
        )
    }

    #[test]
    fn unknown_fields_are_refused_with_the_closest_known_name() {
        let r = build(&format!(
            "apiVersion: understudy.dev/v1alpha1\nkind: Tenant\nmetadata: {{name: shop, namspace: x}}\nspec: {{tenantId: t_shop, colour: red}}\n{}{}",
            doc(
                "Scenario",
                "s",
                "{tenantRef: shop, keywords: [x], respnse: typo, toolName: t, toolArguments: {anything: [1]}}"
            ),
            doc(
                "ChaosProfile",
                "c",
                "{tenantRef: shop, bogus: 1, statuscode: 503}"
            ),
        ));
        let text: Vec<String> = r.problems.iter().map(|p| p.to_string()).collect();
        assert_eq!(
            text,
            [
                "m.yaml, document 1 (Tenant default/shop): metadata.namspace: unknown field \"namspace\": did you mean \"namespace\"?",
                "m.yaml, document 1 (Tenant default/shop): spec.colour: unknown field \"colour\"; known fields: defaultResponse, owner, settings, state, tenantId, visibility",
                "m.yaml, document 2 (Scenario default/s): spec.respnse: unknown field \"respnse\": did you mean \"response\"?",
                "m.yaml, document 3 (ChaosProfile default/c): spec.bogus: unknown field \"bogus\"; known fields: afterChunks, every, failFirst, latencyMs, limit, probability, profile, statusCode, surfaces, tenantRef, windowSeconds",
                "m.yaml, document 3 (ChaosProfile default/c): spec.statuscode: unknown field \"statuscode\": did you mean \"statusCode\"?",
            ],
        );
    }

    #[test]
    fn unknown_top_level_and_status_fields_are_refused_free_form_ones_are_not() {
        let r = build(
            "apiVersion: understudy.dev/v1alpha1\nkind: Tenant\nmetadata: {name: shop, labels: {a: b}}\nspecs: {}\nspec: {state: {any: {deep: 1}}, settings: {models: [m], whatever: true}}\nstatus: {requests: 1, bogus: 2, conditions: [{type: Ready, status: \"True\", reasn: x}]}\n",
        );
        let fields: Vec<&str> = r.problems.iter().map(|p| p.field.as_str()).collect();
        assert_eq!(
            fields,
            ["specs", "status.bogus", "status.conditions[0].reasn"]
        );
        assert!(r.problems[0].message.contains("did you mean \"spec\"?"));
    }

    #[test]
    fn problems_are_listed_in_document_order() {
        // A build problem (document 2) and a parse problem (document 3) come out in order.
        let r = build(&format!(
            "{TENANT}{}{}",
            doc("Scenario", "a", "{tenantRef: nope, keywords: [x]}"),
            doc("Scenario", "b", "{tenantRef: shop, keywords: 3}"),
        ));
        let origins: Vec<&str> = r.problems.iter().map(|p| p.origin.as_str()).collect();
        assert_eq!(
            origins,
            [
                "m.yaml, document 2 (Scenario default/a)",
                "m.yaml, document 3 (Scenario default/b)"
            ]
        );
    }

    #[test]
    fn edit_distance_counts_edits() {
        assert_eq!(edit_distance("respnse", "response"), 1);
        assert_eq!(edit_distance("colour", "color"), 1);
        assert_eq!(edit_distance("", "abc"), 3);
        assert_eq!(edit_distance("kitten", "sitting"), 3);
    }

    #[test]
    fn wrong_api_version_unknown_kind_and_bad_yaml_are_reported() {
        let r = build(
            "apiVersion: v1\nkind: Tenant\nmetadata: {name: a}\n---\napiVersion: understudy.dev/v1alpha1\nkind: Widget\nmetadata: {name: w}\n---\n: : :\n  - [\n",
        );
        let fields: Vec<&str> = r.problems.iter().map(|p| p.field.as_str()).collect();
        assert_eq!(fields, ["apiVersion", "kind", "(yaml)"]);
    }
}
