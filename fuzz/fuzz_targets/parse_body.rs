//! Arbitrary bytes, taken as UTF-8 (invalid UTF-8 is skipped: an SQS body is a string), into
//! `parse_body`; the invariants are in common.rs.
#![no_main]

use libfuzzer_sys::fuzz_target;

mod common;

fuzz_target!(|data: &[u8]| {
    let Ok(body) = std::str::from_utf8(data) else {
        return;
    };
    let _ = common::parse_and_check(body);
});
