//! A scripted Kubernetes API server for tests and the reconcile benchmark (feature `testkit`).
//!
//! There is no API server on a test machine, so — as kube-rs's controller-rs does — the client is
//! built on a `tower-test` mock service, and a task answers its requests. Rather than a fixed
//! script, the task keeps objects the way the API server would for what the operator uses (get,
//! create, replace with resourceVersion checks, merge patches of objects and their `status`
//! subresource, finalizer-aware deletes, Events) and records every request, so a test asserts
//! exactly what the operator asked for: finalizer added, status patched, cleanup on delete.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use http::{Method, Request, Response, StatusCode};
use kube::client::Body;
use kube::{Client, Resource};
use serde::de::DeserializeOwned;
use serde_json::{Value, json};

/// One request the operator made.
#[derive(Debug, Clone)]
pub struct Recorded {
    /// HTTP method.
    pub method: Method,
    /// Path, without the query.
    pub path: String,
    /// The body (JSON), `null` when empty.
    pub body: Value,
}

#[derive(Default)]
struct State {
    objects: BTreeMap<String, Value>,
    requests: Vec<Recorded>,
    resource_version: u64,
    /// (method, path fragment, status code, remaining times); code 0: never answer.
    failures: Vec<(Method, String, u16, usize)>,
    /// Deleted objects (path, last state with its final resourceVersion), for watches.
    tombstones: Vec<(String, Value)>,
}

/// Whether `object` (a namespaced object's path) is in `collection` (namespaced or across all
/// namespaces).
fn in_collection(object: &str, collection: &str) -> bool {
    if collection.contains("/namespaces/") {
        return object
            .strip_prefix(collection)
            .and_then(|r| r.strip_prefix('/'))
            .is_some_and(|name| !name.contains('/'));
    }
    let o: Vec<&str> = object.split('/').collect();
    let c: Vec<&str> = collection.split('/').collect();
    o.len() == 8 && c.len() == 5 && o[..4] == c[..4] && o[4] == "namespaces" && o[6] == c[4]
}

fn rv_of(v: &Value) -> u64 {
    v["metadata"]["resourceVersion"]
        .as_str()
        .and_then(|r| r.parse().ok())
        .unwrap_or(0)
}

/// The scripted API server.
#[derive(Clone)]
pub struct FakeApi {
    state: Arc<Mutex<State>>,
}

/// The collection path of kind `K` in `namespace`.
pub fn collection<K: Resource<DynamicType = ()>>(namespace: &str) -> String {
    K::url_path(&(), Some(namespace))
}

/// The path of one object.
pub fn object_path<K: Resource<DynamicType = ()>>(namespace: &str, name: &str) -> String {
    format!("{}/{name}", collection::<K>(namespace))
}

fn status_body(code: u16, reason: &str, message: &str) -> Value {
    json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
           "message": message, "reason": reason, "code": code})
}

fn merge(target: &mut Value, patch: &Value) {
    json_patch::merge(target, patch);
}

