//! MCP tasks (revision 2025-11-25) over the execute API's call records: a task-augmented
//! `tools/call`, `tasks/get`, `tasks/result`, `tasks/list`, `tasks/cancel`; a task streamed
//! through `GET /mcp/stream/{taskId}`, and an executed call read as a task.

mod common;

use common::{ADMIN, Reply, app, call, json};
use serde_json::{Value, json};

async fn session(app: &understudy_gateway::state::App, tenant: &str, version: &str) -> String {
    let r = call(
        app,
        "POST",
        "/mcp",
        &[("x-tenant-id", tenant), ("content-type", "application/json")],
        json!({"jsonrpc": "2.0", "id": 0, "method": "initialize", "params": {"protocolVersion": version}}).to_string(),
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.text());
    r.headers["mcp-session-id"].to_str().unwrap().to_string()
}

async fn rpc(
    app: &understudy_gateway::state::App,
    tenant: &str,
    sid: &str,
    method: &str,
    params: Value,
) -> Value {
    let r: Reply = call(
        app,
        "POST",
        "/mcp",
        &[
            ("x-tenant-id", tenant),
            ("content-type", "application/json"),
            ("mcp-session-id", sid),
        ],
        json!({"jsonrpc": "2.0", "id": 1, "method": method, "params": params}).to_string(),
    )
    .await;
    r.json()
}

#[tokio::test]
async fn a_task_runs_on_the_call_records_and_answers_its_result() {
    let app = app().await;
    let sid = session(&app, "shop", "2025-11-25").await;
    let init = call(
        &app,
        "POST",
        "/mcp",
        &[("x-tenant-id", "shop"), ("content-type", "application/json")],
        json!({"jsonrpc": "2.0", "id": 0, "method": "initialize", "params": {"protocolVersion": "2025-11-25"}}).to_string(),
    )
    .await
    .json();
    assert_eq!(
        init["result"]["capabilities"]["tasks"],
        json!({"list": {}, "cancel": {}, "requests": {"tools": {"call": {}}}})
    );
    let tools = rpc(&app, "shop", &sid, "tools/list", json!({})).await;
    assert_eq!(
        tools["result"]["tools"][0]["execution"],
        json!({"taskSupport": "optional"})
    );

    let started = rpc(
        &app,
        "shop",
        &sid,
        "tools/call",
        json!({"name": "get_invoices", "arguments": {}, "task": {"ttl": 60000}}),
    )
    .await;
    let task = started["result"]["task"].clone();
    let task_id = task["taskId"].as_str().expect("a task id").to_string();
    assert!(
        ["working", "completed"].contains(&task["status"].as_str().unwrap()),
        "{task}"
    );
    for field in ["createdAt", "lastUpdatedAt", "ttl", "pollInterval"] {
        assert!(task.get(field).is_some(), "{field} in {task}");
    }
    let result = rpc(
        &app,
        "shop",
        &sid,
        "tasks/result",
        json!({"taskId": task_id}),
    )
    .await;
    assert_eq!(
        result["result"]["content"][0]["text"],
        r#"{"invoices":["INV-1"]}"#
    );
    assert_eq!(
        result["result"]["structuredContent"],
        json!({"invoices": ["INV-1"]})
    );
    assert_eq!(
        result["result"]["_meta"]["io.modelcontextprotocol/related-task"]["taskId"],
        json!(task_id)
    );
    let got = rpc(&app, "shop", &sid, "tasks/get", json!({"taskId": task_id})).await;
    assert_eq!(got["result"]["status"], "completed");
    let listed = rpc(&app, "shop", &sid, "tasks/list", json!({})).await;
    assert!(
        listed["result"]["tasks"]
            .as_array()
            .unwrap()
            .iter()
            .any(|t| t["taskId"] == json!(task_id))
    );

    // The same record through the execute API: its stream ends with the final event.
    let auth = format!("Bearer {ADMIN}");
    let s = call(
        &app,
        "GET",
        &format!("/mcp/stream/{task_id}"),
        &[("authorization", auth.as_str()), ("x-tenant-id", "shop")],
        "",
    )
    .await;
    assert!(s.text().contains("event: final"), "{}", s.text());
    // And the reverse: an executed call is a task.
    let exec = call(
        &app,
        "POST",
        "/mcp/execute",
        &[
            ("authorization", auth.as_str()),
            ("x-tenant-id", "shop"),
            ("content-type", "application/json"),
        ],
        json!({"tool": "get_invoices"}).to_string(),
    )
    .await
    .json();
    let got = rpc(
        &app,
        "shop",
        &sid,
        "tasks/get",
        json!({"taskId": exec["call_id"]}),
    )
    .await;
    assert_eq!(got["result"]["taskId"], exec["call_id"]);

    // Unknown tasks, unknown tools.
    let r = rpc(&app, "shop", &sid, "tasks/get", json!({"taskId": "nope"})).await;
    assert_eq!(r["error"]["code"], -32602);
    let r = rpc(
        &app,
        "shop",
        &sid,
        "tools/call",
        json!({"name": "nope", "task": {}}),
    )
    .await;
    assert_eq!(r["error"]["code"], -32602);
    // Another tenant's session does not see the task.
    let r = json(
        &app,
        "POST",
        "/public/tenants",
        Some(ADMIN),
        json!({"tenant_id": "iso", "visibility": "global"}),
    )
    .await;
    assert_eq!(r.status, 201);
    let other = session(&app, "iso", "2025-11-25").await;
    let r = rpc(&app, "iso", &other, "tasks/get", json!({"taskId": task_id})).await;
    assert_eq!(r["error"]["code"], -32602, "{r}");
}

