//! The ledger against a fake clock: `now` is a number of milliseconds the test chooses.

use super::*;

fn config(cpu: f64, gpu: f64) -> Config {
    Config { totals: [cpu, 1000.0, 10.0, 10.0, gpu], preemption: false, quotas: false, window: 32, bypass_limit: 4 }
}

fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

fn req(state: &str, cpu: f64, gpu: f64, priority: Priority) -> Request {
    Request {
        agent: "agent".into(),
        state: state.into(),
        tags: Arc::from(Vec::<Arc<str>>::new()),
        amounts: [cpu, 0.0, 0.0, 0.0, gpu],
        priority,
        preemptible: false,
    }
}

fn granted(d: &Decision) -> AllocId {
    match d {
        Decision::Granted(g) => g.id,
        other => panic!("expected a grant, got {other:?}"),
    }
}

fn queued(d: &Decision) -> WaiterId {
    match d {
        Decision::Queued(w) => *w,
        other => panic!("expected to queue, got {other:?}"),
    }
}

fn states(l: &Ledger, now: Duration) -> Vec<String> {
    l.waiting(now).map(|(r, _)| r.state.to_string()).collect()
}

#[test]
fn grants_all_or_nothing_and_never_above_a_total() {
    let mut l = Ledger::new(config(2.0, 0.0));
    let a = granted(&l.request(req("a", 1.5, 0.0, Priority::Normal), ms(0)).0);
    let (b, _) = l.request(req("b", 1.0, 0.0, Priority::Normal), ms(0));
    let b = queued(&b);
    assert_eq!(l.held()[0], 1.5, "b asked for more than is free and took nothing");
    let out = l.release(a, ms(10));
    assert_eq!(out.granted.len(), 1);
    assert_eq!(out.granted[0].0, b);
    assert_eq!(out.granted[0].1.waited, ms(10));
    assert_eq!(l.held()[0], 1.0);
}

#[test]
fn a_request_above_a_total_fails_at_once_naming_kind_amount_and_total() {
    let mut l = Ledger::new(config(2.0, 1.0));
    let (d, _) = l.request(req("big", 4.0, 0.0, Priority::Normal), ms(0));
    assert_eq!(
        d,
        Decision::Failed(ResourceError::ExceedsTotal {
            state: "big".into(),
            kind: ResourceType::Cpu,
            requested: 4.0,
            total: 2.0
        })
    );
    let (d, _) = l.request(req("gpus", 0.0, 1.5, Priority::Normal), ms(0));
    assert!(matches!(d, Decision::Failed(ResourceError::ExceedsTotal { kind: ResourceType::Gpu, .. })));
    assert_eq!(l.stats()[0].1.failed, 1);
    assert_eq!(l.waiting(ms(0)).count(), 0, "a failed request is never queued");
}

#[test]
fn waiters_are_admitted_by_priority_then_arrival() {
    let mut l = Ledger::new(config(1.0, 0.0));
    let first = granted(&l.request(req("running", 1.0, 0.0, Priority::Normal), ms(0)).0);
    for (name, p) in [
        ("low", Priority::Low),
        ("normal1", Priority::Normal),
        ("critical", Priority::Critical),
        ("high", Priority::High),
        ("normal2", Priority::Normal),
    ] {
        queued(&l.request(req(name, 1.0, 0.0, p), ms(1)).0);
    }
    assert_eq!(states(&l, ms(1)), ["critical", "high", "normal1", "normal2", "low"]);
    let mut order = Vec::new();
    let mut out = l.release(first, ms(2));
    while let Some((_, g)) = out.granted.pop() {
        let state = l.allocations.get(&g.id).unwrap().req.state.to_string();
        order.push(state);
        out = l.release(g.id, ms(3));
    }
    assert_eq!(order, ["critical", "high", "normal1", "normal2", "low"]);
}

