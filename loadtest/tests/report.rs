//! The HTML report (`--html`) of a real `loadtest run` and a real `loadtest compare` (edgegw,
//! NGINX and HAProxy against the test backend, a second or two per run): the file parses as
//! HTML with every element closed in order (Python's `html.parser`), holds one `<svg>` per
//! chart, the run's figures, nothing from the network; and Debian's Chromium renders it to a
//! screenshot that is not blank. Copies of the reports and screenshots are left in
//! `target/loadtest-report/`.
//!
//! Needs python3, `chromium` (`apt-get install -y chromium`), nginx-light and haproxy; `./dev`
//! installs them. Run: `cargo test --release --workspace --test report`.

// Test code: helpers outside #[test] functions fail their test by panicking, with the message.
#![allow(clippy::expect_used)]

use std::path::{Path, PathBuf};
use std::process::Command;

use loadtest::harness::{self, Backend, Kind, Pki, Server};

/// Every start tag closed by its own end tag, in order (void elements and `<x/>` aside).
const HTML_CHECK: &str = r#"
import sys
from html.parser import HTMLParser
VOID = {"area", "base", "br", "col", "embed", "hr", "img", "input", "link", "meta",
        "source", "track", "wbr"}
class Check(HTMLParser):
    def __init__(self):
        super().__init__(convert_charrefs=True)
        self.stack, self.errors, self.elements = [], [], 0
    def handle_starttag(self, tag, attrs):
        self.elements += 1
        if tag not in VOID:
            self.stack.append((tag, self.getpos()))
    def handle_startendtag(self, tag, attrs):
        self.elements += 1
    def handle_endtag(self, tag):
        if tag in VOID:
            self.errors.append(f"end tag of the void element {tag} at {self.getpos()}")
        elif not self.stack:
            self.errors.append(f"</{tag}> at {self.getpos()} with nothing open")
        else:
            top, pos = self.stack.pop()
            if top != tag:
                self.errors.append(f"</{tag}> at {self.getpos()} closes <{top}> of {pos}")
text = open(sys.argv[1], encoding="utf-8").read()
c = Check()
c.feed(text)
c.close()
if c.stack:
    c.errors.append(f"never closed: {c.stack[-5:]}")
if c.elements < 50:
    c.errors.append(f"only {c.elements} elements")
if c.errors:
    print("\n".join(c.errors[:20]))
    sys.exit(1)
print(f"html ok: {c.elements} elements")
"#;

/// Decodes an 8-bit RGB/RGBA PNG (zlib and the five row filters) and prints the number of
/// distinct colours and the share of pixels that are not the most common one.
const PNG_CHECK: &str = r#"
import struct, sys, zlib
from collections import Counter
data = open(sys.argv[1], "rb").read()
assert data[:8] == b"\x89PNG\r\n\x1a\n", "not a PNG"
pos, idat = 8, b""
while pos < len(data):
    n, kind = struct.unpack(">I4s", data[pos:pos + 8])
    body = data[pos + 8:pos + 8 + n]
    if kind == b"IHDR":
        w, h, depth, ctype, _, _, interlace = struct.unpack(">IIBBBBB", body)
    elif kind == b"IDAT":
        idat += body
    pos += 12 + n
assert depth == 8 and ctype in (2, 6) and interlace == 0, (depth, ctype, interlace)
bpp = 3 if ctype == 2 else 4
raw = zlib.decompress(idat)
stride = w * bpp
prev = bytearray(stride)
colours = Counter()
for y in range(h):
    f = raw[y * (stride + 1)]
    line = bytearray(raw[y * (stride + 1) + 1:(y + 1) * (stride + 1)])
    if f == 1:
        for i in range(bpp, stride):
            line[i] = (line[i] + line[i - bpp]) & 255
    elif f == 2:
        for i in range(stride):
            line[i] = (line[i] + prev[i]) & 255
    elif f == 3:
        for i in range(stride):
            left = line[i - bpp] if i >= bpp else 0
            line[i] = (line[i] + ((left + prev[i]) >> 1)) & 255
    elif f == 4:
        for i in range(stride):
            a = line[i - bpp] if i >= bpp else 0
            b = prev[i]
            c = prev[i - bpp] if i >= bpp else 0
            p = a + b - c
            pa, pb, pc = abs(p - a), abs(p - b), abs(p - c)
            pred = a if pa <= pb and pa <= pc else (b if pb <= pc else c)
            line[i] = (line[i] + pred) & 255
    colours.update(bytes(line[i:i + 3]) for i in range(0, stride, bpp))
    prev = line
