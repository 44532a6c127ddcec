//! Draws a [`Timeline`] as a ladder (sequence) diagram in SVG: one column
//! per party, time running down the page in true order (one row per
//! distinct time, each labelled with its milliseconds; long quiet spans
//! are shortened and marked), the network change as a shaded band, each
//! exchange as a request arrow and an answer arrow labelled with the time
//! it took, the media as a bar per direction beside its receiver with its
//! longest gap marked. Plain text generation: no I/O, no external crate.

use std::fmt::Write as _;

use crate::timeline::{Entry, Timeline};

const ROW: f64 = 22.0;
const TOP: f64 = 80.0;
const LEFT: f64 = 110.0;
const COLUMN: f64 = 280.0;
const QUIET_MS: f64 = 100.0;

/// Escapes text for an XML text node or attribute value.
pub fn escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&apos;"),
            // not allowed in XML 1.0
            c if (c as u32) < 0x20 && !matches!(c, '\t' | '\n' | '\r') => out.push(' '),
            c => out.push(c),
        }
    }
    out
}

/// Milliseconds as the diagram prints them (`4.2`).
pub fn ms(x: f64) -> String {
    format!("{:.1}", (x * 10.0).round() / 10.0)
}

/// The vertical scale: one row per distinct time, in order.
struct Rows {
    times: Vec<f64>,
    ys: Vec<f64>,
}

impl Rows {
    fn new(mut times: Vec<f64>) -> Rows {
        times.retain(|t| t.is_finite());
        times.sort_by(|a, b| a.total_cmp(b));
        times.dedup_by(|a, b| (*a - *b).abs() < 1e-6);
        let mut ys = Vec::with_capacity(times.len());
        let mut y = TOP;
        let mut prev: Option<f64> = None;
        for t in &times {
            if let Some(p) = prev {
                y += ROW;
                if t - p >= QUIET_MS {
                    y += ROW;
                }
            }
            ys.push(y);
            prev = Some(*t);
        }
        Rows { times, ys }
    }

    fn y(&self, t: f64) -> f64 {
        let i = self.times.partition_point(|x| *x < t - 1e-6);
        self.ys.get(i).or(self.ys.last()).copied().unwrap_or(TOP)
    }

    fn bottom(&self) -> f64 {
        self.ys.last().copied().unwrap_or(TOP) + 2.5 * ROW
    }
}

fn x_of(column: usize) -> f64 {
    LEFT + 120.0 + column as f64 * COLUMN
}

fn times_of(e: &Entry) -> Vec<f64> {
    match e {
        Entry::Exchange(x) => vec![x.sent_ms, x.answered_ms],
        Entry::Change(c) => vec![c.start_ms, c.end_ms],
        Entry::Media(m) => {
            let mut v = vec![m.start_ms, m.end_ms];
            if let Some(g) = &m.gap {
                v.extend([g.start_ms, g.end_ms]);
            }
            v
        }
        Entry::Note(n) => vec![n.t_ms],
    }
}

