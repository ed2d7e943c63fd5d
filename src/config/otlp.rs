//! The OTLP export settings, read from the standard `OTEL_*` variables as
//! the OpenTelemetry specification names them (each `OTEL_EXPORTER_OTLP_X`
//! with its `OTEL_EXPORTER_OTLP_TRACES_X` variant, which wins), and the
//! rules that keep their credentials out of every line jobloop prints.
//!
//! Certificate files are read and parsed here, so that `check` and `run`
//! reject the same unreadable or malformed file with one line and exit 78
//! instead of `run` failing later; the exporter reads them again when it is
//! built (their bytes are not kept in [`OtlpSettings`], which is printed
//! with `{:?}` in places).

use std::fmt;
use std::path::PathBuf;
use std::time::Duration;

use super::ConfigError;

/// OTLP transport, from `OTEL_EXPORTER_OTLP_PROTOCOL`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OtlpProtocol {
    /// gRPC (port 4317 by convention), the default.
    Grpc,
    /// HTTP with protobuf bodies (port 4318, path `/v1/traces`).
    HttpProtobuf,
}

/// Compression of the export requests, from `OTEL_EXPORTER_OTLP_COMPRESSION`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OtlpCompression {
    /// Plain bodies (the default).
    None,
    /// gzip bodies (`Content-Encoding: gzip`, `grpc-encoding: gzip`).
    Gzip,
}

/// What the OpenTelemetry exporter should do, read from the standard
/// `OTEL_*` variables. Its `Debug` shows header names only.
#[derive(Clone, PartialEq, Eq)]
pub struct OtlpSettings {
    /// The traces endpoint, when one is set and the SDK is not disabled.
    pub endpoint: Option<String>,
    /// Transport for that endpoint.
    pub protocol: OtlpProtocol,
    /// PEM bundle of the CAs that verify the collector (instead of the
    /// system's roots).
    pub certificate: Option<PathBuf>,
    /// PEM client certificate (chain) for mTLS; set together with `client_key`.
    pub client_certificate: Option<PathBuf>,
    /// PEM private key of `client_certificate`.
    pub client_key: Option<PathBuf>,
    /// Headers sent with every export (`key=value,...`, values URL-decoded).
    /// The values are credentials as a rule: never printed.
    pub headers: Vec<(String, String)>,
    /// Compression of the requests.
    pub compression: OtlpCompression,
    /// Longest one export may take; `None` = the exporter's default (10 s).
    pub timeout: Option<Duration>,
}

impl fmt::Debug for OtlpSettings {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("OtlpSettings")
            .field("endpoint", &self.endpoint.as_deref().map(redact_url))
            .field("protocol", &self.protocol)
            .field("certificate", &self.certificate)
            .field("client_certificate", &self.client_certificate)
            .field("client_key", &self.client_key)
            .field("headers", &self.header_names())
            .field("compression", &self.compression)
            .field("timeout", &self.timeout)
            .finish()
    }
}

/// What `OTEL_EXPORTER_OTLP_TIMEOUT` accepts.
const TIMEOUT_ALLOWED: &str = "a whole number of milliseconds > 0 (e.g. 10000)";

