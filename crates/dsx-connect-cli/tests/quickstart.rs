//! The README's run command, as a test: `dsx-connect quickstart --exit-after-scan` scans its
//! sample folder with auth on and quarantines the EICAR files.

use std::time::Duration;

use dsx_testkit::{free_port, Service};

/// `quickstart --exit-after-scan` in `dir` on `port`: its exit code and output.
fn quickstart_once(dir: &std::path::Path, port: u16) -> (Option<i32>, String) {
    let listen = format!("127.0.0.1:{port}");
    let args = ["quickstart", "--exit-after-scan", "--listen", &listen, "--data-dir", dir.to_str().unwrap()];
    let mut svc = Service::spawn(env!("CARGO_BIN_EXE_dsx-connect"), &args, &[], port);
    let code = svc.wait_exit(Duration::from_secs(120));
    (code, svc.logs())
}

#[test]
fn quickstart_scans_the_sample_folder_and_quarantines_eicar() {
    let dir = tempfile::tempdir().unwrap();
    let (code, out) = quickstart_once(dir.path(), free_port());
    assert_eq!(code, Some(0), "{out}");
    assert!(out.contains("auth enabled"), "{out}");
    assert!(out.lines().any(|l| l.trim_start().starts_with("files scanned") && l.trim_end().ends_with("10")), "{out}");
    assert!(out.lines().any(|l| l.trim_start().starts_with("Malicious") && l.trim_end().ends_with('2')), "{out}");
    // The relative path is kept under the quarantine (Python 1.x layout).
    let quarantine = dir.path().join("sample/dsxconnect-quarantine/downloads");
    let mut names: Vec<_> = std::fs::read_dir(&quarantine).unwrap().map(|e| e.unwrap().file_name()).collect();
    names.sort();
    assert_eq!(names, ["eicar-0.com", "eicar-1.com"]);
    assert!(!dir.path().join("sample/downloads/eicar-0.com").exists());
    // Secrets stay in memory: no token or key in the connector's data folder.
    let connector_files: Vec<_> =
        std::fs::read_dir(dir.path().join("connector")).unwrap().map(|e| e.unwrap().file_name()).collect();
    assert_eq!(connector_files, ["connector_uuid.txt"]);
}

/// The quickstart, run again and again in the same folder: each run unregisters its connector
/// (signed) before its server stops, so the next one enrolls at its new URL at once (no
/// `409 url_conflict`, no `full scan refused: 502`); each waits for the connector's own
/// readiness (no `401 unknown_key_id`); each summary counts that run's files only. The banner
/// names the web UI and a ready-to-paste CLI line.
#[test]
fn quickstart_runs_three_times_in_the_same_folder() {
    let dir = tempfile::tempdir().unwrap();
    for run in 1..=3 {
        let port = free_port();
        let (code, out) = quickstart_once(dir.path(), port);
        assert_eq!(code, Some(0), "run {run}: {out}");
        let line = |label: &str| {
            out.lines()
                .find(|l| l.trim_start().starts_with(label))
                .map(|l| l.trim_start()[label.len()..].trim().to_owned())
                .unwrap_or_else(|| panic!("run {run}: no {label:?} line: {out}"))
        };
        assert_eq!(line("files scanned"), "10", "run {run}: {out}");
        assert_eq!(line("Malicious"), "2", "run {run}: {out}");
        assert_eq!(line("quarantined (this run)"), "2", "run {run}: only this run's files: {out}");
        let base = format!("http://127.0.0.1:{port}");
        assert_eq!(line("web UI:"), format!("{base}/   (sign in with the operator token)"), "{out}");
        let token = line("operator token:").split_whitespace().next().unwrap().to_owned();
        assert!(
            out.lines().any(|l| l.trim() == format!("export DSXCONNECT_URL={base} DSXCONNECT_OPERATOR_TOKEN={token}")),
            "run {run}: a ready-to-paste export line: {out}"
        );
        assert!(!out.contains("unregister failed") && !out.contains("unregister timed out"), "run {run}: {out}");
    }
    // Every run's EICAR copies are in the quarantine, none overwritten.
    let quarantine = dir.path().join("sample/dsxconnect-quarantine");
    let count = walk(&quarantine);
    assert_eq!(count, 6, "three runs, two EICAR files each");
}

fn walk(dir: &std::path::Path) -> usize {
    std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap())
        .map(|e| if e.file_type().unwrap().is_dir() { walk(&e.path()) } else { 1 })
        .sum()
}

/// Ctrl-C while serving after the scan: the connector unregisters (signed) before the server
/// stops, the process exits 0, and the next run in the same folder works at once. A run killed
/// outright (SIGKILL, no unregister) does not block the next one either.
#[test]
fn quickstart_after_ctrl_c_or_a_kill_runs_again_in_the_same_folder() {
    let dir = tempfile::tempdir().unwrap();
    let spawn = |exit_after_scan: bool| {
        let port = free_port();
        let listen = format!("127.0.0.1:{port}");
        let mut args = vec!["quickstart", "--listen", &listen, "--data-dir", dir.path().to_str().unwrap()];
        if exit_after_scan {
            args.push("--exit-after-scan");
        }
        Service::spawn(
            env!("CARGO_BIN_EXE_dsx-connect"),
            &args,
            &[("DSXCONNECT_LOG_LEVEL", "warn,dsx_connector=info".into())],
            port,
        )
    };
    let wait_serving = |svc: &Service| {
        let deadline = std::time::Instant::now() + Duration::from_secs(120);
        while !svc.logs().contains("press Ctrl-C to stop") {
            assert!(std::time::Instant::now() < deadline, "{}", svc.logs());
            std::thread::sleep(Duration::from_millis(100));
        }
    };

    let mut serving = spawn(false);
    wait_serving(&serving);
    serving.signal("INT");
    let code = serving.wait_exit(Duration::from_secs(30));
    let out = serving.logs();
    assert_eq!(code, Some(0), "{out}");
    assert!(out.contains("unregistered from dsx-connect"), "the connector unregistered on Ctrl-C: {out}");

    let mut killed = spawn(false);
    wait_serving(&killed);
    killed.signal("KILL");
    killed.wait_exit(Duration::from_secs(10));

    let mut again = spawn(true);
    let code = again.wait_exit(Duration::from_secs(120));
    let out = again.logs();
    assert_eq!(code, Some(0), "{out}");
    assert!(out.lines().any(|l| l.trim_start().starts_with("Malicious") && l.trim_end().ends_with('2')), "{out}");
    assert!(out.contains("unregistered from dsx-connect"), "{out}");
}
