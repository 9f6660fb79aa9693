//! tidings metadata on Pub/Sub messages: one attribute (`tidings`).

pub use tidings_core::backend::time::{from_micros, micros};
pub use tidings_core::backend::wire::{WireMeta as Meta, META_ATTRIBUTE};

use tidings_core::trace::TraceContext;

/// Prefix of the attributes Google's client libraries carry trace context in (`googclient_traceparent`...).
pub const GOOGLE_TRACE_PREFIX: &str = "googclient_";

/// The trace fields written and read under [`GOOGLE_TRACE_PREFIX`]: the W3C ones Google's libraries use.
pub const GOOGLE_TRACE_FIELDS: [&str; 2] = ["traceparent", "tracestate"];

/// Whether `name` is one of the trace attributes of Google's client libraries.
pub fn is_google_trace_attribute(name: &str) -> bool {
    name.strip_prefix(GOOGLE_TRACE_PREFIX).is_some_and(|f| GOOGLE_TRACE_FIELDS.contains(&f))
}

/// `trace` as the attributes Google's client libraries read.
pub fn google_trace_attributes(trace: &TraceContext) -> impl Iterator<Item = (String, String)> + '_ {
    GOOGLE_TRACE_FIELDS
        .into_iter()
        .filter_map(|f| trace.get(f).map(|v| (format!("{GOOGLE_TRACE_PREFIX}{f}"), v.to_string())))
}

/// The trace context of a received message: tidings' own (in its metadata) or else the one a Google client library
/// wrote (`googclient_traceparent` / `googclient_tracestate`).
pub fn trace_of(attributes: &std::collections::HashMap<String, String>, meta: Option<&Meta>) -> Option<TraceContext> {
    if let Some(t) = meta.and_then(|m| m.trace.clone()) {
        return Some(t);
    }
    let fields = GOOGLE_TRACE_FIELDS
        .into_iter()
        .filter_map(|f| attributes.get(&format!("{GOOGLE_TRACE_PREFIX}{f}")).map(|v| (f.to_string(), v.clone())))
        .collect();
    TraceContext::new(fields).filter(|t| t.get("traceparent").is_some())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn google_trace_attributes_are_read_when_tidings_metadata_has_none() {
        let tp = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
        let attrs: std::collections::HashMap<String, String> = [
            ("googclient_traceparent".to_string(), tp.to_string()),
            ("googclient_tracestate".to_string(), "k=v".to_string()),
            ("googclient_deliveryattempt".to_string(), "2".to_string()),
        ]
        .into();
        let t = trace_of(&attrs, None).expect("a context");
        assert_eq!((t.get("traceparent"), t.get("tracestate")), (Some(tp), Some("k=v")));
        assert_eq!(t.fields().len(), 2, "only the trace fields: {t:?}");
        let written: Vec<_> = google_trace_attributes(&t).collect();
        assert_eq!(written.len(), 2);
        assert!(written.iter().all(|(k, _)| is_google_trace_attribute(k)));
        assert!(!is_google_trace_attribute("googclient_deliveryattempt"));
        // tidings' own context wins; a tracestate alone is no context.
        let own = TraceContext::new([("traceparent".to_string(), "00-1-2-01".to_string())].into());
        let meta = Meta { id: "a".into(), ts: 1, trace: own.clone(), ..Default::default() };
        assert_eq!(trace_of(&attrs, Some(&meta)), own);
        let state_only = [("googclient_tracestate".to_string(), "k=v".to_string())].into();
        assert_eq!(trace_of(&state_only, None), None);
    }
}