/// Reads the OTLP settings from the standard variables through `lookup`;
/// every bad value is pushed to `checker_errors` as one line.
pub fn otlp_from_env(
    lookup: impl Fn(&str) -> Option<String>,
    checker_errors: &mut Vec<ConfigError>,
) -> OtlpSettings {
    let non_empty = |name: &str| lookup(name).filter(|value| !value.trim().is_empty());
    // The TRACES_ variant wins over the generic one (OpenTelemetry spec).
    let either = |traces: &'static str, generic: &'static str| {
        non_empty(traces)
            .map(|value| (traces, value))
            .or_else(|| non_empty(generic).map(|value| (generic, value)))
    };
    let mut reject = |variable: &'static str, value: &str, allowed: &str| {
        checker_errors.push(ConfigError {
            variable,
            flag: "no flag",
            value: value.to_string(),
            allowed: allowed.to_string(),
        });
    };
    let disabled = non_empty("OTEL_SDK_DISABLED")
        .is_some_and(|value| value.trim().eq_ignore_ascii_case("true"));
    let protocol = match either(
        "OTEL_EXPORTER_OTLP_TRACES_PROTOCOL",
        "OTEL_EXPORTER_OTLP_PROTOCOL",
    ) {
        None => OtlpProtocol::Grpc,
        Some((variable, value)) => match value.trim() {
            "grpc" => OtlpProtocol::Grpc,
            "http/protobuf" => OtlpProtocol::HttpProtobuf,
            other => {
                reject(variable, other, "grpc or http/protobuf");
                OtlpProtocol::Grpc
            }
        },
    };
    let endpoint = either(
        "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT",
        "OTEL_EXPORTER_OTLP_ENDPOINT",
    )
    .map(|(_, value)| value)
    .filter(|_| !disabled);

    let compression = match either(
        "OTEL_EXPORTER_OTLP_TRACES_COMPRESSION",
        "OTEL_EXPORTER_OTLP_COMPRESSION",
    ) {
        None => OtlpCompression::None,
        Some((variable, value)) => match value.trim().to_ascii_lowercase().as_str() {
            "none" => OtlpCompression::None,
            "gzip" => OtlpCompression::Gzip,
            _ => {
                reject(variable, &value, "gzip or none");
                OtlpCompression::None
            }
        },
    };
    let timeout = either(
        "OTEL_EXPORTER_OTLP_TRACES_TIMEOUT",
        "OTEL_EXPORTER_OTLP_TIMEOUT",
    )
    .and_then(|(variable, value)| match value.trim().parse::<u64>() {
        Ok(millis) if millis > 0 && millis <= 3_600_000 => Some(Duration::from_millis(millis)),
        _ => {
            reject(variable, &value, TIMEOUT_ALLOWED);
            None
        }
    });
    let headers = match either(
        "OTEL_EXPORTER_OTLP_TRACES_HEADERS",
        "OTEL_EXPORTER_OTLP_HEADERS",
    ) {
        None => Vec::new(),
        Some((variable, value)) => parse_headers(&value).unwrap_or_else(|bad| {
            // The value is a credential: name the bad entry's key only.
            reject(
                variable,
                &format!("(hidden; entry {bad})"),
                "comma-separated key=value pairs with a valid header name and a non-empty value",
            );
            Vec::new()
        }),
    };

    let mut file = |traces: &'static str, generic: &'static str, kind: PemKind| {
        let (variable, value) = either(traces, generic)?;
        let path = PathBuf::from(value.trim());
        match check_pem(&path, kind) {
            Ok(()) => Some(path),
            Err(why) => {
                reject(variable, &value, &why);
                None
            }
        }
    };
    let certificate = file(
        "OTEL_EXPORTER_OTLP_TRACES_CERTIFICATE",
        "OTEL_EXPORTER_OTLP_CERTIFICATE",
        PemKind::Certificates,
    );
    let client_certificate = file(
        "OTEL_EXPORTER_OTLP_TRACES_CLIENT_CERTIFICATE",
        "OTEL_EXPORTER_OTLP_CLIENT_CERTIFICATE",
        PemKind::Certificates,
    );
    let client_key = file(
        "OTEL_EXPORTER_OTLP_TRACES_CLIENT_KEY",
        "OTEL_EXPORTER_OTLP_CLIENT_KEY",
        PemKind::Key,
    );
    let client_certificate_given = either(
        "OTEL_EXPORTER_OTLP_TRACES_CLIENT_CERTIFICATE",
        "OTEL_EXPORTER_OTLP_CLIENT_CERTIFICATE",
    );
    let client_key_given = either(
        "OTEL_EXPORTER_OTLP_TRACES_CLIENT_KEY",
        "OTEL_EXPORTER_OTLP_CLIENT_KEY",
    );
    match (client_certificate_given, client_key_given) {
        (Some((variable, value)), None) => reject(
            variable,
            &value,
            "set together with OTEL_EXPORTER_OTLP_CLIENT_KEY (mTLS needs both)",
        ),
        (None, Some((variable, value))) => reject(
            variable,
            &value,
            "set together with OTEL_EXPORTER_OTLP_CLIENT_CERTIFICATE (mTLS needs both)",
        ),
        _ => {}
    }
    OtlpSettings {
        endpoint,
        protocol,
        certificate,
        client_certificate,
        client_key,
        headers,
        compression,
        timeout,
    }
}

