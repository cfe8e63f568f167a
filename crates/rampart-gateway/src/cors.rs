//! CORS, answered by the gateway: preflights never reach the upstream, and the upstream's
//! own `Access-Control-*` headers are replaced by the configured policy.

use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::{Method, request};

use crate::config::CorsConfig;

/// A compiled CORS policy.
#[derive(Debug, Clone)]
pub struct Cors {
    any_origin: bool,
    origins: Vec<HeaderValue>,
    methods: Vec<Method>,
    methods_value: Option<HeaderValue>,
    headers: Vec<HeaderName>,
    headers_value: Option<HeaderValue>,
    expose_value: Option<HeaderValue>,
    credentials: bool,
    max_age: HeaderValue,
}

/// What to do with a request, as far as CORS is concerned.
#[derive(Debug, PartialEq, Eq)]
pub enum PreflightDecision {
    /// Not a preflight: proxy it.
    NotPreflight,
    /// A preflight the policy allows: answer 204 with these headers.
    Allowed(HeaderMap),
    /// A preflight the policy refuses, and why.
    Refused(&'static str),
}

const VARY_PREFLIGHT: HeaderValue = HeaderValue::from_static(
    "origin, access-control-request-method, access-control-request-headers",
);

fn join<T: AsRef<str>>(items: &[T]) -> Option<HeaderValue> {
    let text = items
        .iter()
        .map(AsRef::as_ref)
        .collect::<Vec<_>>()
        .join(", ");
    (!text.is_empty())
        .then(|| HeaderValue::from_str(&text).ok())
        .flatten()
}

impl Cors {
    /// Compiles validated config.
    pub fn compile(config: &CorsConfig) -> Self {
        let methods: Vec<Method> = config
            .allow_methods
            .iter()
            .filter_map(|m| Method::from_bytes(m.as_bytes()).ok())
            .collect();
        let headers: Vec<HeaderName> = config
            .allow_headers
            .iter()
            .filter_map(|h| HeaderName::from_bytes(h.as_bytes()).ok())
            .collect();
        let method_names: Vec<&str> = methods.iter().map(Method::as_str).collect();
        let header_names: Vec<&str> = headers.iter().map(HeaderName::as_str).collect();
        Cors {
            any_origin: config.allow_origins.iter().any(|o| o == "*"),
            origins: config
                .allow_origins
                .iter()
                .filter(|o| *o != "*")
                .filter_map(|o| HeaderValue::from_str(o).ok())
                .collect(),
            methods_value: join(&method_names),
            methods,
            headers_value: join(&header_names),
            headers,
            expose_value: join(&config.expose_headers),
            credentials: config.allow_credentials,
            max_age: HeaderValue::from(config.max_age.as_secs()),
        }
    }

    fn origin_allowed(&self, origin: &HeaderValue) -> bool {
        // Origins are compared exactly (scheme, host and port), case-insensitively for the
        // host as browsers serialize it lowercase anyway.
        self.any_origin
            || self
                .origins
                .iter()
                .any(|o| o.as_bytes().eq_ignore_ascii_case(origin.as_bytes()))
    }

    fn allow_origin_value(&self, origin: &HeaderValue) -> HeaderValue {
        if self.any_origin && !self.credentials {
            HeaderValue::from_static("*")
        } else {
            origin.clone()
        }
    }

    /// Decides a preflight (`OPTIONS` with `Origin` and `Access-Control-Request-Method`).
    pub fn preflight(&self, req: &request::Parts) -> PreflightDecision {
        if req.method != Method::OPTIONS {
            return PreflightDecision::NotPreflight;
        }
        let h = &req.headers;
        let (Some(origin), Some(requested_method)) = (
            h.get(header::ORIGIN),
            h.get(header::ACCESS_CONTROL_REQUEST_METHOD),
        ) else {
            return PreflightDecision::NotPreflight;
        };
        if !self.origin_allowed(origin) {
            return PreflightDecision::Refused("CORS preflight refused: origin not allowed");
        }
        let method_ok = Method::from_bytes(requested_method.as_bytes())
            .is_ok_and(|m| self.methods.contains(&m));
        if !method_ok {
            return PreflightDecision::Refused("CORS preflight refused: method not allowed");
        }
        let requested_headers = h
            .get_all(header::ACCESS_CONTROL_REQUEST_HEADERS)
            .iter()
            .flat_map(|v| v.to_str().unwrap_or("\u{0}").split(','))
            .map(str::trim)
            .filter(|s| !s.is_empty());
        for name in requested_headers {
            if !self
                .headers
                .iter()
                .any(|a| a.as_str().eq_ignore_ascii_case(name))
            {
                return PreflightDecision::Refused("CORS preflight refused: header not allowed");
            }
        }
        let mut out = HeaderMap::new();
        out.insert(
            header::ACCESS_CONTROL_ALLOW_ORIGIN,
            self.allow_origin_value(origin),
        );
        if let Some(v) = &self.methods_value {
            out.insert(header::ACCESS_CONTROL_ALLOW_METHODS, v.clone());
        }
        if let Some(v) = &self.headers_value {
            out.insert(header::ACCESS_CONTROL_ALLOW_HEADERS, v.clone());
        }
        if self.credentials {
            out.insert(
                header::ACCESS_CONTROL_ALLOW_CREDENTIALS,
                HeaderValue::from_static("true"),
            );
        }
        out.insert(header::ACCESS_CONTROL_MAX_AGE, self.max_age.clone());
        out.insert(header::VARY, VARY_PREFLIGHT);
        PreflightDecision::Allowed(out)
    }

