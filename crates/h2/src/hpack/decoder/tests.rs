//! Decoder tests: RFC 7541 Appendix C, the error rules, and bounded memory under bombs.

use super::*;
use crate::hpack::Encoder;

fn hex(s: &str) -> Vec<u8> {
    let digits: Vec<u8> = s.bytes().filter(u8::is_ascii_hexdigit).collect();
    digits
        .chunks(2)
        .map(|p| u8::from_str_radix(std::str::from_utf8(p).unwrap(), 16).unwrap())
        .collect()
}

type Fields = Vec<(String, String)>;

fn decode(d: &mut Decoder, block: &[u8]) -> Result<Fields, HpackError> {
    let b = d.decode(block)?;
    Ok(b.iter()
        .map(|f| {
            (
                String::from_utf8(f.name.to_vec()).unwrap(),
                String::from_utf8(f.value.to_vec()).unwrap(),
            )
        })
        .collect())
}

fn pairs(list: &[(&str, &str)]) -> Fields {
    list.iter().map(|(n, v)| (n.to_string(), v.to_string())).collect()
}

/// The dynamic table as (entry size, name, value), newest first, and its total size.
fn table(d: &Decoder) -> (Vec<(usize, String, String)>, usize) {
    let entries = (1..=d.table_len())
        .map(|i| {
            let (n, v) = d.table_entry(i).unwrap();
            let (n, v) =
                (String::from_utf8(n.to_vec()).unwrap(), String::from_utf8(v.to_vec()).unwrap());
            (n.len() + v.len() + 32, n, v)
        })
        .collect();
    (entries, d.table_size())
}

fn entries(list: &[(usize, &str, &str)]) -> Vec<(usize, String, String)> {
    list.iter().map(|(s, n, v)| (*s, n.to_string(), v.to_string())).collect()
}

#[test]
fn c2_literal_representations() {
    // C.2.1: literal with indexing.
    let mut d = Decoder::default();
    let block = hex("400a 6375 7374 6f6d 2d6b 6579 0d63 7573 746f 6d2d 6865 6164 6572");
    assert_eq!(decode(&mut d, &block).unwrap(), pairs(&[("custom-key", "custom-header")]));
    assert_eq!(table(&d), (entries(&[(55, "custom-key", "custom-header")]), 55));

    // C.2.2: literal without indexing, indexed name.
    let mut d = Decoder::default();
    let block = hex("040c 2f73 616d 706c 652f 7061 7468");
    assert_eq!(decode(&mut d, &block).unwrap(), pairs(&[(":path", "/sample/path")]));
    assert_eq!(table(&d), (vec![], 0));

    // C.2.3: literal never indexed, and the flag survives decoding.
    let mut d = Decoder::default();
    let block = hex("1008 7061 7373 776f 7264 0673 6563 7265 74");
    assert_eq!(decode(&mut d, &block).unwrap(), pairs(&[("password", "secret")]));
    assert!(d.decode(&block).unwrap().get(0).unwrap().never_indexed);
    assert_eq!(table(&d), (vec![], 0));

    // C.2.4: indexed field.
    let mut d = Decoder::default();
    assert_eq!(decode(&mut d, &hex("82")).unwrap(), pairs(&[(":method", "GET")]));
    let block = hex("82");
    let f = d.decode(&block).unwrap().get(0).unwrap();
    assert_eq!((f.pseudo, f.static_name), (Some(Pseudo::Method), Some(2)));
    assert_eq!(table(&d), (vec![], 0));
}

/// C.3 (raw) and C.4 (Huffman) decode the same three requests into the same tables.
fn check_requests(blocks: [&str; 3]) {
    let mut d = Decoder::default();
    let first = [
        (":method", "GET"),
        (":scheme", "http"),
        (":path", "/"),
        (":authority", "www.example.com"),
    ];
    assert_eq!(decode(&mut d, &hex(blocks[0])).unwrap(), pairs(&first));
    assert_eq!(table(&d), (entries(&[(57, ":authority", "www.example.com")]), 57));

    let mut second = first.to_vec();
    second.push(("cache-control", "no-cache"));
    assert_eq!(decode(&mut d, &hex(blocks[1])).unwrap(), pairs(&second));
    let t = [(53, "cache-control", "no-cache"), (57, ":authority", "www.example.com")];
    assert_eq!(table(&d), (entries(&t), 110));

    let third = [
        (":method", "GET"),
        (":scheme", "https"),
        (":path", "/index.html"),
        (":authority", "www.example.com"),
        ("custom-key", "custom-value"),
    ];
    assert_eq!(decode(&mut d, &hex(blocks[2])).unwrap(), pairs(&third));
    let t = [
        (54, "custom-key", "custom-value"),
        (53, "cache-control", "no-cache"),
        (57, ":authority", "www.example.com"),
    ];
    assert_eq!(table(&d), (entries(&t), 164));
    // The dynamic entry keeps what is known of its name (index 64: the oldest).
    let block = hex("c0");
    let f = d.decode(&block).unwrap().get(0).unwrap();
    assert_eq!((f.pseudo, f.static_name), (Some(Pseudo::Authority), Some(1)));
}

