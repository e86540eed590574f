//! Property tests for `dsx_filter::Filter`.

use dsx_filter::Filter;
use proptest::prelude::*;

/// A path component: short names with a few awkward characters, never `/`.
fn component() -> impl Strategy<Value = String> {
    "[a-z0-9 ._é-]{1,8}"
}

fn path() -> impl Strategy<Value = Vec<String>> {
    prop::collection::vec(component(), 1..7)
}

proptest! {
    #[test]
    fn empty_filter_matches_every_path(comps in path()) {
        let filter = Filter::parse("").unwrap();
        let p = comps.join("/");
        prop_assert!(filter.matches(&p));
        prop_assert!(filter.may_descend(&p));
    }

    #[test]
    fn exclude_removes_paths_containing_component(
        comps in path(),
        name in "[a-z0-9_é-]{1,8}",
        at in any::<prop::sample::Index>(),
    ) {
        let mut comps = comps;
        let i = at.index(comps.len() + 1);
        comps.insert(i, name.clone());
        let p = comps.join("/");
        // Pure exclude and exclude combined with a catch-all include.
        for spec in [format!("-'{name}'"), format!("** --exclude '{name}'"), format!("'{}' -'{name}'", comps[0])] {
            let filter = Filter::parse(&spec).unwrap();
            prop_assert!(!filter.matches(&p), "{spec:?} matched {p:?}");
        }
        // A directory named like the excluded name is pruned.
        if i + 1 < comps.len() {
            let dir = comps[..=i].join("/");
            let filter = Filter::parse(&format!("-'{name}'")).unwrap();
            prop_assert!(!filter.may_descend(&dir));
        }
    }

    #[test]
    fn exclude_keeps_paths_without_component(comps in path(), name in "[A-Z]{1,8}") {
        let p = comps.join("/");
        let filter = Filter::parse(&format!("-{name}")).unwrap();
        prop_assert!(filter.matches(&p));
    }
}