common = colours.most_common(1)[0][1]
print(f"{w}x{h} colours={len(colours)} other={1 - common / (w * h):.4f}")
"#;

/// The directory where the reports and screenshots are kept for a look.
fn keep_dir() -> PathBuf {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/loadtest-report");
    std::fs::create_dir_all(&dir).expect("target/loadtest-report");
    dir
}

fn python(script: &str, file: &Path) -> String {
    let out = Command::new("python3")
        .arg("-c")
        .arg(script)
        .arg(file)
        .output()
        .expect("python3 (./dev installs it)");
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(
        out.status.success(),
        "{}: {text}\n{}",
        file.display(),
        String::from_utf8_lossy(&out.stderr)
    );
    text
}

/// Checks the document's structure and self-containment; returns it.
fn check_html(path: &Path, charts: usize) -> String {
    let html = std::fs::read_to_string(path).expect("html written");
    let verdict = python(HTML_CHECK, path);
    assert!(verdict.starts_with("html ok"), "{verdict}");
    assert_eq!(html.matches("<svg").count(), charts, "one <svg> per chart");
    assert_eq!(
        html.matches("<figure class=\"chart\">").count(),
        charts,
        "one chart figure per chart"
    );
    assert!(!html.contains("chart not drawn"), "a chart failed");
    for banned in ["<script", "src=", "href=", "url(", "@import"] {
        assert!(
            !html.contains(banned),
            "{banned} in a self-contained report"
        );
    }
    html
}

/// Chromium renders the report; the screenshot has text and lines on it.
fn screenshot(html: &Path, png: &Path) {
    let chromium = harness::find_program("chromium").unwrap_or_else(|| {
        panic!("Debian's chromium is needed to render the report: apt-get install -y chromium")
    });
    let profile = testkit::temp_dir("loadtest-report-chromium").expect("temp dir");
    let _ = std::fs::remove_file(png);
    let out = Command::new("timeout")
        .arg("120")
        .arg(chromium)
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--no-first-run",
            "--hide-scrollbars",
            "--window-size=1280,2000",
        ])
        .arg(format!("--user-data-dir={}", profile.path().display()))
        .arg(format!("--screenshot={}", png.display()))
        .arg(format!("file://{}", html.display()))
        .output()
        .expect("run chromium");
    assert!(
        png.exists(),
        "chromium wrote no screenshot ({}):\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    let verdict = python(PNG_CHECK, png);
    let field = |name: &str| -> f64 {
        verdict
            .split_whitespace()
            .find_map(|w| w.strip_prefix(name))
            .and_then(|v| v.parse().ok())
            .unwrap_or_else(|| panic!("no {name} in {verdict}"))
    };
    assert!(verdict.starts_with("1280x2000"), "{verdict}");
    // Text, lines in several colours, tables: far more than a background and one colour.
    assert!(field("colours=") > 20.0, "a blank screenshot? {verdict}");
    assert!(
        field("other=") > 0.02,
        "a nearly blank screenshot? {verdict}"
    );
}

fn loadtest(args: &[&str]) {
    let out = Command::new(env!("CARGO_BIN_EXE_loadtest"))
        .args(args)
        .output()
        .expect("run loadtest");
    assert!(
        out.status.success(),
        "loadtest {args:?} failed ({}):\n{}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    // stderr is not a terminal here: no progress line.
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        !stderr.contains('\r'),
        "progress drawn off a terminal:\n{stderr}"
    );
}