impl FakeApi {
    /// Starts the server; returns it and a client talking to it.
    pub fn start() -> (FakeApi, Client) {
        let (service, mut handle) = tower_test::mock::pair::<Request<Body>, Response<Body>>();
        let api = FakeApi {
            state: Arc::new(Mutex::new(State::default())),
        };
        let server = api.clone();
        tokio::spawn(async move {
            while let Some((request, respond)) = handle.next_request().await {
                let (parts, body) = request.into_parts();
                let bytes = body.collect_bytes().await.unwrap_or_default();
                let body: Value = if bytes.is_empty() {
                    Value::Null
                } else {
                    serde_json::from_slice(&bytes).unwrap_or(Value::Null)
                };
                let query = parts.uri.query().unwrap_or("");
                if parts.method == Method::GET && query.contains("watch=true") {
                    // A watch: after a short wait, every change since the resourceVersion asked
                    // for, then the end of the stream (the watcher simply watches again).
                    let since: u64 = query
                        .split('&')
                        .find_map(|kv| kv.strip_prefix("resourceVersion="))
                        .and_then(|v| v.parse().ok())
                        .unwrap_or(0);
                    let server = server.clone();
                    let path = parts.uri.path().to_string();
                    tokio::spawn(async move {
                        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
                        let lines = server.changes(&path, since);
                        let response = Response::builder()
                            .status(200)
                            .header("content-type", "application/json")
                            .body(Body::from(lines.into_bytes()))
                            .unwrap_or_else(|_| Response::new(Body::empty()));
                        respond.send_response(response);
                    });
                    continue;
                }
                let (code, value) =
                    if parts.method == Method::GET && server.is_collection(parts.uri.path()) {
                        server.list_json(parts.uri.path())
                    } else {
                        server.handle(&parts.method, parts.uri.path(), body)
                    };
                if value.get("hang").is_some() {
                    // Injected hang: hold the response far beyond any client deadline.
                    tokio::spawn(async move {
                        tokio::time::sleep(std::time::Duration::from_secs(600)).await;
                        drop(respond);
                    });
                    continue;
                }
                let response = Response::builder()
                    .status(code)
                    .header("content-type", "application/json")
                    .body(Body::from(serde_json::to_vec(&value).unwrap_or_default()))
                    .unwrap_or_else(|_| Response::new(Body::empty()));
                respond.send_response(response);
            }
        });
        (api, Client::new(service, "default"))
    }

    fn is_collection(&self, path: &str) -> bool {
        let parts: Vec<&str> = path.split('/').collect();
        // /apis/G/V/plural or /apis/G/V/namespaces/NS/plural
        parts.get(1) == Some(&"apis")
            && (parts.len() == 5 || (parts.len() == 7 && parts[4] == "namespaces"))
    }

    fn list_json(&self, collection: &str) -> (StatusCode, Value) {
        let st = self.lock();
        let items: Vec<Value> = st
            .objects
            .iter()
            .filter(|(p, _)| in_collection(p, collection))
            .map(|(_, v)| v.clone())
            .collect();
        (
            StatusCode::OK,
            json!({"apiVersion": "v1", "kind": "List", "items": items,
                   "metadata": {"resourceVersion": st.resource_version.to_string()}}),
        )
    }

