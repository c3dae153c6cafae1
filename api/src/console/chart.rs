//! Line charts as inline SVG, rendered on the server into the page (no request, no script).
//!
//! Two kinds share one renderer (`render`): [`line_chart`] plots series over time (an x
//! axis of instants, ticks at round minutes, hours or days), [`density_chart`] plots curves
//! over a numeric x (e.g. posterior densities of conversion rates). Both have "nice" y ticks
//! (1, 2 or 5 × 10^k), labelled axes, a legend, a `<title>` and an `aria-label`, and each
//! point as a `<circle>` whose `<title>` gives its value, with the exact figure in
//! `data-value` (and `data-at`, an RFC 3339 instant, or `data-x`) on it and the series'
//! label in `data-series` on its group. Colours come from classes (`series-0` … `series-7`,
//! `band-0` … `band-7`) defined in `console.css` for light and dark mode: no inline style,
//! as the console's content security policy allows none.
//!
//! Pure: no IO, no clock. Data without a finite point renders a labelled "No data yet"
//! chart; a single point or equal values get a padded range, never a division by zero.

use std::fmt::Write as _;

use maud::{Markup, html};
use time::format_description::well_known::Rfc3339;
use time::{OffsetDateTime, UtcOffset};

/// How an axis writes its values.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// A fraction written as a percentage (0.125 → 12.5%).
    Percent,
    /// A number with as many decimals as its ticks need.
    Number,
    /// A count: whole numbers with thousands separators, ticks at whole steps.
    Integer,
}

/// A chart of series over time.
#[derive(Debug, Clone)]
pub struct Chart<'a> {
    pub title: &'a str,
    pub x_label: &'a str,
    /// With its unit, e.g. "events per minute".
    pub y_label: &'a str,
    pub y_format: Format,
    pub series: Vec<Line>,
    /// Whether the y range includes 0 (counts and rates usually should).
    pub y_zero: bool,
}

/// One series of a [`Chart`].
#[derive(Debug, Clone)]
pub struct Line {
    pub label: String,
    pub points: Vec<(OffsetDateTime, f64)>,
    /// An interval around the line (low, high), drawn as a translucent band.
    pub band: Option<Vec<(OffsetDateTime, f64, f64)>>,
}

/// A chart of curves over a numeric x, e.g. densities.
#[derive(Debug, Clone)]
pub struct DensityChart<'a> {
    pub title: &'a str,
    pub x_label: &'a str,
    pub x_format: Format,
    /// With its unit, e.g. "density (per unit of rate)".
    pub y_label: &'a str,
    pub curves: Vec<Curve>,
}

/// One curve of a [`DensityChart`]: `(x, y)` points.
#[derive(Debug, Clone)]
pub struct Curve {
    pub label: String,
    pub points: Vec<(f64, f64)>,
}

/// A chart of `c`'s series over time.
pub fn line_chart(c: &Chart<'_>) -> Markup {
    let series = c
        .series
        .iter()
        .map(|line| Series {
            label: &line.label,
            points: line
                .points
                .iter()
                .map(|&(at, y)| Point {
                    x: seconds(at),
                    y,
                    at: Some(at),
                })
                .collect(),
            band: line
                .band
                .iter()
                .flatten()
                .map(|&(at, lo, hi)| (seconds(at), lo, hi))
                .collect(),
        })
        .collect();
    render(&Plot {
        title: c.title,
        x_label: c.x_label,
        y_label: c.y_label,
        x: XAxis::Time,
        y_format: c.y_format,
        y_zero: c.y_zero,
        series,
    })
}

/// A chart of `c`'s curves over their numeric x; y starts at 0.
pub fn density_chart(c: &DensityChart<'_>) -> Markup {
    let series = c
        .curves
        .iter()
        .map(|curve| Series {
            label: &curve.label,
            points: curve
                .points
                .iter()
                .map(|&(x, y)| Point { x, y, at: None })
                .collect(),
            band: Vec::new(),
        })
        .collect();
    render(&Plot {
        title: c.title,
        x_label: c.x_label,
        y_label: c.y_label,
        x: XAxis::Value(c.x_format),
        y_format: Format::Number,
        y_zero: true,
        series,
    })
}

