//! Loading manifests: the same multi-document YAML files `kubectl apply` takes.
//!
//! Files load in lexicographic path order and documents in file order, which is the creation
//! order [`crate::model::build`] uses for tie-breaks and for the chaos profile in force.

use std::path::{Path, PathBuf};

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
    /// Parse errors (unknown kinds, wrong types, bad YAML).
    pub problems: Vec<Problem>,
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
        for (i, doc) in serde_yaml::Deserializer::from_str(text).enumerate() {
            let n = i + 1;
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

    /// Builds tenant documents; parse problems come first in the report.
    pub fn build(self, source: ConfigSource) -> BuildReport {
        let mut report = model::build(&self.tenants, &self.scenarios, &self.chaos, source);
        let mut problems = self.problems;
        problems.append(&mut report.problems);
        report.problems = problems;
        report
    }
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

    #[test]
    fn wrong_api_version_unknown_kind_and_bad_yaml_are_reported() {
        let r = build(
            "apiVersion: v1\nkind: Tenant\nmetadata: {name: a}\n---\napiVersion: understudy.dev/v1alpha1\nkind: Widget\nmetadata: {name: w}\n---\n: : :\n  - [\n",
        );
        let fields: Vec<&str> = r.problems.iter().map(|p| p.field.as_str()).collect();
        assert_eq!(fields, ["apiVersion", "kind", "(yaml)"]);
    }
}
