//! Replays the kept fuzz corpus (`fuzz/corpus/<target>/`) through the same entry points the
//! fuzz targets drive, so every input that ever found new behaviour stays a regression test.
//! (The fuzzers themselves: `cargo +nightly fuzz run <target>`, see the README.)

use std::fs;
use std::path::Path;

fn replay(target: &str, run: impl Fn(&[u8])) -> usize {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz/corpus").join(target);
    let mut count = 0;
    for entry in fs::read_dir(&dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display())).flatten() {
        let input = fs::read(entry.path()).unwrap();
        run(&input);
        count += 1;
    }
    assert!(count > 0, "{}: an empty corpus", dir.display());
    count
}

#[test]
fn the_state_file_corpus() {
    replay("state_file", hermes_init::fuzz::state_file);
}

#[test]
fn the_control_line_corpus() {
    replay("control_line", hermes_init::fuzz::control_line);
}

#[test]
fn the_http_request_corpus() {
    replay("http_request", hermes_init::fuzz::http_request);
}

#[test]
fn the_slot_dir_corpus() {
    replay("slot_dir", hermes_init::fuzz::slot_dir);
}
