//! The HTML report of `loadtest run --html` and `loadtest compare --html`: one self-contained
//! file (inline SVG drawn with plotters, inline CSS, no script, nothing loaded from the
//! network) with
//! - per section (a scenario): the latency percentile curves of every server on one chart
//!   (x: percentile on the 1/(1-q) log scale of HdrHistogram plots, 50 % .. 99.99 %), the
//!   requests and errors of every second of the run, and the summary figures;
//! - the server CPU per 1000 requests and per new connection, side by side (compare only);
//! - the machine, the versions, the command line and the configuration of the run;
//! - every figure also as an HTML table.
//!
//! The input is plain data (`ReportInput`), built by `run.rs` and `compare.rs` from their
//! reports; `write_html` draws it.

use std::fmt::Write as _;

use plotters::coord::ranged1d::{DefaultFormatting, KeyPointHint, KeyPointWeight};
use plotters::prelude::*;

use crate::stats::{fmt_us, CurvePoint, SecondBucket, Summary};

/// Everything one report shows.
#[derive(Clone, Debug, Default)]
pub struct ReportInput {
    pub title: String,
    /// The command that produced the figures, as typed (quoted for a shell).
    pub command_line: String,
    /// CPU, kernel, versions: name and value.
    pub machine: Vec<(String, String)>,
    /// The run's settings: name and value.
    pub config: Vec<(String, String)>,
    /// One per scenario: latency curves and per-second series of its servers.
    pub sections: Vec<Section>,
    /// Server CPU per server (empty: no CPU section, as for `loadtest run`).
    pub cpu: Vec<CpuBar>,
    /// Where the CPU figures come from.
    pub cpu_note: String,
    /// Further figures, as tables.
    pub tables: Vec<Table>,
    /// Sentences shown under the title.
    pub notes: Vec<String>,
}

/// One scenario: every server measured with it.
#[derive(Clone, Debug, Default)]
pub struct Section {
    pub title: String,
    /// One sentence under the title (mode, rate, connections).
    pub note: String,
    pub series: Vec<ServerSeries>,
}

/// One server's run of one scenario.
#[derive(Clone, Debug)]
pub struct ServerSeries {
    /// The server (edgegw, nginx, haproxy) or, for one run, the target.
    pub name: String,
    pub summary: Summary,
    /// `Recorder::percentile_curve`.
    pub curve: Vec<CurvePoint>,
    /// `Recorder::per_second`: second `i` of the run.
    pub per_second: Vec<SecondBucket>,
}

/// One server's CPU cost, in milliseconds of its CPU time.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct CpuBar {
    pub server: String,
    pub per_1000_requests_ms: Option<f64>,
    pub per_new_connection_ms: Option<f64>,
}

/// A table of figures.
#[derive(Clone, Debug, Default)]
pub struct Table {
    pub caption: String,
    pub header: Vec<String>,
    pub rows: Vec<Vec<String>>,
}

/// Width and height of one chart (CSS scales it down on narrow screens).
const CHART: (u32, u32) = (960, 420);

/// Colours of the servers, in order of first appearance in the report.
const PALETTE: [RGBColor; 8] = [
    RGBColor(31, 119, 180),
    RGBColor(44, 160, 44),
    RGBColor(255, 127, 14),
    RGBColor(214, 39, 40),
    RGBColor(148, 103, 189),
    RGBColor(140, 86, 75),
    RGBColor(227, 119, 194),
    RGBColor(127, 127, 127),
];

/// Grid lines: at the labels, and between them.
const GRID_BOLD: RGBColor = RGBColor(205, 205, 205);
const GRID_LIGHT: RGBColor = RGBColor(242, 242, 242);

