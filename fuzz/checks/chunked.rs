//! The streaming chunked decoder (`http::h1::ChunkedDecoder`).
//!
//! Input: a mode byte, then either arbitrary bytes (mode even) or a recipe for a valid
//! encoding (mode odd). Invariants:
//! - payload ranges are in order, disjoint and inside the consumed bytes, so a body never
//!   yields more payload than input;
//! - feeding the same bytes split anywhere gives the same payload, the same verdict and the
//!   same number of consumed bytes as feeding them at once, through `decode` and `decode_one`;
//! - a finished body ends with its final CRLF and nothing after it is consumed;
//! - any payload encoded with any chunk sizes, extensions and trailers decodes back to itself
//!   and consumes exactly the encoding.

use arbitrary::{Result, Unstructured};
use fulcrum_http::h1::ChunkedDecoder;

/// Runs the invariants on one input (the fuzz target and the replay test call this).
pub fn check(data: &[u8]) {
    let Some((&mode, rest)) = data.split_first() else { return };
    let mut u = Unstructured::new(rest);
    if mode % 2 == 0 {
        let Ok(cuts) = cut_points(&mut u) else { return };
        let input = u.take_rest();
        check_arbitrary(input, &cuts);
    } else {
        let _ = check_round_trip(&mut u);
    }
}

/// What decoding a whole input produced.
#[derive(Debug, PartialEq, Eq)]
struct Decoded {
    payload: Vec<u8>,
    /// Bytes consumed, or `None` when the decoder refused the input.
    consumed: Option<usize>,
    done: bool,
}

/// Feeds `input` in pieces ending at `cuts` (sorted offsets), with `decode`.
fn decode_split(input: &[u8], cuts: &[usize]) -> Decoded {
    let mut d = ChunkedDecoder::default();
    let mut payload = Vec::new();
    let mut start = 0;
    for end in cuts.iter().copied().chain([input.len()]) {
        let end = end.clamp(start, input.len());
        let part = &input[start..end];
        let mut last_end = 0;
        let result = d.decode(part, |r| {
            assert!(r.start >= last_end && r.start <= r.end, "payload range out of order");
            last_end = r.end;
            payload.extend_from_slice(&part[r]);
        });
        match result {
            Err(_) => return Decoded { payload, consumed: None, done: false },
            Ok(n) => {
                assert!(n <= part.len(), "consumed more than given");
                assert!(last_end <= n, "payload range beyond the consumed bytes");
                if d.is_done() {
                    return Decoded { payload, consumed: Some(start + n), done: true };
                }
                assert_eq!(n, part.len(), "stopped early without finishing");
            }
        }
        start = end;
    }
    Decoded { payload, consumed: Some(input.len()), done: false }
}

/// Feeds `input` at once through `decode_one`, one payload range per call.
fn decode_one_by_one(input: &[u8]) -> Decoded {
    let mut d = ChunkedDecoder::default();
    let mut payload = Vec::new();
    let mut pos = 0;
    while pos < input.len() && !d.is_done() {
        match d.decode_one(&input[pos..]) {
            Err(_) => return Decoded { payload, consumed: None, done: false },
            Ok((n, range)) => {
                if let Some(r) = range {
                    assert!(r.end <= n, "payload range beyond the consumed bytes");
                    payload.extend_from_slice(&input[pos..][r]);
                }
                assert!(n > 0 || d.is_done(), "no progress");
                pos += n;
            }
        }
    }
    Decoded { payload, consumed: Some(pos), done: d.is_done() }
}

fn cut_points(u: &mut Unstructured<'_>) -> Result<Vec<usize>> {
    let n = u.int_in_range(0..=8)?;
    let mut cuts = (0..n).map(|_| u.int_in_range(0..=4096usize)).collect::<Result<Vec<_>>>()?;
    cuts.sort_unstable();
    Ok(cuts)
}

fn check_arbitrary(input: &[u8], cuts: &[usize]) {
    let whole = decode_split(input, &[]);
    if let Some(consumed) = whole.consumed {
        assert!(whole.payload.len() <= consumed, "more payload than input");
        if whole.done {
            assert!(input[..consumed].ends_with(b"\r\n"), "finished without the final CRLF");
        }
    }
    assert_eq!(decode_split(input, cuts), whole, "split input decoded differently");
    assert_eq!(decode_one_by_one(input), whole, "decode_one disagrees with decode");
}

fn check_round_trip(u: &mut Unstructured<'_>) -> Result<()> {
    let body: Vec<u8> = u.arbitrary()?;
    let mut encoded = Vec::new();
    let mut rest = &body[..];
    while !rest.is_empty() {
        let size = u.int_in_range(1..=rest.len())?;
        let hex: bool = u.arbitrary()?;
        if hex {
            encoded.extend_from_slice(format!("{size:X}").as_bytes());
        } else {
            encoded.extend_from_slice(format!("{:0>3x}", size).as_bytes());
        }
        extension(u, &mut encoded)?;
        encoded.extend_from_slice(b"\r\n");
        encoded.extend_from_slice(&rest[..size]);
        encoded.extend_from_slice(b"\r\n");
        rest = &rest[size..];
    }
    encoded.push(b'0');
    extension(u, &mut encoded)?;
    encoded.extend_from_slice(b"\r\n");
    for _ in 0..u.int_in_range(0..=3)? {
        let n: u8 = u.arbitrary()?;
        encoded.extend_from_slice(format!("x-trailer-{n}: v{n}\r\n").as_bytes());
    }
    encoded.extend_from_slice(b"\r\n");
    let end = encoded.len();
    // Whatever follows (a pipelined request) is not part of the body.
    encoded.extend_from_slice(b"GET / HTTP/1.1\r\n\r\n");
    let cuts = cut_points(u)?;

    let expected = Decoded { payload: body, consumed: Some(end), done: true };
    assert_eq!(decode_split(&encoded, &[]), expected, "{:?}", String::from_utf8_lossy(&encoded));
    assert_eq!(decode_split(&encoded, &cuts), expected);
    assert_eq!(decode_one_by_one(&encoded), expected);
    Ok(())
}

/// Appends zero or more short chunk extensions (`;name` or `;name=value`).
fn extension(u: &mut Unstructured<'_>, out: &mut Vec<u8>) -> Result<()> {
    for _ in 0..u.int_in_range(0..=2)? {
        let n: u8 = u.arbitrary()?;
        if u.arbitrary()? {
            out.extend_from_slice(format!(";e{n}").as_bytes());
        } else {
            out.extend_from_slice(format!(";e{n}=\"v {n}\"").as_bytes());
        }
    }
    Ok(())
}
