//! `statesync plot`: pictures of a churn run's latency, and the drawing behind `churn --plot`
//! and `drill --plot`.
//!
//! Latency is drawn the HdrHistogram way: the x axis is `log10(1 / (1 - q))`, so that 50 %,
//! 90 %, 99 %, 99.9 % and 99.99 % are evenly spaced and the tail gets as much room as the
//! median; the latency axis is logarithmic too, as tails sit decades above the median.
//! Everything is SVG (no font files needed: the viewer draws the text).

use crate::runtime::latency::STAGES;
use hdrhistogram::Histogram;
use plotters::coord::Shift;
use plotters::coord::ranged1d::{KeyPointHint, NoDefaultFormatting, ValueFormatter};
use plotters::element::DashedPathElement;
use plotters::prelude::*;
use serde_json::{Value, json};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

#[derive(clap::Args, Debug, Clone)]
pub struct PlotArgs {
    /// A churn `--hdr-log` directory (its `<stage>.hlog` files) or a churn `--json` report.
    #[arg(required_unless_present = "compare", conflicts_with = "compare")]
    pub input: Option<PathBuf>,
    /// Two runs on one chart (each a `--hdr-log` directory or a `--json` report); the first is
    /// drawn solid, the second dashed.
    #[arg(long, num_args = 2, value_names = ["A", "B"])]
    pub compare: Vec<PathBuf>,
    /// The SVG to write.
    #[arg(long, short = 'o', value_name = "FILE.svg")]
    pub out: PathBuf,
}

pub fn run(args: PlotArgs) -> ExitCode {
    let inputs: Vec<&PathBuf> = args.input.iter().chain(&args.compare).collect();
    let runs: Result<Vec<LatencyRun>, String> =
        inputs.iter().map(|p| LatencyRun::load(p)).collect();
    let result = runs.and_then(|mut runs| {
        if runs.len() == 2 && runs[0].label == runs[1].label {
            // Same file or directory names: tell them apart by their whole paths.
            for (r, p) in runs.iter_mut().zip(&inputs) {
                r.label = p.display().to_string();
            }
        }
        draw_latency(&runs, &args.out).map_err(|e| format!("{}: {e}", args.out.display()))
    });
    match result {
        Ok(()) => {
            println!("plot: wrote {}", args.out.display());
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("statesync plot: {e}");
            ExitCode::from(2)
        }
    }
}

/// One second of one stage: when it started (seconds from the start of the process that
/// recorded it), how many changes reached the stage in it, and their p99.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Second {
    pub start_s: f64,
    pub duration_s: f64,
    pub count: u64,
    pub p99_us: u64,
}

/// What the latency plot needs of one run, per stage (in [`STAGES`] order).
#[derive(Debug, Clone, PartialEq)]
pub struct LatencyRun {
    pub label: String,
    /// The percentile curve: `(quantile, latency in µs)`, quantile ascending.
    pub curves: [Vec<(f64, f64)>; 3],
    pub samples: [u64; 3],
    /// Per-second counts and p99; empty when the input had no intervals (an old JSON report).
    pub seconds: [Vec<Second>; 3],
}

/// Quantiles every curve holds exactly (the legend quotes two of them).
const LEGEND_QUANTILES: [f64; 2] = [0.5, 0.99];

/// Steps of `log10(1 / (1 - q))` between curve points: 20 points per decade of the tail.
const CURVE_STEP: f64 = 0.05;

/// The percentile curve of `h`, as far into the tail as its samples reach: the last point is
/// the maximum, at the quantile of the single largest sample.
fn curve(h: &Histogram<u64>) -> Vec<(f64, f64)> {
    if h.is_empty() {
        return Vec::new();
    }
    let n = h.len() as f64;
    let top = n.log10();
    let mut qs = Vec::new();
    let mut x = 0.0;
    while x < top {
        qs.push(1.0 - 10f64.powf(-x));
        x += CURVE_STEP;
    }
    // The legend's percentiles exactly, not the nearest step.
    qs.extend(LEGEND_QUANTILES.iter().filter(|&&q| q < 1.0 - 1.0 / n));
    qs.sort_by(f64::total_cmp);
    qs.dedup();
    // The maximum closes the curve at the largest sample's quantile.
    qs.retain(|&q| q < 1.0 - 1.0 / n);
    let mut out: Vec<(f64, f64)> = qs
        .into_iter()
        .map(|q| (q, h.value_at_quantile(q) as f64))
        .collect();
    out.push((1.0 - 1.0 / n, h.max() as f64));
    out
}

impl LatencyRun {
    /// From per-interval histograms (`(start, duration, [stage histograms])`), as churn keeps
    /// them in memory and as its `--hdr-log` files hold them.
    pub fn from_intervals(
        label: &str,
        intervals: &[(Duration, Duration, [Histogram<u64>; 3])],
    ) -> Result<LatencyRun, String> {
        let mut total: [Histogram<u64>; 3] = std::array::from_fn(|_| {
            Histogram::new_with_bounds(1, 60_000_000, 3).expect("static histogram bounds")
        });
        let mut seconds: [Vec<Second>; 3] = Default::default();
        for (start, duration, hs) in intervals {
            for s in 0..3 {
                total[s].add(&hs[s]).map_err(|e| e.to_string())?;
                seconds[s].push(Second {
                    start_s: start.as_secs_f64(),
                    duration_s: duration.as_secs_f64(),
                    count: hs[s].len(),
                    p99_us: hs[s].value_at_quantile(0.99),
                });
            }
        }
        Ok(LatencyRun {
            label: label.to_owned(),
            curves: std::array::from_fn(|s| curve(&total[s])),
            samples: std::array::from_fn(|s| total[s].len()),
            seconds,
        })
    }