#[test]
fn c3_requests_without_huffman() {
    check_requests([
        "8286 8441 0f77 7777 2e65 7861 6d70 6c65 2e63 6f6d",
        "8286 84be 5808 6e6f 2d63 6163 6865",
        "8287 85bf 400a 6375 7374 6f6d 2d6b 6579 0c63 7573 746f 6d2d 7661 6c75 65",
    ]);
}

#[test]
fn c4_requests_with_huffman() {
    check_requests([
        "8286 8441 8cf1 e3c2 e5f2 3a6b a0ab 90f4 ff",
        "8286 84be 5886 a8eb 1064 9cbf",
        "8287 85bf 4088 25a8 49e9 5ba9 7d7f 8925 a849 e95b b8e8 b4bf",
    ]);
}

/// C.5 (raw) and C.6 (Huffman): three responses with a 256-byte table, evicting as they go.
fn check_responses(blocks: [&str; 3]) {
    let mut d = Decoder::new(256, 64 * 1024);
    let date1 = "Mon, 21 Oct 2013 20:13:21 GMT";
    let loc = "https://www.example.com";
    let first =
        [(":status", "302"), ("cache-control", "private"), ("date", date1), ("location", loc)];
    assert_eq!(decode(&mut d, &hex(blocks[0])).unwrap(), pairs(&first));
    let t = [
        (63, "location", loc),
        (65, "date", date1),
        (52, "cache-control", "private"),
        (42, ":status", "302"),
    ];
    assert_eq!(table(&d), (entries(&t), 222));

    let second =
        [(":status", "307"), ("cache-control", "private"), ("date", date1), ("location", loc)];
    assert_eq!(decode(&mut d, &hex(blocks[1])).unwrap(), pairs(&second));
    let t = [
        (42, ":status", "307"),
        (63, "location", loc),
        (65, "date", date1),
        (52, "cache-control", "private"),
    ];
    assert_eq!(table(&d), (entries(&t), 222));

    let date2 = "Mon, 21 Oct 2013 20:13:22 GMT";
    let cookie = "foo=ASDJKHQKBZXOQWEOPIUAXQWEOIU; max-age=3600; version=1";
    let third = [
        (":status", "200"),
        ("cache-control", "private"),
        ("date", date2),
        ("location", loc),
        ("content-encoding", "gzip"),
        ("set-cookie", cookie),
    ];
    assert_eq!(decode(&mut d, &hex(blocks[2])).unwrap(), pairs(&third));
    let t = [(98, "set-cookie", cookie), (52, "content-encoding", "gzip"), (65, "date", date2)];
    assert_eq!(table(&d), (entries(&t), 215));
}

#[test]
fn c5_responses_without_huffman() {
    check_responses([
        "4803 3330 3258 0770 7269 7661 7465 611d 4d6f 6e2c 2032 3120 4f63 7420 3230 3133 2032
         303a 3133 3a32 3120 474d 546e 1768 7474 7073 3a2f 2f77 7777 2e65 7861 6d70 6c65 2e63
         6f6d",
        "4803 3330 37c1 c0bf",
        "88c1 611d 4d6f 6e2c 2032 3120 4f63 7420 3230 3133 2032 303a 3133 3a32 3220 474d 54c0
         5a04 677a 6970 7738 666f 6f3d 4153 444a 4b48 514b 425a 584f 5157 454f 5049 5541 5851
         5745 4f49 553b 206d 6178 2d61 6765 3d33 3630 303b 2076 6572 7369 6f6e 3d31",
    ]);
}

