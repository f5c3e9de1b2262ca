//! The control-line parser over any bytes.
#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    hermes_init::fuzz::control_line(data);
});
