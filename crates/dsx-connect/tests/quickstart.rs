//! The README's run command, as a test: `dsx-connect quickstart --exit-after-scan` scans its
//! sample folder with auth on and quarantines the EICAR files.

use std::time::Duration;

use dsx_testkit::{free_port, Service};

#[test]
fn quickstart_scans_the_sample_folder_and_quarantines_eicar() {
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let mut svc = Service::spawn(
        env!("CARGO_BIN_EXE_dsx-connect"),
        &[
            "quickstart",
            "--exit-after-scan",
            "--listen",
            &format!("127.0.0.1:{port}"),
            "--data-dir",
            dir.path().to_str().unwrap(),
        ],
        &[],
        port,
    );
    let code = svc.wait_exit(Duration::from_secs(120));
    let out = svc.logs();
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