// --- the shared renderer ---------------------------------------------------------------

/// The drawing's size in SVG units (it scales to the page's width).
const WIDTH: f64 = 720.0;
const HEIGHT: f64 = 280.0;
/// Room for the y ticks and label, the x ticks and label.
const LEFT: f64 = 72.0;
const RIGHT: f64 = 20.0;
const TOP: f64 = 14.0;
const BOTTOM: f64 = 50.0;
/// Series colours before they repeat (`series-0` … `series-7` in `console.css`).
const COLOURS: usize = 8;
/// Plotted values are kept within this magnitude so that ranges stay finite.
const MAX_MAGNITUDE: f64 = 1e300;

/// What the x axis measures.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum XAxis {
    /// Instants, as Unix seconds.
    Time,
    /// Numbers written in this format.
    Value(Format),
}

#[derive(Debug, Clone, Copy)]
struct Point {
    x: f64,
    y: f64,
    /// The instant `x` stands for (time axes).
    at: Option<OffsetDateTime>,
}

#[derive(Debug)]
struct Series<'s> {
    label: &'s str,
    points: Vec<Point>,
    /// `(x, low, high)`.
    band: Vec<(f64, f64, f64)>,
}

#[derive(Debug)]
struct Plot<'a> {
    title: &'a str,
    x_label: &'a str,
    y_label: &'a str,
    x: XAxis,
    y_format: Format,
    y_zero: bool,
    series: Vec<Series<'a>>,
}

fn seconds(at: OffsetDateTime) -> f64 {
    at.unix_timestamp_nanos() as f64 / 1e9
}

fn finite(v: f64) -> bool {
    v.is_finite() && v.abs() <= MAX_MAGNITUDE
}

/// A linear map of `[lo, hi]` onto `[from, to]`; `hi > lo` always.
#[derive(Debug, Clone, Copy, PartialEq)]
struct Scale {
    lo: f64,
    hi: f64,
    from: f64,
    to: f64,
}

impl Scale {
    fn new((lo, hi): (f64, f64), from: f64, to: f64) -> Self {
        Self { lo, hi, from, to }
    }

    fn at(&self, v: f64) -> f64 {
        self.from + (v - self.lo) / (self.hi - self.lo) * (self.to - self.from)
    }
}

/// `[min, max]` widened when it is empty or a single value, so that `max > min`.
fn spread(min: f64, max: f64, pad_zero: f64) -> (f64, f64) {
    if max > min {
        (min, max)
    } else if min == 0.0 {
        (0.0, pad_zero)
    } else {
        let pad = min.abs() * 0.1;
        (min - pad, max + pad)
    }
}

/// The "nice" step (1, 2 or 5 × 10^k) nearest to `raw`.
fn nice_step(raw: f64) -> f64 {
    if !(raw.is_finite() && raw > 0.0) {
        return 1.0;
    }
    let power = 10f64.powf(raw.log10().floor());
    let fraction = raw / power;
    let nice = if fraction < 1.5 {
        1.0
    } else if fraction < 3.0 {
        2.0
    } else if fraction < 7.0 {
        5.0
    } else {
        10.0
    };
    nice * power
}

/// A value axis: its range, widened to whole steps, and its ticks.
#[derive(Debug, Clone, PartialEq)]
struct Ticks {
    lo: f64,
    hi: f64,
    step: f64,
    values: Vec<f64>,
}

/// About five nice ticks covering `[min, max]` (extended to whole steps when `extend`, else
/// only the ticks inside); `format` Integer keeps steps whole.
fn value_ticks(min: f64, max: f64, format: Format, extend: bool) -> Ticks {
    let (min, max) = spread(min, max, 1.0);
    let mut step = nice_step((max - min) / 4.0);
    if format == Format::Integer {
        step = step.max(1.0);
    }
    let (lo, hi) = if extend {
        ((min / step).floor() * step, (max / step).ceil() * step)
    } else {
        (min, max)
    };
    let first = (lo / step).ceil();
    let last = (hi / step).floor();
    let values = if last - first <= 100.0 {
        // `+ 0.0` turns -0 into 0.
        (0..=(last - first) as i64)
            .map(|i| (first + i as f64) * step + 0.0)
            .collect()
    } else {
        vec![lo, hi]
    };
    Ticks {
        lo,
        hi,
        step,
        values,
    }
}