#[test]
fn c6_responses_with_huffman() {
    check_responses([
        "4882 6402 5885 aec3 771a 4b61 96d0 7abe 9410 54d4 44a8 2005 9504 0b81 66e0 82a6 2d1b
         ff6e 919d 29ad 1718 63c7 8f0b 97c8 e9ae 82ae 43d3",
        "4883 640e ffc1 c0bf",
        "88c1 6196 d07a be94 1054 d444 a820 0595 040b 8166 e084 a62d 1bff c05a 839b d9ab 77ad
         94e7 821d d7f2 e6c7 b335 dfdf cd5b 3960 d5af 2708 7f36 72c1 ab27 0fb5 291f 9587 3160
         65c0 03ed 4ee5 b106 3d50 07",
    ]);
}

#[test]
fn index_rules() {
    let mut d = Decoder::default();
    assert_eq!(d.decode(&[0x80]).map(|_| ()), Err(HpackError::BadIndex(0)));
    // 62 is the first dynamic index; the table is empty.
    assert_eq!(d.decode(&[0xbe]).map(|_| ()), Err(HpackError::BadIndex(62)));
    assert_eq!(d.decode(&[0x7f, 0x00, 0x00]).map(|_| ()), Err(HpackError::BadIndex(63)));
    assert_eq!(d.decode(&[0xbd]).map(|b| b.len()), Ok(1));
    // Truncated string and truncated integer.
    assert_eq!(d.decode(&[0x04, 0x05, b'/']).map(|_| ()), Err(HpackError::Truncated));
    assert_eq!(d.decode(&[0x04, 0x7f]).map(|_| ()), Err(HpackError::Truncated));
    assert_eq!(
        d.decode(&[0x04, 0xff, 0xff, 0xff, 0xff, 0xff, 0x7f]).map(|_| ()),
        Err(HpackError::IntegerOverflow)
    );
    // A Huffman string with bad padding (0x00 is "0" then three zero bits).
    assert_eq!(d.decode(&[0x04, 0x81, 0x00]).map(|_| ()), Err(HpackError::HuffmanPadding));
    assert_eq!(d.decode(&[]).map(|b| b.len()), Ok(0));
}

#[test]
fn table_size_update_rules() {
    let mut d = Decoder::new(4096, 1 << 16);
    // Up to the advertised size, several at the start.
    assert_eq!(d.decode(&[0x3f, 0xe1, 0x1f, 0x20, 0x82]).map(|b| b.len()), Ok(1));
    assert_eq!(d.table_max_size(), 0);
    let mut too_big = Vec::new();
    super::super::encode_int(&mut too_big, 5, 0x20, 4097);
    assert_eq!(
        d.decode(&too_big).map(|_| ()),
        Err(HpackError::TableSizeTooLarge { requested: 4097, max: 4096 })
    );
    assert_eq!(d.decode(&[0x82, 0x20]).map(|_| ()), Err(HpackError::LateTableSizeUpdate));
    // An update resizes (and evicts).
    let mut d = Decoder::default();
    decode(&mut d, &hex("400a 6375 7374 6f6d 2d6b 6579 0d63 7573 746f 6d2d 6865 6164 6572"))
        .unwrap();
    assert_eq!(d.table_len(), 1);
    d.decode(&[0x3f, 0x01]).unwrap(); // 31 + 1 = 32: smaller than the 55-byte entry
    assert_eq!((d.table_len(), d.table_max_size()), (0, 32));
    // Lowering our setting below the table in use requires an update in the next block.
    let mut d = Decoder::default();
    d.set_max_table_size(1024);
    assert_eq!(d.decode(&[0x82]).map(|_| ()), Err(HpackError::MissingTableSizeUpdate));
    assert_eq!(d.decode(&[]).map(|_| ()), Err(HpackError::MissingTableSizeUpdate));
    let mut update = Vec::new();
    super::super::encode_int(&mut update, 5, 0x20, 2048);
    assert!(matches!(d.decode(&update), Err(HpackError::TableSizeTooLarge { .. })));
    assert_eq!(d.decode(&[0x3f, 0xe1, 0x07, 0x82]).map(|b| b.len()), Ok(1)); // 1024
    assert_eq!(d.decode(&[0x82]).map(|b| b.len()), Ok(1));
    // Raising it needs nothing.
    d.set_max_table_size(4096);
    assert_eq!(d.decode(&[0x82]).map(|b| b.len()), Ok(1));
}

