//! Counters for `GET /metrics`, written in the Prometheus text exposition
//! format (version 0.0.4) by hand: a few families do not need a metrics
//! crate.
//!
//! What is counted here: HTTP requests (by [`track_http`]) and generations
//! (by [`Metrics::record_generation`], which every path that generates
//! calls). What is a snapshot of the runtime (queues, loaded models,
//! downloads) is read when the page is rendered; see
//! `crate::api::runtime::metrics`.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::{Arc, Mutex, MutexGuard};

use axum::extract::{MatchedPath, Request, State};
use axum::middleware::Next;
use axum::response::Response;

/// Upper bounds of the latency histograms, in seconds.
const LATENCY_BUCKETS: &[f64] = &[
    0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0,
];

/// A cumulative histogram with fixed buckets.
#[derive(Debug, Clone)]
struct Histogram {
    /// Observations at or below each bound of [`LATENCY_BUCKETS`].
    counts: Vec<u64>,
    count: u64,
    sum: f64,
}

impl Default for Histogram {
    fn default() -> Self {
        Histogram {
            counts: vec![0; LATENCY_BUCKETS.len()],
            count: 0,
            sum: 0.0,
        }
    }
}

impl Histogram {
    fn observe(&mut self, value: f64) {
        let value = if value.is_finite() {
            value.max(0.0)
        } else {
            0.0
        };
        for (bound, n) in LATENCY_BUCKETS.iter().zip(&mut self.counts) {
            if value <= *bound {
                *n += 1;
            }
        }
        self.count += 1;
        self.sum += value;
    }
}

/// What is counted per model.
#[derive(Debug, Clone, Default)]
struct ModelCounters {
    generations: u64,
    prompt_tokens: u64,
    /// Prompt tokens a backend took from its cache (part of `prompt_tokens`).
    cached_prompt_tokens: u64,
    completion_tokens: u64,
    /// Texts embedded.
    embedded_inputs: u64,
    ttft: Histogram,
    duration: Histogram,
    /// Completion tokens per second of the last generation.
    last_tokens_per_second: f64,
}

/// Reads one counter of a model.
type CounterOf = fn(&ModelCounters) -> u64;
/// Reads one histogram of a model.
type HistogramOf = fn(&ModelCounters) -> &Histogram;

/// One finished generation.
#[derive(Debug, Clone, Copy, Default)]
pub struct Generation {
    pub prompt_tokens: u32,
    /// Prompt tokens taken from the cache (part of `prompt_tokens`).
    pub cached_tokens: u32,
    pub completion_tokens: u32,
    /// Seconds from the start to the first token.
    pub ttft_secs: f64,
    /// Seconds from the start to the end.
    pub total_secs: f64,
}

impl From<&corral_sdk::backend::GenerateSummary> for Generation {
    fn from(s: &corral_sdk::backend::GenerateSummary) -> Self {
        Generation {
            prompt_tokens: s.prompt_tokens,
            cached_tokens: s.cached_tokens,
            completion_tokens: s.completion_tokens,
            ttft_secs: s.time_to_first_token,
            total_secs: s.total_time,
        }
    }
}

/// Reads a gauge when the page is rendered.
type GaugeReader = Arc<dyn Fn() -> f64 + Send + Sync>;

/// A gauge read from elsewhere in the host.
#[derive(Clone)]
struct Gauge {
    name: &'static str,
    help: &'static str,
    labels: Vec<(&'static str, &'static str)>,
    read: GaugeReader,
}

#[derive(Default)]
struct Inner {
    /// `(method, route, status class)` → requests. Every part comes from a
    /// fixed set (see [`method_label`] and [`track_http`]), so no request
    /// can add a series of its own.
    http: BTreeMap<(&'static str, String, String), u64>,
    /// Model name → counters.
    models: BTreeMap<String, ModelCounters>,
    gauges: Vec<Gauge>,
}

/// The host's counters. Cheap to clone; clones share them.
#[derive(Clone, Default)]
pub struct Metrics {
    inner: Arc<Mutex<Inner>>,
}

/// The label of an HTTP method: the standard methods by name, anything
/// else `other` (a client may send any token as a method).
pub fn method_label(method: &str) -> &'static str {
    const STANDARD: [&str; 9] = [
        "GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS", "CONNECT", "TRACE",
    ];
    STANDARD
        .into_iter()
        .find(|m| *m == method)
        .unwrap_or("other")
}