/// Steps of a time axis, in seconds: round minutes, hours, days.
const TIME_STEPS: [i64; 22] = [
    1, 2, 5, 10, 15, 30, 60, 120, 300, 600, 900, 1800, 3600, 7200, 10800, 21600, 43200, 86400,
    172_800, 604_800, 1_209_600, 2_592_000,
];

/// Ticks of a time axis over `[lo, hi]` (Unix seconds): at most about six, at multiples of
/// a round step (days start at midnight UTC).
fn time_ticks(lo: f64, hi: f64) -> Vec<f64> {
    let span = hi - lo;
    let step = TIME_STEPS
        .iter()
        .copied()
        .find(|&s| span / s as f64 <= 6.0)
        .unwrap_or_else(|| ((span / 6.0 / 86400.0).ceil() as i64).max(1) * 86400)
        as f64;
    let first = (lo / step).ceil();
    let last = (hi / step).floor();
    (0..=((last - first).max(-1.0) as i64))
        .map(|i| (first + i as f64) * step)
        .collect()
}

/// The UTC instant of Unix seconds `x`.
fn instant(x: f64) -> Option<OffsetDateTime> {
    OffsetDateTime::from_unix_timestamp_nanos((x * 1e9).round() as i128)
        .ok()
        .map(|t| t.to_offset(UtcOffset::UTC))
}

/// A time tick's label: `HH:MM:SS` on an axis spanning a few minutes (whose ticks may be
/// seconds apart), `HH:MM` on one spanning at most a day, else `MM-DD`.
fn time_label(x: f64, span: f64) -> String {
    let Some(t) = instant(x) else {
        return String::new();
    };
    if span < 360.0 {
        format!("{:02}:{:02}:{:02}", t.hour(), t.minute(), t.second())
    } else if span <= 86400.0 {
        format!("{:02}:{:02}", t.hour(), t.minute())
    } else {
        format!("{:02}-{:02}", u8::from(t.month()), t.day())
    }
}

/// Decimals that tell ticks `step` apart (steps are 1, 2 or 5 × 10^k).
fn decimals(step: f64) -> usize {
    let k = (step.log10() + 1e-9).floor();
    if k < 0.0 { (-k) as usize } else { 0 }
}