#[test]
fn list_size_is_counted_and_limited_with_the_table_kept_in_step() {
    // ":method GET" is 7 + 3 + 32 = 42.
    let mut d = Decoder::new(4096, 84);
    assert_eq!(d.decode(&[0x82, 0x82]).map(|b| b.list_size()), Ok(84));
    assert_eq!(
        d.decode(&[0x82, 0x82, 0x82]).map(|_| ()),
        Err(HpackError::HeaderListTooLarge { limit: 84 })
    );
    assert!(!HpackError::HeaderListTooLarge { limit: 84 }.is_connection_error());
    // Past the limit, an indexed literal still enters the table, so the next block decodes.
    let mut block = vec![0x82, 0x82, 0x82];
    block.extend(hex("400a 6375 7374 6f6d 2d6b 6579 0d63 7573 746f 6d2d 6865 6164 6572"));
    assert!(d.decode(&block).is_err());
    assert_eq!(d.table_len(), 1);
    assert_eq!(decode(&mut d, &[0xbe]).unwrap(), pairs(&[("custom-key", "custom-header")]));
}

/// Checks the decoder holds no more than its limits allow.
fn assert_bounded(d: &Decoder, limit: usize) {
    let (scratch, fields) = d.held();
    // Scratch: the stored fields plus one table's worth; spans: one per 32 bytes of list.
    assert!(scratch <= 2 * (limit + d.table_max_size()) + 64, "scratch {scratch}");
    assert!(fields <= 2 * (limit / ENTRY_OVERHEAD + 1), "fields {fields}");
}

#[test]
fn bomb_of_many_small_fields() {
    let limit = 16 * 1024;
    let mut d = Decoder::new(4096, limit);
    // 200 000 one-byte indexed fields: 8 MB of list for 200 kB of input.
    let block = vec![0x82; 200_000];
    assert!(matches!(d.decode(&block), Err(HpackError::HeaderListTooLarge { .. })));
    assert_bounded(&d, limit);
}

#[test]
fn bomb_of_one_big_entry_referenced_over_and_over() {
    let limit = 16 * 1024;
    let mut d = Decoder::new(4096, limit);
    // A 4000-byte value inserted once, then referenced 100 000 times (400 MB decoded).
    let mut block = vec![0x40, 0x01, b'x'];
    super::super::encode_int(&mut block, 7, 0, 4000);
    block.extend(std::iter::repeat_n(b'v', 4000));
    block.extend(std::iter::repeat_n(0xbe, 100_000));
    assert!(matches!(d.decode(&block), Err(HpackError::HeaderListTooLarge { .. })));
    assert_bounded(&d, limit);
    assert_eq!(d.table_len(), 1);
}

#[test]
fn bomb_of_a_long_huffman_string() {
    let limit = 16 * 1024;
    let mut d = Decoder::new(4096, limit);
    // One 1 MB value of '0's (5 bits each): 625 kB of Huffman input.
    let value = vec![b'0'; 1 << 20];
    let mut enc = Encoder::new();
    enc.set_huffman(true);
    let mut block = Vec::new();
    enc.encode(b"x-big", &value, &mut block);
    assert!(block.len() < 700_000);
    assert!(matches!(d.decode(&block), Err(HpackError::HeaderListTooLarge { .. })));
    assert_bounded(&d, limit);
    // The same with incremental indexing: larger than the table, so it empties it.
    let mut block = vec![0x40, 0x01, b'x'];
    super::super::encode_int(&mut block, 7, 0x80, super::super::huffman::encoded_len(&value));
    super::super::huffman::encode(&value, &mut block);
    assert!(matches!(d.decode(&block), Err(HpackError::HeaderListTooLarge { .. })));
    assert_bounded(&d, limit);
    assert_eq!(d.table_len(), 0);
}

#[test]
fn bomb_of_a_huge_integer() {
    let mut d = Decoder::default();
    // A string length with a million continuation octets stops at the fifth.
    let mut block = vec![0x00, 0x7f];
    block.extend(std::iter::repeat_n(0xff, 1_000_000));
    assert_eq!(d.decode(&block).map(|_| ()), Err(HpackError::IntegerOverflow));
    // A length of 2^28 with nothing behind it.
    let mut block = vec![0x00];
    super::super::encode_int(&mut block, 7, 0, 1 << 28);
    assert_eq!(d.decode(&block).map(|_| ()), Err(HpackError::Truncated));
    assert_bounded(&d, 64 * 1024);
}