#[tokio::test]
async fn a_working_task_is_cancelled_once_and_older_revisions_have_no_tasks() {
    let app = app().await;
    let r = json(
        &app,
        "POST",
        "/public/tenants",
        Some(ADMIN),
        json!({"tenant_id": "slowtools", "visibility": "global"}),
    )
    .await;
    assert_eq!(r.status, 201);
    let r = json(
        &app,
        "POST",
        "/public/tenants/slowtools/scenarios",
        Some(ADMIN),
        json!({"tool_name": "t", "tool_description": "d", "tool_data": {"ok": true}}),
    )
    .await;
    assert_eq!(r.status, 201);
    // Chaos latency keeps nothing running here; cancel a task started through the model path
    // instead: a paced openai_chat call executed on this tenant, cancelled as a task.
    let r = json(
        &app,
        "PATCH",
        "/public/tenants/slowtools/settings",
        Some(ADMIN),
        json!({"stream_chunk_chars": 1, "stream_chunk_delay_ms": 500}),
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.text());
    let auth = format!("Bearer {ADMIN}");
    let exec = call(
        &app,
        "POST",
        "/mcp/execute",
        &[
            ("authorization", auth.as_str()),
            ("x-tenant-id", "slowtools"),
            ("content-type", "application/json"),
        ],
        json!({"tool": "openai_chat", "input": {"messages": [{"role": "user", "content": "go"}]}})
            .to_string(),
    )
    .await
    .json();
    let sid = session(&app, "slowtools", "2025-11-25").await;
    let r = rpc(
        &app,
        "slowtools",
        &sid,
        "tasks/cancel",
        json!({"taskId": exec["call_id"]}),
    )
    .await;
    assert_eq!(r["result"]["status"], "cancelled", "{r}");
    let r = rpc(
        &app,
        "slowtools",
        &sid,
        "tasks/cancel",
        json!({"taskId": exec["call_id"]}),
    )
    .await;
    assert_eq!(r["error"]["code"], -32602);
    let r = rpc(
        &app,
        "slowtools",
        &sid,
        "tasks/result",
        json!({"taskId": exec["call_id"]}),
    )
    .await;
    assert_eq!(
        r["error"]["code"], -32603,
        "a cancelled task has no result: {r}"
    );
    // 2025-06-18 has no tasks: a `task` parameter is ignored, the call answers at once.
    let old = session(&app, "slowtools", "2025-06-18").await;
    let r = rpc(
        &app,
        "slowtools",
        &old,
        "tools/call",
        json!({"name": "t", "task": {}}),
    )
    .await;
    assert_eq!(r["result"]["structuredContent"], json!({"ok": true}));
    let r = rpc(&app, "slowtools", &old, "tasks/list", json!({})).await;
    assert_eq!(r["error"]["code"], -32601);
}

