//! Redis restarts under 1,000 hub receivers (100 topics × 10) in each of two processes
//! (`hub_probe`, this package's binary): every receiver of both processes is told `Gap`, and a
//! message published on each topic afterwards reaches every receiver of that topic, once.
//!
//! Each probe's output is read by a thread of its own into a shared record; the test polls the
//! record with bounded waits (never a sleep as synchronisation, never a duration asserted).

use std::collections::HashMap;
use std::io::{BufRead, BufReader};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use understudy_core::{Stores, Topic};
use understudy_e2e::{RedisServer, eventually};

const TOPICS: usize = 100;
const PER_TOPIC: usize = 10;
const RECEIVERS: usize = TOPICS * PER_TOPIC;
/// The longest any step may take (two probes and Redis share two cores with the test).
const WAIT: Duration = Duration::from_secs(60);

#[derive(Debug, Clone, PartialEq, Eq)]
enum Event {
    Gap,
    Msg(String),
}

/// What one probe printed.
#[derive(Default)]
struct Record {
    ready: bool,
    /// Every receiver's deliveries, in order.
    events: HashMap<usize, Vec<Event>>,
    /// Lines that did not parse.
    garbage: Vec<String>,
    /// Its output ended.
    ended: bool,
}

impl Record {
    /// How many receivers' deliveries so far satisfy `f`.
    fn count(&self, f: impl Fn(&[Event]) -> bool) -> usize {
        self.events.values().filter(|e| f(e)).count()
    }
}

/// A `hub_probe` child process, killed on drop if closing its input did not end it.
struct Probe {
    name: &'static str,
    child: Child,
    stdin: Option<ChildStdin>,
    record: Arc<Mutex<Record>>,
}

impl Probe {
    fn start(name: &'static str, url: &str) -> Probe {
        let mut child = Command::new(env!("CARGO_BIN_EXE_hub_probe"))
            .args([url, &TOPICS.to_string(), &PER_TOPIC.to_string()])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("hub_probe starts");
        let stdout = child.stdout.take().expect("piped stdout");
        let record = Arc::new(Mutex::new(Record::default()));
        let writer = record.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                let mut r = writer.lock().unwrap_or_else(|e| e.into_inner());
                let mut parts = line.splitn(3, ' ');
                match (
                    parts.next(),
                    parts.next().map(str::parse::<usize>),
                    parts.next(),
                ) {
                    (Some("ready"), None, None) => r.ready = true,
                    (Some("gap"), Some(Ok(n)), None) => {
                        r.events.entry(n).or_default().push(Event::Gap)
                    }
                    (Some("msg"), Some(Ok(n)), Some(m)) => r
                        .events
                        .entry(n)
                        .or_default()
                        .push(Event::Msg(m.to_string())),
                    _ => r.garbage.push(line.clone()),
                }
            }
            writer.lock().unwrap_or_else(|e| e.into_inner()).ended = true;
        });
        Probe {
            name,
            stdin: child.stdin.take(),
            child,
            record,
        }
    }

    fn record(&self) -> MutexGuard<'_, Record> {
        self.record.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Waits until `f` holds of this probe's record; panics with `what` and `detail` if not.
    async fn until(
        &self,
        what: &str,
        f: impl Fn(&Record) -> bool,
        detail: impl Fn(&Record) -> String,
    ) {
        let reached = eventually(WAIT, || async { f(&self.record()).then_some(()) }).await;
        if reached.is_none() {
            let r = self.record();
            panic!(
                "{}: {what} not reached within {WAIT:?}: {}{}",
                self.name,
                detail(&r),
                if r.ended { " (its output ended)" } else { "" }
            );
        }
    }
}

