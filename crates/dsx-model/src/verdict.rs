//! DSXA verdicts (the scanner's answer), as stored in results and sent to connectors.

use std::fmt;

use serde::{Deserialize, Deserializer, Serialize};
use serde_json::Value;

/// DSXA verdict, with the exact wire spellings.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum VerdictKind {
    Benign,
    Malicious,
    Unknown,
    #[serde(rename = "Unsupported File Type")]
    UnsupportedFileType,
    /// DSXA's transient `Scanning` state is folded into this on input.
    #[serde(rename = "Not Scanned", alias = "Scanning")]
    NotScanned,
    #[serde(rename = "Non Compliant")]
    NonCompliant,
}

impl VerdictKind {
    pub fn as_str(&self) -> &'static str {
        match self {
            VerdictKind::Benign => "Benign",
            VerdictKind::Malicious => "Malicious",
            VerdictKind::Unknown => "Unknown",
            VerdictKind::UnsupportedFileType => "Unsupported File Type",
            VerdictKind::NotScanned => "Not Scanned",
            VerdictKind::NonCompliant => "Non Compliant",
        }
    }
}

impl fmt::Display for VerdictKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// DSXA threat type. Unrecognised values are kept verbatim so a newer DSXA doesn't break parsing.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(from = "String", into = "String")]
pub enum ThreatType {
    Ransomware,
    Backdoor,
    Dropper,
    Pua,
    Spyware,
    Virus,
    Worm,
    Dualuse,
    Other(String),
}

impl ThreatType {
    pub fn as_str(&self) -> &str {
        match self {
            ThreatType::Ransomware => "RANSOMWARE",
            ThreatType::Backdoor => "BACKDOOR",
            ThreatType::Dropper => "DROPPER",
            ThreatType::Pua => "PUA",
            ThreatType::Spyware => "SPYWARE",
            ThreatType::Virus => "VIRUS",
            ThreatType::Worm => "WORM",
            ThreatType::Dualuse => "DUALUSE",
            ThreatType::Other(s) => s,
        }
    }
}

impl From<String> for ThreatType {
    fn from(s: String) -> Self {
        match s.to_ascii_uppercase().as_str() {
            "RANSOMWARE" => ThreatType::Ransomware,
            "BACKDOOR" => ThreatType::Backdoor,
            "DROPPER" => ThreatType::Dropper,
            "PUA" => ThreatType::Pua,
            "SPYWARE" => ThreatType::Spyware,
            "VIRUS" => ThreatType::Virus,
            "WORM" => ThreatType::Worm,
            "DUALUSE" => ThreatType::Dualuse,
            _ => ThreatType::Other(s),
        }
    }
}

impl From<ThreatType> for String {
    fn from(t: ThreatType) -> Self {
        t.as_str().to_string()
    }
}

impl fmt::Display for ThreatType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct VerdictDetails {
    #[serde(alias = "eventDescription", deserialize_with = "opt_string", skip_serializing_if = "Option::is_none")]
    pub event_description: Option<String>,
    #[serde(deserialize_with = "opt_string", skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    #[serde(alias = "threatType", deserialize_with = "opt_threat", skip_serializing_if = "Option::is_none")]
    pub threat_type: Option<ThreatType>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct FileInfo {
    #[serde(alias = "fileType", deserialize_with = "opt_string", skip_serializing_if = "Option::is_none")]
    pub file_type: Option<String>,
    #[serde(alias = "fileSizeInBytes", deserialize_with = "opt_u64", skip_serializing_if = "Option::is_none")]
    pub file_size_in_bytes: Option<u64>,
    #[serde(alias = "fileHash", deserialize_with = "opt_string", skip_serializing_if = "Option::is_none")]
    pub file_hash: Option<String>,
    #[serde(alias = "containerHash", deserialize_with = "opt_string", skip_serializing_if = "Option::is_none")]
    pub container_hash: Option<String>,
    #[serde(alias = "additionalOfficeData", skip_serializing_if = "Option::is_none")]
    pub additional_office_data: Option<Value>,
}

/// DSXA ScanResponse. Serializes snake_case; deserializes the snake_case and nested camelCase shapes.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(try_from = "WireVerdict")]
pub struct Verdict {
    pub scan_guid: String,
    pub verdict: VerdictKind,
    pub verdict_details: VerdictDetails,
    pub file_info: FileInfo,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub protected_entity: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub scan_duration_in_microseconds: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub container_files_scanned: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub container_files_scanned_size: Option<u64>,
    #[serde(rename = "X-Custom-Metadata", skip_serializing_if = "Option::is_none")]
    pub x_custom_metadata: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub last_update_time: Option<String>,
}

impl Verdict {
    /// A verdict with everything but the kind left empty.
    pub fn new(verdict: VerdictKind) -> Self {
        Verdict {
            scan_guid: String::new(),
            verdict,
            verdict_details: VerdictDetails::default(),
            file_info: FileInfo::default(),
            protected_entity: None,
            scan_duration_in_microseconds: None,
            container_files_scanned: None,
            container_files_scanned_size: None,
            x_custom_metadata: None,
            last_update_time: None,
        }
    }