    /// Reads a churn `--hdr-log` directory or `--json` report.
    pub fn load(path: &Path) -> Result<LatencyRun, String> {
        let label = path.file_stem().map_or_else(
            || path.display().to_string(),
            |s| s.to_string_lossy().into(),
        );
        if path.is_dir() {
            let mut per_stage = Vec::new();
            for name in STAGES {
                let file = path.join(format!("{name}.hlog"));
                per_stage.push(read_hlog(&file).map_err(|e| format!("{}: {e}", file.display()))?);
            }
            let n = per_stage.iter().map(Vec::len).max().unwrap_or(0);
            if per_stage.iter().any(|s| s.len() != n) {
                return Err(format!(
                    "{}: the stage logs hold different numbers of intervals",
                    path.display()
                ));
            }
            let intervals: Vec<_> = (0..n)
                .map(|i| {
                    let (start, dur, _) = per_stage[0][i];
                    (
                        start,
                        dur,
                        std::array::from_fn(|s| per_stage[s][i].2.clone()),
                    )
                })
                .collect();
            return LatencyRun::from_intervals(&label, &intervals);
        }
        let text = std::fs::read_to_string(path).map_err(|e| format!("{}: {e}", path.display()))?;
        let v: Value = serde_json::from_str(&text)
            .map_err(|e| format!("{}: not a churn JSON report: {e}", path.display()))?;
        LatencyRun::from_report(&label, &v).map_err(|e| format!("{}: {e}", path.display()))
    }

    /// From a churn JSON report: its `latency_series` (written since `churn --plot` exists),
    /// else the p50/p99/p999/max of `latency_us` (no per-second panels then).
    pub fn from_report(label: &str, v: &Value) -> Result<LatencyRun, String> {
        if let Some(series) = v.get("latency_series") {
            let mut run: LatencyRun = Self::from_json(series)?;
            run.label = label.to_owned();
            return Ok(run);
        }
        let lat = v
            .get("latency_us")
            .ok_or("neither latency_series nor latency_us: not a churn JSON report")?;
        let mut curves: [Vec<(f64, f64)>; 3] = Default::default();
        let mut samples = [0; 3];
        for (s, name) in STAGES.iter().enumerate() {
            let st = lat
                .get(name)
                .ok_or_else(|| format!("latency_us has no {name}"))?;
            let f = |k: &str| st.get(k).and_then(Value::as_f64);
            samples[s] = st.get("count").and_then(Value::as_u64).unwrap_or(0);
            if samples[s] == 0 {
                continue;
            }
            let n = samples[s] as f64;
            for (q, k) in [(0.5, "p50"), (0.99, "p99"), (0.999, "p999")] {
                if let Some(us) = f(k).filter(|_| q <= 1.0 - 1.0 / n) {
                    curves[s].push((q, us));
                }
            }
            if let Some(max) = f("max") {
                curves[s].push((1.0 - 1.0 / n, max));
            }
        }
        Ok(LatencyRun {
            label: label.to_owned(),
            curves,
            samples,
            seconds: Default::default(),
        })
    }

    /// The series as churn's JSON report carries them (`latency_series`).
    pub fn to_json(&self) -> Value {
        let mut m = serde_json::Map::new();
        for (s, name) in STAGES.iter().enumerate() {
            m.insert(
                (*name).to_owned(),
                json!({
                    "samples": self.samples[s],
                    "curve": self.curves[s].iter().map(|&(q, us)| json!([q, us])).collect::<Vec<_>>(),
                    "seconds": self.seconds[s].iter().map(|x| json!([x.start_s, x.duration_s, x.count, x.p99_us])).collect::<Vec<_>>(),
                }),
            );
        }
        Value::Object(m)
    }

    fn from_json(v: &Value) -> Result<LatencyRun, String> {
        let mut run = LatencyRun {
            label: String::new(),
            curves: Default::default(),
            samples: [0; 3],
            seconds: Default::default(),
        };
        let bad = |what: &str| format!("latency_series: malformed {what}");
        for (s, name) in STAGES.iter().enumerate() {
            let st = v.get(name).ok_or_else(|| bad(name))?;
            run.samples[s] = st.get("samples").and_then(Value::as_u64).unwrap_or(0);
            for p in st
                .get("curve")
                .and_then(Value::as_array)
                .ok_or_else(|| bad("curve"))?
            {
                let q = p
                    .get(0)
                    .and_then(Value::as_f64)
                    .ok_or_else(|| bad("curve"))?;
                let us = p
                    .get(1)
                    .and_then(Value::as_f64)
                    .ok_or_else(|| bad("curve"))?;
                run.curves[s].push((q, us));
            }
            for p in st
                .get("seconds")
                .and_then(Value::as_array)
                .ok_or_else(|| bad("seconds"))?
            {
                let f = |i: usize| {
                    p.get(i)
                        .and_then(Value::as_f64)
                        .ok_or_else(|| bad("seconds"))
                };
                run.seconds[s].push(Second {
                    start_s: f(0)?,
                    duration_s: f(1)?,
                    count: f(2)? as u64,
                    p99_us: f(3)? as u64,
                });
            }
        }
        Ok(run)
    }
}

/// The intervals of one hdrhistogram interval log: `(start, duration, histogram)`.
fn read_hlog(path: &Path) -> Result<Vec<(Duration, Duration, Histogram<u64>)>, String> {
    use base64::Engine as _;
    use hdrhistogram::serialization::Deserializer;
    use hdrhistogram::serialization::interval_log::{IntervalLogIterator, LogEntry};
    let bytes = std::fs::read(path).map_err(|e| e.to_string())?;
    let mut de = Deserializer::new();
    let mut out = Vec::new();
    for entry in IntervalLogIterator::new(&bytes) {
        let entry = entry.map_err(|e| format!("not an interval log: {e:?}"))?;
        let LogEntry::Interval(iv) = entry else {
            continue;
        };
        let raw = base64::engine::general_purpose::STANDARD
            .decode(iv.encoded_histogram())
            .map_err(|e| format!("interval at {:?}: {e}", iv.start_timestamp()))?;
        let h: Histogram<u64> = de
            .deserialize(&mut raw.as_slice())
            .map_err(|e| format!("interval at {:?}: {e:?}", iv.start_timestamp()))?;
        out.push((iv.start_timestamp(), iv.duration(), h));
    }
    Ok(out)
}

/// Stage colours, in [`STAGES`] order (matplotlib's first three: told apart by most readers).
const STAGE_COLOURS: [RGBColor; 3] = [
    RGBColor(31, 119, 180),
    RGBColor(255, 127, 14),
    RGBColor(44, 160, 44),
];

fn err<E: std::fmt::Display>(e: E) -> String {
    format!("drawing: {e}")
}

/// `log10(1 / (1 - q))`: the percentile axis coordinate of quantile `q`.
fn tail_x(q: f64) -> f64 {
    -(1.0 - q).max(1e-9).log10()
}

