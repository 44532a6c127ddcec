//! `docs/events.md` lists every JSON event the command line prints: each
//! `"event": "NAME"` written in `crates/siproam-cli/src` has its `###`
//! section, and each documented event is still printed somewhere.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)]

use std::collections::BTreeSet;
use std::path::Path;

fn emitted() -> BTreeSet<String> {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut names = BTreeSet::new();
    for entry in std::fs::read_dir(&src).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_none_or(|e| e != "rs") {
            continue;
        }
        let text = std::fs::read_to_string(&path).unwrap();
        // the tests inside a module feed made-up events to parsers
        let code = text.split("#[cfg(test)]").next().unwrap();
        for part in code.split("\"event\": \"").skip(1) {
            let name: String = part
                .chars()
                .take_while(|c| c.is_ascii_lowercase() || *c == '_')
                .collect();
            if !name.is_empty() && part[name.len()..].starts_with('"') {
                names.insert(name);
            }
        }
    }
    names
}

fn documented() -> BTreeSet<String> {
    let doc = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../docs/events.md");
    std::fs::read_to_string(doc)
        .unwrap()
        .lines()
        .filter_map(|l| l.strip_prefix("### `"))
        .map(|l| l.trim_end_matches('`').to_owned())
        .collect()
}

#[test]
fn every_event_printed_is_documented_and_every_documented_one_printed() {
    let emitted = emitted();
    let documented = documented();
    assert!(emitted.len() >= 15, "the scan found too few: {emitted:?}");
    let missing: Vec<_> = emitted.difference(&documented).collect();
    assert!(missing.is_empty(), "not in docs/events.md: {missing:?}");
    let stale: Vec<_> = documented.difference(&emitted).collect();
    assert!(
        stale.is_empty(),
        "documented but printed nowhere: {stale:?}"
    );
}