    /// Parses a DSXA response body (either shape).
    pub fn from_json(bytes: &[u8]) -> Result<Verdict, serde_json::Error> {
        serde_json::from_slice(bytes)
    }

    pub fn is_malicious(&self) -> bool {
        self.verdict == VerdictKind::Malicious
    }

    /// `Not Scanned` because the scanner is still warming up is not a real verdict: the text that
    /// says so ("initializing", any case, in the reason or event description), if any.
    pub fn initializing_reason(&self) -> Option<&str> {
        if self.verdict != VerdictKind::NotScanned {
            return None;
        }
        let d = &self.verdict_details;
        [&d.reason, &d.event_description]
            .into_iter()
            .flatten()
            .find(|text| text.to_ascii_lowercase().contains("initializing"))
            .map(String::as_str)
    }
}

#[derive(Deserialize, Default)]
#[serde(default)]
struct WireDetails {
    #[serde(alias = "verdictDetails")]
    verdict_details: Option<VerdictDetails>,
    #[serde(alias = "fileInfo")]
    file_info: Option<FileInfo>,
}

#[derive(Deserialize, Default)]
#[serde(default)]
struct WireVerdict {
    #[serde(alias = "scanGuid", deserialize_with = "opt_string")]
    scan_guid: Option<String>,
    verdict: Option<VerdictKind>,
    #[serde(alias = "verdictDetails")]
    verdict_details: Option<VerdictDetails>,
    #[serde(alias = "fileInfo")]
    file_info: Option<FileInfo>,
    details: Option<WireDetails>,
    #[serde(alias = "protectedEntity", deserialize_with = "opt_u64")]
    protected_entity: Option<u64>,
    #[serde(alias = "scanDurationInMicroseconds", deserialize_with = "opt_u64")]
    scan_duration_in_microseconds: Option<u64>,
    #[serde(alias = "containerFilesScanned", deserialize_with = "opt_u64")]
    container_files_scanned: Option<u64>,
    #[serde(alias = "containerFilesScannedSize", deserialize_with = "opt_u64")]
    container_files_scanned_size: Option<u64>,
    #[serde(
        rename = "X-Custom-Metadata",
        alias = "x_custom_metadata",
        alias = "xCustomMetadata",
        deserialize_with = "opt_string"
    )]
    x_custom_metadata: Option<String>,
    #[serde(alias = "lastUpdateTime", deserialize_with = "opt_string")]
    last_update_time: Option<String>,
}

impl TryFrom<WireVerdict> for Verdict {
    type Error = String;

    fn try_from(w: WireVerdict) -> Result<Self, String> {
        let verdict = w.verdict.ok_or_else(|| "missing field `verdict`".to_string())?;
        let details = w.details.unwrap_or_default();
        Ok(Verdict {
            scan_guid: w.scan_guid.unwrap_or_default(),
            verdict,
            // Top-level (snake_case) wins over the nested camelCase `details` block.
            verdict_details: w.verdict_details.or(details.verdict_details).unwrap_or_default(),
            file_info: w.file_info.or(details.file_info).unwrap_or_default(),
            protected_entity: w.protected_entity,
            scan_duration_in_microseconds: w.scan_duration_in_microseconds,
            container_files_scanned: w.container_files_scanned,
            container_files_scanned_size: w.container_files_scanned_size,
            x_custom_metadata: w.x_custom_metadata,
            last_update_time: w.last_update_time,
        })
    }
}