    /// Sets the CORS headers of an actual (non-preflight) response, after removing the
    /// upstream's. A request from an origin not allowed gets none, so the browser keeps
    /// the response from the page.
    pub fn apply(&self, origin: Option<&HeaderValue>, headers: &mut HeaderMap) {
        strip_upstream_cors(headers);
        let Some(origin) = origin else { return };
        if !self.origin_allowed(origin) {
            return;
        }
        headers.insert(
            header::ACCESS_CONTROL_ALLOW_ORIGIN,
            self.allow_origin_value(origin),
        );
        if self.credentials {
            headers.insert(
                header::ACCESS_CONTROL_ALLOW_CREDENTIALS,
                HeaderValue::from_static("true"),
            );
        }
        if let Some(v) = &self.expose_value {
            headers.insert(header::ACCESS_CONTROL_EXPOSE_HEADERS, v.clone());
        }
        headers.append(header::VARY, HeaderValue::from_static("origin"));
    }
}

/// The CORS response headers, which the gateway owns.
pub const CORS_RESPONSE_HEADERS: [HeaderName; 6] = [
    header::ACCESS_CONTROL_ALLOW_ORIGIN,
    header::ACCESS_CONTROL_ALLOW_CREDENTIALS,
    header::ACCESS_CONTROL_ALLOW_METHODS,
    header::ACCESS_CONTROL_ALLOW_HEADERS,
    header::ACCESS_CONTROL_EXPOSE_HEADERS,
    header::ACCESS_CONTROL_MAX_AGE,
];

/// Removes every `Access-Control-*` header an upstream sent.
pub fn strip_upstream_cors(headers: &mut HeaderMap) {
    // Scan first: most responses have none, and a removal hashes even an absent name.
    if !headers.keys().any(|k| CORS_RESPONSE_HEADERS.contains(k)) {
        return;
    }
    for name in CORS_RESPONSE_HEADERS {
        headers.remove(name);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy() -> Cors {
        Cors::compile(&CorsConfig {
            allow_origins: vec!["https://app.example.com".into()],
            allow_credentials: true,
            ..CorsConfig::default()
        })
    }

    fn preflight(origin: &str, method: &str, headers: Option<&str>) -> request::Parts {
        let mut b = http::Request::builder()
            .method(Method::OPTIONS)
            .uri("/x")
            .header("origin", origin)
            .header("access-control-request-method", method);
        if let Some(h) = headers {
            b = b.header("access-control-request-headers", h);
        }
        b.body(()).unwrap().into_parts().0
    }

    #[test]
    fn allowed_preflight_echoes_origin_with_credentials() {
        let PreflightDecision::Allowed(h) = policy().preflight(&preflight(
            "https://app.example.com",
            "POST",
            Some("Content-Type, authorization"),
        )) else {
            panic!("refused")
        };
        assert_eq!(h["access-control-allow-origin"], "https://app.example.com");
        assert_eq!(h["access-control-allow-credentials"], "true");
        assert_eq!(h["access-control-max-age"], "600");
        assert!(
            h["access-control-allow-methods"]
                .to_str()
                .unwrap()
                .contains("POST")
        );
    }

    #[test]
    fn preflight_refusals_say_which_part_failed() {
        let p = policy();
        assert_eq!(
            p.preflight(&preflight("https://evil.example", "GET", None)),
            PreflightDecision::Refused("CORS preflight refused: origin not allowed")
        );
        assert_eq!(
            p.preflight(&preflight("https://app.example.com", "TRACE", None)),
            PreflightDecision::Refused("CORS preflight refused: method not allowed")
        );
        assert_eq!(
            p.preflight(&preflight("https://app.example.com", "GET", Some("x-evil"))),
            PreflightDecision::Refused("CORS preflight refused: header not allowed")
        );
    }

    #[test]
    fn actual_response_loses_upstream_wildcard() {
        let mut h = HeaderMap::new();
        h.insert("access-control-allow-origin", HeaderValue::from_static("*"));
        policy().apply(
            Some(&HeaderValue::from_static("https://evil.example")),
            &mut h,
        );
        assert!(h.get("access-control-allow-origin").is_none());
        policy().apply(
            Some(&HeaderValue::from_static("https://app.example.com")),
            &mut h,
        );
        assert_eq!(h["access-control-allow-origin"], "https://app.example.com");
    }
}
