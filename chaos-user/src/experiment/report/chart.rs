//! Time-series charts as inline SVG, drawn with plotters' SVG backend (no fonts, no bitmap
//! code: text is left to the browser). One metric across a perturbation's three phases, the
//! injection window shaded, phase boundaries and the condition's bounds dashed. plotters
//! escapes the text it writes.
use plotters::prelude::*;

pub struct Chart<'a> {
    pub title: &'a str,
    pub unit: &'a str,
    /// (seconds since the baseline started, value); None breaks the line.
    pub points: Vec<(f64, Option<f64>)>,
    pub x_end: f64,
    /// Seconds where a phase starts (vertical dashed lines).
    pub boundaries: Vec<f64>,
    pub injection: Option<(f64, f64)>,
    /// Horizontal dashed lines: the condition's bounds.
    pub bounds: Vec<f64>,
}

const LINE: RGBColor = RGBColor(33, 102, 172);
const WINDOW: RGBColor = RGBColor(229, 57, 53);
const BOUND: RGBColor = RGBColor(230, 120, 0);
const GRID: RGBColor = RGBColor(200, 200, 200);

pub fn render(chart: &Chart) -> Result<String, String> {
    let values = chart.points.iter().filter_map(|(_, v)| *v);
    let (mut low, mut high) = values
        .chain(chart.bounds.iter().copied())
        .fold((0.0f64, f64::MIN), |(lo, hi), v| (lo.min(v), hi.max(v)));
    if high <= low {
        high = low + 1.0;
    }
    let pad = (high - low) * 0.08;
    high += pad;
    if low < 0.0 {
        low -= pad;
    }
    let x_end = chart.x_end.max(1.0);
    let mut svg = String::new();
    {
        let root = SVGBackend::with_string(&mut svg, (760, 230)).into_drawing_area();
        let e = |e: DrawingAreaErrorKind<_>| e.to_string();
        root.fill(&WHITE).map_err(e)?;
        let mut plot = ChartBuilder::on(&root)
            .caption(chart.title, ("sans-serif", 15))
            .margin(8)
            .x_label_area_size(32)
            .y_label_area_size(64)
            .build_cartesian_2d(0f64..x_end, low..high)
            .map_err(e)?;
        plot.configure_mesh()
            .x_desc("seconds")
            .y_desc(chart.unit)
            .label_style(("sans-serif", 11))
            .light_line_style(WHITE)
            .bold_line_style(RGBColor(236, 236, 236))
            .draw()
            .map_err(e)?;
        if let Some((start, end)) = chart.injection {
            plot.draw_series(std::iter::once(Rectangle::new(
                [(start, low), (end.max(start), high)],
                WINDOW.mix(0.14).filled(),
            )))
            .map_err(e)?;
        }
        for &x in &chart.boundaries {
            plot.draw_series(DashedLineSeries::new(
                [(x, low), (x, high)],
                4,
                4,
                GRID.stroke_width(1),
            ))
            .map_err(e)?;
        }
        for &y in &chart.bounds {
            plot.draw_series(DashedLineSeries::new(
                [(0.0, y), (x_end, y)],
                7,
                4,
                BOUND.stroke_width(1),
            ))
            .map_err(e)?;
        }
        for segment in segments(&chart.points) {
            plot.draw_series(LineSeries::new(
                segment.iter().copied(),
                LINE.stroke_width(2),
            ))
            .map_err(e)?;
            plot.draw_series(
                segment
                    .iter()
                    .map(|&point| Circle::new(point, 2, LINE.filled())),
            )
            .map_err(e)?;
        }
        root.present().map_err(e)?;
    }
    Ok(svg)
}

/// Runs of consecutive points with a value.
fn segments(points: &[(f64, Option<f64>)]) -> Vec<Vec<(f64, f64)>> {
    let mut segments = vec![Vec::new()];
    for &(x, value) in points {
        match value {
            Some(y) => match segments.last_mut() {
                Some(segment) => segment.push((x, y)),
                None => segments.push(vec![(x, y)]),
            },
            None if segments.last().is_some_and(|s| !s.is_empty()) => segments.push(Vec::new()),
            None => {}
        }
    }
    segments.retain(|s| !s.is_empty());
    segments
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn draws_an_svg_with_the_window_and_the_line() {
        let svg = render(&Chart {
            title: "http.5xx_ratio <x>",
            unit: "ratio",
            points: vec![
                (1.0, Some(0.0)),
                (2.0, None),
                (3.0, Some(0.5)),
                (4.0, Some(0.4)),
            ],
            x_end: 6.0,
            boundaries: vec![2.0, 4.0],
            injection: Some((2.0, 4.0)),
            bounds: vec![0.01],
        })
        .unwrap();
        assert!(svg.starts_with("<svg"), "{}", &svg[..80]);
        assert!(svg.contains("http.5xx_ratio &lt;x&gt;"));
        assert!(
            svg.contains("<polyline") || svg.contains("<path"),
            "no line"
        );
        assert!(svg.contains("<rect"), "no window");
        assert_eq!(
            segments(&[(1.0, Some(1.0)), (2.0, None), (3.0, Some(2.0))]).len(),
            2
        );
    }
}