#[test]
fn a_run_writes_a_report_chromium_renders() {
    if let Err(e) = harness::bin_dir() {
        panic!("{e}");
    }
    let pki = Pki::create().expect("pki");
    let backend = Backend::start(&pki, 1).expect("backend");
    let gw = Server::start(Kind::Edgegw, &pki, backend.port, 1).expect("edgegw");
    let dir = pki.dir();
    let (json, html) = (dir.join("run.json"), dir.join("run.html"));
    loadtest(&[
        "run",
        "--scenario",
        "keepalive",
        "--target",
        &gw.url("/report"),
        "--duration",
        "3s",
        "--connections",
        "4",
        "--json",
        json.to_str().expect("utf-8 path"),
        "--html",
        html.to_str().expect("utf-8 path"),
    ]);
    let v: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&json).expect("json written")).expect("json");
    let requests = v["requests"].as_u64().expect("requests");
    assert!(requests > 0, "{v}");

    // Latency curve and requests per second: two charts; no CPU section in a run.
    let text = check_html(&html, 2);
    assert!(!text.contains("id=\"cpu\""));
    // The run's figures: its request count in the summary and as the sum of its seconds.
    assert!(
        text.contains(&format!("<td class=\"n\">{requests}</td>")),
        "{requests} requests not in the report"
    );
    let seconds_sum: u64 = per_second_requests(&text).iter().sum();
    assert_eq!(seconds_sum, requests, "the seconds add up to the run");
    assert!(text.contains("keepalive"));
    assert!(text.contains("--duration 3s"), "the command line");
    for label in [
        "percentile",
        "99.99%",
        "requests/s",
        "errors/s",
        "latency (",
    ] {
        assert!(text.contains(label), "no {label:?} on the charts");
    }

    let keep = keep_dir();
    let png = keep.join("run.png");
    screenshot(&html, &png);
    std::fs::copy(&html, keep.join("run.html")).expect("copy");
}

/// The request counts of the "requests and errors in each second" table (one server).
fn per_second_requests(html: &str) -> Vec<u64> {
    let start = html
        .find("requests and errors in each second</caption>")
        .expect("the per-second table");
    let body = &html[start..];
    let body = &body[..body.find("</table>").expect("table end")];
    body.split("<tr>")
        .skip(2) // the caption and the header
        .map(|row| {
            let cells: Vec<&str> = row
                .split("<td class=\"n\">")
                .skip(1)
                .map(|c| c.split('<').next().unwrap_or(""))
                .collect();
            cells
                .first()
                .and_then(|c| c.parse().ok())
                .unwrap_or_else(|| panic!("a row of the per-second table: {row}"))
        })
        .collect()
}

#[test]
fn a_comparison_writes_a_report_with_every_server() {
    if let Err(e) = harness::bin_dir() {
        panic!("{e}");
    }
    let dir = testkit::temp_dir("loadtest-report").expect("temp dir");
    let (json, html) = (
        dir.path().join("compare.json"),
        dir.path().join("compare.html"),
    );
    loadtest(&[
        "compare",
        "--servers",
        "nginx,haproxy,edgegw",
        "--clients",
        "own",
        "--scenarios",
        "keepalive,newconn",
        "--duration",
        "1s",
        "--connections",
        "4",
        "--workers",
        "1",
        "--idle-connections",
        "0",
        "--no-open-loop",
        "--json",
        json.to_str().expect("utf-8 path"),
        "--html",
        html.to_str().expect("utf-8 path"),
    ]);
    let v: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&json).expect("json written")).expect("json");
    // keepalive and newconn for the three servers; edgegw's post-quantum newconn and resume
    // and its rotate run: five sections of two charts, and the CPU bars.
    let text = check_html(&html, 5 * 2 + 1);
    assert_eq!(text.matches("<section id=\"s").count(), 5);
    assert!(text.contains("id=\"cpu\""));
    for server in v["servers"].as_array().expect("servers") {
        let name = server["server"].as_str().expect("server name");
        for scenario in ["keepalive", "newconn"] {
            let m = &server["scenarios"][scenario];
            let requests = m["requests"].as_u64().expect("requests");
            let row = format!("<tr><td>{name}</td><td class=\"n\">{requests}</td>");
            assert!(text.contains(&row), "{name} {scenario}: no {row}");
        }
        // The CPU bars' table: per 1000 requests as in the JSON.
        let cpu = server["scenarios"]["keepalive"]["cpu_ms_per_1000_requests"]
            .as_f64()
            .expect("cpu");
        let row = format!("<tr><td>{name}</td><td class=\"n\">{cpu:.3}</td>");
        assert!(text.contains(&row), "no CPU row {row}");
        assert!(
            text.contains(&format!("{name} (p99 ")),
            "{name} in a legend"
        );
    }
    for version in ["nginx version", "HAProxy version"] {
        assert!(text.contains(version), "no {version}");
    }

    let keep = keep_dir();
    screenshot(&html, &keep.join("compare.png"));
    std::fs::copy(&html, keep.join("compare.html")).expect("copy");
}
