//! The health API's request path over any bytes.
#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    hermes_init::fuzz::http_request(data);
});