const STYLE: &str = "
body { font-family: sans-serif; margin: 1.5em auto; max-width: 1000px; color: #222; padding: 0 1em; }
h1 { font-size: 1.5em; margin-bottom: 0.2em; }
h2 { font-size: 1.2em; border-bottom: 1px solid #ccc; padding-bottom: 0.2em; margin-top: 2em; }
h3 { font-size: 1em; margin: 1em 0 0.3em; }
p.note { color: #555; margin: 0.3em 0; }
p.error { color: #b00; }
figure.chart { margin: 0.5em 0 1em; }
figure.chart svg { max-width: 100%; height: auto; display: block; }
figcaption { font-size: 0.95em; font-weight: bold; color: #333; margin: 0.6em 0 0.2em; }
table { border-collapse: collapse; font-size: 0.85em; margin: 0.4em 0 0.8em; }
caption { text-align: left; font-weight: bold; padding: 0.2em 0; }
th, td { border: 1px solid #ccc; padding: 0.15em 0.5em; }
td.n { text-align: right; font-variant-numeric: tabular-nums; }
th { background: #f2f2f2; text-align: left; }
details summary { cursor: pointer; color: #345; font-size: 0.9em; }
pre { background: #f6f6f6; padding: 0.5em; white-space: pre-wrap; word-break: break-all; }
";

/// The report as one HTML document.
pub fn write_html(input: &ReportInput) -> String {
    let colors = Colors::of(input);
    let mut h = String::new();
    h.push_str("<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n");
    // Nothing but this file: no script, no request to anywhere.
    h.push_str(
        "<meta http-equiv=\"Content-Security-Policy\" content=\"default-src 'none'; \
         style-src 'unsafe-inline'\">\n",
    );
    h.push_str("<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\n");
    let _ = writeln!(h, "<title>{}</title>", esc(&input.title));
    let _ = writeln!(h, "<style>{STYLE}</style>\n</head>\n<body>");
    let _ = writeln!(h, "<h1>{}</h1>", esc(&input.title));
    for n in &input.notes {
        let _ = writeln!(h, "<p class=\"note\">{}</p>", esc(n));
    }

    if !input.cpu.is_empty() {
        h.push_str("<section id=\"cpu\">\n<h2>Server CPU</h2>\n");
        if !input.cpu_note.is_empty() {
            let _ = writeln!(h, "<p class=\"note\">{}</p>", esc(&input.cpu_note));
        }
        h.push_str("<figure class=\"chart\">\n");
        h.push_str("<figcaption>Server CPU time (user + system) per 1000 requests and per new connection; lower is better</figcaption>\n");
        svg_or_error(&mut h, cpu_chart(&input.cpu, &colors));
        let mut t = Table {
            caption: "Server CPU".into(),
            header: vec![
                "server".into(),
                "CPU ms per 1000 requests".into(),
                "CPU ms per new connection".into(),
            ],
            rows: Vec::new(),
        };
        for b in &input.cpu {
            t.rows.push(vec![
                b.server.clone(),
                opt(b.per_1000_requests_ms, 3),
                opt(b.per_new_connection_ms, 4),
            ]);
        }
        table(&mut h, &t);
        h.push_str("</figure>\n</section>\n");
    }
    for (k, s) in input.sections.iter().enumerate() {
        section(&mut h, k, s, &colors);
    }
    if !input.tables.is_empty() {
        h.push_str("<section id=\"figures\">\n<h2>Figures</h2>\n");
        for t in &input.tables {
            table(&mut h, t);
        }
        h.push_str("</section>\n");
    }

    h.push_str("<section id=\"run\">\n<h2>The run</h2>\n<h3>Command line</h3>\n");
    let _ = writeln!(h, "<pre><code>{}</code></pre>", esc(&input.command_line));
    let pairs = |caption: &str, rows: &[(String, String)]| Table {
        caption: caption.into(),
        header: vec!["".into(), "".into()],
        rows: rows
            .iter()
            .map(|(k, v)| vec![k.clone(), v.clone()])
            .collect(),
    };
    table(&mut h, &pairs("Configuration", &input.config));
    table(&mut h, &pairs("Machine and versions", &input.machine));
    h.push_str("</section>\n</body>\n</html>\n");
    h
}

/// The colour of each server name, in order of first appearance.
struct Colors(Vec<String>);

impl Colors {
    fn of(input: &ReportInput) -> Colors {
        let mut names: Vec<String> = Vec::new();
        let all = input
            .sections
            .iter()
            .flat_map(|s| s.series.iter().map(|x| &x.name))
            .chain(input.cpu.iter().map(|b| &b.server));
        for n in all {
            if !names.contains(n) {
                names.push(n.clone());
            }
        }
        Colors(names)
    }

    fn get(&self, name: &str) -> RGBColor {
        let i = self.0.iter().position(|n| n == name).unwrap_or(0);
        PALETTE[i % PALETTE.len()]
    }
}

fn section(h: &mut String, k: usize, s: &Section, colors: &Colors) {
    let _ = writeln!(h, "<section id=\"s{k}\">\n<h2>{}</h2>", esc(&s.title));
    if !s.note.is_empty() {
        let _ = writeln!(h, "<p class=\"note\">{}</p>", esc(&s.note));
    }
    // Summary figures first: what a reader looks for.
    let mut summary = Table {
        caption: format!("{}: summary", s.title),
        header: [
            "server",
            "requests",
            "errors",
            "req/s",
            "p50",
            "p90",
            "p99",
            "p99.9",
            "max",
            "mean",
            "connections",
            "resumed",
        ]
        .map(String::from)
        .to_vec(),
        rows: Vec::new(),
    };
    for x in &s.series {
        let m = &x.summary;
        let l = &m.latency_us;
        summary.rows.push(vec![
            x.name.clone(),
            m.requests.to_string(),
            m.errors.to_string(),
            format!("{:.0}", m.requests_per_s),
            fmt_us(l.p50),
            fmt_us(l.p90),
            fmt_us(l.p99),
            fmt_us(l.p999),
            fmt_us(l.max),
            fmt_us(l.mean.round() as u64),
            m.connections.to_string(),
            m.resumed_connections.to_string(),
        ]);
    }
    table(h, &summary);

    h.push_str("<figure class=\"chart\">\n");
    h.push_str(
        "<figcaption>Latency by percentile (HDR histogram; x: 1/(1-q) on a log scale)</figcaption>\n",
    );
    svg_or_error(h, latency_chart(&s.series, colors));
    h.push_str("<details><summary>Latency by percentile, as a table</summary>\n");
    let quantiles: Vec<f64> = s
        .series
        .iter()
        .max_by_key(|x| x.curve.len())
        .map(|x| x.curve.iter().map(|p| p.quantile).collect())
        .unwrap_or_default();
    let mut t = Table {
        caption: format!("{}: latency (µs) by percentile", s.title),
        header: std::iter::once("percentile".to_string())
            .chain(s.series.iter().map(|x| x.name.clone()))
            .collect(),
        rows: Vec::new(),
    };
    for (i, q) in quantiles.iter().enumerate() {
        let mut row = vec![format!("{:.4}%", q * 100.0)];
        for x in &s.series {
            row.push(
                x.curve
                    .get(i)
                    .map(|p| p.latency_us.to_string())
                    .unwrap_or_default(),
            );
        }
        t.rows.push(row);
    }
    table(h, &t);
    h.push_str("</details>\n</figure>\n");

    h.push_str("<figure class=\"chart\">\n");
    h.push_str("<figcaption>Requests (solid, left axis) and errors (dashed, right axis) per second of the run</figcaption>\n");
    svg_or_error(h, throughput_chart(&s.series, colors));
    h.push_str("<details><summary>Requests and errors per second, as a table</summary>\n");
    let seconds = s
        .series
        .iter()
        .map(|x| x.per_second.len())
        .max()
        .unwrap_or(0);
    let mut t = Table {
        caption: format!("{}: requests and errors in each second", s.title),
        header: std::iter::once("second".to_string())
            .chain(
                s.series
                    .iter()
                    .flat_map(|x| [format!("{} requests", x.name), format!("{} errors", x.name)]),
            )
            .collect(),
        rows: Vec::new(),
    };
    for i in 0..seconds {
        let mut row = vec![i.to_string()];
        for x in &s.series {
            let b = x.per_second.get(i).copied().unwrap_or_default();
            row.push(b.requests.to_string());
            row.push(b.errors.to_string());
        }
        t.rows.push(row);
    }
    table(h, &t);
    h.push_str("</details>\n</figure>\n</section>\n");
}

fn svg_or_error(h: &mut String, svg: Result<String, String>) {
    match svg {
        Ok(svg) => h.push_str(&svg),
        Err(e) => {
            let _ = writeln!(h, "<p class=\"error\">chart not drawn: {}</p>", esc(&e));
        }
    }
}

fn table(h: &mut String, t: &Table) {
    h.push_str("<table>\n");
    if !t.caption.is_empty() {
        let _ = writeln!(h, "<caption>{}</caption>", esc(&t.caption));
    }
    if t.header.iter().any(|c| !c.is_empty()) {
        h.push_str("<thead><tr>");
        for c in &t.header {
            let _ = write!(h, "<th>{}</th>", esc(c));
        }
        h.push_str("</tr></thead>\n");
    }
    h.push_str("<tbody>\n");
    // Name/value lists (no header) read as text; figures align on the right.
    let figures = t.header.iter().any(|c| !c.is_empty());
    for row in &t.rows {
        h.push_str("<tr>");
        for (i, c) in row.iter().enumerate() {
            if figures && i > 0 && looks_numeric(c) {
                let _ = write!(h, "<td class=\"n\">{}</td>", esc(c));
            } else {
                let _ = write!(h, "<td>{}</td>", esc(c));
            }
        }
        h.push_str("</tr>\n");
    }
    h.push_str("</tbody>\n</table>\n");
}

fn looks_numeric(s: &str) -> bool {
    s.chars()
        .next()
        .is_some_and(|c| c.is_ascii_digit() || c == '-')
        && s.chars().all(|c| {
            c.is_ascii_digit() || matches!(c, '.' | '-' | '%' | 'µ' | 'm' | 's' | 'x' | 'e')
        })
}

/// HTML text and attribute escaping.
pub fn esc(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

fn opt(v: Option<f64>, decimals: usize) -> String {
    v.map(|v| format!("{v:.decimals$}"))
        .unwrap_or_else(|| "-".into())
}

fn draw_err<E: std::fmt::Debug>(e: E) -> String {
    format!("{e:?}")
}

/// A linear f64 axis with its ticks and grid lines at given points only (plotters'
/// `with_key_points` gives the same, but its axis has no value formatter, which a mesh needs).
struct KeyAxis {
    range: std::ops::Range<f64>,
    keys: Vec<f64>,
}

impl KeyAxis {
    fn new(range: std::ops::Range<f64>, keys: Vec<f64>) -> KeyAxis {
        KeyAxis { range, keys }
    }
}

impl Ranged for KeyAxis {
    type FormatOption = DefaultFormatting;
    type ValueType = f64;

    fn map(&self, value: &f64, limit: (i32, i32)) -> i32 {
        let span = self.range.end - self.range.start;
        let t = if span > 0.0 {
            (value - self.range.start) / span
        } else {
            0.0
        };
        limit.0 + (f64::from(limit.1 - limit.0) * t).round() as i32
    }

    fn key_points<Hint: KeyPointHint>(&self, hint: Hint) -> Vec<f64> {
        match hint.weight() {
            // Ticks, labels and the bold grid lines; no light ones.
            KeyPointWeight::Bold => self.keys.clone(),
            KeyPointWeight::Any => Vec::new(),
        }
    }

    fn range(&self) -> std::ops::Range<f64> {
        self.range.clone()
    }
}

/// "50%", "90%", "99.9%" for the x axis value log10(1 / (1 - q)).
fn percent_label(decades: f64) -> String {
    let p = (1.0 - 10f64.powf(-decades)) * 100.0;
    for d in 0..4 {
        let scale = 10f64.powi(d);
        if ((p * scale).round() - p * scale).abs() < 1e-6 {
            return format!("{p:.prec$}%", prec = d as usize);
        }
    }
    format!("{p:.4}%")
}

/// Tick labels with as many decimals as the range needs.
fn number_label(v: f64, max: f64) -> String {
    if max >= 100.0 {
        format!("{v:.0}")
    } else if max >= 10.0 {
        format!("{v:.1}")
    } else if max >= 1.0 {
        format!("{v:.2}")
    } else {
        format!("{v:.3}")
    }
}

/// Latency against percentile, one line per server.
fn latency_chart(series: &[ServerSeries], colors: &Colors) -> Result<String, String> {
    let x_min = 2f64.log10();
    let x_max = 4.0;
    let x = |q: f64| (1.0 / (1.0 - q).max(1e-9)).log10();
    let max_us = series
        .iter()
        .flat_map(|s| s.curve.iter().map(|p| p.latency_us))
        .max()
        .unwrap_or(0);
    // Milliseconds when the slowest point is 1 ms or more, else microseconds.
    let (unit, div) = if max_us >= 1_000 {
        ("ms", 1_000.0)
    } else {
        ("µs", 1.0)
    };
    let y_max = (max_us as f64 / div * 1.1).max(if div > 1.0 { 0.01 } else { 10.0 });
    let mut buf = String::new();
    {
        let root = SVGBackend::with_string(&mut buf, CHART).into_drawing_area();
        root.fill(&WHITE).map_err(draw_err)?;
        let mut chart = ChartBuilder::on(&root)
            .margin(16)
            .margin_right(36)
            .x_label_area_size(44)
            .y_label_area_size(70)
            .build_cartesian_2d(
                KeyAxis::new(x_min..x_max, vec![x_min, 1.0, 2.0, 3.0, 4.0]),
                0f64..y_max,
            )
            .map_err(draw_err)?;
        chart
            .configure_mesh()
            .x_desc("percentile")
            .y_desc(format!("latency ({unit})"))
            .x_label_formatter(&|v| percent_label(*v))
            .y_label_formatter(&|v| number_label(*v, y_max))
            .bold_line_style(GRID_BOLD.stroke_width(1))
            .light_line_style(GRID_LIGHT.stroke_width(1))
            .label_style(("sans-serif", 14))
            .axis_desc_style(("sans-serif", 15))
            .draw()
            .map_err(draw_err)?;
        for s in series.iter().filter(|s| !s.curve.is_empty()) {
            let color = colors.get(&s.name);
            let points: Vec<(f64, f64)> = s
                .curve
                .iter()
                .map(|p| (x(p.quantile), p.latency_us as f64 / div))
                .collect();
            chart
                .draw_series(LineSeries::new(points, color.stroke_width(2)))
                .map_err(draw_err)?
                .label(format!(
                    "{} (p99 {})",
                    s.name,
                    fmt_us(s.summary.latency_us.p99)
                ))
                .legend(move |(x, y)| {
                    PathElement::new(vec![(x, y), (x + 20, y)], color.stroke_width(2))
                });
        }
        if series.iter().any(|s| !s.curve.is_empty()) {
            chart
                .configure_series_labels()
                .position(SeriesLabelPosition::UpperLeft)
                .label_font(("sans-serif", 14))
                .background_style(WHITE.mix(0.85))
                .border_style(BLACK.mix(0.4))
                .draw()
                .map_err(draw_err)?;
        } else {
            no_data(&root)?;
        }
        root.present().map_err(draw_err)?;
    }
    Ok(buf)
}

/// "no data" in the middle of an area.
fn no_data<DB: DrawingBackend>(
    area: &DrawingArea<DB, plotters::coord::Shift>,
) -> Result<(), String> {
    let (w, h) = area.dim_in_pixel();
    area.draw(&Text::new(
        "no data",
        (w as i32 / 2 - 30, h as i32 / 2),
        ("sans-serif", 18).into_font().color(&BLACK.mix(0.6)),
    ))
    .map_err(draw_err)
}

/// One second of a series: the middle of its covered part (x), requests/s, errors/s.
type Rate = (f64, f64, f64);

/// Which figure of a `CpuBar` a panel shows.
type CpuFigure = fn(&CpuBar) -> Option<f64>;

/// Requests and errors of second `i`, as rates: the last second of a run is partial.
fn rates(s: &ServerSeries) -> Vec<Rate> {
    let elapsed = s.summary.elapsed_s;
    s.per_second
        .iter()
        .enumerate()
        .filter_map(|(i, b)| {
            let covered = if elapsed > 0.0 {
                (elapsed - i as f64).clamp(0.0, 1.0)
            } else {
                1.0
            };
            // A sliver of a second (the in-flight requests after the deadline) says nothing
            // about a rate.
            (covered >= 0.2).then(|| {
                (
                    i as f64 + covered / 2.0,
                    b.requests as f64 / covered,
                    b.errors as f64 / covered,
                )
            })
        })
        .collect()
}

/// Requests per second (left axis, solid) and errors per second (right axis, dashed).
fn throughput_chart(series: &[ServerSeries], colors: &Colors) -> Result<String, String> {
    let all: Vec<(String, Vec<Rate>)> = series.iter().map(|s| (s.name.clone(), rates(s))).collect();
    // The run's length (its last tenth of a second, the requests in flight at the deadline,
    // is not drawn: see `rates`).
    let x_max = (series
        .iter()
        .map(|s| s.summary.elapsed_s)
        .fold(0.0f64, f64::max)
        - 0.1)
        .ceil()
        .max(1.0);
    let step = [
        1.0, 2.0, 5.0, 10.0, 15.0, 30.0, 60.0, 120.0, 300.0, 600.0, 1800.0, 3600.0,
    ]
    .into_iter()
    .find(|step| x_max / step <= 12.0)
    .unwrap_or(7200.0);
    let ticks: Vec<f64> = (0..=(x_max / step) as usize)
        .map(|i| i as f64 * step)
        .collect();
    let req_max = all
        .iter()
        .flat_map(|(_, r)| r.iter().map(|p| p.1))
        .fold(0.0f64, f64::max);
    let err_max = all
        .iter()
        .flat_map(|(_, r)| r.iter().map(|p| p.2))
        .fold(0.0f64, f64::max);
    let y_max = (req_max * 1.15).max(10.0);
    let e_max = (err_max * 1.15).max(10.0);
    let mut buf = String::new();
    {
        let root = SVGBackend::with_string(&mut buf, CHART).into_drawing_area();
        root.fill(&WHITE).map_err(draw_err)?;
        let mut chart = ChartBuilder::on(&root)
            .margin(16)
            .x_label_area_size(44)
            .y_label_area_size(80)
            .right_y_label_area_size(70)
            .build_cartesian_2d(KeyAxis::new(0f64..x_max, ticks), 0f64..y_max)
            .map_err(draw_err)?
            .set_secondary_coord(0f64..x_max, 0f64..e_max);
        chart
            .configure_mesh()
            .x_desc("seconds since the start")
            .y_desc("requests/s")
            .y_label_formatter(&|v| number_label(*v, y_max))
            .x_label_formatter(&|v| format!("{v:.0}"))
            .bold_line_style(GRID_BOLD.stroke_width(1))
            .light_line_style(GRID_LIGHT.stroke_width(1))
            .label_style(("sans-serif", 14))
            .axis_desc_style(("sans-serif", 15))
            .draw()
            .map_err(draw_err)?;
        chart
            .configure_secondary_axes()
            .y_desc("errors/s")
            .y_label_formatter(&|v| number_label(*v, e_max))
            .label_style(("sans-serif", 14))
            .axis_desc_style(("sans-serif", 15))
            .draw()
            .map_err(draw_err)?;
        for (name, r) in all.iter().filter(|(_, r)| !r.is_empty()) {
            let color = colors.get(name);
            chart
                .draw_series(LineSeries::new(
                    r.iter().map(|p| (p.0, p.1)),
                    color.stroke_width(2),
                ))
                .map_err(draw_err)?
                .label(format!("{name} requests/s"))
                .legend(move |(x, y)| {
                    PathElement::new(vec![(x, y), (x + 20, y)], color.stroke_width(2))
                });
            // A short run has a few points: mark them (one point alone draws no line).
            if r.len() <= 30 {
                chart
                    .draw_series(r.iter().map(|p| Circle::new((p.0, p.1), 3, color.filled())))
                    .map_err(draw_err)?;
            }
            chart
                .draw_secondary_series(DashedLineSeries::new(
                    r.iter().map(|p| (p.0, p.2)),
                    6,
                    4,
                    color.stroke_width(1),
                ))
                .map_err(draw_err)?
                .label(format!("{name} errors/s"))
                .legend(move |(x, y)| {
                    PathElement::new(vec![(x, y), (x + 8, y)], color.stroke_width(1))
                });
        }
        if all.iter().any(|(_, r)| !r.is_empty()) {
            chart
                .configure_series_labels()
                .position(SeriesLabelPosition::LowerRight)
                .label_font(("sans-serif", 13))
                .background_style(WHITE.mix(0.85))
                .border_style(BLACK.mix(0.4))
                .draw()
                .map_err(draw_err)?;
        } else {
            no_data(&root)?;
        }
        root.present().map_err(draw_err)?;
    }
    Ok(buf)
}

/// Two bar charts side by side: CPU ms per 1000 requests, CPU ms per new connection.
fn cpu_chart(bars: &[CpuBar], colors: &Colors) -> Result<String, String> {
    let mut buf = String::new();
    {
        let root = SVGBackend::with_string(&mut buf, (CHART.0, 360)).into_drawing_area();
        root.fill(&WHITE).map_err(draw_err)?;
        let panels = root.split_evenly((1, 2));
        let pick: [(&str, CpuFigure); 2] = [
            ("CPU ms per 1000 requests", |b| b.per_1000_requests_ms),
            ("CPU ms per new connection", |b| b.per_new_connection_ms),
        ];
        for (area, (title, value)) in panels.iter().zip(pick) {
            bar_panel(area, title, bars, value, colors)?;
        }
        root.present().map_err(draw_err)?;
    }
    Ok(buf)
}

fn bar_panel<DB: DrawingBackend>(
    area: &DrawingArea<DB, plotters::coord::Shift>,
    title: &str,
    bars: &[CpuBar],
    value: CpuFigure,
    colors: &Colors,
) -> Result<(), String> {
    let n = bars.len().max(1);
    let v_max = bars.iter().filter_map(value).fold(0.0f64, f64::max);
    let y_max = if v_max > 0.0 { v_max * 1.2 } else { 1.0 };
    let names: Vec<String> = bars.iter().map(|b| b.server.clone()).collect();
    let centres: Vec<f64> = (0..n).map(|i| i as f64 + 0.5).collect();
    let mut chart = ChartBuilder::on(area)
        .margin(16)
        .caption(title, ("sans-serif", 16))
        .x_label_area_size(36)
        .y_label_area_size(64)
        .build_cartesian_2d(KeyAxis::new(0f64..n as f64, centres), 0f64..y_max)
        .map_err(draw_err)?;
    chart
        .configure_mesh()
        .disable_x_mesh()
        .x_label_formatter(&|x| {
            names
                .get(x.floor().max(0.0) as usize)
                .cloned()
                .unwrap_or_default()
        })
        .y_label_formatter(&|v| number_label(*v, y_max))
        .bold_line_style(GRID_BOLD.stroke_width(1))
        .light_line_style(GRID_LIGHT.stroke_width(1))
        .y_desc("ms")
        .label_style(("sans-serif", 14))
        .axis_desc_style(("sans-serif", 15))
        .draw()
        .map_err(draw_err)?;
    for (i, b) in bars.iter().enumerate() {
        let x0 = i as f64;
        match value(b) {
            Some(v) => {
                let color = colors.get(&b.server);
                chart
                    .draw_series(std::iter::once(Rectangle::new(
                        [(x0 + 0.2, 0.0), (x0 + 0.8, v)],
                        color.filled(),
                    )))
                    .map_err(draw_err)?;
                chart
                    .draw_series(std::iter::once(Text::new(
                        number_label(v, v_max.max(v)),
                        (x0 + 0.5, v + y_max * 0.02),
                        ("sans-serif", 14).into_font().color(&BLACK).pos(
                            plotters::style::text_anchor::Pos::new(
                                plotters::style::text_anchor::HPos::Center,
                                plotters::style::text_anchor::VPos::Bottom,
                            ),
                        ),
                    )))
                    .map_err(draw_err)?;
            }
            None => {
                chart
                    .draw_series(std::iter::once(Text::new(
                        "-".to_string(),
                        (x0 + 0.5, y_max * 0.02),
                        ("sans-serif", 14).into_font().color(&BLACK.mix(0.6)).pos(
                            plotters::style::text_anchor::Pos::new(
                                plotters::style::text_anchor::HPos::Center,
                                plotters::style::text_anchor::VPos::Bottom,
                            ),
                        ),
                    )))
                    .map_err(draw_err)?;
            }
        }
    }
    Ok(())
}

/// This process's command line, each argument quoted for a POSIX shell where it needs it.
pub fn command_line() -> String {
    std::env::args_os()
        .map(|a| shell_quote(&a.to_string_lossy()))
        .collect::<Vec<_>>()
        .join(" ")
}

fn shell_quote(s: &str) -> String {
    let plain = !s.is_empty()
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_./:=,@%+".contains(c));
    if plain {
        s.to_string()
    } else {
        format!("'{}'", s.replace('\'', "'\\''"))
    }
}

/// What the report says about this machine and these programs.
pub fn machine() -> Vec<(String, String)> {
    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|t| {
            t.lines()
                .find_map(|l| l.strip_prefix("model name"))
                .map(|v| v.trim_start_matches([' ', '\t', ':']).to_string())
        })
        .unwrap_or_default();
    let memory = std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|t| {
            t.lines()
                .find_map(|l| l.strip_prefix("MemTotal:"))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        })
        .map(|kib| format!("{:.1} GiB", kib as f64 / 1024.0 / 1024.0))
        .unwrap_or_default();
    let os = std::fs::read_to_string("/etc/os-release")
        .ok()
        .and_then(|t| {
            t.lines()
                .find_map(|l| l.strip_prefix("PRETTY_NAME="))
                .map(|v| v.trim_matches('"').to_string())
        })
        .unwrap_or_default();
    let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease")
        .unwrap_or_default()
        .trim()
        .to_string();
    vec![
        ("CPU".into(), cpu),
        (
            "CPUs".into(),
            std::thread::available_parallelism()
                .map_or(1, |n| n.get())
                .to_string(),
        ),
        ("memory".into(), memory),
        ("OS".into(), os),
        ("kernel".into(), kernel),
        (
            "loadtest and edgegw".into(),
            env!("CARGO_PKG_VERSION").to_string(),
        ),
        ("report written".into(), utc_now()),
    ]
}

/// The time now, "YYYY-MM-DD HH:MM:SS UTC".
fn utc_now() -> String {
    let secs = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let (days, rest) = (secs / 86_400, secs % 86_400);
    let (y, m, d) = civil_from_days(days as i64);
    format!(
        "{y:04}-{m:02}-{d:02} {:02}:{:02}:{:02} UTC",
        rest / 3600,
        rest % 3600 / 60,
        rest % 60
    )
}

/// Days since 1970-01-01 to a (year, month, day) of the proleptic Gregorian calendar
/// (Howard Hinnant's algorithm).
fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    (if m <= 2 { y + 1 } else { y }, m, d)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::stats::{ErrorKind, Recorder};
    use std::time::{Duration, Instant};

    fn series(name: &str, base_us: u64, seconds: u64) -> ServerSeries {
        let start = Instant::now();
        let mut r = Recorder::with_start(start);
        for s in 0..seconds {
            for i in 0..(100 + s * 10) {
                r.success_at(
                    Duration::from_micros(base_us + i * 3),
                    start + Duration::from_millis(s * 1000 + i),
                );
            }
            r.error_at(ErrorKind::Io, start + Duration::from_secs(s));
        }
        ServerSeries {
            name: name.into(),
            summary: r.summary(Duration::from_secs(seconds)),
            curve: r.percentile_curve(),
            per_second: r.per_second().to_vec(),
        }
    }

    fn compare_like() -> ReportInput {
        let servers = [("nginx", 900), ("haproxy", 700), ("edgegw", 400)];
        ReportInput {
            title: "edgegw vs NGINX vs HAProxy <&>".into(),
            command_line: command_line(),
            machine: machine(),
            config: vec![("connections".into(), "64".into())],
            sections: vec![
                Section {
                    title: "keepalive".into(),
                    note: "closed loop".into(),
                    series: servers.iter().map(|(n, b)| series(n, *b, 3)).collect(),
                },
                Section {
                    title: "newconn".into(),
                    note: String::new(),
                    series: servers.iter().map(|(n, b)| series(n, *b * 3, 2)).collect(),
                },
            ],
            cpu: vec![
                CpuBar {
                    server: "nginx".into(),
                    per_1000_requests_ms: Some(120.0),
                    per_new_connection_ms: Some(0.9),
                },
                CpuBar {
                    server: "haproxy".into(),
                    per_1000_requests_ms: Some(100.0),
                    per_new_connection_ms: None,
                },
                CpuBar {
                    server: "edgegw".into(),
                    per_1000_requests_ms: Some(60.0),
                    per_new_connection_ms: Some(0.5),
                },
            ],
            cpu_note: "own client".into(),
            tables: vec![Table {
                caption: "figures".into(),
                header: vec!["figure".into(), "edgegw".into()],
                rows: vec![vec!["keep-alive requests/s".into(), "12345".into()]],
            }],
            notes: vec!["a note".into()],
        }
    }

    #[test]
    fn a_compare_report_has_every_chart_and_table() {
        let input = compare_like();
        let html = write_html(&input);
        assert!(html.starts_with("<!DOCTYPE html>"));
        assert!(html.trim_end().ends_with("</html>"));
        // Two sections of two charts, and the CPU chart.
        assert_eq!(html.matches("<svg").count(), 5);
        assert_eq!(html.matches("<figure class=\"chart\">").count(), 5);
        assert_eq!(html.matches("</svg>").count(), 5);
        assert!(!html.contains("chart not drawn"), "{html}");
        // Nothing from the network, no script.
        assert!(!html.contains("<script"));
        assert!(!html.contains("src="));
        assert!(!html.contains("href="));
        // The title is escaped.
        assert!(html.contains("<h1>edgegw vs NGINX vs HAProxy &lt;&amp;&gt;</h1>"));
        // Figures as tables: the request counts, the CPU bars, the extra table.
        for s in &input.sections {
            for x in &s.series {
                let cell = format!("<td class=\"n\">{}</td>", x.summary.requests);
                assert!(html.contains(&cell), "{} {}: {cell}", s.title, x.name);
            }
        }
        assert!(html.contains("<td class=\"n\">120.000</td>"));
        assert!(html.contains("<td class=\"n\">0.5000</td>"));
        assert!(html.contains("<td>keep-alive requests/s</td><td class=\"n\">12345</td>"));
        // The charts' text: axis names, legends, percentile ticks.
        for text in [
            "percentile",
            "requests/s",
            "errors/s",
            "edgegw (p99",
            "99.99%",
            "99.9%",
            "50%",
            "CPU ms per new connection",
        ] {
            assert!(html.contains(text), "no {text:?}");
        }
        // Each server has its own colour, the same in every chart.
        let nginx = "stroke=\"#1F77B4\"";
        assert!(
            html.matches(nginx).count() >= 4,
            "nginx's colour in each line chart"
        );
    }

    #[test]
    fn a_run_report_has_no_cpu_section() {
        let mut input = compare_like();
        input.cpu.clear();
        input.sections.truncate(1);
        input.sections[0].series.truncate(1);
        let html = write_html(&input);
        assert_eq!(html.matches("<svg").count(), 2);
        assert!(!html.contains("id=\"cpu\""));
    }

    #[test]
    fn empty_series_still_make_a_page() {
        let mut input = compare_like();
        let r = Recorder::new();
        input.sections[0].series = vec![ServerSeries {
            name: "edgegw".into(),
            summary: r.summary(Duration::ZERO),
            curve: r.percentile_curve(),
            per_second: Vec::new(),
        }];
        input.cpu = vec![CpuBar {
            server: "edgegw".into(),
            ..Default::default()
        }];
        let html = write_html(&input);
        assert!(!html.contains("chart not drawn"));
        assert!(html.contains("no data"));
    }

    #[test]
    fn the_last_partial_second_is_a_rate() {
        let mut s = series("x", 100, 1);
        s.summary.elapsed_s = 2.5;
        s.per_second = vec![
            SecondBucket {
                requests: 100,
                errors: 0,
            },
            SecondBucket {
                requests: 100,
                errors: 2,
            },
            SecondBucket {
                requests: 50,
                errors: 1,
            },
        ];
        let r = rates(&s);
        assert_eq!(
            r,
            vec![(0.5, 100.0, 0.0), (1.5, 100.0, 2.0), (2.25, 100.0, 2.0)]
        );
        // A sliver after the deadline is left out.
        s.summary.elapsed_s = 2.05;
        assert_eq!(rates(&s).len(), 2);
    }

    #[test]
    fn labels() {
        assert_eq!(percent_label(2f64.log10()), "50%");
        assert_eq!(percent_label(1.0), "90%");
        assert_eq!(percent_label(2.0), "99%");
        assert_eq!(percent_label(3.0), "99.9%");
        assert_eq!(percent_label(4.0), "99.99%");
        assert_eq!(shell_quote("--duration"), "--duration");
        assert_eq!(shell_quote("a b"), "'a b'");
        assert_eq!(shell_quote("it's"), "'it'\\''s'");
        assert_eq!(civil_from_days(0), (1970, 1, 1));
        assert_eq!(civil_from_days(19_723), (2024, 1, 1));
        assert_eq!(civil_from_days(19_782), (2024, 2, 29));
        assert_eq!(
            esc("<a href='x'>&\""),
            "&lt;a href=&#39;x&#39;&gt;&amp;&quot;"
        );
    }
}
