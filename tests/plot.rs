//! `statesync plot` and `churn --plot` on a real (short, small) churn run: the SVG drawn at the
//! end of the run, the one drawn from its `--hdr-log` directory and the one from its `--json`
//! report all carry the labelled axes, the percentile ticks and a legend entry per stage.

use std::path::Path;
use std::process::Command;

fn statesync(args: &[&str]) -> String {
    let out = Command::new(env!("CARGO_BIN_EXE_statesync"))
        .args(args)
        .output()
        .expect("run statesync");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "statesync {args:?} failed:\n{text}");
    text
}

fn svg(path: &Path) -> String {
    let s = std::fs::read_to_string(path).expect("the SVG was written");
    assert!(
        s.starts_with("<svg"),
        "not an SVG: {}",
        &s[..s.len().min(200)]
    );
    s
}

/// The text of every `<text>` element.
fn texts(svg: &str) -> Vec<String> {
    svg.split("<text")
        .skip(1)
        .filter_map(|t| {
            let body = &t[t.find('>')? + 1..];
            Some(body[..body.find("</text>")?].trim().to_owned())
        })
        .collect()
}

/// What every latency plot must show.
fn assert_latency_plot(s: &str, stages_in_legend: usize) {
    let texts = texts(s);
    for label in [
        "percentile",
        "latency (log scale)",
        "commits / s",
        "seconds into the timed run",
        "p99",
    ] {
        assert!(s.contains(label), "axis label {label:?} missing");
    }
    for tick in ["50%", "90%", "99%", "99.9%", "99.99%"] {
        assert!(
            texts.iter().any(|t| t == tick),
            "percentile tick {tick} missing"
        );
    }
    for stage in ["client_apply", "client_ack", "standby_commit"] {
        // Curve legend entries (with p50/p99) and the per-second p99 legend.
        let curve_entry = format!("{stage}: p50 ");
        assert_eq!(
            s.matches(&curve_entry).count(),
            stages_in_legend,
            "legend entries for {stage}"
        );
    }
    assert!(
        s.matches("<polyline").count() >= 3 * stages_in_legend,
        "a line per stage"
    );
}

#[test]
fn churn_plot_and_plot_of_its_logs_draw_every_stage() {
    let dir = std::env::temp_dir().join(format!("statesync-plot-test-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let (hdr, json, at_end) = (dir.join("hdr"), dir.join("run.json"), dir.join("end.svg"));
    let s = |p: &Path| p.to_str().unwrap().to_owned();
    statesync(&[
        "churn",
        "--duration",
        "1",
        "--rate",
        "20000",
        "--keys",
        "4096",
        "--channels",
        "4",
        "--workers",
        "1",
        "--hdr-log",
        &s(&hdr),
        "--json",
        &s(&json),
        "--plot",
        &s(&at_end),
    ]);
    let end = svg(&at_end);
    assert_latency_plot(&end, 1);

    // The same intervals read back from the logs draw the same picture.
    let from_logs = dir.join("logs.svg");
    statesync(&["plot", &s(&hdr), "-o", &s(&from_logs)]);
    assert_eq!(svg(&from_logs), end, "the plot of the hdr logs differs");

    // Two runs (the logs and the JSON report of the same run): every stage twice, the
    // second run dashed.
    let cmp = dir.join("cmp.svg");
    statesync(&["plot", "--compare", &s(&hdr), &s(&json), "-o", &s(&cmp)]);
    let c = svg(&cmp);
    assert_latency_plot(&c, 2);
    assert!(c.contains("hdr (solid)") && c.contains("run (dashed)"));
    assert!(c.contains("stroke-dasharray") || c.matches("<polyline").count() > 20);
    let _ = std::fs::remove_dir_all(&dir);
}