impl Drop for Probe {
    fn drop(&mut self) {
        drop(self.stdin.take());
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn topic(i: usize) -> Topic {
    Topic::global("probe", &format!("t{i}")).expect("a valid topic")
}

/// Publishes `{prefix} t{i}` on every topic, through a hub of its own (a fresh connection).
async fn publish_round(url: &str, prefix: &str) {
    let publisher = Stores::redis(url).expect("valid url").hub;
    for i in 0..TOPICS {
        publisher
            .publish(&topic(i), format!("{prefix} t{i}"))
            .await
            .unwrap_or_else(|e| panic!("publishing {prefix} on t{i}: {e}"));
    }
}

/// The messages among `events`.
fn messages(events: &[Event]) -> Vec<&str> {
    events
        .iter()
        .filter_map(|e| match e {
            Event::Msg(m) => Some(m.as_str()),
            Event::Gap => None,
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_restarts_under_two_processes_of_a_thousand_receivers() {
    let server = RedisServer::start().expect("redis-server starts");
    let port = server.port;
    let url = server.url();
    let probes = [Probe::start("probe A", &url), Probe::start("probe B", &url)];
    for p in &probes {
        p.until(
            "ready",
            |r| r.ready,
            |r| format!("{} lines of garbage", r.garbage.len()),
        )
        .await;
    }

    // Before: every receiver hears its topic, once, and nothing else.
    publish_round(&url, "before").await;
    for p in &probes {
        p.until(
            "every receiver got the first round",
            |r| r.count(|e| !e.is_empty()) == RECEIVERS,
            |r| format!("{} of {RECEIVERS} receivers", r.count(|e| !e.is_empty())),
        )
        .await;
        let r = p.record();
        for n in 0..RECEIVERS {
            let want = vec![Event::Msg(format!("before t{}", n / PER_TOPIC))];
            assert_eq!(
                r.events[&n], want,
                "{}: receiver {n} before the restart",
                p.name
            );
        }
    }

    // Redis goes away and comes back on the same port.
    drop(server);
    let server = RedisServer::start_on(port).expect("redis-server starts again on its port");
    let told = |e: &[Event]| e.contains(&Event::Gap);
    for p in &probes {
        p.until(
            "every receiver told Gap",
            |r| r.count(told) == RECEIVERS,
            |r| format!("{} of {RECEIVERS} receivers told", r.count(told)),
        )
        .await;
    }
    // A gap is sent once the receiver's topic is subscribed again, so this round is heard.
    publish_round(&url, "after").await;
    let heard = |e: &[Event]| messages(e).len() >= 2;
    for p in &probes {
        p.until(
            "every receiver got the second round",
            |r| r.count(heard) == RECEIVERS,
            |r| format!("{} of {RECEIVERS} receivers", r.count(heard)),
        )
        .await;
        let r = p.record();
        assert!(
            r.garbage.is_empty(),
            "{}: unexpected lines {:?}",
            p.name,
            r.garbage
        );
        for n in 0..RECEIVERS {
            let t = n / PER_TOPIC;
            let events = &r.events[&n];
            assert_eq!(
                messages(events),
                vec![format!("before t{t}"), format!("after t{t}")],
                "{}: receiver {n} gets exactly its topic's messages",
                p.name
            );
            let gap = events.iter().position(|e| *e == Event::Gap);
            let after = events
                .iter()
                .position(|e| *e == Event::Msg(format!("after t{t}")));
            assert!(
                gap.is_some() && gap < after,
                "{}: receiver {n} is told Gap before the message after the restart: {events:?}",
                p.name
            );
        }
    }
    assert_eq!(
        server
            .cli(&["PUBSUB", "NUMSUB", topic(0).as_str()])
            .unwrap()
            .lines()
            .last(),
        Some("2"),
        "one subscriber connection per process"
    );

    // Closing a probe's input ends it.
    for mut p in probes {
        drop(p.stdin.take());
        let exited = eventually(WAIT, || {
            let status = p.child.try_wait().ok().flatten();
            async move { status }
        })
        .await;
        assert!(
            exited.is_some_and(|s| s.success()),
            "{} ends cleanly when its input closes: {exited:?}",
            p.name
        );
    }
}
