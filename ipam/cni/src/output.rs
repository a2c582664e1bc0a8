//! What the plugin prints: results, error objects, the VERSION answer.

use crate::conf::SUPPORTED_VERSIONS;
use crate::error::CniError;
use serde_json::{json, Value};

pub fn version_result() -> Value {
    json!({ "cniVersion": "1.1.0", "supportedVersions": SUPPORTED_VERSIONS })
}

/// What the plugin prints on stdout and its exit status, for an outcome
/// of an invocation whose stdin was `stdin`.
pub fn output(outcome: &Result<Option<Value>, CniError>, stdin: &[u8]) -> (String, u8) {
    match outcome {
        Ok(None) => (String::new(), 0),
        Ok(Some(v)) => (format!("{v}\n"), 0),
        Err(e) => (format!("{}\n", e.to_json(&version_of(stdin))), 1),
    }
}

/// The cniVersion to answer errors in: the config's if it has one.
pub fn version_of(stdin: &[u8]) -> String {
    #[derive(serde::Deserialize)]
    struct Version {
        #[serde(rename = "cniVersion")]
        cni_version: Option<String>,
    }
    serde_json::from_slice::<Version>(stdin)
        .ok()
        .and_then(|v| v.cni_version)
        .filter(|v| SUPPORTED_VERSIONS.contains(&v.as_str()))
        .unwrap_or_else(|| "1.1.0".to_string())
}

/// Prints a plugin's result (see [`output`]) on stdout and gives its exit
/// status (1 when stdout cannot be written).
pub fn print((stdout, exit): (String, u8)) -> std::process::ExitCode {
    use std::io::Write;
    let mut out = std::io::stdout().lock();
    if out
        .write_all(stdout.as_bytes())
        .and_then(|()| out.flush())
        .is_err()
    {
        return std::process::ExitCode::from(1);
    }
    std::process::ExitCode::from(exit)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::code;

    #[test]
    fn errors_are_answered_in_the_configs_version_if_supported() {
        let e = CniError::new(code::INVALID_CONFIG, "m", "d");
        let (out, exit) = output(&Err(e.clone()), br#"{"cniVersion":"0.4.0","name":"n"}"#);
        assert_eq!(exit, 1);
        let v: Value = serde_json::from_str(&out).unwrap();
        assert_eq!(
            v,
            json!({"cniVersion":"0.4.0","code":7,"msg":"m","details":"d"})
        );
        let (out, _) = output(&Err(e.clone()), br#"{"cniVersion":"0.1.0"}"#);
        assert!(out.contains(r#""cniVersion":"1.1.0""#), "{out}");
        let (out, _) = output(&Err(e), b"{garbage");
        assert!(out.contains(r#""cniVersion":"1.1.0""#), "{out}");
        assert_eq!(output(&Ok(None), b""), (String::new(), 0));
    }
}