/// `digits` with a comma between each group of three (the integer part only).
fn grouped(digits: &str) -> String {
    let (sign, rest) = digits
        .strip_prefix('-')
        .map_or(("", digits), |rest| ("-", rest));
    let (int, frac) = rest.split_once('.').map_or((rest, ""), |(i, f)| (i, f));
    let mut out = String::from(sign);
    for (i, c) in int.chars().enumerate() {
        if i > 0 && (int.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    if !frac.is_empty() {
        out.push('.');
        out.push_str(frac);
    }
    out
}

/// A tick's label: `v` in `format` with the decimals the step needs.
fn tick_label(v: f64, format: Format, step: f64) -> String {
    let v = v + 0.0;
    match format {
        Format::Integer => grouped(&format!("{v:.0}")),
        Format::Number => grouped(&format!("{v:.*}", decimals(step))),
        Format::Percent => format!("{:.*}%", decimals(step * 100.0), v * 100.0),
    }
}

/// `v` written in full, for a point's tooltip.
fn exact(v: f64, format: Format) -> String {
    match format {
        Format::Integer if v.fract() == 0.0 => grouped(&format!("{v:.0}")),
        Format::Integer | Format::Number => v.to_string(),
        Format::Percent => {
            let s = format!("{:.4}", v * 100.0);
            let s = s.trim_end_matches('0').trim_end_matches('.');
            format!("{s}%")
        }
    }
}

/// A point's x in full, for its tooltip.
fn exact_x(p: &Point, axis: XAxis) -> String {
    match (axis, p.at) {
        (XAxis::Time, Some(at)) => at
            .to_offset(UtcOffset::UTC)
            .format(&Rfc3339)
            .unwrap_or_default(),
        (XAxis::Time, None) => String::new(),
        (XAxis::Value(format), _) => exact(p.x, format),
    }
}

/// `x,y x,y …` of an SVG `points` attribute.
fn coordinates(points: impl Iterator<Item = (f64, f64)>) -> String {
    let mut out = String::new();
    for (x, y) in points {
        if !out.is_empty() {
            out.push(' ');
        }
        let _ = write!(out, "{x:.1},{y:.1}");
    }
    out
}

/// The finite points of a series, ordered by x.
fn plotted(series: &Series<'_>) -> Vec<Point> {
    let mut points: Vec<Point> = series
        .points
        .iter()
        .copied()
        .filter(|p| finite(p.x) && finite(p.y))
        .collect();
    points.sort_by(|a, b| a.x.total_cmp(&b.x));
    points
}

fn plotted_band(series: &Series<'_>) -> Vec<(f64, f64, f64)> {
    let mut band: Vec<(f64, f64, f64)> = series
        .band
        .iter()
        .copied()
        .filter(|&(x, lo, hi)| finite(x) && finite(lo) && finite(hi))
        .collect();
    band.sort_by(|a, b| a.0.total_cmp(&b.0));
    band
}

/// The smallest and largest of `values` (`None` when there are none).
fn extent(values: impl Iterator<Item = f64>) -> Option<(f64, f64)> {
    values.fold(None, |acc, v| match acc {
        None => Some((v, v)),
        Some((lo, hi)) => Some((lo.min(v), hi.max(v))),
    })
}

/// The chart in words, for screen readers.
fn summary(p: &Plot<'_>, empty: bool) -> String {
    if empty {
        return format!("{}: no data yet.", p.title);
    }
    let names: Vec<&str> = p.series.iter().map(|s| s.label).collect();
    format!(
        "{}: {} against {}; series: {}.",
        p.title,
        p.y_label,
        p.x_label,
        names.join(", ")
    )
}

fn render(p: &Plot<'_>) -> Markup {
    let points: Vec<Vec<Point>> = p.series.iter().map(plotted).collect();
    let bands: Vec<Vec<(f64, f64, f64)>> = p.series.iter().map(plotted_band).collect();
    let empty = points.iter().all(Vec::is_empty);

    let xs = points
        .iter()
        .flatten()
        .map(|q| q.x)
        .chain(bands.iter().flatten().map(|b| b.0));
    let (x_lo, x_hi) = match (extent(xs), p.x) {
        (Some((lo, hi)), XAxis::Time) => spread(lo, hi, 60.0),
        (Some((lo, hi)), XAxis::Value(_)) => spread(lo, hi, 1.0),
        (None, XAxis::Time) => (0.0, 3600.0),
        (None, XAxis::Value(_)) => (0.0, 1.0),
    };
    // A single instant: a minute either side.
    let (x_lo, x_hi) = if p.x == XAxis::Time && x_hi - x_lo < 120.0 {
        let mid = (x_lo + x_hi) / 2.0;
        (mid - 60.0, mid + 60.0)
    } else {
        (x_lo, x_hi)
    };
    let ys = points
        .iter()
        .flatten()
        .map(|q| q.y)
        .chain(bands.iter().flatten().flat_map(|b| [b.1, b.2]))
        .chain(p.y_zero.then_some(0.0));
    let (y_min, y_max) = extent(ys).unwrap_or((0.0, 1.0));
    let y_ticks = value_ticks(y_min, y_max, p.y_format, true);

    let sx = Scale::new((x_lo, x_hi), LEFT, WIDTH - RIGHT);
    let sy = Scale::new((y_ticks.lo, y_ticks.hi), HEIGHT - BOTTOM, TOP);
    let x_ticks: Vec<(f64, String)> = match p.x {
        XAxis::Time => time_ticks(x_lo, x_hi)
            .into_iter()
            .map(|x| (x, time_label(x, x_hi - x_lo)))
            .collect(),
        XAxis::Value(format) => {
            let t = value_ticks(x_lo, x_hi, format, false);
            t.values
                .iter()
                .map(|&x| (x, tick_label(x, format, t.step)))
                .collect()
        }
    };
    let radius = match p.x {
        XAxis::Time => "3",
        XAxis::Value(_) => "1.5",
    };
    let (bottom, right) = (HEIGHT - BOTTOM, WIDTH - RIGHT);
    let y_label_x = 16.0;
    let y_label_y = (TOP + bottom) / 2.0;
    let viewbox = format!("0 0 {WIDTH} {HEIGHT}");
    let described = summary(p, empty);

    html! {
        figure.chart {
            figcaption { (p.title) }
            svg.plot xmlns="http://www.w3.org/2000/svg" viewBox=(viewbox) role="img"
                aria-label=(described) {
                title { (p.title) }
                desc { (described) }
                g.grid {
                    @for y in &y_ticks.values {
                        line x1=(LEFT) x2=(right) y1=(fmt(sy.at(*y))) y2=(fmt(sy.at(*y))) {}
                    }
                }
                g.axis.y-axis {
                    line x1=(LEFT) x2=(LEFT) y1=(TOP) y2=(bottom) {}
                    @for y in &y_ticks.values {
                        text.tick x=(LEFT - 6.0) y=(fmt(sy.at(*y))) dy="0.32em" text-anchor="end" {
                            (tick_label(*y, p.y_format, y_ticks.step))
                        }
                    }
                }
                g.axis.x-axis {
                    line x1=(LEFT) x2=(right) y1=(bottom) y2=(bottom) {}
                    @for (x, label) in &x_ticks {
                        line x1=(fmt(sx.at(*x))) x2=(fmt(sx.at(*x))) y1=(bottom) y2=(bottom + 4.0) {}
                        text.tick x=(fmt(sx.at(*x))) y=(bottom + 16.0) text-anchor="middle" { (label) }
                    }
                }
                text.axis-label x=(fmt((LEFT + right) / 2.0)) y=(HEIGHT - 8.0) text-anchor="middle" {
                    (p.x_label)
                }
                text.axis-label x=(y_label_x) y=(fmt(y_label_y)) text-anchor="middle"
                    transform=(format!("rotate(-90 {y_label_x} {})", fmt(y_label_y))) {
                    (p.y_label)
                }
                @if empty {
                    text.empty x=(fmt((LEFT + right) / 2.0)) y=(fmt(y_label_y)) text-anchor="middle" {
                        "No data yet"
                    }
                }
                @for (i, s) in p.series.iter().enumerate() {
                    g class=(format!("series series-{}", i % COLOURS)) data-series=(s.label) {
                        @if bands[i].len() > 1 {
                            polygon class=(format!("band band-{}", i % COLOURS))
                                points=(band_outline(&bands[i], &sx, &sy)) {}
                        }
                        @if points[i].len() > 1 {
                            polyline.line points=(coordinates(points[i].iter().map(|q| (sx.at(q.x), sy.at(q.y))))) {}
                        }
                        @for q in &points[i] {
                            circle.point cx=(fmt(sx.at(q.x))) cy=(fmt(sy.at(q.y))) r=(radius)
                                data-value=(q.y)
                                data-at=[q.at.and_then(|t| t.to_offset(UtcOffset::UTC).format(&Rfc3339).ok())]
                                data-x=[(p.x != XAxis::Time).then_some(q.x)] {
                                title { (s.label) ": " (exact(q.y, p.y_format)) " at " (exact_x(q, p.x)) }
                            }
                        }
                    }
                }
            }
            @if !p.series.is_empty() {
                ul.legend {
                    @for (i, s) in p.series.iter().enumerate() {
                        li data-series=(s.label) {
                            span class=(format!("swatch series-{}", i % COLOURS)) aria-hidden="true" {}
                            (s.label)
                        }
                    }
                }
            }
        }
    }
}

/// A coordinate with one decimal.
fn fmt(v: f64) -> String {
    format!("{v:.1}")
}

/// The outline of a band: along its highs, then back along its lows.
fn band_outline(band: &[(f64, f64, f64)], sx: &Scale, sy: &Scale) -> String {
    let highs = band.iter().map(|&(x, _, hi)| (sx.at(x), sy.at(hi)));
    let lows = band.iter().rev().map(|&(x, lo, _)| (sx.at(x), sy.at(lo)));
    coordinates(highs.chain(lows))
}

#[cfg(test)]
mod tests {
    use time::macros::datetime;

    use super::*;

    fn line(label: &str, points: Vec<(OffsetDateTime, f64)>) -> Line {
        Line {
            label: label.to_owned(),
            points,
            band: None,
        }
    }

    fn chart(series: Vec<Line>) -> Chart<'static> {
        Chart {
            title: "Events per minute",
            x_label: "minute (UTC)",
            y_label: "events per minute",
            y_format: Format::Integer,
            series,
            y_zero: true,
        }
    }

    /// Every number in the markup's attributes and text parses, none is NaN or infinite.
    fn assert_no_nan(markup: &str) {
        for bad in ["NaN", "inf"] {
            assert!(!markup.contains(bad), "{bad} in {markup}");
        }
    }

    /// The `name="…"` attribute values of `markup`, in order.
    fn attributes(markup: &str, name: &str) -> Vec<String> {
        let needle = format!(" {name}=\"");
        markup
            .split(&needle)
            .skip(1)
            .map(|rest| rest.split('"').next().unwrap_or_default().to_owned())
            .collect()
    }

    #[test]
    fn nice_steps_are_one_two_or_five_times_a_power_of_ten() {
        for (raw, step) in [
            (0.8, 1.0),
            (1.0, 1.0),
            (1.3, 1.0),
            (2.5, 2.0),
            (6.5, 5.0),
            (7.0, 10.0),
            (13.0, 10.0),
            (0.0031, 0.005),
            (420.0, 500.0),
        ] {
            let got = nice_step(raw);
            assert!((got - step).abs() < step * 1e-9, "{raw}: {got} not {step}");
        }
        assert_eq!(nice_step(0.0), 1.0);
        assert_eq!(nice_step(f64::NAN), 1.0);
    }

    #[test]
    fn value_ticks_cover_the_range_with_whole_steps() {
        let t = value_ticks(0.0, 97.0, Format::Integer, true);
        assert_eq!((t.lo, t.hi, t.step), (0.0, 100.0, 20.0));
        assert_eq!(t.values, [0.0, 20.0, 40.0, 60.0, 80.0, 100.0]);
        let t = value_ticks(0.031, 0.118, Format::Percent, true);
        assert!((t.step - 0.02).abs() < 1e-12, "{t:?}");
        assert!(t.lo <= 0.031 && t.hi >= 0.118, "{t:?}");
        // Counts never get fractional ticks.
        let t = value_ticks(0.0, 2.0, Format::Integer, true);
        assert!(t.values.iter().all(|v| v.fract() == 0.0), "{t:?}");
        // Negative values: -0 is written 0.
        let t = value_ticks(-3.0, 3.0, Format::Number, true);
        assert!(t.values.contains(&0.0));
        assert_eq!(tick_label(-0.0, Format::Number, 1.0), "0");
    }

    #[test]
    fn an_empty_or_single_valued_range_is_widened() {
        assert_eq!(spread(0.0, 0.0, 1.0), (0.0, 1.0));
        let (lo, hi) = spread(5.0, 5.0, 1.0);
        assert!(lo < 5.0 && hi > 5.0);
        let (lo, hi) = spread(-2.0, -2.0, 1.0);
        assert!(lo < -2.0 && hi > -2.0);
        let t = value_ticks(7.0, 7.0, Format::Number, true);
        assert!(t.hi > t.lo && t.values.len() >= 2, "{t:?}");
    }

    #[test]
    fn scales_map_the_range_onto_the_drawing() {
        let s = Scale::new((0.0, 100.0), HEIGHT - BOTTOM, TOP);
        assert_eq!(s.at(0.0), HEIGHT - BOTTOM);
        assert_eq!(s.at(100.0), TOP);
        assert_eq!(s.at(50.0), (HEIGHT - BOTTOM + TOP) / 2.0);
    }

    #[test]
    fn time_ticks_fall_on_round_minutes_and_say_hh_mm_within_a_day() {
        let lo = seconds(datetime!(2024-05-01 12:03:20 UTC));
        let hi = seconds(datetime!(2024-05-01 13:02:00 UTC));
        let ticks = time_ticks(lo, hi);
        assert!(ticks.len() >= 3 && ticks.len() <= 7, "{ticks:?}");
        let labels: Vec<String> = ticks.iter().map(|&x| time_label(x, hi - lo)).collect();
        assert_eq!(labels[0], "12:10");
        assert!(labels.iter().all(|l| l.ends_with('0')), "{labels:?}");
        // A few minutes: ticks seconds apart say their seconds, so no two read the same.
        let (lo, hi) = (
            seconds(datetime!(2024-05-01 12:03:20 UTC)),
            seconds(datetime!(2024-05-01 12:05:10 UTC)),
        );
        let labels: Vec<String> = time_ticks(lo, hi)
            .iter()
            .map(|&x| time_label(x, hi - lo))
            .collect();
        assert_eq!(labels[0], "12:03:30", "{labels:?}");
        let distinct: std::collections::BTreeSet<&String> = labels.iter().collect();
        assert_eq!(distinct.len(), labels.len(), "{labels:?}");
        let lo = seconds(datetime!(2024-05-01 12:03:20 UTC));
        // Several days: MM-DD at midnights.
        let hi = seconds(datetime!(2024-05-06 00:00:00 UTC));
        let labels: Vec<String> = time_ticks(lo, hi)
            .iter()
            .map(|&x| time_label(x, hi - lo))
            .collect();
        assert_eq!(
            labels.first().map(String::as_str),
            Some("05-02"),
            "{labels:?}"
        );
    }

    #[test]
    fn labels_are_written_in_their_format() {
        assert_eq!(tick_label(1250.0, Format::Integer, 250.0), "1,250");
        assert_eq!(tick_label(0.125, Format::Percent, 0.005), "12.5%");
        assert_eq!(tick_label(0.1, Format::Percent, 0.05), "10%");
        assert_eq!(tick_label(0.25, Format::Number, 0.05), "0.25");
        assert_eq!(exact(1_234_567.0, Format::Integer), "1,234,567");
        assert_eq!(exact(0.07, Format::Percent), "7%");
        assert_eq!(exact(0.123456, Format::Number), "0.123456");
        assert_eq!(grouped("-1234567.5"), "-1,234,567.5");
    }

    #[test]
    fn each_point_carries_its_exact_value_and_instant() {
        let t0 = datetime!(2024-05-01 12:00:00 UTC);
        let markup = line_chart(&chart(vec![line(
            "aggregate",
            vec![(t0, 12.0), (t0 + time::Duration::minutes(1), 0.1 + 0.2)],
        )]))
        .into_string();
        assert_no_nan(&markup);
        assert_eq!(
            attributes(&markup, "data-value"),
            ["12", "0.30000000000000004"]
        );
        assert_eq!(
            attributes(&markup, "data-at"),
            ["2024-05-01T12:00:00Z", "2024-05-01T12:01:00Z"]
        );
        assert!(attributes(&markup, "data-series").contains(&"aggregate".to_owned()));
        assert!(markup.contains("<title>aggregate: 12 at 2024-05-01T12:00:00Z</title>"));
        assert!(markup.contains("class=\"series series-0\""));
        assert!(markup.contains("<polyline class=\"line\""));
        assert!(!markup.contains("style"), "no inline style: {markup}");
        assert!(markup.contains("aria-label=\"Events per minute: events per minute"));
    }

    #[test]
    fn empty_data_renders_a_labelled_chart_without_nan() {
        for series in [vec![], vec![line("aggregate", vec![])]] {
            let markup = line_chart(&chart(series)).into_string();
            assert_no_nan(&markup);
            assert!(markup.contains("No data yet"), "{markup}");
            assert!(markup.contains("aria-label=\"Events per minute: no data yet.\""));
            assert!(!markup.contains("<circle"));
        }
        let markup = density_chart(&DensityChart {
            title: "Posterior",
            x_label: "conversion rate",
            x_format: Format::Percent,
            y_label: "density",
            curves: vec![],
        })
        .into_string();
        assert_no_nan(&markup);
        assert!(markup.contains("No data yet"));
    }

    #[test]
    fn a_single_point_equal_values_and_non_finite_values_draw_without_nan() {
        let t0 = datetime!(2024-05-01 12:00:00 UTC);
        let cases = [
            vec![(t0, 5.0)],
            vec![(t0, 0.0), (t0, 0.0)],
            vec![(t0, 3.0), (t0 + time::Duration::hours(1), 3.0)],
            vec![(t0, f64::NAN), (t0, f64::INFINITY), (t0, 1.0)],
            vec![(t0, f64::MAX), (t0 + time::Duration::minutes(1), -f64::MAX)],
        ];
        for points in cases {
            for y_zero in [true, false] {
                let mut c = chart(vec![line("s", points.clone())]);
                c.y_zero = y_zero;
                c.y_format = Format::Number;
                let markup = line_chart(&c).into_string();
                assert_no_nan(&markup);
                for cy in attributes(&markup, "cy") {
                    let cy: f64 = cy.parse().expect("a number");
                    assert!(
                        (TOP..=HEIGHT - BOTTOM).contains(&cy),
                        "{cy} outside: {markup}"
                    );
                }
            }
        }
    }

    #[test]
    fn bands_are_drawn_behind_their_line_and_widen_the_range() {
        let t0 = datetime!(2024-05-01 12:00:00 UTC);
        let t1 = t0 + time::Duration::minutes(10);
        let c = Chart {
            y_format: Format::Percent,
            y_zero: false,
            ..chart(vec![Line {
                label: "treatment".to_owned(),
                points: vec![(t0, 0.10), (t1, 0.12)],
                band: Some(vec![(t0, 0.05, 0.15), (t1, 0.09, 0.31)]),
            }])
        };
        let markup = line_chart(&c).into_string();
        assert_no_nan(&markup);
        let band = markup
            .find("<polygon class=\"band band-0\"")
            .expect("a band");
        assert!(band < markup.find("<polyline").expect("a line"));
        // The range reaches the band's top, 31%.
        let ticks: Vec<String> = markup
            .split("text-anchor=\"end\">")
            .skip(1)
            .map(|s| s.split('<').next().unwrap_or_default().to_owned())
            .collect();
        assert!(ticks.iter().any(|t| t == "35%" || t == "40%"), "{ticks:?}");
    }

    #[test]
    fn density_curves_share_the_renderer_with_a_numeric_x() {
        let curve = |label: &str, centre: f64| Curve {
            label: label.to_owned(),
            points: (0..=50)
                .map(|i| {
                    let x = f64::from(i) / 250.0;
                    (x, (-((x - centre) * 100.0).powi(2)).exp() * 40.0)
                })
                .collect(),
        };
        let markup = density_chart(&DensityChart {
            title: "Conversion rate, posterior",
            x_label: "conversion rate",
            x_format: Format::Percent,
            y_label: "density",
            curves: vec![curve("control", 0.08), curve("treatment", 0.11)],
        })
        .into_string();
        assert_no_nan(&markup);
        assert_eq!(attributes(&markup, "data-x").len(), 102);
        assert!(attributes(&markup, "data-at").is_empty());
        assert!(markup.contains("class=\"series series-1\" data-series=\"treatment\""));
        // Percent ticks on x.
        assert!(markup.contains(">10%</text>"), "{markup}");
    }

    #[test]
    fn labels_and_titles_are_escaped() {
        let t0 = datetime!(2024-05-01 12:00:00 UTC);
        let c = Chart {
            title: "<b>\"rates\"</b>",
            ..chart(vec![line("<script>alert(1)</script>&", vec![(t0, 1.0)])])
        };
        let markup = line_chart(&c).into_string();
        assert!(!markup.contains("<script>"), "{markup}");
        assert!(!markup.contains("<b>"), "{markup}");
        assert!(markup.contains("&lt;script&gt;alert(1)&lt;/script&gt;&amp;"));
        assert!(markup.contains("data-series=\"&lt;script&gt;alert(1)&lt;/script&gt;&amp;\""));
        assert!(markup.contains("&quot;rates&quot;"));
    }

    #[test]
    fn series_beyond_eight_reuse_the_colours() {
        let t0 = datetime!(2024-05-01 12:00:00 UTC);
        let series = (0..10)
            .map(|i| line(&format!("s{i}"), vec![(t0, f64::from(i))]))
            .collect();
        let markup = line_chart(&chart(series)).into_string();
        assert!(markup.contains("class=\"series series-7\" data-series=\"s7\""));
        assert!(markup.contains("class=\"series series-1\" data-series=\"s9\""));
    }
}