impl Metrics {
    fn lock(&self) -> MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Counts one answered HTTP request. `route` must be a route pattern
    /// or `unmatched`, never a raw path.
    pub fn record_http(&self, method: &str, route: &str, status: u16) {
        let class = format!("{}xx", (status / 100).clamp(1, 5));
        *self
            .lock()
            .http
            .entry((method_label(method), route.to_owned(), class))
            .or_default() += 1;
    }

    /// Adds a gauge whose value `read` gives each time the page is
    /// rendered (one sample per call; several calls may share a name with
    /// different labels, and then share its first `help`).
    pub fn watch(
        &self,
        name: &'static str,
        help: &'static str,
        labels: &[(&'static str, &'static str)],
        read: impl Fn() -> f64 + Send + Sync + 'static,
    ) {
        self.lock().gauges.push(Gauge {
            name,
            help,
            labels: labels.to_vec(),
            read: Arc::new(read),
        });
    }

    /// Counts one finished generation of `model` (its name); every path
    /// that generates calls it once per `Done`, e.g.
    /// `state.metrics.record_generation(&record.name, (&summary).into())`.
    pub fn record_generation(&self, model: &str, g: Generation) {
        let mut inner = self.lock();
        let m = inner.models.entry(model.to_owned()).or_default();
        m.generations += 1;
        m.prompt_tokens += u64::from(g.prompt_tokens);
        m.cached_prompt_tokens += u64::from(g.cached_tokens.min(g.prompt_tokens));
        m.completion_tokens += u64::from(g.completion_tokens);
        m.ttft.observe(g.ttft_secs);
        m.duration.observe(g.total_secs);
        // Decode speed: tokens after the first over the time after it.
        let decode_secs = g.total_secs - g.ttft_secs;
        m.last_tokens_per_second = if g.completion_tokens > 1 && decode_secs > 0.0 {
            f64::from(g.completion_tokens - 1) / decode_secs
        } else if g.total_secs > 0.0 {
            f64::from(g.completion_tokens) / g.total_secs
        } else {
            0.0
        };
    }

    /// Counts one embeddings request of `model`: its inputs, and their
    /// tokens as prompt tokens.
    pub fn record_embedding(&self, model: &str, inputs: usize, tokens: u32) {
        let mut inner = self.lock();
        let m = inner.models.entry(model.to_owned()).or_default();
        m.embedded_inputs += inputs as u64;
        m.prompt_tokens += u64::from(tokens);
    }

    /// Writes the counted families into `page`.
    pub fn render_counters(&self, page: &mut Page) {
        let inner = self.lock();
        page.family(
            "corral_http_requests_total",
            "counter",
            "HTTP requests answered, by method, matched route and status class.",
        );
        for ((method, route, class), n) in &inner.http {
            page.sample(
                "corral_http_requests_total",
                &[("method", method), ("route", route), ("status", class)],
                *n as f64,
            );
        }
        let mut named: Vec<&str> = Vec::new();
        for gauge in &inner.gauges {
            if !named.contains(&gauge.name) {
                named.push(gauge.name);
                page.family(gauge.name, "gauge", gauge.help);
                for same in inner.gauges.iter().filter(|g| g.name == gauge.name) {
                    page.sample(same.name, &same.labels, (same.read)());
                }
            }
        }
        // Generation series only for models that generated, embedding
        // series only for models that embedded: a text model shows no
        // embeddings at 0 and an embedding model no latencies.
        let generated = |m: &&ModelCounters| m.generations > 0;
        let counters: [(&str, &str, CounterOf); 5] = [
            (
                "corral_generations_total",
                "Finished generations per model.",
                |m| m.generations,
            ),
            (
                "corral_prompt_tokens_total",
                "Prompt tokens read per model (generations and embeddings).",
                |m| m.prompt_tokens,
            ),
            (
                "corral_prompt_tokens_cached_total",
                "Prompt tokens per model taken from the cache of an earlier request \
                 instead of being read again (part of corral_prompt_tokens_total).",
                |m| m.cached_prompt_tokens,
            ),
            (
                "corral_generated_tokens_total",
                "Tokens generated per model.",
                |m| m.completion_tokens,
            ),
            (
                "corral_embedded_inputs_total",
                "Texts embedded per model.",
                |m| m.embedded_inputs,
            ),
        ];
        for (name, help, get) in counters {
            page.family(name, "counter", help);
            for (model, m) in &inner.models {
                let value = get(m);
                // The prompt token counters show at 0 too (the cached one
                // for models that generate), so that a rate over them
                // starts at zero instead of at the first cached prompt.
                let always = name == "corral_prompt_tokens_total"
                    || (name == "corral_prompt_tokens_cached_total" && m.generations > 0);
                if value > 0 || always {
                    page.sample(name, &[("model", model)], value as f64);
                }
            }
        }
        let histograms: [(&str, &str, HistogramOf); 2] = [
            (
                "corral_time_to_first_token_seconds",
                "Seconds from the start of a generation to its first token.",
                |m| &m.ttft,
            ),
            (
                "corral_generation_duration_seconds",
                "Seconds a generation took, start to end.",
                |m| &m.duration,
            ),
        ];
        for (name, help, get) in histograms {
            page.family(name, "histogram", help);
            for (model, m) in inner.models.iter().filter(|(_, m)| generated(m)) {
                page.histogram(name, &[("model", model)], get(m));
            }
        }
        page.family(
            "corral_last_tokens_per_second",
            "gauge",
            "Generation speed of the last generation per model, in tokens per second.",
        );
        for (model, m) in inner.models.iter().filter(|(_, m)| generated(m)) {
            page.sample(
                "corral_last_tokens_per_second",
                &[("model", model)],
                m.last_tokens_per_second,
            );
        }
    }
}

