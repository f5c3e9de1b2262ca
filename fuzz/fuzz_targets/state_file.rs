//! The state-file reader and the boot decision over any bytes.
#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    hermes_init::fuzz::state_file(data);
});