#[test]
fn encoder_output_round_trips() {
    let grpc = [
        (":method", "POST"),
        (":scheme", "http"),
        (":path", "/pkg.Service/Method"),
        (":authority", "backend.internal:50051"),
        ("content-type", "application/grpc"),
        ("te", "trailers"),
        ("grpc-timeout", "100m"),
        ("user-agent", "grpc-go/1.70.0"),
        ("authorization", "Bearer abc"),
        ("x-empty", ""),
    ];
    for huffman in [false, true] {
        let mut enc = Encoder::new();
        enc.set_huffman(huffman);
        let mut block = Vec::new();
        for (i, (n, v)) in grpc.iter().enumerate() {
            if i == 8 {
                enc.encode_never_indexed(n.as_bytes(), v.as_bytes(), &mut block);
            } else {
                enc.encode(n.as_bytes(), v.as_bytes(), &mut block);
            }
        }
        let mut d = Decoder::default();
        let decoded = d.decode(&block).unwrap();
        let got: Vec<_> = decoded.iter().collect();
        assert_eq!(got.len(), grpc.len());
        for (f, (n, v)) in got.iter().zip(grpc) {
            assert_eq!((f.name, f.value), (n.as_bytes(), v.as_bytes()));
            assert_eq!(f.pseudo, Pseudo::from_name(f.name));
            assert_eq!(f.never_indexed, n == "authorization");
        }
        // Forwarding the decoded fields re-encodes them byte for byte.
        let mut again = Vec::new();
        let mut plain = Encoder::new();
        plain.set_huffman(huffman);
        for f in &decoded {
            plain.encode_field(&f, &mut again);
        }
        assert_eq!(again, block);
        assert_eq!(d.table_len(), 0);
    }
}

/// The same Huffman-coded literals on every response but for the date, as nginx sends them
/// (there with incremental indexing). The memo answers the repeats with what decoding gives;
/// "never indexed" fields stay out of it.
#[test]
fn repeated_huffman_fields_decode_the_same_every_time() {
    let response = |date: &str| {
        let mut enc = Encoder::new();
        enc.set_huffman(true);
        let mut block = Vec::new();
        for (n, v) in [
            (":status", "200"),
            ("server", "nginx"),
            ("date", date),
            ("content-type", "text/plain"),
            ("x-backend", "b1"),
        ] {
            enc.encode(n.as_bytes(), v.as_bytes(), &mut block);
        }
        block
    };
    let mut d = Decoder::default();
    for date in ["Fri, 04 Dec 2026 19:06:03 GMT", "Fri, 04 Dec 2026 19:06:04 GMT"] {
        let block = response(date);
        for _ in 0..3 {
            let want = pairs(&[
                (":status", "200"),
                ("server", "nginx"),
                ("date", date),
                ("content-type", "text/plain"),
                ("x-backend", "b1"),
            ]);
            assert_eq!(decode(&mut d, &block).unwrap(), want);
        }
    }
    assert!(d.memo.heap_bytes() > 0);
    assert_eq!(d.table_len(), 0);

    // nginx's own bytes: `server` (static 54) and `date` (static 33) with incremental
    // indexing, so each response also adds both to the dynamic table.
    let huffman_string = |s: &str| {
        let mut coded = Vec::new();
        huffman::encode(s.as_bytes(), &mut coded);
        let mut out = vec![0x80 | coded.len() as u8];
        out.extend(coded);
        out
    };
    let mut d = Decoder::default();
    for date in ["Fri, 04 Dec 2026 19:06:03 GMT", "Fri, 04 Dec 2026 19:06:04 GMT"] {
        let mut block = vec![0x88, 0x40 | 54];
        block.extend(huffman_string("nginx"));
        block.push(0x40 | 33);
        block.extend(huffman_string(date));
        for _ in 0..3 {
            let want = pairs(&[(":status", "200"), ("server", "nginx"), ("date", date)]);
            assert_eq!(decode(&mut d, &block).unwrap(), want);
            assert_eq!(d.table_entry(1), Some((&b"date"[..], date.as_bytes())));
            assert_eq!(d.table_entry(2), Some((&b"server"[..], &b"nginx"[..])));
        }
    }

    let mut enc = Encoder::new();
    enc.set_huffman(true);
    let mut block = Vec::new();
    enc.encode_never_indexed(b"authorization", b"Bearer secret-token", &mut block);
    let mut d = Decoder::default();
    for _ in 0..2 {
        assert_eq!(
            decode(&mut d, &block).unwrap(),
            pairs(&[("authorization", "Bearer secret-token")])
        );
    }
    assert_eq!(d.memo.heap_bytes(), 0, "a never-indexed field is not remembered");
}