/// The tick label at percentile-axis coordinate `x`: 50 %, 90 %, 99 %, 99.9 %, ...
fn percent_label(x: f64) -> String {
    let p = 100.0 * (1.0 - 10f64.powf(-x));
    let decimals = (x.round() as i64 - 2).max(0) as usize;
    format!("{p:.decimals$}%")
}

/// The percentile axis: `log10(1 / (1 - q))` from 0, ticked at 50 %, 90 %, 99 %, 99.9 %, ...
struct PercentileAxis {
    inner: plotters::coord::types::RangedCoordf64,
    ticks: Vec<f64>,
}

impl PercentileAxis {
    fn new(top: f64) -> PercentileAxis {
        let mut ticks = vec![tail_x(0.5)];
        ticks.extend((1..=top as u32).map(f64::from));
        PercentileAxis {
            inner: (0f64..top).into(),
            ticks,
        }
    }
}

impl Ranged for PercentileAxis {
    type FormatOption = NoDefaultFormatting;
    type ValueType = f64;

    fn map(&self, value: &f64, limit: (i32, i32)) -> i32 {
        self.inner.map(value, limit)
    }

    fn key_points<Hint: KeyPointHint>(&self, hint: Hint) -> Vec<f64> {
        // Only the percentile ticks, as bold grid lines (no light lines in between).
        if hint.weight().allow_light_points() {
            return Vec::new();
        }
        self.ticks.clone()
    }

    fn range(&self) -> std::ops::Range<f64> {
        self.inner.range()
    }
}

impl ValueFormatter<f64> for PercentileAxis {
    fn format(value: &f64) -> String {
        percent_label(*value)
    }
}

/// A latency range for a log axis: from a power of ten below `lo` to one above `hi`.
fn decades(lo: f64, hi: f64) -> std::ops::Range<f64> {
    let lo = 10f64.powf(lo.max(1.0).log10().floor());
    let hi = 10f64.powf(hi.max(lo * 10.0).log10().ceil());
    lo..hi
}

fn us_label(us: f64) -> String {
    if us >= 1_000_000.0 {
        format!("{} s", us / 1e6)
    } else if us >= 1000.0 {
        format!("{} ms", us / 1e3)
    } else {
        format!("{us} µs")
    }
}

/// Draws the latency plot of one run, or of two runs compared (the second dashed), to `out`.
pub fn draw_latency(runs: &[LatencyRun], out: &Path) -> Result<(), String> {
    if runs.is_empty() || runs.len() > 2 {
        return Err(format!("plots one or two runs, not {}", runs.len()));
    }
    if runs.iter().all(|r| r.samples.iter().all(|&n| n == 0)) {
        return Err("no latency samples to draw".into());
    }
    let root = SVGBackend::new(out, (1100, 1250)).into_drawing_area();
    root.fill(&WHITE).map_err(err)?;
    let (top, bottom) = root.split_vertically(650);
    let (rate, p99) = bottom.split_vertically(300);
    draw_curves(&top, runs)?;
    draw_rate(&rate, runs)?;
    draw_p99(&p99, runs)?;
    root.present().map_err(err)
}

/// The line style of stage `s` of run `r`: the stage picks the colour, the run solid or dashed.
fn series_style(s: usize, width: u32) -> ShapeStyle {
    STAGE_COLOURS[s].stroke_width(width)
}

fn run_prefix(runs: &[LatencyRun], r: usize) -> String {
    if runs.len() == 1 {
        String::new()
    } else {
        format!(
            "{} ({}): ",
            runs[r].label,
            if r == 0 { "solid" } else { "dashed" }
        )
    }
}

/// Draws `points` solid for the first run and dashed for the second, with a legend entry.
fn draw_line<DB: DrawingBackend, X, Y>(
    chart: &mut ChartContext<'_, DB, Cartesian2d<X, Y>>,
    points: Vec<(X::ValueType, Y::ValueType)>,
    run: usize,
    style: ShapeStyle,
    label: String,
) -> Result<(), String>
where
    X: Ranged,
    Y: Ranged,
    X::ValueType: Clone + 'static,
    Y::ValueType: Clone + 'static,
    DB::ErrorType: 'static,
{
    if run == 0 {
        chart
            .draw_series(LineSeries::new(points, style))
            .map_err(err)?
            .label(label)
            .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 28, y)], style));
    } else {
        chart
            .draw_series(DashedLineSeries::new(points, 9, 5, style))
            .map_err(err)?
            .label(label)
            .legend(move |(x, y)| DashedPathElement::new(vec![(x, y), (x + 28, y)], 7, 4, style));
    }
    Ok(())
}

fn draw_curves<DB: DrawingBackend>(
    area: &DrawingArea<DB, Shift>,
    runs: &[LatencyRun],
) -> Result<(), String>
where
    DB::ErrorType: 'static,
{
    let points = || runs.iter().flat_map(|r| r.curves.iter().flatten());
    let x_top = points()
        .map(|&(q, _)| tail_x(q))
        .fold(4.0f64, f64::max)
        .ceil();
    let lo = points().map(|p| p.1).fold(f64::MAX, f64::min);
    let hi = points().map(|p| p.1).fold(1.0, f64::max);
    let mut chart = ChartBuilder::on(area)
        .caption(
            "Latency from submit, by percentile (every stage, whole run)",
            ("sans-serif", 22),
        )
        .margin(18)
        .margin_right(45)
        .x_label_area_size(50)
        .y_label_area_size(80)
        .build_cartesian_2d(PercentileAxis::new(x_top), decades(lo, hi).log_scale())
        .map_err(err)?;
    chart
        .configure_mesh()
        .x_desc("percentile (log scale of 1 / (1 - percentile))")
        .y_desc("latency (log scale)")
        .y_label_formatter(&|y| us_label(*y))
        .label_style(("sans-serif", 15))
        .axis_desc_style(("sans-serif", 16))
        .draw()
        .map_err(err)?;
    for (r, run) in runs.iter().enumerate() {
        for (s, name) in STAGES.iter().enumerate() {
            let pts: Vec<(f64, f64)> = run.curves[s]
                .iter()
                .map(|&(q, us)| (tail_x(q), us))
                .collect();
            if pts.is_empty() {
                continue;
            }
            let p = |q: f64| {
                run.curves[s]
                    .iter()
                    .find(|c| c.0 >= q - 1e-12)
                    .map_or("-".to_owned(), |c| us_label(c.1))
            };
            let label = format!(
                "{}{name}: p50 {}, p99 {}, max {} ({} samples)",
                run_prefix(runs, r),
                p(0.5),
                p(0.99),
                us_label(pts.last().map_or(0.0, |p| p.1)),
                run.samples[s]
            );
            draw_line(&mut chart, pts, r, series_style(s, 2), label)?;
        }
    }
    // Curves rise to the right: the lower right corner is free.
    chart
        .configure_series_labels()
        .position(SeriesLabelPosition::LowerRight)
        .background_style(WHITE.mix(0.9))
        .border_style(BLACK)
        .label_font(("sans-serif", 14))
        .draw()
        .map_err(err)
}

