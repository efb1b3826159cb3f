//! The module map's rule, checked: every module belongs to one layer of the
//! map in lib.rs's doc, its code imports (any `crate::` path) only from its
//! own layer or the ones below, and no modules' code imports each other in a
//! cycle (in src/ and in the core crate's core/src/). Unit tests are left
//! out: a test may check a rule through a higher layer (a combine test
//! reading the frames a profile makes of it) without the code depending on it.
//!
//! The layers are read from lib.rs's doc, so the map people read and the
//! rule the test checks cannot drift apart.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// Module name to layer number (1 = lowest), read from a crate root's doc:
/// an item `//! N. **Name** ...` names its modules as links [`module`],
/// up to the next item or the end of the doc.
fn layers_of(lib_rs: &str) -> BTreeMap<String, usize> {
    let mut layers = BTreeMap::new();
    let mut current = None;
    for line in lib_rs.lines() {
        let Some(doc) = line.strip_prefix("//!") else {
            break;
        };
        let doc = doc.trim_start();
        if let Some((number, rest)) = doc.split_once(". **")
            && let Ok(n) = number.parse::<usize>()
            && rest.contains("**")
        {
            current = Some(n);
        }
        let Some(layer) = current else { continue };
        for link in doc.split("[`").skip(1) {
            if let Some((name, _)) = link.split_once("`]") {
                let old = layers.insert(name.to_string(), layer);
                assert!(old.is_none(), "{name} is named twice in the module map");
            }
        }
    }
    layers
}

/// The modules a source file's code names by `crate::` paths (use lines,
/// brace groups over several lines, and paths inline in code); comments,
/// doc comments and the unit tests (from the first `#[cfg(test)]` on: the
/// test module comes last, clippy's `items_after_test_module`) are left out.
fn imports(source: &str) -> BTreeSet<String> {
    let code: String = source
        .lines()
        .take_while(|line| line.trim() != "#[cfg(test)]")
        .map(|line| line.split("//").next().unwrap_or(""))
        .collect::<Vec<_>>()
        .join("\n");
    let mut found = BTreeSet::new();
    let mut rest = code.as_str();
    while let Some(at) = rest.find("crate::") {
        let before = rest[..at].chars().next_back();
        rest = &rest[at + "crate::".len()..];
        if before.is_some_and(|c| c.is_alphanumeric() || c == '_') {
            continue;
        }
        if let Some(group) = rest.strip_prefix('{') {
            let end = closing_brace(group);
            for item in split_top_level(&group[..end]) {
                found.insert(first_segment(item));
            }
        } else {
            found.insert(first_segment(rest));
        }
    }
    found.retain(|m| !m.is_empty() && m != "self");
    found
}

/// The position of the `}` closing a group whose `{` was just before `s`.
fn closing_brace(s: &str) -> usize {
    let mut depth = 0;
    for (i, c) in s.char_indices() {
        match c {
            '{' => depth += 1,
            '}' if depth == 0 => return i,
            '}' => depth -= 1,
            _ => {}
        }
    }
    s.len()
}

/// The items of a brace group, split at its own commas (not nested ones).
fn split_top_level(group: &str) -> Vec<&str> {
    let (mut items, mut depth, mut start) = (Vec::new(), 0, 0);
    for (i, c) in group.char_indices() {
        match c {
            '{' => depth += 1,
            '}' => depth -= 1,
            ',' if depth == 0 => {
                items.push(&group[start..i]);
                start = i + 1;
            }
            _ => {}
        }
    }
    items.push(&group[start..]);
    items
}

/// The identifier a path starts with.
fn first_segment(path: &str) -> String {
    path.trim_start()
        .chars()
        .take_while(|c| c.is_alphanumeric() || *c == '_')
        .collect()
}

/// Every .rs file under `dir`.
fn rust_files(dir: &Path) -> Vec<PathBuf> {
    let mut files = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display())) {
        let path = entry.expect("directory entry").path();
        if path.is_dir() {
            files.extend(rust_files(&path));
        } else if path.extension().is_some_and(|e| e == "rs") {
            files.push(path);
        }
    }
    files
}