/// Middleware counting every answered request by method, matched route
/// (the route's pattern, never the raw path, so ids do not multiply the
/// series) and status class.
pub async fn track_http(State(metrics): State<Metrics>, request: Request, next: Next) -> Response {
    let method = request.method().as_str().to_owned();
    let route = request
        .extensions()
        .get::<MatchedPath>()
        .map_or_else(|| "unmatched".to_owned(), |p| p.as_str().to_owned());
    let response = next.run(request).await;
    metrics.record_http(&method, &route, response.status().as_u16());
    response
}

/// A page in the Prometheus text format.
#[derive(Debug, Default)]
pub struct Page {
    text: String,
}

impl Page {
    pub fn new() -> Self {
        Self::default()
    }

    /// Starts a family: its `HELP` and `TYPE` lines. Each family is written
    /// once, with all its samples after it.
    pub fn family(&mut self, name: &str, kind: &str, help: &str) {
        let help = help.replace('\\', r"\\").replace('\n', r"\n");
        let _ = writeln!(self.text, "# HELP {name} {help}");
        let _ = writeln!(self.text, "# TYPE {name} {kind}");
    }

    /// One sample line.
    pub fn sample(&mut self, name: &str, labels: &[(&str, &str)], value: f64) {
        self.text.push_str(name);
        write_labels(&mut self.text, labels);
        let _ = writeln!(self.text, " {}", format_value(value));
    }

    fn histogram(&mut self, name: &str, labels: &[(&str, &str)], h: &Histogram) {
        let bucket = format!("{name}_bucket");
        for (bound, n) in LATENCY_BUCKETS.iter().zip(&h.counts) {
            let le = format_value(*bound);
            let mut with_le = labels.to_vec();
            with_le.push(("le", &le));
            self.sample(&bucket, &with_le, *n as f64);
        }
        let mut with_le = labels.to_vec();
        with_le.push(("le", "+Inf"));
        self.sample(&bucket, &with_le, h.count as f64);
        self.sample(&format!("{name}_sum"), labels, h.sum);
        self.sample(&format!("{name}_count"), labels, h.count as f64);
    }

    pub fn finish(self) -> String {
        self.text
    }
}

/// `{a="x",b="y"}`, nothing when there are no labels.
fn write_labels(out: &mut String, labels: &[(&str, &str)]) {
    if labels.is_empty() {
        return;
    }
    out.push('{');
    for (i, (key, value)) in labels.iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        out.push_str(key);
        out.push_str("=\"");
        out.push_str(&escape_label(value));
        out.push('"');
    }
    out.push('}');
}

/// A label value with `\`, `"` and line feeds escaped, as the format asks.
pub fn escape_label(value: &str) -> String {
    let mut out = String::with_capacity(value.len());
    for c in value.chars() {
        match c {
            '\\' => out.push_str(r"\\"),
            '"' => out.push_str("\\\""),
            '\n' => out.push_str(r"\n"),
            c => out.push(c),
        }
    }
    out
}