/// A 2026-07-28 request: the `_meta` envelope (with the tasks extension declared when `tasks`)
/// and the routing headers.
async fn modern(
    app: &understudy_gateway::state::App,
    method: &str,
    name: Option<&str>,
    mut params: Value,
    tasks: bool,
) -> (u16, Value) {
    let mut caps = json!({});
    if tasks {
        caps = json!({"extensions": {"io.modelcontextprotocol/tasks": {}}});
    }
    params["_meta"] = json!({"io.modelcontextprotocol/protocolVersion": "2026-07-28",
                             "io.modelcontextprotocol/clientCapabilities": caps});
    let mut h = vec![
        ("x-tenant-id", "shop"),
        ("content-type", "application/json"),
        ("mcp-protocol-version", "2026-07-28"),
        ("mcp-method", method),
    ];
    if let Some(n) = name {
        h.push(("mcp-name", n));
    }
    let r = call(
        app,
        "POST",
        "/mcp",
        &h,
        json!({"jsonrpc": "2.0", "id": 1, "method": method, "params": params}).to_string(),
    )
    .await;
    (r.status.as_u16(), r.json())
}

#[tokio::test]
async fn the_2026_tasks_extension_is_offered_and_asked_for_per_request() {
    let app = app().await;
    let (_, d) = modern(&app, "server/discover", None, json!({}), false).await;
    assert_eq!(
        d["result"]["capabilities"]["extensions"],
        json!({"io.modelcontextprotocol/tasks": {}})
    );
    assert!(d["result"]["capabilities"].get("tasks").is_none());
    // Without the extension declared, a call answers at once.
    let (_, r) = modern(
        &app,
        "tools/call",
        Some("get_invoices"),
        json!({"name": "get_invoices"}),
        false,
    )
    .await;
    assert_eq!(r["result"]["resultType"], "complete");
    // Declared: the server answers with a task.
    let (status, r) = modern(
        &app,
        "tools/call",
        Some("get_invoices"),
        json!({"name": "get_invoices"}),
        true,
    )
    .await;
    assert_eq!(status, 200, "{r}");
    let t = r["result"].clone();
    assert_eq!(t["resultType"], "task");
    for f in [
        "taskId",
        "status",
        "createdAt",
        "lastUpdatedAt",
        "ttlMs",
        "pollIntervalMs",
    ] {
        assert!(t.get(f).is_some(), "{f} in {t}");
    }
    let id = t["taskId"].as_str().unwrap().to_string();
    // tasks/get until completed: the original result rides along.
    let mut done = Value::Null;
    for _ in 0..100 {
        let (_, g) = modern(&app, "tasks/get", Some(&id), json!({"taskId": id}), true).await;
        if g["result"]["status"] == "completed" {
            done = g;
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    assert_eq!(done["result"]["resultType"], "complete", "{done}");
    assert_eq!(
        done["result"]["result"]["structuredContent"],
        json!({"invoices": ["INV-1"]})
    );
    // Without the extension, the task methods are refused; tasks/result and tasks/list are gone.
    let (status, g) = modern(&app, "tasks/get", Some(&id), json!({"taskId": id}), false).await;
    assert_eq!(g["error"]["code"], -32021, "{g}");
    assert_eq!(status, 200);
    let (status, g) = modern(&app, "tasks/result", None, json!({"taskId": id}), true).await;
    assert_eq!((status, g["error"]["code"].clone()), (404, json!(-32601)));
    // The routing header must name the task.
    let (status, g) = modern(
        &app,
        "tasks/get",
        Some("other"),
        json!({"taskId": id}),
        true,
    )
    .await;
    assert_eq!((status, g["error"]["code"].clone()), (400, json!(-32020)));
    // Cancel and update acknowledge; an unknown task is -32602.
    let (_, c) = modern(&app, "tasks/cancel", Some(&id), json!({"taskId": id}), true).await;
    assert_eq!(c["result"]["resultType"], "complete");
    let (_, u) = modern(
        &app,
        "tasks/update",
        Some(&id),
        json!({"taskId": id, "inputResponses": {}}),
        true,
    )
    .await;
    assert_eq!(u["result"]["resultType"], "complete");
    let (_, n) = modern(
        &app,
        "tasks/get",
        Some("nope"),
        json!({"taskId": "nope"}),
        true,
    )
    .await;
    assert_eq!(n["error"]["code"], -32602);
}