/// Each run's seconds that saw changes, timed from its first such second (the intervals of a
/// prefill, before it, are empty).
fn timed_seconds(run: &LatencyRun, s: usize) -> Vec<Second> {
    let first = run.seconds.iter().flatten().find(|x| x.count > 0);
    let Some(t0) = first.map(|x| x.start_s) else {
        return Vec::new();
    };
    run.seconds[s]
        .iter()
        .filter(|x| x.start_s >= t0)
        .map(|x| Second {
            start_s: x.start_s - t0,
            ..*x
        })
        .collect()
}

/// A step line: each interval's value held from its start to its end.
fn steps<'a>(values: impl Iterator<Item = (&'a Second, f64)>) -> Vec<(f64, f64)> {
    values
        .flat_map(|(x, v)| [(x.start_s, v), (x.start_s + x.duration_s, v)])
        .collect()
}

fn time_range(runs: &[LatencyRun]) -> std::ops::Range<f64> {
    let end = (0..runs.len())
        .flat_map(|r| (0..3).flat_map(move |s| timed_seconds(&runs[r], s)))
        .map(|x| x.start_s + x.duration_s)
        .fold(1.0, f64::max);
    0.0..end
}

/// Says in the panel that there is nothing to draw (a JSON report without intervals).
fn empty_panel<DB: DrawingBackend>(area: &DrawingArea<DB, Shift>, what: &str) -> Result<(), String>
where
    DB::ErrorType: 'static,
{
    let (_, h) = area.dim_in_pixel();
    area.draw(&Text::new(
        format!("{what}: no per-second intervals in this input (use a churn --hdr-log directory, or a --json report of this version)"),
        (20, h as i32 / 2),
        ("sans-serif", 15).into_font().color(&BLACK),
    ))
    .map_err(err)
}

fn draw_rate<DB: DrawingBackend>(
    area: &DrawingArea<DB, Shift>,
    runs: &[LatencyRun],
) -> Result<(), String>
where
    DB::ErrorType: 'static,
{
    // The commit stage counts each change once, when the standby applied it: commits/s.
    let commit = 2;
    if runs.iter().all(|r| timed_seconds(r, commit).is_empty()) {
        return empty_panel(area, "commit rate");
    }
    let hi = runs
        .iter()
        .flat_map(|r| timed_seconds(r, commit))
        .map(|x| x.count as f64 / x.duration_s.max(1e-3))
        .fold(1.0, f64::max);
    let mut chart = ChartBuilder::on(area)
        .caption(
            "Commits per second (standby_commit samples; the last interval ends with the run)",
            ("sans-serif", 18),
        )
        .margin(18)
        .x_label_area_size(45)
        .y_label_area_size(80)
        .build_cartesian_2d(time_range(runs), 0f64..hi * 1.4)
        .map_err(err)?;
    chart
        .configure_mesh()
        .x_desc("seconds into the timed run")
        .y_desc("commits / s")
        .y_label_formatter(&|y| {
            if *y >= 1e6 {
                format!("{:.1} M", y / 1e6)
            } else if *y >= 1e3 {
                format!("{:.0} k", y / 1e3)
            } else {
                format!("{y:.0}")
            }
        })
        .label_style(("sans-serif", 15))
        .axis_desc_style(("sans-serif", 16))
        .draw()
        .map_err(err)?;
    for (r, run) in runs.iter().enumerate() {
        let pts = steps(
            timed_seconds(run, commit)
                .iter()
                .map(|x| (x, x.count as f64 / x.duration_s.max(1e-3))),
        );
        let label = format!("{}commits/s", run_prefix(runs, r));
        draw_line(&mut chart, pts, r, BLACK.stroke_width(2), label)?;
    }
    if runs.len() == 1 {
        return Ok(());
    }
    chart
        .configure_series_labels()
        .position(SeriesLabelPosition::UpperRight)
        .background_style(WHITE.mix(0.9))
        .border_style(BLACK)
        .label_font(("sans-serif", 14))
        .draw()
        .map_err(err)
}

fn draw_p99<DB: DrawingBackend>(
    area: &DrawingArea<DB, Shift>,
    runs: &[LatencyRun],
) -> Result<(), String>
where
    DB::ErrorType: 'static,
{
    let all = || {
        (0..runs.len())
            .flat_map(move |r| (0..3).flat_map(move |s| timed_seconds(&runs[r], s)))
            .filter(|x| x.count > 0)
    };
    if all().next().is_none() {
        return empty_panel(area, "p99 per second");
    }
    let lo = all().map(|x| x.p99_us as f64).fold(f64::MAX, f64::min);
    let hi = all().map(|x| x.p99_us as f64).fold(1.0, f64::max);
    // A log axis only when the seconds differ by more than a decade or so; within one, a
    // log axis would spend its labels on the crowded top of the decade.
    if hi / lo.max(1.0) > 20.0 {
        let chart = ChartBuilder::on(area)
            .caption(P99_CAPTION, ("sans-serif", 18))
            .margin(18)
            .x_label_area_size(45)
            .y_label_area_size(80)
            .build_cartesian_2d(time_range(runs), decades(lo, hi).log_scale())
            .map_err(err)?;
        p99_lines(chart, runs, "p99 (log scale)")
    } else {
        let chart = ChartBuilder::on(area)
            .caption(P99_CAPTION, ("sans-serif", 18))
            .margin(18)
            .x_label_area_size(45)
            .y_label_area_size(80)
            .build_cartesian_2d(time_range(runs), 0f64..hi * 1.15)
            .map_err(err)?;
        p99_lines(chart, runs, "p99")
    }
}