/// A sample value: integers without a fraction, `NaN` and infinities by
/// their names.
fn format_value(value: f64) -> String {
    if value.is_nan() {
        "NaN".into()
    } else if value.is_infinite() {
        if value > 0.0 { "+Inf" } else { "-Inf" }.into()
    } else if value.fract() == 0.0 && value.abs() < 1e15 {
        format!("{}", value as i64)
    } else {
        format!("{value}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn label_values_are_escaped() {
        assert_eq!(escape_label(r#"a"b\c"#), r#"a\"b\\c"#);
        assert_eq!(escape_label("line\nbreak"), r"line\nbreak");
        let mut page = Page::new();
        page.sample("m", &[("model", "x\"y")], 1.5);
        assert_eq!(page.finish(), "m{model=\"x\\\"y\"} 1.5\n");
    }

    #[test]
    fn generations_fill_counters_and_histograms() {
        let metrics = Metrics::default();
        metrics.record_generation(
            "gemma",
            Generation {
                prompt_tokens: 5,
                cached_tokens: 3,
                completion_tokens: 11,
                ttft_secs: 0.2,
                total_secs: 1.2,
            },
        );
        metrics.record_generation(
            "gemma",
            Generation {
                prompt_tokens: 9,
                cached_tokens: 4,
                completion_tokens: 1,
                ttft_secs: 0.1,
                total_secs: 0.1,
            },
        );
        // A model that never read from its cache still shows the counter.
        metrics.record_generation(
            "qwen",
            Generation {
                prompt_tokens: 7,
                cached_tokens: 0,
                completion_tokens: 2,
                ttft_secs: 0.1,
                total_secs: 0.3,
            },
        );
        metrics.record_embedding("minilm", 3, 12);
        metrics.record_http("GET", "/api/models/{id}", 404);
        metrics.watch("corral_things", "Things.", &[("kind", "a")], || 3.0);
        metrics.watch("corral_things", "Things.", &[("kind", "b")], || 4.0);
        let mut page = Page::new();
        metrics.render_counters(&mut page);
        let text = page.finish();
        for line in [
            "corral_prompt_tokens_total{model=\"gemma\"} 14",
            "corral_prompt_tokens_cached_total{model=\"gemma\"} 7",
            "corral_prompt_tokens_cached_total{model=\"qwen\"} 0",
            "# TYPE corral_prompt_tokens_cached_total counter",
            "corral_generated_tokens_total{model=\"gemma\"} 12",
            "corral_time_to_first_token_seconds_bucket{model=\"gemma\",le=\"0.25\"} 2",
            "corral_time_to_first_token_seconds_bucket{model=\"gemma\",le=\"0.1\"} 1",
            "corral_time_to_first_token_seconds_count{model=\"gemma\"} 2",
            "corral_generation_duration_seconds_bucket{model=\"gemma\",le=\"+Inf\"} 2",
            "corral_last_tokens_per_second{model=\"gemma\"} 10",
            "corral_http_requests_total{method=\"GET\",route=\"/api/models/{id}\",status=\"4xx\"} 1",
            "corral_embedded_inputs_total{model=\"minilm\"} 3",
            "corral_prompt_tokens_total{model=\"minilm\"} 12",
            "corral_things{kind=\"a\"} 3",
            "corral_things{kind=\"b\"} 4",
        ] {
            assert!(text.lines().any(|l| l == line), "no `{line}` in:\n{text}");
        }
        // An embedding model has no generation series, a text model no
        // embedding series.
        for absent in [
            "corral_time_to_first_token_seconds_count{model=\"minilm\"}",
            "corral_generations_total{model=\"minilm\"}",
            "corral_embedded_inputs_total{model=\"gemma\"}",
            "corral_prompt_tokens_cached_total{model=\"minilm\"}",
        ] {
            assert!(!text.contains(absent), "`{absent}` in:\n{text}");
        }
        // Each family is declared once.
        let types = text.lines().filter(|l| l.starts_with("# TYPE")).count();
        let unique: std::collections::BTreeSet<_> =
            text.lines().filter(|l| l.starts_with("# TYPE")).collect();
        assert_eq!(types, unique.len());
    }

    #[test]
    fn made_up_methods_share_one_series() {
        let metrics = Metrics::default();
        for i in 0..1000 {
            metrics.record_http(&format!("M{i}"), "unmatched", 405);
        }
        metrics.record_http("GET", "unmatched", 404);
        metrics.record_http("get", "unmatched", 404);
        let mut page = Page::new();
        metrics.render_counters(&mut page);
        let text = page.finish();
        let series: Vec<&str> = text
            .lines()
            .filter(|l| l.starts_with("corral_http_requests_total{"))
            .collect();
        assert_eq!(
            series,
            [
                "corral_http_requests_total{method=\"GET\",route=\"unmatched\",status=\"4xx\"} 1",
                "corral_http_requests_total{method=\"other\",route=\"unmatched\",status=\"4xx\"} 1001",
            ]
        );
    }
}