#[derive(Clone, Copy)]
enum PemKind {
    Certificates,
    Key,
}

/// Reads `path` and checks it holds what rustls will accept, so that a file
/// `check` accepts is one the exporter can be built with.
fn check_pem(path: &std::path::Path, kind: PemKind) -> Result<(), String> {
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::{CertificateDer, PrivateKeyDer};
    let bytes = std::fs::read(path).map_err(|error| format!("a readable PEM file ({error})"))?;
    match kind {
        PemKind::Certificates => {
            let certificates: Result<Vec<_>, _> = CertificateDer::pem_slice_iter(&bytes).collect();
            match certificates {
                Ok(list) if !list.is_empty() => Ok(()),
                _ => Err("a PEM file with one or more certificates".to_string()),
            }
        }
        PemKind::Key => PrivateKeyDer::from_pem_slice(&bytes)
            .map(|_| ())
            .map_err(|_| "a PEM file with a private key (PKCS#8, PKCS#1 or SEC1)".to_string()),
    }
}

/// Parses `key=value,key2=value2` as the OpenTelemetry spec defines it
/// (values URL-decoded); on a bad entry, gives its position (1-based) and
/// key, never its value.
fn parse_headers(text: &str) -> Result<Vec<(String, String)>, String> {
    let mut headers = Vec::new();
    for (index, entry) in text.split(',').enumerate() {
        let entry = entry.trim();
        if entry.is_empty() {
            continue;
        }
        let Some((key, value)) = entry.split_once('=') else {
            return Err(format!("{} has no '='", index + 1));
        };
        let key = key.trim();
        let value = percent_decode(value.trim());
        let valid_name = !key.is_empty()
            && key
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b));
        let valid_value = !value.is_empty() && value.bytes().all(|b| b >= 0x20 && b != 0x7f);
        if !valid_name || !valid_value {
            return Err(format!("{} ({})", index + 1, key.escape_debug()));
        }
        headers.push((key.to_ascii_lowercase(), value));
    }
    Ok(headers)
}