const P99_CAPTION: &str = "p99 latency of each second, by stage (colours and line styles as above)";

fn p99_lines<DB: DrawingBackend, Y>(
    mut chart: ChartContext<'_, DB, Cartesian2d<plotters::coord::types::RangedCoordf64, Y>>,
    runs: &[LatencyRun],
    y_desc: &str,
) -> Result<(), String>
where
    Y: Ranged<ValueType = f64> + ValueFormatter<f64>,
    DB::ErrorType: 'static,
{
    chart
        .configure_mesh()
        .x_desc("seconds into the timed run")
        .y_desc(y_desc)
        .y_label_formatter(&|y| us_label(*y))
        .label_style(("sans-serif", 15))
        .axis_desc_style(("sans-serif", 16))
        .draw()
        .map_err(err)?;
    for (r, run) in runs.iter().enumerate() {
        for (s, name) in STAGES.iter().enumerate() {
            let pts = steps(
                timed_seconds(run, s)
                    .iter()
                    .filter(|x| x.count > 0)
                    .map(|x| (x, x.p99_us as f64)),
            );
            if pts.is_empty() {
                continue;
            }
            let label = format!("{}{name}", run_prefix(runs, r));
            draw_line(&mut chart, pts, r, series_style(s, 2), label)?;
        }
    }
    Ok(())
}

/// One failover round, as `drill --plot` measured it. Times are Unix microseconds, each from
/// where the drill read it (see `drill::timeline_from_logs` and `drill::first_accepted_submit`).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct FailoverTimeline {
    pub title: String,
    pub killed: u32,
    pub new_primary: u32,
    /// The primary was stopped (the drill's clock): the round's time zero.
    pub frozen_us: u64,
    /// How it was stopped, for the legend: "frozen (SIGSTOP)", "killed (SIGKILL)", ...
    pub stopped_how: String,
    /// The frozen primary was killed (SIGKILL), once the committed set was read.
    pub killed_us: Option<u64>,
    /// The new primary last heard the old one (its status).
    pub last_primary_rx_us: Option<u64>,
    /// The new primary's failover started: it declared the primary lost and sent its queries.
    pub detected_us: u64,
    /// The new primary finished its failover and leads the new epoch.
    pub took_over_us: u64,
    pub channels: Vec<ChannelEvents>,
    pub clients: Vec<ClientEvents>,
    /// The first accepted submit lies in `(after, at]`: the status polls around it.
    pub first_submit: Option<(u64, u64)>,
    /// The old primary was started again (the drill's clock).
    pub restarted_us: Option<u64>,
    /// The new primary took it into its sync set.
    pub rejoined_us: Option<u64>,
}

#[derive(Debug, Clone, Default, PartialEq)]
pub struct ChannelEvents {
    pub channel: u32,
    pub resolved_us: Option<u64>,
    pub resolution: String,
    /// Replay and resent-op bytes of this failover.
    pub replayed_bytes: u64,
    /// The channel's whole state: what a full resync would send.
    pub full_bytes: u64,
}

#[derive(Debug, Clone, Default, PartialEq)]
pub struct ClientEvents {
    pub client: u32,
    /// The client followed the new epoch.
    pub followed_us: Option<u64>,
    /// `(channel, started, finished)` of each replay to this client.
    pub replays: Vec<(u32, u64, Option<u64>)>,
}

/// A categorical axis: labels at given positions of an `f64` range.
struct LabelAxis {
    inner: plotters::coord::types::RangedCoordf64,
    points: Vec<(f64, String)>,
}

impl Ranged for LabelAxis {
    type FormatOption = NoDefaultFormatting;
    type ValueType = f64;
    fn map(&self, value: &f64, limit: (i32, i32)) -> i32 {
        self.inner.map(value, limit)
    }
    fn key_points<Hint: KeyPointHint>(&self, hint: Hint) -> Vec<f64> {
        if hint.weight().allow_light_points() {
            return Vec::new();
        }
        self.points.iter().map(|p| p.0).collect()
    }
    fn range(&self) -> std::ops::Range<f64> {
        self.inner.range()
    }
}

impl ValueFormatter<f64> for LabelAxis {
    fn format_ext(&self, value: &f64) -> String {
        self.points
            .iter()
            .find(|p| (p.0 - value).abs() < 1e-6)
            .map_or_else(String::new, |p| p.1.clone())
    }
}

/// A time axis in milliseconds, broken into segments (the failover, then the rejoin seconds
/// later), each given its own share of the width; plotted in display units 0..100.
struct TimeAxis {
    /// `(first ms, last ms, first display unit, last display unit, tick step in ms)`.
    segments: Vec<(f64, f64, f64, f64, f64)>,
}

/// A round tick step: 1, 2 or 5 times a power of ten, giving about `n` ticks over `span`.
fn nice_step(span: f64, n: f64) -> f64 {
    let raw = (span / n).max(1e-3);
    let p = 10f64.powf(raw.log10().floor());
    [1.0, 2.0, 5.0, 10.0]
        .into_iter()
        .map(|m| m * p)
        .find(|&s| s >= raw)
        .unwrap_or(10.0 * p)
}

impl TimeAxis {
    fn new(spans: &[(f64, f64)]) -> TimeAxis {
        // The first segment gets most of the width; a later one (the rejoin) the rest.
        let shares: Vec<(f64, f64)> = match spans.len() {
            1 => vec![(0.0, 100.0)],
            _ => vec![(0.0, 68.0), (72.0, 100.0)],
        };
        TimeAxis {
            segments: spans
                .iter()
                .zip(shares)
                .map(|(&(a, b), (da, db))| {
                    let step = nice_step(b - a, (db - da) / 12.0);
                    (a, b, da, db, step)
                })
                .collect(),
        }
    }

    /// The display position of `ms`, clamped into its segment.
    fn display(&self, ms: f64) -> f64 {
        let seg = self
            .segments
            .iter()
            .rev()
            .find(|s| ms >= s.0)
            .unwrap_or(&self.segments[0]);
        let (a, b, da, db, _) = *seg;
        da + (ms.clamp(a, b) - a) / (b - a).max(1e-9) * (db - da)
    }