/// Whether `file` holds only unit tests (tests.rs, reload_tests.rs).
fn is_test_file(file: &Path) -> bool {
    file.file_stem()
        .is_some_and(|stem| stem == "tests" || stem.to_string_lossy().ends_with("_tests"))
}

/// Module (the first component under `src`) to the modules its code
/// imports, itself left out. The crate root files (lib.rs, main.rs) are not
/// modules of the map; nor is this test.
fn import_graph(src: &Path) -> BTreeMap<String, BTreeSet<String>> {
    let mut graph: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for file in rust_files(src).into_iter().filter(|f| !is_test_file(f)) {
        let relative = file.strip_prefix(src).expect("under src");
        let first = relative.components().next().expect("a component");
        let module = first.as_os_str().to_string_lossy().trim_end_matches(".rs").to_string();
        if ["lib", "main", "layers"].contains(&module.as_str()) {
            continue;
        }
        let text = std::fs::read_to_string(&file).expect("readable source");
        let mut targets = imports(&text);
        targets.remove(&module);
        graph.entry(module).or_default().extend(targets);
    }
    graph
}

/// "a (layer m) imports b (layer n)" for every import of a higher layer,
/// and "a: not in the map" for a module or target the map does not name.
fn upward_imports(graph: &BTreeMap<String, BTreeSet<String>>, layers: &BTreeMap<String, usize>) -> Vec<String> {
    let mut wrong = Vec::new();
    for (module, targets) in graph {
        let Some(&own) = layers.get(module) else {
            wrong.push(format!("{module}: not in the module map"));
            continue;
        };
        for target in targets {
            match layers.get(target) {
                None => wrong.push(format!("{module} imports {target}, which is not in the module map")),
                Some(&theirs) if theirs > own => {
                    wrong.push(format!("{module} (layer {own}) imports {target} (layer {theirs})"));
                }
                Some(_) => {}
            }
        }
    }
    wrong
}

/// One import cycle, as the modules along it, if there is any.
fn a_cycle(graph: &BTreeMap<String, BTreeSet<String>>) -> Option<Vec<String>> {
    fn visit(
        node: &str,
        graph: &BTreeMap<String, BTreeSet<String>>,
        path: &mut Vec<String>,
        done: &mut BTreeSet<String>,
    ) -> Option<Vec<String>> {
        if let Some(start) = path.iter().position(|m| m == node) {
            let mut cycle = path[start..].to_vec();
            cycle.push(node.to_string());
            return Some(cycle);
        }
        if done.contains(node) {
            return None;
        }
        path.push(node.to_string());
        for next in graph.get(node).into_iter().flatten() {
            if let Some(cycle) = visit(next, graph, path, done) {
                return Some(cycle);
            }
        }
        path.pop();
        done.insert(node.to_string());
        None
    }
    let mut done = BTreeSet::new();
    graph.keys().find_map(|m| visit(m, graph, &mut Vec::new(), &mut done))
}

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// The map of lib.rs, plus the unit tests' configuration text (a private
/// test helper, tests/config_text, at the configuration layer).
fn the_map() -> BTreeMap<String, usize> {
    let lib = std::fs::read_to_string(root().join("src/lib.rs")).expect("lib.rs");
    let mut layers = layers_of(&lib);
    let configuration = layers["config"];
    layers.insert("config_text".into(), configuration);
    layers
}

#[test]
fn no_module_imports_from_a_layer_above_its_own() {
    let wrong = upward_imports(&import_graph(&root().join("src")), &the_map());
    assert!(
        wrong.is_empty(),
        "against the module map in lib.rs:\n{}",
        wrong.join("\n")
    );
}