#[test]
fn small_requests_backfill_past_a_large_one_until_it_has_been_passed_enough() {
    // 4 CPUs; a large request (4) waits behind running work; small ones (1) keep coming.
    let mut l = Ledger::new(config(4.0, 0.0));
    let running = granted(&l.request(req("r", 2.0, 0.0, Priority::Normal), ms(0)).0);
    let large = queued(&l.request(req("large", 4.0, 0.0, Priority::Normal), ms(0)).0);
    let mut small = Vec::new();
    // Two small ones fit beside the running one: they backfill, each passing `large`.
    for i in 0..2 {
        small.push(granted(&l.request(req(&format!("s{i}"), 1.0, 0.0, Priority::Normal), ms(1)).0));
    }
    assert_eq!(l.queue[&large].bypassed, 2);
    // Releasing and re-asking keeps passing it until the limit (4)...
    for i in 2..4 {
        let s = small.remove(0);
        assert!(l.release(s, ms(2)).granted.is_empty(), "large still does not fit");
        small.push(granted(&l.request(req(&format!("s{i}"), 1.0, 0.0, Priority::Normal), ms(2)).0));
    }
    assert_eq!(l.queue[&large].bypassed, 4);
    // ...after which it reserves: freed CPU is kept for it, not given to newcomers.
    let s = small.remove(0);
    l.release(s, ms(3));
    let d = l.request(req("late", 1.0, 0.0, Priority::Normal), ms(3)).0;
    let late = queued(&d);
    assert!(late > large);
    l.release(small.remove(0), ms(4));
    let out = l.release(running, ms(5));
    assert_eq!(out.granted.len(), 1);
    assert_eq!(out.granted[0].0, large, "the large request goes first once enough is free");
    assert_eq!(states(&l, ms(5)), ["late"]);
}

#[test]
fn a_scan_looks_only_at_the_window() {
    let mut c = config(1.0, 0.0);
    c.window = 2;
    let mut l = Ledger::new(c);
    let running = granted(&l.request(req("r", 0.5, 0.0, Priority::Normal), ms(0)).0);
    queued(&l.request(req("big1", 1.0, 0.0, Priority::Normal), ms(0)).0);
    queued(&l.request(req("big2", 1.0, 0.0, Priority::Normal), ms(0)).0);
    // Would fit, but stands third: outside the window of two.
    queued(&l.request(req("small", 0.5, 0.0, Priority::Normal), ms(0)).0);
    let out = l.release(running, ms(1));
    assert_eq!(out.granted.len(), 1);
    assert_eq!(states(&l, ms(1)), ["big2", "small"]);
}

#[test]
fn gpu_requests_are_placed_on_devices_and_packed() {
    let mut l = Ledger::new(config(8.0, 2.0));
    let (d, _) = l.request(req("a", 0.0, 0.5, Priority::Normal), ms(0));
    let Decision::Granted(a) = d else { panic!("{d:?}") };
    assert_eq!(a.gpus, vec![(0, 0.5)]);
    let Decision::Granted(b) = l.request(req("b", 0.0, 0.5, Priority::Normal), ms(0)).0 else { panic!() };
    assert_eq!(b.gpus, vec![(0, 0.5)], "packs onto device 0");
    let Decision::Granted(c) = l.request(req("c", 0.0, 1.0, Priority::Normal), ms(0)).0 else { panic!() };
    assert_eq!(c.gpus, vec![(1, 1.0)]);
    queued(&l.request(req("d", 0.0, 0.25, Priority::Normal), ms(0)).0);
    let out = l.release(a.id, ms(1));
    assert_eq!(out.granted[0].1.gpus, vec![(0, 0.25)]);
}

#[test]
fn a_fractional_total_adds_a_smaller_last_device() {
    let mut l = Ledger::new(config(8.0, 1.5));
    let Decision::Granted(g) = l.request(req("all", 0.0, 1.5, Priority::Normal), ms(0)).0 else { panic!() };
    assert_eq!(g.gpus, vec![(0, 1.0), (1, 0.5)]);
}

#[test]
fn quotas_cap_a_scope_and_fail_what_can_never_fit() {
    let mut c = config(8.0, 4.0);
    c.quotas = true;
    let mut l = Ledger::new(c);
    l.set_quota(QuotaScope::agent("agent"), ResourceType::Gpu, Some(1.0), ms(0));
    let a = granted(&l.request(req("a", 0.0, 1.0, Priority::Normal), ms(0)).0);
    let b = queued(&l.request(req("b", 0.0, 1.0, Priority::Normal), ms(0)).0);
    // Another agent is not held back by this agent's quota, nor by its waiter.
    let mut other = req("x", 0.0, 1.0, Priority::Normal);
    other.agent = "other".into();
    granted(&l.request(other, ms(0)).0);
    let (d, _) = l.request(req("c", 0.0, 2.0, Priority::Normal), ms(0));
    assert!(
        matches!(&d, Decision::Failed(ResourceError::ExceedsQuota { scope, quota, .. }) if scope == "agent \"agent\"" && *quota == 1.0),
        "{d:?}"
    );
    let out = l.release(a, ms(1));
    assert_eq!(out.granted[0].0, b);
    // Lowering the quota below a waiter's request fails the waiter.
    queued(&l.request(req("d", 0.0, 1.0, Priority::Normal), ms(1)).0);
    let out = l.set_quota(QuotaScope::agent("agent"), ResourceType::Gpu, Some(0.5), ms(2));
    assert_eq!(out.failed.len(), 1);
    assert_eq!(l.waiting(ms(2)).count(), 0);
}