// Lenient scalars: DSXA versions differ on numbers-as-strings and nulls.
fn opt_string<'de, D: Deserializer<'de>>(d: D) -> Result<Option<String>, D::Error> {
    Ok(match Option::<Value>::deserialize(d)? {
        None | Some(Value::Null) => None,
        Some(Value::String(s)) => Some(s),
        Some(v @ (Value::Number(_) | Value::Bool(_))) => Some(v.to_string()),
        Some(other) => return Err(serde::de::Error::custom(format!("expected string, got {other}"))),
    })
}

fn opt_u64<'de, D: Deserializer<'de>>(d: D) -> Result<Option<u64>, D::Error> {
    let bad = |v: &Value| serde::de::Error::custom(format!("expected non-negative integer, got {v}"));
    Ok(match Option::<Value>::deserialize(d)? {
        None | Some(Value::Null) => None,
        Some(Value::Number(n)) => match (n.as_u64(), n.as_f64()) {
            (Some(u), _) => Some(u),
            (None, Some(f)) if f >= 0.0 && f.fract() == 0.0 && f < u64::MAX as f64 => Some(f as u64),
            _ => return Err(bad(&Value::Number(n))),
        },
        Some(Value::String(s)) if s.trim().is_empty() => None,
        Some(Value::String(s)) => Some(s.trim().parse().map_err(|_| bad(&Value::String(s.clone())))?),
        Some(other) => return Err(bad(&other)),
    })
}