    /// Watch events (one JSON object per line) for changes in `collection` after `since`.
    fn changes(&self, collection: &str, since: u64) -> String {
        let st = self.lock();
        let mut events: Vec<(u64, &str, &Value)> = st
            .objects
            .iter()
            .filter(|(p, v)| in_collection(p, collection) && rv_of(v) > since)
            .map(|(_, v)| (rv_of(v), "MODIFIED", v))
            .chain(
                st.tombstones
                    .iter()
                    .filter(|(p, v)| in_collection(p, collection) && rv_of(v) > since)
                    .map(|(_, v)| (rv_of(v), "DELETED", v)),
            )
            .collect();
        events.sort_by_key(|e| e.0);
        events
            .into_iter()
            .map(|(_, kind, v)| format!("{}\n", json!({"type": kind, "object": v})))
            .collect()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Every request so far.
    pub fn requests(&self) -> Vec<Recorded> {
        self.lock().requests.clone()
    }

    /// Every request so far, forgetting them.
    pub fn take_requests(&self) -> Vec<Recorded> {
        std::mem::take(&mut self.lock().requests)
    }

    /// Makes the next `times` requests with `method` whose path contains `fragment` fail with
    /// `code` (`0`: never answered, as a hung connection).
    pub fn fail(&self, method: Method, fragment: &str, code: u16, times: usize) {
        self.lock()
            .failures
            .push((method, fragment.to_string(), code, times));
    }

    /// Creates an object as `kubectl apply` would (metadata filled in by the server). The
    /// creation timestamp advances one second per object, so creation order is insertion order.
    pub fn create<K: Resource<DynamicType = ()> + serde::Serialize>(&self, obj: &K) {
        let ns = obj
            .meta()
            .namespace
            .clone()
            .unwrap_or_else(|| "default".into());
        let value = serde_json::to_value(obj).unwrap_or(Value::Null);
        let (code, body) = self.handle(&Method::POST, &collection::<K>(&ns), value);
        assert!(code.is_success(), "create failed: {code} {body}");
        // Creating is the test's doing, not the operator's.
        self.lock().requests.pop();
    }

    /// Deletes an object as `kubectl delete` would: with finalizers it only gets a
    /// deletionTimestamp (and a new generation) until they are removed.
    pub fn delete<K: Resource<DynamicType = ()>>(&self, namespace: &str, name: &str) {
        self.handle(
            &Method::DELETE,
            &object_path::<K>(namespace, name),
            Value::Null,
        );
        self.lock().requests.pop();
    }

    /// Changes an object's spec as `kubectl apply` would (new generation).
    pub fn update_spec<K: Resource<DynamicType = ()>>(
        &self,
        namespace: &str,
        name: &str,
        spec: Value,
    ) {
        let path = object_path::<K>(namespace, name);
        let mut st = self.lock();
        st.resource_version += 1;
        let rv = st.resource_version.to_string();
        if let Some(obj) = st.objects.get_mut(&path) {
            obj["spec"] = spec;
            let generation = obj["metadata"]["generation"].as_i64().unwrap_or(1) + 1;
            obj["metadata"]["generation"] = json!(generation);
            obj["metadata"]["resourceVersion"] = json!(rv);
        }
    }

    /// One object as stored.
    pub fn get<K: Resource<DynamicType = ()> + DeserializeOwned>(
        &self,
        namespace: &str,
        name: &str,
    ) -> Option<K> {
        let st = self.lock();
        let v = st.objects.get(&object_path::<K>(namespace, name))?;
        serde_json::from_value(v.clone()).ok()
    }

    /// Every object of kind `K` (what a watch cache would hold).
    pub fn list<K: Resource<DynamicType = ()> + DeserializeOwned>(&self) -> Vec<K> {
        let prefix = format!("/apis/{}/{}/", K::group(&()), K::version(&()));
        let plural = format!("/{}/", K::plural(&()));
        let st = self.lock();
        st.objects
            .iter()
            .filter(|(p, _)| p.starts_with(&prefix) && p.contains(&plural))
            .filter_map(|(_, v)| serde_json::from_value(v.clone()).ok())
            .collect()
    }

    fn handle(&self, method: &Method, path: &str, body: Value) -> (StatusCode, Value) {
        let mut st = self.lock();
        st.requests.push(Recorded {
            method: method.clone(),
            path: path.to_string(),
            body: body.clone(),
        });
        if let Some(i) = st
            .failures
            .iter()
            .position(|(m, f, _, n)| m == method && path.contains(f.as_str()) && *n > 0)
        {
            st.failures[i].3 -= 1;
            let code = st.failures[i].2;
            if code == 0 {
                return (StatusCode::OK, json!({"hang": true}));
            }
            return (
                StatusCode::from_u16(code).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR),
                status_body(code, "InternalError", "injected failure"),
            );
        }
        let not_found = || {
            (
                StatusCode::NOT_FOUND,
                status_body(404, "NotFound", &format!("{path} not found")),
            )
        };
        let conflict = || {
            (
                StatusCode::CONFLICT,
                status_body(409, "Conflict", "the object has been modified"),
            )
        };
        let (object, sub) = match path.strip_suffix("/status") {
            Some(p) => (p.to_string(), true),
            None => (path.to_string(), false),
        };
        match *method {
            Method::GET => match st.objects.get(&object) {
                Some(v) => (StatusCode::OK, v.clone()),
                None => not_found(),
            },
            Method::POST => {
                let mut obj = body;
                if obj["metadata"]["name"].is_null() {
                    return (
                        StatusCode::UNPROCESSABLE_ENTITY,
                        status_body(422, "Invalid", "metadata.name is required"),
                    );
                }
                let name = obj["metadata"]["name"]
                    .as_str()
                    .unwrap_or_default()
                    .to_string();
                let full = format!("{path}/{name}");
                if st.objects.contains_key(&full) {
                    return (
                        StatusCode::CONFLICT,
                        status_body(409, "AlreadyExists", "already exists"),
                    );
                }
                st.resource_version += 1;
                let rv = st.resource_version;
                let ns = path
                    .split("/namespaces/")
                    .nth(1)
                    .and_then(|r| r.split('/').next())
                    .unwrap_or("default")
                    .to_string();
                let meta = &mut obj["metadata"];
                meta["namespace"] = json!(ns);
                meta["resourceVersion"] = json!(rv.to_string());
                meta["uid"] = json!(format!("uid-{rv}"));
                meta["generation"] = json!(1);
                let created = k8s_openapi::jiff::Timestamp::from_second(1_700_000_000 + rv as i64)
                    .map(|t| t.to_string())
                    .unwrap_or_default();
                meta["creationTimestamp"] = json!(created);
                st.objects.insert(full, obj.clone());
                (StatusCode::CREATED, obj)
            }
            Method::PUT => {
                let Some(current) = st.objects.get(&object).cloned() else {
                    return not_found();
                };
                if body["metadata"]["resourceVersion"] != current["metadata"]["resourceVersion"] {
                    return conflict();
                }
                st.resource_version += 1;
                let mut obj = body;
                obj["metadata"]["resourceVersion"] = json!(st.resource_version.to_string());
                st.objects.insert(object, obj.clone());
                (StatusCode::OK, obj)
            }
            Method::PATCH => {
                let Some(mut obj) = st.objects.get(&object).cloned() else {
                    return not_found();
                };
                let rv = &body["metadata"]["resourceVersion"];
                if !rv.is_null() && *rv != obj["metadata"]["resourceVersion"] {
                    return conflict();
                }
                if sub {
                    // The status subresource ignores everything but status.
                    merge(&mut obj, &json!({"status": body["status"].clone()}));
                } else {
                    let spec_before = obj["spec"].clone();
                    let mut patch = body;
                    if let Some(m) = patch.get_mut("metadata").and_then(Value::as_object_mut) {
                        m.remove("resourceVersion");
                    }
                    if let Some(p) = patch.as_object_mut() {
                        p.remove("status");
                    }
                    merge(&mut obj, &patch);
                    if obj["spec"] != spec_before {
                        let generation = obj["metadata"]["generation"].as_i64().unwrap_or(1) + 1;
                        obj["metadata"]["generation"] = json!(generation);
                    }
                }
                st.resource_version += 1;
                obj["metadata"]["resourceVersion"] = json!(st.resource_version.to_string());
                let finalized = obj["metadata"]["finalizers"]
                    .as_array()
                    .is_none_or(|f| f.is_empty());
                if !obj["metadata"]["deletionTimestamp"].is_null() && finalized {
                    st.objects.remove(&object);
                    st.tombstones.push((object, obj.clone()));
                } else {
                    st.objects.insert(object, obj.clone());
                }
                (StatusCode::OK, obj)
            }
            Method::DELETE => {
                let Some(mut obj) = st.objects.get(&object).cloned() else {
                    return not_found();
                };
                let finalized = obj["metadata"]["finalizers"]
                    .as_array()
                    .is_none_or(|f| f.is_empty());
                if finalized {
                    st.objects.remove(&object);
                    st.resource_version += 1;
                    obj["metadata"]["resourceVersion"] = json!(st.resource_version.to_string());
                    st.tombstones.push((object, obj.clone()));
                } else if obj["metadata"]["deletionTimestamp"].is_null() {
                    st.resource_version += 1;
                    obj["metadata"]["deletionTimestamp"] = json!("2026-01-01T00:00:00Z");
                    let generation = obj["metadata"]["generation"].as_i64().unwrap_or(1) + 1;
                    obj["metadata"]["generation"] = json!(generation);
                    obj["metadata"]["resourceVersion"] = json!(st.resource_version.to_string());
                    st.objects.insert(object, obj.clone());
                }
                (StatusCode::OK, obj)
            }
            _ => (
                StatusCode::METHOD_NOT_ALLOWED,
                status_body(405, "MethodNotAllowed", "not supported by the fake"),
            ),
        }
    }
}
