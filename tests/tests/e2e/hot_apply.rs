//! Hot apply under load: rebinding a backend's certificate takes effect for the next
//! request, with zero failed requests.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use e2e::*;

struct Outcome {
    sent: Instant,
    result: Result<(u16, String), String>,
}

#[test]
fn rebind_under_load_has_no_failures_and_applies_to_next_request() {
    let f = Fixture::standard();
    f.upload("client-2");
    let stop = Arc::new(AtomicBool::new(false));
    let outcomes: Arc<Mutex<Vec<Outcome>>> = Arc::new(Mutex::new(Vec::new()));

    let mut threads = Vec::new();
    for t in 0..3 {
        let client = f.client.clone();
        let stop = stop.clone();
        let outcomes = outcomes.clone();
        threads.push(std::thread::spawn(move || {
            let mut conn = None;
            let mut n = 0u64;
            while !stop.load(Ordering::Relaxed) {
                if conn.is_none() {
                    match client.connect() {
                        Ok(c) => conn = Some(c),
                        Err(e) => {
                            outcomes.lock().expect("lock").push(Outcome {
                                sent: Instant::now(),
                                result: Err(format!("connect: {e}")),
                            });
                            std::thread::sleep(Duration::from_millis(20));
                            continue;
                        }
                    }
                }
                let c = conn.as_mut().expect("conn");
                n += 1;
                let sent = Instant::now();
                let res = c.send(&Request::get(&format!("/orders/t{t}/{n}")));
                let result = match res {
                    Ok(r) => {
                        if !r.keep_alive() {
                            conn = None; // the server may close a keep-alive connection after a response
                        }
                        let subj = serde_json::from_slice::<serde_json::Value>(&r.body)
                            .ok()
                            .and_then(|v| v["subject"].as_str().map(str::to_string))
                            .unwrap_or_else(|| r.text());
                        Ok((r.status, subj))
                    }
                    Err(e) => {
                        conn = None;
                        Err(format!("request: {e}"))
                    }
                };
                outcomes
                    .lock()
                    .expect("lock")
                    .push(Outcome { sent, result });
            }
        }));
    }

    // Windows counted in requests, not in time: a slow machine makes them last longer.
    let outcomes_reach = |n: usize, since: Option<Instant>| {
        e2e::util::wait_for(Duration::from_secs(60), || {
            let o = outcomes.lock().expect("lock");
            let count = o
                .iter()
                .filter(|o| since.is_none_or(|t| o.sent > t))
                .count();
            (count >= n).then_some(())
        })
    };
    outcomes_reach(30, None);
    let r = f.admin.put_backend(
        "be1",
        &format!("{}/base", f.backend.url()),
        false,
        false,
        Some("client-2"),
    );
    let put_done = Instant::now();
    assert_eq!(r.status, 200, "{}", r.text());
    outcomes_reach(30, Some(put_done));
    stop.store(true, Ordering::Relaxed);
    for t in threads {
        t.join().expect("load thread panicked");
    }

    let outcomes = outcomes.lock().expect("lock");
    let failures: Vec<_> = outcomes
        .iter()
        .filter(|o| !matches!(&o.result, Ok((200, _))))
        .map(|o| format!("{:?}", o.result))
        .collect();
    assert!(
        failures.is_empty(),
        "{} of {} requests failed, e.g. {:?}",
        failures.len(),
        outcomes.len(),
        &failures[..failures.len().min(5)]
    );
    let before = outcomes.iter().filter(|o| o.sent < put_done).count();
    let after: Vec<_> = outcomes.iter().filter(|o| o.sent > put_done).collect();
    assert!(
        before > 0 && !after.is_empty(),
        "load too thin: {before} before, {} after",
        after.len()
    );
    let wrong: Vec<_> = after
        .iter()
        .filter_map(|o| match &o.result {
            Ok((_, s)) if s != "CN=client-2, O=edgegw-test" => Some(s.clone()),
            _ => None,
        })
        .collect();
    assert!(
        wrong.is_empty(),
        "{} of {} requests sent after the PUT returned presented the old certificate: {:?}",
        wrong.len(),
        after.len(),
        &wrong[..wrong.len().min(3)]
    );
    eprintln!(
        "hot apply: {} requests, {before} sent before the PUT returned, {} after",
        outcomes.len(),
        after.len()
    );
    let old = outcomes
        .iter()
        .filter(|o| matches!(&o.result, Ok((_, s)) if s == "CN=client-1, O=edgegw-test"))
        .count();
    assert!(old > 0, "no request presented client-1 before the rebind");
}
