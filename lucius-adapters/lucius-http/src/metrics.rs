//! [`Metrics`]: Prometheus text exposition. Request counters are kept by the router; job,
//! step and outbox transitions and publications arrive through the engine's
//! [`Observer`]; outbox backlog gauges are read from the store at scrape time.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use lucius_runtime::{escape_label, metric_header};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, MutexGuard};

use lucius_core::engine::Observer;
use lucius_core::{Engine, JobStatus, Millis, OutboxQuery, OutboxStatus, StepStatus};

/// Upper bounds (seconds) of the publish latency histogram buckets.
const LATENCY_BUCKETS: [f64; 10] = [0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0];

/// Most outbox entries per status read at one scrape; beyond it the gauges undercount and
/// `lucius_outbox_scrape_truncated` is 1.
pub const SCRAPE_LIMIT: usize = 10_000;

/// Process-wide counters, shared by the router and the engine (as its observer).
///
/// Install it on every engine of the process so the dispatcher and sweepers are counted
/// too: [`crate::Api::with_metrics`] installs it, and [`crate::Api::lucius`] is the handle
/// to run the loops on.
#[derive(Debug)]
pub struct Metrics {
    inner: Mutex<Counters>,
    // Transitions come several per request: lock-free counters, not a lock and a map.
    jobs: Transitions,
    steps: Transitions,
    outbox: Transitions,
}

/// Counts of `from → to` transitions between the statuses `names` (row 0 is `NEW`).
#[derive(Debug)]
struct Transitions {
    names: Vec<&'static str>,
    counts: Vec<AtomicU64>,
}

impl Transitions {
    fn new(names: Vec<&'static str>) -> Transitions {
        let cells = (names.len() + 1) * names.len();
        Transitions {
            names,
            counts: (0..cells).map(|_| AtomicU64::new(0)).collect(),
        }
    }

    /// Counts `from → to` (`from` `None`: a new row). `all` is the list `names` was made
    /// from: a status is found by enum comparison (comparing names was 1% of the intake
    /// path).
    fn count<T: Copy + PartialEq>(&self, all: &[T], from: Option<T>, to: T) {
        let at = |s: T| all.iter().position(|x| *x == s);
        let row = match from {
            None => Some(0),
            Some(f) => at(f).map(|i| i + 1),
        };
        if let (Some(r), Some(c)) = (row, at(to)) {
            self.counts[r * self.names.len() + c].fetch_add(1, Ordering::Relaxed);
        }
    }

    /// Non-zero counts as `(from, to, n)`, sorted by label.
    fn snapshot(&self) -> Vec<(&'static str, &'static str, u64)> {
        let n = self.names.len();
        let mut out: Vec<_> = (0..self.counts.len())
            .filter_map(|i| {
                let v = self.counts[i].load(Ordering::Relaxed);
                let from = if i / n == 0 {
                    NEW
                } else {
                    self.names[i / n - 1]
                };
                (v > 0).then_some((from, self.names[i % n], v))
            })
            .collect();
        out.sort_unstable();
        out
    }
}