#[test]
fn preemption_stops_lower_priority_preemptible_work_for_an_urgent_waiter() {
    let mut c = config(2.0, 0.0);
    c.preemption = true;
    let mut l = Ledger::new(c);
    let mut low = req("low", 1.0, 0.0, Priority::Low);
    low.preemptible = true;
    let a = granted(&l.request(low.clone(), ms(0)).0);
    let b = granted(&l.request(low, ms(1)).0);
    let mut fixed = req("fixed", 0.0, 0.0, Priority::Low);
    fixed.amounts[1] = 10.0;
    granted(&l.request(fixed, ms(1)).0);
    let (d, out) = l.request(req("urgent", 1.0, 0.0, Priority::High), ms(2));
    let urgent = queued(&d);
    assert_eq!(out.preempt, vec![b], "the newest victim of the lowest priority, and only one");
    // A second decision does not pick more victims while one is being stopped.
    let (d2, out2) = l.request(req("normal", 1.0, 0.0, Priority::Normal), ms(2));
    queued(&d2);
    assert!(out2.preempt.is_empty());
    let out = l.release(b, ms(3));
    assert_eq!(out.granted.len(), 1);
    assert_eq!(out.granted[0].0, urgent, "the freed CPU goes to the urgent waiter");
    assert_eq!(l.preempted().get("low"), Some(&1));
    let _ = a;
}

#[test]
fn without_preemption_or_preemptible_work_nothing_is_stopped() {
    let mut l = Ledger::new(config(1.0, 0.0));
    let mut low = req("low", 1.0, 0.0, Priority::Low);
    low.preemptible = true;
    granted(&l.request(low, ms(0)).0);
    let (_, out) = l.request(req("urgent", 1.0, 0.0, Priority::Critical), ms(1));
    assert!(out.preempt.is_empty(), "preemption is off");

    let mut c = config(1.0, 0.0);
    c.preemption = true;
    let mut l = Ledger::new(c);
    granted(&l.request(req("low", 1.0, 0.0, Priority::Low), ms(0)).0);
    let (_, out) = l.request(req("urgent", 1.0, 0.0, Priority::Critical), ms(1));
    assert!(out.preempt.is_empty(), "the running state is not preemptible");
}

#[test]
fn withdrawing_a_reserving_waiter_lets_others_in() {
    let mut c = config(2.0, 0.0);
    c.bypass_limit = 0;
    let mut l = Ledger::new(c);
    granted(&l.request(req("r", 1.0, 0.0, Priority::Normal), ms(0)).0);
    let big = queued(&l.request(req("big", 2.0, 0.0, Priority::Normal), ms(0)).0);
    queued(&l.request(req("small", 1.0, 0.0, Priority::Normal), ms(0)).0);
    let out = l.withdraw(big, ms(1));
    assert_eq!(out.granted.len(), 1);
}

#[test]
fn stats_track_current_peak_and_waits() {
    let mut l = Ledger::new(config(2.0, 0.0));
    let a = granted(&l.request(req("a", 2.0, 0.0, Priority::Normal), ms(0)).0);
    queued(&l.request(req("b", 1.0, 0.0, Priority::Normal), ms(5)).0);
    let out = l.release(a, ms(25));
    let s = l.stats()[0].1;
    assert_eq!((s.current, s.peak, s.allocations, s.waits), (1.0, 2.0, 2, 1));
    assert_eq!(s.longest_wait, ms(20));
    l.release(out.granted[0].1.id, ms(30));
    assert_eq!(l.stats()[0].1.current, 0.0);
}
