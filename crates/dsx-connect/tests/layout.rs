//! The server library depends on no connector: only the `dsx-connect` binary (the
//! dsx-connect-cli package) composes one, for the quickstart.

#[test]
fn server_library_depends_on_no_connector() {
    let manifest = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/Cargo.toml")).unwrap();
    let mut section = String::new();
    let mut checked = 0;
    for line in manifest.lines().map(str::trim) {
        if line.starts_with('[') {
            section = line.to_owned();
            continue;
        }
        // Normal and build dependencies end up in the library; dev-dependencies do not.
        if !(section == "[dependencies]" || section == "[build-dependencies]") || line.starts_with('#') {
            continue;
        }
        let Some(name) = line.split(['=', '.']).next().map(str::trim).filter(|n| !n.is_empty()) else { continue };
        checked += 1;
        assert!(!name.contains("connector"), "the server library must not depend on {name}");
        assert!(!line.contains("connectors/"), "the server library must not depend on {line}");
    }
    assert!(checked > 10, "parsed the [dependencies] section ({checked} entries)");
}