#[test]
fn every_module_of_the_crate_is_in_the_map() {
    let layers = the_map();
    let lib = std::fs::read_to_string(root().join("src/lib.rs")).expect("lib.rs");
    let mut declared: Vec<String> = lib
        .lines()
        .filter_map(|l| l.strip_prefix("pub mod "))
        .map(|l| l.trim_end_matches(';').to_string())
        .collect();
    // The re-export, on one line or as rustfmt wraps a long one.
    let start = lib.find("pub use bms_core::{").expect("the core's re-export") + "pub use bms_core::{".len();
    let core = &lib[start..start + lib[start..].find("};").expect("the re-export's end")];
    declared.extend(core.split(',').map(|m| m.trim().to_string()).filter(|m| !m.is_empty()));
    let missing: Vec<&String> = declared.iter().filter(|m| !layers.contains_key(*m)).collect();
    assert!(missing.is_empty(), "not in the module map: {missing:?}");
    let core_layer = layers["frame"];
    let core_modules: BTreeSet<String> = import_graph(&root().join("core/src")).into_keys().collect();
    for m in &core_modules {
        assert_eq!(layers.get(m), Some(&core_layer), "{m} is in the core crate");
    }
}

#[test]
fn no_import_cycles() {
    for src in ["src", "core/src"] {
        let cycle = a_cycle(&import_graph(&root().join(src)));
        assert_eq!(cycle, None, "an import cycle in {src}");
    }
}

// The checker itself, on hand-made inputs.

#[test]
fn imports_finds_use_lines_groups_and_inline_paths_but_not_comments_or_tests() {
    let source = "use crate::can::{CanPort, Wake};\n\
                  use crate::{shutdown, status::{Slot, LinkState}};\n\
                  use crate::{\n    alpha,\n    beta::Gamma,\n};\n\
                  //! see crate::mqtt\n\
                  let x = crate::clock::unix(t); // crate::http\n\
                  pub(crate) fn f() {}\n\
                  use bms_crate::nothing;\n\
                  #[cfg(test)]\n\
                  mod tests {\n    use crate::only_in_tests;\n}\n";
    let want: BTreeSet<String> = ["alpha", "beta", "can", "clock", "shutdown", "status"]
        .into_iter()
        .map(String::from)
        .collect();
    assert_eq!(imports(source), want);
}

#[test]
fn test_files_are_told_from_code() {
    assert!(is_test_file(Path::new("src/combine/tests.rs")));
    assert!(is_test_file(Path::new("src/combine/reload_tests.rs")));
    assert!(!is_test_file(Path::new("src/combine.rs")));
    assert!(!is_test_file(Path::new("src/tests_helper.rs")));
}

#[test]
fn the_map_is_read_from_numbered_items() {
    let doc = "//! Intro naming [`nothing`]\n//!\n//! 1. **Low**: [`a`],\n//!    [`b`].\n//! 2. **High**: [`c`].\n\npub mod a;\n//! [`late`]\n";
    let want: BTreeMap<String, usize> = [("a", 1), ("b", 1), ("c", 2)].map(|(m, l)| (m.to_string(), l)).into();
    assert_eq!(layers_of(doc), want);
}

#[test]
fn an_upward_import_and_a_cycle_are_found() {
    let layers: BTreeMap<String, usize> = [("low", 1), ("high", 2)].map(|(m, l)| (m.to_string(), l)).into();
    let graph = |edges: &[(&str, &str)]| {
        let mut g: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
        for (from, to) in edges {
            g.entry(from.to_string()).or_default().insert(to.to_string());
        }
        g
    };
    assert!(upward_imports(&graph(&[("high", "low")]), &layers).is_empty());
    assert_eq!(
        upward_imports(&graph(&[("low", "high")]), &layers),
        vec!["low (layer 1) imports high (layer 2)"]
    );
    assert_eq!(a_cycle(&graph(&[("high", "low")])), None);
    assert_eq!(
        a_cycle(&graph(&[("high", "low"), ("low", "high")])),
        Some(vec!["high".to_string(), "low".to_string(), "high".to_string()])
    );
}