    fn ms(&self, d: f64) -> f64 {
        let seg = self
            .segments
            .iter()
            .rev()
            .find(|s| d >= s.2 - 1e-9)
            .unwrap_or(&self.segments[0]);
        let (a, b, da, db, _) = *seg;
        a + (d - da) / (db - da) * (b - a)
    }

    fn ticks(&self) -> Vec<f64> {
        let mut out = Vec::new();
        for &(a, b, _, _, step) in &self.segments {
            let mut t = (a / step).ceil() * step;
            while t <= b + 1e-9 {
                out.push(self.display(t));
                t += step;
            }
        }
        out
    }
}

struct TimeRanged {
    axis: TimeAxis,
    inner: plotters::coord::types::RangedCoordf64,
}

impl Ranged for TimeRanged {
    type FormatOption = NoDefaultFormatting;
    type ValueType = f64;
    fn map(&self, value: &f64, limit: (i32, i32)) -> i32 {
        self.inner.map(value, limit)
    }
    fn key_points<Hint: KeyPointHint>(&self, hint: Hint) -> Vec<f64> {
        if hint.weight().allow_light_points() {
            return Vec::new();
        }
        self.axis.ticks()
    }
    fn range(&self) -> std::ops::Range<f64> {
        self.inner.range()
    }
}

impl ValueFormatter<f64> for TimeRanged {
    fn format_ext(&self, value: &f64) -> String {
        let ms = self.axis.ms(*value);
        let step = self
            .axis
            .segments
            .iter()
            .rev()
            .find(|s| *value >= s.2 - 1e-9)
            .map_or(1.0, |s| s.4);
        if step >= 1.0 {
            format!("{ms:.0}")
        } else {
            format!("{ms:.1}")
        }
    }
}

fn bytes_label(b: u64) -> String {
    match b {
        0..1_000 => format!("{b} B"),
        1_000..1_000_000 => format!("{:.1} kB", b as f64 / 1e3),
        _ => format!("{:.2} MB", b as f64 / 1e6),
    }
}

const KILL: RGBColor = RGBColor(214, 39, 40);
const DETECT: RGBColor = RGBColor(148, 103, 189);
const REPLAY: RGBColor = RGBColor(31, 119, 180);
const SUBMIT: RGBColor = RGBColor(44, 160, 44);
const REJOIN: RGBColor = RGBColor(140, 86, 75);
const FOLLOW: RGBColor = RGBColor(255, 127, 14);
const IN_SYNC: RGBColor = RGBColor(160, 160, 160);

/// Rows of the timeline left blank for its legend.
const LEGEND_ROWS: f64 = 5.5;

/// Draws one failover round: its events on a time axis, and the bytes replayed per channel
/// against a full resync.
pub fn draw_failover(t: &FailoverTimeline, out: &Path) -> Result<(), String> {
    let rows = 2 + t.channels.len() + t.clients.len();
    let top_h = 120 + (34.0 * (rows as f64 + LEGEND_ROWS)) as u32;
    let root = SVGBackend::new(out, (1200, top_h + 420)).into_drawing_area();
    root.fill(&WHITE).map_err(err)?;
    let (top, bottom) = root.split_vertically(top_h);
    draw_timeline(&top, t)?;
    draw_replayed(&bottom, t)?;
    root.present().map_err(err)
}