/// The wire names of `statuses`.
fn names<T: Copy>(statuses: &[T], name: fn(T) -> &'static str) -> Vec<&'static str> {
    statuses.iter().map(|s| name(*s)).collect()
}

#[derive(Debug, Default)]
struct Counters {
    requests: BTreeMap<(&'static str, u16), u64>,
    published_ok: u64,
    published_failed: u64,
    latency_buckets: [u64; LATENCY_BUCKETS.len()],
    latency_sum_ms: u64,
    latency_count: u64,
}

/// The `from` label of a row that did not exist before.
const NEW: &str = "NEW";

impl Default for Metrics {
    fn default() -> Metrics {
        Metrics {
            inner: Mutex::default(),
            jobs: Transitions::new(names(&JobStatus::ALL, JobStatus::as_str)),
            steps: Transitions::new(names(&StepStatus::ALL, StepStatus::as_str)),
            outbox: Transitions::new(names(&OutboxStatus::ALL, OutboxStatus::as_str)),
        }
    }
}

impl Metrics {
    /// Empty counters.
    pub fn new() -> Metrics {
        Metrics::default()
    }

    /// Counts one answered request.
    pub fn record_request(&self, route: &'static str, status: u16) {
        *self.lock().requests.entry((route, status)).or_default() += 1;
    }

    /// How many requests to `route` were answered with `status`.
    pub fn requests(&self, route: &str, status: u16) -> u64 {
        self.lock()
            .requests
            .iter()
            .filter(|((r, s), _)| *r == route && *s == status)
            .map(|(_, n)| n)
            .sum()
    }

    /// The Prometheus text exposition: the counters, then the outbox backlog read from the
    /// engine's store now.
    pub async fn render(&self, engine: &Engine) -> String {
        let mut out = self.render_counters();
        render_backlog(&mut out, engine).await;
        out
    }

    fn render_counters(&self) -> String {
        let c = self.lock();
        let mut out = String::new();
        metric_header(
            &mut out,
            "lucius_http_requests_total",
            "counter",
            "HTTP requests answered, by route template and status.",
        );
        for ((route, status), n) in &c.requests {
            let _ = writeln!(
                out,
                "lucius_http_requests_total{{route=\"{}\",status=\"{status}\"}} {n}",
                escape_label(route)
            );
        }
        for (name, help, map) in [
            (
                "lucius_job_transitions_total",
                "Job status transitions (from NEW for a created job).",
                &self.jobs,
            ),
            (
                "lucius_step_transitions_total",
                "Step status transitions (from NEW for a created step).",
                &self.steps,
            ),
            (
                "lucius_outbox_transitions_total",
                "Outbox entry status transitions (from NEW for a written entry).",
                &self.outbox,
            ),
        ] {
            metric_header(&mut out, name, "counter", help);
            for (from, to, n) in map.snapshot() {
                let _ = writeln!(out, "{name}{{from=\"{from}\",to=\"{to}\"}} {n}");
            }
        }
        metric_header(
            &mut out,
            "lucius_publish_total",
            "counter",
            "Directive publications, by result (error includes timeouts).",
        );
        let _ = writeln!(
            out,
            "lucius_publish_total{{result=\"ok\"}} {}",
            c.published_ok
        );
        let _ = writeln!(
            out,
            "lucius_publish_total{{result=\"error\"}} {}",
            c.published_failed
        );
        metric_header(
            &mut out,
            "lucius_publish_failures_total",
            "counter",
            "Failed or timed-out directive publications.",
        );
        let _ = writeln!(out, "lucius_publish_failures_total {}", c.published_failed);
        metric_header(
            &mut out,
            "lucius_publish_latency_seconds",
            "histogram",
            "Time one publication took, by the engine's clock.",
        );
        let mut cumulative = 0;
        for (le, n) in LATENCY_BUCKETS.iter().zip(c.latency_buckets) {
            cumulative += n;
            let _ = writeln!(
                out,
                "lucius_publish_latency_seconds_bucket{{le=\"{le}\"}} {cumulative}"
            );
        }
        let _ = writeln!(
            out,
            "lucius_publish_latency_seconds_bucket{{le=\"+Inf\"}} {}",
            c.latency_count
        );
        let _ = writeln!(
            out,
            "lucius_publish_latency_seconds_sum {}",
            c.latency_sum_ms as f64 / 1000.0
        );
        let _ = writeln!(
            out,
            "lucius_publish_latency_seconds_count {}",
            c.latency_count
        );
        out
    }

    fn lock(&self) -> MutexGuard<'_, Counters> {
        // Counters stay consistent if a holder panicked: every update is a single add.
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }
}

impl Observer for Metrics {
    fn job_transition(&self, from: Option<JobStatus>, to: JobStatus) {
        self.jobs.count(&JobStatus::ALL, from, to);
    }

    fn step_transition(&self, from: Option<StepStatus>, to: StepStatus) {
        self.steps.count(&StepStatus::ALL, from, to);
    }

    fn outbox_transition(&self, from: Option<OutboxStatus>, to: OutboxStatus) {
        self.outbox.count(&OutboxStatus::ALL, from, to);
    }

    fn published(&self, ok: bool, latency: Millis) {
        let mut c = self.lock();
        if ok {
            c.published_ok += 1;
        } else {
            c.published_failed += 1;
        }
        let secs = latency.0 as f64 / 1000.0;
        if let Some(i) = LATENCY_BUCKETS.iter().position(|le| secs <= *le) {
            c.latency_buckets[i] += 1;
        }
        c.latency_sum_ms = c.latency_sum_ms.saturating_add(latency.0);
        c.latency_count += 1;
    }
}

/// Pending and dead entries per partition, and the age of the oldest pending one.
async fn render_backlog(out: &mut String, engine: &Engine) {
    let now = engine.now();
    let mut counts: BTreeMap<(String, &'static str), usize> = BTreeMap::new();
    let mut oldest: BTreeMap<String, Millis> = BTreeMap::new();
    let mut up = true;
    let mut truncated = false;
    for status in [OutboxStatus::Pending, OutboxStatus::Dead] {
        let q = OutboxQuery {
            status: Some(status),
            limit: SCRAPE_LIMIT,
            ..OutboxQuery::default()
        };
        match engine.list_outbox(&q).await {
            Ok(entries) => {
                truncated |= entries.len() >= SCRAPE_LIMIT;
                for e in entries {
                    let p = e.partition.to_string();
                    if status == OutboxStatus::Pending {
                        let age = now.since(e.created_at);
                        let o = oldest.entry(p.clone()).or_default();
                        *o = (*o).max(age);
                    }
                    *counts.entry((p, status.as_str())).or_default() += 1;
                }
            }
            Err(e) => {
                tracing::warn!(error = %e, "metrics: cannot read the outbox");
                up = false;
            }
        }
    }
    metric_header(
        out,
        "lucius_outbox_entries",
        "gauge",
        "Outbox entries by status (PENDING, DEAD) and partition, read from the store.",
    );
    for ((p, status), n) in &counts {
        let _ = writeln!(
            out,
            "lucius_outbox_entries{{status=\"{status}\",partition=\"{}\"}} {n}",
            escape_label(p)
        );
    }
    metric_header(
        out,
        "lucius_outbox_oldest_pending_age_seconds",
        "gauge",
        "Age of the oldest PENDING outbox entry per partition.",
    );
    for (p, age) in &oldest {
        let _ = writeln!(
            out,
            "lucius_outbox_oldest_pending_age_seconds{{partition=\"{}\"}} {}",
            escape_label(p),
            age.0 as f64 / 1000.0
        );
    }
    metric_header(
        out,
        "lucius_outbox_scrape_truncated",
        "gauge",
        "1 if a status had more entries than one scrape reads (the gauges undercount).",
    );
    let _ = writeln!(
        out,
        "lucius_outbox_scrape_truncated {}",
        u8::from(truncated)
    );
    metric_header(
        out,
        "lucius_store_up",
        "gauge",
        "1 if the store answered the scrape's queries.",
    );
    let _ = writeln!(out, "lucius_store_up {}", u8::from(up));
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counters_render_as_prometheus_text() {
        let m = Metrics::new();
        m.record_request("/v1/commands", 202);
        m.record_request("/v1/commands", 202);
        m.job_transition(None, JobStatus::Accepted);
        m.outbox_transition(Some(OutboxStatus::Pending), OutboxStatus::Sent);
        m.published(true, Millis(7));
        m.published(false, Millis(9_000));
        let t = m.render_counters();
        assert!(t.contains("lucius_http_requests_total{route=\"/v1/commands\",status=\"202\"} 2"));
        assert!(t.contains("lucius_job_transitions_total{from=\"NEW\",to=\"ACCEPTED\"} 1"));
        assert!(t.contains("lucius_outbox_transitions_total{from=\"PENDING\",to=\"SENT\"} 1"));
        assert!(t.contains("lucius_publish_failures_total 1"));
        assert!(t.contains("lucius_publish_latency_seconds_bucket{le=\"0.01\"} 1"));
        assert!(t.contains("lucius_publish_latency_seconds_bucket{le=\"+Inf\"} 2"));
        assert!(t.contains("lucius_publish_latency_seconds_sum 9.007"));
        assert_eq!(m.requests("/v1/commands", 202), 2);
    }

    /// Every `from → to` pair of every machine lands in its own cell, named by its labels.
    #[test]
    fn every_transition_is_counted_under_its_own_labels() {
        fn check<S: Copy>(
            all: &[S],
            name: fn(S) -> &'static str,
            metric: &str,
            count: impl Fn(&Metrics, Option<S>, S),
        ) {
            let m = Metrics::new();
            let froms: Vec<Option<S>> = std::iter::once(None)
                .chain(all.iter().copied().map(Some))
                .collect();
            for (i, from) in froms.iter().enumerate() {
                for (j, to) in all.iter().enumerate() {
                    // A distinct count per pair, so a pair counted in another's cell shows.
                    for _ in 0..(i * all.len() + j + 1) {
                        count(&m, *from, *to);
                    }
                }
            }
            let text = m.render_counters();
            for (i, from) in froms.iter().enumerate() {
                for (j, to) in all.iter().enumerate() {
                    let line = format!(
                        "{metric}{{from=\"{}\",to=\"{}\"}} {}",
                        from.map_or("NEW", name),
                        name(*to),
                        i * all.len() + j + 1
                    );
                    assert!(text.contains(&line), "missing {line}");
                }
            }
        }
        check(
            &JobStatus::ALL,
            JobStatus::as_str,
            "lucius_job_transitions_total",
            |m, f, t| m.job_transition(f, t),
        );
        check(
            &StepStatus::ALL,
            StepStatus::as_str,
            "lucius_step_transitions_total",
            |m, f, t| m.step_transition(f, t),
        );
        check(
            &OutboxStatus::ALL,
            OutboxStatus::as_str,
            "lucius_outbox_transitions_total",
            |m, f, t| m.outbox_transition(f, t),
        );
    }

    #[test]
    fn labels_are_escaped() {
        assert_eq!(escape_label("a\"b\\c\nd"), "a\\\"b\\\\c\\nd");
    }
}