fn opt_threat<'de, D: Deserializer<'de>>(d: D) -> Result<Option<ThreatType>, D::Error> {
    Ok(opt_string(d)?.filter(|s| !s.trim().is_empty()).map(ThreatType::from))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn snake_case_shape() {
        let body = br#"{
            "scan_guid": "abc123",
            "verdict": "Malicious",
            "verdict_details": {"event_description": "File identified as malicious", "reason": "EICAR", "threat_type": "VIRUS"},
            "file_info": {"file_type": "TextFile", "file_size_in_bytes": 68, "file_hash": "275a02", "container_hash": "c1",
                          "additional_office_data": {"x": 1}},
            "protected_entity": 1,
            "scan_duration_in_microseconds": 1234,
            "container_files_scanned": 0,
            "container_files_scanned_size": 0,
            "X-Custom-Metadata": "file-loc:a",
            "last_update_time": "2024-01-01",
            "some_future_field": [1, 2, 3]
        }"#;
        let v = Verdict::from_json(body).unwrap();
        assert_eq!(v.scan_guid, "abc123");
        assert_eq!(v.verdict, VerdictKind::Malicious);
        assert!(v.is_malicious());
        assert_eq!(v.verdict_details.reason.as_deref(), Some("EICAR"));
        assert_eq!(v.verdict_details.threat_type, Some(ThreatType::Virus));
        assert_eq!(v.file_info.file_size_in_bytes, Some(68));
        assert_eq!(v.file_info.file_hash.as_deref(), Some("275a02"));
        assert_eq!(v.file_info.container_hash.as_deref(), Some("c1"));
        assert_eq!(v.file_info.additional_office_data, Some(serde_json::json!({"x": 1})));
        assert_eq!(v.protected_entity, Some(1));
        assert_eq!(v.scan_duration_in_microseconds, Some(1234));
        assert_eq!(v.x_custom_metadata.as_deref(), Some("file-loc:a"));
        assert_eq!(v.last_update_time.as_deref(), Some("2024-01-01"));
    }

    #[test]
    fn camel_case_nested_shape_normalizes() {
        let body = br#"{
            "scanGuid": "g1",
            "verdict": "Malicious",
            "details": {
                "verdictDetails": {"eventDescription": "bad", "reason": "sig", "threatType": "ransomware"},
                "fileInfo": {"fileType": "PE", "fileSizeInBytes": "4096", "fileHash": "ff"}
            },
            "scanDurationInMicroseconds": 77,
            "protectedEntity": "3"
        }"#;
        let v = Verdict::from_json(body).unwrap();
        assert_eq!(v.scan_guid, "g1");
        assert_eq!(v.verdict_details.event_description.as_deref(), Some("bad"));
        assert_eq!(v.verdict_details.threat_type, Some(ThreatType::Ransomware));
        assert_eq!(v.file_info.file_type.as_deref(), Some("PE"));
        assert_eq!(v.file_info.file_size_in_bytes, Some(4096));
        assert_eq!(v.scan_duration_in_microseconds, Some(77));
        assert_eq!(v.protected_entity, Some(3));

        // Output is always snake_case.
        let out = serde_json::to_value(&v).unwrap();
        assert_eq!(out["scan_guid"], "g1");
        assert_eq!(out["verdict_details"]["threat_type"], "RANSOMWARE");
        assert_eq!(out["file_info"]["file_size_in_bytes"], 4096);
        assert_eq!(out["scan_duration_in_microseconds"], 77);
        assert!(out.get("scanGuid").is_none() && out.get("details").is_none());
        // And round-trips.
        assert_eq!(Verdict::from_json(&serde_json::to_vec(&v).unwrap()).unwrap(), v);
    }

    #[test]
    fn all_verdict_spellings() {
        let cases = [
            ("Benign", VerdictKind::Benign),
            ("Malicious", VerdictKind::Malicious),
            ("Unknown", VerdictKind::Unknown),
            ("Unsupported File Type", VerdictKind::UnsupportedFileType),
            ("Not Scanned", VerdictKind::NotScanned),
            ("Scanning", VerdictKind::NotScanned),
            ("Non Compliant", VerdictKind::NonCompliant),
        ];
        for (wire, kind) in cases {
            let v = Verdict::from_json(format!(r#"{{"verdict":"{wire}"}}"#).as_bytes()).unwrap();
            assert_eq!(v.verdict, kind, "{wire}");
            assert_eq!(v.is_malicious(), kind == VerdictKind::Malicious);
            let out = serde_json::to_value(&v).unwrap();
            let expect = if wire == "Scanning" { "Not Scanned" } else { wire };
            assert_eq!(out["verdict"], expect);
            assert_eq!(kind.to_string(), expect);
        }
    }

    #[test]
    fn missing_optionals_default_and_bad_input_fails() {
        let v = Verdict::from_json(br#"{"verdict":"Benign","verdict_details":null}"#).unwrap();
        assert_eq!(v.scan_guid, "");
        assert_eq!(v.verdict_details, VerdictDetails::default());
        assert_eq!(v.file_info, FileInfo::default());
        let out = serde_json::to_value(&v).unwrap();
        assert_eq!(out, serde_json::json!({"scan_guid":"","verdict":"Benign","verdict_details":{},"file_info":{}}));

        for bad in [&b"{}"[..], b"not json", br#"{"verdict":"Evil"}"#, br#"[1]"#] {
            assert!(Verdict::from_json(bad).is_err(), "{}", String::from_utf8_lossy(bad));
        }
    }

    #[test]
    fn threat_type_unknown_kept_and_empty_is_none() {
        let v = Verdict::from_json(br#"{"verdict":"Malicious","verdict_details":{"threat_type":"ROOTKIT"}}"#).unwrap();
        assert_eq!(v.verdict_details.threat_type, Some(ThreatType::Other("ROOTKIT".into())));
        let v = Verdict::from_json(br#"{"verdict":"Benign","verdict_details":{"threat_type":""}}"#).unwrap();
        assert_eq!(v.verdict_details.threat_type, None);
    }

    #[test]
    fn initializing_reason_only_for_not_scanned() {
        let v = Verdict::from_json(br#"{"verdict":"Not Scanned","verdict_details":{"reason":"Scanner Initializing"}}"#)
            .unwrap();
        assert_eq!(v.initializing_reason(), Some("Scanner Initializing"));
        let v =
            Verdict::from_json(br#"{"verdict":"Not Scanned","verdict_details":{"reason":"File too large"}}"#).unwrap();
        assert_eq!(v.initializing_reason(), None);
        let v = Verdict::from_json(br#"{"verdict":"Benign","verdict_details":{"reason":"initializing"}}"#).unwrap();
        assert_eq!(v.initializing_reason(), None);
    }
}
