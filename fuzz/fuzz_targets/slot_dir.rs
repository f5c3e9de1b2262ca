//! The slot-directory reader over any setting files.
#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    hermes_init::fuzz::slot_dir(data);
});