/// `%XX` decoding; a malformed escape is kept as written.
fn percent_decode(text: &str) -> String {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut index = 0;
    while index < bytes.len() {
        let hex = bytes
            .get(index + 1..index + 3)
            .and_then(|pair| std::str::from_utf8(pair).ok())
            .and_then(|pair| u8::from_str_radix(pair, 16).ok());
        match (bytes[index], hex) {
            (b'%', Some(byte)) => {
                out.push(byte);
                index += 3;
            }
            (byte, _) => {
                out.push(byte);
                index += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// An endpoint URL as it may be shown: user info (`user:password@`) is
/// replaced by `***@` and a query string by `?***`.
pub fn redact_url(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return url.to_string();
    };
    let authority_end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    let (authority, path) = rest.split_at(authority_end);
    let authority = match authority.rfind('@') {
        Some(at) => format!("***@{}", &authority[at + 1..]),
        None => authority.to_string(),
    };
    let path = match path.find('?') {
        Some(query) => format!("{}?***", &path[..query]),
        None => path.to_string(),
    };
    format!("{scheme}://{authority}{path}")
}

impl OtlpSettings {
    /// The header names, for `check` and logs (values hidden).
    pub fn header_names(&self) -> Vec<&str> {
        self.headers.iter().map(|(name, _)| name.as_str()).collect()
    }

    /// Whether the endpoint is `https://`: only then is TLS set up.
    pub fn is_https(&self) -> bool {
        self.endpoint
            .as_deref()
            .is_some_and(|url| url.trim().to_ascii_lowercase().starts_with("https://"))
    }

    /// `text` (an error from the exporter, say) with every credential these
    /// settings know replaced by `***`: the endpoint's user info and query,
    /// and each header value (as given and URL-encoded).
    pub fn redact(&self, text: &str) -> String {
        let mut secrets: Vec<String> = Vec::new();
        if let Some(url) = &self.endpoint {
            if let Some((_, rest)) = url.split_once("://") {
                let authority_end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
                if let Some(at) = rest[..authority_end].rfind('@') {
                    let userinfo = &rest[..at];
                    secrets.push(userinfo.to_string());
                    secrets.extend(userinfo.split(':').map(str::to_string));
                }
                if let Some(query) = rest.find('?') {
                    let query = &rest[query + 1..];
                    let query = query.split('#').next().unwrap_or(query);
                    secrets.push(query.to_string());
                    secrets.extend(
                        query
                            .split('&')
                            .filter_map(|pair| pair.split_once('=').map(|(_, v)| v.to_string())),
                    );
                }
            }
        }
        for (_, value) in &self.headers {
            secrets.push(value.clone());
            // "Bearer abc": the token alone may be echoed, too.
            secrets.extend(value.split_whitespace().skip(1).map(str::to_string));
        }
        // Longest first, so a secret's parts do not leave its rest behind.
        secrets.retain(|secret| secret.len() >= 3);
        secrets.sort_by_key(|secret| std::cmp::Reverse(secret.len()));
        let mut out = text.to_string();
        for secret in secrets {
            out = out.replace(&secret, "***");
        }
        out
    }

    /// `VARIABLE=value` lines for `jobloop check` (credentials hidden).
    pub fn describe(&self) -> Vec<(&'static str, String)> {
        let path = |p: &Option<PathBuf>| p.as_ref().map(|p| p.display().to_string());
        vec![
            (
                "OTEL_EXPORTER_OTLP_ENDPOINT",
                self.endpoint.as_deref().map(redact_url).unwrap_or_default(),
            ),
            (
                "OTEL_EXPORTER_OTLP_PROTOCOL",
                match self.protocol {
                    OtlpProtocol::Grpc => "grpc".into(),
                    OtlpProtocol::HttpProtobuf => "http/protobuf".into(),
                },
            ),
            (
                "OTEL_EXPORTER_OTLP_CERTIFICATE",
                path(&self.certificate).unwrap_or_else(|| {
                    if self.is_https() {
                        "(system roots)".into()
                    } else {
                        String::new()
                    }
                }),
            ),
            (
                "OTEL_EXPORTER_OTLP_CLIENT_CERTIFICATE",
                path(&self.client_certificate).unwrap_or_default(),
            ),
            (
                "OTEL_EXPORTER_OTLP_CLIENT_KEY",
                path(&self.client_key).unwrap_or_default(),
            ),
            (
                "OTEL_EXPORTER_OTLP_HEADERS",
                if self.headers.is_empty() {
                    String::new()
                } else {
                    format!("{} (values hidden)", self.header_names().join(","))
                },
            ),
            (
                "OTEL_EXPORTER_OTLP_COMPRESSION",
                match self.compression {
                    OtlpCompression::None => "none".into(),
                    OtlpCompression::Gzip => "gzip".into(),
                },
            ),
            (
                "OTEL_EXPORTER_OTLP_TIMEOUT",
                self.timeout
                    .map(|t| t.as_millis().to_string())
                    .unwrap_or_else(|| "10000".into()),
            ),
        ]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn read(vars: &[(&str, &str)]) -> (OtlpSettings, Vec<ConfigError>) {
        let mut errors = Vec::new();
        let settings = otlp_from_env(
            |name| {
                vars.iter()
                    .find(|(n, _)| *n == name)
                    .map(|(_, v)| v.to_string())
            },
            &mut errors,
        );
        (settings, errors)
    }

    #[test]
    fn traces_variants_win_over_the_generic_ones() {
        let (s, errors) = read(&[
            ("OTEL_EXPORTER_OTLP_COMPRESSION", "none"),
            ("OTEL_EXPORTER_OTLP_TRACES_COMPRESSION", "gzip"),
            ("OTEL_EXPORTER_OTLP_TIMEOUT", "5000"),
            ("OTEL_EXPORTER_OTLP_TRACES_TIMEOUT", "250"),
            ("OTEL_EXPORTER_OTLP_HEADERS", "a=1"),
            ("OTEL_EXPORTER_OTLP_TRACES_HEADERS", "b=Bearer%20xyz"),
        ]);
        assert!(errors.is_empty(), "{errors:?}");
        assert_eq!(s.compression, OtlpCompression::Gzip);
        assert_eq!(s.timeout, Some(Duration::from_millis(250)));
        assert_eq!(s.headers, vec![("b".to_string(), "Bearer xyz".to_string())]);
    }

    #[test]
    fn bad_values_are_one_error_each_and_never_show_a_header_value() {
        let (_, errors) = read(&[
            ("OTEL_EXPORTER_OTLP_COMPRESSION", "brotli"),
            ("OTEL_EXPORTER_OTLP_TIMEOUT", "10s"),
            ("OTEL_EXPORTER_OTLP_HEADERS", "x-token=s3cr3t,broken"),
            ("OTEL_EXPORTER_OTLP_CERTIFICATE", "/nonexistent/ca.pem"),
            ("OTEL_EXPORTER_OTLP_CLIENT_KEY", "/nonexistent/key.pem"),
        ]);
        let variables: Vec<_> = errors.iter().map(|e| e.variable).collect();
        assert_eq!(
            variables,
            [
                "OTEL_EXPORTER_OTLP_COMPRESSION",
                "OTEL_EXPORTER_OTLP_TIMEOUT",
                "OTEL_EXPORTER_OTLP_HEADERS",
                "OTEL_EXPORTER_OTLP_CERTIFICATE",
                "OTEL_EXPORTER_OTLP_CLIENT_KEY",
                "OTEL_EXPORTER_OTLP_CLIENT_KEY",
            ]
        );
        for error in &errors {
            assert!(!error.to_string().contains("s3cr3t"), "{error}");
        }
    }

    #[test]
    fn urls_lose_user_info_and_query() {
        assert_eq!(redact_url("http://u:p@h:4317/x@y"), "http://***@h:4317/x@y");
        assert_eq!(
            redact_url("https://h:4318/v1/traces?api_key=abc"),
            "https://h:4318/v1/traces?***"
        );
        assert_eq!(redact_url("https://u@h?k=v"), "https://***@h?***");
        assert_eq!(redact_url("http://h:4317"), "http://h:4317");
    }

    #[test]
    fn redact_hides_every_known_credential() {
        let (s, _) = read(&[
            (
                "OTEL_EXPORTER_OTLP_ENDPOINT",
                "https://alice:pw123@h:4318/x?key=qv987",
            ),
            ("OTEL_EXPORTER_OTLP_HEADERS", "authorization=Bearer tok456"),
        ]);
        let text = "error for url https://alice:pw123@h:4318/x?key=qv987: tok456 pw123";
        let out = s.redact(text);
        for secret in ["alice", "pw123", "qv987", "tok456"] {
            assert!(!out.contains(secret), "{out}");
        }
        assert!(!format!("{s:?}").contains("tok456"));
        assert!(!format!("{:?}", s.describe()).contains("tok456"));
        assert!(!format!("{:?}", s.describe()).contains("pw123"));
    }
}
