//! Interpreting `Range` / `If-Range` for a representation of known size.

use std::ops::Range;

use actix_web::HttpRequest;
use actix_web::http::header::{IF_RANGE, RANGE};
use http_range_header::{StartPosition, parse_range_header};

/// What to send for a request that may carry `Range`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RangeOutcome {
    /// The whole representation (no range, an unparseable or multi-range header, or a stale If-Range).
    Full,
    /// One byte range: 206.
    Partial(Range<u64>),
    /// 416.
    Unsatisfiable,
}

/// Only single ranges are served as 206; anything fancier gets the whole body,
/// which RFC 9110 allows.
pub fn evaluate(req: &HttpRequest, size: u64, etag: &str) -> RangeOutcome {
    let Some(value) = req.headers().get(RANGE).and_then(|v| v.to_str().ok()) else {
        return RangeOutcome::Full;
    };
    if let Some(if_range) = req.headers().get(IF_RANGE) {
        // We send no Last-Modified, so only our own strong ETag can match.
        if if_range.as_bytes() != etag.as_bytes() {
            return RangeOutcome::Full;
        }
    }
    evaluate_value(value, size)
}

fn evaluate_value(value: &str, size: u64) -> RangeOutcome {
    let Ok(parsed) = parse_range_header(value) else {
        return RangeOutcome::Full;
    };
    if parsed.ranges.len() != 1 || size == 0 {
        return RangeOutcome::Full;
    }
    // A suffix longer than the representation means all of it (RFC 9110 §14.1.2).
    if let StartPosition::FromLast(n) = parsed.ranges[0].start
        && n >= size
    {
        return RangeOutcome::Partial(0..size);
    }
    match parsed.validate(size) {
        Ok(ranges) => {
            let r = &ranges[0];
            if *r.start() >= size {
                RangeOutcome::Unsatisfiable
            } else {
                RangeOutcome::Partial(*r.start()..*r.end() + 1)
            }
        }
        Err(_) => RangeOutcome::Unsatisfiable,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn single_ranges() {
        assert_eq!(
            evaluate_value("bytes=0-9", 100),
            RangeOutcome::Partial(0..10)
        );
        assert_eq!(
            evaluate_value("bytes=90-", 100),
            RangeOutcome::Partial(90..100)
        );
        assert_eq!(
            evaluate_value("bytes=-10", 100),
            RangeOutcome::Partial(90..100)
        );
        assert_eq!(
            evaluate_value("bytes=-1000", 100),
            RangeOutcome::Partial(0..100)
        );
        assert_eq!(
            evaluate_value("bytes=50-1000", 100),
            RangeOutcome::Partial(50..100)
        );
    }

    #[test]
    fn unsatisfiable_and_ignored() {
        assert_eq!(
            evaluate_value("bytes=100-", 100),
            RangeOutcome::Unsatisfiable
        );
        assert_eq!(
            evaluate_value("bytes=200-300", 100),
            RangeOutcome::Unsatisfiable
        );
        assert_eq!(
            evaluate_value("bytes=9-3", 100),
            RangeOutcome::Unsatisfiable
        );
        assert_eq!(evaluate_value("items=0-1", 100), RangeOutcome::Full);
        assert_eq!(evaluate_value("bytes=0-1,5-6", 100), RangeOutcome::Full);
        assert_eq!(evaluate_value("bytes=0-1", 0), RangeOutcome::Full);
    }
}