fn draw_timeline<DB: DrawingBackend>(
    area: &DrawingArea<DB, Shift>,
    t: &FailoverTimeline,
) -> Result<(), String>
where
    DB::ErrorType: 'static,
{
    let ms = |us: u64| (us as f64 - t.frozen_us as f64) / 1000.0;
    // The failover's events, then (seconds later) the restart and the rejoin.
    let mut early: Vec<f64> = vec![0.0, ms(t.detected_us), ms(t.took_over_us)];
    early.extend(t.killed_us.map(ms));
    early.extend(t.last_primary_rx_us.map(ms));
    early.extend(t.channels.iter().filter_map(|c| c.resolved_us).map(ms));
    for c in &t.clients {
        early.extend(c.followed_us.map(ms));
        for r in &c.replays {
            early.push(ms(r.1));
            early.extend(r.2.map(ms));
        }
    }
    early.extend(t.first_submit.map(|f| ms(f.1)));
    let lo = early.iter().copied().fold(0.0, f64::min);
    let hi = early.iter().copied().fold(1.0, f64::max);
    let pad = (hi - lo) * 0.06;
    let mut spans = vec![(lo - pad, hi + pad)];
    let late: Vec<f64> = t
        .restarted_us
        .iter()
        .chain(&t.rejoined_us)
        .map(|&u| ms(u))
        .collect();
    if let (Some(&a), Some(&b)) = (
        late.iter().min_by(|x, y| x.total_cmp(y)),
        late.iter().max_by(|x, y| x.total_cmp(y)),
    ) {
        if a > hi + pad {
            let p = ((b - a) * 0.1).max(5.0);
            spans.push((a - p, b + p));
        } else {
            spans[0].1 = spans[0].1.max(b + pad);
        }
    }
    let axis = TimeAxis::new(&spans);
    let x = |us: u64| axis.display(ms(us));
    // Rows, top to bottom.
    let mut labels = vec![
        format!("unit {} (old primary)", t.killed),
        format!("unit {} (new primary)", t.new_primary),
    ];
    labels.extend(t.channels.iter().map(|c| format!("channel {}", c.channel)));
    labels.extend(t.clients.iter().map(|c| format!("client {}", c.client)));
    let n = labels.len() as f64;
    let y = |row: usize| n - row as f64 - 0.5;
    let y_axis = LabelAxis {
        // Blank rows below the last client keep the legend off the events.
        inner: (-LEGEND_ROWS..n).into(),
        points: labels
            .iter()
            .enumerate()
            .map(|(i, l)| (y(i), l.clone()))
            .collect(),
    };
    let x_axis = TimeRanged {
        inner: (0f64..100.0).into(),
        axis: TimeAxis::new(&spans),
    };
    let mut chart = ChartBuilder::on(area)
        .caption(&t.title, ("sans-serif", 20))
        .margin(15)
        .margin_right(30)
        .x_label_area_size(45)
        .y_label_area_size(170)
        .build_cartesian_2d(x_axis, y_axis)
        .map_err(err)?;
    chart
        .configure_mesh()
        .x_desc(if spans.len() > 1 {
            "ms since the primary was stopped (axis broken: the rejoin comes later)"
        } else {
            "ms since the primary was stopped"
        })
        .label_style(("sans-serif", 14))
        .axis_desc_style(("sans-serif", 15))
        .draw()
        .map_err(err)?;
    if spans.len() > 1 {
        let d = (axis.segments[0].3 + axis.segments[1].2) / 2.0;
        chart
            .draw_series([PathElement::new(
                vec![(d, 0.0), (d, n)],
                BLACK.mix(0.5).stroke_width(6),
            )])
            .map_err(err)?;
    }
    let bar = |x0: f64, x1: f64, row: usize, c: RGBColor| {
        // At least a sliver wide, so that an instant reply is still seen.
        Rectangle::new(
            [(x0, y(row) - 0.28), (x1.max(x0 + 0.25), y(row) + 0.28)],
            c.filled(),
        )
    };
    let font = ("sans-serif", 13).into_font().color(&BLACK);
    // Vertical guides at the freeze and the takeover.
    for (us, c) in [(t.frozen_us, KILL), (t.took_over_us, SUBMIT)] {
        chart
            .draw_series([PathElement::new(
                vec![(x(us), 0.0), (x(us), n)],
                c.mix(0.35).stroke_width(1),
            )])
            .map_err(err)?;
    }
    chart
        .draw_series([Cross::new((x(t.frozen_us), y(0)), 7, KILL.stroke_width(3))])
        .map_err(err)?
        .label(format!("primary {}: t = 0", t.stopped_how))
        .legend(|(a, b)| Cross::new((a + 10, b), 5, KILL.stroke_width(3)));
    if let Some(k) = t.killed_us {
        chart
            .draw_series([TriangleMarker::new((x(k), y(0)), 7, KILL.filled())])
            .map_err(err)?
            .label("primary killed (SIGKILL, after the committed set was read)")
            .legend(|(a, b)| TriangleMarker::new((a + 10, b), 5, KILL.filled()));
    }
    if let Some(rx) = t.last_primary_rx_us {
        chart
            .draw_series([Circle::new((x(rx), y(1)), 5, DETECT.stroke_width(2))])
            .map_err(err)?
            .label("new primary last heard the old one")
            .legend(|(a, b)| Circle::new((a + 10, b), 4, DETECT.stroke_width(2)));
    }
    chart
        .draw_series([bar(x(t.detected_us), x(t.took_over_us), 1, DETECT)])
        .map_err(err)?
        .label("failover: detection (queries sent) to takeover")
        .legend(|(a, b)| Rectangle::new([(a, b - 5), (a + 20, b + 5)], DETECT.filled()));
    for (i, c) in t.channels.iter().enumerate() {
        let Some(r) = c.resolved_us else { continue };
        let colour = if c.resolution == "in_sync" {
            IN_SYNC
        } else {
            DETECT
        };
        chart
            .draw_series([bar(x(t.detected_us), x(r), 2 + i, colour)])
            .map_err(err)?;
        chart
            .draw_series([Text::new(
                format!("{} ({:.1} ms)", c.resolution, ms(r) - ms(t.detected_us)),
                (x(r).max(x(t.detected_us) + 0.25) + 0.4, y(2 + i) + 0.2),
                font.clone(),
            )])
            .map_err(err)?;
    }
    chart
        .draw_series(std::iter::empty::<Rectangle<(f64, f64)>>())
        .map_err(err)?
        .label("channel: query to resolution (grey: in sync)")
        .legend(|(a, b)| Rectangle::new([(a, b - 5), (a + 20, b + 5)], IN_SYNC.filled()));
    let client_row = 2 + t.channels.len();
    let mut any_replay = false;
    for (i, c) in t.clients.iter().enumerate() {
        // A client's replays (one per channel) share its row, each in a slice of its height.
        let k = c.replays.len().max(1) as f64;
        let row_y = y(client_row + i);
        let mut last_end = f64::MIN;
        for (j, &(_, s, f)) in c.replays.iter().enumerate() {
            let end = f.map_or(x(s) + 0.25, x);
            last_end = last_end.max(end);
            any_replay = true;
            let top = row_y + 0.28 - 0.56 * j as f64 / k;
            let bottom = top - 0.56 / k + 0.03;
            chart
                .draw_series([Rectangle::new(
                    [(x(s), bottom), (end.max(x(s) + 0.25), top)],
                    REPLAY.filled(),
                )])
                .map_err(err)?;
        }
        if !c.replays.is_empty() {
            let chans: Vec<String> = c.replays.iter().map(|r| r.0.to_string()).collect();
            let unfinished = c.replays.iter().filter(|r| r.2.is_none()).count();
            chart
                .draw_series([Text::new(
                    format!(
                        "ch {}{}",
                        chans.join(", "),
                        if unfinished > 0 {
                            format!(" ({unfinished} with no finish seen)")
                        } else {
                            String::new()
                        }
                    ),
                    (last_end + 0.4, row_y + 0.2),
                    font.clone(),
                )])
                .map_err(err)?;
        }
        if let Some(f) = c.followed_us {
            chart
                .draw_series([Circle::new((x(f), y(client_row + i)), 5, FOLLOW.filled())])
                .map_err(err)?;
        }
    }
    if any_replay {
        chart
            .draw_series(std::iter::empty::<Rectangle<(f64, f64)>>())
            .map_err(err)?
            .label("replay to the client, per channel")
            .legend(|(a, b)| Rectangle::new([(a, b - 5), (a + 20, b + 5)], REPLAY.filled()));
    }
    if t.clients.iter().any(|c| c.followed_us.is_some()) {
        chart
            .draw_series(std::iter::empty::<Circle<(f64, f64), i32>>())
            .map_err(err)?
            .label("client follows the new epoch")
            .legend(|(a, b)| Circle::new((a + 10, b), 4, FOLLOW.filled()));
    }
    if let Some((after, at)) = t.first_submit {
        chart
            .draw_series([
                PathElement::new(
                    vec![(x(after), y(1) - 0.38), (x(at), y(1) - 0.38)],
                    SUBMIT.stroke_width(3),
                ),
                PathElement::new(
                    vec![(x(at), y(1) - 0.38), (x(at), y(1) + 0.38)],
                    SUBMIT.stroke_width(3),
                ),
            ])
            .map_err(err)?
            .label("first accepted submit (within the green span: status polls)")
            .legend(|(a, b)| PathElement::new(vec![(a, b), (a + 20, b)], SUBMIT.stroke_width(3)));
    }
    if let Some(r) = t.restarted_us {
        chart
            .draw_series([TriangleMarker::new((x(r), y(0)), 7, REJOIN.filled())])
            .map_err(err)?
            .label("old primary restarted (standby --rejoin)")
            .legend(|(a, b)| TriangleMarker::new((a + 10, b), 5, REJOIN.filled()));
    }
    if let Some(j) = t.rejoined_us {
        chart
            .draw_series([Cross::new((x(j), y(1)), 7, REJOIN.stroke_width(3))])
            .map_err(err)?
            .label("it rejoined: back in the sync set")
            .legend(|(a, b)| Cross::new((a + 10, b), 5, REJOIN.stroke_width(3)));
    }
    chart
        .configure_series_labels()
        .position(SeriesLabelPosition::LowerRight)
        .background_style(WHITE.mix(0.92))
        .border_style(BLACK)
        .label_font(("sans-serif", 13))
        .draw()
        .map_err(err)
}

