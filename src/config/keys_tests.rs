//! The key table against the template etc/bms_config.toml: every key of the
//! table is in it (set, or commented out as an example), in its section, and
//! every key it sets or shows is in the table; and each constant of the
//! table is named as its key.

use super::TEMPLATE;
use super::keys::{SECTIONS, SPELLED, top};
use std::collections::BTreeSet;

/// A section header, `[name]` or `[[name]]`, set or commented out; not a
/// bracketed comment such as "[soc_from, soc_to] in %".
fn header(line: &str) -> Option<&str> {
    let name = line.strip_prefix("[[").and_then(|l| l.strip_suffix("]]"));
    let name = name.or_else(|| line.strip_prefix('[').and_then(|l| l.strip_suffix(']')))?;
    name.chars().all(|c| c.is_ascii_lowercase() || c == '-').then_some(name)
}

/// An upper-case key as the file spells them: "I-LIM-CHARGE", "RS485-MODE".
fn is_key(word: &str) -> bool {
    word.starts_with(|c: char| c.is_ascii_uppercase())
        && word
            .chars()
            .all(|c| c.is_ascii_uppercase() || c.is_ascii_digit() || c == '-')
}

/// (section, key) for every `KEY = value` line of the template and every
/// `# KEY = value` example, the section "" before the first header; and the
/// sections' names.
fn template_keys() -> (BTreeSet<(String, String)>, BTreeSet<String>) {
    let (mut keys, mut sections) = (BTreeSet::new(), BTreeSet::new());
    let mut section = "";
    for line in TEMPLATE.lines() {
        let line = line.strip_prefix("# ").unwrap_or(line).trim();
        if let Some(name) = header(line) {
            section = name;
            sections.insert(name.to_string());
        } else if let Some((key, _)) = line.split_once(" = ")
            && is_key(key)
        {
            keys.insert((section.to_string(), key.to_string()));
        }
    }
    (keys, sections)
}

/// (section, key) for every key of the table.
fn table_keys() -> BTreeSet<(String, String)> {
    let top = top::ALL.iter().map(|key| ("", *key));
    let sections = SECTIONS
        .iter()
        .flat_map(|(name, keys)| keys.iter().map(move |key| (*name, *key)));
    top.chain(sections)
        .map(|(s, k)| (s.to_string(), k.to_string()))
        .collect()
}

#[test]
fn the_template_has_every_key_of_the_table_and_no_other() {
    let (template, _) = template_keys();
    let table = table_keys();
    let missing: Vec<_> = table.difference(&template).collect();
    assert!(missing.is_empty(), "in the key table, not in the template: {missing:?}");
    let unknown: Vec<_> = template.difference(&table).collect();
    assert!(unknown.is_empty(), "in the template, not in the key table: {unknown:?}");
}

#[test]
fn the_template_has_every_section_of_the_table_and_no_other() {
    let (_, template) = template_keys();
    let table: BTreeSet<String> = SECTIONS.iter().map(|(name, _)| name.to_string()).collect();
    assert_eq!(template, table);
}

/// Worked out by hand from the template: 2 top-level keys, 19 in
/// `[battery]`, 9 in `[[bmses-in]]` (4 only in the commented serial
/// example), 16 in `[[bmses-out]]`, 19 in `[mqtt]`, 2 each in `[http]`,
/// `[recorder]` and `[can]`; so the reading above neither misses nor invents.
#[test]
fn the_template_reading_finds_the_keys_counted_by_hand() {
    let (keys, sections) = template_keys();
    let count = |section: &str| keys.iter().filter(|(s, _)| s == section).count();
    let counts: Vec<usize> = [
        "",
        "battery",
        "bmses-in",
        "bmses-out",
        "mqtt",
        "http",
        "recorder",
        "can",
    ]
    .into_iter()
    .map(count)
    .collect();
    assert_eq!(counts, [2, 19, 9, 16, 19, 2, 2, 2]);
    assert_eq!(sections.len(), 7);
}

#[test]
fn each_constant_is_named_as_its_key_and_no_key_is_listed_twice() {
    for section in SPELLED {
        for (constant, key) in *section {
            assert_eq!(constant.replace('_', "-"), *key);
        }
        let distinct: BTreeSet<&str> = section.iter().map(|(_, key)| *key).collect();
        assert_eq!(distinct.len(), section.len());
    }
}

#[test]
fn the_top_level_allows_its_keys_then_the_sections() {
    let want = [
        "GATEWAY-ACTIVATED",
        "STATE-DIR",
        "battery",
        "bmses-in",
        "bmses-out",
        "mqtt",
        "http",
        "recorder",
        "can",
    ];
    assert_eq!(super::keys::top_level(), want);
}