/// The diagram of `t` as an SVG document.
pub fn render(t: &Timeline) -> String {
    let rows = Rows::new(t.entries.iter().flat_map(times_of).collect());
    let columns = t.parties.len().max(1);
    // the right margin holds the notes and the change's label
    let margin = x_of(columns - 1) + 170.0;
    let width = margin + 400.0;
    let height = rows.bottom() + 20.0;
    let mut s = String::new();
    let _ = writeln!(
        s,
        r##"<?xml version="1.0" encoding="UTF-8"?>
<svg xmlns="http://www.w3.org/2000/svg" width="{w}" height="{h}" viewBox="0 0 {w} {h}" font-family="sans-serif" font-size="12">
<defs><marker id="arrow" viewBox="0 0 10 10" refX="10" refY="5" markerWidth="8" markerHeight="8" orient="auto-start-reverse"><path d="M0,0 L10,5 L0,10 z" fill="#333"/></marker></defs>
<rect width="100%" height="100%" fill="#ffffff"/>
<text x="10" y="20" font-size="15" font-weight="bold">siproam: the hand-off, time down the page</text>"##,
        w = width.round(),
        h = height.round()
    );
    // bands first, so everything else is drawn over them
    for e in &t.entries {
        if let Entry::Change(c) = e {
            let (y0, y1) = (rows.y(c.start_ms) - ROW / 2.0, rows.y(c.end_ms) + ROW / 2.0);
            let _ = writeln!(
                s,
                r##"<g class="change" data-start-ms="{a}" data-end-ms="{b}"><rect x="0" y="{y0}" width="{w}" height="{hh}" fill="#ffd966" fill-opacity="0.45"/><text x="{tx}" y="{ty}" font-style="italic">{label}</text></g>"##,
                a = ms(c.start_ms),
                b = ms(c.end_ms),
                w = width.round(),
                hh = (y1 - y0).max(ROW),
                tx = margin,
                ty = y0 + 14.0,
                label = escape(&c.label),
            );
        }
    }
    // the time of each row, and a mark where a quiet span was shortened
    let mut prev: Option<f64> = None;
    for (t_ms, y) in rows.times.iter().zip(&rows.ys) {
        if let Some(p) = prev.filter(|p| t_ms - p >= QUIET_MS) {
            let _ = writeln!(
                s,
                r##"<text class="quiet" x="10" y="{}" fill="#888">⋮ {} ms later</text>"##,
                y - ROW + 4.0,
                ms(t_ms - p)
            );
        }
        let _ = writeln!(
            s,
            r##"<text class="time" x="10" y="{}" fill="#555">{} ms</text>"##,
            y + 4.0,
            ms(*t_ms)
        );
        prev = Some(*t_ms);
    }
    // the parties and their lines
    for (i, p) in t.parties.iter().enumerate() {
        let x = x_of(i);
        let _ = writeln!(
            s,
            r##"<g class="party"><rect x="{bx}" y="32" width="160" height="26" rx="4" fill="#dde8f8" stroke="#335"/><text x="{x}" y="50" text-anchor="middle" font-weight="bold">{name}</text><line x1="{x}" y1="58" x2="{x}" y2="{y2}" stroke="#99a" stroke-dasharray="4 3"/></g>"##,
            bx = x - 80.0,
            name = escape(p),
            y2 = rows.bottom(),
        );
    }
    for e in &t.entries {
        match e {
            Entry::Exchange(x) => {
                let (x0, x1) = (x_of(x.from), x_of(x.to));
                let ys = rows.y(x.sent_ms);
                let mut ya = rows.y(x.answered_ms);
                if ya <= ys {
                    ya = ys + 8.0;
                }
                let mid = (x0 + x1) / 2.0;
                let took = ms(x.took_ms);
                let _ = writeln!(
                    s,
                    r##"<g class="exchange" data-request="{req}" data-answer="{ans}" data-sent-ms="{sent}" data-answered-ms="{answered}" data-ms="{took}"><line class="request" x1="{x0}" y1="{ys}" x2="{x1}" y2="{ys}" stroke="#1f4e9c" stroke-width="1.6" marker-end="url(#arrow)"/><text x="{mid}" y="{lys}" text-anchor="middle" fill="#1f4e9c">{req}</text><line class="answer" x1="{x1}" y1="{ya}" x2="{x0}" y2="{ya}" stroke="#2d7d2d" stroke-width="1.6" marker-end="url(#arrow)"/><text x="{mid}" y="{lya}" text-anchor="middle" fill="#2d7d2d">{ans} ({took} ms)</text></g>"##,
                    req = escape(&x.request),
                    ans = escape(&x.answer),
                    sent = ms(x.sent_ms),
                    answered = ms(x.answered_ms),
                    lys = ys - 4.0,
                    lya = ya + 13.0,
                );
            }
            Entry::Media(m) => {
                let (xs, xr) = (x_of(m.from), x_of(m.to));
                // beside the receiver, on the sender's side
                let bx = if xs < xr { xr - 30.0 } else { xr + 22.0 };
                let (y0, y1) = (rows.y(m.start_ms), rows.y(m.end_ms));
                let from = t.parties.get(m.from).map_or("?", |p| p.as_str());
                let to = t.parties.get(m.to).map_or("?", |p| p.as_str());
                let direction = format!("{from} → {to}");
                let anchor = if xs < xr { "end" } else { "start" };
                let lx = if xs < xr { bx - 4.0 } else { bx + 12.0 };
                let _ = write!(
                    s,
                    r##"<g class="media" data-direction="{d}" data-packets="{n}" data-start-ms="{a}" data-end-ms="{b}"><rect class="bar" x="{bx}" y="{y0}" width="8" height="{hh}" fill="#6aa84f"/><text x="{lx}" y="{ly}" text-anchor="{anchor}" fill="#38761d">media {d}: {n} packets</text>"##,
                    d = escape(&direction),
                    n = m.packets,
                    a = ms(m.start_ms),
                    b = ms(m.end_ms),
                    hh = (y1 - y0).max(2.0),
                    ly = y1 + 14.0,
                );
                if let Some(g) = &m.gap {
                    let (g0, g1) = (rows.y(g.start_ms), rows.y(g.end_ms));
                    let _ = write!(
                        s,
                        r##"<rect class="gap" data-max-gap-ms="{gm}" data-start-ms="{a}" data-end-ms="{b}" x="{gx}" y="{g0}" width="12" height="{hh}" fill="none" stroke="#cc0000" stroke-width="2"/><text x="{lx}" y="{ly}" text-anchor="{anchor}" fill="#cc0000">longest gap {gm} ms</text>"##,
                        gm = ms(g.max_gap_ms),
                        a = ms(g.start_ms),
                        b = ms(g.end_ms),
                        gx = bx - 2.0,
                        hh = (g1 - g0).max(4.0),
                        ly = g1 - 3.0,
                    );
                }
                let _ = writeln!(s, "</g>");
            }
            Entry::Note(n) => {
                let x = x_of(n.party);
                let y = rows.y(n.t_ms);
                let _ = writeln!(
                    s,
                    r##"<g class="note" data-ms="{t}"><circle cx="{x}" cy="{y}" r="3.5" fill="#555"/><text x="{tx}" y="{ty}" fill="#333" font-size="11">{text}</text></g>"##,
                    t = ms(n.t_ms),
                    tx = x + 40.0,
                    ty = y + 4.0,
                    text = escape(&n.text),
                );
            }
            Entry::Change(_) => {}
        }
    }
    s.push_str("</svg>\n");
    s
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::indexing_slicing)]
    use super::*;
    use crate::timeline::{Change, Exchange, Gap, MediaBar, Note};

    fn sample() -> Timeline {
        Timeline {
            parties: vec!["Alice".into(), "Registrar/proxy".into(), "Bob <&>".into()],
            entries: vec![
                Entry::Exchange(Exchange {
                    from: 0,
                    to: 1,
                    request: "REGISTER".into(),
                    answer: "200".into(),
                    sent_ms: 30.0,
                    answered_ms: 30.4,
                    took_ms: 0.4,
                }),
                Entry::Media(MediaBar {
                    from: 2,
                    to: 0,
                    start_ms: 40.0,
                    end_ms: 2070.0,
                    packets: 102,
                    gap: Some(Gap {
                        start_ms: 1040.0,
                        end_ms: 2040.0,
                        max_gap_ms: 61.26,
                    }),
                }),
                Entry::Media(MediaBar {
                    from: 0,
                    to: 2,
                    start_ms: 40.0,
                    end_ms: 2070.0,
                    packets: 101,
                    gap: None,
                }),
                Entry::Change(Change {
                    party: 0,
                    start_ms: 1060.0,
                    end_ms: 1065.8,
                    label: "network change to 127.0.0.3".into(),
                }),
                Entry::Exchange(Exchange {
                    from: 0,
                    to: 1,
                    request: "REGISTER".into(),
                    answer: "200".into(),
                    sent_ms: 1060.1,
                    answered_ms: 1064.3,
                    took_ms: 4.2,
                }),
                Entry::Exchange(Exchange {
                    from: 0,
                    to: 2,
                    request: "re-INVITE".into(),
                    answer: "2xx".into(),
                    sent_ms: 1064.4,
                    answered_ms: 1065.8,
                    took_ms: 1.4,
                }),
                Entry::Note(Note {
                    party: 0,
                    t_ms: 1066.0,
                    text: "media moved to 127.0.0.3:4000".into(),
                }),
            ],
        }
    }

    fn class<'a>(doc: &'a roxmltree::Document, c: &str) -> Vec<roxmltree::Node<'a, 'a>> {
        doc.descendants()
            .filter(|n| n.attribute("class") == Some(c))
            .collect()
    }

    fn text_of(n: roxmltree::Node) -> String {
        n.descendants()
            .filter(|d| d.is_text())
            .filter_map(|d| d.text())
            .collect::<Vec<_>>()
            .join("|")
    }

    #[test]
    fn the_svg_is_xml_with_every_stage_and_its_time() {
        let svg = render(&sample());
        let doc = roxmltree::Document::parse(&svg).unwrap();
        assert_eq!(doc.root_element().tag_name().name(), "svg");
        // the parties, escaped
        let parties: Vec<String> = class(&doc, "party").into_iter().map(text_of).collect();
        assert_eq!(parties, vec!["Alice", "Registrar/proxy", "Bob <&>"]);
        // the change band with its label and times
        let band = class(&doc, "change");
        assert_eq!(band.len(), 1);
        assert_eq!(band[0].attribute("data-start-ms"), Some("1060.0"));
        assert_eq!(band[0].attribute("data-end-ms"), Some("1065.8"));
        assert!(text_of(band[0]).contains("127.0.0.3"));
        // the arrows with their milliseconds
        let ex = class(&doc, "exchange");
        assert_eq!(ex.len(), 3);
        let reregister = ex
            .iter()
            .find(|g| g.attribute("data-sent-ms") == Some("1060.1"))
            .unwrap();
        assert_eq!(reregister.attribute("data-request"), Some("REGISTER"));
        assert_eq!(reregister.attribute("data-ms"), Some("4.2"));
        let text = text_of(*reregister);
        assert!(
            text.contains("REGISTER") && text.contains("200 (4.2 ms)"),
            "{text}"
        );
        let refresh = ex
            .iter()
            .find(|g| g.attribute("data-request") == Some("re-INVITE"))
            .unwrap();
        assert!(text_of(*refresh).contains("2xx (1.4 ms)"));
        assert_eq!(
            refresh
                .children()
                .filter(|c| c.has_tag_name("line"))
                .count(),
            2,
            "a request arrow and an answer arrow"
        );
        // a bar per direction, the gap marked on the one that has it
        let media = class(&doc, "media");
        let dirs: Vec<&str> = media
            .iter()
            .filter_map(|m| m.attribute("data-direction"))
            .collect();
        assert_eq!(dirs, vec!["Bob <&> → Alice", "Alice → Bob <&>"]);
        let gaps = class(&doc, "gap");
        assert_eq!(gaps.len(), 1);
        assert_eq!(gaps[0].attribute("data-max-gap-ms"), Some("61.3"));
        assert!(text_of(media[0]).contains("longest gap 61.3 ms"));
        assert!(text_of(media[0]).contains("102 packets"));
        // each time has its row label, and the quiet second is marked
        let times: Vec<String> = class(&doc, "time").into_iter().map(text_of).collect();
        for t in [
            "30.0 ms",
            "1060.1 ms",
            "1064.3 ms",
            "1065.8 ms",
            "2070.0 ms",
        ] {
            assert!(times.iter().any(|x| x == t), "no row for {t}: {times:?}");
        }
        assert!(!class(&doc, "quiet").is_empty());
        assert_eq!(class(&doc, "note").len(), 1);
    }

    #[test]
    fn time_runs_down_the_page_in_order() {
        let svg = render(&sample());
        let doc = roxmltree::Document::parse(&svg).unwrap();
        let rows: Vec<(f64, f64)> = class(&doc, "time")
            .into_iter()
            .map(|n| {
                let t: f64 = text_of(n).trim_end_matches(" ms").parse().unwrap();
                let y: f64 = n.attribute("y").unwrap().parse().unwrap();
                (t, y)
            })
            .collect();
        assert!(rows.len() > 5);
        assert!(rows.windows(2).all(|w| w[0].0 < w[1].0 && w[0].1 < w[1].1));
        // the REGISTER's answer is drawn below its request
        let ex = class(&doc, "exchange");
        let lines: Vec<f64> = ex[0]
            .children()
            .filter(|c| c.has_tag_name("line"))
            .map(|l| l.attribute("y1").unwrap().parse().unwrap())
            .collect();
        assert!(lines[0] < lines[1]);
    }

    #[test]
    fn an_empty_timeline_is_still_a_document() {
        let svg = render(&Timeline::default());
        assert!(roxmltree::Document::parse(&svg).is_ok());
    }

    #[test]
    fn text_is_escaped() {
        assert_eq!(escape("a<b>&\"'\u{1}"), "a&lt;b&gt;&amp;&quot;&apos; ");
    }
}