fn draw_replayed<DB: DrawingBackend>(
    area: &DrawingArea<DB, Shift>,
    t: &FailoverTimeline,
) -> Result<(), String>
where
    DB::ErrorType: 'static,
{
    let n = t.channels.len().max(1) as f64;
    let hi = t
        .channels
        .iter()
        .map(|c| c.full_bytes.max(c.replayed_bytes))
        .max()
        .unwrap_or(0)
        .max(1) as f64;
    let x_axis = LabelAxis {
        inner: (0f64..n).into(),
        points: t
            .channels
            .iter()
            .enumerate()
            .map(|(i, c)| (i as f64 + 0.5, format!("ch {} {}", c.channel, c.resolution)))
            .collect(),
    };
    let replayed: u64 = t.channels.iter().map(|c| c.replayed_bytes).sum();
    let full: u64 = t.channels.iter().map(|c| c.full_bytes).sum();
    let mut chart = ChartBuilder::on(area)
        .caption(
            format!(
                "Bytes replayed per channel against a full resync (in all: {} against {})",
                bytes_label(replayed),
                bytes_label(full)
            ),
            ("sans-serif", 18),
        )
        .margin(15)
        .margin_right(30)
        .x_label_area_size(45)
        .y_label_area_size(90)
        .build_cartesian_2d(x_axis, 0f64..hi * 1.25)
        .map_err(err)?;
    chart
        .configure_mesh()
        .x_desc("channel and how it was resolved")
        .y_desc("bytes")
        .y_label_formatter(&|b| bytes_label(*b as u64))
        .label_style(("sans-serif", 13))
        .axis_desc_style(("sans-serif", 15))
        .draw()
        .map_err(err)?;
    let font = ("sans-serif", 12).into_font().color(&BLACK);
    for (i, c) in t.channels.iter().enumerate() {
        let x0 = i as f64;
        for (a, b, v, colour) in [
            (0.12, 0.47, c.replayed_bytes, REPLAY),
            (0.53, 0.88, c.full_bytes, IN_SYNC),
        ] {
            chart
                .draw_series([Rectangle::new(
                    [(x0 + a, 0.0), (x0 + b, v as f64)],
                    colour.filled(),
                )])
                .map_err(err)?;
            chart
                .draw_series([Text::new(
                    bytes_label(v),
                    (x0 + a, v as f64 + hi * 0.06),
                    font.clone(),
                )])
                .map_err(err)?;
        }
    }
    for (label, colour) in [
        ("replayed (selective replay and resent ops)", REPLAY),
        ("full resync (the channel's whole state)", IN_SYNC),
    ] {
        chart
            .draw_series(std::iter::empty::<Rectangle<(f64, f64)>>())
            .map_err(err)?
            .label(label)
            .legend(move |(a, b)| Rectangle::new([(a, b - 5), (a + 20, b + 5)], colour.filled()));
    }
    chart
        .configure_series_labels()
        .position(SeriesLabelPosition::UpperRight)
        .background_style(WHITE.mix(0.92))
        .border_style(BLACK)
        .label_font(("sans-serif", 13))
        .draw()
        .map_err(err)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentile_ticks_read_as_percentiles() {
        assert_eq!(percent_label(tail_x(0.5)), "50%");
        assert_eq!(percent_label(1.0), "90%");
        assert_eq!(percent_label(2.0), "99%");
        assert_eq!(percent_label(3.0), "99.9%");
        assert_eq!(percent_label(4.0), "99.99%");
    }

    #[test]
    fn a_curve_ends_at_the_maximum_and_rises() {
        let mut h = Histogram::<u64>::new_with_bounds(1, 60_000_000, 3).unwrap();
        for v in 1..=10_000u64 {
            h.record(v).unwrap();
        }
        let c = curve(&h);
        // The maximum as the histogram holds it (to its 3 significant digits).
        assert_eq!(c.last().unwrap().1, h.max() as f64);
        assert!(h.equivalent(h.max(), 10_000));
        assert!(
            c.windows(2).all(|w| w[0].0 < w[1].0 && w[0].1 <= w[1].1),
            "{c:?}"
        );
        // 10^4 samples reach four decades into the tail: 80 steps, the exact p50 and p99
        // (unless a step already lands on them) and the maximum.
        assert!((81..=83).contains(&c.len()), "{}", c.len());
        for q in LEGEND_QUANTILES {
            let p = c
                .iter()
                .find(|p| p.0 == q)
                .expect("an exact legend quantile");
            assert_eq!(p.1, h.value_at_quantile(q) as f64);
        }
    }

    #[test]
    fn the_json_series_round_trips() {
        let mut h = Histogram::<u64>::new_with_bounds(1, 60_000_000, 3).unwrap();
        h.record_n(120, 500).unwrap();
        let iv = [(
            Duration::from_secs(3),
            Duration::from_secs(1),
            [h.clone(), h.clone(), h],
        )];
        let run = LatencyRun::from_intervals("x", &iv).unwrap();
        let back = LatencyRun::from_report("x", &json!({"latency_series": run.to_json()})).unwrap();
        assert_eq!(back, run);
    }
}
