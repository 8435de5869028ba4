//! Channels across processes (SPEC §7.2, §12): gateways on one `redis-server`. A message
//! published on one process reaches subscribers on the others in order, none lost and none
//! twice; a subscriber that reconnects to a third process with `Last-Event-ID` gets exactly the
//! rest; a subscriber that stops reading neither blocks the others nor loses a message; while
//! Redis is frozen publishing answers 503 and open streams carry on from the stream afterwards.

use std::path::PathBuf;
use std::time::Duration;

use serde_json::{Value, json};
use understudy_e2e::{Gateway, RedisServer, Sse};

const WAIT: Duration = Duration::from_secs(20);

fn bin() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_understudy-gateway"))
}

async fn gateways(n: usize, redis: &RedisServer) -> Vec<Gateway> {
    let mut gws = Vec::new();
    for _ in 0..n {
        gws.push(
            Gateway::start_bin(&bin(), &["--redis-url", &redis.url()])
                .await
                .expect("gateway starts"),
        );
    }
    gws
}

fn client() -> reqwest::Client {
    reqwest::Client::new()
}

/// A public channel: (id, publish token).
async fn channel(gw: &Gateway) -> (String, String) {
    let r = client()
        .post(format!("{}/v1/channels", gw.base))
        .json(&json!({"name": "orders", "visibility": "public"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201);
    let v: Value = r.json().await.unwrap();
    (
        v["id"].as_str().unwrap().to_string(),
        v["publish_token"].as_str().unwrap().to_string(),
    )
}

async fn publish(gw: &Gateway, id: &str, token: &str, payload: Value) -> reqwest::Response {
    client()
        .post(format!("{}/v1/channels/{id}/publish", gw.base))
        .header("x-publish-token", token)
        .json(&json!({ "payload": payload }))
        .timeout(WAIT)
        .send()
        .await
        .unwrap()
}

async fn subscribe(gw: &Gateway, id: &str, last: Option<&str>) -> Sse {
    let mut req = client().get(format!("{}/channel/v1/public/{id}", gw.base));
    if let Some(l) = last {
        req = req.header("last-event-id", l);
    }
    let r = req.send().await.unwrap();
    assert_eq!(r.status(), 200);
    Sse::new(r)
}

/// The next message of a stream: (event id, payload).
async fn next(sse: &mut Sse) -> (String, Value) {
    let (id, event, data) = sse.next(WAIT).await.expect("a message within 20 s");
    assert_eq!(event, "message");
    let v: Value = serde_json::from_str(&data).unwrap();
    let id = id.expect("an id");
    assert_eq!(v["id"], id.as_str());
    (id, v["payload"].clone())
}

#[tokio::test]
async fn publishes_on_one_process_reach_every_process_once_in_order_and_resume_on_a_third() {
    let redis = RedisServer::start().expect("redis-server starts");
    let gws = gateways(3, &redis).await;
    let (id, token) = channel(&gws[0]).await;
    let mut subs = Vec::new();
    for i in 0..10 {
        subs.push(subscribe(&gws[1 + i % 2], &id, None).await);
    }
    let mut leaver = subscribe(&gws[1], &id, None).await;
    let total = 120;
    let publisher = {
        let base = gws[0].base.clone();
        let (id, token) = (id.clone(), token.clone());
        tokio::spawn(async move {
            for n in 0..total {
                let r = client()
                    .post(format!("{base}/v1/channels/{id}/publish"))
                    .header("x-publish-token", &token)
                    .json(&json!({"payload": {"n": n}}))
                    .send()
                    .await
                    .unwrap();
                assert_eq!(r.status(), 201);
                if n % 10 == 0 {
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
            }
        })
    };
    // One subscriber leaves after 40 messages and comes back on the third process.
    let mut last = String::new();
    for n in 0..40 {
        let (eid, p) = next(&mut leaver).await;
        assert_eq!(p, json!({"n": n}));
        last = eid;
    }
    drop(leaver);
    let mut back = subscribe(&gws[2], &id, Some(&last)).await;
    for n in 40..total {
        let (_, p) = next(&mut back).await;
        assert_eq!(
            p,
            json!({"n": n}),
            "the resumed stream goes on where it left off"
        );
    }
    for sub in &mut subs {
        for n in 0..total {
            let (_, p) = next(sub).await;
            assert_eq!(p, json!({"n": n}));
        }
    }
    publisher.await.unwrap();
    // Nothing twice: the next thing on each stream is the next message.
    publish(&gws[0], &id, &token, json!("last")).await;
    for sub in subs.iter_mut().chain(std::iter::once(&mut back)) {
        assert_eq!(next(sub).await.1, json!("last"));
    }
}

#[tokio::test]
async fn a_subscriber_that_stops_reading_blocks_no_one_and_loses_nothing() {
    let redis = RedisServer::start().expect("redis-server starts");
    let gws = gateways(2, &redis).await;
    let (id, token) = channel(&gws[0]).await;
    // Both on one process, so they share its hub receiver's topic.
    let mut fast = subscribe(&gws[1], &id, None).await;
    let mut slow = subscribe(&gws[1], &id, None).await;
    // 2,000 messages of 8 KiB: far more than the topic's buffer (256 messages) and the socket
    // buffers (a few MiB on loopback).
    let total = 2000;
    let pad = "x".repeat(8 * 1024);
    for n in 0..total {
        let r = publish(&gws[0], &id, &token, json!({"n": n, "pad": pad})).await;
        assert_eq!(r.status(), 201);
        let (_, p) = next(&mut fast).await;
        assert_eq!(p["n"], n, "the fast subscriber is not held back");
    }
    for n in 0..total {
        let (_, p) = next(&mut slow).await;
        assert_eq!(
            p["n"], n,
            "the slow subscriber gets every message, in order"
        );
    }
    let metrics = client()
        .get(format!("{}/metrics", gws[1].base))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let lagged: f64 = metrics
        .lines()
        .find_map(|l| l.strip_prefix("understudy_channel_lagged_receivers_total "))
        .and_then(|v| v.trim().parse().ok())
        .expect("the lag counter");
    assert!(lagged >= 1.0, "the slow subscriber lagged and re-read");
}

#[tokio::test]
async fn while_redis_is_frozen_publishing_answers_503_and_streams_resume_from_the_stream() {
    let redis = RedisServer::start().expect("redis-server starts");
    let gws = gateways(2, &redis).await;
    let (id, token) = channel(&gws[0]).await;
    let mut sub = subscribe(&gws[1], &id, None).await;
    assert_eq!(publish(&gws[0], &id, &token, json!(1)).await.status(), 201);
    assert_eq!(next(&mut sub).await.1, json!(1));
    redis.pause().unwrap();
    let r = publish(&gws[0], &id, &token, json!("during")).await;
    let status = r.status();
    let body: Value = r.json().await.unwrap();
    redis.resume().unwrap();
    assert_eq!(status, 503, "{body}");
    assert_eq!(body["error"]["code"], "unavailable");
    // Whatever Redis holds is the truth; the refused publish may still have reached it (it was
    // queued on the frozen server), so the stream must show exactly what the channel holds.
    let mut published = None;
    for _ in 0..100 {
        let r = publish(&gws[0], &id, &token, json!(2)).await;
        if r.status() == 201 {
            published = Some(());
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    published.expect("publishing works again once Redis is back");
    let stored: Value = client()
        .get(format!("{}/v1/channels/{id}/messages", gws[1].base))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let stored: Vec<Value> = stored["messages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["payload"].clone())
        .skip(1)
        .collect();
    assert_eq!(stored.last(), Some(&json!(2)));
    for want in &stored {
        assert_eq!(
            &next(&mut sub).await.1,
            want,
            "the stream follows the channel's record"
        );
    }
    assert!(
        sub.next(Duration::from_millis(500)).await.is_none(),
        "nothing twice"
    );
}

#[tokio::test]
async fn a_stream_ends_on_delete_from_another_process_and_unknown_ids_replay_from_the_oldest() {
    let redis = RedisServer::start().expect("redis-server starts");
    let gws = gateways(2, &redis).await;
    let (id, token) = channel(&gws[0]).await;
    for n in 0..3 {
        publish(&gws[0], &id, &token, json!(n)).await;
    }
    // A Last-Event-ID that names nothing here: every retained message, and a comment saying so.
    let mut sub = subscribe(&gws[1], &id, Some("019e07c2-c7b9-7820-9c5e-222d299ffacb")).await;
    for n in 0..3 {
        assert_eq!(next(&mut sub).await.1, json!(n));
    }
    assert!(
        sub.comments
            .iter()
            .any(|c| c.contains("replaying from the oldest retained message")),
        "{:?}",
        sub.comments
    );
    let r = client()
        .delete(format!("{}/v1/channels/{id}", gws[0].base))
        .header("x-publish-token", &token)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert!(
        sub.ends(WAIT).await,
        "the stream ends when its channel is deleted"
    );
    let r = publish(&gws[1], &id, &token, json!("late")).await;
    assert_eq!(r.status(), 404);
}

#[tokio::test]
async fn streams_carry_on_across_a_redis_restart_that_keeps_the_data() {
    let dir = std::env::temp_dir().join(format!("understudy-ch-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let port = understudy_e2e::free_port();
    let redis = RedisServer::start_in(port, &dir).expect("redis-server starts");
    let gws = gateways(2, &redis).await;
    let (id, token) = channel(&gws[0]).await;
    let mut sub = subscribe(&gws[1], &id, None).await;
    assert_eq!(publish(&gws[0], &id, &token, json!(1)).await.status(), 201);
    assert_eq!(next(&mut sub).await.1, json!(1));
    assert_eq!(redis.cli(&["SAVE"]).unwrap(), "OK");
    drop(redis);
    let r = publish(&gws[0], &id, &token, json!("down")).await;
    assert_eq!(r.status(), 503, "publishing needs Redis");
    let _redis = RedisServer::start_in(port, &dir).expect("redis-server starts again");
    let mut back = false;
    for _ in 0..100 {
        if publish(&gws[0], &id, &token, json!(2)).await.status() == 201 {
            back = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(back, "publishing works again once Redis is back");
    assert_eq!(
        next(&mut sub).await.1,
        json!(2),
        "the open stream carries on from the stream"
    );
    assert!(
        sub.next(Duration::from_millis(500)).await.is_none(),
        "nothing twice"
    );
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test]
async fn a_revoked_grant_ends_a_replay_at_once_not_after_the_backlog() {
    let redis = RedisServer::start().expect("redis-server starts");
    let gws = gateways(2, &redis).await;
    let r = client()
        .post(format!("{}/v1/channels", gws[0].base))
        .json(&json!({"name": "backlog", "visibility": "private"}))
        .send()
        .await
        .unwrap();
    let v: Value = r.json().await.unwrap();
    let (id, token) = (
        v["id"].as_str().unwrap().to_string(),
        v["publish_token"].as_str().unwrap().to_string(),
    );
    let g: Value = client()
        .post(format!("{}/v1/channels/{id}/read-grants", gws[0].base))
        .header("x-publish-token", &token)
        .json(&json!({}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let total = 3000;
    let pad = "x".repeat(4096);
    for n in 0..total {
        let r = publish(&gws[0], &id, &token, json!({"n": n, "pad": pad})).await;
        assert_eq!(r.status(), 201);
    }
    // The scheme is case-insensitive ("bearer"); the replay is about 12 MiB, far more than the
    // socket buffers, and this reader waits before reading any of it.
    let resp = client()
        .get(format!(
            "{}/channel/v1/private/{id}?from=oldest",
            gws[1].base
        ))
        .header(
            "authorization",
            format!("bearer {}", g["raw_token"].as_str().unwrap()),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let mut sse = Sse::new(resp);
    tokio::time::sleep(Duration::from_millis(500)).await;
    let r = client()
        .post(format!(
            "{}/v1/channels/{id}/read-grants/{}/revoke",
            gws[0].base,
            g["id"].as_str().unwrap()
        ))
        .header("x-publish-token", &token)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let mut got = 0;
    while let Some((_, event, _)) = sse.next(WAIT).await {
        assert_eq!(event, "message");
        got += 1;
    }
    assert!(
        got < total,
        "the stream ended before the backlog ({got} of {total} sent)"
    );
    assert!(
        sse.comments
            .iter()
            .any(|c| c.contains("the read grant was revoked")),
        "{:?}",
        sse.comments
    );
}
